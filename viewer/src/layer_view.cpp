#include "layer_view.h"

#include <QPainter>

namespace trainscope::viewer {

LayerView::LayerView(RunDocument& document, ViewerState& state, QWidget* parent) : RunView(document, state, parent) {}

void LayerView::render_view(QPainter& painter, const QSize& size) {
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  painter.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter, QStringLiteral("layer view"));
}

}  // namespace trainscope::viewer
