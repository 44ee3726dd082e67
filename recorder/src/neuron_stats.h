// Per-neuron statistics: computed by tensor reductions on the tensor's device, merged on the host in double.
#pragma once

#include <torch/types.h>
#include <trainscope/format/types.h>

#include <array>
#include <cstdint>
#include <vector>

namespace trainscope::detail {

inline constexpr int kStatRows = format::kStatisticCount;  // rows in format::Statistic order

// [kStatRows, N] float32 statistics of `x` per index along `neuron_dim`, on x's device. Element count per neuron is
// x.numel() / N.
torch::Tensor neuron_statistics(const torch::Tensor& x, int64_t neuron_dim);

// Statistics of one neuron: mean, std, min, max, norm, zero fraction, NaN and Inf counts, over `count` elements.
struct Moments {
  double count = 0;
  std::array<double, kStatRows> v{};
};

// Merges two disjoint sets of elements (Chan's parallel variance, so no cancellation).
Moments merge(const Moments& a, const Moments& b);

// Host copy of one neuron_statistics() result, or the merge of several calls of the same layer.
struct NeuronTable {
  uint32_t neurons = 0;
  std::vector<Moments> rows;  // one per neuron

  void add_call(const float* stats, uint32_t neurons, double count_per_neuron);  // stats: [kStatRows][neurons]
  format::TensorSummary summary() const;
  // Rows of the statistics in `mask`, in Statistic order: the layout of LayerQuantityRecord::neuron_values.
  std::vector<float> values(format::StatisticMask mask) const;
  bool finite() const;
};

}  // namespace trainscope::detail
