#include <trainscope/analysis/robust_stats.h>
#include <trainscope/analysis/root_cause.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <tuple>

namespace trainscope::analysis {
namespace {

using format::Quantity;

bool is_gradient(Quantity q) {
  return q == Quantity::ActivationGrad || q == Quantity::WeightGrad || q == Quantity::BiasGrad;
}

double log_magnitude(double v) {
  return std::log10(std::abs(v) + 1e-30);
}

struct Candidate {
  Suspect suspect;
  double confidence = 0;
};

std::optional<Candidate> departure(const SummarySeries& s, int64_t anomaly_step, const RootCauseParams& p) {
  const int64_t window_start = anomaly_step - p.lookback_steps;
  const auto begin = size_t(std::lower_bound(s.steps.begin(), s.steps.end(), window_start) - s.steps.begin());
  // Layer data is captured every few steps while scalars come every step: look a little past the anomaly.
  const auto end =
      size_t(std::upper_bound(s.steps.begin(), s.steps.end(), anomaly_step + p.lookahead_steps) - s.steps.begin());
  if (begin >= end) return std::nullopt;

  for (size_t i = begin; i < end; ++i) {
    const auto& v = s.values[i];
    if (v.finite()) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%.0f NaN and %.0f Inf values of %.0f", v.nan_count, v.inf_count, v.numel);
    return Candidate{{s.layer_id, s.quantity, s.steps[i], "non_finite", 0, buf}, 1.0};
  }

  std::vector<double> magnitude, spread;
  for (size_t i = begin; i < end && magnitude.size() < p.baseline_points; ++i) {
    magnitude.push_back(log_magnitude(max_abs(s.values[i])));
    spread.push_back(log_magnitude(rms(s.values[i])));
  }
  if (magnitude.size() < p.min_baseline_points || begin + magnitude.size() >= end) return std::nullopt;
  const RobustScale ms = robust_scale(magnitude), ss = robust_scale(spread);
  // log10 values: a floor of 0.05 decades keeps a flat baseline from making noise look like a departure.
  const auto z_at = [&](size_t i) {
    const double zm = (log_magnitude(max_abs(s.values[i])) - ms.median) / std::max(ms.sigma, 0.05);
    const double zs = (log_magnitude(rms(s.values[i])) - ss.median) / std::max(ss.sigma, 0.05);
    return std::abs(zm) > std::abs(zs) ? zm : zs;
  };
  // Walk back from s while the series stays away from its baseline; the run's start is the departure.
  std::optional<size_t> start;
  double peak = 0;
  for (size_t i = end; i-- > begin + magnitude.size();) {
    const double z = z_at(i);
    if (std::abs(z) < p.departure_z / 2) break;
    peak = std::max(peak, std::abs(z));
    if (std::abs(z) >= p.departure_z) start = i;
  }
  if (!start) return std::nullopt;
  const double z = z_at(*start);
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "%s %s from step %lld: %.1f robust standard deviations (log scale) %s its range "
                "before, up to %.1f by step %lld",
                std::string(format::quantity_name(s.quantity)).c_str(), z > 0 ? "grows" : "shrinks",
                static_cast<long long>(s.steps[*start]), std::abs(z), z > 0 ? "above" : "below", peak,
                static_cast<long long>(s.steps[end - 1]));
  return Candidate{{s.layer_id, s.quantity, s.steps[*start], "departure", 0, buf},
                   std::min(1.0, 0.5 + peak / (8 * p.departure_z))};
}

}  // namespace

std::vector<Suspect> rank_suspects(const LayerGraph& graph, const SummaryTable& table,
                                   const std::vector<RuleHit>& rule_hits, int64_t anomaly_step,
                                   const RootCauseParams& params) {
  std::vector<Candidate> candidates;
  for (const SummarySeries& s : table.series()) {
    if (s.layer_id >= graph.size()) continue;
    if (auto c = departure(s, anomaly_step, params)) candidates.push_back(std::move(*c));
  }
  for (const RuleHit& hit : rule_hits) {
    if (hit.rule == LayerRule::NonFinite || hit.layer_id >= graph.size()) continue;  // covered by departures
    // Only conditions present at the anomaly: a rule that stopped firing long before did not cause it.
    if (hit.first_step > anomaly_step + params.lookahead_steps || hit.last_step < anomaly_step - params.lookahead_steps)
      continue;
    candidates.push_back(
        {{hit.layer_id, hit.quantity, hit.first_step, layer_rule_name(hit.rule), 0, hit.evidence}, 0.8 * hit.score});
  }
  // Containers repeat what their children show: blame the leaf when a descendant departs as early.
  std::vector<Candidate> kept;
  for (const Candidate& c : candidates) {
    const bool covered_by_child = std::any_of(candidates.begin(), candidates.end(), [&](const Candidate& d) {
      return graph.is_ancestor(c.suspect.layer_id, d.suspect.layer_id) && d.suspect.first_step <= c.suspect.first_step;
    });
    if (!covered_by_child) kept.push_back(c);
  }
  candidates = std::move(kept);
  // Tiers: NaN/Inf first (the failure itself), then data leaving its normal range, then rules that began within
  // the look-back window, then older, chronic conditions (a dead layer since step 0 explains a stall, but not a NaN
  // that appears in another layer at step 300).
  const auto tier = [&](const Candidate& c) {
    if (c.suspect.rule == "non_finite") return 0;
    if (c.suspect.rule == "departure") return 1;
    return c.suspect.first_step >= anomaly_step - params.recent_steps ? 2 : 3;
  };
  const auto key = [&](const Candidate& c) {
    const bool gradient = is_gradient(c.suspect.quantity);
    const int order = graph.forward_rank(c.suspect.layer_id);
    return std::make_tuple(tier(c), c.suspect.first_step, gradient ? 1 : 0, gradient ? -order : order,
                           -int(graph.depth(c.suspect.layer_id)), -c.confidence);
  };
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](const Candidate& a, const Candidate& b) { return key(a) < key(b); });

  std::vector<Suspect> out;
  std::map<uint32_t, bool> seen;
  for (Candidate& c : candidates) {
    if (seen[c.suspect.layer_id]) continue;  // one entry per layer: its earliest evidence
    seen[c.suspect.layer_id] = true;
    c.suspect.score = c.confidence / (1.0 + 0.5 * double(out.size()));
    out.push_back(std::move(c.suspect));
    if (out.size() >= params.max_suspects) break;
  }
  return out;
}

}  // namespace trainscope::analysis
