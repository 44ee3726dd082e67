#include <trainscope/format/types.h>

namespace trainscope::format {
namespace {
constexpr std::string_view kQuantityNames[kQuantityCount] = {"activation", "activation_grad", "weight", "weight_grad",
                                                             "bias",       "bias_grad"};
constexpr std::string_view kStatisticNames[kStatisticCount] = {"mean", "std",           "min",       "max",
                                                               "norm", "zero_fraction", "nan_count", "inf_count"};
}  // namespace

std::string_view quantity_name(Quantity q) {
  const auto i = size_t(q);
  return i < size_t(kQuantityCount) ? kQuantityNames[i] : std::string_view("unknown");
}

std::string_view statistic_name(Statistic s) {
  const auto i = size_t(s);
  return i < size_t(kStatisticCount) ? kStatisticNames[i] : std::string_view("unknown");
}

std::optional<Quantity> parse_quantity(std::string_view name) {
  for (int i = 0; i < kQuantityCount; ++i)
    if (kQuantityNames[i] == name) return Quantity(i);
  return std::nullopt;
}

std::optional<Statistic> parse_statistic(std::string_view name) {
  for (int i = 0; i < kStatisticCount; ++i)
    if (kStatisticNames[i] == name) return Statistic(i);
  return std::nullopt;
}

std::array<Quantity, kQuantityCount> all_quantities() {
  std::array<Quantity, kQuantityCount> all{};
  for (int i = 0; i < kQuantityCount; ++i) all[i] = Quantity(i);
  return all;
}

std::array<Statistic, kStatisticCount> all_statistics() {
  std::array<Statistic, kStatisticCount> all{};
  for (int i = 0; i < kStatisticCount; ++i) all[i] = Statistic(i);
  return all;
}

double TensorSummary::get(Statistic s) const {
  switch (s) {
    case Statistic::Mean: return mean;
    case Statistic::Std: return std;
    case Statistic::Min: return min;
    case Statistic::Max: return max;
    case Statistic::Norm: return norm;
    case Statistic::ZeroFraction: return zero_fraction;
    case Statistic::NanCount: return nan_count;
    case Statistic::InfCount: return inf_count;
  }
  return 0;
}

void TensorSummary::set(Statistic s, double v) {
  switch (s) {
    case Statistic::Mean: mean = v; break;
    case Statistic::Std: std = v; break;
    case Statistic::Min: min = v; break;
    case Statistic::Max: max = v; break;
    case Statistic::Norm: norm = v; break;
    case Statistic::ZeroFraction: zero_fraction = v; break;
    case Statistic::NanCount: nan_count = v; break;
    case Statistic::InfCount: inf_count = v; break;
  }
}

const float* LayerQuantityRecord::neuron_row(Statistic s) const {
  if (!(neuron_stats & statistic_bit(s))) return nullptr;
  size_t row = 0;
  for (unsigned i = 0; i < unsigned(s); ++i)
    if (neuron_stats & (1u << i)) ++row;
  if ((row + 1) * neuron_count > neuron_values.size()) return nullptr;
  return neuron_values.data() + row * neuron_count;
}

}  // namespace trainscope::format
