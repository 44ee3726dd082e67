// Abnormal steps of the recorded scalars (loss terms, accuracy, ...): the user's entry points into a failed run.
//
// Method (every threshold is a named, overridable parameter below):
// - non_finite: the first step of each run of NaN/Inf values.
// - spike: a value more than `spike_z` robust standard deviations (1.4826 * MAD) away from the median of the
//   previous `window` finite values (upwards only for scalars whose name contains "loss").
// - level_shift: the median of the next `shift_window` values differs from the median of the previous
//   `shift_window` by more than `shift_z` robust standard deviations of the previous ones; the strongest step of
//   each shift is reported.
// - divergence: a "loss" scalar whose running median (of `divergence_window` values) rises above `divergence_factor`
// times its lowest running
//   median so far.
// - stall: a "loss" scalar whose median over the last `stall_window` values is not at least
//   `stall_min_decrease` (relative) below the median of the `stall_window` values before them (nor more than
//   `stall_max_increase` above it); reported once, at the start of the first flat stretch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace trainscope::analysis {

enum class AnomalyKind { NonFinite, Spike, LevelShift, Divergence, Stall };
const char* anomaly_kind_name(AnomalyKind kind);

struct ScalarAnomalyParams {
  size_t window = 50;
  size_t min_history = 30;  // values seen before spikes and shifts are judged: early training moves fast
  double spike_z = 8.0;
  size_t shift_window = 20;
  double shift_z = 6.0;
  double divergence_factor = 10.0;
  size_t divergence_window = 10;  // values in the running median
  size_t stall_window = 200;
  double stall_min_decrease = 1e-3;
  double stall_max_increase = 0.1;  // a loss rising more than this is divergence or a shift, not a stall
  double max_spike_score = 500;     // so that a spike never outranks NaN/Inf (1000)
};

struct ScalarAnomaly {
  int64_t step = 0;
  AnomalyKind kind = AnomalyKind::Spike;
  std::string scalar;
  double value = 0;
  double score = 0;  // non_finite 1000; divergence 100 + log10(factor); spike (capped) and shift: robust z; stall 1
  std::string reason;
};

bool is_loss_name(const std::string& name);

// Anomalies of one scalar series (steps ascending), in step order.
std::vector<ScalarAnomaly> find_scalar_anomalies(const std::string& name, const std::vector<int64_t>& steps,
                                                 const std::vector<double>& values,
                                                 const ScalarAnomalyParams& params = {});

}  // namespace trainscope::analysis
