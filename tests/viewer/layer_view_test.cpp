// The layer view: selecting a layer loads its neurons, a brush selects exactly the neurons whose lines cross it, the
// outlier filter keeps outliers only, NaN steps are marked, dead units form their own cluster.
#include "layer_view.h"
#include "viewer_test_support.h"

#include <gtest/gtest.h>
#include <trainscope/analysis/credit_assignment.h>

#include <QImage>
#include <QPainter>
#include <QTest>

#include <cmath>

namespace ts = trainscope::testing;
using trainscope::viewer::LayerView;
using trainscope::viewer::RunDocument;
using trainscope::viewer::ViewerState;

namespace {

int layer_id(const RunDocument& document, const std::string& name) {
  auto id = trainscope::analysis::find_layer(document.graph(), name);
  EXPECT_TRUE(id.has_value()) << name;
  return id ? int(*id) : -1;
}

}  // namespace

TEST(LayerView, SelectingALayerLoadsItsNeuronsAndABrushSelectsTheLinesItCrosses) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  RunDocument document;
  ViewerState state;
  LayerView view(document, state);
  view.resize(800, 400);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  EXPECT_EQ(view.lines(), nullptr);  // nothing selected: a hint, no lines
  state.set_layer(layer_id(document, "fc1"));
  document.wait_idle();
  ASSERT_NE(view.lines(), nullptr);
  const auto& series = view.lines()->series;
  EXPECT_EQ(series.layer_id, uint32_t(state.layer()));
  EXPECT_GT(series.neuron_count, 1u);
  EXPECT_TRUE(std::is_sorted(series.steps.begin(), series.steps.end()));
  EXPECT_FALSE(view.shown_neurons().empty());
  EXPECT_GT(ts::distinct_colors(ts::render(view), view.plot_rect(view.size())), 5);

  // Brush a band across the middle of the chart: the selection is exactly the lines crossing it, checked here
  // segment by segment against the data.
  const QRect plot = view.plot_rect(view.size());
  const QRect brush(plot.left() + plot.width() / 3, plot.top() + plot.height() / 3, plot.width() / 4,
                    plot.height() / 4);
  QTest::mousePress(&view, Qt::LeftButton, {}, brush.topLeft());
  QTest::mouseMove(&view, brush.bottomRight());
  QTest::mouseRelease(&view, Qt::LeftButton, {}, brush.bottomRight());
  std::vector<uint32_t> expected;
  const size_t n = series.neuron_count;
  for (uint32_t neuron = 0; neuron < n; ++neuron) {
    bool hit = false;
    for (size_t p = 0; p + 1 < series.steps.size() && !hit; ++p) {
      const float v0 = series.values[p * n + neuron], v1 = series.values[(p + 1) * n + neuron];
      if (!std::isfinite(v0) || !std::isfinite(v1)) continue;
      const QPointF a = view.point_for(double(series.steps[p]), v0, view.size());
      const QPointF b = view.point_for(double(series.steps[p + 1]), v1, view.size());
      // Sample the segment densely: a crossing shows up as a sample inside the (inclusive) rectangle.
      for (int k = 0; k <= 400 && !hit; ++k) {
        const QPointF q = a + (b - a) * (k / 400.0);
        hit =
            q.x() >= brush.left() && q.x() <= brush.right() + 1 && q.y() >= brush.top() && q.y() <= brush.bottom() + 1;
      }
    }
    if (hit) expected.push_back(neuron);
  }
  std::vector<uint32_t> selected(state.neurons().begin(), state.neurons().end());
  std::sort(selected.begin(), selected.end());
  EXPECT_EQ(selected, expected);
}

TEST(LayerView, OutlierFilterAndNanMarks) {
  ts::TempDir dir;
  const auto run = ts::write_run("nan_in_fc2", dir.path());
  RunDocument document;
  ViewerState state;
  LayerView view(document, state);
  view.resize(800, 400);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  // fc2 turns Inf at step 120 and the layer after it (id 4) NaN: its per-neuron means are NaN from there on.
  ASSERT_GT(document.graph().size(), 4u);
  state.set_layer(4);
  document.wait_idle();
  ASSERT_NE(view.lines(), nullptr);
  const auto& sample = view.lines()->sample;
  view.set_filter(LayerView::Filter::Outliers);
  const auto outliers = view.shown_neurons();
  ASSERT_FALSE(outliers.empty());
  for (uint32_t neuron : outliers)
    EXPECT_GE(sample.outlier_score[neuron], trainscope::analysis::kOutlierScoreThreshold);
  view.set_filter(LayerView::Filter::All);
  EXPECT_GE(view.shown_neurons().size(), outliers.size());

  // Red ticks at the chart's top edge from step 120's x on, none before.
  const QImage image = ts::render(view);
  const QRect plot = view.plot_rect(view.size());
  const int x_nan = int(view.point_for(121, 0, view.size()).x());
  const QRect after(x_nan, plot.top() - 8, plot.right() - x_nan, 8);
  const QRect before(plot.left(), plot.top() - 8, int(view.point_for(110, 0, view.size()).x()) - plot.left(), 8);
  EXPECT_GT(ts::count_color(image, LayerView::non_finite_color(), 30, after), 10);
  EXPECT_EQ(ts::count_color(image, LayerView::non_finite_color(), 30, before), 0);
}

TEST(LayerView, DeadUnitsFormTheirOwnCluster) {
  ts::TempDir dir;
  const auto run = ts::write_run("dead_act1", dir.path());
  RunDocument document;
  ViewerState state;
  LayerView view(document, state);
  view.resize(800, 400);
  ASSERT_TRUE(ts::open_and_wait(document, run));
  state.set_statistic(trainscope::format::Statistic::ZeroFraction);  // 13 of act1's 16 units are always zero
  state.set_layer(layer_id(document, "act1"));
  document.wait_idle();
  ASSERT_NE(view.lines(), nullptr);
  // The 13 dead units share one cluster and are typical of it; the 3 live ones are set apart, as another cluster
  // or as outliers.
  const auto& clusters = view.lines()->clusters;
  const auto& score = view.lines()->sample.outlier_score;
  ASSERT_EQ(clusters.labels.size(), 16u);
  for (uint32_t n = 0; n < 13; ++n) {
    EXPECT_EQ(clusters.labels[n], clusters.labels[0]) << n;
    EXPECT_LT(score[n], trainscope::analysis::kOutlierScoreThreshold) << n;
  }
  for (uint32_t n = 13; n < 16; ++n)
    EXPECT_TRUE(clusters.labels[n] != clusters.labels[0] || score[n] >= trainscope::analysis::kOutlierScoreThreshold)
        << n;
}
