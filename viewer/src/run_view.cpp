#include "run_view.h"

#include <QFileInfo>
#include <QImage>
#include <QPainter>
#include <QSvgGenerator>

namespace trainscope::viewer {

RunView::RunView(RunDocument& document, ViewerState& state, QWidget* parent)
    : QWidget(parent), document_(document), state_(state) {}

void RunView::paintEvent(QPaintEvent*) {
  QPainter painter(this);
  render_view(painter, size());
}

QFont RunView::begin_render(QPainter& painter, const QSize& size) const {
  painter.fillRect(QRect(QPoint(0, 0), size), Qt::white);
  painter.setRenderHint(QPainter::Antialiasing);
  QFont small = font();
  small.setPointSizeF(8);
  painter.setFont(small);
  return small;
}

void RunView::draw_hint(QPainter& painter, const QSize& size, const QString& text) {
  painter.setPen(Qt::gray);
  painter.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter | Qt::TextWordWrap, text);
}

QString export_view(RunView& view, const QString& file, QSize size) {
  if (!size.isValid() || size.isEmpty()) size = view.size();
  if (size.isEmpty()) size = QSize(1200, 800);
  const QString suffix = QFileInfo(file).suffix().toLower();
  if (suffix == "svg") {
    QSvgGenerator svg;
    svg.setFileName(file);
    svg.setSize(size);
    svg.setViewBox(QRect(QPoint(0, 0), size));
    svg.setTitle(QStringLiteral("Trainscope %1 view").arg(view.view_name()));
    QPainter painter;
    if (!painter.begin(&svg)) return QObject::tr("%1: cannot be written.").arg(file);
    view.render_view(painter, size);
    painter.end();
    if (!QFileInfo(file).exists() || QFileInfo(file).size() == 0)
      return QObject::tr("%1: cannot be written.").arg(file);
    return {};
  }
  if (suffix != "png") return QObject::tr("%1: unknown image type '%2' (use .png or .svg).").arg(file, suffix);
  QImage image(size, QImage::Format_ARGB32_Premultiplied);
  image.fill(Qt::white);
  {
    QPainter painter(&image);
    painter.setRenderHint(QPainter::Antialiasing);
    view.render_view(painter, size);
  }
  if (!image.save(file, "PNG")) return QObject::tr("%1: cannot be written.").arg(file);
  return {};
}

}  // namespace trainscope::viewer
