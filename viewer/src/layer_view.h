// PLACEHOLDER: the layer view; being written.
#pragma once

#include "run_view.h"

namespace trainscope::viewer {

class LayerView : public RunView {
  Q_OBJECT

 public:
  LayerView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("layer"); }
};

}  // namespace trainscope::viewer
