#include <trainscope/analysis/credit_assignment.h>
#include <trainscope/format/run_reader.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli.h"

namespace trainscope::cli {
namespace {

constexpr const char* kHelp =
    R"(usage: trainscope trace RUN --step S --layer NAME --neuron I [--direction forward|backward|both]
                       [--depth D] [--top K] [--sample B] [--json]

Credit assignment for one neuron: which neurons of the previous layers drive it (forward: for z_i = Σ_j w_ij·a_j + b_i,
input neuron j gives w_ij·a_j; a conv input channel gives w·a summed over the kernel and the positions), and which
neurons of the next layers send it its gradient (backward: next-layer neuron i gives w_ij·∂L/∂z_i). The trace follows
the strongest contributors over several layers, keeping K neurons per hop. Elementwise layers (ReLU, dropout,
pooling, batch norm) pass a neuron through unchanged. Each hop says which recorded data it used — full tensors of the
training batch, of the probe batch, or per-neuron batch means (exact for linear layers, since the mean is linear) —
and checks completeness: the sum over all inputs (plus the bias) against the recorded value. Layers that cannot be
traced stop the trace with a message. Needs weights recorded as full tensors (RecorderOptions::full_tensor_interval).

options:
  --step S        the snapshot step (required)
  --layer NAME    dotted layer name as `trainscope layers` shows it, or a layer id (required)
  --neuron I      output unit or channel of that layer (required)
  --direction D   forward, backward or both (default both)
  --depth D       weighted layers crossed (default 3)
  --top K         neurons kept per hop (default 8)
  --sample B      one sample of the recorded batch instead of the batch mean (full tensors only)
  --json          JSON (schema "trainscope-trace/1"): each hop's neurons as {"layer", "neuron", "contribution",
                  "share"}, strongest first, with the data used, the approximations and the completeness checks
)";

void write_trace_json(analysis::JsonWriter& j, const analysis::CreditTrace& t, const analysis::LayerGraph& g) {
  j.begin_object();
  j.key("direction").value(analysis::credit_direction_name(t.direction));
  j.key("hops").begin_array();
  for (size_t h = 0; h < t.hops.size(); ++h) {
    const auto& hop = t.hops[h];
    j.begin_object();
    j.key("hop").value(int64_t(h + 1));
    j.key("weighted_layer").value(g.name(hop.weighted_layer));
    j.key("target_layer").value(g.name(hop.target_layer));
    j.key("source_layer").value(g.name(hop.source_layer));
    j.key("via").begin_array();
    for (uint32_t v : hop.via) j.value(g.name(v));
    j.end_array();
    j.key("data").begin_object();
    j.key("source").value(analysis::credit_source_name(hop.source));
    j.key("description").value(hop.data);
    j.key("weight_step").value(hop.weight_step);
    j.key("data_step").value(hop.data_step);
    j.key("exact").value(hop.approximation.empty());
    j.key("approximation");
    if (hop.approximation.empty())
      j.null();
    else
      j.value(hop.approximation);
    j.end_object();
    j.key("targets").begin_array();
    for (const auto& [n, share] : hop.targets) {
      j.begin_object();
      j.key("layer").value(g.name(hop.target_layer));
      j.key("neuron").value(uint64_t(n));
      j.key("share").value(share);
      j.end_object();
    }
    j.end_array();
    j.key("source_neurons").value(uint64_t(hop.source_neurons));
    j.key("neurons").begin_array();
    for (const auto& n : hop.neurons) {
      j.begin_object();
      j.key("layer").value(g.name(n.layer));
      j.key("neuron").value(uint64_t(n.neuron));
      j.key("contribution").value(n.contribution);
      j.key("share").value(n.share);
      j.end_object();
    }
    j.end_array();
    j.key("links").begin_array();
    for (const auto& l : hop.links) {
      j.begin_object();
      j.key("source").value(uint64_t(l.source));
      j.key("target").value(uint64_t(l.target));
      j.key("contribution").value(l.contribution);
      j.end_object();
    }
    j.end_array();
    j.key("checks").begin_array();
    for (const auto& c : hop.checks) {
      j.begin_object();
      j.key("neuron").value(uint64_t(c.neuron));
      j.key("sum").value(c.sum);
      j.key("bias").value(c.bias);
      j.key("recorded");
      if (c.recorded)
        j.value(*c.recorded);
      else
        j.null();
      j.key("residual").value(c.residual());
      j.end_object();
    }
    j.end_array();
    j.end_object();
  }
  j.end_array();
  j.key("messages").begin_array();
  for (const auto& m : t.messages) j.value(m);
  j.end_array();
  if (t.input_region) {
    const auto& r = *t.input_region;
    j.key("input_region").begin_object();
    j.key("position").value(std::vector<int64_t>{r.y, r.x});
    j.key("rows").value(std::vector<int64_t>{r.row_first, r.row_last});
    j.key("cols").value(std::vector<int64_t>{r.col_first, r.col_last});
    j.key("geometry").value(r.geometry);
    j.end_object();
  }
  j.end_object();
}

// Four significant digits in the text output (the JSON has every digit).
std::string brief(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

void print_trace(const analysis::CreditTrace& t, const analysis::LayerGraph& g) {
  std::printf("%s credit of %s neuron %u at step %lld\n",
              t.direction == analysis::CreditDirection::Forward ? "Forward" : "Backward", g.name(t.layer).c_str(),
              t.neuron, static_cast<long long>(t.step));
  for (size_t h = 0; h < t.hops.size(); ++h) {
    const auto& hop = t.hops[h];
    std::string via;
    for (uint32_t v : hop.via) via += (via.empty() ? " via " : ", ") + g.name(v);
    std::printf("  hop %zu: %s -> %s%s (%zu candidates)\n", h + 1, g.name(hop.source_layer).c_str(),
                g.name(hop.target_layer).c_str(), via.c_str(), hop.source_neurons);
    std::printf("    data: %s\n", hop.data.c_str());
    if (!hop.approximation.empty()) std::printf("    approximate: %s\n", hop.approximation.c_str());
    for (const auto& c : hop.checks) {
      if (c.recorded)
        std::printf("    check neuron %u: sum %s + bias %s = %s, recorded %s\n", c.neuron, brief(c.sum).c_str(),
                    brief(c.bias).c_str(), brief(c.sum + c.bias).c_str(), brief(*c.recorded).c_str());
      else
        std::printf("    check neuron %u: sum %s + bias %s (no recorded value to compare)\n", c.neuron,
                    brief(c.sum).c_str(), brief(c.bias).c_str());
      if (h > 0 || hop.checks.size() > 3) break;  // one line is enough past the first hop
    }
    for (const auto& n : hop.neurons)
      std::printf("    %-24s neuron %-6u contribution %-14s share %+.3f\n", g.name(n.layer).c_str(), n.neuron,
                  brief(n.contribution).c_str(), n.share);
  }
  for (const auto& m : t.messages) std::printf("  stop: %s\n", m.c_str());
  if (t.input_region) {
    const auto& r = *t.input_region;
    std::printf("  position (%lld,%lld) sees input rows %lld..%lld, cols %lld..%lld (%s)\n",
                static_cast<long long>(r.y), static_cast<long long>(r.x), static_cast<long long>(r.row_first),
                static_cast<long long>(r.row_last), static_cast<long long>(r.col_first),
                static_cast<long long>(r.col_last), r.geometry.c_str());
  }
}

}  // namespace

int run_trace(int argc, char** argv) {
  Arguments args("trace", argc, argv, {"--step", "--layer", "--neuron", "--direction", "--depth", "--top", "--sample"},
                 {"--json"});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  const std::string run = args.run_path();
  for (const char* required : {"--step", "--layer", "--neuron"})
    if (!args.value(required)) throw UsageError(std::string(required) + ": required");
  const int64_t step = parse_integer("--step", *args.value("--step"));
  const int64_t neuron = parse_integer("--neuron", *args.value("--neuron"));
  if (neuron < 0) throw UsageError("--neuron: must not be negative");
  std::vector<analysis::CreditDirection> directions{analysis::CreditDirection::Forward,
                                                    analysis::CreditDirection::Backward};
  if (auto d = args.value("--direction")) {
    if (*d == "forward")
      directions = {analysis::CreditDirection::Forward};
    else if (*d == "backward")
      directions = {analysis::CreditDirection::Backward};
    else if (*d != "both")
      throw UsageError("--direction: '" + *d + "' is not forward, backward or both");
  }
  analysis::CreditOptions options;
  if (auto v = args.value("--depth")) {
    const int64_t d = parse_integer("--depth", *v);
    if (d < 1 || d > 64) throw UsageError("--depth: must be between 1 and 64");
    options.depth = int(d);
  }
  if (auto v = args.value("--top")) {
    const int64_t k = parse_integer("--top", *v);
    if (k < 1) throw UsageError("--top: must be at least 1");
    options.top_k = size_t(k);
  }
  if (auto v = args.value("--sample")) {
    options.sample = parse_integer("--sample", *v);
    if (options.sample < 0) throw UsageError("--sample: must not be negative");
  }

  format::RunReader reader(run);
  analysis::CreditAssignment credit(reader);
  const auto& graph = credit.graph();
  const auto layer = analysis::find_layer(graph, *args.value("--layer"));
  if (!layer) throw UsageError("--layer: no layer named '" + *args.value("--layer") + "' in " + run);
  const auto& l = graph.layer(*layer);
  if (l.neuron_count && uint64_t(neuron) >= l.neuron_count)
    throw UsageError("--neuron: " + graph.name(*layer) + " has " + std::to_string(l.neuron_count) + " neurons (0.." +
                     std::to_string(l.neuron_count - 1) + ")");
  const auto steps = reader.snapshot_steps();
  if (!std::binary_search(steps.begin(), steps.end(), step)) {
    std::string near;
    if (!steps.empty()) {
      auto it = std::lower_bound(steps.begin(), steps.end(), step);
      if (it == steps.end()) --it;
      if (it != steps.begin() && std::llabs(*std::prev(it) - step) <= std::llabs(*it - step)) --it;
      near = "; the nearest snapshot is step " + std::to_string(*it);
    }
    throw UsageError("--step: no snapshot at step " + std::to_string(step) + near);
  }

  std::vector<analysis::CreditTrace> traces;
  for (auto d : directions) traces.push_back(credit.trace(step, *layer, uint32_t(neuron), d, options));
  for (const auto& p : reader.problems()) std::fprintf(stderr, "note: %s\n", p.message.c_str());
  if (args.has("--json")) {
    analysis::JsonWriter j;
    j.begin_object();
    j.key("schema").value("trainscope-trace/1");
    j.key("run").value(reader.directory().string());
    j.key("step").value(step);
    j.key("layer").value(graph.name(*layer));
    j.key("neuron").value(neuron);
    j.key("traces").begin_array();
    for (const auto& t : traces) write_trace_json(j, t, graph);
    j.end_array();
    j.end_object();
    std::printf("%s\n", j.str().c_str());
    return 0;
  }
  for (size_t i = 0; i < traces.size(); ++i) {
    if (i) std::printf("\n");
    print_trace(traces[i], graph);
  }
  return 0;
}

}  // namespace trainscope::cli
