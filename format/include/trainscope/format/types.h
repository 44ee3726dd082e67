// Plain value types shared by the writer, the reader and everything above them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace trainscope::format {

// Numbers match format/proto/trainscope.proto and never change: they are stored on disk.
enum class Quantity : uint8_t {
  Activation = 0,
  ActivationGrad = 1,
  Weight = 2,
  WeightGrad = 3,
  Bias = 4,
  BiasGrad = 5
};
inline constexpr int kQuantityCount = 6;

enum class Statistic : uint8_t {
  Mean = 0,
  Std = 1,
  Min = 2,
  Max = 3,
  Norm = 4,
  ZeroFraction = 5,
  NanCount = 6,
  InfCount = 7
};
inline constexpr int kStatisticCount = 8;

// Names a user types on the command line: "activation_grad", "zero_fraction", ...
std::string_view quantity_name(Quantity q);
std::string_view statistic_name(Statistic s);
std::optional<Quantity> parse_quantity(std::string_view name);
std::optional<Statistic> parse_statistic(std::string_view name);
std::array<Quantity, kQuantityCount> all_quantities();
std::array<Statistic, kStatisticCount> all_statistics();

// Bit i set = Statistic(i) present.
using StatisticMask = uint16_t;
inline constexpr StatisticMask kAllStatistics = (1u << kStatisticCount) - 1;
inline constexpr StatisticMask statistic_bit(Statistic s) {
  return StatisticMask(1u << unsigned(s));
}

// Statistics of one whole tensor (all its elements, over the batch for activations).
struct TensorSummary {
  double mean = 0, std = 0, min = 0, max = 0, norm = 0, zero_fraction = 0;
  double nan_count = 0, inf_count = 0;  // doubles so that every field shares one column type on disk
  double numel = 0;

  double get(Statistic s) const;
  void set(Statistic s, double v);
  bool finite() const { return nan_count == 0 && inf_count == 0; }
};

// One quantity of one layer at one step: the whole-tensor summary and, optionally, per-neuron statistics.
struct LayerQuantityRecord {
  uint32_t layer_id = 0;
  Quantity quantity = Quantity::Activation;
  TensorSummary summary;
  // Per-neuron statistics, row-major [statistic][neuron] for each statistic set in `neuron_stats`, in Statistic
  // order. Empty (and mask 0) when only the summary was recorded at this step.
  StatisticMask neuron_stats = 0;
  uint32_t neuron_count = 0;
  std::vector<float> neuron_values;

  const float* neuron_row(Statistic s) const;  // nullptr when absent
};

// What the training thread hands to the writer for one step.
struct Snapshot {
  int64_t step = 0;
  double wall_time = 0;  // seconds since the run was created; 0 lets the writer stamp it
  std::vector<std::pair<std::string, double>> scalars;
  std::vector<LayerQuantityRecord> layers;
};

// A whole tensor at one step, for neuron-level analysis.
struct FullTensor {
  uint32_t layer_id = 0;
  Quantity quantity = Quantity::Weight;
  int64_t step = 0;
  std::vector<int64_t> shape;
  std::vector<float> values;
  bool probe_batch = false;  // activations of the fixed probe batch
};

// Storage precision for per-neuron statistics and full tensors. Scalars and summaries are always exact.
enum class Precision : uint8_t { Float32, Float16, BFloat16 };

// Any error in reading or writing a recording. The message always names the file, and the offset where one applies.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace trainscope::format
