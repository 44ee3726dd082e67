// What all views share and link through: the focus snapshot, its window, the selected layer and neurons, and the
// quantity and statistic shown. A view changes it; every view listens to it. No view talks to another directly.
#pragma once

#include <trainscope/format/types.h>

#include <QObject>
#include <QVector>

#include <cstdint>

namespace trainscope::viewer {

class ViewerState : public QObject {
  Q_OBJECT

 public:
  using QObject::QObject;

  qint64 focus_step() const { return focus_step_; }
  qint64 window() const { return window_; }  // steps on each side of the focus
  int layer() const { return layer_; }       // layer id, -1 when none is selected
  const QVector<quint32>& neurons() const { return neurons_; }
  format::Quantity quantity() const { return quantity_; }
  format::Statistic statistic() const { return statistic_; }

 public slots:
  void set_focus_step(qint64 step);
  void set_window(qint64 steps);
  void set_layer(int layer_id);  // clears the neuron selection when the layer changes
  void set_neurons(const QVector<quint32>& neurons);
  void set_quantity(trainscope::format::Quantity q);
  void set_statistic(trainscope::format::Statistic s);

 signals:
  void focus_step_changed(qint64 step);
  void window_changed(qint64 steps);
  void layer_changed(int layer_id);
  void neurons_changed(const QVector<quint32>& neurons);
  void display_changed();  // quantity or statistic

 private:
  qint64 focus_step_ = 0;
  qint64 window_ = 50;
  int layer_ = -1;
  QVector<quint32> neurons_;
  format::Quantity quantity_ = format::Quantity::Activation;
  format::Statistic statistic_ = format::Statistic::Mean;
};

}  // namespace trainscope::viewer
