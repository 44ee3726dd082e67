#include "layer_view.h"

#include "chart_axes.h"

#include <trainscope/analysis/json_writer.h>

#include <QContextMenuEvent>
#include <QHelpEvent>
#include <QKeyEvent>
#include <QMenu>
#include <QMouseEvent>
#include <QPainter>
#include <QToolTip>
#include <QWheelEvent>

#include <algorithm>
#include <cmath>

namespace trainscope::viewer {
namespace {

constexpr int kLeft = 64, kRight = 12, kTop = 24, kBottom = 30;
constexpr size_t kBaseLines = 150;               // lines drawn over the whole run; more when zoomed in
constexpr size_t kMaxLines = 3000;               // never more than this many lines in one picture
constexpr size_t kOrderedLines = 6000;           // length of the progressive order computed per layer
constexpr size_t kExactBrushCells = 20'000'000;  // beyond this many values, a brush tests the ordered lines only

QColor cluster_color(int cluster, int alpha) {
  static const QColor palette[] = {QColor(31, 119, 180),  QColor(44, 160, 44),  QColor(148, 103, 189),
                                   QColor(140, 86, 75),   QColor(23, 190, 207), QColor(188, 189, 34),
                                   QColor(227, 119, 194), QColor(127, 127, 127)};
  QColor c = cluster < 0 ? QColor(120, 130, 140) : palette[size_t(cluster) % 8];
  c.setAlpha(alpha);
  return c;
}

// Rows come in the order they were written (a flight recorder writes the steps before a failure late): sorted by
// step here, one row per step, so that lines run left to right.
void sort_rows_by_step(format::NeuronSeries& series) {
  const auto& steps = series.steps;
  if (std::is_sorted(steps.begin(), steps.end()) && std::adjacent_find(steps.begin(), steps.end()) == steps.end())
    return;
  const size_t n = series.neuron_count;
  std::vector<size_t> rows(steps.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i;
  std::stable_sort(rows.begin(), rows.end(), [&](size_t a, size_t b) { return steps[a] < steps[b]; });
  std::vector<int64_t> sorted_steps;
  std::vector<float> sorted_values;
  for (size_t r : rows) {
    if (!sorted_steps.empty() && sorted_steps.back() == steps[r]) continue;  // a step written twice: keep the first
    sorted_steps.push_back(steps[r]);
    sorted_values.insert(sorted_values.end(), series.values.begin() + long(r * n),
                         series.values.begin() + long((r + 1) * n));
  }
  series.steps = std::move(sorted_steps);
  series.values = std::move(sorted_values);
}

}  // namespace

LayerView::LayerView(RunDocument& document, ViewerState& state, QWidget* parent) : RunView(document, state, parent) {
  setMouseTracking(true);
  setFocusPolicy(Qt::StrongFocus);
  setMinimumSize(300, 200);
  connect(&state_, &ViewerState::layer_changed, this, [this] {
    filter_ = Filter::All;
    brushed_.clear();
    load();
  });
  connect(&state_, &ViewerState::display_changed, this, &LayerView::load);
  connect(&state_, &ViewerState::focus_step_changed, this, qOverload<>(&QWidget::update));
  connect(&state_, &ViewerState::neurons_changed, this, qOverload<>(&QWidget::update));
  connect(&document_, &RunDocument::opened, this, [this] {
    lines_.reset();
    load();
  });
  connect(&document_, &RunDocument::grew, this, &LayerView::load);
}

void LayerView::load() {
  if (!document_.is_open()) return;
  const int layer = state_.layer();
  if (layer < 0) {
    lines_.reset();
    message_ = tr("Select a layer in the snapshot view or the layer list.");
    update();
    return;
  }
  const format::Quantity asked = state_.quantity();
  const format::Statistic statistic = state_.statistic();
  const QString layer_name = QString::fromStdString(document_.graph().name(uint32_t(layer)));
  const int width = std::max(100, plot_rect(size()).width()), height = std::max(60, plot_rect(size()).height());
  const uint64_t ticket = begin_request();
  document_.run<std::shared_ptr<const LayerLines>>(
      this,
      [layer, asked, statistic, layer_name, width, height](format::RunReader& reader) {
        auto out = std::make_shared<LayerLines>();
        out->layer = uint32_t(layer);
        out->statistic = statistic;
        std::vector<format::Quantity> order = {asked};
        for (auto q : format::all_quantities())
          if (q != asked) order.push_back(q);
        for (auto q : order) {
          auto series = reader.read_neuron_series(uint32_t(layer), q, statistic);
          if (!series || series->steps.empty() || series->neuron_count == 0) continue;
          out->quantity = q;
          out->series = std::move(*series);
          if (q != asked)
            out->note = tr("no per-neuron %1 recorded: showing %2")
                            .arg(to_qstring(format::quantity_name(asked)), to_qstring(format::quantity_name(q)));
          break;
        }
        if (out->series.neuron_count == 0) return std::shared_ptr<const LayerLines>();
        sort_rows_by_step(out->series);
        const auto set = analysis::PolylineSet::from(out->series);
        analysis::SamplerOptions options;
        options.chart.width_px = width;
        options.chart.height_px = height;
        options.count = std::min<size_t>(set.lines, kOrderedLines);
        const auto features = analysis::reduce_polylines(set, options.chart, options.buckets);
        out->sample = analysis::BlueNoisePolylineSampler(options).sample(features);
        if (set.lines >= 8) out->clusters = analysis::cluster_polylines(set, features, out->sample.outlier_score);
        return std::shared_ptr<const LayerLines>(std::move(out));
      },
      [this, ticket, layer_name](std::shared_ptr<const LayerLines> result) {
        if (!end_request(ticket)) return;
        lines_ = std::move(result);
        message_ = lines_ ? QString() : tr("No per-neuron statistics recorded for %1.").arg(layer_name);
        if (lines_) {
          data_first_ = double(lines_->series.steps.front());
          data_last_ = double(lines_->series.steps.back());
          if (data_last_ <= data_first_) data_last_ = data_first_ + 1;
          first_step_ = data_first_;
          last_step_ = data_last_;
        }
        update();
      },
      [this, ticket](QString message) {
        end_request(ticket);
        lines_.reset();
        message_ = message;
        update();
      });
}

size_t LayerView::line_budget() const {
  const double zoom = (data_last_ - data_first_) / std::max(1e-9, last_step_ - first_step_);
  return std::min(kMaxLines, size_t(double(kBaseLines) * std::max(1.0, zoom)));
}

void LayerView::set_filter(Filter filter, int cluster) {
  filter_ = filter;
  cluster_filter_ = cluster;
  update();
}

void LayerView::set_step_range(double first, double last) {
  if (!(last > first)) return;
  first_step_ = std::max(data_first_, first);
  last_step_ = std::min(data_last_, last);
  if (last_step_ - first_step_ < 2) last_step_ = std::min(data_last_, first_step_ + 2);
  update();
}

std::vector<uint32_t> LayerView::shown_neurons() const {
  std::vector<uint32_t> out;
  if (!lines_) return out;
  const size_t budget = line_budget();
  for (uint32_t n : lines_->sample.order) {
    if (out.size() >= budget) break;
    const bool outlier = lines_->sample.outlier_score[n] >= analysis::kOutlierScoreThreshold;
    if (filter_ == Filter::Outliers && !outlier) continue;
    if (filter_ == Filter::Cluster &&
        (lines_->clusters.labels.empty() || lines_->clusters.labels[n] != cluster_filter_))
      continue;
    if (filter_ == Filter::Brushed && !std::binary_search(brushed_.begin(), brushed_.end(), n)) continue;
    out.push_back(n);
  }
  return out;
}

QRect LayerView::plot_rect(const QSize& size) const {
  return QRect(kLeft, kTop, std::max(10, size.width() - kLeft - kRight), std::max(10, size.height() - kTop - kBottom));
}

QPointF LayerView::point_for(double step, double value, const QSize& size) const {
  const QRect plot = plot_rect(size);
  const double low = lines_ ? lines_->sample.low : 0, high = lines_ ? lines_->sample.high : 1;
  const double x = plot.left() + (step - first_step_) / (last_step_ - first_step_) * plot.width();
  double t = high > low ? (value - low) / (high - low) : 0.5;
  if (std::isnan(value)) t = 1.04;  // NaN drawn just above the chart
  const double y = plot.bottom() - std::clamp(t, -0.04, 1.04) * plot.height();
  return {x, y};
}

double LayerView::step_at(size_t point) const {
  return double(lines_->series.steps[point]);
}

void LayerView::render_view(QPainter& painter, const QSize& size) {
  painter.save();
  const QFont font = begin_render(painter, size);
  if (!lines_) {
    draw_hint(painter, size,
              !document_.is_open() ? tr("Open a run: File ▸ Open (Ctrl+O)")
              : waiting()          ? tr("Loading…")
              : message_.isEmpty() ? tr("Select a layer in the snapshot view or the layer list.")
                                   : message_);
    painter.restore();
    return;
  }
  const auto& series = lines_->series;
  const size_t n = series.neuron_count, points = series.steps.size();
  const QRect plot = plot_rect(size);
  draw_value_axis(painter, plot, lines_->sample.low, lines_->sample.high, false);
  draw_step_axis(painter, plot, first_step_, last_step_);
  painter.setRenderHint(QPainter::Antialiasing);
  painter.setClipRect(plot.adjusted(0, -8, 0, 8));

  // Visible points.
  const auto lo_it = std::lower_bound(series.steps.begin(), series.steps.end(), int64_t(std::floor(first_step_)));
  const auto hi_it = std::upper_bound(series.steps.begin(), series.steps.end(), int64_t(std::ceil(last_step_)));
  const size_t p0 = size_t(std::max<ptrdiff_t>(0, (lo_it - series.steps.begin()) - 1));
  const size_t p1 = std::min(points, size_t(hi_it - series.steps.begin()) + 1);

  // Cluster bands (10th to 90th percentile of each cluster) behind the lines.
  if (filter_ == Filter::All || filter_ == Filter::Cluster) {
    for (size_t c = 0; c < lines_->clusters.bands.size(); ++c) {
      if (filter_ == Filter::Cluster && int(c) != cluster_filter_) continue;
      const auto& band = lines_->clusters.bands[c];
      QPolygonF polygon;
      for (size_t p = p0; p < p1 && p < band.q90.size(); ++p) polygon << point_for(step_at(p), band.q90[p], size);
      for (size_t p = std::min(p1, band.q10.size()); p-- > p0;) polygon << point_for(step_at(p), band.q10[p], size);
      painter.setPen(Qt::NoPen);
      painter.setBrush(cluster_color(int(c), 45));
      painter.drawPolygon(polygon);
    }
  }

  const auto shown = shown_neurons();
  // A NaN or Inf breaks the line; the step is marked with a red tick at the edge it points to (NaN: the top).
  std::vector<QRectF> non_finite_marks;
  auto draw_line = [&](uint32_t neuron, const QPen& pen) {
    QPolygonF polyline;
    painter.setPen(pen);
    for (size_t p = p0; p < p1; ++p) {
      const float v = series.values[p * n + neuron];
      if (!std::isfinite(v)) {
        if (polyline.size() > 1) painter.drawPolyline(polyline);
        polyline.clear();
        const QPointF at = point_for(step_at(p), 0, size);
        non_finite_marks.emplace_back(at.x() - 1, v < 0 ? plot.bottom() + 1 : plot.top() - 7, 2.5, 6);
        continue;
      }
      polyline << point_for(step_at(p), v, size);
    }
    if (polyline.size() > 1) painter.drawPolyline(polyline);
  };
  // Typical lines first, outliers over them, NaN/Inf lines over those, the selection on top. When most lines hold a
  // NaN/Inf (it spread through the layer) red says nothing: they keep their cluster colour and the red ticks remain.
  size_t non_finite_shown = 0;
  for (uint32_t neuron : shown)
    non_finite_shown += neuron < lines_->sample.spacing.size() && std::isinf(lines_->sample.spacing[neuron]);
  const bool mark_non_finite_lines = non_finite_shown * 2 < shown.size();
  for (int pass = 0; pass < 3; ++pass)
    for (uint32_t neuron : shown) {
      const float score = lines_->sample.outlier_score[neuron];
      const bool non_finite =
          mark_non_finite_lines && neuron < lines_->sample.spacing.size() && std::isinf(lines_->sample.spacing[neuron]);
      const int kind = non_finite ? 2 : score >= analysis::kOutlierScoreThreshold ? 1 : 0;
      if (kind != pass) continue;
      if (kind == 2)
        draw_line(neuron, QPen(non_finite_color(), 1.4));
      else if (kind == 1 && mark_non_finite_lines)
        draw_line(neuron, QPen(outlier_color(), 1.2));
      else
        draw_line(neuron, QPen(cluster_color(lines_->clusters.labels.empty() ? -1 : lines_->clusters.labels[neuron],
                                             shown.size() > 500 ? 60 : 110),
                               1));
    }
  for (uint32_t neuron : state_.neurons())
    if (neuron < n) draw_line(neuron, QPen(selected_color(), 2.2));
  painter.setClipping(false);
  for (const auto& mark : non_finite_marks) painter.fillRect(mark, non_finite_color());

  // Focus line and the brush.
  painter.setClipping(false);
  const double fx = point_for(double(state_.focus_step()), 0, size).x();
  if (fx >= plot.left() && fx <= plot.right()) {
    painter.setPen(QPen(QColor(30, 90, 200), 1.5));
    painter.drawLine(QPointF(fx, plot.top()), QPointF(fx, plot.bottom()));
  }
  if (brushing_) {
    painter.setPen(QPen(selected_color(), 1, Qt::DashLine));
    painter.setBrush(QColor(20, 60, 220, 30));
    painter.drawRect(QRectF(brush_start_, brush_end_).normalized());
  }

  // Caption.
  size_t outliers = 0;
  for (float s : lines_->sample.outlier_score) outliers += s >= analysis::kOutlierScoreThreshold;
  QString filter;
  if (filter_ == Filter::Outliers) filter = tr(" · outliers only");
  if (filter_ == Filter::Cluster) filter = tr(" · cluster %1").arg(cluster_filter_ + 1);
  if (filter_ == Filter::Brushed) filter = tr(" · %1 lines through the brushed range").arg(brushed_.size());
  QString caption = tr("%1 · %2 of %3 · %4 of %5 neurons drawn (blue-noise sample) · %6 outliers · %7 clusters%8")
                        .arg(QString::fromStdString(document_.graph().name(lines_->layer)),
                             to_qstring(format::statistic_name(lines_->statistic)),
                             to_qstring(format::quantity_name(lines_->quantity)))
                        .arg(shown.size())
                        .arg(n)
                        .arg(outliers)
                        .arg(lines_->clusters.bands.size())
                        .arg(filter);
  if (!lines_->note.isEmpty()) caption += QStringLiteral(" · ") + lines_->note;
  if (!state_.neurons().isEmpty()) caption += tr(" · %1 selected").arg(state_.neurons().size());
  painter.setPen(QColor(50, 50, 50));
  painter.drawText(QRect(kLeft, 2, size.width() - kLeft - kRight, kTop - 4), Qt::AlignLeft | Qt::AlignVCenter,
                   QFontMetrics(font).elidedText(caption, Qt::ElideRight, size.width() - kLeft - kRight));
  painter.restore();
}

std::vector<uint32_t> LayerView::neurons_crossing(const QRectF& rect) const {
  std::vector<uint32_t> out;
  if (!lines_) return out;
  const auto& series = lines_->series;
  const size_t n = series.neuron_count, points = series.steps.size();
  std::vector<uint32_t> candidates;
  if (n * points <= kExactBrushCells) {
    candidates.resize(n);
    for (uint32_t i = 0; i < n; ++i) candidates[i] = i;
  } else {
    candidates = lines_->sample.order;
  }
  const QSize s = size();
  for (uint32_t neuron : candidates) {
    bool hit = false;
    for (size_t p = 0; p + 1 < points && !hit; ++p) {
      const float v0 = series.values[p * n + neuron], v1 = series.values[(p + 1) * n + neuron];
      if (!std::isfinite(v0) || !std::isfinite(v1)) continue;
      QPointF a = point_for(step_at(p), v0, s), b = point_for(step_at(p + 1), v1, s);
      if (b.x() < rect.left() || a.x() > rect.right()) continue;
      // Clip the segment to the rectangle's x-range, then compare y-ranges.
      auto y_at = [&](double x) {
        return b.x() == a.x() ? a.y() : a.y() + (b.y() - a.y()) * (x - a.x()) / (b.x() - a.x());
      };
      const double xa = std::max(a.x(), rect.left()), xb = std::min(b.x(), rect.right());
      const double ya = y_at(xa), yb = y_at(xb);
      hit = std::max(ya, yb) >= rect.top() && std::min(ya, yb) <= rect.bottom();
    }
    if (hit) out.push_back(neuron);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::pair<uint32_t, size_t>> LayerView::nearest_line(const QPointF& pos) const {
  if (!lines_) return std::nullopt;
  const auto& series = lines_->series;
  const size_t n = series.neuron_count;
  // The point column nearest to the mouse, then the drawn line closest in y.
  const double step =
      first_step_ + (pos.x() - plot_rect(size()).left()) / plot_rect(size()).width() * (last_step_ - first_step_);
  auto it = std::lower_bound(series.steps.begin(), series.steps.end(), int64_t(std::llround(step)));
  if (it == series.steps.end()) --it;
  const size_t p = size_t(it - series.steps.begin());
  std::optional<std::pair<uint32_t, size_t>> best;
  double best_d = 6;
  std::vector<uint32_t> candidates = shown_neurons();
  for (uint32_t s : state_.neurons()) candidates.push_back(s);
  for (uint32_t neuron : candidates) {
    if (neuron >= n) continue;
    const double d = std::abs(point_for(step_at(p), series.values[p * n + neuron], size()).y() - pos.y());
    if (d < best_d) best_d = d, best = std::make_pair(neuron, p);
  }
  return best;
}

void LayerView::mousePressEvent(QMouseEvent* event) {
  if (event->button() != Qt::LeftButton) return;
  brush_start_ = brush_end_ = event->position();
  brushing_ = true;
}

void LayerView::mouseMoveEvent(QMouseEvent* event) {
  if (!brushing_) return;
  brush_end_ = event->position();
  update();
}

void LayerView::mouseReleaseEvent(QMouseEvent* event) {
  if (!brushing_ || event->button() != Qt::LeftButton) return;
  brushing_ = false;
  brush_end_ = event->position();
  const QRectF rect = QRectF(brush_start_, brush_end_).normalized();
  if (rect.width() < 4 && rect.height() < 4) {  // a click: the line under the mouse
    if (auto hit = nearest_line(event->position())) state_.set_neurons({hit->first});
    update();
    return;
  }
  const auto crossing = neurons_crossing(rect);
  if (event->modifiers() & Qt::ShiftModifier) {
    brushed_ = crossing;
    filter_ = Filter::Brushed;
  } else {
    state_.set_neurons(QVector<quint32>(crossing.begin(), crossing.end()));
  }
  update();
}

void LayerView::wheelEvent(QWheelEvent* event) {
  if (!lines_) return;
  const double factor = std::pow(0.85, event->angleDelta().y() / 120.0);
  const QRect plot = plot_rect(size());
  const double anchor = first_step_ + (event->position().x() - plot.left()) / plot.width() * (last_step_ - first_step_);
  set_step_range(anchor - (anchor - first_step_) * factor, anchor + (last_step_ - anchor) * factor);
}

void LayerView::keyPressEvent(QKeyEvent* event) {
  if (event->key() == Qt::Key_Escape) {
    filter_ = Filter::All;
    brushed_.clear();
    state_.set_neurons({});
    set_step_range(data_first_, data_last_);
  } else if (event->key() == Qt::Key_O) {
    set_filter(filter_ == Filter::Outliers ? Filter::All : Filter::Outliers);
  } else {
    RunView::keyPressEvent(event);
  }
}

void LayerView::contextMenuEvent(QContextMenuEvent* event) {
  if (!lines_) return;
  QMenu menu(this);
  menu.addAction(tr("All lines"), this, [this] { set_filter(Filter::All); });
  menu.addAction(tr("Outliers only (O)"), this, [this] { set_filter(Filter::Outliers); });
  for (size_t c = 0; c < lines_->clusters.sizes.size(); ++c)
    menu.addAction(tr("Cluster %1 (%2 neurons)").arg(c + 1).arg(lines_->clusters.sizes[c]), this,
                   [this, c] { set_filter(Filter::Cluster, int(c)); });
  menu.exec(event->globalPos());
}

bool LayerView::event(QEvent* event) {
  if (event->type() != QEvent::ToolTip) return RunView::event(event);
  auto* help = static_cast<QHelpEvent*>(event);
  const auto hit = nearest_line(help->pos());
  if (!hit) {
    QToolTip::hideText();
    return true;
  }
  const auto& series = lines_->series;
  const float v = series.values[hit->second * series.neuron_count + hit->first];
  QString text = tr("neuron %1 · step %2 · %3")
                     .arg(hit->first)
                     .arg(series.steps[hit->second])
                     .arg(QString::fromStdString(analysis::shortest_decimal(v)));
  text += tr(" · outlier score %1").arg(lines_->sample.outlier_score[hit->first], 0, 'f', 2);
  if (!lines_->clusters.labels.empty() && lines_->clusters.labels[hit->first] >= 0)
    text += tr(" · cluster %1").arg(lines_->clusters.labels[hit->first] + 1);
  QToolTip::showText(help->globalPos(), text, this);
  return true;
}

}  // namespace trainscope::viewer
