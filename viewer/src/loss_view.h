// The entry point: every scalar (loss terms, accuracy, learning rate, ...) over the steps, with NaN/Inf and the
// analysis's abnormal snapshots marked and the focus snapshot (± its window) shown. Drawn from per-series min/max
// pyramids (analysis::ScalarOverview), so a repaint costs the same at a thousand or a million steps and a one-step
// spike is never lost. Loss terms share the left axis; other scalars (gradient norms, accuracy, ...) get the right
// one, so that an exploding norm does not flatten the loss. Wheel zooms around the mouse, drag pans, a click sets the
// focus; L log scale, S smoothing (the raw series stays, faint), Home shows everything; a click on a legend entry
// hides or shows that series.
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
  QString series_name(int i) const { return series_[size_t(i)].name; }
  // True when series i is drawn against the right axis (it is not a loss term and some loss term is shown).
  bool on_right_axis(int i) const { return right_axis_shown_ && series_[size_t(i)].secondary; }
  // Where the legend entry of series i was last drawn (for clicks).
  QRect legend_rect(int i) const { return size_t(i) < legend_rects_.size() ? legend_rects_[size_t(i)] : QRect(); }

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
  // The last reduction drawn, for [first, last): kept until the range, the width or the data change, so that a
  // repaint (focus moved, window exposed) only draws.
  struct Reduction {
    std::vector<analysis::ScalarColumn> columns;
    double first = 0, last = -1;
  };
  struct Series {
    QString name;
    QColor color;
    bool visible = true;
    bool secondary = false;                                    // not a loss term: the right axis
    std::shared_ptr<const analysis::ScalarOverview> overview;  // the raw values
    std::shared_ptr<const analysis::ScalarOverview> smoothed;  // null when smoothing is off
    Reduction raw_columns, smoothed_columns;
  };
  void load();
  const std::vector<analysis::ScalarColumn>& reduce(const analysis::ScalarOverview& overview, Reduction& reduction,
                                                    int columns) const;
  void draw_series(QPainter& painter, const std::vector<analysis::ScalarColumn>& columns, const QRect& plot, int axis,
                   const QPen& pen) const;
  double y_for_value(double value, const QRect& plot, int axis) const;
  int axis_of(const Series& s) const { return right_axis_shown_ && s.secondary ? 1 : 0; }
  void update_value_range();

  std::vector<Series> series_;
  double data_first_ = 0, data_last_ = 1;
  double view_first_ = 0, view_last_ = 1;
  double y_low_[2] = {0, 0}, y_high_[2] = {1, 1};  // left and right axis (log10 of the values on a log scale)
  bool right_axis_shown_ = false;
  bool log_scale_ = false;
  double smoothing_ = 0;
  std::vector<QRect> legend_rects_;  // per series, where the legend drew it (for clicks)
  QPoint press_pos_;
  double press_first_ = 0, press_last_ = 0;
  bool dragging_ = false;
};

}  // namespace trainscope::viewer
