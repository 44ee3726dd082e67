// Robust statistics used by the anomaly detectors: medians and median absolute deviations, which one spike or a
// few NaNs cannot drag the way a mean and standard deviation can.
#pragma once

#include <cstddef>
#include <vector>

namespace trainscope::analysis {

// Median of the finite values; NaN if there are none. Takes a copy: the input order is kept.
double median(std::vector<double> values);

struct RobustScale {
  double median = 0;
  double sigma = 0;  // 1.4826 * MAD: equals the standard deviation for normally distributed data
  size_t count = 0;  // finite values used
};
RobustScale robust_scale(const std::vector<double>& values);

// How many robust standard deviations `x` is above (positive) or below the centre. A floor on sigma, relative to the
// median's magnitude, keeps a perfectly flat history from turning every tiny wiggle into an infinite score.
double robust_z(double x, const RobustScale& scale, double relative_floor = 1e-3);

}  // namespace trainscope::analysis
