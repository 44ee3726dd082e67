#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/format/run_reader.h>

#include <cstdio>
#include <set>

#include "cli.h"

namespace trainscope::cli {
namespace {

constexpr const char* kHelp = R"(usage: trainscope anomalies RUN [--json] [--max N] [--lookback STEPS] [--spike-z Z]

Finds the abnormal steps of a recording — NaN/Inf, spikes, level shifts, divergence, a loss that stops
decreasing — ranks them, and for each ranks the layers where the failure most likely starts: which layer, which
quantity, from which step, and why. Also lists every layer rule that fired (vanishing or exploding gradients, dead
units, saturated activations, poor initialisation, weight updates too large or too small, all-zero or unchanged
tensors, NaN/Inf). Reads only scalars and layer summaries (plus per-neuron data of the few layers a rule needs).
Works on a run still being written and on a run with a torn tail.

options:
  --json            the documented JSON (schema "trainscope-anomalies/1", see the README)
  --max N           at most N abnormal steps (default 20)
  --lookback STEPS  how far before an abnormal step to look for where it started (default 1000)
  --spike-z Z       robust z-score above which a scalar value is a spike (default 8)
)";

}  // namespace

int run_anomalies(int argc, char** argv) {
  Arguments args("anomalies", argc, argv, {"--max", "--lookback", "--spike-z"}, {"--json"});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  analysis::AnalysisParams params;
  if (auto v = args.value("--max")) {
    const int64_t n = parse_integer("--max", *v);
    if (n < 1) throw UsageError("--max: must be at least 1");
    params.max_anomalies = size_t(n);
  }
  if (auto v = args.value("--lookback")) {
    params.root_cause.lookback_steps = parse_integer("--lookback", *v);
    if (params.root_cause.lookback_steps < 1) throw UsageError("--lookback: must be at least 1");
  }
  if (auto v = args.value("--spike-z")) {
    try {
      params.scalars.spike_z = std::stod(*v);
    } catch (const std::exception&) {
      throw UsageError("--spike-z: '" + *v + "' is not a number");
    }
  }
  format::RunReader reader(args.run_path());
  Progress progress("analysing " + reader.directory().string());
  const auto report =
      analysis::analyze_run(reader, params, [&](const char*, double f) { progress.update(uint64_t(f * 1000), 1000); });
  progress.finish();
  const analysis::LayerGraph graph(reader.metadata());
  if (args.has("--json")) {
    analysis::JsonWriter json;
    analysis::write_anomaly_report_json(json, report, graph);
    std::fwrite(json.str().data(), 1, json.str().size(), stdout);
    return 0;
  }
  for (const auto& p : reader.problems()) std::fprintf(stderr, "note: %s\n", p.message.c_str());
  if (report.anomalies.empty()) {
    std::printf("No abnormal steps in %lld..%lld.\n", static_cast<long long>(report.first_step),
                static_cast<long long>(report.last_step));
  }
  for (size_t i = 0; i < report.anomalies.size(); ++i) {
    const auto& a = report.anomalies[i];
    std::printf("%zu. step %lld  %s  score %.1f\n   %s\n", i + 1, static_cast<long long>(a.step),
                analysis::anomaly_kind_name(a.kind), a.score, a.reason.c_str());
    if (a.suspects.empty()) std::printf("   no layer stands out\n");
    for (size_t k = 0; k < a.suspects.size() && k < 5; ++k) {
      const auto& s = a.suspects[k];
      std::printf("   %s %-28s %-15s from step %-8lld %-22s %s\n", k == 0 ? "->" : "  ", graph.name(s.layer_id).c_str(),
                  std::string(format::quantity_name(s.quantity)).c_str(), static_cast<long long>(s.first_step),
                  s.rule.c_str(), s.evidence.c_str());
    }
  }
  if (!report.rule_hits.empty()) {
    // NaN spreads to every later layer and every gradient: one line for all of it (where it starts is the ranking
    // above). The JSON keeps every hit.
    std::set<uint32_t> nan_layers;
    const analysis::RuleHit* first_nan = nullptr;
    for (const auto& h : report.rule_hits)
      if (h.rule == analysis::LayerRule::NonFinite) {
        nan_layers.insert(h.layer_id);
        if (!first_nan) first_nan = &h;  // hits are sorted by first step
      }
    std::printf("\nLayer rules that fired (%zu):\n", report.rule_hits.size());
    if (first_nan)
      std::printf("  %-24s NaN/Inf in %zu layers from step %lld (where it starts: the ranking above)\n", "non_finite",
                  nan_layers.size(), static_cast<long long>(first_nan->first_step));
    for (const auto& h : report.rule_hits)
      if (h.rule != analysis::LayerRule::NonFinite)
        std::printf("  %-24s %-28s steps %lld..%lld  %s\n", analysis::layer_rule_name(h.rule),
                    graph.name(h.layer_id).c_str(), static_cast<long long>(h.first_step),
                    static_cast<long long>(h.last_step), h.evidence.c_str());
  }
  return 0;
}

}  // namespace trainscope::cli
