// CreditAssignment::over_time on a recording written with the format writer: the first hop's contributions w·a of
// each followed source neuron at every step that has the weights, in the window, and nothing invented elsewhere.
#include <gtest/gtest.h>
#include <trainscope/analysis/credit_assignment.h>
#include <trainscope/format/run_writer.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "test_support.h"

namespace {

namespace f = trainscope::format;
using trainscope::analysis::CreditAssignment;
using trainscope::analysis::CreditDirection;

// fc1 (4 neurons) -> fc2 (3 neurons). fc2's weights are recorded at steps 0, 10, 20 (not 30); fc1's per-neuron
// activation means at 0, 10, 20, 30. Weight w_t[i][j] = (i + 1) * (j - 1.5) * (1 + t / 10), mean a_t[j] = (j + 1)² (1 -
// t/40).
float weight(int64_t t, int i, int j) {
  return float((i + 1) * (j - 1.5) * (1.0 + double(t) / 10.0));
}
float mean_activation(int64_t t, int j) {
  return float((j + 1) * (j + 1) * (1.0 - double(t) / 40.0));
}

void write_run(const std::filesystem::path& dir) {
  f::RunMetadata m;
  m.header.model_name = "TwoLinear";
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  m.layers.push_back({1, "fc1", 0u, "Linear", 4, {4}, {{"weight", {4, 2}}, {"bias", {4}}}, true});
  m.layers.push_back({2, "fc2", 0u, "Linear", 3, {3}, {{"weight", {3, 4}}, {"bias", {3}}}, true});
  m.edges.push_back({1, 2, false});
  f::RunWriter writer(dir, m);
  for (int64_t t : {0, 10, 20, 30}) {
    f::Snapshot s;
    s.step = t;
    s.scalars = {{"loss", 1.0}};
    f::LayerQuantityRecord a;
    a.layer_id = 1;
    a.quantity = f::Quantity::Activation;
    a.summary.numel = 4;
    a.neuron_stats = f::statistic_bit(f::Statistic::Mean);
    a.neuron_count = 4;
    for (int j = 0; j < 4; ++j) a.neuron_values.push_back(mean_activation(t, j));
    s.layers.push_back(a);
    writer.append(std::move(s));
    if (t == 30) continue;
    f::FullTensor w;
    w.layer_id = 2;
    w.quantity = f::Quantity::Weight;
    w.step = t;
    w.shape = {3, 4};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) w.values.push_back(weight(t, i, j));
    writer.append(std::move(w));
  }
  writer.close();
}

TEST(CreditOverTime, FollowsTheFocusStepsStrongestInputsAcrossTheWindow) {
  trainscope::testing::TempDir tmp;
  write_run(tmp.path() / "run");
  f::RunReader reader(tmp.path() / "run");
  CreditAssignment credit(reader);
  const uint32_t neuron = 1;
  trainscope::analysis::CreditOptions options;
  options.top_k = 3;
  const auto over = credit.over_time(10, 2, neuron, CreditDirection::Forward, 10, 20, options);
  EXPECT_EQ(over.source_layer, 1u);
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
      EXPECT_NEAR(over.values[k][c], double(weight(t, int(neuron), j)) * mean_activation(t, j), 1e-4)
          << "neuron " << j << " at step " << t;
    }
  }
}

TEST(CreditOverTime, AWindowWithoutWeightsHasOnlyTheFocusAndSaysWhy) {
  trainscope::testing::TempDir tmp;
  write_run(tmp.path() / "run");
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
