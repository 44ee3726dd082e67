// The loss view: anomaly markers where the data says, a click moves the focus, zoom keeps spikes, log scale.
#include "loss_view.h"
#include "viewer_test_support.h"

#include <gtest/gtest.h>
#include <trainscope/format/run_writer.h>

#include <QImage>
#include <QPainter>
#include <QTest>

#include <cmath>

namespace ts = trainscope::testing;
using trainscope::viewer::LossView;
using trainscope::viewer::RunDocument;
using trainscope::viewer::ViewerState;

namespace {

// A run of `steps` steps with one scalar, 1.0 everywhere but a spike of 100 at `spike_step`.
std::filesystem::path write_spike_run(const std::filesystem::path& dir, int64_t steps, int64_t spike_step) {
  trainscope::format::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  trainscope::format::RunWriter writer(dir / "spike", m);
  for (int64_t s = 0; s < steps; ++s) {
    trainscope::format::Snapshot snapshot;
    snapshot.step = s;
    snapshot.scalars = {{"loss", s == spike_step ? 100.0 : 1.0}};
    writer.append(std::move(snapshot));
  }
  writer.close();
  return dir / "spike";
}

// 400 steps: a loss oscillating between 0.5 and 1.5, and a gradient norm of 1 that explodes to 1e30 at the end.
std::filesystem::path write_norm_run(const std::filesystem::path& dir) {
  trainscope::format::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  trainscope::format::RunWriter writer(dir / "norm", m);
  for (int64_t s = 0; s < 400; ++s) {
    trainscope::format::Snapshot snapshot;
    snapshot.step = s;
    snapshot.scalars = {{"loss", 1.0 + 0.5 * std::sin(double(s) / 20)}, {"grad_norm", s >= 390 ? 1e30 : 1.0}};
    writer.append(std::move(snapshot));
  }
  writer.close();
  return dir / "norm";
}

// Rows of `rect` holding at least one pixel of `color`: the vertical extent a series covers.
int rows_with_color(const QImage& image, QColor color, const QRect& rect) {
  int rows = 0;
  for (int y = rect.top(); y <= rect.bottom(); ++y)
    rows += ts::count_color(image, color, 12, QRect(rect.left(), y, rect.width(), 1)) > 0;
  return rows;
}

const QColor kFirstSeriesColor(31, 119, 180);

}  // namespace

TEST(LossView, MarksTheAbnormalSnapshotsWhereTheDataSaysAndAClickFocusesThem) {
  ts::TempDir dir;
  const auto run = ts::write_run("nan_in_fc2", dir.path());
  RunDocument document;
  ViewerState state;
  LossView view(document, state);
  view.resize(900, 300);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  ASSERT_FALSE(document.report().anomalies.empty());
  const auto& anomaly = document.report().anomalies.front();  // the NaN at step 120
  const QImage image = ts::render(view);
  const int x = int(std::lround(view.x_for_step(double(anomaly.step) + 0.5)));
  const QRect plot = view.plot_rect(view.size());
  // The marker above the plot at the anomaly's x, in the non-finite colour; none far from it.
  const QRect marker(x - 3, plot.top() - 9, 7, 8);
  EXPECT_GT(ts::count_color(image, LossView::non_finite_color(), 40, marker), 6);
  const int far_x = plot.left() + 10;
  EXPECT_EQ(ts::count_color(image, LossView::non_finite_color(), 40, QRect(far_x - 3, plot.top() - 9, 7, 8)), 0);
  // The loss is NaN from step 120 to the end: one unbroken red band along the top edge (no gaps between the steps),
  // and none before it.
  const int nan_from = int(std::ceil(view.x_for_step(121))), nan_to = plot.right() - 1;
  const QRect band_row(nan_from, plot.top() - 2, nan_to - nan_from + 1, 1);
  EXPECT_EQ(ts::count_color(image, LossView::non_finite_color(), 40, band_row), band_row.width());
  const int before = int(std::floor(view.x_for_step(100)));
  EXPECT_EQ(ts::count_color(image, LossView::non_finite_color(), 40,
                            QRect(plot.left(), plot.top() - 2, before - plot.left(), 1)),
            0);

  // Click the marker's column: the focus moves to that snapshot.
  state.set_focus_step(0);
  QTest::mouseClick(&view, Qt::LeftButton, {}, QPoint(x + 2, plot.center().y()));
  EXPECT_EQ(state.focus_step(), document.nearest_snapshot_step(anomaly.step));
  EXPECT_NE(state.focus_step(), 0);
}

TEST(LossView, AOneStepSpikeInAHundredThousandStepsStaysVisibleAndZoomKeepsIt) {
  ts::TempDir dir;
  const auto run = write_spike_run(dir.path(), 100000, 61234);
  RunDocument document;
  ViewerState state;
  LossView view(document, state);
  view.resize(400, 200);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  const QRect plot = view.plot_rect(view.size());
  auto spike_pixels = [&](const QImage& image) {
    // Series pixels in the upper third of the plot: only the spike reaches there (1.0 sits at the bottom, or in the
    // middle when it is all there is).
    const QRect upper(plot.left(), plot.top() + 20, plot.width(), plot.height() / 3 - 18);  // below the legend
    return image.width() ? ts::count_color(image, kFirstSeriesColor, 12, upper) : 0;
  };
  EXPECT_GT(spike_pixels(ts::render(view)), 10);
  // Zoom in with the wheel around the spike: the range narrows and the spike is still there.
  const QPoint at(int(view.x_for_step(61234)), plot.center().y());
  for (int i = 0; i < 10; ++i) {
    QWheelEvent wheel(at, view.mapToGlobal(at), {}, QPoint(0, 120), Qt::NoButton, {}, Qt::NoScrollPhase, false);
    QCoreApplication::sendEvent(&view, &wheel);
  }
  const auto [first, last] = view.visible_range();
  EXPECT_LT(last - first, 100000 * 0.3);
  EXPECT_LE(first, 61234);
  EXPECT_GE(last, 61234);
  EXPECT_GT(spike_pixels(ts::render(view)), 10);
  // Zoomed away from the spike, it is gone from the picture.
  view.set_visible_range(0, 1000);
  EXPECT_EQ(spike_pixels(ts::render(view)), 0);
}

TEST(LossView, KeyLTogglesLogScaleAndHomeResets) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  RunDocument document;
  ViewerState state;
  LossView view(document, state);
  view.resize(600, 300);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  const QImage linear = ts::render(view);
  QTest::keyClick(&view, Qt::Key_L);
  EXPECT_TRUE(view.log_scale());
  EXPECT_NE(ts::render(view), linear);
  QTest::keyClick(&view, Qt::Key_L);
  EXPECT_FALSE(view.log_scale());
  view.set_visible_range(10, 50);
  QTest::keyClick(&view, Qt::Key_Home);
  EXPECT_EQ(view.visible_range().first, double(document.first_step()));
  QTest::keyClick(&view, Qt::Key_S);
  document.wait_idle();
  EXPECT_GT(view.smoothing(), 0);
}

TEST(LossView, AnExplodingGradientNormGoesToTheRightAxisAndLeavesTheLossReadable) {
  ts::TempDir dir;
  const auto run = write_norm_run(dir.path());
  RunDocument document;
  ViewerState state;
  LossView view(document, state);
  view.resize(600, 300);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  ASSERT_EQ(view.series_count(), 2);
  ASSERT_EQ(view.series_name(1), "grad_norm");
  EXPECT_FALSE(view.on_right_axis(0));
  EXPECT_TRUE(view.on_right_axis(1));
  // The loss spans most of the plot's height, though the norm reaches 1e30.
  QRect plot = view.plot_rect(view.size());
  const QRect below_legend = plot.adjusted(0, 20, 0, 0);
  EXPECT_GT(rows_with_color(ts::render(view), kFirstSeriesColor, below_legend), plot.height() / 2);

  // A click on its legend entry hides the norm, and the right axis goes with it.
  (void)ts::render(view);  // the legend's place is known once drawn
  const QRect entry = view.legend_rect(1);
  ASSERT_FALSE(entry.isEmpty());
  QTest::mouseClick(&view, Qt::LeftButton, {}, entry.center());
  EXPECT_FALSE(view.series_visible(1));
  EXPECT_FALSE(view.on_right_axis(1));
  EXPECT_GT(view.plot_rect(view.size()).width(), plot.width());  // the right axis' margin is given back
  QTest::mouseClick(&view, Qt::LeftButton, {}, entry.center());
  EXPECT_TRUE(view.series_visible(1));
}

TEST(LossView, SmoothingKeepsTheRawSpikeFaintUnderTheSmoothedLine) {
  ts::TempDir dir;
  const auto run = write_spike_run(dir.path(), 2000, 1234);
  RunDocument document;
  ViewerState state;
  LossView view(document, state);
  view.resize(400, 200);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  const QRect plot = view.plot_rect(view.size());
  const QRect upper(plot.left(), plot.top() + 20, plot.width(), plot.height() / 3 - 18);
  // Pixels of the first series' colour drawn translucent over white (opacity 20-60%, above the focus band's; where two
  // strokes overlap the opacity adds up).
  const auto faint_pixels = [&](const QImage& image) {
    int n = 0;
    for (int y = upper.top(); y <= upper.bottom(); ++y)
      for (int x = upper.left(); x <= upper.right(); ++x) {
        const QColor c = image.pixelColor(x, y);
        const double r = (255.0 - c.red()) / (255 - kFirstSeriesColor.red());
        const double g = (255.0 - c.green()) / (255 - kFirstSeriesColor.green());
        const double b = (255.0 - c.blue()) / (255 - kFirstSeriesColor.blue());
        n += r > 0.2 && r < 0.6 && std::abs(r - g) < 0.06 && std::abs(r - b) < 0.06;
      }
    return n;
  };
  QImage image = ts::render(view);
  EXPECT_GT(ts::count_color(image, kFirstSeriesColor, 12, upper), 10);  // unsmoothed: the spike in full colour
  EXPECT_EQ(faint_pixels(image), 0);

  QTest::keyClick(&view, Qt::Key_S);
  document.wait_idle();
  EXPECT_DOUBLE_EQ(view.smoothing(), 0.9);
  image = ts::render(view);
  // Smoothed, the line stays low (EMA 0.9 of a 100x spike reaches ~11); the raw spike is still drawn, faint.
  EXPECT_EQ(ts::count_color(image, kFirstSeriesColor, 12, upper), 0);
  EXPECT_GT(faint_pixels(image), 5);  // every other pixel: the anomaly's dashed line runs through the spike
  // S cycles on to 0.99, then off.
  QTest::keyClick(&view, Qt::Key_S);
  document.wait_idle();
  EXPECT_DOUBLE_EQ(view.smoothing(), 0.99);
  QTest::keyClick(&view, Qt::Key_S);
  document.wait_idle();
  EXPECT_EQ(view.smoothing(), 0.0);
}
