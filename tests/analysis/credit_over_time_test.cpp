// CreditAssignment::over_time on a recording written with the format writer: the first hop's contributions w·a of
// each followed source neuron at every step that has the weights, in the window, and nothing invented elsewhere.
#include <gtest/gtest.h>
#include <trainscope/analysis/credit_assignment.h>
#include <trainscope/format/run_writer.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "synthetic_runs.h"
#include "test_support.h"

namespace {

namespace f = trainscope::format;
using trainscope::analysis::CreditAssignment;
using trainscope::analysis::CreditDirection;

using trainscope::testing::credit_run_activation;
using trainscope::testing::credit_run_weight;
using trainscope::testing::write_credit_run;

TEST(CreditOverTime, FollowsTheFocusStepsStrongestInputsAcrossTheWindow) {
  trainscope::testing::TempDir tmp;
  write_credit_run(tmp.path() / "run");
  f::RunReader reader(tmp.path() / "run");
  CreditAssignment credit(reader);
  const uint32_t neuron = 1;
  trainscope::analysis::CreditOptions options;
  options.top_k = 3;
  const auto over = credit.over_time(10, 2, neuron, CreditDirection::Forward, 10, 20, options);
  EXPECT_EQ(over.source_layer, 1u);  // fc1
  // Steps with fc2's weights in [0, 30]: 30 has none, so it is not a column.
  EXPECT_EQ(over.steps, (std::vector<int64_t>{0, 10, 20}));
  // At step 10 the contributions of inputs 0..3 are 4 (j - 1.5) * 0.75 (j + 1)² = -4.5, -6, 13.5, 72: the top 3 by
  // magnitude are 3, 2, 1.
  EXPECT_EQ(over.neurons, (std::vector<uint32_t>{3, 2, 1}));
  ASSERT_EQ(over.values.size(), 3u);
  for (size_t k = 0; k < over.neurons.size(); ++k) {
    ASSERT_EQ(over.values[k].size(), over.steps.size());
    for (size_t c = 0; c < over.steps.size(); ++c) {
      const int64_t t = over.steps[c];
      const int j = int(over.neurons[k]);
      EXPECT_NEAR(over.values[k][c], double(credit_run_weight(t, int(neuron), j)) * credit_run_activation(t, j), 1e-4)
          << "neuron " << j << " at step " << t;
    }
  }
}

TEST(CreditOverTime, AWindowWithoutWeightsHasOnlyTheFocusAndSaysWhy) {
  trainscope::testing::TempDir tmp;
  write_credit_run(tmp.path() / "run");
  f::RunReader reader(tmp.path() / "run");
  CreditAssignment credit(reader);
  // Step 30 has activations but no weights of fc2: the hop falls back to the nearest weights or reports it; either
  // way no column is made up for steps outside the recorded ones.
  const auto over = credit.over_time(20, 2, 0, CreditDirection::Forward, 0, 0);
  EXPECT_EQ(over.steps, (std::vector<int64_t>{20}));
  for (const auto& row : over.values) ASSERT_EQ(row.size(), 1u);
  // An unknown neuron is an error in words, not a crash.
  const auto bad = credit.over_time(10, 2, 99, CreditDirection::Forward, 10, 10);
  EXPECT_TRUE(bad.steps.empty());
  EXPECT_FALSE(bad.messages.empty());
}

}  // namespace
