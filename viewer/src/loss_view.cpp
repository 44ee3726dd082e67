#include "loss_view.h"

#include "chart_axes.h"

#include <trainscope/analysis/json_writer.h>

#include <QHelpEvent>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QToolTip>
#include <QWheelEvent>

#include <algorithm>
#include <cmath>

namespace trainscope::viewer {
namespace {

constexpr int kLeft = 64, kRight = 12, kRightAxis = 60, kTop = 26, kBottom = 30;

QColor series_color(size_t i) {
  static const QColor palette[] = {QColor(31, 119, 180), QColor(44, 160, 44),   QColor(148, 103, 189),
                                   QColor(140, 86, 75),  QColor(227, 119, 194), QColor(127, 127, 127),
                                   QColor(188, 189, 34), QColor(23, 190, 207)};
  return palette[i % (sizeof palette / sizeof palette[0])];
}

// Learning rates and similar schedules live on another scale than the losses: hidden until asked for.
bool hidden_by_default(const QString& name) {
  const QString n = name.toLower();
  return n == "lr" || n.contains("learning_rate") || n.endsWith("_lr") || n.startsWith("lr_");
}

// Scalars on another scale than the loss terms: norms, accuracies, rates, counts. They get the right axis.
bool secondary_by_name(const QString& name) {
  const QString n = name.toLower();
  if (n.contains("loss")) return false;
  for (const char* word : {"norm", "acc", "lr", "learning_rate", "rate", "grad", "scale", "time", "epoch", "count"})
    if (n.contains(QLatin1String(word))) return true;
  return false;
}

// Value labels right of `plot` for the right axis (the grid lines follow the left axis).
void draw_right_axis(QPainter& painter, const QRect& plot, double low, double high, bool log10_values) {
  painter.save();
  const QFontMetrics metrics(painter.font());
  std::vector<double> ticks;
  if (log10_values) {
    for (double e = std::ceil(low); e <= high; e += std::max(1.0, std::floor((high - low) / 6))) ticks.push_back(e);
    // Less than two decades (a gradient norm between 10 and 200): 2 and 5 times the powers of ten too.
    if (high - low < 2)
      for (double e = std::floor(low); e <= high; ++e)
        for (double m : {2.0, 5.0})
          if (e + std::log10(m) >= low && e + std::log10(m) <= high) ticks.push_back(e + std::log10(m));
  } else {
    ticks = nice_ticks(low, high, std::max(2, plot.height() / 40));
  }
  painter.setPen(QColor(80, 80, 80));
  for (double t : ticks) {
    const double y = plot.bottom() - (t - low) / (high - low) * plot.height();
    painter.drawLine(QPointF(plot.right(), y), QPointF(plot.right() + 3, y));
    const QString label = log10_values ? tick_label(std::pow(10.0, t)) : tick_label(t);
    painter.drawText(QRectF(plot.right() + 5, y - metrics.height() / 2.0, kRightAxis - 6, metrics.height()),
                     Qt::AlignLeft | Qt::AlignVCenter, label);
  }
  painter.setPen(QColor(150, 150, 150));
  painter.drawLine(plot.bottomRight(), plot.topRight());
  painter.restore();
}

}  // namespace

LossView::LossView(RunDocument& document, ViewerState& state, QWidget* parent) : RunView(document, state, parent) {
  setFocusPolicy(Qt::StrongFocus);
  setMouseTracking(true);
  setMinimumSize(300, 150);
  connect(&document_, &RunDocument::opened, this, [this] {
    series_.clear();
    load();
  });
  connect(&document_, &RunDocument::grew, this, &LossView::load);
  connect(&document_, &RunDocument::report_ready, this, qOverload<>(&QWidget::update));
  connect(&state_, &ViewerState::focus_step_changed, this, qOverload<>(&QWidget::update));
  connect(&state_, &ViewerState::window_changed, this, qOverload<>(&QWidget::update));
}

void LossView::load() {
  if (!document_.is_open()) return;
  struct Input {
    QString name;
    std::vector<int64_t> steps;
    std::vector<double> values;
  };
  std::vector<Input> inputs;
  for (const auto& s : document_.scalars()) inputs.push_back({QString::fromStdString(s.name), s.steps, s.values});
  const double smoothing = smoothing_;
  const bool was_whole = series_.empty() || (view_first_ <= data_first_ && view_last_ >= data_last_);
  const uint64_t ticket = begin_request();
  struct Overviews {
    QString name;
    std::shared_ptr<const analysis::ScalarOverview> raw, smoothed;
  };
  document_.run<std::vector<Overviews>>(
      this,
      [inputs = std::move(inputs), smoothing](format::RunReader&) {
        std::vector<Overviews> out;
        for (const auto& in : inputs) {
          Overviews o{in.name, std::make_shared<const analysis::ScalarOverview>(in.steps, in.values), nullptr};
          if (smoothing > 0)
            o.smoothed = std::make_shared<const analysis::ScalarOverview>(
                in.steps, analysis::exponential_moving_average(in.values, smoothing));
          out.push_back(std::move(o));
        }
        return out;
      },
      [this, ticket, was_whole](std::vector<Overviews> overviews) {
        if (!end_request(ticket)) return;
        std::vector<Series> next;
        for (size_t i = 0; i < overviews.size(); ++i) {
          Series s;
          s.name = overviews[i].name;
          s.color = series_color(i);
          s.visible = !hidden_by_default(s.name);
          s.secondary = secondary_by_name(s.name);
          for (const auto& old : series_)
            if (old.name == s.name) s.visible = old.visible;  // keep the user's choice across reloads
          s.overview = std::move(overviews[i].raw);
          s.smoothed = std::move(overviews[i].smoothed);
          next.push_back(std::move(s));
        }
        // If every series is hidden by default (only a learning rate was recorded), show them all.
        if (std::none_of(next.begin(), next.end(), [](const Series& s) { return s.visible; }))
          for (auto& s : next) s.visible = true;
        series_ = std::move(next);
        data_first_ = double(document_.first_step());
        data_last_ = double(document_.last_step()) + 1;
        if (was_whole) {
          view_first_ = data_first_;
          view_last_ = data_last_;
        }
        update_value_range();
        update();
      },
      [this, ticket](QString) { end_request(ticket); });
}

void LossView::set_visible_range(double first, double last) {
  if (!(last > first)) return;
  const double span = std::min(last - first, std::max(1.0, data_last_ - data_first_));
  first = std::clamp(first, data_first_, std::max(data_first_, data_last_ - span));
  view_first_ = first;
  view_last_ = first + std::max(span, 4.0);
  update_value_range();
  update();
}

void LossView::reset_zoom() {
  set_visible_range(data_first_, data_last_);
}

void LossView::set_log_scale(bool on) {
  log_scale_ = on;
  update_value_range();
  update();
}

void LossView::set_smoothing(double weight) {
  smoothing_ = std::clamp(weight, 0.0, 0.999);
  load();
}

void LossView::update_value_range() {
  // The right axis only when both kinds are shown: scalars that are all of one kind share the left one.
  bool any_main = false, any_secondary = false;
  for (const auto& s : series_)
    if (s.visible) (s.secondary ? any_secondary : any_main) = true;
  right_axis_shown_ = any_main && any_secondary;

  // The raw values set the range, also when smoothed: a spike must stay inside the chart.
  double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY}, smallest_positive[2] = {INFINITY, INFINITY};
  for (const auto& s : series_) {
    if (!s.visible || !s.overview) continue;
    const int axis = axis_of(s);
    double a = 0, b = 0;
    if (s.overview->finite_range(view_first_, view_last_, &a, &b)) {
      lo[axis] = std::min(lo[axis], a);
      hi[axis] = std::max(hi[axis], b);
    }
    double p = 0;
    if (s.overview->smallest_positive(view_first_, view_last_, &p))
      smallest_positive[axis] = std::min(smallest_positive[axis], p);
  }
  for (int axis = 0; axis < 2; ++axis) {
    double& low = y_low_[axis];
    double& high = y_high_[axis];
    low = 0, high = 1;  // when there is nothing (positive, on a log scale) to show
    if (log_scale_) {
      if (!(smallest_positive[axis] < INFINITY) || !(hi[axis] > 0)) continue;
      low = std::log10(smallest_positive[axis]);
      high = std::log10(hi[axis]);
    } else {
      if (!(lo[axis] <= hi[axis])) continue;
      low = lo[axis], high = hi[axis];
    }
    if (high - low < 1e-12) low -= 0.5, high += 0.5;
    const double pad = 0.05 * (high - low);
    low -= pad;
    high += pad;
  }
}

QRect LossView::plot_rect(const QSize& size) const {
  const int right = right_axis_shown_ ? kRightAxis : kRight;
  return QRect(kLeft, kTop, std::max(10, size.width() - kLeft - right), std::max(10, size.height() - kTop - kBottom));
}

double LossView::x_for_step(double step, const QSize& size) const {
  const QRect plot = plot_rect(size);
  return plot.left() + (step - view_first_) / (view_last_ - view_first_) * plot.width();
}

double LossView::step_for_x(double x) const {
  const QRect plot = plot_rect(size());
  return view_first_ + (x - plot.left()) / plot.width() * (view_last_ - view_first_);
}

double LossView::y_for_value(double value, const QRect& plot, int axis) const {
  const double low = y_low_[axis], high = y_high_[axis];
  double v = value;
  if (log_scale_) v = value > 0 ? std::log10(value) : low;
  const double t = (v - low) / (high - low);
  return plot.bottom() - std::clamp(t, -0.02, 1.02) * plot.height();
}

const std::vector<analysis::ScalarColumn>& LossView::reduce(const analysis::ScalarOverview& overview,
                                                            Reduction& reduction, int columns) const {
  if (reduction.first != view_first_ || reduction.last != view_last_ || int(reduction.columns.size()) != columns) {
    reduction.columns = overview.columns(view_first_, view_last_, columns);
    reduction.first = view_first_;
    reduction.last = view_last_;
  }
  return reduction.columns;
}

// A 1-pixel series is drawn as one vertical span per pixel column, from its min to its max and on to halfway to each
// neighbour's joining value: the pixels a polyline through the column's points would cover, as one rectangle fill
// per column (a dense series over millions of steps costs what a thin one does). Lines bridge columns without points;
// columns with no finite value leave a gap. Wider pens (the smoothed series) draw the polyline itself.
void LossView::draw_series(QPainter& painter, const std::vector<analysis::ScalarColumn>& columns, const QRect& plot,
                           int axis, const QPen& pen) const {
  struct Column {
    int c;
    double top, bottom, first, last;  // pixel y
  };
  std::vector<Column> shown;
  shown.reserve(columns.size());
  QVector<QLineF> lines;
  QVector<QRect> spans;
  const bool as_spans = pen.widthF() <= 1.0;
  auto flush = [&](size_t from, size_t to) {  // one run of columns with finite values: shown[from, to)
    for (size_t i = from; i < to; ++i) {
      const Column& k = shown[i];
      const double x = plot.left() + double(k.c) + 0.5;
      const bool left = i > from && shown[i - 1].c + 1 == k.c, right = i + 1 < to && shown[i + 1].c == k.c + 1;
      if (i + 1 < to && !right)
        lines.append(QLineF(x, k.last, plot.left() + double(shown[i + 1].c) + 0.5, shown[i + 1].first));
      if (!as_spans) {
        if (right) lines.append(QLineF(x, k.last, x + 1, shown[i + 1].first));
        if (k.bottom - k.top >= 1) lines.append(QLineF(x, k.top, x, k.bottom));
        continue;
      }
      double lo = k.top, hi = k.bottom;
      if (left) {
        const double mid = 0.5 * (shown[i - 1].last + k.first);
        lo = std::min(lo, mid), hi = std::max(hi, mid);
      }
      if (right) {
        const double mid = 0.5 * (k.last + shown[i + 1].first);
        lo = std::min(lo, mid), hi = std::max(hi, mid);
      }
      const int y0 = int(std::floor(lo)), y1 = int(std::floor(hi));
      spans.append(QRect(plot.left() + k.c, y0, 1, y1 - y0 + 1));
    }
  };
  size_t run = 0;
  for (size_t c = 0; c < columns.size(); ++c) {
    const auto& col = columns[c];
    if (col.empty) continue;
    if (!col.any_finite) {
      flush(run, shown.size());
      run = shown.size();
      continue;
    }
    shown.push_back({int(c), y_for_value(col.max, plot, axis), y_for_value(col.min, plot, axis),
                     y_for_value(col.first, plot, axis), y_for_value(col.last, plot, axis)});
  }
  flush(run, shown.size());
  painter.setPen(pen);
  if (!lines.isEmpty()) painter.drawLines(lines);
  if (!spans.isEmpty()) {
    painter.setPen(Qt::NoPen);
    painter.setBrush(pen.color());
    painter.drawRects(spans);
    painter.setBrush(Qt::NoBrush);
  }
}

void LossView::render_view(QPainter& painter, const QSize& size) {
  painter.save();
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  const QRect plot = plot_rect(size);
  painter.setFont(QFont(font().family(), 8));
  if (!document_.is_open() || series_.empty()) {
    draw_hint(painter, size, document_.is_open() ? tr("No scalars recorded") : tr("Open a run: File ▸ Open (Ctrl+O)"));
    painter.restore();
    return;
  }

  // Focus band and line.
  const double focus = double(state_.focus_step());
  const double band_left = x_for_step(focus - double(state_.window()), size);
  const double band_right = x_for_step(focus + double(state_.window()) + 1, size);
  painter.setClipRect(plot);
  painter.fillRect(QRectF(band_left, plot.top(), std::max(1.0, band_right - band_left), plot.height()),
                   QColor(30, 90, 200, 28));

  // Axes and grid.
  painter.setClipping(false);
  draw_value_axis(painter, plot, y_low_[0], y_high_[0], log_scale_);
  if (right_axis_shown_) draw_right_axis(painter, plot, y_low_[1], y_high_[1], log_scale_);
  draw_step_axis(painter, plot, view_first_, view_last_);

  // Abnormal snapshots: a thin line under the series, so that the spike it marks stays visible.
  if (document_.has_report()) {
    for (const auto& a : document_.report().anomalies) {
      const double x = x_for_step(double(a.step) + 0.5, size);
      painter.setPen(
          QPen(a.kind == analysis::AnomalyKind::NonFinite ? non_finite_color() : anomaly_color(), 1, Qt::DashLine));
      painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()));
    }
  }

  // The series, one pixel column at a time. Smoothed, the raw series stays underneath, faint.
  painter.setClipRect(plot.adjusted(0, -4, 0, 4));
  const int columns = plot.width();
  std::vector<bool> non_finite(size_t(columns), false);
  // Right-axis scalars first and lighter: the loss terms are what the chart is about.
  std::vector<Series*> order;
  for (int axis : {1, 0})
    for (auto& s : series_)
      if (s.visible && s.overview && axis_of(s) == axis) order.push_back(&s);
  for (Series* series : order) {
    Series& s = *series;
    const int axis = axis_of(s);
    const auto& raw = reduce(*s.overview, s.raw_columns, columns);
    // Not a number from one column on until the series has a finite value again (columns without points between
    // two NaN steps included, so that a NaN stretch reads as one band).
    bool in_non_finite = false;
    for (int c = 0; c < columns; ++c) {
      const auto& col = raw[size_t(c)];
      if (!col.empty) in_non_finite = (col.nan || col.pos_inf || col.neg_inf) && !col.any_finite;
      if (in_non_finite || col.nan || col.pos_inf || col.neg_inf) non_finite[size_t(c)] = true;
    }
    // Width 1: the raster engine's fast line path.
    QColor color = s.color;
    if (axis == 1) color.setAlpha(150);
    if (s.smoothed) {
      QColor faint = s.color;
      faint.setAlpha(axis == 1 ? 45 : 70);
      draw_series(painter, raw, plot, axis, QPen(faint, 1));
      draw_series(painter, reduce(*s.smoothed, s.smoothed_columns, columns), plot, axis, QPen(color, 1.5));
    } else {
      draw_series(painter, raw, plot, axis, QPen(color, 1));
    }
  }
  painter.setClipping(false);

  // NaN/Inf: a red band along the top edge wherever a visible series is not a number, and a red tint over the plot.
  painter.setPen(Qt::NoPen);
  for (int c = 0; c < columns;) {
    if (!non_finite[size_t(c)]) {
      ++c;
      continue;
    }
    int end = c;
    while (end < columns && non_finite[size_t(end)]) ++end;
    painter.fillRect(QRectF(plot.left() + c, plot.top(), end - c, plot.height()), QColor(210, 20, 20, 22));
    painter.fillRect(QRectF(plot.left() + c - 0.5, plot.top() - 5, end - c + 1, 5), non_finite_color());
    c = end;
  }

  // Abnormal snapshots from the analysis: a marker above the plot (their lines are drawn under the series).
  if (document_.has_report()) {
    for (const auto& a : document_.report().anomalies) {
      const double x = x_for_step(double(a.step) + 0.5, size);
      if (x < plot.left() || x > plot.right()) continue;
      const QColor color = a.kind == analysis::AnomalyKind::NonFinite ? non_finite_color() : anomaly_color();
      painter.setPen(Qt::NoPen);
      painter.setBrush(color);
      const QPointF tip(x, plot.top() - 1);
      const QPointF marker[] = {tip, tip + QPointF(-5, -9), tip + QPointF(5, -9)};
      painter.drawPolygon(marker, 3);
    }
  }

  // The focus line on top.
  const double fx = x_for_step(focus + 0.5, size);
  if (fx >= plot.left() && fx <= plot.right()) {
    painter.setPen(QPen(focus_color(), 1.5));
    painter.drawLine(QPointF(fx, plot.top()), QPointF(fx, plot.bottom()));
  }

  // Legend (a click toggles a series) and the display state.
  legend_rects_.assign(series_.size(), QRect());
  const QFontMetrics metrics(painter.font());
  int x = plot.left() + 4;
  for (size_t i = 0; i < series_.size(); ++i) {
    const auto& s = series_[i];
    const QString label = axis_of(s) == 1 ? tr("%1 (right)").arg(s.name) : s.name;
    const int w = 14 + metrics.horizontalAdvance(label) + 12;
    const QRect r(x, plot.top() + 3, w, metrics.height());
    painter.fillRect(r, QColor(255, 255, 255, 220));
    painter.fillRect(QRect(r.left() + 1, r.center().y() - 1, 10, 3), s.visible ? s.color : QColor(200, 200, 200));
    painter.setPen(s.visible ? Qt::black : QColor(160, 160, 160));
    painter.drawText(r.adjusted(14, 0, 0, 0), Qt::AlignLeft | Qt::AlignVCenter, label);
    legend_rects_[i] = r;
    x += w;
  }
  QStringList mode;
  if (log_scale_) mode << tr("log");
  if (smoothing_ > 0) mode << tr("EMA %1").arg(smoothing_);
  mode << tr("focus %1 ± %2").arg(state_.focus_step()).arg(state_.window());
  painter.setPen(QColor(90, 90, 90));
  painter.drawText(QRect(0, 2, size.width() - kRight, kTop - 12), Qt::AlignRight | Qt::AlignVCenter,
                   mode.join(QStringLiteral(" · ")));
  painter.restore();
}

void LossView::wheelEvent(QWheelEvent* event) {
  const double factor = std::pow(0.85, event->angleDelta().y() / 120.0);
  const double anchor = step_for_x(event->position().x());
  const double first = anchor - (anchor - view_first_) * factor;
  const double last = anchor + (view_last_ - anchor) * factor;
  set_visible_range(first, last);
  event->accept();
}

void LossView::mousePressEvent(QMouseEvent* event) {
  press_pos_ = event->pos();
  press_first_ = view_first_;
  press_last_ = view_last_;
  dragging_ = false;
}

void LossView::mouseMoveEvent(QMouseEvent* event) {
  if (!(event->buttons() & Qt::LeftButton)) return;
  if (!dragging_ && (event->pos() - press_pos_).manhattanLength() < 4) return;
  dragging_ = true;
  const double per_pixel = (press_last_ - press_first_) / plot_rect(size()).width();
  const double shift = -(event->pos().x() - press_pos_.x()) * per_pixel;
  set_visible_range(press_first_ + shift, press_last_ + shift);
}

void LossView::mouseReleaseEvent(QMouseEvent* event) {
  if (dragging_ || event->button() != Qt::LeftButton) return;
  for (size_t i = 0; i < legend_rects_.size(); ++i)
    if (legend_rects_[i].contains(event->pos())) {
      series_[i].visible = !series_[i].visible;
      update_value_range();
      update();
      return;
    }
  if (!plot_rect(size()).contains(event->pos()) || !document_.is_open()) return;
  // A click near an abnormal snapshot's marker snaps to it; elsewhere to the nearest recorded snapshot.
  const double step = step_for_x(event->pos().x());
  if (document_.has_report()) {
    const double pixels = (view_last_ - view_first_) / plot_rect(size()).width();
    for (const auto& a : document_.report().anomalies)
      if (std::abs(double(a.step) + 0.5 - step) <= 4 * pixels) {
        state_.set_focus_step(document_.nearest_snapshot_step(a.step));
        return;
      }
  }
  state_.set_focus_step(document_.nearest_snapshot_step(int64_t(std::floor(step))));
}

void LossView::keyPressEvent(QKeyEvent* event) {
  switch (event->key()) {
    case Qt::Key_L: set_log_scale(!log_scale_); break;
    case Qt::Key_S: set_smoothing(smoothing_ == 0 ? 0.9 : smoothing_ < 0.95 ? 0.99 : 0.0); break;
    case Qt::Key_Home: reset_zoom(); break;
    default: RunView::keyPressEvent(event);
  }
}

bool LossView::event(QEvent* event) {
  if (event->type() != QEvent::ToolTip) return RunView::event(event);
  auto* help = static_cast<QHelpEvent*>(event);
  if (series_.empty() || !plot_rect(size()).contains(help->pos())) {
    QToolTip::hideText();
    return true;
  }
  const double step = step_for_x(help->pos().x());
  QStringList lines;
  for (const auto& s : series_) {
    if (!s.visible || !s.overview) continue;
    const long i = s.overview->nearest(step);
    if (i < 0) continue;
    QString line = QStringLiteral("%1 = %2 at step %3")
                       .arg(s.name, QString::fromStdString(analysis::shortest_decimal(s.overview->values()[size_t(i)])))
                       .arg(s.overview->steps()[size_t(i)]);
    if (s.smoothed)
      line +=
          tr(" (smoothed %1)").arg(QString::fromStdString(analysis::shortest_decimal(s.smoothed->values()[size_t(i)])));
    lines << line;
  }
  if (document_.has_report())
    for (const auto& a : document_.report().anomalies)
      if (std::abs(x_for_step(double(a.step) + 0.5) - help->pos().x()) <= 4)
        lines << tr("<b>%1</b> at step %2, score %3: %4")
                     .arg(QString::fromUtf8(analysis::anomaly_kind_name(a.kind)))
                     .arg(a.step)
                     .arg(a.score, 0, 'g', 3)
                     .arg(QString::fromStdString(a.reason).toHtmlEscaped());
  QToolTip::showText(help->globalPos(), lines.join(QStringLiteral("<br>")), this);
  return true;
}

}  // namespace trainscope::viewer
