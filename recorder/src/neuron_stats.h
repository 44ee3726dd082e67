// Per-neuron statistics. CPU float32 tensors: one pass over the data in plain C++ with double accumulators (no
// LibTorch ops, no allocation per element). Other tensors (CUDA, half precision, double): tensor reductions on the
// tensor's own device, so that only small vectors cross to the host. Calls are merged on the host in double.
#pragma once

#include <torch/types.h>
#include <trainscope/format/types.h>

#include <array>
#include <cstdint>
#include <memory>
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

// Leaves new elements uninitialised (resize() does not zero them): the statistics of a step (~1 MB) are written by
// the kernel right after, so zeroing them first only costs memory traffic.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <typename U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialisation: nothing for a trivial type
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// Statistics of a set of neurons as rows: one row of size() values per statistic, in format::Statistic order, the
// layout of LayerQuantityRecord::neuron_values. Rows rather than one struct per neuron: the kernel finishes
// neighbouring neurons into each row with vector instructions, and a record converts whole rows to float (per
// neuron, with eight scattered stores each, writing a record took 4 ns a neuron in cache and 10-13 ns in the
// training loop). All neurons of a call, and so of any merge of calls, have the same element count.
class NeuronRows {
 public:
  NeuronRows() = default;
  // Values are left uninitialised: the producer writes every row.
  NeuronRows(size_t neurons, double count) : neurons_(neurons), count_(count), values_(size_t(kStatRows) * neurons) {}
  size_t size() const { return neurons_; }
  bool empty() const { return neurons_ == 0; }
  double count() const { return count_; }  // elements per neuron
  double* row(int statistic) { return values_.data() + size_t(statistic) * neurons_; }
  const double* row(int statistic) const { return values_.data() + size_t(statistic) * neurons_; }
  Moments at(size_t neuron) const;  // one neuron's statistics
  void set(size_t neuron, const Moments& m);

 private:
  size_t neurons_ = 0;
  double count_ = 0;
  std::vector<double, UninitializedAllocator<double>> values_;
};

// One pass over contiguous float data laid out [outer, neurons, inner]: neuron i's elements are x[o][i][k] for all
// o and k (Linear activation [B, N]: outer B, inner 1; conv activation [B, C, H, W]: outer B, inner H*W; weight
// [N, K]: outer 1, inner K). Writes `neurons` entries of `out`. Mean and std come from sums shifted by one finite
// element of the neuron, accumulated in double; min/max are NaN when the neuron holds a NaN (as in LibTorch).
NeuronRows host_neuron_moments(const float* x, int64_t outer, int64_t neurons, int64_t inner);

// Sum of squares of `n` floats, in double.
double host_sum_of_squares(const float* x, int64_t n);

// Statistics of one forward call (or one parameter): on the host, or on the device to be fetched later.
struct CallStats {
  NeuronRows host;       // when computed on the host
  torch::Tensor device;  // [kStatRows, neurons] float32 on the tensor's device otherwise
  double count = 0;      // elements per neuron
  bool defined() const { return !host.empty() || device.defined(); }
};

// Statistics of `x` per index along `neuron_dim`: host_neuron_moments() for CPU float32 tensors, device reductions
// (neuron_statistics()) for all others.
CallStats compute_neuron_stats(const torch::Tensor& x, int64_t neuron_dim);

// Merges two disjoint sets of elements (Chan's parallel variance, so no cancellation).
Moments merge(const Moments& a, const Moments& b);

// Host copy of one neuron_statistics() result, or the merge of several calls of the same layer.
struct NeuronTable {
  uint32_t neurons = 0;
  NeuronRows rows;

  void add_call(const float* stats, uint32_t neurons, double count_per_neuron);  // stats: [kStatRows][neurons]
  void add_call(const NeuronRows& call);                                         // host statistics of one call
  void add_call(NeuronRows&& call);                                              // the same, taken over if first
  format::TensorSummary summary() const;
  // Rows of the statistics in `mask`, in Statistic order: the layout of LayerQuantityRecord::neuron_values.
  std::vector<float> values(format::StatisticMask mask) const;
  // Both at once: `summary`, and into `values` (when given) the rows of the statistics in `mask`.
  void write(format::StatisticMask mask, format::TensorSummary& summary, std::vector<float>* values) const;
  bool finite() const;
};

}  // namespace trainscope::detail
