// Robust loss-spike rule: a loss far above the median of the recent finite losses, measured in MADs, so that a
// slowly falling loss or ordinary batch noise never fires it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <deque>
#include <vector>

namespace trainscope::detail {

class LossSpikeDetector {
 public:
  LossSpikeDetector(double threshold, size_t window, size_t warmup)
      : threshold_(threshold), window_(window), warmup_(std::max<size_t>(warmup, 3)) {}

  // Returns true if `loss` is a spike against the losses seen before; then adds it to the window.
  bool observe(double loss) {
    if (!std::isfinite(loss)) return false;
    bool spike = false;
    if (threshold_ > 0 && history_.size() >= warmup_) {
      scratch_.assign(history_.begin(), history_.end());
      const double med = median(scratch_);
      for (double& v : scratch_) v = std::fabs(v - med);
      // 1.4826 * MAD estimates the standard deviation of normal noise; the floor keeps a flat loss from firing on
      // rounding noise.
      const double sigma = std::max(1.4826 * median(scratch_), 1e-6 * std::max(1.0, std::fabs(med)));
      spike = loss > med + threshold_ * sigma;
    }
    // Spikes enter the window too: one spike barely moves the median, and a lasting level shift stops firing.
    history_.push_back(loss);
    if (history_.size() > window_) history_.pop_front();
    return spike;
  }

 private:
  static double median(std::vector<double>& v) {
    const size_t mid = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + mid, v.end());
    double m = v[mid];
    if (v.size() % 2 == 0) m = 0.5 * (m + *std::max_element(v.begin(), v.begin() + mid));
    return m;
  }

  double threshold_;
  size_t window_, warmup_;
  std::deque<double> history_;
  std::vector<double> scratch_;
};

}  // namespace trainscope::detail
