// Rules that flag a layer whose training dynamics look wrong. Defaults follow SageMaker Debugger's built-in rules
// where an equivalent exists (see ../shared/docs/PEERS.md), adapted to what the recorder stores; every threshold is
// a named, documented, overridable parameter.
#pragma once

#include <trainscope/analysis/layer_graph.h>
#include <trainscope/analysis/summary_table.h>

#include <memory>
#include <string>
#include <vector>

namespace trainscope::analysis {

enum class LayerRule {
  NonFinite,             // NaN or Inf in any recorded quantity of the layer
  VanishingGradient,     // gradient RMS below vanishing_gradient_rms
  ExplodingGradient,     // gradient RMS above exploding_gradient_factor x its own recent median
  DeadUnits,             // >= dead_layer_fraction of the units are zero on >= dead_unit_zero_fraction of the inputs
  SaturatedActivation,   // >= saturated_layer_fraction of a tanh/sigmoid layer's units sit at the asymptotes
  PoorInitialization,    // activation variance ratio to its only input layer beyond init_variance_ratio at start
  WeightUpdateTooLarge,  // |dW|/|W| above max_update_ratio
  WeightUpdateTooSmall,  // |dW|/|W| below min_update_ratio while gradients flow
  AllZero,               // every element zero (activations or weights)
  UnchangedWeights,      // weight statistics identical for unchanged_steps recorded steps while gradients are non-zero
};
const char* layer_rule_name(LayerRule rule);

struct LayerRuleParams {
  double vanishing_gradient_rms = 1e-7;    // smdebug VanishingGradient: mean |grad| < 1e-7 (RMS >= mean |grad|)
  double exploding_gradient_factor = 100;  // vs the median of the layer's own gradient RMS at earlier steps
  size_t exploding_min_history = 5;        // recorded steps before the rule can fire
  size_t exploding_history = 50;           // the median is taken over at most this many recorded steps before
  double dead_unit_zero_fraction = 0.99;   // smdebug DeadRelu: a unit inactive on >= 99% of inputs...
  double dead_layer_fraction = 0.5;        // ...flagged when >= 50% of the layer's units are dead
  double tanh_saturated_output = 0.995;    // |mean tanh output| of a unit beyond this (its input beyond about +-3)
  double sigmoid_saturated_output = 1e-3;  // mean sigmoid output below this or above 1 - this
  double saturated_layer_fraction = 0.5;
  double init_variance_ratio = 10;          // smdebug PoorWeightInitialization: activation variance ratio > 10
  double max_update_ratio = 10;             // smdebug WeightUpdateRatio: > 10 ...
  double min_update_ratio = 1e-8;           // ... or < 1e-8
  size_t unchanged_steps = 3;               // smdebug UnchangedTensor: 3 steps
  std::string learning_rate_scalar = "lr";  // |dW| is estimated as lr * |grad W| when this scalar is recorded
};

struct RuleHit {
  LayerRule rule = LayerRule::NonFinite;
  uint32_t layer_id = 0;
  format::Quantity quantity = format::Quantity::Activation;
  int64_t first_step = 0, last_step = 0;
  size_t steps_hit = 0;
  double score = 0;  // severity in [0, 1]
  std::string evidence;
};

// The learning rate per step, if recorded, for the update-ratio rules.
struct LearningRate {
  std::vector<int64_t> steps;
  std::vector<double> values;
  double at(int64_t step) const;  // the last value at or before `step`; NaN if none
};

// The learning rate as recorded in the scalar `name` (empty if it was not recorded).
LearningRate read_learning_rate(format::RunReader& reader, const std::string& name = "lr");

// Applies every rule to every layer. Reads per-neuron data only for the few layers the summaries point at
// (dead units, saturation).
std::vector<RuleHit> evaluate_layer_rules(const LayerGraph& graph, const SummaryTable& table, format::RunReader* reader,
                                          const LearningRate& lr, const LayerRuleParams& params = {});

// The same rules in one pass over a run's summary chunks (RunReader::for_each_summary_chunk), without a
// SummaryTable of the whole run: the same hits, in the same order, as evaluate_layer_rules on the table of the
// same records. That needs the chunks in increasing, non-overlapping step ranges, each sorted by (layer, quantity,
// step), as the writer makes them; add() returns false at the first chunk that is not, and the stream is then of no
// further use (build the table instead).
class LayerRuleStream {
 public:
  LayerRuleStream(const LayerGraph& graph, LearningRate lr, const LayerRuleParams& params = {});
  ~LayerRuleStream();
  LayerRuleStream(const LayerRuleStream&) = delete;
  LayerRuleStream& operator=(const LayerRuleStream&) = delete;

  bool add(const format::SummaryColumns& chunk);
  // After the last chunk; `reader` is for the rules that read per-neuron data (none when nullptr).
  std::vector<RuleHit> finish(format::RunReader* reader);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainscope::analysis
