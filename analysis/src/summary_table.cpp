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
  std::vector<int64_t> steps;
  const auto records = reader.read_all_summaries(first_step, last_step, &steps);
  // has_neuron_stats is not part of LayerQuantityRecord; snapshot steps tell it.
  const auto snapshots = reader.snapshot_steps();
  for (size_t i = 0; i < records.size(); ++i) {
    const auto key = std::make_pair(records[i].layer_id, int(records[i].quantity));
    auto it = table.index_.find(key);
    if (it == table.index_.end()) {
      it = table.index_.emplace(key, table.series_.size()).first;
      SummarySeries s;
      s.layer_id = records[i].layer_id;
      s.quantity = records[i].quantity;
      table.series_.push_back(std::move(s));
    }
    SummarySeries& s = table.series_[it->second];
    s.steps.push_back(steps[i]);
    s.values.push_back(records[i].summary);
  }
  for (SummarySeries& s : table.series_) {
    if (!std::is_sorted(s.steps.begin(), s.steps.end())) {
      std::vector<size_t> order(s.steps.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.steps[a] < s.steps[b]; });
      SummarySeries sorted;
      sorted.layer_id = s.layer_id;
      sorted.quantity = s.quantity;
      for (size_t i : order) sorted.steps.push_back(s.steps[i]), sorted.values.push_back(s.values[i]);
      s = std::move(sorted);
    }
    s.has_neuron_stats.resize(s.steps.size());
    for (size_t i = 0; i < s.steps.size(); ++i)
      s.has_neuron_stats[i] = std::binary_search(snapshots.begin(), snapshots.end(), s.steps[i]);
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
