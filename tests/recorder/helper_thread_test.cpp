// The recorder's second thread: every chunk runs exactly once, the helper really takes some of them, and parameter
// statistics split into ranges of neurons equal the single-call statistics bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "helper_thread.h"
#include "neuron_stats.h"

namespace trainscope::detail {
namespace {

TEST(HelperThread, RunsEveryChunkOnceInEveryRun) {
  HelperThread helper;
  for (size_t count : {size_t(0), size_t(1), size_t(2), size_t(7), size_t(64)}) {
    for (int run = 0; run < 200; ++run) {  // back-to-back runs: a helper waking late must not touch the next one
      std::vector<std::atomic<int>> calls(count);
      helper.run(count, [&](size_t i) { calls[i].fetch_add(1); });
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(calls[i].load(), 1) << "chunk " << i << " of " << count;
    }
  }
}

TEST(HelperThread, TheHelperTakesChunksWhenThereIsASecondCore) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "one core: everything runs on the caller";
  HelperThread helper;
  const auto caller = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  for (int run = 0; run < 20 && elsewhere == 0; ++run)
    helper.run(16, [&](size_t) {
      if (std::this_thread::get_id() != caller) elsewhere.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  EXPECT_GT(elsewhere.load(), 0);
  EXPECT_EQ(helper.helper_chunks(), uint64_t(elsewhere.load()));
}

TEST(HelperThread, ATaskThatThrowsReachesTheCallerAfterTheOthersRan) {
  HelperThread helper;
  for (size_t bad : {size_t(0), size_t(5), size_t(31)}) {  // whichever thread happens to run it
    std::vector<std::atomic<int>> calls(32);
    EXPECT_THROW(helper.run(32,
                            [&](size_t i) {
                              calls[i].fetch_add(1);
                              if (i == bad) throw std::runtime_error("chunk failed");
                            }),
                 std::runtime_error);
    for (size_t i = 0; i < calls.size(); ++i) EXPECT_EQ(calls[i].load(), 1) << "chunk " << i;
    // The next run starts clean: no error left over from this one.
    std::atomic<int> ran{0};
    EXPECT_NO_THROW(helper.run(8, [&](size_t) { ran.fetch_add(1); }));
    EXPECT_EQ(ran.load(), 8);
  }
}

// Random values with zeros, NaN and Inf, as the statistics tests use.
torch::Tensor spiked(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::randn(shape) * 2 - 0.3;
  const torch::Tensor u = torch::rand(shape);
  x = x.masked_fill(u < 0.05, 0.0)
          .masked_fill(u > 0.995, std::nan(""))
          .masked_fill((u > 0.99) & (u <= 0.995), INFINITY);
  return x;
}

void expect_identical(const MomentsVector& got, const MomentsVector& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].count, want[i].count) << "neuron " << i;
    for (int s = 0; s < kStatRows; ++s) {
      const double a = got[i].v[size_t(s)], b = want[i].v[size_t(s)];
      EXPECT_TRUE((std::isnan(a) && std::isnan(b)) || a == b)
          << "neuron " << i << " statistic " << s << ": " << a << " vs " << b;
    }
  }
}

TEST(SplitParameterStatistics, RangesOnTwoThreadsEqualOneCall) {
  HelperThread helper;
  // A weight matrix cut into ranges of a few rows, a bias cut into ranges of neurons, a conv kernel [C, I, kH, kW],
  // and ranges smaller than one row (one neuron each).
  const std::vector<std::pair<torch::Tensor, int64_t>> cases = {
      {spiked({300, 784}, 1), 5000}, {spiked({257}, 2), 40}, {spiked({16, 3, 5, 5}, 3), 100}, {spiked({9, 64}, 4), 10}};
  for (const auto& [x, floats] : cases) {
    SCOPED_TRACE(testing::PrintToString(x.sizes()));
    CallStats split;
    std::vector<NeuronRange> ranges;
    ASSERT_TRUE(split_host_stats(x, floats, split, ranges));
    EXPECT_GT(ranges.size(), 1u);
    helper.run(ranges.size(), [&](size_t i) { compute_range(ranges[i]); });
    const CallStats whole = compute_neuron_stats(x, 0);
    EXPECT_EQ(split.count, whole.count);
    expect_identical(split.host, whole.host);
  }
}

TEST(SplitParameterStatistics, DeclinesWhatTheHostKernelDoesNotRead) {
  CallStats stats;
  std::vector<NeuronRange> ranges;
  EXPECT_FALSE(split_host_stats(torch::randn({8, 4}).t(), 16, stats, ranges)) << "not contiguous";
  EXPECT_FALSE(split_host_stats(torch::randn({8, 4}, torch::kDouble), 16, stats, ranges)) << "not float32";
  EXPECT_FALSE(split_host_stats(torch::randn({}), 16, stats, ranges)) << "a scalar parameter";
  EXPECT_FALSE(split_host_stats(torch::randn({0, 4}), 16, stats, ranges)) << "empty";
  EXPECT_TRUE(ranges.empty());
}

}  // namespace
}  // namespace trainscope::detail
