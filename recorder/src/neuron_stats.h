// Per-neuron statistics. CPU float32 tensors: one pass over the data in plain C++ with double accumulators (no
// LibTorch ops, no allocation per element). Other tensors (CUDA, half precision, double): tensor reductions on the
// tensor's own device, so that only small vectors cross to the host. Calls are merged on the host in double.
#pragma once

#include <torch/types.h>
#include <trainscope/format/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace trainscope::detail {

inline constexpr int kStatRows = format::kStatisticCount;  // rows in format::Statistic order

// [kStatRows, N] float32 statistics of `x` per index along `neuron_dim`, on x's device. Element count per neuron is
// x.numel() / N.
torch::Tensor neuron_statistics(const torch::Tensor& x, int64_t neuron_dim);

// Statistics of one neuron: mean, std, min, max, norm, zero fraction, NaN and Inf counts, over `count` elements.
struct Moments {
  double count;
  std::array<double, kStatRows> v;
};

// Statistics of a set of neurons as rows: one row of size() floats per statistic, in format::Statistic order, the
// layout and precision of LayerQuantityRecord::neuron_values, so that a record takes the rows over without a copy.
// Rows rather than one struct per neuron: the kernel finishes neighbouring neurons into each row with vector
// instructions. Float, not double: converting a step's rows into the records afterwards read ~1 MB of doubles gone
// cold since the kernel wrote them (~13% of a captured step() on the VAE). Merges and summaries are computed in
// double from the floats. All neurons of a call, and so of any merge of calls, have the same element count.
class NeuronRows {
 public:
  NeuronRows() = default;
  NeuronRows(size_t neurons, double count) : neurons_(neurons), count_(count), values_(size_t(kStatRows) * neurons) {}
  size_t size() const { return neurons_; }
  bool empty() const { return neurons_ == 0; }
  double count() const { return count_; }  // elements per neuron
  float* row(int statistic) { return values_.data() + size_t(statistic) * neurons_; }
  const float* row(int statistic) const { return values_.data() + size_t(statistic) * neurons_; }
  Moments at(size_t neuron) const;            // one neuron's statistics
  void set(size_t neuron, const Moments& m);  // rounded to float
  // All rows, giving them up: the neuron_values of a record of every statistic.
  std::vector<float> take_values() && { return std::move(values_); }

  // The sums over the neurons of (mean - centre) and its square, in double, kept by the kernel beside the float rows
  // for the layer summary's spread of means. None for merged or device rows, nor once a neuron was not finite (the
  // summary then takes the spread from the float rows).
  struct MeanSpread {
    double centre = 0, sum = 0, squares = 0;
  };
  std::optional<MeanSpread>& mean_spread() { return mean_spread_; }
  const std::optional<MeanSpread>& mean_spread() const { return mean_spread_; }

 private:
  size_t neurons_ = 0;
  double count_ = 0;
  std::vector<float> values_;
  std::optional<MeanSpread> mean_spread_;
};

// One pass over contiguous float data laid out [outer, neurons, inner]: neuron i's elements are x[o][i][k] for all
// o and k (Linear activation [B, N]: outer B, inner 1; conv activation [B, C, H, W]: outer B, inner H*W; weight
// [N, K]: outer 1, inner K). Writes `neurons` entries of `out`. Mean and std come from sums shifted by one finite
// element of the neuron, accumulated in double; min/max are NaN when the neuron holds a NaN (as in LibTorch).
NeuronRows host_neuron_moments(const float* x, int64_t outer, int64_t neurons, int64_t inner);

// A parameter as the host kernel reads it: `rows` neurons of `inner` contiguous floats each.
struct ParameterRows {
  const float* x;
  int64_t rows, inner;
};
// host_neuron_moments() of each parameter, all in one parallel region: each parameter's rows split between
// LibTorch's intra-op threads as its element-wise ops split a tensor of that size, so that each thread reads the
// part it wrote last (in the optimizer's update and the gradients' accumulation) from its own core's cache.
std::vector<NeuronRows> host_parameter_moments(const std::vector<ParameterRows>& parameters);
// The rows [first, last) of part `part` of `parts` there: LibTorch's element-wise ops (TensorIterator) leave a tensor
// of more than 32768 elements to the intra-op threads in equal ranges of elements, smaller ones to the calling
// thread; these are the same ranges, rounded to whole rows.
std::pair<int64_t, int64_t> parameter_part(const ParameterRows& p, int64_t part, int64_t parts);

// Sum of squares of `n` floats, in double.
double host_sum_of_squares(const float* x, int64_t n);
// host_sum_of_squares() of each parameter's floats, in parts as host_parameter_moments() takes them.
std::vector<double> host_sums_of_squares(const std::vector<ParameterRows>& parameters);

// Statistics of one forward call (or one parameter): on the host, or on the device to be fetched later.
struct CallStats {
  NeuronRows host;       // when computed on the host
  torch::Tensor device;  // [kStatRows, neurons] float32 on the tensor's device otherwise
  double count = 0;      // elements per neuron
  bool defined() const { return !host.empty() || device.defined(); }
};

// Whether the host kernels read `x` (through contiguous(), or as it is when contiguous): CPU float32 in plain strided
// memory, not empty (so no neuron count of 0).
bool host_readable(const torch::Tensor& x);

// Statistics of `x` per index along `neuron_dim`: host_neuron_moments() for CPU float32 tensors, device reductions
// (neuron_statistics()) for all others.
CallStats compute_neuron_stats(const torch::Tensor& x, int64_t neuron_dim);

// Merges two disjoint sets of elements (Chan's parallel variance, so no cancellation).
Moments merge(const Moments& a, const Moments& b);

// The statistics of one layer quantity in a step: one call's (from the host kernel, or one neuron_statistics()
// result fetched to the host), or the merge of several calls of the same layer.
class NeuronTable {
 public:
  void add_call(const float* stats, uint32_t neurons, double count_per_neuron);  // stats: [kStatRows][neurons]
  void add_call(NeuronRows&& call);                                              // taken over when it is the first
  uint32_t neurons() const { return uint32_t(rows_.size()); }
  format::TensorSummary summary() const;
  // The summary, and into `values` the rows of the statistics in `mask` in Statistic order (the layout of
  // LayerQuantityRecord::neuron_values): moved there when `mask` selects them all. The table is empty afterwards.
  void take(format::StatisticMask mask, format::TensorSummary& summary, std::vector<float>& values);

 private:
  NeuronRows rows_;
};

}  // namespace trainscope::detail
