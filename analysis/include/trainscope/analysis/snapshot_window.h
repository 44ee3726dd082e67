// The snapshot level's data: for every layer of the hierarchy, the training dynamics in a window of steps around
// the focus snapshot (focus + context), as a series and as the window's average. Groups (modules with children)
// summarise their leaves, so a model with hundreds of layers can be shown collapsed.
#pragma once

#include <trainscope/analysis/layer_graph.h>
#include <trainscope/format/run_reader.h>

#include <array>
#include <vector>

namespace trainscope::analysis {

struct QuantityWindow {
  bool present = false;
  bool aggregated = false;  // summarises the layer's leaves (a group)
  std::vector<int64_t> steps;
  std::vector<format::TensorSummary> series;
  format::TensorSummary average;  // over the window: mean of each statistic, min of mins, max of maxes and counts
};

struct LayerWindow {
  uint32_t layer_id = 0;
  std::array<QuantityWindow, format::kQuantityCount> quantities;
  const QuantityWindow& operator[](format::Quantity q) const { return quantities[size_t(q)]; }
};

struct SnapshotWindow {
  int64_t focus_step = 0;
  int64_t window = 0;               // steps on each side of the focus
  std::vector<LayerWindow> layers;  // indexed by layer id
};

// Whole-tensor statistics of several tensors as one: numel-weighted mean, pooled std, min of mins, max of maxes,
// root of summed squared norms, summed counts.
format::TensorSummary combine_summaries(const std::vector<format::TensorSummary>& parts);
// The window average of one series.
format::TensorSummary average_summaries(const std::vector<format::TensorSummary>& series);

SnapshotWindow compute_snapshot_window(format::RunReader& reader, const LayerGraph& graph, int64_t focus_step,
                                       int64_t window);

}  // namespace trainscope::analysis
