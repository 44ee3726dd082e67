#include <gtest/gtest.h>
#include <trainscope/analysis/layer_graph.h>
#include <trainscope/analysis/layer_rules.h>
#include <trainscope/analysis/root_cause.h>

#include <cmath>

namespace trainscope::analysis {
namespace {

using format::Quantity;

format::RunMetadata chain(int n) {
  format::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  for (int i = 1; i <= n; ++i)
    m.layers.push_back({uint32_t(i), "l" + std::to_string(i), 0u, i % 2 ? "Linear" : "Tanh", 4, {}, {}, true});
  for (int i = 1; i < n; ++i) m.edges.push_back({uint32_t(i), uint32_t(i + 1), false});
  return m;
}

format::TensorSummary summary(double rms, double numel = 100) {
  format::TensorSummary s;
  s.std = rms;
  s.norm = rms * std::sqrt(numel);
  s.max = 3 * rms;
  s.min = -3 * rms;
  s.numel = numel;
  return s;
}

SummarySeries series(uint32_t layer, Quantity q, const std::vector<double>& rms_values) {
  SummarySeries s;
  s.layer_id = layer;
  s.quantity = q;
  for (size_t i = 0; i < rms_values.size(); ++i) {
    s.steps.push_back(int64_t(i));
    s.values.push_back(summary(rms_values[i]));
  }
  return s;
}

std::vector<RuleHit> hits_of(const std::vector<RuleHit>& all, LayerRule rule) {
  std::vector<RuleHit> out;
  for (const auto& h : all)
    if (h.rule == rule) out.push_back(h);
  return out;
}

TEST(LayerGraph, FindsRecurrentEdgesAndAForwardOrder) {
  format::RunMetadata m = chain(4);
  m.edges.push_back({4, 2, false});  // a loop back: 2 -> 3 -> 4 -> 2
  m.edges.push_back({3, 3, false});  // a layer feeding itself
  const LayerGraph g(m);
  int recurrent = 0;
  for (const auto& e : g.edges()) recurrent += e.recurrent;
  EXPECT_EQ(recurrent, 2);
  EXPECT_LT(g.forward_rank(1), g.forward_rank(2));
  EXPECT_LT(g.forward_rank(2), g.forward_rank(3));
  EXPECT_LT(g.forward_rank(3), g.forward_rank(4));
  EXPECT_EQ(g.forward_order().size(), 5u);
  EXPECT_EQ(g.leaves_under(0), (std::vector<uint32_t>{1, 2, 3, 4}));
  EXPECT_TRUE(g.is_ancestor(0, 3));
  EXPECT_FALSE(g.is_ancestor(3, 0));
}

TEST(LayerRules, VanishingGradientAtItsThreshold) {
  LayerRuleParams p;
  const LayerGraph g(chain(2));
  const auto table = SummaryTable::from_series(
      {series(1, Quantity::WeightGrad, {1.01e-7, 1.01e-7}), series(2, Quantity::WeightGrad, {0.99e-7, 0.99e-7})});
  const auto hits = hits_of(evaluate_layer_rules(g, table, nullptr, {}, p), LayerRule::VanishingGradient);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].layer_id, 2u);
  EXPECT_EQ(hits[0].steps_hit, 2u);
}

TEST(LayerRules, ExplodingGradientAtItsThreshold) {
  LayerRuleParams p;
  const LayerGraph g(chain(2));
  std::vector<double> quiet(10, 1.0), loud(10, 1.0);
  quiet.push_back(p.exploding_gradient_factor * 0.99);
  loud.push_back(p.exploding_gradient_factor * 1.01);
  const auto table = SummaryTable::from_series(
      {series(1, Quantity::ActivationGrad, quiet), series(2, Quantity::ActivationGrad, loud)});
  const auto hits = hits_of(evaluate_layer_rules(g, table, nullptr, {}, p), LayerRule::ExplodingGradient);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].layer_id, 2u);
  EXPECT_EQ(hits[0].first_step, 10);
}

TEST(LayerRules, WeightUpdateRatioAtBothThresholds) {
  LayerRuleParams p;
  const LayerGraph g(chain(3));
  LearningRate lr{{0}, {1.0}};
  // ratio = lr * |grad| / |W|: |W| has RMS 1, so the gradient RMS is the ratio.
  const auto table = SummaryTable::from_series({
      series(1, Quantity::Weight, {1, 1}),
      series(1, Quantity::WeightGrad, {p.max_update_ratio * 1.01, 1}),
      series(2, Quantity::Weight, {1, 1}),
      series(2, Quantity::WeightGrad, {p.max_update_ratio * 0.99, 1}),
      series(3, Quantity::Weight, {1, 1.0001}),
      series(3, Quantity::WeightGrad, {p.min_update_ratio * 0.99, 1}),
  });
  const auto all = evaluate_layer_rules(g, table, nullptr, lr, p);
  const auto large = hits_of(all, LayerRule::WeightUpdateTooLarge);
  ASSERT_EQ(large.size(), 1u);
  EXPECT_EQ(large[0].layer_id, 1u);
  const auto small = hits_of(all, LayerRule::WeightUpdateTooSmall);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].layer_id, 3u);
  EXPECT_TRUE(hits_of(evaluate_layer_rules(g, table, nullptr, {}, p), LayerRule::WeightUpdateTooLarge).empty())
      << "without a learning rate the ratio is unknown: no guess";
}

TEST(LayerRules, UnchangedWeightsAfterThreeSteps) {
  LayerRuleParams p;
  const LayerGraph g(chain(2));
  const auto table = SummaryTable::from_series({
      series(1, Quantity::Weight, {1, 1, 1.1, 1.1}),
      series(1, Quantity::WeightGrad, {1, 1, 1, 1}),
      series(2, Quantity::Weight, {1, 1, 1, 1}),
      series(2, Quantity::WeightGrad, {1, 1, 1, 1}),
  });
  const auto hits = hits_of(evaluate_layer_rules(g, table, nullptr, {}, p), LayerRule::UnchangedWeights);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].layer_id, 2u);
  EXPECT_EQ(hits[0].first_step, 2);
}

TEST(LayerRules, PoorInitializationAtItsThreshold) {
  LayerRuleParams p;
  const LayerGraph g(chain(3));
  const double r = std::sqrt(p.init_variance_ratio);  // std ratio whose square is the variance ratio
  const auto table =
      SummaryTable::from_series({series(1, Quantity::Activation, {1}), series(2, Quantity::Activation, {r * 0.99}),
                                 series(3, Quantity::Activation, {r * 0.99 * r * 1.01})});
  const auto hits = hits_of(evaluate_layer_rules(g, table, nullptr, {}, p), LayerRule::PoorInitialization);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].layer_id, 3u);
}

TEST(LayerRules, NonFiniteAndAllZero) {
  const LayerGraph g(chain(2));
  SummarySeries a = series(1, Quantity::Activation, {1, 1, 1});
  a.values[1].nan_count = 3;
  SummarySeries w = series(2, Quantity::Weight, {1, 1});
  w.values[1].zero_fraction = 1.0;
  const auto all = evaluate_layer_rules(g, SummaryTable::from_series({a, w}), nullptr, {}, {});
  const auto nf = hits_of(all, LayerRule::NonFinite);
  ASSERT_EQ(nf.size(), 1u);
  EXPECT_EQ(nf[0].first_step, 1);
  EXPECT_EQ(nf[0].last_step, 1);
  ASSERT_EQ(hits_of(all, LayerRule::AllZero).size(), 1u);
}

TEST(RootCause, NanIsBlamedOnTheFirstLayerInForwardOrderNotOnGradients) {
  const LayerGraph g(chain(4));
  std::vector<SummarySeries> all;
  for (uint32_t id = 1; id <= 4; ++id) {
    SummarySeries act = series(id, Quantity::Activation, std::vector<double>(50, 1.0));
    SummarySeries grad = series(id, Quantity::ActivationGrad, std::vector<double>(50, 0.01));
    for (size_t i = 40; i < 50; ++i) {
      if (id >= 2) act.values[i].nan_count = 1;  // starts in layer 2, spreads forward
      grad.values[i].nan_count = 1;              // and backward into every gradient
    }
    all.push_back(act);
    all.push_back(grad);
  }
  const auto table = SummaryTable::from_series(all);
  const auto suspects = rank_suspects(g, table, {}, 45);
  ASSERT_FALSE(suspects.empty());
  EXPECT_EQ(suspects[0].layer_id, 2u);
  EXPECT_EQ(suspects[0].quantity, Quantity::Activation);
  EXPECT_EQ(suspects[0].first_step, 40);
  EXPECT_EQ(suspects[0].rule, "non_finite");
  for (size_t i = 1; i < suspects.size(); ++i) EXPECT_LE(suspects[i].score, suspects[0].score);
}

TEST(RootCause, NanOutranksAnOlderChronicRuleHit) {
  const LayerGraph g(chain(3));
  SummarySeries act = series(3, Quantity::Activation, std::vector<double>(400, 1.0));
  for (size_t i = 300; i < 400; ++i) act.values[i].inf_count = 2;
  const RuleHit dead{LayerRule::DeadUnits, 1, Quantity::Activation, 10, 399, 39, 0.9, "dead"};
  const auto suspects = rank_suspects(g, SummaryTable::from_series({act}), {dead}, 300);
  ASSERT_EQ(suspects.size(), 2u);
  EXPECT_EQ(suspects[0].layer_id, 3u);
  EXPECT_EQ(suspects[0].rule, "non_finite");
  EXPECT_EQ(suspects[1].rule, "dead_units");
  // Without the NaN, the chronic condition is the only suspect.
  const auto stall = rank_suspects(
      g, SummaryTable::from_series({series(3, Quantity::Activation, std::vector<double>(400, 1.0))}), {dead}, 300);
  ASSERT_EQ(stall.size(), 1u);
  EXPECT_EQ(stall[0].layer_id, 1u);
}

TEST(RootCause, EarliestDepartureWinsAndNoiseDoesNot) {
  const LayerGraph g(chain(3));
  std::vector<double> steady(100, 1.0), grows(100, 1.0), later(100, 1.0);
  for (size_t i = 0; i < 100; ++i) steady[i] = 1.0 + 0.05 * std::sin(double(i));  // noise only
  for (size_t i = 60; i < 100; ++i) grows[i] = std::pow(1.5, double(i - 59));
  for (size_t i = 70; i < 100; ++i) later[i] = std::pow(1.5, double(i - 69));
  const auto table = SummaryTable::from_series(
      {series(1, Quantity::Weight, steady), series(3, Quantity::Weight, grows), series(2, Quantity::Weight, later)});
  const auto suspects = rank_suspects(g, table, {}, 90);
  ASSERT_EQ(suspects.size(), 2u);
  EXPECT_EQ(suspects[0].layer_id, 3u);
  EXPECT_EQ(suspects[0].rule, "departure");
  EXPECT_GE(suspects[0].first_step, 61);
  EXPECT_LE(suspects[0].first_step, 64);
  EXPECT_EQ(suspects[1].layer_id, 2u);
}

}  // namespace
}  // namespace trainscope::analysis
