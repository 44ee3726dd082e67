#include "viewer_state.h"

#include <algorithm>

namespace trainscope::viewer {

void ViewerState::set_focus_step(qint64 step) {
  if (step == focus_step_) return;
  focus_step_ = step;
  emit focus_step_changed(step);
}

void ViewerState::set_window(qint64 steps) {
  steps = std::max<qint64>(steps, 0);
  if (steps == window_) return;
  window_ = steps;
  emit window_changed(steps);
}

void ViewerState::set_layer(int layer_id) {
  if (layer_id == layer_) return;
  layer_ = layer_id;
  if (!neurons_.isEmpty()) {
    neurons_.clear();
    emit neurons_changed(neurons_);
  }
  emit layer_changed(layer_id);
}

void ViewerState::set_neurons(const QVector<quint32>& neurons) {
  if (neurons == neurons_) return;
  neurons_ = neurons;
  emit neurons_changed(neurons_);
}

void ViewerState::set_quantity(format::Quantity q) {
  if (q == quantity_) return;
  quantity_ = q;
  emit display_changed();
}

void ViewerState::set_statistic(format::Statistic s) {
  if (s == statistic_) return;
  statistic_ = s;
  emit display_changed();
}

}  // namespace trainscope::viewer
