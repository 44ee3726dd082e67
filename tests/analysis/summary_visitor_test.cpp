// RunReader::for_each_summary hands over exactly what read_all_summaries copies, in the same order, and says which
// records carry per-neuron statistics; SummaryTable is built from it.
#include <gtest/gtest.h>
#include <trainscope/analysis/summary_table.h>
#include <trainscope/format/run_reader.h>

#include "synthetic_runs.h"
#include "test_support.h"

namespace {

namespace f = trainscope::format;

TEST(SummaryVisitor, SameRecordsAsTheCopyingReadAndTheNeuronStatsFlag) {
  trainscope::testing::TempDir tmp;
  trainscope::testing::write_synthetic_run("dead_act1", tmp.path() / "run");
  f::RunReader reader(tmp.path() / "run");
  std::vector<int64_t> steps;
  const auto records = reader.read_all_summaries(100, 250, &steps);
  ASSERT_FALSE(records.empty());
  size_t i = 0, with_neurons = 0;
  reader.for_each_summary(
      100, 250, [&](int64_t step, uint32_t layer, f::Quantity q, const f::TensorSummary& s, bool has_neuron_stats) {
        ASSERT_LT(i, records.size());
        EXPECT_EQ(step, steps[i]);
        EXPECT_EQ(layer, records[i].layer_id);
        EXPECT_EQ(q, records[i].quantity);
        EXPECT_EQ(s.mean, records[i].summary.mean);
        EXPECT_EQ(s.numel, records[i].summary.numel);
        // The synthetic runs record per-neuron statistics of activations every 10 steps.
        EXPECT_EQ(has_neuron_stats, q == f::Quantity::Activation && step % 10 == 0) << step;
        with_neurons += has_neuron_stats;
        ++i;
      });
  EXPECT_EQ(i, records.size());
  EXPECT_GT(with_neurons, 0u);

  const auto table = trainscope::analysis::SummaryTable::load(reader, 100, 250);
  EXPECT_EQ(table.steps().front(), 100);
  EXPECT_EQ(table.steps().back(), 250);
  for (const auto& series : table.series()) {
    EXPECT_TRUE(std::is_sorted(series.steps.begin(), series.steps.end()));
    ASSERT_EQ(series.has_neuron_stats.size(), series.steps.size());
  }
}

}  // namespace
