#include "neuron_stats.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

// The one-pass kernels are compiled twice on x86-64 (AVX2 and the baseline), the better one chosen when the library
// loads: LibTorch's own kernels do the same at run time.
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__SANITIZE_ADDRESS__)
#if __has_attribute(target_clones)
#define TRAINSCOPE_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef TRAINSCOPE_SIMD_CLONES
#define TRAINSCOPE_SIMD_CLONES
#endif

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

constexpr double kInfinity = std::numeric_limits<double>::infinity();

// Running sums of one neuron. s1 and s2 are sums of (x - shift) and its square: with the shift one of the neuron's
// own values, the variance s2/n - (s1/n)^2 does not cancel catastrophically. NaN and Inf are not counted here:
// a non-finite element makes `sq` non-finite, and only such neurons are counted again (rare, and then slow is fine).
struct Accumulator {
  double shift = 0, s1 = 0, s2 = 0, sq = 0, zero = 0, mn = kInfinity, mx = -kInfinity;
};

constexpr int kLanes = 8;
struct Lanes {
  double s1[kLanes], s2[kLanes], sq[kLanes], zero[kLanes], mn[kLanes], mx[kLanes];
};

// `rows` rows of kLanes floats, `stride` floats apart; lane l shifted by shift[l]. Independent lanes, so that the
// compiler vectorizes without reassociating sums. NaN never wins a comparison here: min/max skip it.
TRAINSCOPE_SIMD_CLONES
void accumulate_lanes(const float* x, int64_t rows, int64_t stride, const double* shift, Lanes* out) {
  double k[kLanes], s1[kLanes], s2[kLanes], sq[kLanes], zero[kLanes], mn[kLanes], mx[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    k[l] = shift[l];
    s1[l] = s2[l] = sq[l] = zero[l] = 0;
    mn[l] = kInfinity;
    mx[l] = -kInfinity;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    for (int l = 0; l < kLanes; ++l) {
      const double v = row[l];
      const double d = v - k[l];
      s1[l] += d;
      s2[l] += d * d;
      sq[l] += v * v;
      zero[l] += v == 0 ? 1.0 : 0.0;
      mn[l] = v < mn[l] ? v : mn[l];
      mx[l] = v > mx[l] ? v : mx[l];
    }
  }
  for (int l = 0; l < kLanes; ++l) {
    out->s1[l] = s1[l];
    out->s2[l] = s2[l];
    out->sq[l] = sq[l];
    out->zero[l] = zero[l];
    out->mn[l] = mn[l];
    out->mx[l] = mx[l];
  }
}

TRAINSCOPE_SIMD_CLONES
double sum_of_squares(const float* x, int64_t n) {
  double lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += double(x[i + l]) * double(x[i + l]);
  double sum = 0;
  for (double v : lanes) sum += v;
  for (; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return sum;
}

inline void accumulate_one(float value, Accumulator& a) {
  const double v = value;
  const double d = v - a.shift;
  a.s1 += d;
  a.s2 += d * d;
  a.sq += v * v;
  a.zero += v == 0 ? 1.0 : 0.0;
  a.mn = v < a.mn ? v : a.mn;
  a.mx = v > a.mx ? v : a.mx;
}

inline void fold_lane(const Lanes& lanes, int l, Accumulator& a) {
  a.s1 += lanes.s1[l];
  a.s2 += lanes.s2[l];
  a.sq += lanes.sq[l];
  a.zero += lanes.zero[l];
  a.mn = std::min(a.mn, lanes.mn[l]);
  a.mx = std::max(a.mx, lanes.mx[l]);
}

}  // namespace

double host_sum_of_squares(const float* x, int64_t n) {
  return sum_of_squares(x, n);
}

void host_neuron_moments(const float* x, int64_t outer, int64_t neurons, int64_t inner, Moments* out) {
  if (neurons <= 0) return;
  // Reused between calls: no allocation once the widest layer was seen.
  thread_local std::vector<Accumulator> acc;
  acc.assign(size_t(neurons), Accumulator{});
  const int64_t count = outer * inner;
  if (count > 0)
    for (int64_t i = 0; i < neurons; ++i) {
      const double first = x[i * inner];
      acc[size_t(i)].shift = std::isfinite(first) ? first : 0.0;
    }
  Lanes lanes;
  if (inner == 1) {
    // Neurons are columns of an [outer, neurons] matrix: kLanes neighbouring neurons at a time, down the rows.
    int64_t j = 0;
    for (; j + kLanes <= neurons; j += kLanes) {
      double shift[kLanes];
      for (int l = 0; l < kLanes; ++l) shift[l] = acc[size_t(j + l)].shift;
      accumulate_lanes(x + j, outer, neurons, shift, &lanes);
      for (int l = 0; l < kLanes; ++l) fold_lane(lanes, l, acc[size_t(j + l)]);
    }
    for (; j < neurons; ++j)
      for (int64_t o = 0; o < outer; ++o) accumulate_one(x[o * neurons + j], acc[size_t(j)]);
  } else {
    // Each neuron owns contiguous runs of `inner` elements: kLanes elements of the run at a time.
    const int64_t rows = inner / kLanes, done = rows * kLanes;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < neurons; ++i) {
        const float* run = x + (o * neurons + i) * inner;
        Accumulator& a = acc[size_t(i)];
        if (rows > 0) {
          double shift[kLanes];
          std::fill(shift, shift + kLanes, a.shift);
          accumulate_lanes(run, rows, kLanes, shift, &lanes);
          for (int l = 0; l < kLanes; ++l) fold_lane(lanes, l, a);
        }
        for (int64_t k = done; k < inner; ++k) accumulate_one(run[k], a);
      }
  }
  const double n = double(count);
  for (int64_t i = 0; i < neurons; ++i) {
    const Accumulator& a = acc[size_t(i)];
    Moments& m = out[i];
    m.count = n;
    double nan = 0, inf = 0;
    if (!std::isfinite(a.sq))
      for (int64_t o = 0; o < outer; ++o) {
        const float* run = x + (o * neurons + i) * inner;
        for (int64_t k = 0; k < inner; ++k) {
          nan += std::isnan(run[k]) ? 1 : 0;
          inf += std::isinf(run[k]) ? 1 : 0;
        }
      }
    const double var = (a.s2 - a.s1 * (a.s1 / n)) / n;
    m.v[kMean] = a.shift + a.s1 / n;
    m.v[kStd] = std::isnan(var) ? var : std::sqrt(std::max(0.0, var));
    m.v[kMin] = nan > 0 || count == 0 ? std::nan("") : a.mn;
    m.v[kMax] = nan > 0 || count == 0 ? std::nan("") : a.mx;
    m.v[kNorm] = std::sqrt(a.sq);
    m.v[kZero] = a.zero / n;
    m.v[kNan] = nan;
    m.v[kInf] = inf;
  }
}

CallStats compute_neuron_stats(const torch::Tensor& x, int64_t neuron_dim) {
  CallStats out;
  const int64_t dims = x.dim();
  const int64_t neurons = dims == 0 ? 1 : x.size(neuron_dim);
  out.count = neurons > 0 ? double(x.numel()) / double(neurons) : 0;
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.layout() == torch::kStrided && neurons > 0 &&
      x.numel() > 0) {
    at::DisableRecordFunctionGuard no_observer;
    torch::NoGradGuard no_grad;
    const torch::Tensor c = x.detach().contiguous();  // the same tensor unless it is a view with odd strides
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < dims; ++d) {
      if (d < neuron_dim) outer *= c.size(d);
      if (d > neuron_dim) inner *= c.size(d);
    }
    out.host.resize(size_t(neurons));
    host_neuron_moments(c.data_ptr<float>(), outer, neurons, inner, out.host.data());
    return out;
  }
  out.device = neuron_statistics(x, neuron_dim);
  return out;
}

Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  Moments m;
  m.count = a.count + b.count;
  const double delta = b.v[kMean] - a.v[kMean];
  m.v[kMean] = a.v[kMean] + delta * b.count / m.count;
  // With an infinite mean the difference form gives Inf - Inf: the weighted sum keeps Inf (or NaN for +Inf and -Inf).
  if (!std::isfinite(a.v[kMean]) || !std::isfinite(b.v[kMean]))
    m.v[kMean] = (a.v[kMean] * a.count + b.v[kMean] * b.count) / m.count;
  const double m2 =
      a.v[kStd] * a.v[kStd] * a.count + b.v[kStd] * b.v[kStd] * b.count + delta * delta * a.count * b.count / m.count;
  m.v[kStd] = std::sqrt(std::max(0.0, m2 / m.count));
  if (std::isnan(m2)) m.v[kStd] = m2;
  m.v[kMin] = nan_min(a.v[kMin], b.v[kMin]);
  m.v[kMax] = nan_max(a.v[kMax], b.v[kMax]);
  // hypot(Inf, NaN) is Inf; a NaN element makes the norm NaN, as in LibTorch.
  m.v[kNorm] = std::isnan(a.v[kNorm]) || std::isnan(b.v[kNorm]) ? std::nan("") : std::hypot(a.v[kNorm], b.v[kNorm]);
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

void NeuronTable::add_call(const std::vector<Moments>& moments) {
  const auto n = uint32_t(moments.size());
  if (rows.empty() || neurons != n) {
    neurons = n;
    rows.assign(n, Moments{});
  }
  for (uint32_t i = 0; i < n; ++i) rows[i] = merge(rows[i], moments[i]);
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
