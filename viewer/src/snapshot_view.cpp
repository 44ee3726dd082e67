#include "snapshot_view.h"

#include <QPainter>

namespace trainscope::viewer {

SnapshotView::SnapshotView(RunDocument& document, ViewerState& state, QWidget* parent)
    : RunView(document, state, parent) {}

void SnapshotView::render_view(QPainter& painter, const QSize& size) {
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  painter.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter, QStringLiteral("snapshot view"));
}

}  // namespace trainscope::viewer
