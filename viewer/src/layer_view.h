// The layer level: the selected layer's neurons over time. A layer can hold millions of neurons, so the lines drawn
// are a prefix of the blue-noise order of analysis::BlueNoisePolylineSampler (spread out, the outliers and NaN/Inf
// lines always in), more of them as you zoom into a step range; k-means cluster bands behind them. Drag a rectangle
// to select the neurons whose lines cross it (shared with the neuron view); Shift+drag keeps only those lines
// (a value filter); the context menu filters by outlier score or cluster; Esc clears; wheel zooms the steps.
#pragma once

#include "run_view.h"

#include <trainscope/analysis/polyline_sampling.h>

#include <QColor>
#include <QRect>

#include <memory>
#include <optional>
#include <vector>

namespace trainscope::viewer {

// What the layer view shows of one layer, computed in the background.
struct LayerLines {
  uint32_t layer = 0;
  format::Quantity quantity = format::Quantity::Activation;  // may differ from the asked one (then `note` says so)
  format::Statistic statistic = format::Statistic::Mean;
  format::NeuronSeries series;
  analysis::PolylineSample sample;
  analysis::PolylineClustering clusters;
  QString note;
};

class LayerView : public RunView {
  Q_OBJECT

 public:
  enum class Filter { All, Outliers, Cluster, Brushed };

  LayerView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("layer"); }

  const LayerLines* lines() const { return lines_.get(); }
  // The neurons drawn now, in drawing order (filters and zoom applied).
  std::vector<uint32_t> shown_neurons() const;
  void set_filter(Filter filter, int cluster = -1);
  Filter filter() const { return filter_; }
  void set_step_range(double first, double last);  // zoom; more lines are drawn when zoomed in
  QRect plot_rect(const QSize& size) const;
  QPointF point_for(double step, double value, const QSize& size) const;
  // Neurons whose polyline (drawn or not) crosses the rectangle given in widget coordinates.
  std::vector<uint32_t> neurons_crossing(const QRectF& rect) const;

  static QColor outlier_color() { return QColor(235, 120, 0); }
  static QColor non_finite_color() { return QColor(210, 20, 20); }
  static QColor selected_color() { return QColor(20, 60, 220); }

 protected:
  void mousePressEvent(QMouseEvent* event) override;
  void mouseMoveEvent(QMouseEvent* event) override;
  void mouseReleaseEvent(QMouseEvent* event) override;
  void wheelEvent(QWheelEvent* event) override;
  void keyPressEvent(QKeyEvent* event) override;
  void contextMenuEvent(QContextMenuEvent* event) override;
  bool event(QEvent* event) override;  // tooltips

 private:
  void load();
  size_t line_budget() const;
  double step_at(size_t point) const;
  std::optional<std::pair<uint32_t, size_t>> nearest_line(const QPointF& pos) const;  // neuron, point

  std::shared_ptr<const LayerLines> lines_;
  QString message_;  // why nothing is shown
  Filter filter_ = Filter::All;
  int cluster_filter_ = -1;
  std::vector<uint32_t> brushed_;  // the value filter's lines (sorted)
  double first_step_ = 0, last_step_ = 1;
  double data_first_ = 0, data_last_ = 1;
  QPointF brush_start_, brush_end_;
  bool brushing_ = false;
};

}  // namespace trainscope::viewer
