// The snapshot level: which layer caused it? The layer graph as a layered DAG (analysis::layout_layer_dag), groups of
// the module tree collapsed or expanded (double-click a group; E expands all, C collapses back), each node carrying a
// small chart of its dynamics — the chosen quantity and statistic over the window around the focus snapshot, the
// focus on the centre line — and coloured by what the analysis says: the top suspect red, other suspects orange,
// layers with rule hits yellow, NaN/Inf in the window a red border. A click selects the layer for the layer view;
// the wheel zooms, dragging the background pans, Home fits the graph again.
#pragma once

#include "run_view.h"

#include <trainscope/analysis/dag_layout.h>
#include <trainscope/analysis/snapshot_window.h>

#include <QColor>
#include <QRectF>

#include <memory>
#include <optional>
#include <vector>

namespace trainscope::viewer {

class SnapshotView : public RunView {
  Q_OBJECT

 public:
  SnapshotView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("snapshot"); }

  const analysis::DagLayout& layout() const { return layout_; }
  // The window data currently shown (nullptr before the first answer).
  const analysis::SnapshotWindow* window_data() const { return window_.get(); }
  // Where the node of `layer_id` is drawn in a view of `size`; empty when the layer is not a visible node.
  QRectF node_rect(uint32_t layer_id, const QSize& size) const;
  QRectF node_rect(uint32_t layer_id) const { return node_rect(layer_id, size()); }
  // Collapses or expands a group and lays the graph out again.
  void set_collapsed(uint32_t group, bool collapsed);
  void expand_all();
  void collapse_default();
  // Back to the whole graph fitted to the view (Home); the wheel zooms around the mouse, dragging the background pans.
  void reset_view();
  double zoom() const { return zoom_; }
  // 1-based rank among the top anomaly's suspects (0: not a suspect), and rule hits, by layer id.
  int suspect_rank(uint32_t layer_id) const;
  static QColor suspect_color() { return QColor(220, 40, 40); }
  static QColor other_suspect_color() { return QColor(240, 140, 20); }
  static QColor rule_color() { return QColor(250, 225, 120); }
  static QColor selection_color() { return QColor(30, 90, 200); }

 protected:
  void mousePressEvent(QMouseEvent* event) override;
  void mouseDoubleClickEvent(QMouseEvent* event) override;
  void mouseMoveEvent(QMouseEvent* event) override;
  void mouseReleaseEvent(QMouseEvent* event) override;
  void wheelEvent(QWheelEvent* event) override;
  void keyPressEvent(QKeyEvent* event) override;
  bool event(QEvent* event) override;  // tooltips

 private:
  struct Geometry {
    double scale = 1, dx = 0, dy = 0;
  };
  void relayout();
  void request_window();
  void update_marks();
  Geometry geometry(const QSize& size) const;
  std::optional<uint32_t> layer_at(const QPointF& pos) const;
  // The series drawn in a node: the chosen quantity, or the first recorded one.
  const analysis::QuantityWindow* shown_quantity(uint32_t layer_id, format::Quantity* which) const;

  std::vector<bool> collapsed_;
  analysis::DagLayout layout_;
  std::shared_ptr<const analysis::SnapshotWindow> window_;
  std::vector<int> suspect_rank_;  // by layer id
  std::vector<int> rule_hits_;     // by layer id, over the layer and its leaves
  double zoom_ = 1;
  QPointF pan_;
  QPointF drag_start_, drag_pan_;
  bool dragging_ = false;
};

}  // namespace trainscope::viewer
