#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/snapshot_window.h>
#include <trainscope/analysis/summary_table.h>
#include <trainscope/format/run_reader.h>

#include <cmath>
#include <cstdio>

#include "cli.h"

namespace trainscope::cli {
namespace {

constexpr const char* kHelp = R"(usage: trainscope layers RUN [--step S] [--window W] [--json]

The layer hierarchy (the module tree) with each layer's training dynamics averaged over steps S-W..S+W: RMS of
activations, activation gradients, weights and weight gradients, NaN/Inf counts, and the layer rules that fired up
to S. Groups (modules with children) summarise their layers.

options:
  --step S     the focus step (default: the last step)
  --window W   steps on each side of the focus (default 50)
  --json       machine-readable output: {"focus_step", "window", "layers": [{"id", "name", "kind", "parent",
               "depth", "leaf", "neurons", "quantities": {"activation": {"mean", "std", ...}, ...},
               "rules": [...]}]}
)";

std::string rms_text(const analysis::QuantityWindow& q) {
  if (!q.present) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", analysis::rms(q.average));
  return buf;
}

}  // namespace

int run_layers(int argc, char** argv) {
  Arguments args("layers", argc, argv, {"--step", "--window"}, {"--json"});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  format::RunReader reader(args.run_path());
  const int64_t focus = args.value("--step") ? parse_integer("--step", *args.value("--step")) : reader.last_step();
  const int64_t window = args.value("--window") ? parse_integer("--window", *args.value("--window")) : 50;
  if (window < 0) throw UsageError("--window: must not be negative");
  if (focus < reader.first_step() || focus > reader.last_step())
    throw UsageError("--step: " + std::to_string(focus) + " is outside the recorded steps " +
                     std::to_string(reader.first_step()) + ".." + std::to_string(reader.last_step()));
  const analysis::LayerGraph graph(reader.metadata());
  const auto snapshot = analysis::compute_snapshot_window(reader, graph, focus, window);
  const auto table = analysis::SummaryTable::load(reader, INT64_MIN, focus);
  const auto hits = analysis::evaluate_layer_rules(graph, table, &reader, analysis::read_learning_rate(reader), {});

  // Depth-first order of the hierarchy, as a tree view shows it.
  std::vector<uint32_t> order, stack;
  const std::vector<uint32_t> roots = graph.roots();
  stack.assign(roots.rbegin(), roots.rend());
  while (!stack.empty()) {
    const uint32_t id = stack.back();
    stack.pop_back();
    order.push_back(id);
    for (auto it = graph.children(id).rbegin(); it != graph.children(id).rend(); ++it) stack.push_back(*it);
  }

  if (args.has("--json")) {
    analysis::JsonWriter json;
    json.begin_object().key("focus_step").value(focus).key("window").value(window).key("layers").begin_array();
    for (uint32_t id : order) {
      const auto& l = graph.layer(id);
      json.begin_object().key("id").value(uint64_t(id)).key("name").value(graph.name(id)).key("kind").value(l.kind);
      json.key("parent");
      if (l.parent_id)
        json.value(uint64_t(*l.parent_id));
      else
        json.null();
      json.key("depth").value(graph.depth(id)).key("leaf").value(graph.children(id).empty());
      json.key("neurons").value(uint64_t(l.neuron_count)).key("quantities").begin_object();
      for (auto q : format::all_quantities()) {
        const auto& w = snapshot.layers[id][q];
        if (!w.present) continue;
        json.key(format::quantity_name(q)).begin_object();
        for (auto s : format::all_statistics()) json.key(format::statistic_name(s)).value(w.average.get(s));
        json.key("rms").value(analysis::rms(w.average)).key("aggregated").value(w.aggregated);
        json.key("points").value(uint64_t(w.steps.size())).end_object();
      }
      json.end_object().key("rules").begin_array();
      for (const auto& h : hits)
        if (h.layer_id == id || graph.is_ancestor(id, h.layer_id))
          json.begin_object()
              .key("rule")
              .value(analysis::layer_rule_name(h.rule))
              .key("layer")
              .value(graph.name(h.layer_id))
              .key("first_step")
              .value(h.first_step)
              .key("evidence")
              .value(h.evidence)
              .end_object();
      json.end_array().end_object();
    }
    json.end_array().end_object();
    std::fwrite(json.str().data(), 1, json.str().size(), stdout);
    return 0;
  }
  std::printf("Layers around step %lld (+-%lld steps); RMS averaged over the window\n\n", static_cast<long long>(focus),
              static_cast<long long>(window));
  std::printf("%-40s %-14s %9s %10s %10s %10s %10s %8s  %s\n", "layer", "kind", "neurons", "act", "act_grad", "weight",
              "w_grad", "NaN/Inf", "rules");
  for (uint32_t id : order) {
    const auto& l = graph.layer(id);
    const std::string name = std::string(size_t(graph.depth(id)) * 2, ' ') + graph.name(id);
    double bad = 0;
    for (auto q : format::all_quantities()) {
      const auto& w = snapshot.layers[id][q];
      if (w.present) bad += w.average.nan_count + w.average.inf_count;
    }
    std::string rules;
    for (const auto& h : hits)
      if (h.layer_id == id && rules.find(analysis::layer_rule_name(h.rule)) == std::string::npos)
        rules += std::string(rules.empty() ? "" : ",") + analysis::layer_rule_name(h.rule);
    std::printf("%-40s %-14s %9llu %10s %10s %10s %10s %8s  %s\n", name.c_str(), l.kind.substr(0, 14).c_str(),
                static_cast<unsigned long long>(l.neuron_count),
                rms_text(snapshot.layers[id][format::Quantity::Activation]).c_str(),
                rms_text(snapshot.layers[id][format::Quantity::ActivationGrad]).c_str(),
                rms_text(snapshot.layers[id][format::Quantity::Weight]).c_str(),
                rms_text(snapshot.layers[id][format::Quantity::WeightGrad]).c_str(),
                bad > 0 ? format_double(bad).c_str() : "", rules.c_str());
  }
  return 0;
}

}  // namespace trainscope::cli
