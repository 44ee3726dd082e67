// From a recording to "this layer, from this step": abnormal snapshots (entry points) ranked by score, each with
// its ranked suspect layers, plus every layer rule that fired. `trainscope anomalies` prints it; the viewer marks it.
// Reads only scalars and layer summaries, plus per-neuron data of the few layers a rule needs.
#pragma once

#include <trainscope/analysis/json_writer.h>
#include <trainscope/analysis/layer_graph.h>
#include <trainscope/analysis/layer_rules.h>
#include <trainscope/analysis/root_cause.h>
#include <trainscope/analysis/scalar_anomalies.h>
#include <trainscope/format/run_reader.h>

#include <functional>
#include <string>
#include <vector>

namespace trainscope::analysis {

struct AnalysisParams {
  ScalarAnomalyParams scalars;
  LayerRuleParams rules;
  RootCauseParams root_cause;
  size_t max_anomalies = 20;
  // The scalar detectors run on a second thread while the layer summaries stream by (the same report; a window
  // around an entry point found after the pass went by it is read again). Off: they run first, on this thread.
  bool concurrent_scalars = true;
};

struct AbnormalSnapshot {
  int64_t step = 0;
  AnomalyKind kind = AnomalyKind::Spike;
  std::string scalar;  // "" when found in layer tensors only
  double value = 0;
  double score = 0;
  std::string reason;
  std::vector<Suspect> suspects;
};

struct AnomalyReport {
  int64_t first_step = 0, last_step = 0;
  std::vector<AbnormalSnapshot> anomalies;  // highest score first
  std::vector<RuleHit> rule_hits;           // by first step
};

// progress(stage, fraction) for long work.
AnomalyReport analyze_run(format::RunReader& reader, const AnalysisParams& params = {},
                          const std::function<void(const char*, double)>& progress = {});

// The documented JSON of `trainscope anomalies --json` (schema in the README).
void write_anomaly_report_json(JsonWriter& json, const AnomalyReport& report, const LayerGraph& graph);

}  // namespace trainscope::analysis
