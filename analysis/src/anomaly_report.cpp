#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/summary_table.h>

#include <algorithm>
#include <cmath>
#include <tuple>

namespace trainscope::analysis {

AnomalyReport analyze_run(format::RunReader& reader, const AnalysisParams& params,
                          const std::function<void(const char*, double)>& progress) {
  const auto report_progress = [&](const char* stage, double f) {
    if (progress) progress(stage, f);
  };
  AnomalyReport report;
  report.first_step = reader.first_step();
  report.last_step = reader.last_step();
  const LayerGraph graph(reader.metadata());

  report_progress("scalars", 0.0);
  std::vector<AbnormalSnapshot> found;
  LearningRate lr;
  for (const format::ScalarSeries& s : reader.read_scalars()) {
    if (s.name == params.rules.learning_rate_scalar) lr = {s.steps, s.values};
    for (const ScalarAnomaly& a : find_scalar_anomalies(s.name, s.steps, s.values, params.scalars))
      found.push_back({a.step, a.kind, a.scalar, a.value, a.score, a.reason, {}});
  }
  report_progress("layer summaries", 0.2);
  const SummaryTable table = SummaryTable::load(reader);
  report_progress("layer rules", 0.6);
  report.rule_hits = evaluate_layer_rules(graph, table, &reader, lr, params.rules);

  // NaN/Inf seen in layer tensors but in no scalar (the loss was not logged, or stayed finite) is an entry point too.
  const bool scalar_non_finite = std::any_of(
      found.begin(), found.end(), [](const AbnormalSnapshot& a) { return a.kind == AnomalyKind::NonFinite; });
  if (!scalar_non_finite) {
    const RuleHit* first = nullptr;
    for (const RuleHit& h : report.rule_hits)
      if (h.rule == LayerRule::NonFinite && (!first || h.first_step < first->first_step)) first = &h;
    if (first)
      found.push_back({first->first_step,
                       AnomalyKind::NonFinite,
                       "",
                       NAN,
                       1000.0,
                       "NaN/Inf in layer tensors from step " + std::to_string(first->first_step) + " (" +
                           graph.name(first->layer_id) + ")",
                       {}});
  }

  // One entry per (step, kind): several scalars going NaN at once are one event.
  std::stable_sort(found.begin(), found.end(), [](const AbnormalSnapshot& a, const AbnormalSnapshot& b) {
    return std::make_tuple(a.step, int(a.kind)) < std::make_tuple(b.step, int(b.kind));
  });
  for (AbnormalSnapshot& a : found) {
    if (!report.anomalies.empty() && report.anomalies.back().step == a.step && report.anomalies.back().kind == a.kind) {
      AbnormalSnapshot& b = report.anomalies.back();
      b.score = std::max(b.score, a.score);
      b.scalar += "," + a.scalar;
      b.reason += "; " + a.reason;
      continue;
    }
    report.anomalies.push_back(std::move(a));
  }
  std::stable_sort(report.anomalies.begin(), report.anomalies.end(),
                   [](const AbnormalSnapshot& a, const AbnormalSnapshot& b) {
                     return a.score != b.score ? a.score > b.score : a.step < b.step;
                   });
  if (report.anomalies.size() > params.max_anomalies) report.anomalies.resize(params.max_anomalies);

  report_progress("root cause", 0.8);
  for (AbnormalSnapshot& a : report.anomalies)
    a.suspects = rank_suspects(graph, table, report.rule_hits, a.step, params.root_cause);
  report_progress("done", 1.0);
  return report;
}

void write_anomaly_report_json(JsonWriter& json, const AnomalyReport& report, const LayerGraph& graph) {
  json.begin_object();
  json.key("schema").value("trainscope-anomalies/1");
  json.key("first_step").value(report.first_step);
  json.key("last_step").value(report.last_step);
  json.key("anomalies").begin_array();
  for (const AbnormalSnapshot& a : report.anomalies) {
    json.begin_object();
    json.key("step").value(a.step);
    json.key("kind").value(anomaly_kind_name(a.kind));
    json.key("scalar").value(a.scalar);
    json.key("value").value(a.value);
    json.key("score").value(a.score);
    json.key("reason").value(a.reason);
    json.key("layers").begin_array();
    for (const Suspect& s : a.suspects) {
      json.begin_object();
      json.key("name").value(graph.name(s.layer_id));
      json.key("quantity").value(format::quantity_name(s.quantity));
      json.key("first_step").value(s.first_step);
      json.key("rule").value(s.rule);
      json.key("score").value(std::round(s.score * 1e4) / 1e4);
      json.key("evidence").value(s.evidence);
      json.end_object();
    }
    json.end_array();
    json.end_object();
  }
  json.end_array();
  json.key("rule_hits").begin_array();
  for (const RuleHit& h : report.rule_hits) {
    json.begin_object();
    json.key("rule").value(layer_rule_name(h.rule));
    json.key("layer").value(graph.name(h.layer_id));
    json.key("quantity").value(format::quantity_name(h.quantity));
    json.key("first_step").value(h.first_step);
    json.key("last_step").value(h.last_step);
    json.key("steps").value(uint64_t(h.steps_hit));
    json.key("score").value(std::round(h.score * 1e4) / 1e4);
    json.key("evidence").value(h.evidence);
    json.end_object();
  }
  json.end_array();
  json.end_object();
}

}  // namespace trainscope::analysis
