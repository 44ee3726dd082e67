#include <trainscope/analysis/robust_stats.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace trainscope::analysis {

double median(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return !std::isfinite(v); }), values.end());
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + ptrdiff_t(mid), values.end());
  const double upper = values[mid];
  if (values.size() % 2) return upper;
  const double lower = *std::max_element(values.begin(), values.begin() + ptrdiff_t(mid));
  return 0.5 * (lower + upper);
}

RobustScale robust_scale(const std::vector<double>& values) {
  RobustScale s;
  s.median = median(values);
  std::vector<double> deviations;
  deviations.reserve(values.size());
  for (double v : values)
    if (std::isfinite(v)) deviations.push_back(std::abs(v - s.median));
  s.count = deviations.size();
  s.sigma = deviations.empty() ? 0.0 : 1.4826 * median(std::move(deviations));
  return s;
}

double robust_z(double x, const RobustScale& scale, double relative_floor) {
  const double floor = std::max(relative_floor * std::abs(scale.median), 1e-12);
  return (x - scale.median) / std::max(scale.sigma, floor);
}

}  // namespace trainscope::analysis
