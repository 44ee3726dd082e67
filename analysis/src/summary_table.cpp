#include <trainscope/analysis/summary_table.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace trainscope::analysis {

ptrdiff_t SummarySeries::index_at_or_before(int64_t step) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), step);
  return ptrdiff_t(it - steps.begin()) - 1;
}

SummaryTable SummaryTable::load(format::RunReader& reader, int64_t first_step, int64_t last_step) {
  SummaryTable table;
  // Straight into the columns: a long run has millions of summaries, and no copy of them is kept on the way.
  std::vector<int64_t> steps;
  reader.for_each_summary(first_step, last_step,
                          [&](int64_t step, uint32_t layer_id, format::Quantity quantity,
                              const format::TensorSummary& summary, bool has_neuron_stats) {
                            const auto key = std::make_pair(layer_id, int(quantity));
                            auto it = table.index_.find(key);
                            if (it == table.index_.end()) {
                              it = table.index_.emplace(key, table.series_.size()).first;
                              SummarySeries s;
                              s.layer_id = layer_id;
                              s.quantity = quantity;
                              table.series_.push_back(std::move(s));
                            }
                            SummarySeries& s = table.series_[it->second];
                            s.steps.push_back(step);
                            s.values.push_back(summary);
                            s.has_neuron_stats.push_back(has_neuron_stats);
                            if (steps.empty() || steps.back() != step) steps.push_back(step);
                          });
  for (SummarySeries& s : table.series_) {
    if (std::is_sorted(s.steps.begin(), s.steps.end())) continue;
    std::vector<size_t> order(s.steps.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.steps[a] < s.steps[b]; });
    SummarySeries sorted;
    sorted.layer_id = s.layer_id;
    sorted.quantity = s.quantity;
    for (size_t i : order) {
      sorted.steps.push_back(s.steps[i]);
      sorted.values.push_back(s.values[i]);
      sorted.has_neuron_stats.push_back(s.has_neuron_stats[i]);
    }
    s = std::move(sorted);
  }
  std::sort(steps.begin(), steps.end());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  table.steps_ = std::move(steps);
  return table;
}

SummaryTable SummaryTable::from_series(std::vector<SummarySeries> series) {
  SummaryTable table;
  for (SummarySeries& s : series) {
    s.has_neuron_stats.resize(s.steps.size());
    table.steps_.insert(table.steps_.end(), s.steps.begin(), s.steps.end());
    table.index_[{s.layer_id, int(s.quantity)}] = table.series_.size();
    table.series_.push_back(std::move(s));
  }
  std::sort(table.steps_.begin(), table.steps_.end());
  table.steps_.erase(std::unique(table.steps_.begin(), table.steps_.end()), table.steps_.end());
  return table;
}

const SummarySeries* SummaryTable::find(uint32_t layer_id, format::Quantity q) const {
  auto it = index_.find({layer_id, int(q)});
  return it == index_.end() ? nullptr : &series_[it->second];
}

double max_abs(const format::TensorSummary& s) {
  return std::max(std::abs(s.min), std::abs(s.max));
}

double rms(const format::TensorSummary& s) {
  return s.numel > 0 ? std::sqrt(s.norm * s.norm / s.numel) : 0.0;
}

}  // namespace trainscope::analysis
