// The snapshot view: the suspect layer coloured where the layout puts it, a click selects a layer, groups collapse
// and expand, the focus moves the window's data.
#include "snapshot_view.h"
#include "viewer_test_support.h"

#include <gtest/gtest.h>
#include <trainscope/analysis/dag_layout.h>

#include <QImage>
#include <QPainter>
#include <QTest>
#include <QWheelEvent>

namespace ts = trainscope::testing;
using trainscope::viewer::RunDocument;
using trainscope::viewer::SnapshotView;
using trainscope::viewer::ViewerState;

TEST(SnapshotView, TheSuspectIsColouredWhereTheLayoutPutsItAndAClickSelectsALayer) {
  ts::TempDir dir;
  const auto run = ts::write_run("nan_in_fc2", dir.path());
  RunDocument document;
  ViewerState state;
  SnapshotView view(document, state);
  view.resize(1000, 600);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  state.set_focus_step(100);  // before the NaN: only the suspect is marked red
  document.wait_idle();
  ASSERT_NE(view.window_data(), nullptr);
  EXPECT_EQ(view.window_data()->focus_step, 100);

  const auto& graph = document.graph();
  const auto& suspects = document.report().anomalies.front().suspects;
  ASSERT_FALSE(suspects.empty());
  const uint32_t fc2 = suspects.front().layer_id;
  EXPECT_EQ(graph.name(fc2), "fc2");
  EXPECT_EQ(view.suspect_rank(fc2), 1);
  const QRectF r = view.node_rect(fc2);
  ASSERT_FALSE(r.isEmpty());
  const QImage image = ts::render(view);
  // The border of fc2's node is in the suspect colour; another node that is no suspect has none of it.
  const QRect border = r.toAlignedRect().adjusted(-2, -2, 2, 2);
  EXPECT_GT(ts::count_color(image, SnapshotView::suspect_color(), 30, border), 40);
  for (const auto& node : view.layout().nodes) {
    if (view.suspect_rank(node.layer) != 0 || node.group) continue;
    EXPECT_EQ(ts::count_color(image, SnapshotView::suspect_color(), 30, view.node_rect(node.layer).toAlignedRect()), 0)
        << graph.name(node.layer);
    break;
  }

  // Click another node: it becomes the selected layer and is drawn with the selection frame.
  const auto& other = view.layout().nodes.front();
  ASSERT_NE(other.layer, fc2);
  QTest::mouseClick(&view, Qt::LeftButton, {}, view.node_rect(other.layer).center().toPoint());
  EXPECT_EQ(state.layer(), int(other.layer));
  const QRect around = view.node_rect(other.layer).toAlignedRect().adjusted(-4, -4, 4, 4);
  EXPECT_GT(ts::count_color(ts::render(view), SnapshotView::selection_color(), 30, around), 40);
}

TEST(SnapshotView, MovingTheFocusReloadsTheWindowAndGroupsCollapse) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  RunDocument document;
  ViewerState state;
  SnapshotView view(document, state);
  view.resize(900, 500);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  state.set_window(20);
  state.set_focus_step(60);
  document.wait_idle();
  ASSERT_NE(view.window_data(), nullptr);
  const auto steps_before = view.window_data()->layers.back().quantities[0].steps;
  state.set_focus_step(300);
  document.wait_idle();
  EXPECT_EQ(view.window_data()->focus_step, 300);
  const auto& after = view.window_data()->layers.back().quantities[0].steps;
  ASSERT_FALSE(after.empty());
  EXPECT_NE(after, steps_before);
  for (int64_t s : after) EXPECT_TRUE(s >= 280 && s <= 320) << s;

  // Collapsing the model's only group (if any) or a synthetic group works through the layout: the node count drops.
  const auto& graph = document.graph();
  const size_t expanded = view.layout().nodes.size();
  for (uint32_t id = 0; id < graph.size(); ++id) {
    if (graph.children(id).empty() || !graph.layer(id).parent_id) continue;
    view.set_collapsed(id, true);
    EXPECT_LT(view.layout().nodes.size(), expanded);
    EXPECT_GE(view.layout().node_of_layer[id], 0);
    view.set_collapsed(id, false);
    EXPECT_EQ(view.layout().nodes.size(), expanded);
    break;
  }
}

TEST(SnapshotView, WheelZoomsAroundTheMouseAndHomeFitsAgain) {
  ts::TempDir dir;
  const auto run = ts::write_run("healthy", dir.path());
  RunDocument document;
  ViewerState state;
  SnapshotView view(document, state);
  view.resize(900, 500);
  view.show();
  ASSERT_TRUE(ts::open_and_wait(document, run));
  const uint32_t layer = view.layout().nodes.front().layer;
  const QRectF before = view.node_rect(layer);
  const QPointF at = before.center();
  for (int i = 0; i < 3; ++i) {
    QWheelEvent wheel(at, view.mapToGlobal(at), {}, QPoint(0, 120), Qt::NoButton, {}, Qt::NoScrollPhase, false);
    QCoreApplication::sendEvent(&view, &wheel);
  }
  const QRectF after = view.node_rect(layer);
  EXPECT_GT(after.width(), before.width() * 1.4);
  EXPECT_NEAR(after.center().x(), at.x(), 1.0);  // the point under the mouse stays put
  EXPECT_NEAR(after.center().y(), at.y(), 1.0);
  // Dragging the background pans; Home fits the graph again.
  const QPoint empty(view.width() - 5, view.height() - 5);
  QTest::mousePress(&view, Qt::LeftButton, {}, empty);
  QTest::mouseMove(&view, empty - QPoint(40, 20));
  QTest::mouseRelease(&view, Qt::LeftButton, {}, empty - QPoint(40, 20));
  EXPECT_NEAR(view.node_rect(layer).center().x(), at.x() - 40, 1.0);
  QTest::keyClick(&view, Qt::Key_Home);
  EXPECT_EQ(view.node_rect(layer), before);
}
