// PLACEHOLDER: the loss view; being written.
#pragma once

#include "run_view.h"

namespace trainscope::viewer {

class LossView : public RunView {
  Q_OBJECT

 public:
  LossView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("loss"); }
};

}  // namespace trainscope::viewer
