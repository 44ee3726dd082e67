// End to end on recordings with a known failure: the top suspect is the layer where it was injected, from about
// the step it was injected.
#include <gtest/gtest.h>
#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/snapshot_window.h>

#include "synthetic_runs.h"
#include "test_support.h"

namespace trainscope::analysis {
namespace {

using testing::TempDir;

struct Analysed {
  TempDir dir{"analysis"};
  std::unique_ptr<format::RunReader> reader;
  AnomalyReport report;
  std::unique_ptr<LayerGraph> graph;
  explicit Analysed(const std::string& name) {
    testing::write_synthetic_run(name, dir / "run");
    reader = std::make_unique<format::RunReader>(dir / "run");
    report = analyze_run(*reader);
    graph = std::make_unique<LayerGraph>(reader->metadata());
  }
  const AbnormalSnapshot* first(AnomalyKind kind) const {
    for (const auto& a : report.anomalies)
      if (a.kind == kind) return &a;
    return nullptr;
  }
};

TEST(AnomalyReport, HealthyRunHasNoAnomalies) {
  Analysed a("healthy");
  EXPECT_TRUE(a.report.anomalies.empty());
  EXPECT_TRUE(a.report.rule_hits.empty());
}

TEST(AnomalyReport, NanIsTracedToTheLayerWhereItStarts) {
  Analysed a("nan_in_fc2");
  ASSERT_FALSE(a.report.anomalies.empty());
  const AbnormalSnapshot& top = a.report.anomalies[0];
  EXPECT_EQ(top.kind, AnomalyKind::NonFinite);
  EXPECT_EQ(top.step, 120);
  ASSERT_FALSE(top.suspects.empty());
  EXPECT_EQ(a.graph->name(top.suspects[0].layer_id), "fc2");
  EXPECT_EQ(top.suspects[0].quantity, format::Quantity::Activation);
  EXPECT_EQ(top.suspects[0].first_step, 120);
}

TEST(AnomalyReport, ExplodingGradientIsTracedToItsLayer) {
  Analysed a("exploding_fc1");
  const AbnormalSnapshot* spike = a.first(AnomalyKind::Spike);
  ASSERT_NE(spike, nullptr);
  EXPECT_EQ(spike->step, 230);
  ASSERT_FALSE(spike->suspects.empty());
  EXPECT_EQ(a.graph->name(spike->suspects[0].layer_id), "fc1");
  EXPECT_EQ(spike->suspects[0].quantity, format::Quantity::WeightGrad);
  EXPECT_GE(spike->suspects[0].first_step, 200);
  EXPECT_LE(spike->suspects[0].first_step, 205);
  EXPECT_EQ(a.first(AnomalyKind::Stall), nullptr) << "a rising loss is divergence, not a stall";
  EXPECT_NE(a.first(AnomalyKind::Divergence), nullptr);
}

TEST(AnomalyReport, StallIsTracedToTheDeadLayer) {
  Analysed a("dead_act1");
  const AbnormalSnapshot* stall = a.first(AnomalyKind::Stall);
  ASSERT_NE(stall, nullptr);
  ASSERT_FALSE(stall->suspects.empty());
  EXPECT_EQ(a.graph->name(stall->suspects[0].layer_id), "act1");
  EXPECT_EQ(stall->suspects[0].rule, "dead_units");
  ASSERT_EQ(a.report.rule_hits.size(), 1u);
  EXPECT_EQ(a.report.rule_hits[0].rule, LayerRule::DeadUnits);
}

TEST(SnapshotWindow, GroupsSummariseTheirLeavesAroundTheFocus) {
  Analysed a("nan_in_fc2");
  const auto w = compute_snapshot_window(*a.reader, *a.graph, 100, 10);
  const auto& fc1 = w.layers[1][format::Quantity::Activation];
  ASSERT_TRUE(fc1.present);
  EXPECT_EQ(fc1.steps.front(), 90);
  EXPECT_EQ(fc1.steps.back(), 110);
  EXPECT_FALSE(fc1.aggregated);
  const auto& root = w.layers[0][format::Quantity::Activation];
  ASSERT_TRUE(root.present);
  EXPECT_TRUE(root.aggregated);
  EXPECT_DOUBLE_EQ(root.series[0].numel, 5 * 512.0);  // five leaves
  EXPECT_EQ(root.average.nan_count, 0);
  const auto after = compute_snapshot_window(*a.reader, *a.graph, 125, 10);
  EXPECT_GT(after.layers[0][format::Quantity::Activation].average.nan_count, 0) << "NaN must never average away";
}

TEST(SnapshotWindow, CombineIsExactForPooledStatistics) {
  format::TensorSummary a, b;
  a.mean = 1, a.std = 0, a.numel = 2, a.norm = std::sqrt(2.0), a.min = 1, a.max = 1;
  b.mean = 3, b.std = 0, b.numel = 2, b.norm = std::sqrt(18.0), b.min = 3, b.max = 3, b.nan_count = 1;
  const auto c = combine_summaries({a, b});  // the values {1, 1, 3, 3}
  EXPECT_DOUBLE_EQ(c.mean, 2);
  EXPECT_DOUBLE_EQ(c.std, 1);
  EXPECT_DOUBLE_EQ(c.norm, std::sqrt(20.0));
  EXPECT_EQ(c.min, 1);
  EXPECT_EQ(c.max, 3);
  EXPECT_EQ(c.nan_count, 1);
}

}  // namespace
}  // namespace trainscope::analysis
