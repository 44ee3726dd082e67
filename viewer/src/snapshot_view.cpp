#include "snapshot_view.h"

#include <trainscope/analysis/json_writer.h>

#include <QHelpEvent>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QPainterPath>
#include <QToolTip>
#include <QWheelEvent>

#include <algorithm>
#include <cmath>

namespace trainscope::viewer {
namespace {

// Layout units: a node is kNodeW x kNodeH, ranks kRankX apart, rows kRowY apart; bands (wrapped ranks) kBandGap apart.
constexpr double kNodeW = 150, kNodeH = 62, kRankX = 185, kRowY = 80, kBandGap = 30, kMargin = 12, kHeader = 22;

QString format_value(double v) {
  if (std::isnan(v)) return QStringLiteral("NaN");
  if (std::isinf(v)) return v > 0 ? QStringLiteral("+Inf") : QStringLiteral("-Inf");
  return QString::number(v, 'g', 3);
}

}  // namespace

SnapshotView::SnapshotView(RunDocument& document, ViewerState& state, QWidget* parent)
    : RunView(document, state, parent) {
  setFocusPolicy(Qt::StrongFocus);
  setMouseTracking(true);
  setMinimumSize(300, 200);
  connect(&document_, &RunDocument::opened, this, [this] {
    collapsed_ = analysis::default_collapsed(document_.graph());
    window_.reset();
    relayout();
    update_marks();
    request_window();
  });
  connect(&document_, &RunDocument::report_ready, this, [this] {
    update_marks();
    update();
  });
  connect(&document_, &RunDocument::grew, this, &SnapshotView::request_window);
  connect(&state_, &ViewerState::focus_step_changed, this, &SnapshotView::request_window);
  connect(&state_, &ViewerState::window_changed, this, &SnapshotView::request_window);
  connect(&state_, &ViewerState::display_changed, this, qOverload<>(&QWidget::update));
  connect(&state_, &ViewerState::layer_changed, this, [this](int layer) {
    // A layer selected elsewhere (the tree, the anomaly list) inside a collapsed group: open the groups around it.
    if (layer >= 0 && document_.is_open() && uint32_t(layer) < layout_.node_of_layer.size() &&
        layout_.node_of_layer[size_t(layer)] < 0 && document_.graph().children(uint32_t(layer)).empty()) {
      for (auto p = document_.graph().layer(uint32_t(layer)).parent_id; p; p = document_.graph().layer(*p).parent_id)
        collapsed_[*p] = false;
      relayout();
    }
    update();
  });
}

void SnapshotView::relayout() {
  if (!document_.is_open()) return;
  layout_ = analysis::layout_layer_dag(document_.graph(), collapsed_);
  reset_view();  // a new layout is fitted to the view again
}

void SnapshotView::set_collapsed(uint32_t group, bool collapsed) {
  if (!document_.is_open() || group >= collapsed_.size() || document_.graph().children(group).empty()) return;
  collapsed_[group] = collapsed;
  relayout();
}

void SnapshotView::expand_all() {
  std::fill(collapsed_.begin(), collapsed_.end(), false);
  relayout();
}

void SnapshotView::collapse_default() {
  if (!document_.is_open()) return;
  collapsed_ = analysis::default_collapsed(document_.graph());
  relayout();
}

void SnapshotView::request_window() {
  if (!document_.is_open()) return;
  const int64_t focus = state_.focus_step(), window = state_.window();
  const analysis::LayerGraph* graph = &document_.graph();
  const uint64_t ticket = begin_request();
  document_.run<std::shared_ptr<const analysis::SnapshotWindow>>(
      this,
      [graph, focus, window](format::RunReader& reader) {
        return std::make_shared<const analysis::SnapshotWindow>(
            analysis::compute_snapshot_window(reader, *graph, focus, window));
      },
      [this, ticket](std::shared_ptr<const analysis::SnapshotWindow> result) {
        if (!end_request(ticket)) return;  // a newer focus is on its way
        window_ = std::move(result);
        update();
      },
      [this, ticket](QString) { end_request(ticket); });
}

void SnapshotView::update_marks() {
  const size_t n = document_.is_open() ? document_.graph().size() : 0;
  suspect_rank_.assign(n, 0);
  rule_hits_.assign(n, 0);
  if (!n || !document_.has_report()) return;
  const auto& report = document_.report();
  const auto& graph = document_.graph();
  if (!report.anomalies.empty()) {
    const auto& suspects = report.anomalies.front().suspects;
    for (size_t i = 0; i < suspects.size(); ++i) {
      // The layer and every group around it (a collapsed group shows its best suspect).
      for (std::optional<uint32_t> id = suspects[i].layer_id; id; id = graph.layer(*id).parent_id)
        if (suspect_rank_[*id] == 0 || suspect_rank_[*id] > int(i) + 1) suspect_rank_[*id] = int(i) + 1;
    }
  }
  for (const auto& hit : report.rule_hits)
    for (std::optional<uint32_t> id = hit.layer_id; id && *id < n; id = graph.layer(*id).parent_id) ++rule_hits_[*id];
}

int SnapshotView::suspect_rank(uint32_t layer_id) const {
  return layer_id < suspect_rank_.size() ? suspect_rank_[layer_id] : 0;
}

SnapshotView::Geometry SnapshotView::geometry(const QSize& size) const {
  Geometry g;
  if (layout_.nodes.empty()) return g;
  const double avail_w = std::max(50.0, size.width() - 2 * kMargin);
  const double avail_h = std::max(50.0, size.height() - 2 * kMargin - kHeader);
  const double band_h = layout_.max_rank_size * kRowY + kBandGap;
  // Long chains wrap into bands of k ranks (like lines of text): pick the k that lets nodes be drawn largest.
  int best_k = layout_.ranks;
  double best_scale = 0;
  for (int k = 1; k <= layout_.ranks; ++k) {
    const int bands = (layout_.ranks + k - 1) / k;
    const double scale = std::min(avail_w / (k * kRankX), avail_h / (bands * band_h));
    if (scale > best_scale * 1.0001) best_scale = scale, best_k = k;
  }
  // Nodes are never drawn larger than 1.25x, and a chain is wrapped only when that makes its nodes clearly larger:
  // the fewest bands whose nodes reach 85% of the best size.
  const double target = 0.85 * std::min(best_scale, 1.25);
  for (int k = layout_.ranks; k >= 1; --k) {
    const int bands = (layout_.ranks + k - 1) / k;
    const double scale = std::min(avail_w / (k * kRankX), avail_h / (bands * band_h));
    if (scale >= target) {
      best_k = k;
      best_scale = scale;
      break;
    }
  }
  g.scale = std::min(best_scale, 1.25);
  g.dx = best_k;  // ranks per band (reused field)
  g.dy = band_h;
  return g;
}

QRectF SnapshotView::node_rect(uint32_t layer_id, const QSize& size) const {
  if (layer_id >= layout_.node_of_layer.size() || layout_.node_of_layer[layer_id] < 0) return {};
  const auto& node = layout_.nodes[size_t(layout_.node_of_layer[layer_id])];
  const Geometry g = geometry(size);
  const int per_band = std::max(1, int(g.dx));
  const int band = node.rank / per_band, column = node.rank % per_band;
  int rank_size = 0;
  for (const auto& other : layout_.nodes) rank_size += other.rank == node.rank;
  const double x = column * kRankX;
  const double y = band * g.dy + (layout_.max_rank_size - rank_size) * kRowY / 2 + node.position * kRowY;
  // The fitted layout, then the user's zoom and pan.
  const QRectF fitted(kMargin + x * g.scale, kMargin + kHeader + y * g.scale, kNodeW * g.scale, kNodeH * g.scale);
  return QRectF(pan_ + fitted.topLeft() * zoom_, fitted.size() * zoom_);
}

const analysis::QuantityWindow* SnapshotView::shown_quantity(uint32_t layer_id, format::Quantity* which) const {
  if (!window_ || layer_id >= window_->layers.size()) return nullptr;
  const auto& lw = window_->layers[layer_id];
  if (lw[state_.quantity()].present) {
    *which = state_.quantity();
    return &lw[state_.quantity()];
  }
  for (auto q : format::all_quantities())
    if (lw[q].present) {
      *which = q;
      return &lw[q];
    }
  return nullptr;
}

void SnapshotView::render_view(QPainter& painter, const QSize& size) {
  painter.save();
  const QFont font = begin_render(painter, size);
  if (!document_.is_open() || layout_.nodes.empty()) {
    draw_hint(painter, size, document_.is_open() ? tr("No layers recorded") : tr("Open a run: File ▸ Open (Ctrl+O)"));
    painter.restore();
    return;
  }
  const auto& graph = document_.graph();
  const format::Statistic stat = state_.statistic();
  painter.setPen(QColor(70, 70, 70));
  painter.drawText(
      QRectF(kMargin, 2, size.width() - 2 * kMargin, kHeader - 4), Qt::AlignLeft | Qt::AlignVCenter,
      tr("%1 of %2 over steps %3…%4 (focus %5 on each node's centre line)%6")
          .arg(to_qstring(format::statistic_name(stat)), to_qstring(format::quantity_name(state_.quantity())))
          .arg(state_.focus_step() - state_.window())
          .arg(state_.focus_step() + state_.window())
          .arg(state_.focus_step())
          .arg(waiting() ? tr(" · loading…") : QString()));

  // Edges first: forward edges as curves from the right of one node to the left of the next, back edges dashed.
  const double scale = geometry(size).scale * zoom_;
  for (const auto& e : layout_.edges) {
    const QRectF a = node_rect(layout_.nodes[e.from].layer, size), b = node_rect(layout_.nodes[e.to].layer, size);
    QPainterPath path;
    if (e.recurrent) {
      const QPointF from(a.center().x(), a.top()), to(b.center().x(), b.top());
      path.moveTo(from);
      path.cubicTo(from + QPointF(0, -40 * scale), to + QPointF(0, -40 * scale), to);
      painter.setPen(QPen(QColor(150, 60, 160), 1.3, Qt::DashLine));
    } else if (b.left() < a.left() && b.top() > a.bottom()) {
      // Into a later band (a wrapped chain): down the gap above the target's band, then in from the left.
      const Geometry g = geometry(size);
      const int band = layout_.nodes[e.to].rank / std::max(1, int(g.dx));
      const double gap_y = pan_.y() + zoom_ * (kMargin + kHeader + (band * g.dy - kBandGap / 2) * g.scale);
      const QPointF from(a.right(), a.center().y()), to(b.left(), b.center().y());
      const double out_x = from.x() + 12 * scale, in_x = std::max(2.0, to.x() - 12 * scale);
      path.moveTo(from);
      path.lineTo(out_x, from.y());
      path.lineTo(out_x, gap_y);
      path.lineTo(in_x, gap_y);
      path.lineTo(in_x, to.y());
      path.lineTo(to);
      painter.setPen(QPen(QColor(150, 150, 150), 1.2));
    } else {
      const QPointF from(a.right(), a.center().y()), to(b.left(), b.center().y());
      const double bend = std::max(30.0 * scale, std::abs(to.x() - from.x()) / 2);
      path.moveTo(from);
      path.cubicTo(from + QPointF(bend, 0), to - QPointF(bend, 0), to);
      painter.setPen(QPen(QColor(150, 150, 150), 1.2));
    }
    painter.setBrush(Qt::NoBrush);
    painter.drawPath(path);
    // Arrow head at the target.
    const QPointF tip = path.pointAtPercent(1.0), back = path.pointAtPercent(0.97);
    const QPointF d = tip - back;
    const double len = std::hypot(d.x(), d.y());
    if (len > 0) {
      const QPointF u = d / len, v(-u.y(), u.x());
      const QPointF head[] = {tip, tip - u * 7 + v * 3.5, tip - u * 7 - v * 3.5};
      painter.setBrush(painter.pen().color());
      painter.setPen(Qt::NoPen);
      painter.drawPolygon(head, 3);
    }
  }

  // Nodes.
  for (const auto& node : layout_.nodes) {
    const QRectF r = node_rect(node.layer, size);
    format::Quantity quantity = state_.quantity();
    const analysis::QuantityWindow* qw = shown_quantity(node.layer, &quantity);
    const bool non_finite = qw && !qw->average.finite();
    const int rank = suspect_rank(node.layer);
    const bool rules = node.layer < rule_hits_.size() && rule_hits_[node.layer] > 0;
    QColor fill = rank == 1  ? QColor(255, 222, 222)
                  : rank > 0 ? QColor(255, 236, 214)
                  : rules    ? QColor(255, 248, 214)
                             : QColor(250, 251, 253);
    painter.setBrush(fill);
    QPen border(QColor(160, 165, 175), 1);
    if (rank == 1 || non_finite)
      border = QPen(suspect_color(), 2.5);
    else if (rank > 0)
      border = QPen(other_suspect_color(), 2);
    else if (rules)
      border = QPen(QColor(215, 175, 40), 1.5);
    painter.setPen(border);
    painter.drawRoundedRect(r, 4, 4);
    if (node.group) painter.drawRoundedRect(r.adjusted(3, 3, -3, -3), 3, 3);  // a double frame: more inside
    if (state_.layer() == int(node.layer)) {
      painter.setBrush(Qt::NoBrush);
      painter.setPen(QPen(selection_color(), 3));
      painter.drawRoundedRect(r.adjusted(-3, -3, 3, 3), 5, 5);
    }

    // Title: the last part of the dotted name, the kind, the suspect rank.
    painter.save();
    QFont title = font;
    title.setPointSizeF(std::max(4.0, 8.0 * std::min(1.0, scale)));
    title.setBold(true);
    painter.setFont(title);
    painter.setPen(Qt::black);
    const QRectF text_rect = r.adjusted(5 * scale, 2 * scale, -5 * scale, -r.height() * 0.62);
    // The dotted name and, when the name says nothing about it (Sequential children are named 0, 1, ...), the kind.
    QString name = QString::fromStdString(graph.name(node.layer));
    const QString kind = QString::fromStdString(graph.layer(node.layer).kind);
    if (!kind.isEmpty() && !name.contains(kind, Qt::CaseInsensitive)) name += QStringLiteral(" · ") + kind;
    if (node.group) name += QStringLiteral(" ▸ %1").arg(graph.leaves_under(node.layer).size());
    if (rank > 0) name = QStringLiteral("#%1 ").arg(rank) + name;
    // Room for the window's average, drawn right-aligned on the same line.
    const QString average = !qw          ? QString()
                            : non_finite ? QStringLiteral("NaN/Inf")
                                         : format_value(qw->average.get(stat));
    const double average_width = average.isEmpty() ? 0 : QFontMetricsF(font).horizontalAdvance(average) + 6;
    painter.drawText(text_rect, Qt::AlignLeft | Qt::AlignVCenter,
                     QFontMetricsF(title).elidedText(name, Qt::ElideRight, text_rect.width() - average_width));
    painter.restore();

    // Mini chart of the window: the statistic over the steps, the focus on the centre line.
    const QRectF chart = r.adjusted(5 * scale, r.height() * 0.4, -5 * scale, -4 * scale);
    painter.setPen(QPen(QColor(120, 120, 120), 1, Qt::DotLine));
    const double cx = chart.center().x();
    painter.drawLine(QPointF(cx, chart.top()), QPointF(cx, chart.bottom()));
    if (!qw || qw->steps.empty()) continue;
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& s : qw->series) {
      const double v = s.get(stat);
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    const double first = double(state_.focus_step() - state_.window());
    const double span = std::max(1.0, 2.0 * double(state_.window()));
    QPolygonF line;
    std::vector<QPointF> bad;
    for (size_t i = 0; i < qw->steps.size(); ++i) {
      const double x = chart.left() + (double(qw->steps[i]) - first) / span * chart.width();
      const double v = qw->series[i].get(stat);
      const bool nonfinite_point = !qw->series[i].finite() || !std::isfinite(v);
      if (nonfinite_point) bad.emplace_back(x, chart.top() + 2);
      if (!std::isfinite(v)) continue;
      const double t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
      line << QPointF(x, chart.bottom() - t * chart.height());
    }
    painter.setPen(QPen(quantity == state_.quantity() ? QColor(31, 119, 180) : QColor(130, 130, 130), 1.3));
    painter.drawPolyline(line);
    painter.setPen(Qt::NoPen);
    painter.setBrush(suspect_color());
    for (const auto& p : bad) painter.drawEllipse(p, 1.8, 1.8);
    // The window's average at the right of the title.
    painter.setPen(QColor(60, 60, 60));
    painter.drawText(r.adjusted(5 * scale, 2 * scale, -5 * scale, -r.height() * 0.62),
                     Qt::AlignRight | Qt::AlignVCenter,
                     non_finite ? QStringLiteral("NaN/Inf") : format_value(qw->average.get(stat)));
  }
  painter.restore();
}

std::optional<uint32_t> SnapshotView::layer_at(const QPointF& pos) const {
  for (const auto& node : layout_.nodes)
    if (node_rect(node.layer).contains(pos)) return node.layer;
  return std::nullopt;
}

void SnapshotView::mousePressEvent(QMouseEvent* event) {
  if (event->button() != Qt::LeftButton) return;
  if (auto layer = layer_at(event->position())) {
    state_.set_layer(int(*layer));
    return;
  }
  drag_start_ = event->position();  // on the background: pan
  drag_pan_ = pan_;
  dragging_ = true;
}

void SnapshotView::mouseMoveEvent(QMouseEvent* event) {
  if (!dragging_ || !(event->buttons() & Qt::LeftButton)) return;
  pan_ = drag_pan_ + (event->position() - drag_start_);
  update();
}

void SnapshotView::mouseReleaseEvent(QMouseEvent*) {
  dragging_ = false;
}

void SnapshotView::wheelEvent(QWheelEvent* event) {
  // Zoom around the mouse: the point under it stays put.
  const double factor = std::pow(1.15, event->angleDelta().y() / 120.0);
  const double zoom = std::clamp(zoom_ * factor, 0.25, 12.0);
  const QPointF at = event->position();
  pan_ = at - (at - pan_) * (zoom / zoom_);
  zoom_ = zoom;
  update();
}

void SnapshotView::reset_view() {
  zoom_ = 1;
  pan_ = QPointF();
  update();
}

void SnapshotView::mouseDoubleClickEvent(QMouseEvent* event) {
  auto layer = layer_at(event->position());
  if (!layer || !document_.is_open()) return;
  const auto& graph = document_.graph();
  if (!graph.children(*layer).empty()) {
    set_collapsed(*layer, false);  // open a collapsed group
  } else if (auto parent = graph.layer(*layer).parent_id; parent && graph.layer(*parent).parent_id) {
    set_collapsed(*parent, true);  // fold a leaf back into its group (never the whole model)
  }
}

void SnapshotView::keyPressEvent(QKeyEvent* event) {
  if (event->key() == Qt::Key_E)
    expand_all();
  else if (event->key() == Qt::Key_C)
    collapse_default();
  else if (event->key() == Qt::Key_Home)
    reset_view();
  else
    RunView::keyPressEvent(event);
}

bool SnapshotView::event(QEvent* event) {
  if (event->type() != QEvent::ToolTip) return RunView::event(event);
  auto* help = static_cast<QHelpEvent*>(event);
  const auto layer = layer_at(help->pos());
  if (!layer || !document_.is_open()) {
    QToolTip::hideText();
    return true;
  }
  const auto& graph = document_.graph();
  const auto& info = graph.layer(*layer);
  QStringList lines;
  lines << QStringLiteral("<b>%1</b> (%2), %3 neurons")
               .arg(QString::fromStdString(graph.name(*layer)).toHtmlEscaped(), QString::fromStdString(info.kind))
               .arg(qulonglong(info.neuron_count));
  format::Quantity q = state_.quantity();
  if (const auto* qw = shown_quantity(*layer, &q)) {
    lines << tr("%1 of %2, window average: %3 (min %4, max %5)%6")
                 .arg(to_qstring(format::statistic_name(state_.statistic())), to_qstring(format::quantity_name(q)))
                 .arg(QString::fromStdString(analysis::shortest_decimal(qw->average.get(state_.statistic()))))
                 .arg(QString::fromStdString(analysis::shortest_decimal(qw->average.min)))
                 .arg(QString::fromStdString(analysis::shortest_decimal(qw->average.max)))
                 .arg(qw->average.finite()
                          ? QString()
                          : tr("; <b>%1 NaN, %2 Inf</b>").arg(qw->average.nan_count).arg(qw->average.inf_count));
  }
  if (int rank = suspect_rank(*layer)) lines << tr("suspect #%1 of the top anomaly").arg(rank);
  if (document_.has_report())
    for (const auto& hit : document_.report().rule_hits)
      if (hit.layer_id == *layer || graph.is_ancestor(*layer, hit.layer_id))
        lines << QString::fromStdString(hit.evidence).toHtmlEscaped();
  QToolTip::showText(help->globalPos(), lines.join(QStringLiteral("<br>")), this);
  return true;
}

}  // namespace trainscope::viewer
