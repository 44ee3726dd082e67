#include "chart_axes.h"

#include <QObject>
#include <QPainter>

#include <cmath>

namespace trainscope::viewer {

std::vector<double> nice_ticks(double low, double high, int target) {
  std::vector<double> ticks;
  if (!(high > low) || !std::isfinite(low) || !std::isfinite(high) || target < 1) return ticks;
  const double raw = (high - low) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double residual = raw / magnitude;
  const double step = magnitude * (residual < 1.5 ? 1 : residual < 3.5 ? 2 : residual < 7.5 ? 5 : 10);
  for (double v = std::ceil(low / step) * step; v <= high + step * 1e-9; v += step)
    ticks.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return ticks;
}

QString tick_label(double value) {
  if (value != 0 && (std::abs(value) >= 1e6 || std::abs(value) < 1e-3)) return QString::number(value, 'g', 3);
  return QString::number(value, 'g', 6);
}

void draw_value_axis(QPainter& painter, const QRect& plot, double low, double high, bool log10_values) {
  painter.save();
  const QFontMetrics metrics(painter.font());
  std::vector<double> ticks;
  if (log10_values) {
    for (double e = std::ceil(low); e <= high; e += std::max(1.0, std::floor((high - low) / 6))) ticks.push_back(e);
  } else {
    ticks = nice_ticks(low, high, std::max(2, plot.height() / 40));
  }
  painter.setPen(QPen(QColor(235, 235, 235), 1));
  for (double t : ticks) {
    const double y = plot.bottom() - (t - low) / (high - low) * plot.height();
    painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y));
  }
  painter.setPen(QColor(80, 80, 80));
  for (double t : ticks) {
    const double y = plot.bottom() - (t - low) / (high - low) * plot.height();
    const QString label = log10_values ? QStringLiteral("1e%1").arg(int(t)) : tick_label(t);
    painter.drawText(QRectF(0, y - metrics.height() / 2.0, plot.left() - 5, metrics.height()),
                     Qt::AlignRight | Qt::AlignVCenter, label);
  }
  painter.setPen(QColor(150, 150, 150));
  painter.drawLine(plot.bottomLeft(), plot.topLeft());
  painter.restore();
}

void draw_step_axis(QPainter& painter, const QRect& plot, double first, double last) {
  painter.save();
  const QFontMetrics metrics(painter.font());
  auto ticks = nice_ticks(first, last, std::max(2, plot.width() / 90));
  painter.setPen(QPen(QColor(235, 235, 235), 1));
  for (double t : ticks) {
    const double x = plot.left() + (t - first) / (last - first) * plot.width();
    painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()));
  }
  painter.setPen(QColor(80, 80, 80));
  for (double t : ticks) {
    const double x = plot.left() + (t - first) / (last - first) * plot.width();
    painter.drawText(QRectF(x - 50, plot.bottom() + 3, 100, metrics.height()), Qt::AlignHCenter | Qt::AlignTop,
                     QString::number(qint64(std::llround(t))));
  }
  painter.drawText(QRectF(plot.right() - 60, plot.bottom() + 3 + metrics.height(), 60, metrics.height()),
                   Qt::AlignRight, QObject::tr("step"));
  painter.setPen(QColor(150, 150, 150));
  painter.drawLine(plot.bottomLeft(), plot.bottomRight());
  painter.restore();
}

}  // namespace trainscope::viewer
