#include <trainscope/analysis/robust_stats.h>
#include <trainscope/analysis/scalar_anomalies.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

namespace trainscope::analysis {
namespace {

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

// The finite values of v[from, to) into `w` (reused: the detectors below run one window per step).
void window_values(const std::vector<double>& v, size_t from, size_t to, std::vector<double>& w) {
  w.clear();
  for (size_t i = from; i < to; ++i)
    if (std::isfinite(v[i])) w.push_back(v[i]);
}

// robust_stats' median and robust_scale, the same values, on scratch memory instead of fresh copies.
double median_of(const std::vector<double>& values, std::vector<double>& scratch) {
  scratch.clear();
  for (double v : values)
    if (std::isfinite(v)) scratch.push_back(v);
  if (scratch.empty()) return std::numeric_limits<double>::quiet_NaN();
  const size_t mid = scratch.size() / 2;
  std::nth_element(scratch.begin(), scratch.begin() + ptrdiff_t(mid), scratch.end());
  const double upper = scratch[mid];
  if (scratch.size() % 2) return upper;
  const double lower = *std::max_element(scratch.begin(), scratch.begin() + ptrdiff_t(mid));
  return 0.5 * (lower + upper);
}

struct Scratch {
  std::vector<double> a, b, c;
};

RobustScale robust_scale_of(const std::vector<double>& values, Scratch& s) {
  RobustScale out;
  out.median = median_of(values, s.a);
  s.b.clear();
  for (double v : values)
    if (std::isfinite(v)) s.b.push_back(std::abs(v - out.median));
  out.count = s.b.size();
  out.sigma = s.b.empty() ? 0.0 : 1.4826 * median_of(s.b, s.a);
  return out;
}

// A window of finite values kept sorted as it slides one value at a time, for the medians and MADs the detectors
// take at every step: the same numbers as median() and robust_scale() on the window, without selecting anew.
// A negative zero makes the order of equal values matter to the result's sign; callers then take the slow way.
class SortedWindow {
 public:
  void insert(double v) {
    values_.insert(std::upper_bound(values_.begin(), values_.end(), v), v);
    negative_zeros_ += v == 0 && std::signbit(v);
  }
  void erase(double v) {  // one element equal to v, bit for bit
    auto [first, last] = std::equal_range(values_.begin(), values_.end(), v);
    auto it = std::find_if(first, last, [&](double x) { return std::signbit(x) == std::signbit(v); });
    if (it == last) return;
    values_.erase(it);
    negative_zeros_ -= v == 0 && std::signbit(v);
  }
  void clear() {
    values_.clear();
    negative_zeros_ = 0;
  }
  size_t size() const { return values_.size(); }
  bool exact() const { return negative_zeros_ == 0; }

  double median() const {
    const size_t n = values_.size();
    if (n == 0) return std::numeric_limits<double>::quiet_NaN();
    return n % 2 ? values_[n / 2] : 0.5 * (values_[n / 2 - 1] + values_[n / 2]);
  }

  RobustScale robust_scale() const {
    RobustScale out;
    out.median = median();
    const size_t n = values_.size();
    out.count = n;
    if (n == 0) return out;
    // |v - median| grows away from the median on both sides: two sorted runs, merged as far as their middle.
    // Infinite deviations (an overflow) are the largest, at the far ends, and do not count, as in median().
    const double m = out.median;
    const auto deviation = [&](size_t i) { return std::abs(values_[i] - m); };
    const size_t split = size_t(std::lower_bound(values_.begin(), values_.end(), m) - values_.begin());
    size_t low = 0, high = n;  // [low, high): the values with a finite deviation
    while (low < split && !std::isfinite(deviation(low))) ++low;
    while (high > split && !std::isfinite(deviation(high - 1))) --high;
    const size_t finite = high - low;
    if (finite == 0) {
      out.sigma = 1.4826 * std::numeric_limits<double>::quiet_NaN();
      return out;
    }
    const size_t mid = finite / 2;
    size_t left = split, right = split;  // next candidates: values_[left - 1] below, values_[right] above
    double previous = 0, current = 0;
    for (size_t k = 0; k <= mid; ++k) {
      previous = current;
      const bool take_left = left > low && (right >= high || deviation(left - 1) <= deviation(right));
      current = take_left ? deviation(--left) : deviation(right++);
    }
    out.sigma = 1.4826 * (finite % 2 ? current : 0.5 * (previous + current));
    return out;
  }

 private:
  std::vector<double> values_;
  size_t negative_zeros_ = 0;
};

}  // namespace

const char* anomaly_kind_name(AnomalyKind kind) {
  switch (kind) {
    case AnomalyKind::NonFinite: return "non_finite";
    case AnomalyKind::Spike: return "spike";
    case AnomalyKind::LevelShift: return "level_shift";
    case AnomalyKind::Divergence: return "divergence";
    case AnomalyKind::Stall: return "stall";
  }
  return "unknown";
}

bool is_loss_name(const std::string& name) {
  std::string lower;
  for (char c : name) lower += char(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("loss") != std::string::npos;
}

std::vector<ScalarAnomaly> find_scalar_anomalies(const std::string& name, const std::vector<int64_t>& steps,
                                                 const std::vector<double>& values, const ScalarAnomalyParams& p) {
  std::vector<ScalarAnomaly> out;
  const size_t n = std::min(steps.size(), values.size());
  const bool loss = is_loss_name(name);

  // Non-finite runs.
  for (size_t i = 0; i < n; ++i) {
    if (std::isfinite(values[i]) || (i > 0 && !std::isfinite(values[i - 1]))) continue;
    out.push_back({steps[i], AnomalyKind::NonFinite, name, values[i], 1000.0,
                   name + " is " + (std::isnan(values[i]) ? "NaN" : "Inf") + " from step " + std::to_string(steps[i])});
  }

  // Spikes against the trailing window of finite values.
  std::vector<double> history, window;
  Scratch scratch;
  SortedWindow trailing;  // the last `window` values of history
  std::optional<size_t> last_spike;
  size_t spike_index = 0;
  for (size_t i = 0; i < n; ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) continue;
    if (history.size() >= p.min_history) {
      const size_t from = history.size() > p.window ? history.size() - p.window : 0;
      RobustScale scale;
      if (trailing.exact()) {
        scale = trailing.robust_scale();
      } else {
        window.assign(history.begin() + ptrdiff_t(from), history.end());
        scale = robust_scale_of(window, scratch);
      }
      const double z = robust_z(v, scale);
      const bool spike = z > p.spike_z || (!loss && -z > p.spike_z);
      if (spike && last_spike && i - *last_spike <= p.window) {
        // A burst of spikes is one event: keep its first step and its strongest score.
        out[spike_index].score = std::max(out[spike_index].score, std::min(std::abs(z), p.max_spike_score));
        last_spike = i;
      } else if (spike) {
        last_spike = i;
        spike_index = out.size();
        out.push_back({steps[i], AnomalyKind::Spike, name, v, std::min(std::abs(z), p.max_spike_score),
                       name +
                           fmt(" = %.6g at this step, %.1f robust standard deviations from the median %.6g", v,
                               std::abs(z), scale.median) +
                           " of the previous " + std::to_string(std::min(history.size(), p.window)) + " steps"});
      }
    }
    history.push_back(v);
    trailing.insert(v);
    if (history.size() > p.window) trailing.erase(history[history.size() - 1 - p.window]);
  }

  // Level shifts: median after vs median before, strongest step of each shift.
  const size_t w = p.shift_window;
  if (n >= 2 * w && w > 0) {
    // The robust z of the medians decides whether there is a shift; the difference of the means, which keeps
    // growing until the windows split exactly at the change, decides where it is.
    std::vector<double> z(n, 0.0), contrast(n, 0.0);
    // The mean of the finite values of [from, to), summed in order.
    const auto mean = [&](size_t from, size_t to) {
      double sum = 0;
      size_t count = 0;
      for (size_t k = from; k < to; ++k)
        if (std::isfinite(values[k])) sum += values[k], ++count;
      return count == 0 ? 0.0 : sum / double(count);
    };
    std::vector<double> before, after;
    SortedWindow sorted_before, sorted_after;  // the finite values of [i - w, i) and [i, i + w)
    const size_t start = std::max(w, p.min_history);
    if (start + w <= n) {
      for (size_t k = start - w; k < start; ++k)
        if (std::isfinite(values[k])) sorted_before.insert(values[k]);
      for (size_t k = start; k < start + w; ++k)
        if (std::isfinite(values[k])) sorted_after.insert(values[k]);
    }
    for (size_t i = start; i + w <= n; ++i) {
      if (i > start) {  // slide both windows by one
        if (std::isfinite(values[i - w - 1])) sorted_before.erase(values[i - w - 1]);
        if (std::isfinite(values[i - 1])) sorted_before.insert(values[i - 1]), sorted_after.erase(values[i - 1]);
        if (std::isfinite(values[i + w - 1])) sorted_after.insert(values[i + w - 1]);
      }
      if (sorted_before.size() < w / 2 || sorted_after.size() < w / 2) continue;
      RobustScale scale;
      if (sorted_before.exact() && sorted_after.exact()) {
        scale = sorted_before.robust_scale();
        z[i] = robust_z(sorted_after.median(), scale);
      } else {
        window_values(values, i - w, i, before);
        window_values(values, i, i + w, after);
        scale = robust_scale_of(before, scratch);
        z[i] = robust_z(median_of(after, scratch.c), scale);
      }
      if (loss && z[i] < 0) z[i] = 0;  // a loss that drops is training working
      contrast[i] = std::abs(mean(i, i + w) - mean(i - w, i));
    }
    for (size_t i = w; i + w <= n; ++i) {
      if (std::abs(z[i]) <= p.shift_z) continue;
      bool strongest = true;
      for (size_t j = i > w ? i - w : 0; j < std::min(n, i + w) && strongest; ++j)
        if (std::abs(z[j]) > p.shift_z) strongest = contrast[j] < contrast[i] || (contrast[j] == contrast[i] && j >= i);
      if (!strongest) continue;
      out.push_back({steps[i], AnomalyKind::LevelShift, name, values[i], std::abs(z[i]),
                     name + " shifts " + (z[i] > 0 ? "up" : "down") +
                         fmt(": the median of the next %.0f steps is %.1f robust standard deviations away from the "
                             "previous ones",
                             double(w), std::abs(z[i]))});
    }
  }

  if (loss) {
    // Divergence: running median rises far above its best.
    const size_t rw = std::max<size_t>(p.divergence_window, 1);
    double best = INFINITY;
    SortedWindow running;  // the finite values of [i - rw, i)
    for (size_t k = 0; k < std::min(rw, n); ++k)
      if (std::isfinite(values[k])) running.insert(values[k]);
    for (size_t i = rw; i <= n; ++i) {
      if (i > rw) {
        if (std::isfinite(values[i - rw - 1])) running.erase(values[i - rw - 1]);
        if (std::isfinite(values[i - 1])) running.insert(values[i - 1]);
      }
      double m;
      if (running.exact()) {
        m = running.median();
      } else {
        window_values(values, i - rw, i, window);
        m = median_of(window, scratch.a);
      }
      if (!std::isfinite(m)) continue;
      best = std::min(best, std::abs(m));
      if (best > 0 && std::abs(m) > p.divergence_factor * best) {
        const double factor = std::abs(m) / best;
        out.push_back({steps[i - 1], AnomalyKind::Divergence, name, values[i - 1], 100.0 + std::log10(factor),
                       name + fmt(" diverges: its running median %.6g is %.1fx its lowest, %.6g", m, factor, best)});
        break;
      }
    }
    // Stall: the first window that does not improve on the one before it.
    const size_t sw = p.stall_window;
    for (size_t i = 2 * sw; sw > 0 && i <= n; i += std::max<size_t>(1, sw / 4)) {
      window_values(values, i - 2 * sw, i - sw, window);
      const double before = median_of(window, scratch.a);
      window_values(values, i - sw, i, window);
      const double after = median_of(window, scratch.a);
      if (!std::isfinite(before) || !std::isfinite(after)) continue;
      const bool flat = after > before - p.stall_min_decrease * std::abs(before) &&
                        after < before + p.stall_max_increase * std::abs(before);  // rising is divergence's case
      if (flat) {
        out.push_back({steps[i - 2 * sw], AnomalyKind::Stall, name, values[i - 2 * sw], 1.0,
                       name + fmt(" stops decreasing: median %.6g over %.0f steps after a median of %.6g", after,
                                  double(sw), before)});
        break;
      }
    }
  }

  std::stable_sort(out.begin(), out.end(),
                   [](const ScalarAnomaly& a, const ScalarAnomaly& b) { return a.step < b.step; });
  return out;
}

}  // namespace trainscope::analysis
