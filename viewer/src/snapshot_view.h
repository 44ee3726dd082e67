// PLACEHOLDER: the snapshot view; being written.
#pragma once

#include "run_view.h"

namespace trainscope::viewer {

class SnapshotView : public RunView {
  Q_OBJECT

 public:
  SnapshotView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("snapshot"); }
};

}  // namespace trainscope::viewer
