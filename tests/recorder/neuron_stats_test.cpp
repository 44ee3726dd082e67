// The recorder's one-pass per-neuron statistics (plain C++ over the float data) against LibTorch's own reductions,
// on random data with NaN, Inf and zeros, for the shapes a recorder meets: Linear activations [B, N] (neuron = column),
// weights [N, K] (neuron = row), Conv2d activations [B, C, H, W] (neuron = channel).
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "neuron_stats.h"

namespace trainscope::detail {
namespace {

using format::Statistic;

// Random values with exact zeros, NaN and +-Inf sprinkled in at the given rates.
torch::Tensor spiked(std::vector<int64_t> shape, double zero_rate, double nan_rate, double inf_rate, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::randn(shape) * 3 + 0.5;
  const torch::Tensor u = torch::rand(shape);
  x = x.masked_fill(u < zero_rate, 0.0);
  x = x.masked_fill((u >= zero_rate) & (u < zero_rate + nan_rate), std::nan(""));
  const torch::Tensor inf_mask = (u >= zero_rate + nan_rate) & (u < zero_rate + nan_rate + inf_rate);
  x = torch::where(inf_mask, torch::where(torch::rand(shape) < 0.5, INFINITY, -INFINITY), x);
  return x;
}

// NaN where LibTorch has NaN, the same Inf, else within `tolerance` (min and max are exact).
void expect_same(double got, double want, const std::string& what, double tolerance = 0) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what << ": got " << got << ", LibTorch NaN";
  } else if (std::isinf(want)) {
    EXPECT_EQ(got, want) << what;
  } else {
    EXPECT_NEAR(got, want, tolerance) << what;
  }
}

// Sums are taken in float over blocks of 64 values shifted by the neuron's first one, then in double: about 1e-7 of
// the neuron's scale, several times that when the first value lies far out (up to 1.1e-6 seen on random data).
double tolerance(double value, double scale) {
  return 2e-6 * (std::fabs(value) + std::fabs(scale)) + 1e-12;
}

// Reference statistics in double, computed by LibTorch's reductions on [neurons, elements].
struct Reference {
  torch::Tensor mean, std, min, max, norm, zero, nan, inf;
};
Reference reference(const torch::Tensor& x, int64_t dim) {
  const torch::Tensor t = x.to(torch::kDouble).movedim(dim, 0).reshape({x.size(dim), -1});
  Reference r;
  r.mean = t.mean(1);
  r.std = t.std(1, /*unbiased=*/false);
  r.min = std::get<0>(t.min(1));
  r.max = std::get<0>(t.max(1));
  r.norm = t.norm(2, 1);
  r.zero = t.eq(0).to(torch::kDouble).mean(1);
  r.nan = t.isnan().sum(1).to(torch::kDouble);
  r.inf = t.isinf().sum(1).to(torch::kDouble);
  return r;
}

void check(const torch::Tensor& x, int64_t dim, const std::string& name) {
  SCOPED_TRACE(name);
  CallStats stats = compute_neuron_stats(x, dim);
  ASSERT_EQ(stats.host.size(), size_t(x.size(dim))) << "CPU float32 takes the host path";
  EXPECT_FALSE(stats.device.defined());
  EXPECT_EQ(stats.count, double(x.numel() / x.size(dim)));
  const Reference r = reference(x, dim);
  // A neuron with an Inf has no finite standard deviation; LibTorch's answer there depends on the element order.
  const torch::Tensor has_inf = r.inf > 0;
  for (int64_t i = 0; i < x.size(dim); ++i) {
    const Moments m = stats.host.at(size_t(i));
    const std::string at = name + " neuron " + std::to_string(i);
    EXPECT_EQ(m.count, stats.count) << at;
    const double std = r.std[i].item<double>(), norm = r.norm[i].item<double>();
    expect_same(m.v[int(Statistic::Mean)], r.mean[i].item<double>(), at + " mean",
                tolerance(r.mean[i].item<double>(), std));
    if (has_inf[i].item<bool>())
      EXPECT_FALSE(std::isfinite(m.v[int(Statistic::Std)])) << at << " std";
    else
      expect_same(m.v[int(Statistic::Std)], std, at + " std", tolerance(std, 0));
    expect_same(m.v[int(Statistic::Min)], r.min[i].item<double>(), at + " min");
    expect_same(m.v[int(Statistic::Max)], r.max[i].item<double>(), at + " max");
    expect_same(m.v[int(Statistic::Norm)], norm, at + " norm", tolerance(norm, 0));
    // Rows hold floats, as the format does: the zero fraction is LibTorch's double, rounded once.
    EXPECT_EQ(m.v[int(Statistic::ZeroFraction)], double(float(r.zero[i].item<double>()))) << at;
    EXPECT_EQ(m.v[int(Statistic::NanCount)], r.nan[i].item<double>()) << at;
    EXPECT_EQ(m.v[int(Statistic::InfCount)], r.inf[i].item<double>()) << at;
  }
  // The layer summary (the merge of all neurons) against whole-tensor reductions.
  NeuronTable table;
  table.add_call(std::move(stats.host));
  const format::TensorSummary s = table.summary();
  const torch::Tensor all = x.to(torch::kDouble).reshape({-1});
  EXPECT_EQ(s.numel, double(x.numel()));
  const double all_std = all.std(false).item<double>(), all_norm = all.norm().item<double>();
  expect_same(s.mean, all.mean().item<double>(), "summary mean", tolerance(all.mean().item<double>(), all_std));
  if (all.isinf().any().item<bool>())
    EXPECT_FALSE(std::isfinite(s.std));
  else
    expect_same(s.std, all_std, "summary std", tolerance(all_std, 0));
  expect_same(s.min, all.min().item<double>(), "summary min");
  expect_same(s.max, all.max().item<double>(), "summary max");
  expect_same(s.norm, all_norm, "summary norm", tolerance(all_norm, 0));
  // The mean of the neurons' float zero fractions: within float rounding of the exact fraction.
  EXPECT_NEAR(s.zero_fraction, all.eq(0).to(torch::kDouble).mean().item<double>(), 1e-7);
  EXPECT_EQ(s.nan_count, all.isnan().sum().item<double>());
  EXPECT_EQ(s.inf_count, all.isinf().sum().item<double>());
}

TEST(OnePassStatistics, LinearActivationsMatchLibTorch) {
  // Widths around the kernel's lane width (8), so that full lane blocks and the scalar tail are both exercised.
  for (int64_t n : {1, 7, 8, 13, 64, 259}) {
    check(spiked({37, n}, 0.1, 0.0, 0.0, 10 + uint64_t(n)), 1, "finite [37, " + std::to_string(n) + "]");
    check(spiked({37, n}, 0.1, 0.02, 0.02, 20 + uint64_t(n)), 1, "NaN/Inf [37, " + std::to_string(n) + "]");
  }
  check(spiked({1, 19}, 0.2, 0.1, 0.1, 3), 1, "one sample");
}

TEST(OnePassStatistics, LinearWeightsMatchLibTorch) {
  for (int64_t k : {1, 5, 8, 31, 784}) {
    check(spiked({23, k}, 0.05, 0.0, 0.0, 30 + uint64_t(k)), 0, "finite [23, " + std::to_string(k) + "]");
    check(spiked({23, k}, 0.05, 0.01, 0.01, 40 + uint64_t(k)), 0, "NaN/Inf [23, " + std::to_string(k) + "]");
  }
  check(spiked({17}, 0.1, 0.1, 0.1, 5).reshape({17, 1}), 0, "bias as [N, 1]");
  // A bias is one element per neuron: every statistic follows from the element, NaN and Inf included.
  check(spiked({259}, 0.1, 0.05, 0.05, 6), 0, "bias [259]");
  check(spiked({259}, 0.1, 0.0, 0.0, 7), 0, "finite bias [259]");
}

TEST(OnePassStatistics, WideLanesTailsAndBlockBoundaries) {
  // The kernel takes 32 lanes at a time, then 8, then one by one, and goes to double every 64 rows: widths and run
  // lengths that use all three, with more than one block of rows.
  check(spiked({150, 45}, 0.1, 0.0, 0.0, 60), 1, "finite [150, 45]");
  check(spiked({150, 45}, 0.1, 0.01, 0.01, 61), 1, "NaN/Inf [150, 45]");
  for (int64_t k : {45, 2100}) {
    check(spiked({9, k}, 0.05, 0.0, 0.0, 62 + uint64_t(k)), 0, "finite [9, " + std::to_string(k) + "]");
    check(spiked({9, k}, 0.05, 0.001, 0.001, 63 + uint64_t(k)), 0, "NaN/Inf [9, " + std::to_string(k) + "]");
  }
  // A large mean with a small spread across the wide lanes and several blocks.
  torch::manual_seed(64);
  check(1000 + 1e-3 * torch::randn({200, 64}), 1, "large mean [200, 64]");
}

TEST(OnePassStatistics, MergedCallsAndSelectedRowsMatchLibTorch) {
  // A module called twice (the second call taken over by move, the first merged into it), and the rows of a subset of
  // statistics, against LibTorch on both calls' outputs together.
  const torch::Tensor a = spiked({19, 21}, 0.1, 0.0, 0.0, 70), b = spiked({33, 21}, 0.2, 0.0, 0.0, 71);
  CallStats first = compute_neuron_stats(a, 1), second = compute_neuron_stats(b, 1);
  NeuronTable table;
  table.add_call(std::move(first.host));
  table.add_call(std::move(second.host));
  const format::StatisticMask mask = format::statistic_bit(Statistic::Mean) | format::statistic_bit(Statistic::Max) |
                                     format::statistic_bit(Statistic::ZeroFraction);
  format::TensorSummary summary;
  std::vector<float> rows;
  table.take(mask, summary, rows);
  EXPECT_EQ(table.neurons(), 0u) << "taken";
  const torch::Tensor both = torch::cat({a, b}, 0);
  const Reference r = reference(both, 1);
  ASSERT_EQ(rows.size(), 3u * 21u);
  for (int64_t i = 0; i < 21; ++i) {
    EXPECT_NEAR(rows[size_t(i)], r.mean[i].item<double>(), 1e-5) << "mean " << i;
    EXPECT_EQ(rows[size_t(21 + i)], r.max[i].item<float>()) << "max " << i;
    EXPECT_NEAR(rows[size_t(42 + i)], r.zero[i].item<double>(), 1e-7) << "zero fraction " << i;
  }
  EXPECT_EQ(summary.numel, double(both.numel()));
  EXPECT_NEAR(summary.mean, both.to(torch::kDouble).mean().item<double>(), 1e-6);
  EXPECT_NEAR(summary.std, both.to(torch::kDouble).std(false).item<double>(), 1e-5);
  EXPECT_EQ(summary.max, both.max().item<double>());
  // All statistics: the rows handed over whole, the same values and summary as the selection's.
  NeuronTable whole;
  whole.add_call(std::move(compute_neuron_stats(a, 1).host));
  whole.add_call(std::move(compute_neuron_stats(b, 1).host));
  format::TensorSummary whole_summary;
  std::vector<float> all;
  whole.take(format::kAllStatistics, whole_summary, all);
  ASSERT_EQ(all.size(), size_t(format::kStatisticCount) * 21u);
  for (size_t i = 0; i < 21; ++i) {
    EXPECT_EQ(all[size_t(Statistic::Mean) * 21 + i], rows[i]) << "mean " << i;
    EXPECT_EQ(all[size_t(Statistic::Max) * 21 + i], rows[21 + i]) << "max " << i;
    EXPECT_EQ(all[size_t(Statistic::ZeroFraction) * 21 + i], rows[42 + i]) << "zero fraction " << i;
  }
  EXPECT_EQ(whole_summary.mean, summary.mean);
  EXPECT_EQ(whole_summary.std, summary.std);
}

TEST(OnePassStatistics, Conv2dActivationsMatchLibTorch) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{4, 6, 5, 5}, {3, 16, 8, 8}, {2, 3, 1, 3}, {5, 9, 7, 11}}) {
    const std::string dims = std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + "x" +
                             std::to_string(shape[2]) + "x" + std::to_string(shape[3]);
    check(spiked(shape, 0.3, 0.0, 0.0, uint64_t(shape[1])), 1, "finite conv " + dims);
    check(spiked(shape, 0.1, 0.01, 0.01, 50 + uint64_t(shape[1])), 1, "NaN/Inf conv " + dims);
  }
  // Conv weights [C_out, C_in, kh, kw]: the neuron is the output channel, dim 0.
  check(spiked({8, 3, 3, 3}, 0.05, 0.02, 0.02, 7), 0, "conv weight");
}

TEST(OnePassStatistics, RealConvOutputAndNonContiguousInput) {
  torch::manual_seed(9);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 5, 3));
  torch::NoGradGuard no_grad;
  check(torch::relu(conv(torch::randn({4, 3, 9, 9}))), 1, "relu(conv)");
  check(spiked({12, 40}, 0.1, 0.05, 0.05, 8).t(), 1, "transposed [40, 12]");
}

TEST(OnePassStatistics, LargeMeanSmallSpreadKeepsItsStandardDeviation) {
  // Values near 1000 spread by 1e-3: naive sums of squares in float would lose the spread entirely.
  torch::manual_seed(11);
  const torch::Tensor x = 1000 + 1e-3 * torch::randn({256, 10});
  const CallStats stats = compute_neuron_stats(x, 1);
  const torch::Tensor want = x.to(torch::kDouble).std(0, false);
  for (int64_t i = 0; i < 10; ++i)
    EXPECT_NEAR(stats.host.at(size_t(i)).v[int(Statistic::Std)], want[i].item<double>(), 1e-6 * want[i].item<double>());
}

TEST(OnePassStatistics, HugeFiniteValuesAreExact) {
  // Squares beyond the float range: the fast path overflows, the neuron is computed again in double.
  torch::manual_seed(40);  // LibTorch's generator starts from a different seed in every process
  torch::Tensor x = torch::randn({40, 9});
  x[3][2] = 3e30f;
  x[7][5] = -2e25f;
  check(x, 1, "huge values");
  const CallStats stats = compute_neuron_stats(x, 1);
  EXPECT_TRUE(std::isfinite(stats.host.at(2).v[int(Statistic::Std)]));
  EXPECT_EQ(stats.host.at(2).v[int(Statistic::InfCount)], 0);
  // Equal huge values: every shifted sum is 0 and fits, but the squares do not fit a float, so the norm and the
  // standard deviation are finished in double; as activations (columns) and as weight rows, among normal neurons.
  torch::Tensor same = torch::randn({40, 20});
  same.select(1, 17).fill_(2e20f);
  check(same, 1, "equal huge activations");
  check(same.t().contiguous(), 0, "equal huge weight rows");
  const CallStats equal = compute_neuron_stats(same, 1);
  EXPECT_NEAR(equal.host.at(17).v[int(Statistic::Norm)], 2e20 * std::sqrt(40.0), 1e-6 * 2e20 * std::sqrt(40.0));
  EXPECT_EQ(equal.host.at(17).v[int(Statistic::Std)], 0);
}

TEST(OnePassStatistics, AgreesWithTheDeviceReductions) {
  // The LibTorch-op path (used for CUDA tensors), on the same CPU data, gives the same numbers.
  const torch::Tensor x = spiked({29, 21}, 0.1, 0.0, 0.0, 12);
  const CallStats host = compute_neuron_stats(x, 1);
  const torch::Tensor device = neuron_statistics(x, 1);
  ASSERT_EQ(device.size(0), kStatRows);
  ASSERT_EQ(device.size(1), 21);
  for (int64_t i = 0; i < 21; ++i)
    for (int s = 0; s < kStatRows; ++s) {
      const double want = device[s][i].item<double>();
      EXPECT_NEAR(host.host.at(size_t(i)).v[size_t(s)], want, 1e-5 + 1e-5 * std::fabs(want)) << s << " " << i;
    }
}

TEST(OnePassStatistics, OtherTensorsTakeTheDeviceReductions) {
  const CallStats doubles = compute_neuron_stats(torch::randn({4, 3}, torch::kDouble), 1);
  EXPECT_TRUE(doubles.host.empty());
  ASSERT_TRUE(doubles.device.defined());
  EXPECT_EQ(doubles.device.sizes(), (std::vector<int64_t>{kStatRows, 3}));
}

// Restores LibTorch's intra-op thread count when a test is done.
struct IntraOpThreads {
  explicit IntraOpThreads(int n) : before(at::get_num_threads()) { at::set_num_threads(n); }
  ~IntraOpThreads() { at::set_num_threads(before); }
  int before;
};

TEST(ParameterStatistics, PartsAreTheRangesLibTorchsThreadsTake) {
  // Each part's rows are those that the intra-op thread of the same number wrote in an element-wise op over the
  // whole tensor (at::parallel_for over its elements with TensorIterator's grain), give or take half a row.
  for (int threads : {2, 3}) {
    IntraOpThreads guard(threads);
    for (auto [rows, inner] : {std::pair<int64_t, int64_t>{256, 784},
                               {784, 256},
                               {100, 7},
                               {40000, 1},
                               {333, 101},
                               {128, 256},
                               {3, 20000}}) {
      const int64_t numel = rows * inner;
      std::vector<std::pair<int64_t, int64_t>> taken(size_t(threads), {numel, numel});
      at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
        taken[size_t(at::get_thread_num())] = {begin, end};
      });
      const std::string at = std::to_string(rows) + "x" + std::to_string(inner) + " in " + std::to_string(threads);
      int64_t covered = 0;
      for (int t = 0; t < threads; ++t) {
        const auto [first, last] = parameter_part({nullptr, rows, inner}, t, threads);
        EXPECT_LE(std::abs(first * inner - std::min(taken[size_t(t)].first, numel)), inner / 2 + 1) << at << " " << t;
        EXPECT_LE(std::abs(last * inner - std::min(taken[size_t(t)].second, numel)), inner / 2 + 1) << at << " " << t;
        EXPECT_EQ(first, t == 0 ? 0 : covered) << at << " " << t;  // the parts tile the rows in order
        covered = std::max(covered, last);
      }
      EXPECT_EQ(covered, rows) << at;
    }
  }
}

TEST(ParameterStatistics, SplitBetweenThreadsAsInOneCall) {
  // The parameters' statistics computed in parts on two threads: the same rows as one call over each matrix, and a
  // layer summary as close as the rounding of its sums; a NaN in the second part only.
  IntraOpThreads guard(2);
  std::vector<torch::Tensor> params = {spiked({256, 300}, 0.01, 0.0, 0.0, 80), spiked({40000}, 0.1, 0.0, 0.0, 81),
                                       spiked({64, 9}, 0.1, 0.0, 0.0, 82), spiked({300, 200}, 0.0, 0.0, 0.0, 83)};
  params.push_back(0.5 + 1e-3 * params[0]);  // a spread of means small beside the mean
  params[3][250][3] = std::nan("");
  std::vector<ParameterRows> rows;
  for (const auto& p : params) rows.push_back({p.data_ptr<float>(), p.size(0), p.numel() / p.size(0)});
  std::vector<NeuronRows> parts = host_parameter_moments(rows);
  ASSERT_EQ(parts.size(), params.size());
  const std::vector<double> squares = host_sums_of_squares(rows);
  ASSERT_EQ(squares.size(), params.size());
  for (size_t k = 0; k < params.size(); ++k) {
    const double want = host_sum_of_squares(rows[k].x, params[k].numel());
    expect_same(squares[k], want, "squares " + std::to_string(k), 1e-6 * want);  // float blocks, split elsewhere
  }
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string at = "parameter " + std::to_string(k);
    NeuronRows whole = host_neuron_moments(rows[k].x, 1, rows[k].rows, rows[k].inner);
    ASSERT_EQ(parts[k].size(), whole.size()) << at;
    EXPECT_EQ(parts[k].count(), whole.count()) << at;
    for (int s = 0; s < kStatRows; ++s)
      for (size_t i = 0; i < whole.size(); ++i)
        if (!std::isnan(whole.row(s)[i]) || !std::isnan(parts[k].row(s)[i])) {
          EXPECT_EQ(parts[k].row(s)[i], whole.row(s)[i]) << at << " statistic " << s << " neuron " << i;
        }
    EXPECT_EQ(parts[k].mean_spread().has_value(), whole.mean_spread().has_value()) << at;
    NeuronTable split, one;
    split.add_call(std::move(parts[k]));
    one.add_call(std::move(whole));
    const format::TensorSummary a = split.summary(), b = one.summary();
    expect_same(a.mean, b.mean, at + " mean");
    expect_same(a.std, b.std, at + " std", 1e-12 * b.std);
    expect_same(a.min, b.min, at + " min");
    expect_same(a.norm, b.norm, at + " norm");
    const double want = params[k].to(torch::kDouble).std(false).item<double>();
    if (k != 3) {
      EXPECT_NEAR(a.std, want, 1e-6 * want) << at;
    }
  }
}

TEST(OnePassStatistics, SumOfSquares) {
  torch::manual_seed(2);
  for (int64_t n : {0, 1, 7, 8, 9, 1000}) {
    const torch::Tensor x = torch::randn({n});
    const double want = x.to(torch::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(host_sum_of_squares(x.data_ptr<float>(), n), want, 1e-12 + 1e-6 * want);
  }
  torch::Tensor big = torch::randn({5000});
  big[1234] = 1e25f;  // its square is beyond the float range
  EXPECT_NEAR(host_sum_of_squares(big.data_ptr<float>(), 5000), 1e50, 1e44);
  big[17] = std::nan("");
  EXPECT_TRUE(std::isnan(host_sum_of_squares(big.data_ptr<float>(), 5000)));
}

}  // namespace
}  // namespace trainscope::detail
