// Finds each module's forward output among the ATen ops of a captured step, and which module feeds which.
// LibTorch C++ has no module hooks, so an at::RecordFunction observer looks at every top-level op: an op taking a
// module's own parameter is that module running; an op a parameter-free activation module stands for (aten::relu
// for ReLU, ...) applied to the output of the module registered just before it is that module running. Tensor
// provenance (which layers a tensor was computed from) flows through all other ops, which gives the graph.
#pragma once

#include <torch/types.h>

#include <c10/core/TensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "neuron_stats.h"

namespace at {
struct RecordFunction;
struct ObserverContext;
}  // namespace at

namespace trainscope::detail {

struct LayerInfo {
  std::string name;
  std::string kind;
  bool channel_axis = false;  // neuron = dim 1 (conv, batch norm, pooling); otherwise the last dim
  bool has_parameters = false;
  int32_t follows = -1;                   // parameter-free follower: the module registered just before it
  std::vector<std::string> follower_ops;  // op names ("relu", "dropout") a follower module runs
};

// One forward call of a layer: statistics of its output (undefined when activations are not captured).
struct ActivationCall {
  CallStats stats;
  bool live = true;  // false when a later op of the same module replaced this output (x W, then + b)
};

struct LayerCapture {
  std::vector<ActivationCall> activation;
  std::vector<std::pair<size_t, CallStats>> activation_grad;  // (call index, statistics)
  torch::Tensor full_activation, full_activation_grad;        // first call, on the host, when asked for
  size_t full_call = 0;                                       // the op (index into activation) they are of
  std::vector<int64_t> output_shape;                          // without the batch dimension
  int order = -1;                                             // forward order within the step
};

// Filled by the observer and by gradient hooks; hooks hold a reference, since autograd may keep them longer.
struct CaptureBuffers {
  std::mutex mutex;
  uint64_t generation = 0;  // hooks of an older step are ignored
  std::vector<LayerCapture> layers;
  bool want_grad = false, want_full_grad = false;
};

// What a hook on an activation's gradient records: the statistics of that gradient, as call `call` of `layer` in
// the buffers of the arming (`generation`) that saw the forward.
struct ActivationGradRecorder {
  std::shared_ptr<CaptureBuffers> buffers;
  uint32_t layer;
  size_t call;
  int64_t dim;
  double count;
  uint64_t generation;
  void operator()(const at::Tensor& grad) const;
};

struct ArmOptions {
  bool activations = true;
  bool activation_grads = true;
  bool full_activations = false;
  bool full_activation_grads = false;
  bool probe = false;  // ops run without autograd (a probe batch under NoGradGuard) count too
};

class OpObserver {
 public:
  explicit OpObserver(std::vector<LayerInfo> layers);
  ~OpObserver();
  OpObserver(const OpObserver&) = delete;
  OpObserver& operator=(const OpObserver&) = delete;

  // Module parameters by TensorImpl; refreshed before each captured step so that replaced parameters are found.
  void set_parameters(std::unordered_map<const c10::TensorImpl*, uint32_t> owner);
  // Starts capturing on the calling thread; the previous capture's buffers are dropped.
  void arm(const ArmOptions& options);
  // Stops capturing; the buffers stay readable until the next arm().
  void disarm();
  bool armed() const { return armed_; }
  // Captures whose full callback waited for the first op in grad mode (the optimizer's step ran unobserved).
  int64_t waited_captures() const { return waited_captures_; }
  // Ops the full callback was called for, over all armings: top-level ops only, and a backward pass's first node.
  int64_t observed_ops() const { return observed_ops_; }

  const std::shared_ptr<CaptureBuffers>& buffers() const { return buffers_; }
  // Edges seen in all captured steps so far, and whether they close a cycle (the target ran first).
  std::vector<std::pair<std::pair<uint32_t, uint32_t>, bool>> edges() const;
  // Layers in the order they first ran (over all captured steps).
  const std::vector<int>& first_run_order() const { return first_order_; }
  // Whether new edges or layers run for the first time were seen since the last call. Output shapes are the
  // recorder's to compare with its metadata.
  bool take_graph_changed();

  // RecordFunction callbacks of this observer's slot.
  static std::unique_ptr<at::ObserverContext> on_start(OpObserver* self, const at::RecordFunction& fn);
  static void on_end(OpObserver* self, const at::RecordFunction& fn, at::ObserverContext* ctx);
  // The lightweight callback of an arming that waits for the training loop to leave the optimizer's step.
  static void on_waiting(OpObserver* self, const at::RecordFunction& fn);

 private:
  struct OpContext;
  bool claim_slot();
  void pause_for_backward();
  struct Provenance {
    c10::weak_intrusive_ptr<c10::TensorImpl> keep;  // pins the address while the entry lives
    std::vector<uint32_t> from;                     // layers this tensor was computed from
    int32_t direct = -1;                            // the layer whose output this tensor is
  };

  void learn_first_grad_op(const at::RecordFunction& fn, const OpContext& ctx);
  void start_op(const at::RecordFunction& fn, OpContext& ctx);
  void end_op(const at::RecordFunction& fn, OpContext& ctx);
  void take_activation(uint32_t layer, const torch::Tensor& out, bool replaces_previous);
  void add_edge(uint32_t from, uint32_t to);
  void note_run(uint32_t layer);

  std::vector<LayerInfo> layers_;
  std::vector<std::vector<uint32_t>> followers_;  // by layer: the parameter-free modules that follow it
  std::unordered_map<const c10::TensorImpl*, uint32_t> owner_;
  std::unordered_map<const c10::TensorImpl*, Provenance> provenance_;
  // Tensors computed from parameters alone (weight.t(), a masked weight) stand for their module's parameters.
  std::unordered_map<const c10::TensorImpl*, uint32_t> derived_;
  std::vector<c10::weak_intrusive_ptr<c10::TensorImpl>> derived_keep_;
  std::shared_ptr<CaptureBuffers> buffers_;
  ArmOptions options_;
  bool armed_ = false;
  std::atomic<bool> paused_{false};  // switched off for the rest of a backward pass (set back on any thread)
  // Bumped by arm() and disarm(): an end-of-backward callback of an earlier arming does nothing.
  std::shared_ptr<std::atomic<uint64_t>> arm_epoch_ = std::make_shared<std::atomic<uint64_t>>(0);
  // Armed right after step(), the full callback (inputs and outputs boxed for every op) would see the optimizer's
  // ~10 ops per parameter, all under NoGradGuard and useless to it: 0.1-0.3 ms a captured step for the VAE. Once
  // two eager captures in a row began in grad mode with the same unconnected op, an arming waits behind a callback
  // without inputs for that op and turns the full one on there.
  enum class LazyArming { Unknown, SeenOnce, Safe, Refused };
  LazyArming lazy_ = LazyArming::Unknown;
  std::string first_grad_op_;
  bool first_grad_op_seen_ = false;  // in this arming
  bool waiting_ = false;
  int64_t waited_captures_ = 0;
  int64_t observed_ops_ = 0;
  int slot_ = -1;  // callback slot, claimed on first arm()
  int depth_ = 0;
  bool muted_ = false;  // the callback is off for the ops nested in the current top-level op
  int next_order_ = 0;
  std::vector<int> first_order_;  // layer ids
  std::vector<int> first_rank_;   // position of each layer in first_order_, -1 if never ran
  std::set<std::pair<uint32_t, uint32_t>> edges_;
  bool graph_changed_ = false;
};

}  // namespace trainscope::detail
