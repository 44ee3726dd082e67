// The entry point: every scalar (loss terms, accuracy, learning rate, ...) over the steps, with NaN/Inf and the
// analysis's abnormal snapshots marked and the focus snapshot (± its window) shown. Drawn from per-series min/max
// pyramids (analysis::ScalarOverview), so a repaint costs the same at a thousand or a million steps and a one-step
// spike is never lost. Wheel zooms around the mouse, drag pans, a click sets the focus; L log scale, S smoothing,
// Home shows everything; a click on a legend entry hides or shows that series.
#pragma once

#include "run_view.h"

#include <trainscope/analysis/scalar_overview.h>

#include <QColor>
#include <QRect>

#include <memory>
#include <vector>

namespace trainscope::viewer {

class LossView : public RunView {
  Q_OBJECT

 public:
  LossView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("loss"); }

  // The visible step range [first, last); the whole run by default.
  std::pair<double, double> visible_range() const { return {view_first_, view_last_}; }
  void set_visible_range(double first, double last);
  void reset_zoom();
  bool log_scale() const { return log_scale_; }
  void set_log_scale(bool on);
  double smoothing() const { return smoothing_; }  // EMA weight, 0 = off
  void set_smoothing(double weight);
  int series_count() const { return int(series_.size()); }
  bool series_visible(int i) const { return series_[size_t(i)].visible; }

  // Mapping between steps and x in a view of `size` (the widget's size by default).
  QRect plot_rect(const QSize& size) const;
  double x_for_step(double step, const QSize& size) const;
  double x_for_step(double step) const { return x_for_step(step, this->size()); }
  double step_for_x(double x) const;
  static QColor anomaly_color() { return QColor(230, 120, 0); }
  static QColor non_finite_color() { return QColor(210, 20, 20); }
  static QColor focus_color() { return QColor(30, 90, 200); }

 protected:
  void wheelEvent(QWheelEvent* event) override;
  void mousePressEvent(QMouseEvent* event) override;
  void mouseMoveEvent(QMouseEvent* event) override;
  void mouseReleaseEvent(QMouseEvent* event) override;
  void keyPressEvent(QKeyEvent* event) override;
  bool event(QEvent* event) override;  // tooltips

 private:
  struct Series {
    QString name;
    QColor color;
    bool visible = true;
    std::shared_ptr<const analysis::ScalarOverview> overview;
    std::vector<analysis::ScalarColumn> columns;  // the last reduction drawn, for [columns_first, columns_last)
    double columns_first = 0, columns_last = -1;
  };
  void load();
  double y_for_value(double value, const QRect& plot) const;
  void update_value_range();

  std::vector<Series> series_;
  double data_first_ = 0, data_last_ = 1;
  double view_first_ = 0, view_last_ = 1;
  double y_low_ = 0, y_high_ = 1;
  bool log_scale_ = false;
  double smoothing_ = 0;
  std::vector<QRect> legend_rects_;  // per series, where the legend drew it (for clicks)
  QPoint press_pos_;
  double press_first_ = 0, press_last_ = 0;
  bool dragging_ = false;
};

}  // namespace trainscope::viewer
