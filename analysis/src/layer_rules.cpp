#include <trainscope/analysis/layer_rules.h>
#include <trainscope/analysis/robust_stats.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <tuple>

namespace trainscope::analysis {
namespace {

using format::Quantity;
using format::TensorSummary;

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_gradient(Quantity q) {
  return q == Quantity::ActivationGrad || q == Quantity::WeightGrad || q == Quantity::BiasGrad;
}

// Collects per-step hits of one rule on one series into runs of consecutive recorded steps.
class HitCollector {
 public:
  HitCollector(std::vector<RuleHit>& out, LayerRule rule, uint32_t layer, Quantity q)
      : out_(out), rule_(rule), layer_(layer), q_(q) {}
  ~HitCollector() { close(); }
  void hit(int64_t step, double score, const std::string& evidence) {
    if (!open_) {
      current_ = {rule_, layer_, q_, step, step, 0, 0, evidence};
      open_ = true;
    }
    current_.last_step = step;
    ++current_.steps_hit;
    if (score > current_.score) current_.score = score;
  }
  void miss() { close(); }

 private:
  void close() {
    if (open_) out_.push_back(current_);
    open_ = false;
  }
  std::vector<RuleHit>& out_;
  LayerRule rule_;
  uint32_t layer_;
  Quantity q_;
  RuleHit current_;
  bool open_ = false;
};

void rule_non_finite(const SummarySeries& s, std::vector<RuleHit>& out) {
  HitCollector c(out, LayerRule::NonFinite, s.layer_id, s.quantity);
  for (size_t i = 0; i < s.steps.size(); ++i) {
    const TensorSummary& v = s.values[i];
    if (v.nan_count > 0 || v.inf_count > 0)
      c.hit(s.steps[i], 1.0,
            fmt("%.0f NaN and %.0f Inf values of %.0f", v.nan_count, v.inf_count, v.numel) + " in " +
                std::string(format::quantity_name(s.quantity)) + " from step " + std::to_string(s.steps[i]));
    else
      c.miss();
  }
}

void rule_gradients(const SummarySeries& s, const LayerRuleParams& p, std::vector<RuleHit>& out) {
  HitCollector vanishing(out, LayerRule::VanishingGradient, s.layer_id, s.quantity);
  HitCollector exploding(out, LayerRule::ExplodingGradient, s.layer_id, s.quantity);
  std::vector<double> history;
  for (size_t i = 0; i < s.steps.size(); ++i) {
    const TensorSummary& v = s.values[i];
    if (!v.finite() || v.numel <= 0) {
      vanishing.miss();
      exploding.miss();
      continue;
    }
    const double r = rms(v);
    if (r < p.vanishing_gradient_rms)
      vanishing.hit(
          s.steps[i], std::min(1.0, std::log10(p.vanishing_gradient_rms / std::max(r, 1e-45)) / 10 + 0.5),
          std::string(format::quantity_name(s.quantity)) + fmt(" RMS %.3g below %.3g", r, p.vanishing_gradient_rms));
    else
      vanishing.miss();
    if (history.size() >= p.exploding_min_history) {
      const size_t from = history.size() > p.exploding_history ? history.size() - p.exploding_history : 0;
      const double m = median(std::vector<double>(history.begin() + ptrdiff_t(from), history.end()));
      if (m > 0 && r > p.exploding_gradient_factor * m)
        exploding.hit(s.steps[i], std::min(1.0, 0.5 + std::log10(r / m) / 10),
                      std::string(format::quantity_name(s.quantity)) +
                          fmt(" RMS %.3g is %.0fx its median %.3g over the recorded steps before", r, r / m, m));
      else
        exploding.miss();
    }
    history.push_back(r);
  }
}

void rule_all_zero(const SummarySeries& s, std::vector<RuleHit>& out) {
  HitCollector c(out, LayerRule::AllZero, s.layer_id, s.quantity);
  for (size_t i = 0; i < s.steps.size(); ++i) {
    if (s.values[i].numel > 0 && s.values[i].zero_fraction >= 1.0)
      c.hit(s.steps[i], 0.8, std::string(format::quantity_name(s.quantity)) + " is all zero");
    else
      c.miss();
  }
}

void rule_weight_updates(const SummarySeries& weight, const SummarySeries* grad, const LearningRate& lr,
                         const LayerRuleParams& p, std::vector<RuleHit>& out) {
  HitCollector large(out, LayerRule::WeightUpdateTooLarge, weight.layer_id, Quantity::Weight);
  HitCollector small(out, LayerRule::WeightUpdateTooSmall, weight.layer_id, Quantity::Weight);
  HitCollector unchanged(out, LayerRule::UnchangedWeights, weight.layer_id, Quantity::Weight);
  size_t same = 0;
  for (size_t i = 0; i < weight.steps.size(); ++i) {
    const int64_t step = weight.steps[i];
    const TensorSummary& w = weight.values[i];
    const ptrdiff_t gi = grad ? grad->index_at_or_before(step) : -1;
    const bool grad_here = gi >= 0 && grad->steps[size_t(gi)] == step;
    const double grad_norm = grad_here ? grad->values[size_t(gi)].norm : NAN;
    const double rate = lr.at(step);
    if (grad_here && std::isfinite(rate) && std::isfinite(grad_norm) && w.norm > 0 && std::isfinite(w.norm)) {
      const double ratio = rate * grad_norm / w.norm;
      if (ratio > p.max_update_ratio)
        large.hit(step, std::min(1.0, 0.5 + std::log10(ratio / p.max_update_ratio) / 4),
                  fmt("update ratio lr*|grad W|/|W| = %.3g above %.3g", ratio, p.max_update_ratio));
      else
        large.miss();
      if (ratio < p.min_update_ratio && grad_norm > 0)
        small.hit(step, 0.5, fmt("update ratio lr*|grad W|/|W| = %.3g below %.3g", ratio, p.min_update_ratio));
      else
        small.miss();
    }
    if (i > 0) {
      const TensorSummary& prev = weight.values[i - 1];
      const bool identical = w.mean == prev.mean && w.std == prev.std && w.min == prev.min && w.max == prev.max &&
                             w.norm == prev.norm && w.numel > 0;
      same = identical ? same + 1 : 0;
      if (same + 1 >= p.unchanged_steps && grad_here && grad_norm > 0 && std::isfinite(grad_norm))
        unchanged.hit(step, 0.6,
                      "weights unchanged for " + std::to_string(same + 1) + " recorded steps although gradients flow");
      else
        unchanged.miss();
    }
  }
}

void rule_dead_and_saturated(const LayerGraph& graph, const SummarySeries& act, format::RunReader* reader,
                             const LayerRuleParams& p, std::vector<RuleHit>& out) {
  if (!reader) return;
  const std::string kind = lower(graph.layer(act.layer_id).kind);
  const bool tanh = kind.find("tanh") != std::string::npos;
  const bool sigmoid = kind.find("sigmoid") != std::string::npos;
  // Dead units need many zeros in the layer: the summary's zero fraction is a cheap filter before per-neuron reads.
  bool maybe_dead = false;
  for (const auto& v : act.values) maybe_dead |= v.zero_fraction >= p.dead_layer_fraction * p.dead_unit_zero_fraction;
  if (maybe_dead) {
    if (auto zeros = reader->read_neuron_series(act.layer_id, Quantity::Activation, format::Statistic::ZeroFraction)) {
      HitCollector c(out, LayerRule::DeadUnits, act.layer_id, Quantity::Activation);
      for (size_t r = 0; r < zeros->steps.size(); ++r) {
        size_t dead = 0;
        for (uint32_t n = 0; n < zeros->neuron_count; ++n)
          dead += zeros->values[r * zeros->neuron_count + n] >= p.dead_unit_zero_fraction;
        const double fraction = zeros->neuron_count ? double(dead) / zeros->neuron_count : 0;
        if (fraction >= p.dead_layer_fraction)
          c.hit(zeros->steps[r], std::min(1.0, fraction),
                fmt("%.0f of %.0f units (%.0f%%) are zero on at least ", double(dead), double(zeros->neuron_count),
                    100 * fraction) +
                    fmt("%.0f%% of the inputs", 100 * p.dead_unit_zero_fraction));
        else
          c.miss();
      }
    }
  }
  if (!tanh && !sigmoid) return;
  auto means = reader->read_neuron_series(act.layer_id, Quantity::Activation, format::Statistic::Mean);
  if (!means) return;
  HitCollector c(out, LayerRule::SaturatedActivation, act.layer_id, Quantity::Activation);
  for (size_t r = 0; r < means->steps.size(); ++r) {
    size_t saturated = 0;
    for (uint32_t n = 0; n < means->neuron_count; ++n) {
      const double m = means->values[r * means->neuron_count + n];
      saturated += tanh ? std::abs(m) >= p.tanh_saturated_output
                        : (m <= p.sigmoid_saturated_output || m >= 1 - p.sigmoid_saturated_output);
    }
    const double fraction = means->neuron_count ? double(saturated) / means->neuron_count : 0;
    if (fraction >= p.saturated_layer_fraction)
      c.hit(
          means->steps[r], std::min(1.0, fraction),
          fmt("%.0f of %.0f units (%.0f%%) saturated", double(saturated), double(means->neuron_count), 100 * fraction) +
              (tanh ? " (|mean tanh output| near 1)" : " (mean sigmoid output near 0 or 1)"));
    else
      c.miss();
  }
}

void rule_initialization(const LayerGraph& graph, const SummaryTable& table, const LayerRuleParams& p,
                         std::vector<RuleHit>& out) {
  for (const GraphEdge& e : graph.edges()) {
    // Only a layer fed by exactly one layer: with several inputs (a VAE's decoder fed by mu and logvar through the
    // sampling) the variance of any one of them says little about the layer's own input.
    if (e.recurrent || graph.inputs(e.to).size() != 1) continue;
    const SummarySeries* from = table.find(e.from, Quantity::Activation);
    const SummarySeries* to = table.find(e.to, Quantity::Activation);
    if (!from || !to || from->steps.empty() || to->steps.empty()) continue;
    if (from->steps.front() != to->steps.front()) continue;
    const double vf = from->values.front().std * from->values.front().std;
    const double vt = to->values.front().std * to->values.front().std;
    if (!(vf > 0) || !(vt > 0) || !std::isfinite(vf) || !std::isfinite(vt)) continue;
    const double ratio = vt / vf;
    if (ratio > p.init_variance_ratio || ratio < 1 / p.init_variance_ratio) {
      const double severity = std::abs(std::log10(ratio)) / std::log10(p.init_variance_ratio);
      out.push_back({LayerRule::PoorInitialization, e.to, Quantity::Activation, to->steps.front(), to->steps.front(), 1,
                     std::min(1.0, 0.4 + 0.2 * severity),
                     fmt("activation variance %.3g is %.3gx that of its input layer", vt, ratio) + " (" +
                         graph.name(e.from) + fmt(", %.3g) at the first recorded step", vf)});
    }
  }
}

}  // namespace

const char* layer_rule_name(LayerRule rule) {
  switch (rule) {
    case LayerRule::NonFinite: return "non_finite";
    case LayerRule::VanishingGradient: return "vanishing_gradient";
    case LayerRule::ExplodingGradient: return "exploding_gradient";
    case LayerRule::DeadUnits: return "dead_units";
    case LayerRule::SaturatedActivation: return "saturated_activation";
    case LayerRule::PoorInitialization: return "poor_initialization";
    case LayerRule::WeightUpdateTooLarge: return "weight_update_too_large";
    case LayerRule::WeightUpdateTooSmall: return "weight_update_too_small";
    case LayerRule::AllZero: return "all_zero";
    case LayerRule::UnchangedWeights: return "unchanged_weights";
  }
  return "unknown";
}

double LearningRate::at(int64_t step) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), step);
  if (it == steps.begin()) return NAN;
  return values[size_t(it - steps.begin()) - 1];
}

LearningRate read_learning_rate(format::RunReader& reader, const std::string& name) {
  for (const auto& s : reader.read_scalars())
    if (s.name == name) return {s.steps, s.values};
  return {};
}

std::vector<RuleHit> evaluate_layer_rules(const LayerGraph& graph, const SummaryTable& table, format::RunReader* reader,
                                          const LearningRate& lr, const LayerRuleParams& params) {
  std::vector<RuleHit> out;
  for (const SummarySeries& s : table.series()) {
    if (s.layer_id >= graph.size()) continue;
    rule_non_finite(s, out);
    if (is_gradient(s.quantity)) rule_gradients(s, params, out);
    if (s.quantity == Quantity::Activation || s.quantity == Quantity::Weight) rule_all_zero(s, out);
    if (s.quantity == Quantity::Weight)
      rule_weight_updates(s, table.find(s.layer_id, Quantity::WeightGrad), lr, params, out);
    if (s.quantity == Quantity::Activation) rule_dead_and_saturated(graph, s, reader, params, out);
  }
  rule_initialization(graph, table, params, out);
  std::stable_sort(out.begin(), out.end(), [](const RuleHit& a, const RuleHit& b) {
    return std::tie(a.first_step, a.layer_id) < std::tie(b.first_step, b.layer_id);
  });
  return out;
}

}  // namespace trainscope::analysis
