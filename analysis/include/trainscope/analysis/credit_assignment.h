// Neuron-level credit assignment: which neurons of the previous layers drive a neuron of interest (forward credit),
// and which neurons of the next layers send it its gradient (backward credit), traced over several layers as a small
// "datapath" of top contributors.
//
// Forward, for a weighted layer z_i = Σ_j w_ij·a_j + b_i, input neuron j contributes w_ij·a_j; for a conv output
// channel, w·a summed over the kernel and the output positions, per input channel. Backward, ∂L/∂a_j = Σ_i
// w_ij·∂L/∂z_i, so next-layer neuron i contributes w_ij·∂L/∂z_i. Both are linear, so batch means can be used in place
// of single samples: Σ_j w_ij·mean(a_j) + b_i = mean(z_i) holds exactly. Each hop says which recorded data it used
// (full tensors of the training batch, of the probe batch, or per-neuron batch means) and what is approximate, and
// every hop carries its completeness check (the sum over all inputs against the recorded value). Layers that cannot be
// traced (unknown kinds, several inputs) stop the trace with a message, never a wrong number.
#pragma once

#include <trainscope/analysis/layer_graph.h>
#include <trainscope/format/run_reader.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace trainscope::analysis {

enum class CreditDirection { Forward, Backward };
const char* credit_direction_name(CreditDirection d);

// Where a hop's activations (forward) or gradients (backward) came from.
enum class CreditSource { TrainingBatch, ProbeBatch, BatchMeans };
const char* credit_source_name(CreditSource s);

struct CreditOptions {
  int depth = 3;          // weighted layers crossed
  size_t top_k = 8;       // neurons kept per hop: the budget that keeps the datapath small
  int64_t sample = -1;    // -1: batch mean; otherwise one sample (row) of the recorded batch (full tensors only)
  bool use_probe = true;  // fall back to the probe batch's activations when the training batch has no full tensors
  bool use_means = true;  // fall back to per-neuron batch means
  // For a conv focus channel: the output position whose input region is reported; default the strongest one.
  std::optional<std::pair<int64_t, int64_t>> position;
};

struct NeuronCredit {
  uint32_t layer = 0;
  uint32_t neuron = 0;
  double contribution = 0;  // raw, summed over the hop's target neurons (units of the target: z, or ∂L/∂a)
  double share = 0;         // signed, normalised (Σ|share| over a target's inputs is 1), propagated along the path
};

// One weighted connection of the datapath: source neuron → target neuron with its raw contribution.
struct CreditLink {
  uint32_t source = 0, target = 0;
  double contribution = 0;
};

// Completeness of one target neuron: the sum over *all* its inputs (plus the bias, forward) against the recorded
// value. A large residual means the data does not describe this layer (wrong geometry, stale weights).
struct CreditCheck {
  uint32_t neuron = 0;
  double sum = 0;   // Σ contributions over all inputs
  double bias = 0;  // forward only
  std::optional<double> recorded;
  double residual() const { return recorded ? sum + bias - *recorded : 0; }
};

struct CreditHop {
  CreditDirection direction = CreditDirection::Forward;
  uint32_t weighted_layer = 0;  // the Linear/Conv2d whose weights this hop used
  uint32_t target_layer = 0;    // whose neurons receive credit: forward the weighted layer, backward the layer fed
  uint32_t source_layer = 0;  // whose neurons give it: forward the weighted layer's input, backward the weighted layer
  std::vector<uint32_t> via;  // elementwise / per-channel layers passed through on the way (neuron i ↔ neuron i)
  std::vector<std::pair<uint32_t, double>> targets;  // target neurons and their shares
  std::vector<NeuronCredit> neurons;                 // kept source neurons, strongest |share| first
  std::vector<CreditLink> links;                     // kept source → target connections
  std::vector<CreditCheck> checks;                   // one per target neuron
  size_t source_neurons = 0;                         // candidates before the budget
  CreditSource source = CreditSource::BatchMeans;
  int64_t weight_step = 0;  // step of the weights used (differs from the trace step when not recorded there)
  int64_t data_step = 0;
  std::string data;           // which recorded data, in words
  std::string approximation;  // empty when exact
};

// The image region (rows and columns of the model input, inclusive) one position of a conv channel sees.
struct InputRegion {
  uint32_t layer = 0;  // the focus layer
  int64_t y = 0, x = 0;
  int64_t row_first = 0, row_last = 0, col_first = 0, col_last = 0;
  std::string geometry;  // how the strides/paddings were found: "verified", "inferred from shapes", "assumed"
};

struct CreditTrace {
  uint32_t layer = 0, neuron = 0;
  int64_t step = 0;
  CreditDirection direction = CreditDirection::Forward;
  std::vector<CreditHop> hops;
  std::vector<std::string> messages;  // where and why the trace stopped, layers skipped
  std::optional<InputRegion> input_region;
};

// All contributions to one target neuron over one hop (no budget): the building block of traces and time series.
struct HopContributions {
  CreditHop hop;               // with every source neuron in `neurons`, in neuron order, share = normalised
  std::vector<double> values;  // raw contribution of every source neuron
  bool ok = false;
  std::string message;  // why not, when !ok
};

// Contributions of a layer's neurons across snapshots around a focus step.
struct CreditOverTime {
  std::vector<int64_t> steps;
  std::vector<uint32_t> neurons;            // source neurons followed (the focus step's strongest)
  std::vector<std::vector<double>> values;  // values[k][t]: neuron k at steps[t]; NaN where not computable
  uint32_t source_layer = 0;
  std::vector<std::string> messages;
};

// Grid order of a layer's neurons: similar profiles side by side, only the highly contributing shown by default.
struct NeuronGrid {
  std::vector<uint32_t> order;   // shown neurons, similar side by side
  std::vector<int> cluster;      // per shown neuron (same order)
  std::vector<uint32_t> hidden;  // neurons below the threshold
};

// Orders the rows of `profiles` (one row per neuron, any number of columns: contributions to several targets, or a
// time series) by average-linkage clustering on correlation distance; neurons whose `strength` is below
// `min_fraction` of the largest are hidden. At most `max_shown` neurons are clustered (the strongest).
NeuronGrid neuron_grid_order(const std::vector<std::vector<double>>& profiles, const std::vector<double>& strength,
                             double min_fraction = 0.1, size_t max_shown = 512, double cut = 0.5);

// Computes credit from a recording. Loaded tensors and batch means are cached, so repeated traces (the viewer
// following the user's clicks) only do the arithmetic.
class CreditAssignment {
 public:
  explicit CreditAssignment(format::RunReader& reader);
  ~CreditAssignment();
  CreditAssignment(const CreditAssignment&) = delete;
  CreditAssignment& operator=(const CreditAssignment&) = delete;

  const LayerGraph& graph() const { return graph_; }

  CreditTrace trace(int64_t step, uint32_t layer, uint32_t neuron, CreditDirection direction,
                    const CreditOptions& options = {});
  // One hop from `layer` (forward: a weighted layer, or a layer reached through elementwise layers from one;
  // backward: any layer whose output a weighted layer consumes).
  HopContributions contributions(int64_t step, uint32_t layer, uint32_t neuron, CreditDirection direction,
                                 const CreditOptions& options = {});
  // The first hop's contributions at every step in [focus-before, focus+after] where the data exists.
  CreditOverTime over_time(int64_t step, uint32_t layer, uint32_t neuron, CreditDirection direction, int64_t before,
                           int64_t after, const CreditOptions& options = {});
  InputRegion input_region(uint32_t layer, int64_t y, int64_t x);

  void clear_cache();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  LayerGraph graph_;
};

// Resolves a layer given by dotted name (or "(root)") or numeric id; nullopt when unknown.
std::optional<uint32_t> find_layer(const LayerGraph& graph, const std::string& name_or_id);

}  // namespace trainscope::analysis
