#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/summary_table.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <future>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

namespace trainscope::analysis {

namespace {

// One entry per (step, kind), several scalars going NaN at once being one event; ranked by score; the strongest.
std::vector<AbnormalSnapshot> rank_entry_points(std::vector<AbnormalSnapshot> found, size_t max_anomalies) {
  std::vector<AbnormalSnapshot> out;
  std::stable_sort(found.begin(), found.end(), [](const AbnormalSnapshot& a, const AbnormalSnapshot& b) {
    return std::make_tuple(a.step, int(a.kind)) < std::make_tuple(b.step, int(b.kind));
  });
  for (AbnormalSnapshot& a : found) {
    if (!out.empty() && out.back().step == a.step && out.back().kind == a.kind) {
      AbnormalSnapshot& b = out.back();
      b.score = std::max(b.score, a.score);
      b.scalar += "," + a.scalar;
      b.reason += "; " + a.reason;
      continue;
    }
    out.push_back(std::move(a));
  }
  std::stable_sort(out.begin(), out.end(), [](const AbnormalSnapshot& a, const AbnormalSnapshot& b) {
    return a.score != b.score ? a.score > b.score : a.step < b.step;
  });
  if (out.size() > max_anomalies) out.resize(max_anomalies);
  return out;
}

bool has_non_finite(const std::vector<AbnormalSnapshot>& found) {
  return std::any_of(found.begin(), found.end(),
                     [](const AbnormalSnapshot& a) { return a.kind == AnomalyKind::NonFinite; });
}

// NaN/Inf seen in layer tensors but in no scalar (the loss was not logged, or stayed finite) is an entry point too.
std::optional<AbnormalSnapshot> layer_non_finite_entry(const std::vector<RuleHit>& hits, const LayerGraph& graph) {
  const RuleHit* first = nullptr;
  for (const RuleHit& h : hits)
    if (h.rule == LayerRule::NonFinite && (!first || h.first_step < first->first_step)) first = &h;
  if (!first) return std::nullopt;
  return AbnormalSnapshot{first->first_step,
                          AnomalyKind::NonFinite,
                          "",
                          NAN,
                          1000.0,
                          "NaN/Inf in layer tensors from step " + std::to_string(first->first_step) + " (" +
                              graph.name(first->layer_id) + ")",
                          {}};
}

// The analysis over a SummaryTable of the whole run: for recordings whose summary chunks a single pass cannot
// take in order. The streaming path of analyze_run gives the same report.
void analyze_with_table(format::RunReader& reader, const LayerGraph& graph, const AnalysisParams& params,
                        const LearningRate& lr, std::vector<AbnormalSnapshot> found, AnomalyReport& report,
                        const std::function<void(const char*, double)>& report_progress) {
  const SummaryTable table = SummaryTable::load(reader);
  report_progress("layer rules", 0.6);
  report.rule_hits = evaluate_layer_rules(graph, table, &reader, lr, params.rules);
  if (!has_non_finite(found))
    if (auto entry = layer_non_finite_entry(report.rule_hits, graph)) found.push_back(std::move(*entry));
  report.anomalies = rank_entry_points(std::move(found), params.max_anomalies);
  report_progress("root cause", 0.8);
  for (AbnormalSnapshot& a : report.anomalies)
    a.suspects = rank_suspects(graph, table, report.rule_hits, a.step, params.root_cause);
}

}  // namespace

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
  const std::vector<format::ScalarSeries> scalars = reader.read_scalars();
  LearningRate lr;
  for (const format::ScalarSeries& s : scalars)
    if (s.name == params.rules.learning_rate_scalar) lr = {s.steps, s.values};
  const auto detect = [&scalars, &params] {
    std::vector<AbnormalSnapshot> found;
    for (const format::ScalarSeries& s : scalars)
      for (const ScalarAnomaly& a : find_scalar_anomalies(s.name, s.steps, s.values, params.scalars))
        found.push_back({a.step, a.kind, a.scalar, a.value, a.score, a.reason, {}});
    return found;
  };
  // Found beside the pass over the summaries, or (deferred) before it.
  std::future<std::vector<AbnormalSnapshot>> detected =
      std::async(params.concurrent_scalars ? std::launch::async : std::launch::deferred, detect);

  // One pass over the summary chunks, without a table of the whole run (on a long run, building it cost far more
  // than decompressing the summaries): the rules as the records stream by, and the departures from their normal
  // range in the windows around the entry points the scalars name, from the chunk at which they are known. A NaN
  // in layers only adds one entry point, whose window is read again afterwards, as is a window the pass had gone
  // into before its entry point was known.
  std::vector<AbnormalSnapshot> found;
  std::vector<int64_t> entry_steps;
  bool entries_known = false;
  const auto take_entries = [&] {
    found = detected.get();
    for (const AbnormalSnapshot& a : rank_entry_points(found, params.max_anomalies)) entry_steps.push_back(a.step);
    entries_known = true;
  };
  LayerRuleStream rules(graph, lr, params.rules);
  DepartureStream departures(graph, {}, params.root_cause);
  if (!params.concurrent_scalars) {
    take_entries();
    departures.follow(entry_steps);
  }
  report_progress("layer summaries", 0.2);
  bool in_order = true;
  reader.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const format::SummaryColumns& chunk) {
    if (!in_order || !(in_order = rules.add(chunk))) return;
    if (!entries_known && detected.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      take_entries();
      departures.follow(entry_steps);
    }
    departures.add(chunk);
  });
  if (!entries_known) {
    take_entries();
    departures.follow(entry_steps);
  }
  if (!in_order) {
    analyze_with_table(reader, graph, params, lr, std::move(found), report, report_progress);
    report_progress("done", 1.0);
    return report;
  }
  report_progress("layer rules", 0.6);
  report.rule_hits = rules.finish(&reader);
  if (!has_non_finite(found))
    if (auto entry = layer_non_finite_entry(report.rule_hits, graph)) found.push_back(std::move(*entry));
  report.anomalies = rank_entry_points(std::move(found), params.max_anomalies);

  report_progress("root cause", 0.8);
  // The entry points whose windows the pass did not see whole, read again in one shorter pass.
  std::vector<int64_t> again_steps;
  std::vector<size_t> known(report.anomalies.size());  // the anomaly's index in entry_steps, or SIZE_MAX
  for (size_t k = 0; k < report.anomalies.size(); ++k) {
    const auto it = std::find(entry_steps.begin(), entry_steps.end(), report.anomalies[k].step);
    known[k] = it != entry_steps.end() && departures.complete(size_t(it - entry_steps.begin()))
                   ? size_t(it - entry_steps.begin())
                   : SIZE_MAX;
    if (known[k] == SIZE_MAX) again_steps.push_back(report.anomalies[k].step);
  }
  std::optional<DepartureStream> again;
  if (!again_steps.empty()) {
    again.emplace(graph, again_steps, params.root_cause, &departures);
    int64_t first = INT64_MAX, last = INT64_MIN;
    for (int64_t step : again_steps) {
      first = std::min(first, step < INT64_MIN + params.root_cause.lookback_steps
                                  ? INT64_MIN
                                  : step - params.root_cause.lookback_steps);
      last = std::max(last, step > INT64_MAX - params.root_cause.lookahead_steps
                                ? INT64_MAX
                                : step + params.root_cause.lookahead_steps);
    }
    reader.for_each_summary_chunk(first, last, [&](const format::SummaryColumns& chunk) { again->add(chunk); });
  }
  for (size_t k = 0, next_again = 0; k < report.anomalies.size(); ++k) {
    AbnormalSnapshot& a = report.anomalies[k];
    a.suspects = known[k] != SIZE_MAX ? departures.suspects(known[k], report.rule_hits)
                                      : again->suspects(next_again++, report.rule_hits);
  }
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
