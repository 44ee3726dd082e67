#include "neuron_view.h"

#include <QPainter>

namespace trainscope::viewer {

NeuronView::NeuronView(RunDocument& document, ViewerState& state, QWidget* parent) : RunView(document, state, parent) {}

void NeuronView::render_view(QPainter& painter, const QSize& size) {
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  painter.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter, QStringLiteral("neuron view"));
}

}  // namespace trainscope::viewer
