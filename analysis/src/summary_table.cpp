#include <trainscope/analysis/summary_table.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>

namespace trainscope::analysis {

ptrdiff_t SummarySeries::index_at_or_before(int64_t step) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), step);
  return ptrdiff_t(it - steps.begin()) - 1;
}

SummaryTable SummaryTable::load(format::RunReader& reader, int64_t first_step, int64_t last_step) {
  SummaryTable table;
  // Straight from the chunks' columns into the series: a long run has millions of summaries, and no copy of them
  // is kept on the way (nor in the reader's cache).
  std::vector<int64_t> steps;
  reader.for_each_summary_chunk(first_step, last_step, [&](const format::SummaryColumns& c) {
    SummarySeries* s = nullptr;
    for (size_t i = 0; i < c.size; ++i) {
      const int64_t step = c.step[i];
      if (step < first_step || step > last_step) continue;
      const uint32_t layer_id = c.layer_id[i];
      const format::Quantity quantity = c.quantity[i];
      if (!s || s->layer_id != layer_id || s->quantity != quantity) {  // a chunk holds each series in one stretch
        const auto key = std::make_pair(layer_id, int(quantity));
        auto it = table.index_.find(key);
        if (it == table.index_.end()) {
          it = table.index_.emplace(key, table.series_.size()).first;
          SummarySeries fresh;
          fresh.layer_id = layer_id;
          fresh.quantity = quantity;
          table.series_.push_back(std::move(fresh));
        }
        s = &table.series_[it->second];
      }
      const format::TensorSummary v = c.summary(i);
      s->steps.push_back(step);
      s->values.push_back(v);
      s->has_neuron_stats.push_back(c.has_neuron_stats[i] != 0);
      if (steps.empty() || steps.back() != step) steps.push_back(step);
    }
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
  // Every step of every series, sorted and unique: merged series by series (most share their steps) instead of
  // sorting them all together.
  std::vector<int64_t> steps, merged, sorted;
  for (SummarySeries& s : series) {
    s.has_neuron_stats.resize(s.steps.size());
    const std::vector<int64_t>* own = &s.steps;
    if (!std::is_sorted(s.steps.begin(), s.steps.end())) {
      sorted = s.steps;
      std::sort(sorted.begin(), sorted.end());
      own = &sorted;
    }
    merged.clear();
    std::set_union(steps.begin(), steps.end(), own->begin(), own->end(), std::back_inserter(merged));
    steps.swap(merged);
    table.index_[{s.layer_id, int(s.quantity)}] = table.series_.size();
    table.series_.push_back(std::move(s));
  }
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  table.steps_ = std::move(steps);
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
