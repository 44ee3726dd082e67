// Axes shared by the views' charts: "nice" tick values (1, 2, 5 × 10^k), grid lines and labels.
#pragma once

#include <QRect>
#include <QString>

#include <vector>

class QPainter;

namespace trainscope::viewer {

// About `target` round values covering [low, high].
std::vector<double> nice_ticks(double low, double high, int target);
// A tick label: short, exact enough to tell ticks apart.
QString tick_label(double value);

// Value axis left of `plot` with horizontal grid lines; with `log10_values`, low and high are log10 of the values
// and ticks sit at powers of ten.
void draw_value_axis(QPainter& painter, const QRect& plot, double low, double high, bool log10_values);
// Step axis below `plot` with vertical grid lines.
void draw_step_axis(QPainter& painter, const QRect& plot, double first, double last);

}  // namespace trainscope::viewer
