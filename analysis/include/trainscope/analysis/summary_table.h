// Whole-tensor statistics of every (layer, quantity) over a range of steps, loaded from a recording's small
// layer-summary chunks only (never its per-neuron data), and arranged as one series per (layer, quantity).
#pragma once

#include <trainscope/format/run_reader.h>

#include <cstdint>
#include <map>
#include <vector>

namespace trainscope::analysis {

struct SummarySeries {
  uint32_t layer_id = 0;
  format::Quantity quantity = format::Quantity::Activation;
  std::vector<int64_t> steps;  // sorted
  std::vector<format::TensorSummary> values;
  std::vector<bool> has_neuron_stats;

  // Index of the last entry at or before `step`, or -1.
  ptrdiff_t index_at_or_before(int64_t step) const;
};

class SummaryTable {
 public:
  static SummaryTable load(format::RunReader& reader, int64_t first_step = INT64_MIN, int64_t last_step = INT64_MAX);
  // From series already in memory (each sorted by step), e.g. in tests.
  static SummaryTable from_series(std::vector<SummarySeries> series);

  const std::vector<int64_t>& steps() const { return steps_; }  // every step with a summary, sorted
  const SummarySeries* find(uint32_t layer_id, format::Quantity q) const;
  const std::vector<SummarySeries>& series() const { return series_; }

 private:
  std::vector<int64_t> steps_;
  std::vector<SummarySeries> series_;
  std::map<std::pair<uint32_t, int>, size_t> index_;
};

// max(|min|, |max|): the largest magnitude in the tensor, the statistic that shows an explosion first.
double max_abs(const format::TensorSummary& s);
// sqrt(norm^2 / numel): the root-mean-square value, comparable across tensors of different sizes.
double rms(const format::TensorSummary& s);

}  // namespace trainscope::analysis
