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

constexpr int kLeft = 64, kRight = 12, kTop = 26, kBottom = 30;

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
  using Overviews = std::vector<std::pair<QString, std::shared_ptr<const analysis::ScalarOverview>>>;
  document_.run<Overviews>(
      this,
      [inputs = std::move(inputs), smoothing](format::RunReader&) {
        Overviews out;
        for (const auto& in : inputs) {
          auto values = smoothing > 0 ? analysis::exponential_moving_average(in.values, smoothing) : in.values;
          out.emplace_back(in.name, std::make_shared<const analysis::ScalarOverview>(in.steps, std::move(values)));
        }
        return out;
      },
      [this, ticket, was_whole](Overviews overviews) {
        if (!end_request(ticket)) return;
        std::vector<Series> next;
        for (size_t i = 0; i < overviews.size(); ++i) {
          Series s;
          s.name = overviews[i].first;
          s.color = series_color(i);
          s.visible = !hidden_by_default(s.name);
          for (const auto& old : series_)
            if (old.name == s.name) s.visible = old.visible;  // keep the user's choice across reloads
          s.overview = std::move(overviews[i].second);
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
  double lo = INFINITY, hi = -INFINITY, smallest_positive = INFINITY;
  for (const auto& s : series_) {
    if (!s.visible || !s.overview) continue;
    double a = 0, b = 0;
    if (s.overview->finite_range(view_first_, view_last_, &a, &b)) {
      lo = std::min(lo, a);
      hi = std::max(hi, b);
    }
    double p = 0;
    if (s.overview->smallest_positive(view_first_, view_last_, &p)) smallest_positive = std::min(smallest_positive, p);
  }
  if (log_scale_) {
    if (!(smallest_positive < INFINITY) || !(hi > 0)) {
      y_low_ = 0, y_high_ = 1;  // nothing positive to show
      return;
    }
    y_low_ = std::log10(smallest_positive);
    y_high_ = std::log10(hi);
  } else {
    if (!(lo <= hi)) {
      y_low_ = 0, y_high_ = 1;
      return;
    }
    y_low_ = lo, y_high_ = hi;
  }
  if (y_high_ - y_low_ < 1e-12) y_low_ -= 0.5, y_high_ += 0.5;
  const double pad = 0.05 * (y_high_ - y_low_);
  y_low_ -= pad;
  y_high_ += pad;
}

QRect LossView::plot_rect(const QSize& size) const {
  return QRect(kLeft, kTop, std::max(10, size.width() - kLeft - kRight), std::max(10, size.height() - kTop - kBottom));
}

double LossView::x_for_step(double step, const QSize& size) const {
  const QRect plot = plot_rect(size);
  return plot.left() + (step - view_first_) / (view_last_ - view_first_) * plot.width();
}

double LossView::step_for_x(double x) const {
  const QRect plot = plot_rect(size());
  return view_first_ + (x - plot.left()) / plot.width() * (view_last_ - view_first_);
}

double LossView::y_for_value(double value, const QRect& plot) const {
  double v = value;
  if (log_scale_) v = value > 0 ? std::log10(value) : y_low_;
  const double t = (v - y_low_) / (y_high_ - y_low_);
  return plot.bottom() - std::clamp(t, -0.02, 1.02) * plot.height();
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
  draw_value_axis(painter, plot, y_low_, y_high_, log_scale_);
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

  // The series, one pixel column at a time: a vertical stroke from min to max, joined to the next column.
  painter.setClipRect(plot.adjusted(0, -4, 0, 4));
  const int columns = plot.width();
  std::vector<bool> non_finite(size_t(columns), false);
  for (auto& s : series_) {
    if (!s.visible || !s.overview) continue;
    // The reduction is kept until the range, the width or the data change: a repaint (focus moved, window exposed)
    // only draws.
    if (s.columns_first != view_first_ || s.columns_last != view_last_ || int(s.columns.size()) != columns) {
      s.columns = s.overview->columns(view_first_, view_last_, columns);
      s.columns_first = view_first_;
      s.columns_last = view_last_;
    }
    const auto& cols = s.columns;
    // A vertical stroke from min to max per column holding several points; a line from each column's last point to
    // the next column's first.
    QVector<QLineF> lines;
    lines.reserve(2 * columns);
    bool have_prev = false;
    QPointF prev;
    for (int c = 0; c < columns; ++c) {
      const auto& col = cols[size_t(c)];
      if (col.empty) continue;
      if (col.nan || col.pos_inf || col.neg_inf) non_finite[size_t(c)] = true;
      if (!col.any_finite) {
        have_prev = false;  // a gap where the values are not numbers
        continue;
      }
      const double x = plot.left() + c + 0.5;
      const double top = y_for_value(col.max, plot), bottom = y_for_value(col.min, plot);
      const QPointF first(x, y_for_value(col.first, plot)), last(x, y_for_value(col.last, plot));
      if (have_prev) lines.append(QLineF(prev, first));
      if (bottom - top >= 1) lines.append(QLineF(x, top, x, bottom));
      prev = last;
      have_prev = true;
    }
    painter.setPen(QPen(s.color, 1));  // width 1: the raster engine's fast line path
    painter.drawLines(lines);
  }
  painter.setClipping(false);

  // NaN/Inf: red ticks along the top edge wherever a visible series is not a number, and a red tint over the plot.
  painter.setPen(Qt::NoPen);
  for (int c = 0; c < columns; ++c)
    if (non_finite[size_t(c)]) {
      painter.fillRect(QRectF(plot.left() + c, plot.top(), 1, plot.height()), QColor(210, 20, 20, 22));
      painter.fillRect(QRectF(plot.left() + c - 0.5, plot.top() - 5, 2, 5), non_finite_color());
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
    const int w = 14 + metrics.horizontalAdvance(s.name) + 12;
    const QRect r(x, plot.top() + 3, w, metrics.height());
    painter.fillRect(r, QColor(255, 255, 255, 220));
    painter.fillRect(QRect(r.left() + 1, r.center().y() - 1, 10, 3), s.visible ? s.color : QColor(200, 200, 200));
    painter.setPen(s.visible ? Qt::black : QColor(160, 160, 160));
    painter.drawText(r.adjusted(14, 0, 0, 0), Qt::AlignLeft | Qt::AlignVCenter, s.name);
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
    lines << QStringLiteral("%1 = %2 at step %3")
                 .arg(s.name, QString::fromStdString(analysis::shortest_decimal(s.overview->values()[size_t(i)])))
                 .arg(s.overview->steps()[size_t(i)]);
  }
  if (document_.has_report())
    for (const auto& a : document_.report().anomalies)
      if (std::abs(x_for_step(double(a.step) + 0.5) - help->pos().x()) <= 4)
        lines << QStringLiteral("<b>%1</b>: %2")
                     .arg(QString::fromUtf8(analysis::anomaly_kind_name(a.kind)),
                          QString::fromStdString(a.reason).toHtmlEscaped());
  QToolTip::showText(help->globalPos(), lines.join(QStringLiteral("<br>")), this);
  return true;
}

}  // namespace trainscope::viewer
