// PLACEHOLDER: the neuron view; being written.
#pragma once

#include "run_view.h"

namespace trainscope::viewer {

class NeuronView : public RunView {
  Q_OBJECT

 public:
  NeuronView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("neuron"); }
};

}  // namespace trainscope::viewer
