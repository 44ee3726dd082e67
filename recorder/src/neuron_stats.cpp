#include "neuron_stats.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>
#include <trainscope/format/simd_clones.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

constexpr double kInfinity = std::numeric_limits<double>::infinity();

// Running sums of one neuron, in double. s1 and s2 are sums of (x - shift) and its square: with the shift one of the
// neuron's own values, the variance s2/n - (s1/n)^2 does not cancel catastrophically, and the norm follows as
// n shift^2 + 2 shift s1 + s2. NaN and Inf are not counted on the fast path: a non-finite element makes s1 or s2
// non-finite, and only such neurons are computed again, element by element (rare, and then slow is fine).
struct Accumulator {
  double shift = 0, s1 = 0, s2 = 0, zero = 0, mn = kInfinity, mx = -kInfinity;
};

inline void accumulate_one(float value, Accumulator& a) {
  const float d = value - float(a.shift);
  a.s1 += d;
  a.s2 += double(d) * double(d);
  a.zero += value == 0 ? 1.0 : 0.0;
  a.mn = value < a.mn ? value : a.mn;
  a.mx = value > a.mx ? value : a.mx;
}

constexpr int kLanes = 8;        // one AVX2 register of floats
constexpr int kWideVectors = 2;  // registers per row in the wide variants: independent chains, and no spills
constexpr int kMaxLanes = kLanes * kWideVectors;
constexpr int64_t kBlockRows = 64;  // float partial sums cover at most this many rows before they go to double

// The sums of up to kMaxLanes neurons side by side, finished together: their divisions and square roots, one neuron
// at a time, were half of the time of a Linear activation (64 elements a neuron: ~9 of 20 ns a neuron) and nearly
// all of a bias's. The column kernel finds the shifts and accumulates into it, and the finish reads it as it is:
// copying the kernel's lanes into another layout, with the shifts found apart, was ~17% of a Linear activation's
// time. Lanes past the batch's width are computed and ignored.
struct SumBatch {
  float shift[kMaxLanes];  // a neuron's own element (see Accumulator): a float
  double s1[kMaxLanes], s2[kMaxLanes], zero[kMaxLanes];
  float mn[kMaxLanes], mx[kMaxLanes];  // the neuron's elements, or +-Inf when it has none but NaN
};

// Written with vector types: the compiler did not vectorize the same code written lane by lane (it ran scalar, about
// 1.7 ns per float). Lanes go in and out through memory, since subscripting the vectors makes GCC split them into
// scalars again.
typedef float FloatLanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kLanes * sizeof(int32_t))));

// By reference: a vector return value would change the ABI between the clones (-Wpsabi).
[[gnu::always_inline]] inline void splat(float v, FloatLanes& out) {
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, v);
  std::memcpy(&out, lanes, sizeof out);
}

// Reductions across the lanes in vector registers. Through memory, lane by lane, they were about half of the time
// of a 256-float weight row (three chains of eight dependent scalar additions, two of eight comparisons).
typedef float FloatQuad __attribute__((vector_size(4 * sizeof(float))));
typedef double DoubleQuad __attribute__((vector_size(4 * sizeof(double))));
typedef double DoublePair __attribute__((vector_size(2 * sizeof(double))));

// Lanes l and l + 4 of `f` (float or int lanes) added in double, to `sum` (by reference, as splat()).
template <typename L>
[[gnu::always_inline]] inline void add_in_double(const L& f, DoubleQuad& sum) {
  sum += __builtin_convertvector(__builtin_shufflevector(f, f, 0, 1, 2, 3), DoubleQuad) +
         __builtin_convertvector(__builtin_shufflevector(f, f, 4, 5, 6, 7), DoubleQuad);
}
[[gnu::always_inline]] inline double sum_of(const DoubleQuad& d) {
  const DoublePair p = __builtin_shufflevector(d, d, 0, 1) + __builtin_shufflevector(d, d, 2, 3);
  return p[0] + p[1];
}
// The smaller of each pair of lanes (the larger, for Max), and the smallest (largest) lane of `f` in three halvings.
template <bool Max>
[[gnu::always_inline]] inline FloatQuad pick(const FloatQuad& x, const FloatQuad& y) {
  if constexpr (Max)
    return x > y ? x : y;
  else
    return x < y ? x : y;
}
template <bool Max>
[[gnu::always_inline]] inline float lane_extreme(const FloatLanes& f) {
  FloatQuad m = pick<Max>(__builtin_shufflevector(f, f, 4, 5, 6, 7), __builtin_shufflevector(f, f, 0, 1, 2, 3));
  m = pick<Max>(__builtin_shufflevector(m, m, 2, 3, 0, 1), m);
  m = pick<Max>(__builtin_shufflevector(m, m, 1, 0, 3, 2), m);
  return m[0];
}

// Lanes of `f` (float or int lanes) as doubles at to[0 .. kLanes): added to what is there, or stored when `first`.
template <typename L>
[[gnu::always_inline]] inline void lanes_to_doubles(const L& f, double* to, bool first) {
  DoubleQuad lo = __builtin_convertvector(__builtin_shufflevector(f, f, 0, 1, 2, 3), DoubleQuad);
  DoubleQuad hi = __builtin_convertvector(__builtin_shufflevector(f, f, 4, 5, 6, 7), DoubleQuad);
  if (!first) {
    DoubleQuad a, b;
    std::memcpy(&a, to, sizeof a);
    std::memcpy(&b, to + 4, sizeof b);
    lo += a;
    hi += b;
  }
  std::memcpy(to, &lo, sizeof lo);
  std::memcpy(to + 4, &hi, sizeof hi);
}

// `rows` (at least one) rows of V * kLanes floats, `stride` floats apart, into lanes 0 .. V * kLanes of `out`; lane
// l shifted by its first element, or 0 if that is not finite (shift_of()). Partial sums in float over blocks of
// kBlockRows rows, then added in double (a sum of at most 64 shifted terms loses about 1e-7 relative; the blocks do
// not add up errors). NaN never wins a comparison here: min/max skip it, and NaN is handled by the caller.
template <int V>
[[gnu::always_inline]] inline void accumulate_rows(const float* x, int64_t rows, int64_t stride, SumBatch* out) {
  FloatLanes k[V], mn[V], mx[V];
  for (int v = 0; v < V; ++v) {
    FloatLanes first;
    std::memcpy(&first, x + v * kLanes, sizeof first);
    const FloatLanes zero = {};
    k[v] = first - first == zero ? first : zero;  // x - x is NaN for NaN and +-Inf
    std::memcpy(out->shift + v * kLanes, &k[v], sizeof k[v]);
    splat(std::numeric_limits<float>::infinity(), mn[v]);
    splat(-std::numeric_limits<float>::infinity(), mx[v]);
  }
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t r1 = std::min(rows, r0 + kBlockRows);
    FloatLanes f1[V] = {}, f2[V] = {};
    IntLanes zeros[V] = {};
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = x + r * stride;
      for (int v = 0; v < V; ++v) {
        FloatLanes e;
        std::memcpy(&e, row + v * kLanes, sizeof e);  // unaligned load
        const FloatLanes d = e - k[v];
        f1[v] += d;
        f2[v] += d * d;
        zeros[v] -= e == 0.0f;  // a true comparison is -1 in its lane
        mn[v] = e < mn[v] ? e : mn[v];
        mx[v] = e > mx[v] ? e : mx[v];
      }
    }
    // Into the output in double, block by block (the first stores: no arrays to zero, which took rep stos).
    for (int v = 0; v < V; ++v) {
      lanes_to_doubles(f1[v], out->s1 + v * kLanes, r0 == 0);
      lanes_to_doubles(f2[v], out->s2 + v * kLanes, r0 == 0);
      lanes_to_doubles(zeros[v], out->zero + v * kLanes, r0 == 0);
    }
  }
  for (int v = 0; v < V; ++v) {
    std::memcpy(out->mn + v * kLanes, &mn[v], sizeof mn[v]);
    std::memcpy(out->mx + v * kLanes, &mx[v], sizeof mx[v]);
  }
}

// Columns of a row-major matrix (Linear activations: neurons side by side), kLanes or kMaxLanes at a time.
TRAINSCOPE_SIMD_CLONES
void accumulate_lanes(const float* x, int64_t rows, int64_t stride, SumBatch* out) {
  accumulate_rows<1>(x, rows, stride, out);
}
TRAINSCOPE_SIMD_CLONES
void accumulate_wide(const float* x, int64_t rows, int64_t stride, SumBatch* out) {
  accumulate_rows<kWideVectors>(x, rows, stride, out);
}

// The shift of a neuron's sums (see Accumulator): its first element, if finite.
inline float shift_of(float first) {
  return std::isfinite(first) ? first : 0.0f;
}

// `blocks` consecutive blocks of V * kLanes floats of one neuron's run, all shifted by `shift`, added to `a`: V
// independent register chains, each with its own minimum and maximum, combined and reduced over the lanes in float
// once per run (with one pair shared by the chains and reduced in double, a 256-float weight row took 0.25 instead
// of 0.19 ns a float; which of the two mattered was not measured apart). Float partial sums per lane over at most
// kBlockRows blocks, then double.
template <int V>
[[gnu::always_inline]] inline void accumulate_blocks(const float* run, int64_t blocks, float shift, Accumulator& a) {
  constexpr int kWidth = V * kLanes;
  FloatLanes k, mn[V], mx[V];
  splat(shift, k);
  for (int v = 0; v < V; ++v) {
    splat(std::numeric_limits<float>::infinity(), mn[v]);
    splat(-std::numeric_limits<float>::infinity(), mx[v]);
  }
  DoubleQuad d1 = {}, d2 = {}, dz = {};
  for (int64_t r0 = 0; r0 < blocks; r0 += kBlockRows) {
    const int64_t r1 = std::min(blocks, r0 + kBlockRows);
    FloatLanes f1[V] = {}, f2[V] = {};
    IntLanes z[V] = {};
    for (int64_t r = r0; r < r1; ++r)
      for (int v = 0; v < V; ++v) {
        FloatLanes e;
        std::memcpy(&e, run + r * kWidth + v * kLanes, sizeof e);
        const FloatLanes d = e - k;
        f1[v] += d;
        f2[v] += d * d;
        z[v] -= e == 0.0f;
        mn[v] = e < mn[v] ? e : mn[v];
        mx[v] = e > mx[v] ? e : mx[v];
      }
    for (int v = 1; v < V; ++v) {
      f1[0] += f1[v];
      f2[0] += f2[v];
      z[0] += z[v];
    }
    add_in_double(f1[0], d1);
    add_in_double(f2[0], d2);
    add_in_double(z[0], dz);
  }
  a.s1 += sum_of(d1);
  a.s2 += sum_of(d2);
  a.zero += sum_of(dz);
  for (int v = 1; v < V; ++v) {  // the chains' extremes in the registers first, then across the lanes
    mn[0] = mn[v] < mn[0] ? mn[v] : mn[0];
    mx[0] = mx[v] > mx[0] ? mx[v] : mx[0];
  }
  a.mn = std::min(a.mn, double(lane_extreme<false>(mn[0])));
  a.mx = std::max(a.mx, double(lane_extreme<true>(mx[0])));
}

constexpr int kRunVectors = 2;  // chains over a contiguous run: 16 floats per step (four spill: AVX2 has 16 registers)

// One neuron's contiguous run of `n` floats (a weight row, a conv channel's plane), all shifted by `shift`, added to
// `a`: kRunVectors * kLanes floats at a time, then kLanes at a time (not one by one), the last few one by one.
[[gnu::always_inline]] inline void accumulate_run_inline(const float* run, int64_t n, float shift, Accumulator& a) {
  constexpr int64_t kWide = kRunVectors * kLanes;
  const int64_t wide = n / kWide;
  if (wide > 0) accumulate_blocks<kRunVectors>(run, wide, shift, a);
  const int64_t narrow = (n - wide * kWide) / kLanes;
  if (narrow > 0) accumulate_blocks<1>(run + wide * kWide, narrow, shift, a);
  for (int64_t i = wide * kWide + narrow * kLanes; i < n; ++i) accumulate_one(run[i], a);
}
TRAINSCOPE_SIMD_CLONES
void accumulate_run(const float* run, int64_t n, float shift, Accumulator& a) {
  accumulate_run_inline(run, n, shift, a);
}

// Lane l of `batch` from one neuron's sums: its shift, minimum and maximum are floats (or +-Inf).
void set_lane(SumBatch& batch, int l, const Accumulator& a) {
  batch.shift[l] = float(a.shift), batch.s1[l] = a.s1, batch.s2[l] = a.s2, batch.zero[l] = a.zero;
  batch.mn[l] = float(a.mn), batch.mx[l] = float(a.mx);
}
// `width` consecutive runs of `n` floats, each one neuron's (rows of a weight matrix), into `batch`: in one call, as
// a call through the clones' dispatch per row made 784 rows of 256 floats 4% slower.
TRAINSCOPE_SIMD_CLONES
void accumulate_runs(const float* x, int width, int64_t n, SumBatch& batch) {
  for (int l = 0; l < width; ++l) {
    Accumulator acc;
    acc.shift = shift_of(x[l * n]);
    accumulate_run_inline(x + l * n, n, float(acc.shift), acc);
    set_lane(batch, l, acc);
  }
}

// Float squares over blocks of 512 elements, added in double; 32 lanes (four independent register chains), so that
// memory, not the latency of the additions, bounds it. A square beyond the float range makes the result infinite;
// the caller then computes again in double.
TRAINSCOPE_SIMD_CLONES
double sum_of_squares_fast(const float* x, int64_t n) {
  constexpr int kWide = 4 * kLanes;
  constexpr int64_t kBlock = 16 * kWide;
  double lanes[kWide] = {};
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    float f[kWide] = {};
    for (int64_t j = i; j < i + kBlock; j += kWide)
      for (int l = 0; l < kWide; ++l) f[l] += x[j + l] * x[j + l];
    for (int l = 0; l < kWide; ++l) lanes[l] += f[l];
  }
  double sum = 0;
  for (double v : lanes) sum += v;
  for (; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return sum;
}

// One neuron element by element in double, NaN and Inf counted: for neurons the fast path found non-finite.
Moments exact_neuron(const float* x, int64_t outer, int64_t neurons, int64_t inner, int64_t i) {
  double sum = 0, sq = 0, zero = 0, nan = 0, inf = 0, mn = kInfinity, mx = -kInfinity;
  for (int64_t o = 0; o < outer; ++o) {
    const float* run = x + (o * neurons + i) * inner;
    for (int64_t k = 0; k < inner; ++k) {
      const double v = run[k];
      nan += std::isnan(v) ? 1 : 0;
      inf += std::isinf(v) ? 1 : 0;
      zero += v == 0 ? 1 : 0;
      sum += v;
      sq += v * v;
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
    }
  }
  const double n = double(outer * inner);
  const double mean = sum / n;
  double m2 = 0;  // second pass: exact variance even for huge finite values
  if (nan == 0 && inf == 0)
    for (int64_t o = 0; o < outer; ++o) {
      const float* run = x + (o * neurons + i) * inner;
      for (int64_t k = 0; k < inner; ++k) m2 += (run[k] - mean) * (run[k] - mean);
    }
  Moments m;
  m.count = n;
  m.v[kMean] = mean;
  m.v[kStd] = nan > 0 || inf > 0 ? std::nan("") : std::sqrt(m2 / n);
  m.v[kMin] = nan > 0 ? std::nan("") : mn;
  m.v[kMax] = nan > 0 ? std::nan("") : mx;
  m.v[kNorm] = std::sqrt(sq);
  m.v[kZero] = zero / n;
  m.v[kNan] = nan;
  m.v[kInf] = inf;
  return m;
}

// A batch's statistics as the rows store them, and its lanes' sums of (mean - centre) and its square in double.
struct FinishedBatch {
  float mean[kMaxLanes], std[kMaxLanes], min[kMaxLanes], max[kMaxLanes], norm[kMaxLanes], zero[kMaxLanes];
  double deviation = 0, squared_deviation = 0;
};

// s1 and s2 are sums of (x - shift) and its square (see Accumulator): the variance s2/n - (s1/n)^2 and the norm
// n shift^2 + 2 shift s1 + s2 in double; mean and variance by multiplying with 1/n (within an ulp of dividing;
// divisions were most of this function's time). The square roots and the zero fraction then in float, eight lanes
// an instruction instead of four (they were half of this function's time): a square root of the variance rounded
// to float is within 1.5 ulp of the double one rounded, and the zero fraction's float division is the same float
// as LibTorch's double division rounded (a double result of k/n never lies on a float's rounding midpoint unless it
// is exact), given n and the variance and squares within float range; otherwise all in double. Loops without
// branches over all kMaxLanes lanes, so that they vectorise (IEEE division and square root round the same in
// vector and scalar form).
TRAINSCOPE_SIMD_CLONES
void finish_math(const SumBatch& b, int width, double n, double centre, FinishedBatch& f) {
  const double inverse = 1.0 / n;
  double deviation = 0, squared = 0, largest = 0;
  double var[kMaxLanes], sq[kMaxLanes];
  for (int l = 0; l < kMaxLanes; ++l) {
    const double mean_shifted = b.s1[l] * inverse;
    const double v = (b.s2[l] - b.s1[l] * mean_shifted) * inverse;
    const double shift = b.shift[l];
    const double q = n * shift * shift + 2 * shift * b.s1[l] + b.s2[l];
    var[l] = v > 0.0 ? v : 0.0;
    sq[l] = q > 0.0 ? q : 0.0;
    largest = l < width && sq[l] > largest ? sq[l] : largest;  // the variance is at most the mean square
    const double mean = shift + mean_shifted;
    const double d = l < width ? mean - centre : 0.0;
    deviation += d;
    squared += d * d;
    f.mean[l] = float(mean);
    f.min[l] = float(b.mn[l]);
    f.max[l] = float(b.mx[l]);
  }
  f.deviation = deviation;
  f.squared_deviation = squared;
  if (n <= 16777216.0 && largest <= double(std::numeric_limits<float>::max())) {  // n and the sums fit floats
    const float count = float(n);
    for (int l = 0; l < kMaxLanes; ++l) {
      f.std[l] = std::sqrt(float(var[l]));
      f.norm[l] = std::sqrt(float(sq[l]));
      f.zero[l] = float(b.zero[l]) / count;
    }
    return;
  }
  for (int l = 0; l < kMaxLanes; ++l) {
    f.std[l] = float(std::sqrt(var[l]));
    f.norm[l] = float(std::sqrt(sq[l]));
    f.zero[l] = float(b.zero[l] / n);
  }
}

// Statistics of neurons first .. first + width - 1 from their sums over n elements; neurons whose sums are not
// finite are computed again exactly. `spread` gathers the neurons' spread of means, around the mean of the part's
// first neuron (`first_of_part`); reset for good once a neuron is not finite.
void finish_batch(const SumBatch& b, int width, double n, const float* x, int64_t outer, int64_t neurons, int64_t inner,
                  int64_t first, bool first_of_part, NeuronRows& out, std::optional<NeuronRows::MeanSpread>& spread) {
  if (first_of_part) {
    const double mean = double(b.shift[0]) + b.s1[0] / n;
    spread = NeuronRows::MeanSpread{std::isfinite(mean) ? mean : 0.0};
  }
  FinishedBatch f;
  finish_math(b, width, n, spread ? spread->centre : 0.0, f);
  if (spread) {
    spread->sum += f.deviation;
    spread->squares += f.squared_deviation;
  }
  const auto put = [&](int statistic, const float* lanes) {
    std::memcpy(out.row(statistic) + first, lanes, size_t(width) * sizeof(float));
  };
  put(kMean, f.mean);
  put(kStd, f.std);
  put(kMin, f.min);
  put(kMax, f.max);
  put(kNorm, f.norm);
  put(kZero, f.zero);
  std::fill_n(out.row(kNan) + first, width, 0.0f);
  std::fill_n(out.row(kInf) + first, width, 0.0f);
  for (int l = 0; l < width; ++l)
    if (!std::isfinite(b.s1[l]) || !std::isfinite(b.s2[l])) {
      out.set(size_t(first + l), exact_neuron(x, outer, neurons, inner, first + l));
      spread.reset();  // a non-finite neuron: the summary's spread is taken from the rows
    }
}

// One element per neuron (a bias, a batch of one), neurons first .. last - 1: each statistic is the element itself or
// follows from it, the same values the sums give for n = 1 (the norm sqrt(x^2) is |x| exactly). Through the column
// kernel, a bias took a call, a row and a finish for every 16 neurons. Returns whether an element is not finite:
// those neurons are the caller's to compute again.
TRAINSCOPE_SIMD_CLONES
bool single_elements(const float* x, int64_t first, int64_t last, NeuronRows& out) {
  float *mean = out.row(kMean), *std = out.row(kStd), *mn = out.row(kMin), *mx = out.row(kMax), *norm = out.row(kNorm),
        *zero = out.row(kZero), *nan = out.row(kNan), *inf = out.row(kInf);
  int nonfinite = 0;
  for (int64_t i = first; i < last; ++i) {
    const float v = x[i];
    nonfinite |= v - v != 0;  // NaN for NaN and +-Inf
    mean[i] = v;
    std[i] = 0;
    mn[i] = v;
    mx[i] = v;
    norm[i] = std::fabs(v);
    zero[i] = v == 0 ? 1.0f : 0.0f;
    nan[i] = 0;
    inf[i] = 0;
  }
  return nonfinite != 0;
}

// Neurons first .. last - 1 of a [neurons, inner] matrix, one contiguous run per neuron (a parameter's rows), into
// their columns of `out`, kMaxLanes rows finished at a time. Returns their spread of means (see
// NeuronRows::mean_spread), none for single elements.
std::optional<NeuronRows::MeanSpread> row_moments(const float* x, int64_t first, int64_t last, int64_t neurons,
                                                  int64_t inner, NeuronRows& out) {
  std::optional<NeuronRows::MeanSpread> spread;
  if (inner == 1) {
    if (single_elements(x, first, last, out))
      for (int64_t i = first; i < last; ++i)
        if (!std::isfinite(x[i])) out.set(size_t(i), exact_neuron(x, 1, neurons, 1, i));
    return spread;
  }
  SumBatch batch{};
  for (int64_t j = first; j < last; j += kMaxLanes) {
    const int width = int(std::min<int64_t>(kMaxLanes, last - j));
    accumulate_runs(x + j * inner, width, inner, batch);
    finish_batch(batch, width, double(inner), x, 1, neurons, inner, j, j == first, out, spread);
  }
  return spread;
}

}  // namespace

double host_sum_of_squares(const float* x, int64_t n) {
  const double fast = sum_of_squares_fast(x, n);
  if (std::isfinite(fast)) return fast;
  double sum = 0;  // a non-finite element, or squares beyond the float range
  for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return sum;
}

NeuronRows host_neuron_moments(const float* x, int64_t outer, int64_t neurons, int64_t inner) {
  if (neurons <= 0) return {};
  const int64_t count = outer * inner;
  NeuronRows out{size_t(neurons), double(count)};
  if (count == 0) {
    for (int s = 0; s < kStatRows; ++s) {
      const bool undefined = s == kMean || s == kStd || s == kMin || s == kMax || s == kZero;
      std::fill_n(out.row(s), neurons, undefined ? std::nanf("") : 0.0f);
    }
    return out;
  }
  if (outer == 1) {
    out.mean_spread() = row_moments(x, 0, neurons, neurons, inner, out);
    return out;
  }
  const double n = double(count);
  if (inner == 1) {
    // Neurons are columns of an [outer, neurons] matrix: kMaxLanes (then kLanes) neighbouring neurons at a time,
    // down all the rows in one call, so each lane is a whole neuron.
    SumBatch batch{};
    int64_t j = 0;
    for (; j + kMaxLanes <= neurons; j += kMaxLanes) {
      accumulate_wide(x + j, outer, neurons, &batch);
      finish_batch(batch, kMaxLanes, n, x, outer, neurons, inner, j, j == 0, out, out.mean_spread());
    }
    for (; j + kLanes <= neurons; j += kLanes) {
      accumulate_lanes(x + j, outer, neurons, &batch);
      finish_batch(batch, kLanes, n, x, outer, neurons, inner, j, j == 0, out, out.mean_spread());
    }
    if (j < neurons) {  // the last few, element by element
      const int width = int(neurons - j);
      for (int l = 0; l < width; ++l) {
        Accumulator acc;
        acc.shift = shift_of(x[j + l]);
        for (int64_t o = 0; o < outer; ++o) accumulate_one(x[o * neurons + j + l], acc);
        set_lane(batch, l, acc);
      }
      finish_batch(batch, width, n, x, outer, neurons, inner, j, j == 0, out, out.mean_spread());
    }
    return out;
  }
  // Each neuron owns `outer` runs of `inner` elements (conv activations). Reused between calls: no allocation once
  // the widest layer was seen.
  thread_local std::vector<Accumulator> acc;
  acc.assign(size_t(neurons), Accumulator{});
  for (int64_t i = 0; i < neurons; ++i) acc[size_t(i)].shift = shift_of(x[i * inner]);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < neurons; ++i) {
      Accumulator& a = acc[size_t(i)];
      accumulate_run(x + (o * neurons + i) * inner, inner, float(a.shift), a);
    }
  SumBatch batch{};
  for (int64_t first = 0; first < neurons; first += kMaxLanes) {
    const int width = int(std::min<int64_t>(kMaxLanes, neurons - first));
    for (int l = 0; l < width; ++l) set_lane(batch, l, acc[size_t(first + l)]);
    finish_batch(batch, width, n, x, outer, neurons, inner, first, first == 0, out, out.mean_spread());
  }
  return out;
}

namespace {
// Parts' spreads of means as one, around the first part's centre: each part's sums moved from its centre c to c0 by
// sum + n (c - c0) and squares + 2 (c - c0) sum + n (c - c0)^2. None when a part has none.
std::optional<NeuronRows::MeanSpread> combined(const std::vector<std::optional<NeuronRows::MeanSpread>>& parts,
                                               const std::vector<int64_t>& neurons) {
  std::optional<NeuronRows::MeanSpread> all;
  for (size_t t = 0; t < parts.size(); ++t) {
    if (neurons[t] == 0) continue;
    if (!parts[t]) return std::nullopt;
    if (!all) all = NeuronRows::MeanSpread{parts[t]->centre};
    const double d = parts[t]->centre - all->centre, n = double(neurons[t]);
    all->sum += parts[t]->sum + n * d;
    all->squares += parts[t]->squares + 2 * d * parts[t]->sum + n * d * d;
  }
  return all;
}

}  // namespace

std::pair<int64_t, int64_t> parameter_part(const ParameterRows& p, int64_t part, int64_t parts) {
  constexpr int64_t kGrain = 32768;  // at::internal::GRAIN_SIZE
  const int64_t numel = p.rows * p.inner;
  const int64_t used = numel > kGrain ? std::min(parts, (numel + kGrain - 1) / kGrain) : 1;
  if (part >= used) return {p.rows, p.rows};
  const int64_t chunk = (numel + used - 1) / used;
  const auto row_at = [&](int64_t element) { return std::min(p.rows, (element + p.inner / 2) / p.inner); };
  return {row_at(part * chunk), part == used - 1 ? p.rows : row_at((part + 1) * chunk)};
}

std::vector<NeuronRows> host_parameter_moments(const std::vector<ParameterRows>& parameters) {
  std::vector<NeuronRows> out;
  out.reserve(parameters.size());
  for (const ParameterRows& p : parameters) out.emplace_back(size_t(p.rows), double(p.inner));
  const int64_t parts = std::max(1, at::get_num_threads());
  std::vector<std::vector<std::optional<NeuronRows::MeanSpread>>> spreads(
      parameters.size(), std::vector<std::optional<NeuronRows::MeanSpread>>(size_t(parts)));
  std::vector<std::vector<int64_t>> counts(parameters.size(), std::vector<int64_t>(size_t(parts), 0));
  // One parallel region for all parameters: a part's rows go to the thread of the same number, which is the one
  // that wrote them last in the optimizer's update and the gradients' accumulation.
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      for (size_t k = 0; k < parameters.size(); ++k) {
        const ParameterRows& p = parameters[k];
        const auto [first, last] = parameter_part(p, part, parts);
        if (first >= last) continue;
        counts[k][size_t(part)] = last - first;
        spreads[k][size_t(part)] = row_moments(p.x, first, last, p.rows, p.inner, out[k]);
      }
  });
  for (size_t k = 0; k < parameters.size(); ++k) out[k].mean_spread() = combined(spreads[k], counts[k]);
  return out;
}

std::vector<double> host_sums_of_squares(const std::vector<ParameterRows>& parameters) {
  const int64_t parts = std::max(1, at::get_num_threads());
  std::vector<double> squares(parameters.size() * size_t(parts), 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      for (size_t k = 0; k < parameters.size(); ++k) {
        const ParameterRows& p = parameters[k];
        const auto [first, last] = parameter_part(p, part, parts);
        if (first < last)
          squares[k * size_t(parts) + size_t(part)] =
              host_sum_of_squares(p.x + first * p.inner, (last - first) * p.inner);
      }
  });
  std::vector<double> out(parameters.size(), 0.0);
  for (size_t k = 0; k < parameters.size(); ++k)
    for (int64_t part = 0; part < parts; ++part) out[k] += squares[k * size_t(parts) + size_t(part)];
  return out;
}

bool host_readable(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.layout() == torch::kStrided && x.numel() > 0;
}

CallStats compute_neuron_stats(const torch::Tensor& x, int64_t neuron_dim) {
  CallStats out;
  const int64_t dims = x.dim();
  const int64_t neurons = dims == 0 ? 1 : x.size(neuron_dim);
  out.count = neurons > 0 ? double(x.numel()) / double(neurons) : 0;
  if (host_readable(x)) {
    at::DisableRecordFunctionGuard no_observer;
    torch::NoGradGuard no_grad;
    // Only read: no detached copy of the tensor (an allocation and an op), no copy at all unless the strides are odd.
    const torch::Tensor c = x.is_contiguous() ? x : x.contiguous();
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < dims; ++d) {
      if (d < neuron_dim) outer *= c.size(d);
      if (d > neuron_dim) inner *= c.size(d);
    }
    out.host = host_neuron_moments(c.data_ptr<float>(), outer, neurons, inner);
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

Moments NeuronRows::at(size_t neuron) const {
  Moments m;
  m.count = count_;
  for (int s = 0; s < kStatRows; ++s) m.v[size_t(s)] = row(s)[neuron];
  return m;
}

void NeuronRows::set(size_t neuron, const Moments& m) {
  for (int s = 0; s < kStatRows; ++s) row(s)[neuron] = float(m.v[size_t(s)]);
}

void NeuronTable::add_call(const float* stats, uint32_t n, double count_per_neuron) {
  NeuronRows call(n, count_per_neuron);
  for (int s = 0; s < kStatRows; ++s) std::copy_n(stats + size_t(s) * n, n, call.row(s));  // the same layout
  add_call(std::move(call));
}

void NeuronTable::add_call(NeuronRows&& call) {
  // A layer called with a different output width (rare: a shared module on other shapes) restarts the table.
  if (rows_.empty() || rows_.size() != call.size()) {
    rows_ = std::move(call);  // the usual single call: no merge, no copy
    return;
  }
  NeuronRows merged(rows_.size(), rows_.count() + call.count());
  for (size_t i = 0; i < rows_.size(); ++i) merged.set(i, merge(rows_.at(i), call.at(i)));
  rows_ = std::move(merged);
}

namespace {
// A layer's summary from its neurons' rows, four neurons at a time in vector registers: compiled for the baseline
// alone, the same sums ran scalar with a branch per comparison.
struct RowSums {
  double sum, norm2, zeros, nans, infs, nan_extremes, mn, mx;
};
// Four floats as doubles (by reference, as splat()).
[[gnu::always_inline]] inline void load_quad(const float* p, DoubleQuad& out) {
  FloatQuad f;
  std::memcpy(&f, p, sizeof f);
  out = __builtin_convertvector(f, DoubleQuad);
}
TRAINSCOPE_SIMD_CLONES
void row_sums(const float* mean, const float* norm, const float* zero, const float* nan, const float* inf,
              const float* lo, const float* hi, size_t n, RowSums& out) {
  const DoubleQuad one = {1, 1, 1, 1}, none = {};
  DoubleQuad sum = {}, norm2 = {}, zeros = {}, nans = {}, infs = {}, extremes = {};
  DoubleQuad mn = {kInfinity, kInfinity, kInfinity, kInfinity}, mx = -mn;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    DoubleQuad m, r, z, a, f, l, h;
    load_quad(mean + i, m);
    load_quad(norm + i, r);
    load_quad(zero + i, z);
    load_quad(nan + i, a);
    load_quad(inf + i, f);
    load_quad(lo + i, l);
    load_quad(hi + i, h);
    sum += m;
    norm2 += r * r;
    zeros += z;
    nans += a;
    infs += f;
    extremes += (l != l) | (h != h) ? one : none;
    mn = l < mn ? l : mn;
    mx = h > mx ? h : mx;
  }
  double low[4], high[4];
  std::memcpy(low, &mn, sizeof low);
  std::memcpy(high, &mx, sizeof high);
  out = {sum_of(sum),
         sum_of(norm2),
         sum_of(zeros),
         sum_of(nans),
         sum_of(infs),
         sum_of(extremes),
         std::min(std::min(low[0], low[1]), std::min(low[2], low[3])),
         std::max(std::max(high[0], high[1]), std::max(high[2], high[3]))};
  for (; i < n; ++i) {
    out.sum += mean[i];
    out.norm2 += double(norm[i]) * double(norm[i]);
    out.zeros += zero[i];
    out.nans += nan[i];
    out.infs += inf[i];
    out.nan_extremes += lo[i] != lo[i] || hi[i] != hi[i] ? 1 : 0;
    out.mn = lo[i] < out.mn ? lo[i] : out.mn;
    out.mx = hi[i] > out.mx ? hi[i] : out.mx;
  }
}

// Sum over the neurons of std^2 + (mean - grand_mean)^2: n times the layer's variance.
TRAINSCOPE_SIMD_CLONES
double spread_sum(const float* mean, const float* std, double grand_mean, size_t n) {
  const DoubleQuad centre = {grand_mean, grand_mean, grand_mean, grand_mean};
  DoubleQuad acc = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    DoubleQuad m, d;
    load_quad(mean + i, m);
    load_quad(std + i, d);
    m -= centre;
    acc += d * d + m * m;
  }
  double total = sum_of(acc);
  for (; i < n; ++i) {
    const double d = std[i], m = mean[i] - grand_mean;
    total += d * d + m * m;
  }
  return total;
}

// Sum of squares of a row, in double.
TRAINSCOPE_SIMD_CLONES
double squares_sum(const float* v, size_t n) {
  DoubleQuad acc = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    DoubleQuad d;
    load_quad(v + i, d);
    acc += d * d;
  }
  double total = sum_of(acc);
  for (; i < n; ++i) total += double(v[i]) * double(v[i]);
  return total;
}

// A layer's summary from its neurons' rows: one pass for the sums and one for the spread of the neurons' variances and
// means around the mean. All neurons have the same element count, so the layer's mean, variance and zero fraction are
// plain means over the neurons. Infinite means give Inf (or NaN), a NaN or Inf element a NaN standard deviation.
format::TensorSummary layer_summary(const NeuronRows& rows) {
  format::TensorSummary s;
  const size_t n = rows.size();
  s.numel = rows.count() * double(n);
  if (n == 0 || rows.count() == 0) return s;
  const float *mean = rows.row(kMean), *std = rows.row(kStd), *lo = rows.row(kMin), *hi = rows.row(kMax),
              *norm = rows.row(kNorm), *zero = rows.row(kZero), *nan = rows.row(kNan), *inf = rows.row(kInf);
  RowSums sums;
  row_sums(mean, norm, zero, nan, inf, lo, hi, n, sums);
  const double grand_mean = sums.sum / double(n);
  double spread;
  if (const auto& kept = rows.mean_spread()) {
    // The neurons' means in double, as the kernel had them: float means lose a spread that is small beside the
    // mean (values near 1000 spread by 1e-3 gave a layer std 1.6e-4 off). The sum over (mean - grand mean)^2 from
    // sums around a centre near the means.
    spread = squares_sum(std, n) + std::max(0.0, kept->squares - kept->sum * kept->sum / double(n));
  } else {
    spread = spread_sum(mean, std, grand_mean, n);
  }
  s.mean = grand_mean;
  s.std = std::isnan(spread) ? spread : std::sqrt(spread / double(n));
  s.min = sums.nan_extremes > 0 ? std::nan("") : sums.mn;
  s.max = sums.nan_extremes > 0 ? std::nan("") : sums.mx;
  s.norm = std::sqrt(sums.norm2);
  s.zero_fraction = sums.zeros / double(n);
  s.nan_count = sums.nans;
  s.inf_count = sums.infs;
  return s;
}
}  // namespace

format::TensorSummary NeuronTable::summary() const {
  return layer_summary(rows_);
}

void NeuronTable::take(format::StatisticMask mask, format::TensorSummary& summary, std::vector<float>& values) {
  summary = layer_summary(rows_);
  if ((mask & format::kAllStatistics) == format::kAllStatistics) {
    values = std::move(rows_).take_values();
  } else {
    const size_t n = rows_.size();
    values.clear();
    for (int st = 0; st < kStatRows; ++st)
      if (mask & format::statistic_bit(format::Statistic(st)))
        values.insert(values.end(), rows_.row(st), rows_.row(st) + n);
  }
  rows_ = NeuronRows();
}

}  // namespace trainscope::detail
