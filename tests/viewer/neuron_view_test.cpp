// The neuron view: the credit graph ranks and draws the known strongest driver, grid colours follow the values, a
// click on a cell selects that neuron, conv channels appear as feature maps, and a run without full tensors says so.
#include "neuron_view.h"
#include "synthetic_runs.h"
#include "viewer_test_support.h"

#include <gtest/gtest.h>

#include <QImage>
#include <QPainter>
#include <QTest>

namespace ts = trainscope::testing;
using trainscope::viewer::NeuronView;
using trainscope::viewer::RunDocument;
using trainscope::viewer::ViewerState;

TEST(NeuronView, DrawsTheStrongestDriverAndSelectsFromTheGrid) {
  ts::TempDir dir;
  const auto run = dir.path() / "credit";
  ts::write_credit_run(run);
  RunDocument document;
  ViewerState state;
  NeuronView view(document, state);
  view.resize(1000, 500);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  state.set_focus_step(10);
  state.set_layer(2);  // fc2
  state.set_neurons({1});
  document.wait_idle();
  const auto* data = view.data();
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data->layer, 2u);
  EXPECT_EQ(data->neuron, 1u);
  ASSERT_TRUE(data->forward.has_value());
  ASSERT_FALSE(data->forward->hops.empty());
  // w·a at step 10 for fc2 neuron 1: -4.5, -6, 13.5, 72 from fc1 neurons 0..3: neuron 3 drives it, positively.
  const auto& hop = data->forward->hops.front();
  ASSERT_FALSE(hop.neurons.empty());
  EXPECT_EQ(hop.neurons.front().layer, 1u);
  EXPECT_EQ(hop.neurons.front().neuron, 3u);
  const QRectF driver = view.credit_node_rect(1, 3, view.size());
  ASSERT_FALSE(driver.isEmpty());
  const QImage image = ts::render(view);
  // The node is filled with the positive end of the scale (its share is the largest) and sits left of the focus.
  EXPECT_GT(ts::count_color(image, NeuronView::positive_color(), 60, driver.toAlignedRect()), 10);
  EXPECT_LT(driver.center().x(), view.credit_node_rect(2, 1, view.size()).center().x());

  // fc1's grid at step 10: the activation of neuron 3 is the largest, so its cell has the positive end's colour.
  state.set_layer(1);
  document.wait_idle();
  ASSERT_NE(view.data(), nullptr);
  ASSERT_EQ(view.data()->values.size(), 4u);
  EXPECT_FLOAT_EQ(view.data()->values[3], ts::credit_run_activation(10, 3));
  const QRectF cell = view.grid_cell_rect(3, view.size());
  ASSERT_FALSE(cell.isEmpty());
  const QColor c = ts::render(view).pixelColor(cell.center().toPoint());
  EXPECT_EQ(c, NeuronView::positive_color());
  // A click on neuron 2's cell selects it.
  QTest::mouseClick(&view, Qt::LeftButton, {}, view.grid_cell_rect(2, view.size()).center().toPoint());
  ASSERT_EQ(state.neurons().size(), 1);
  EXPECT_EQ(state.neurons().front(), 2u);
}

TEST(NeuronView, ConvChannelsAsFeatureMapsAndAClearNoteWithoutWeights) {
  ts::TempDir dir;
  const auto run = dir.path() / "credit";
  ts::write_credit_run(run);
  RunDocument document;
  ViewerState state;
  NeuronView view(document, state);
  view.resize(1000, 600);
  ASSERT_TRUE(ts::open_and_wait(document, run));
  state.set_focus_step(10);
  state.set_layer(3);  // conv: 2 channels of 3x3, probe batch at step 10
  document.wait_idle();
  ASSERT_NE(view.data(), nullptr);
  EXPECT_EQ(view.data()->channels, 2);
  EXPECT_EQ(view.data()->map_step, 10);
  const QImage image = ts::render(view);
  // Channel 1's tile: its largest value (18, bottom right) is drawn in the positive colour.
  const QRectF tile = view.feature_map_rect(1, view.size());
  ASSERT_FALSE(tile.isEmpty());
  const QPoint bottom_right(int(tile.right() - tile.width() / 6), int(tile.bottom() - tile.height() / 6));
  EXPECT_EQ(image.pixelColor(bottom_right), NeuronView::positive_color());
  EXPECT_TRUE(view.feature_map_rect(2, view.size()).isEmpty());
  // The conv layer has no recorded weights and no graph edges: the trace stops with a message, nothing invented.
  QStringList notes = view.data()->notes;
  for (const auto& m : view.data()->forward->messages) notes << QString::fromStdString(m);
  EXPECT_FALSE(notes.isEmpty());
  EXPECT_TRUE(view.data()->forward->hops.empty());
}
