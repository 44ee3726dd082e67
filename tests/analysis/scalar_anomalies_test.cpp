#include <gtest/gtest.h>
#include <trainscope/analysis/robust_stats.h>
#include <trainscope/analysis/scalar_anomalies.h>

#include <cmath>
#include <random>

namespace trainscope::analysis {
namespace {

struct Series {
  std::vector<int64_t> steps;
  std::vector<double> values;
};

Series noisy_loss(int n, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 0.01);
  Series s;
  for (int i = 0; i < n; ++i) {
    s.steps.push_back(i * 10);
    s.values.push_back(1.0 + 2.0 * std::exp(-i / 300.0) + noise(rng));
  }
  return s;
}

std::vector<ScalarAnomaly> of_kind(const std::vector<ScalarAnomaly>& all, AnomalyKind kind) {
  std::vector<ScalarAnomaly> out;
  for (const auto& a : all)
    if (a.kind == kind) out.push_back(a);
  return out;
}

TEST(RobustStats, MedianAndMadIgnoreNonFiniteValues) {
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 2, 3}), 2.5);
  EXPECT_DOUBLE_EQ(median({NAN, 5, INFINITY}), 5);
  EXPECT_TRUE(std::isnan(median({})));
  const RobustScale s = robust_scale({1, 2, 3, 4, 100});
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.sigma, 1.4826 * 1);
}

TEST(ScalarAnomalies, HealthyLossHasNone) {
  const Series s = noisy_loss(600);
  EXPECT_TRUE(find_scalar_anomalies("loss", s.steps, s.values).empty());
}

TEST(ScalarAnomalies, NonFiniteIsReportedOncePerRun) {
  Series s = noisy_loss(300);
  for (size_t i = 200; i < 220; ++i) s.values[i] = NAN;
  s.values[250] = INFINITY;
  const auto found = of_kind(find_scalar_anomalies("loss", s.steps, s.values), AnomalyKind::NonFinite);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].step, 2000);
  EXPECT_EQ(found[1].step, 2500);
  EXPECT_GE(found[0].score, 1000);
}

TEST(ScalarAnomalies, SpikeAtItsThresholdOnly) {
  ScalarAnomalyParams p;
  Series s = noisy_loss(300);
  // The robust scale of the window before step index 150, then a value just below and just above spike_z.
  const std::vector<double> window(s.values.begin() + 100, s.values.begin() + 150);
  const RobustScale scale = robust_scale(window);
  Series below = s, above = s;
  below.values[150] = scale.median + (p.spike_z - 0.05) * scale.sigma;
  above.values[150] = scale.median + (p.spike_z + 0.05) * scale.sigma;
  EXPECT_TRUE(of_kind(find_scalar_anomalies("loss", below.steps, below.values, p), AnomalyKind::Spike).empty());
  const auto spikes = of_kind(find_scalar_anomalies("loss", above.steps, above.values, p), AnomalyKind::Spike);
  ASSERT_EQ(spikes.size(), 1u);
  EXPECT_EQ(spikes[0].step, 1500);
  EXPECT_NEAR(spikes[0].score, p.spike_z + 0.05, 0.01);
}

TEST(ScalarAnomalies, LossDropsAreNotSpikesButAccuracyDropsAre) {
  Series s = noisy_loss(300);
  s.values[150] = -5;
  EXPECT_TRUE(of_kind(find_scalar_anomalies("loss", s.steps, s.values), AnomalyKind::Spike).empty());
  EXPECT_EQ(of_kind(find_scalar_anomalies("acc", s.steps, s.values), AnomalyKind::Spike).size(), 1u);
}

TEST(ScalarAnomalies, BurstOfSpikesIsOneEvent) {
  Series s = noisy_loss(300);
  for (size_t i = 150; i < 155; ++i) s.values[i] = 50 + double(i);
  const auto spikes = of_kind(find_scalar_anomalies("loss", s.steps, s.values), AnomalyKind::Spike);
  ASSERT_EQ(spikes.size(), 1u);
  EXPECT_EQ(spikes[0].step, 1500);
}

TEST(ScalarAnomalies, LevelShiftAndDivergence) {
  Series s = noisy_loss(400);
  for (size_t i = 250; i < 400; ++i) s.values[i] += 0.5;
  const auto shifts = of_kind(find_scalar_anomalies("loss", s.steps, s.values), AnomalyKind::LevelShift);
  ASSERT_EQ(shifts.size(), 1u);
  EXPECT_NEAR(double(shifts[0].step), 2500, 10);

  Series d = noisy_loss(400);
  for (size_t i = 300; i < 400; ++i) d.values[i] = d.values[299] * std::pow(1.1, double(i - 299));
  const auto div = of_kind(find_scalar_anomalies("loss", d.steps, d.values), AnomalyKind::Divergence);
  ASSERT_EQ(div.size(), 1u);
  EXPECT_GT(div[0].step, 3000);
  EXPECT_LT(div[0].step, 3400);
}

TEST(ScalarAnomalies, StallOnlyWhenTheLossStopsDecreasing) {
  std::mt19937 rng(3);
  std::normal_distribution<double> noise(0, 0.01);
  Series flat;
  for (int i = 0; i < 600; ++i) flat.steps.push_back(i), flat.values.push_back(1.5 + noise(rng));
  const auto stalls = of_kind(find_scalar_anomalies("loss", flat.steps, flat.values), AnomalyKind::Stall);
  ASSERT_EQ(stalls.size(), 1u);
  EXPECT_EQ(stalls[0].step, 0);
  EXPECT_TRUE(of_kind(find_scalar_anomalies("accuracy", flat.steps, flat.values), AnomalyKind::Stall).empty());
}

}  // namespace
}  // namespace trainscope::analysis
