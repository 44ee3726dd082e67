#include "neuron_stats.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace trainscope::detail {

torch::Tensor neuron_statistics(const torch::Tensor& x, int64_t neuron_dim) {
  // Our own reductions must neither be recorded by autograd nor seen by the op observer.
  at::DisableRecordFunctionGuard no_observer;
  torch::NoGradGuard no_grad;
  torch::Tensor t = x.detach();
  if (t.dim() == 0) t = t.reshape({1, 1});
  const int64_t n = t.size(neuron_dim);
  t = t.movedim(neuron_dim, 0).reshape({n, -1});
  if (t.scalar_type() != torch::kFloat && t.scalar_type() != torch::kDouble) t = t.to(torch::kFloat);
  auto [std, mean] = torch::std_mean(t, {1}, /*unbiased=*/false);
  auto [mn, mx] = t.aminmax(1);
  torch::Tensor norm = torch::linalg_vector_norm(t, 2, {1});
  torch::Tensor zero = t.eq(0).sum(1).to(t.scalar_type()) / double(t.size(1));
  torch::Tensor nan = t.isnan().sum(1).to(t.scalar_type());
  torch::Tensor inf = t.isinf().sum(1).to(t.scalar_type());
  return torch::stack({mean, std, mn, mx, norm, zero, nan, inf}).to(torch::kFloat);
}

namespace {
constexpr int kMean = int(format::Statistic::Mean), kStd = int(format::Statistic::Std),
              kMin = int(format::Statistic::Min), kMax = int(format::Statistic::Max),
              kNorm = int(format::Statistic::Norm), kZero = int(format::Statistic::ZeroFraction),
              kNan = int(format::Statistic::NanCount), kInf = int(format::Statistic::InfCount);

// NaN wins, so that a NaN min or max is never hidden by the order of merging.
double nan_min(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? std::nan("") : std::min(a, b);
}
double nan_max(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? std::nan("") : std::max(a, b);
}
}  // namespace

Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  Moments m;
  m.count = a.count + b.count;
  const double delta = b.v[kMean] - a.v[kMean];
  m.v[kMean] = a.v[kMean] + delta * b.count / m.count;
  const double m2 =
      a.v[kStd] * a.v[kStd] * a.count + b.v[kStd] * b.v[kStd] * b.count + delta * delta * a.count * b.count / m.count;
  m.v[kStd] = std::sqrt(std::max(0.0, m2 / m.count));
  if (std::isnan(m2)) m.v[kStd] = m2;
  m.v[kMin] = nan_min(a.v[kMin], b.v[kMin]);
  m.v[kMax] = nan_max(a.v[kMax], b.v[kMax]);
  m.v[kNorm] = std::hypot(a.v[kNorm], b.v[kNorm]);
  m.v[kZero] = (a.v[kZero] * a.count + b.v[kZero] * b.count) / m.count;
  m.v[kNan] = a.v[kNan] + b.v[kNan];
  m.v[kInf] = a.v[kInf] + b.v[kInf];
  return m;
}

void NeuronTable::add_call(const float* stats, uint32_t n, double count_per_neuron) {
  // A layer called with a different output width (rare: a shared module on other shapes) restarts the table.
  if (rows.empty() || neurons != n) {
    neurons = n;
    rows.assign(n, Moments{});
  }
  for (uint32_t i = 0; i < n; ++i) {
    Moments call;
    call.count = count_per_neuron;
    for (int s = 0; s < kStatRows; ++s) call.v[s] = stats[size_t(s) * n + i];
    rows[i] = merge(rows[i], call);
  }
}

format::TensorSummary NeuronTable::summary() const {
  Moments all;
  for (const Moments& m : rows) all = merge(all, m);
  format::TensorSummary s;
  for (int i = 0; i < kStatRows; ++i) s.set(format::Statistic(i), all.v[i]);
  s.numel = all.count;
  return s;
}

std::vector<float> NeuronTable::values(format::StatisticMask mask) const {
  std::vector<float> out;
  for (int s = 0; s < kStatRows; ++s) {
    if (!(mask & format::statistic_bit(format::Statistic(s)))) continue;
    for (const Moments& m : rows) out.push_back(float(m.v[s]));
  }
  return out;
}

bool NeuronTable::finite() const {
  for (const Moments& m : rows)
    if (m.v[kNan] != 0 || m.v[kInf] != 0) return false;
  return true;
}

}  // namespace trainscope::detail
