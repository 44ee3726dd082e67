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
    return image.width() ? ts::count_color(image, QColor(31, 119, 180), 12, upper) : 0;
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
