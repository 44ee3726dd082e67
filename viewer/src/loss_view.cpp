#include "loss_view.h"

#include <QPainter>

namespace trainscope::viewer {

LossView::LossView(RunDocument& document, ViewerState& state, QWidget* parent) : RunView(document, state, parent) {}

void LossView::render_view(QPainter& painter, const QSize& size) {
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  painter.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter, QStringLiteral("loss view"));
}

}  // namespace trainscope::viewer
