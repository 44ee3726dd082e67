#include <trainscope/analysis/robust_stats.h>
#include <trainscope/analysis/scalar_anomalies.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <optional>

namespace trainscope::analysis {
namespace {

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

std::vector<double> window_values(const std::vector<double>& v, size_t from, size_t to) {
  std::vector<double> w;
  for (size_t i = from; i < to; ++i)
    if (std::isfinite(v[i])) w.push_back(v[i]);
  return w;
}

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
  std::vector<double> history;
  std::optional<size_t> last_spike;
  size_t spike_index = 0;
  for (size_t i = 0; i < n; ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) continue;
    if (history.size() >= p.min_history) {
      const size_t from = history.size() > p.window ? history.size() - p.window : 0;
      const RobustScale scale = robust_scale(std::vector<double>(history.begin() + ptrdiff_t(from), history.end()));
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
  }

  // Level shifts: median after vs median before, strongest step of each shift.
  const size_t w = p.shift_window;
  if (n >= 2 * w && w > 0) {
    // The robust z of the medians decides whether there is a shift; the difference of the means, which keeps
    // growing until the windows split exactly at the change, decides where it is.
    std::vector<double> z(n, 0.0), contrast(n, 0.0);
    const auto mean = [](const std::vector<double>& v) {
      double sum = 0;
      for (double x : v) sum += x;
      return v.empty() ? 0.0 : sum / double(v.size());
    };
    for (size_t i = std::max(w, p.min_history); i + w <= n; ++i) {
      const std::vector<double> before = window_values(values, i - w, i);
      const std::vector<double> after = window_values(values, i, i + w);
      if (before.size() < w / 2 || after.size() < w / 2) continue;
      const RobustScale scale = robust_scale(before);
      z[i] = robust_z(median(after), scale);
      if (loss && z[i] < 0) z[i] = 0;  // a loss that drops is training working
      contrast[i] = std::abs(mean(after) - mean(before));
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
    for (size_t i = rw; i <= n; ++i) {
      const double m = median(window_values(values, i - rw, i));
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
      const double before = median(window_values(values, i - 2 * sw, i - sw));
      const double after = median(window_values(values, i - sw, i));
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
