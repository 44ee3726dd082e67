#include "neuron_view.h"

#include <trainscope/analysis/json_writer.h>

#include <QHelpEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QPainterPath>
#include <QToolTip>

#include <algorithm>
#include <cmath>
#include <map>

namespace trainscope::viewer {
namespace {

constexpr double kCaption = 20;
constexpr int kTraceDepth = 2;
constexpr size_t kTraceWidth = 5;     // neurons kept per hop: the graph stays readable
constexpr size_t kGridOrdered = 512;  // neurons ordered by similarity; the rest follow by index
constexpr int kMaxMaps = 16;

// The per-neuron values of (layer, quantity, statistic) nearest the focus, and the window's rows as profiles.
struct GridData {
  format::Quantity quantity = format::Quantity::Activation;
  int64_t step = 0;
  std::vector<float> values;
  std::vector<std::vector<double>> profiles;
  bool found = false;
};

GridData read_grid(format::RunReader& reader, uint32_t layer, format::Quantity asked, format::Statistic statistic,
                   int64_t focus, int64_t window) {
  GridData grid;
  std::vector<format::Quantity> order = {asked};
  for (auto q : format::all_quantities())
    if (q != asked) order.push_back(q);
  for (auto q : order) {
    auto series = reader.read_neuron_series(layer, q, statistic, focus - window, focus + window);
    if (!series || series->steps.empty()) series = reader.read_neuron_series(layer, q, statistic);
    if (!series || series->steps.empty() || series->neuron_count == 0) continue;
    const size_t n = series->neuron_count;
    size_t best = 0;
    for (size_t r = 1; r < series->steps.size(); ++r)
      if (std::abs(series->steps[r] - focus) < std::abs(series->steps[best] - focus)) best = r;
    grid.quantity = q;
    grid.step = series->steps[best];
    grid.values.assign(series->values.begin() + long(best * n), series->values.begin() + long((best + 1) * n));
    grid.profiles.assign(n, {});
    for (size_t r = 0; r < series->steps.size(); ++r)
      for (size_t i = 0; i < n; ++i) grid.profiles[i].push_back(series->values[r * n + i]);
    grid.found = true;
    break;
  }
  return grid;
}

// The neuron to trace when none is selected: a NaN/Inf one if any, else the largest in magnitude.
uint32_t most_abnormal(const std::vector<float>& values) {
  uint32_t best = 0;
  double best_key = -1;
  for (uint32_t i = 0; i < values.size(); ++i) {
    const double key = std::isfinite(values[i]) ? std::abs(values[i]) : INFINITY;
    if (key > best_key) best_key = key, best = i;
  }
  return best;
}

}  // namespace

NeuronView::NeuronView(RunDocument& document, ViewerState& state, QWidget* parent) : RunView(document, state, parent) {
  setMouseTracking(true);
  setMinimumSize(300, 200);
  connect(&document_, &RunDocument::opened, this, [this] {
    credit_.reset();
    data_.reset();
    load();
  });
  connect(&state_, &ViewerState::layer_changed, this, &NeuronView::load);
  connect(&state_, &ViewerState::neurons_changed, this, &NeuronView::load);
  connect(&state_, &ViewerState::focus_step_changed, this, &NeuronView::load);
  connect(&state_, &ViewerState::display_changed, this, &NeuronView::load);
}

void NeuronView::load() {
  if (!document_.is_open()) return;
  const int layer = state_.layer();
  if (layer < 0) {
    data_.reset();
    message_ = tr("Select a layer, then a neuron (in the layer view or the grid here).");
    update();
    return;
  }
  if (!credit_) credit_ = std::make_shared<std::shared_ptr<analysis::CreditAssignment>>();
  auto holder = credit_;  // created lazily on the reader thread, used only there
  const std::optional<uint32_t> chosen =
      state_.neurons().isEmpty() ? std::nullopt : std::optional<uint32_t>(state_.neurons().front());
  const format::Quantity quantity = state_.quantity();
  const format::Statistic statistic = state_.statistic();
  const int64_t focus = state_.focus_step(), window = state_.window();
  const format::Layer info = document_.graph().layer(uint32_t(layer));
  const uint64_t ticket = begin_request();
  document_.run<std::shared_ptr<const NeuronViewData>>(
      this,
      [holder, layer, chosen, quantity, statistic, focus, window, info](format::RunReader& reader) {
        auto out = std::make_shared<NeuronViewData>();
        out->layer = uint32_t(layer);
        out->step = focus;
        out->statistic = statistic;
        GridData grid = read_grid(reader, uint32_t(layer), quantity, statistic, focus, window);
        if (grid.found) {
          out->quantity = grid.quantity;
          out->grid_step = grid.step;
          out->values = std::move(grid.values);
          std::vector<double> strength(out->values.size());
          for (size_t i = 0; i < strength.size(); ++i)
            strength[i] = std::isfinite(out->values[i]) ? std::abs(out->values[i]) + 1e-12 : 1e300;
          const auto ordered = analysis::neuron_grid_order(grid.profiles, strength, 0.0, kGridOrdered);
          out->order = ordered.order;
          out->cluster = ordered.cluster;
          for (uint32_t hidden : ordered.hidden) {
            out->order.push_back(hidden);
            out->cluster.push_back(-1);
          }
          if (grid.quantity != quantity)
            out->notes << tr("No per-neuron %1 for this layer: the grid shows %2.")
                              .arg(to_qstring(format::quantity_name(quantity)),
                                   to_qstring(format::quantity_name(grid.quantity)));
        } else {
          out->notes << tr("No per-neuron statistics recorded for this layer.");
        }
        out->neuron = chosen ? *chosen : most_abnormal(out->values);

        if (!*holder) *holder = std::make_shared<analysis::CreditAssignment>(reader);
        analysis::CreditOptions options;
        options.depth = kTraceDepth;
        options.top_k = kTraceWidth;
        out->forward =
            (*holder)->trace(focus, uint32_t(layer), out->neuron, analysis::CreditDirection::Forward, options);
        out->backward =
            (*holder)->trace(focus, uint32_t(layer), out->neuron, analysis::CreditDirection::Backward, options);

        if (info.output_shape.size() == 3) {  // [C, H, W]: feature maps of the probe batch
          const auto steps = reader.full_tensor_steps(uint32_t(layer), format::Quantity::Activation, true);
          if (!steps.empty()) {
            int64_t best = steps.front();
            for (int64_t s : steps)
              if (std::abs(s - focus) < std::abs(best - focus)) best = s;
            auto tensor = reader.full_tensor(uint32_t(layer), format::Quantity::Activation, best, true);
            if (tensor && tensor->shape.size() == 4) {
              out->map_step = best;
              out->channels = int(tensor->shape[1]);
              out->height = int(tensor->shape[2]);
              out->width = int(tensor->shape[3]);
              const size_t per_sample = size_t(out->channels) * size_t(out->height) * size_t(out->width);
              out->maps.assign(tensor->values.begin(), tensor->values.begin() + long(per_sample));
            }
          } else {
            out->notes << tr("No probe-batch activations recorded for this conv layer (feature maps).");
          }
        }
        return std::shared_ptr<const NeuronViewData>(std::move(out));
      },
      [this, ticket](std::shared_ptr<const NeuronViewData> result) {
        if (!end_request(ticket)) return;
        data_ = std::move(result);
        message_.clear();
        update();
      },
      [this, ticket](QString message) {
        if (!end_request(ticket)) return;
        data_.reset();
        message_ = message;
        update();
      });
}

QColor NeuronView::value_color(double value, double extent) {
  if (std::isnan(value)) return QColor(20, 20, 20);
  if (std::isinf(value)) return value > 0 ? QColor(110, 0, 0) : QColor(0, 20, 110);
  const double t = extent > 0 ? std::clamp(value / extent, -1.0, 1.0) : 0.0;
  const QColor end = t >= 0 ? positive_color() : negative_color();
  const double a = std::abs(t);
  return QColor(int(255 + (end.red() - 255) * a), int(255 + (end.green() - 255) * a),
                int(255 + (end.blue() - 255) * a));
}

QRectF NeuronView::credit_area(const QSize& size) const {
  return QRectF(8, kCaption + 4, size.width() * 0.56 - 8, size.height() - kCaption - 40);
}

QRectF NeuronView::grid_area(const QSize& size) const {
  const double left = size.width() * 0.58;
  const bool maps = data_ && data_->channels > 0;
  const double height = size.height() - kCaption - 44;
  return QRectF(left, kCaption + 4, size.width() - left - 8, maps ? height * 0.55 : height);
}

int NeuronView::grid_columns(const QSize& size) const {
  if (!data_ || data_->order.empty()) return 1;
  const QRectF area = grid_area(size);
  const double n = double(data_->order.size());
  return std::max(1, int(std::ceil(std::sqrt(n * area.width() / std::max(1.0, area.height())))));
}

QRectF NeuronView::grid_cell_rect(uint32_t neuron, const QSize& size) const {
  if (!data_) return {};
  const auto it = std::find(data_->order.begin(), data_->order.end(), neuron);
  if (it == data_->order.end()) return {};
  const size_t index = size_t(it - data_->order.begin());
  const QRectF area = grid_area(size);
  const int columns = grid_columns(size);
  const int rows = int((data_->order.size() + size_t(columns) - 1) / size_t(columns));
  const double cell = std::min(area.width() / columns, area.height() / std::max(1, rows));
  return QRectF(area.left() + double(index % size_t(columns)) * cell,
                area.top() + double(index / size_t(columns)) * cell, cell, cell);
}

QRectF NeuronView::feature_map_rect(int channel, const QSize& size) const {
  if (!data_ || channel < 0 || channel >= std::min(data_->channels, kMaxMaps)) return {};
  const QRectF grid = grid_area(size);
  const QRectF area(grid.left(), grid.bottom() + 24, grid.width(), size.height() - grid.bottom() - 48);
  const int shown = std::min(data_->channels, kMaxMaps);
  const int columns =
      std::max(1, int(std::ceil(std::sqrt(double(shown) * area.width() / std::max(1.0, area.height())))));
  const int rows = (shown + columns - 1) / columns;
  const double tile = std::min(area.width() / columns, area.height() / rows);
  return QRectF(area.left() + (channel % columns) * tile, area.top() + (channel / columns) * tile, tile - 3, tile - 3);
}

std::vector<NeuronView::CreditNode> NeuronView::credit_nodes() const {
  std::vector<CreditNode> nodes;
  if (!data_) return nodes;
  auto add = [&](int column, uint32_t layer, uint32_t neuron, double share) {
    for (const auto& n : nodes)
      if (n.column == column && n.layer == layer && n.neuron == neuron) return;
    nodes.push_back({column, layer, neuron, share});
  };
  add(0, data_->layer, data_->neuron, 1.0);
  for (const auto* trace : {&data_->forward, &data_->backward}) {
    if (!*trace) continue;
    const int sign = (*trace)->direction == analysis::CreditDirection::Forward ? -1 : 1;
    for (size_t k = 0; k < (*trace)->hops.size(); ++k)
      for (const auto& n : (*trace)->hops[k].neurons) add(sign * int(k + 1), n.layer, n.neuron, n.share);
  }
  return nodes;
}

QRectF NeuronView::credit_node_rect(uint32_t layer, uint32_t neuron, const QSize& size) const {
  const auto nodes = credit_nodes();
  if (nodes.empty()) return {};
  int min_column = 0, max_column = 0;
  for (const auto& n : nodes) min_column = std::min(min_column, n.column), max_column = std::max(max_column, n.column);
  const QRectF area = credit_area(size);
  const double column_width = area.width() / (max_column - min_column + 1);
  for (const auto& n : nodes) {
    if (n.layer != layer || n.neuron != neuron) continue;
    int index = 0, count = 0;
    for (const auto& m : nodes)
      if (m.column == n.column) {
        if (&m < &n) ++index;
        ++count;
      }
    const double row_height = (area.height() - 20) / std::max(count, 1);
    const double cx = area.left() + (n.column - min_column + 0.5) * column_width;
    const double cy = area.top() + 20 + (index + 0.5) * row_height;
    return QRectF(cx - 8, cy - 8, 16, 16);
  }
  return {};
}

void NeuronView::render_view(QPainter& painter, const QSize& size) {
  painter.save();
  const QFont font = begin_render(painter, size);
  if (!data_) {
    draw_hint(painter, size,
              !document_.is_open() ? tr("Open a run: File ▸ Open (Ctrl+O)")
              : waiting()          ? tr("Loading…")
              : message_.isEmpty() ? tr("Select a layer, then a neuron.")
                                   : message_);
    painter.restore();
    return;
  }
  const auto& graph = document_.graph();
  auto layer_name = [&](uint32_t id) { return QString::fromStdString(graph.name(id)); };

  // --- Credit graph ---
  painter.setPen(QColor(40, 40, 40));
  painter.drawText(QRectF(8, 2, size.width() * 0.56, kCaption), Qt::AlignLeft | Qt::AlignVCenter,
                   tr("Credit of %1 neuron %2 at step %3: ← what drives it · what it feeds back →")
                       .arg(layer_name(data_->layer))
                       .arg(data_->neuron)
                       .arg(data_->step));
  const auto nodes = credit_nodes();
  // Column headers: the layer of each column.
  std::map<int, uint32_t> column_layer;
  for (const auto& n : nodes) column_layer.emplace(n.column, n.layer);
  for (const auto& [column, layer] : column_layer) {
    const QRectF r = credit_node_rect(
        layer,
        [&] {
          for (const auto& n : nodes)
            if (n.column == column) return n.neuron;
          return 0u;
        }(),
        size);
    painter.setPen(QColor(90, 90, 90));
    painter.drawText(QRectF(r.center().x() - 80, credit_area(size).top(), 160, 16), Qt::AlignCenter,
                     QFontMetrics(font).elidedText(layer_name(layer), Qt::ElideMiddle, 150));
  }
  // Links, width by contribution within the hop, colour by sign. Hop k joins column ±k to column ±(k + 1); nodes
  // are found by column and neuron, because a hop's target may be an elementwise layer (a ReLU) standing for the
  // column's layer neuron for neuron.
  auto node_in_column = [&](int column, uint32_t neuron) -> QRectF {
    for (const auto& n : nodes)
      if (n.column == column && (n.neuron == neuron || column == 0)) return credit_node_rect(n.layer, n.neuron, size);
    return {};
  };
  for (const auto* trace : {&data_->forward, &data_->backward}) {
    if (!*trace) continue;
    const int sign = (*trace)->direction == analysis::CreditDirection::Forward ? -1 : 1;
    for (size_t k = 0; k < (*trace)->hops.size(); ++k) {
      const auto& hop = (*trace)->hops[k];
      double largest = 0;
      for (const auto& link : hop.links) largest = std::max(largest, std::abs(link.contribution));
      for (const auto& link : hop.links) {
        const QRectF a = node_in_column(sign * int(k + 1), link.source);
        const QRectF b = node_in_column(sign * int(k), link.target);
        if (a.isEmpty() || b.isEmpty()) continue;
        const double weight = largest > 0 ? std::abs(link.contribution) / largest : 0;
        QColor color = link.contribution >= 0 ? positive_color() : negative_color();
        color.setAlpha(int(60 + 170 * weight));
        painter.setPen(QPen(color, 0.8 + 5 * weight, Qt::SolidLine, Qt::RoundCap));
        painter.drawLine(a.center(), b.center());
      }
    }
  }
  for (const auto& n : nodes) {
    const QRectF r = credit_node_rect(n.layer, n.neuron, size);
    const bool focus = n.column == 0 && n.layer == data_->layer && n.neuron == data_->neuron;
    painter.setPen(QPen(focus ? QColor(20, 60, 220) : QColor(60, 60, 60), focus ? 2.5 : 1));
    painter.setBrush(focus ? QColor(220, 230, 255) : value_color(n.share, 1.0));
    painter.drawEllipse(r);
    painter.setPen(QColor(30, 30, 30));
    painter.drawText(QRectF(r.right() + 3, r.top() - 2, 70, r.height() + 4), Qt::AlignLeft | Qt::AlignVCenter,
                     focus ? QStringLiteral("n%1").arg(n.neuron)
                           : QStringLiteral("n%1 %2%").arg(n.neuron).arg(std::lround(n.share * 100)));
  }
  // What is missing or approximate.
  QStringList notes = data_->notes;
  for (const auto* trace : {&data_->forward, &data_->backward}) {
    if (!*trace) continue;
    for (const auto& m : (*trace)->messages) notes << QString::fromStdString(m);
    for (const auto& hop : (*trace)->hops)
      if (!hop.approximation.empty()) notes << QString::fromStdString(hop.approximation);
  }
  notes.removeDuplicates();
  painter.setPen(QColor(120, 80, 0));
  painter.drawText(
      QRectF(8, size.height() - 36, size.width() * 0.56, 34), Qt::AlignLeft | Qt::AlignTop | Qt::TextWordWrap,
      QFontMetrics(font).elidedText(notes.join(QStringLiteral(" · ")), Qt::ElideRight, int(size.width() * 0.56 * 2.6)));

  // --- Neuron grid ---
  const QRectF grid = grid_area(size);
  painter.setPen(QColor(40, 40, 40));
  painter.drawText(
      QRectF(grid.left(), 2, grid.width(), kCaption), Qt::AlignLeft | Qt::AlignVCenter,
      tr("%1 of %2 at step %3, %4 neurons, similar side by side")
          .arg(to_qstring(format::statistic_name(data_->statistic)), to_qstring(format::quantity_name(data_->quantity)))
          .arg(data_->grid_step)
          .arg(data_->values.size()));
  double extent = 0;
  for (float v : data_->values)
    if (std::isfinite(v)) extent = std::max(extent, double(std::abs(v)));
  painter.setPen(Qt::NoPen);
  for (uint32_t neuron : data_->order) {
    const QRectF cell = grid_cell_rect(neuron, size);
    painter.fillRect(cell.adjusted(0, 0, cell.width() > 6 ? -1 : 0, cell.height() > 6 ? -1 : 0),
                     value_color(data_->values[neuron], extent));
  }
  painter.setBrush(Qt::NoBrush);
  for (uint32_t neuron : state_.neurons()) {
    const QRectF cell = grid_cell_rect(neuron, size);
    if (cell.isEmpty()) continue;
    painter.setPen(QPen(QColor(20, 60, 220), 2));
    painter.drawRect(cell.adjusted(-1, -1, 1, 1));
  }
  // Colour scale.
  const QRectF scale(grid.left(), size.height() - 30, std::min(200.0, grid.width()), 8);
  for (int i = 0; i < int(scale.width()); ++i)
    painter.fillRect(QRectF(scale.left() + i, scale.top(), 1, scale.height()),
                     value_color((2.0 * i / scale.width() - 1) * extent, extent));
  painter.setPen(QColor(60, 60, 60));
  painter.drawText(QRectF(scale.left(), scale.bottom() + 1, 80, 14), Qt::AlignLeft, QString::number(-extent, 'g', 3));
  painter.drawText(QRectF(scale.right() - 80, scale.bottom() + 1, 80, 14), Qt::AlignRight,
                   QString::number(extent, 'g', 3));
  painter.drawText(QRectF(scale.right() + 8, scale.top() - 3, 260, 14), Qt::AlignLeft,
                   tr("black NaN · dark red +Inf · dark blue −Inf"));

  // --- Feature maps ---
  if (data_->channels > 0) {
    const int shown = std::min(data_->channels, kMaxMaps);
    const QRectF first = feature_map_rect(0, size);
    painter.setPen(QColor(40, 40, 40));
    painter.drawText(QRectF(grid.left(), first.top() - 20, grid.width(), 18), Qt::AlignLeft | Qt::AlignVCenter,
                     tr("feature maps of the probe batch at step %1 (%2 of %3 channels)")
                         .arg(data_->map_step)
                         .arg(shown)
                         .arg(data_->channels));
    const size_t plane = size_t(data_->height) * size_t(data_->width);
    for (int c = 0; c < shown; ++c) {
      const QRectF tile = feature_map_rect(c, size);
      double tile_extent = 0;
      for (size_t i = 0; i < plane; ++i) {
        const float v = data_->maps[size_t(c) * plane + i];
        if (std::isfinite(v)) tile_extent = std::max(tile_extent, double(std::abs(v)));
      }
      const double px = tile.width() / data_->width, py = tile.height() / data_->height;
      for (int y = 0; y < data_->height; ++y)
        for (int x = 0; x < data_->width; ++x)
          painter.fillRect(QRectF(tile.left() + x * px, tile.top() + y * py, px + 0.5, py + 0.5),
                           value_color(data_->maps[size_t(c) * plane + size_t(y * data_->width + x)], tile_extent));
      painter.setPen(QColor(180, 180, 180));
      painter.drawRect(tile);
    }
  }
  painter.restore();
}

void NeuronView::mousePressEvent(QMouseEvent* event) {
  if (!data_ || event->button() != Qt::LeftButton) return;
  for (uint32_t neuron : data_->order)
    if (grid_cell_rect(neuron, size()).contains(event->position())) {
      state_.set_neurons({neuron});
      return;
    }
  for (const auto& n : credit_nodes())
    if (credit_node_rect(n.layer, n.neuron, size()).contains(event->position())) {
      // Follow the datapath: the clicked neuron becomes the one of interest.
      state_.set_layer(int(n.layer));
      state_.set_neurons({n.neuron});
      return;
    }
}

bool NeuronView::event(QEvent* event) {
  if (event->type() != QEvent::ToolTip || !data_) return RunView::event(event);
  auto* help = static_cast<QHelpEvent*>(event);
  QString text;
  for (uint32_t neuron : data_->order)
    if (grid_cell_rect(neuron, size()).contains(help->pos()))
      text = tr("neuron %1: %2")
                 .arg(neuron)
                 .arg(QString::fromStdString(analysis::shortest_decimal(data_->values[neuron])));
  for (const auto& n : credit_nodes())
    if (credit_node_rect(n.layer, n.neuron, size()).contains(help->pos()))
      text = tr("%1 neuron %2: share %3")
                 .arg(QString::fromStdString(document_.graph().name(n.layer)))
                 .arg(n.neuron)
                 .arg(n.share, 0, 'f', 3);
  if (text.isEmpty())
    QToolTip::hideText();
  else
    QToolTip::showText(help->globalPos(), text, this);
  return true;
}

}  // namespace trainscope::viewer
