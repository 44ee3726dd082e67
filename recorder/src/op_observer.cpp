#include "op_observer.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "neuron_stats.h"

namespace trainscope::detail {

namespace {

// Each observer owns one of a few callback slots: RecordFunction callbacks are plain function pointers, so every
// slot has its own pair of trampolines reading its own thread-local observer. Ops of other threads (data loading,
// another job) see no observer and are not attributed to this model.
constexpr int kSlots = 8;
thread_local OpObserver* t_active[kSlots] = {};
std::mutex g_slot_mutex;
std::array<at::CallbackHandle, kSlots> g_handles{};
std::array<bool, kSlots> g_used{};

std::array<at::CallbackHandle, kSlots> g_waiting_handles{};  // the slots' lightweight "wait for the forward" callbacks

template <int I>
std::unique_ptr<at::ObserverContext> slot_start(const at::RecordFunction& fn) {
  return OpObserver::on_start(t_active[I], fn);
}
template <int I>
std::unique_ptr<at::ObserverContext> slot_wait(const at::RecordFunction& fn) {
  OpObserver::on_waiting(t_active[I], fn);
  return nullptr;
}
template <int I>
void slot_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  OpObserver::on_end(t_active[I], fn, ctx);
}
template <size_t... I>
constexpr std::array<std::pair<at::RecordFunctionCallback::StartCallback, at::RecordFunctionCallback::EndCallback>,
                     sizeof...(I)>
slot_table(std::index_sequence<I...>) {
  return {{{&slot_start<int(I)>, &slot_end<int(I)>}...}};
}
const auto g_trampolines = slot_table(std::make_index_sequence<kSlots>{});
template <size_t... I>
constexpr std::array<at::RecordFunctionCallback::StartCallback, sizeof...(I)> waiting_table(std::index_sequence<I...>) {
  return {{&slot_wait<int(I)>...}};
}
const auto g_waiting_trampolines = waiting_table(std::make_index_sequence<kSlots>{});

std::string_view base_op_name(const char* name) {
  std::string_view n(name);
  if (n.rfind("aten::", 0) == 0) n.remove_prefix(6);
  if (!n.empty() && n.back() == '_') n.remove_suffix(1);  // in-place variant: relu_ is relu
  return n;
}

bool is_recurrent_op(std::string_view n) {
  return n == "lstm" || n == "gru" || n == "rnn_tanh" || n == "rnn_relu";
}

template <typename F>
void for_each_tensor(const c10::IValue& v, F&& f) {
  if (v.isTensor()) {
    f(v.toTensor());
  } else if (v.isTensorList()) {
    const c10::List<at::Tensor> list = v.toTensorList();
    for (size_t i = 0; i < list.size(); ++i) f(list.get(i));
  } else if (v.isTuple()) {
    for (const c10::IValue& e : v.toTupleRef().elements()) for_each_tensor(e, f);
  }
}

// Calls the recorder on the gradient with respect to output `output_nr` of the node it is attached to.
struct ActivationGradHook : torch::autograd::FunctionPreHook {
  ActivationGradHook(ActivationGradRecorder r, uint32_t nr) : record(std::move(r)), output_nr(nr) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& grads) override {
    if (output_nr < grads.size()) record(grads[output_nr]);
    return grads;
  }
  ActivationGradRecorder record;
  uint32_t output_nr;
};

}  // namespace

struct OpObserver::OpContext : at::ObserverContext {
  int32_t layer = -1;           // the module this op stands for
  bool replaces = false;        // continues the same module's previous op (its input is that op's output)
  bool parameter_only = false;  // all tensor inputs are parameters: the output is a derived parameter (weight.t())
  std::vector<uint32_t> from;
};

OpObserver::OpObserver(std::vector<LayerInfo> layers)
    : layers_(std::move(layers)), buffers_(std::make_shared<CaptureBuffers>()), first_rank_(layers_.size(), -1) {
  buffers_->layers.resize(layers_.size());
  followers_.resize(layers_.size());
  for (uint32_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].follows >= 0 && size_t(layers_[i].follows) < layers_.size())
      followers_[size_t(layers_[i].follows)].push_back(i);
}

OpObserver::~OpObserver() {
  if (armed_) disarm();
  if (slot_ >= 0) {
    std::lock_guard<std::mutex> lock(g_slot_mutex);
    g_used[size_t(slot_)] = false;  // the disabled callback stays registered for the next observer in this slot
  }
}

bool OpObserver::claim_slot() {
  if (slot_ >= 0) return true;
  std::lock_guard<std::mutex> lock(g_slot_mutex);
  for (int i = 0; i < kSlots; ++i) {
    if (g_used[size_t(i)]) continue;
    g_used[size_t(i)] = true;
    slot_ = i;
    if (g_handles[size_t(i)] == at::INVALID_CALLBACK_HANDLE) {
      g_handles[size_t(i)] = at::addGlobalCallback(
          at::RecordFunctionCallback(g_trampolines[size_t(i)].first, g_trampolines[size_t(i)].second)
              .needsInputs(true)
              .needsOutputs(true)
              .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
    }
    if (g_waiting_handles[size_t(i)] == at::INVALID_CALLBACK_HANDLE) {
      // No inputs, no outputs, no end callback: an op costs little more than with no callback at all.
      g_waiting_handles[size_t(i)] = at::addGlobalCallback(
          at::RecordFunctionCallback(g_waiting_trampolines[size_t(i)]).scopes({at::RecordScope::FUNCTION}));
    }
    at::disableCallback(g_handles[size_t(i)]);
    at::disableCallback(g_waiting_handles[size_t(i)]);
    return true;
  }
  return false;
}

void OpObserver::set_parameters(std::unordered_map<const c10::TensorImpl*, uint32_t> owner) {
  owner_ = std::move(owner);
}

void OpObserver::arm(const ArmOptions& options) {
  if (armed_) disarm();
  options_ = options;
  auto fresh = std::make_shared<CaptureBuffers>();
  fresh->generation = buffers_->generation + 1;
  fresh->layers.resize(layers_.size());
  fresh->want_grad = options.activation_grads;
  fresh->want_full_grad = options.full_activation_grads;
  buffers_ = std::move(fresh);
  provenance_.clear();
  derived_.clear();
  derived_keep_.clear();
  depth_ = 0;
  muted_ = false;
  next_order_ = 0;
  paused_ = false;
  first_grad_op_seen_ = false;
  arm_epoch_->fetch_add(1);
  if (!claim_slot()) return;  // more live observers than slots: this one captures nothing
  waiting_ = !options.probe && lazy_ == LazyArming::Safe;
  if (waiting_) {
    at::reenableCallback(g_waiting_handles[size_t(slot_)]);
  } else {
    at::reenableCallback(g_handles[size_t(slot_)]);
  }
  t_active[slot_] = this;
  armed_ = true;
}

void OpObserver::on_waiting(OpObserver* self, const at::RecordFunction& fn) {
  if (!self || !self->waiting_ || !at::GradMode::is_enabled()) return;  // the optimizer's step, no_grad code
  // This op is the first one of the loop in grad mode, and the full callback sees only the ops after it: it was
  // enabled on the promise that this op is the same unconnected one (zero_grad()'s detach_) as in the last eager
  // captures. Another op breaks the promise: from now on every capture observes from its start.
  self->waiting_ = false;
  ++self->waited_captures_;
  if (self->first_grad_op_ != fn.name()) self->lazy_ = LazyArming::Refused;
  at::disableCallback(g_waiting_handles[size_t(self->slot_)]);
  at::reenableCallback(g_handles[size_t(self->slot_)]);
}

void OpObserver::learn_first_grad_op(const at::RecordFunction& fn, const OpContext& ctx) {
  first_grad_op_seen_ = true;
  if (lazy_ == LazyArming::Refused || lazy_ == LazyArming::Safe) return;
  // Unconnected: no parameter among its inputs and none computed from a layer, so the graph and the statistics
  // would not change if it went unseen.
  const bool unconnected = ctx.layer < 0 && ctx.from.empty();
  if (!unconnected) {
    lazy_ = LazyArming::Unknown;
    first_grad_op_.clear();
    return;
  }
  if (lazy_ == LazyArming::SeenOnce && first_grad_op_ == fn.name()) {
    lazy_ = LazyArming::Safe;
    return;
  }
  lazy_ = LazyArming::SeenOnce;
  first_grad_op_ = fn.name();
}

void OpObserver::disarm() {
  if (!armed_) return;
  armed_ = false;
  paused_ = false;
  muted_ = false;
  arm_epoch_->fetch_add(1);  // a pending end-of-backward callback must not switch the callback on again
  if (t_active[slot_] == this) t_active[slot_] = nullptr;
  if (waiting_) at::disableCallback(g_waiting_handles[size_t(slot_)]);
  waiting_ = false;
  at::disableCallback(g_handles[size_t(slot_)]);
  provenance_.clear();  // releases the pinned TensorImpls
  derived_.clear();
  derived_keep_.clear();
}

std::unique_ptr<at::ObserverContext> OpObserver::on_start(OpObserver* self, const at::RecordFunction& fn) {
  if (!self) return nullptr;
  ++self->observed_ops_;
  // Every op is counted in depth_ (on_end runs for it with or without a context), so that only top-level ops are
  // taken; only those get a context, the others cost no allocation.
  const bool top = self->depth_++ == 0;
  // The backward pass runs (its first autograd node, which the engine wraps in an "autograd::engine::
  // evaluate_function: ..." range of function scope): nothing in it is a forward op, so the callback is switched
  // off until it ends. Gradient hooks still fire.
  if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION || std::strncmp(fn.name(), "autograd::engine::", 18) == 0) {
    self->pause_for_backward();
    return nullptr;
  }
  if (!top) return nullptr;
  // The ops this one runs (aten::linear's t and addmm, a dozen inside a loss) would each have their inputs and
  // outputs boxed for nothing: the callback is off until this op ends, and on_end switches it on again. Measured
  // on the VAE's forward, observer armed without statistics, interleaved with bare forwards: +143-170 us over the
  // bare forward with nested ops seen, +104-143 us with them off (in recorder_bench's whole loop, within its noise).
  self->muted_ = true;
  at::disableCallback(g_handles[size_t(self->slot_)]);
  if (!self->options_.probe && !at::GradMode::is_enabled()) return nullptr;  // the optimizer, no_grad code
  auto ctx = std::make_unique<OpContext>();
  try {
    self->start_op(fn, *ctx);
  } catch (...) {
    return nullptr;  // an op we cannot read is simply not attributed
  }
  if (!self->first_grad_op_seen_ && !self->options_.probe) self->learn_first_grad_op(fn, *ctx);
  return ctx;
}

void OpObserver::on_end(OpObserver* self, const at::RecordFunction& fn, at::ObserverContext* base) {
  if (!self) return;
  if (self->depth_ > 0) --self->depth_;
  if (self->depth_ == 0 && self->muted_) {
    self->muted_ = false;
    if (self->armed_ && !self->paused_) at::reenableCallback(g_handles[size_t(self->slot_)]);
  }
  if (!base) return;
  try {
    self->end_op(fn, *static_cast<OpContext*>(base));
  } catch (...) {
  }
}

void OpObserver::pause_for_backward() {
  if (paused_) return;
  // An autograd final callback runs when this backward pass (or autograd::grad call) has finished, before it
  // returns: ops after it (a second forward, as in a GAN's generator step) are seen again.
  const std::shared_ptr<std::atomic<uint64_t>> epoch = arm_epoch_;
  const uint64_t armed_epoch = epoch->load();
  const at::CallbackHandle handle = g_handles[size_t(slot_)];
  try {
    torch::autograd::Engine::get_default_engine().queue_callback([epoch, armed_epoch, handle, this] {
      if (epoch->load() != armed_epoch) return;  // disarmed (and maybe armed again) since
      paused_ = false;
      at::reenableCallback(handle);
    });
  } catch (...) {
    return;  // not inside an autograd pass after all: keep observing
  }
  paused_ = true;
  at::disableCallback(handle);
}

void OpObserver::start_op(const at::RecordFunction& fn, OpContext& ctx) {
  const c10::TensorImpl* first_input = nullptr;
  std::vector<int32_t> single_source;  // inputs computed from exactly one layer
  for (const c10::IValue& v : fn.inputs()) {
    for_each_tensor(v, [&](const at::Tensor& t) {
      if (!t.defined()) return;
      const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
      int32_t owner = -1;
      if (auto o = owner_.find(impl); o != owner_.end()) owner = int32_t(o->second);
      if (auto d = derived_.find(impl); owner < 0 && d != derived_.end()) owner = int32_t(d->second);
      if (owner >= 0) {
        if (ctx.layer < 0) ctx.layer = owner;
        return;
      }
      if (!first_input) first_input = impl;
      if (auto p = provenance_.find(impl); p != provenance_.end()) {
        if (p->second.from.size() == 1) single_source.push_back(int32_t(p->second.from.front()));
        for (uint32_t id : p->second.from)
          if (std::find(ctx.from.begin(), ctx.from.end(), id) == ctx.from.end()) ctx.from.push_back(id);
      }
    });
  }
  if (ctx.layer >= 0 && !first_input) {
    ctx.parameter_only = true;
    return;
  }
  const std::string_view name = base_op_name(fn.name());
  int32_t direct = -1;
  if (first_input)
    if (auto p = provenance_.find(first_input); p != provenance_.end()) direct = p->second.direct;

  if (ctx.layer >= 0) {
    const auto layer = uint32_t(ctx.layer);
    // An input computed from this module's own output alone continues the module's forward (x W, then + b, or
    // a scale parameter applied to an activation); a recurrence also mixes in other inputs.
    ctx.replaces = std::find(single_source.begin(), single_source.end(), ctx.layer) != single_source.end();
    for (uint32_t id : ctx.from)
      if (id != layer || !ctx.replaces) add_edge(id, layer);
    if (is_recurrent_op(name)) add_edge(layer, layer);
    return;
  }
  if (direct >= 0 && size_t(direct) < followers_.size()) {
    // A parameter-free module registered right after the module that produced this op's input (looked up by that
    // module: a scan of all layers per op cost O(ops x layers) on models with hundreds of layers).
    for (const uint32_t i : followers_[size_t(direct)]) {
      const LayerInfo& info = layers_[i];
      if (std::find(info.follower_ops.begin(), info.follower_ops.end(), name) == info.follower_ops.end()) continue;
      ctx.layer = int32_t(i);
      add_edge(uint32_t(direct), uint32_t(i));
      return;
    }
  }
}

void OpObserver::end_op(const at::RecordFunction& fn, OpContext& ctx) {
  bool first = true;
  for (const c10::IValue& v : fn.outputs()) {
    for_each_tensor(v, [&](const at::Tensor& t) {
      if (!t.defined()) return;
      c10::TensorImpl* impl = t.unsafeGetTensorImpl();
      if (ctx.parameter_only) {
        derived_[impl] = uint32_t(ctx.layer);
        derived_keep_.emplace_back(t.getIntrusivePtr());
      } else if (ctx.layer >= 0) {
        if (first) take_activation(uint32_t(ctx.layer), t, ctx.replaces);
        first = false;
        provenance_.insert_or_assign(
            impl, Provenance{
                      c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), {uint32_t(ctx.layer)}, ctx.layer});
      } else if (!ctx.from.empty()) {
        provenance_.insert_or_assign(
            impl, Provenance{c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), ctx.from, -1});
      } else {
        provenance_.erase(impl);
      }
    });
  }
}

void OpObserver::note_run(uint32_t layer) {
  LayerCapture& cap = buffers_->layers[layer];
  if (cap.order < 0) cap.order = next_order_++;
  if (first_rank_[layer] < 0) {
    first_rank_[layer] = int(first_order_.size());
    first_order_.push_back(int(layer));
    graph_changed_ = true;
  }
}

void OpObserver::take_activation(uint32_t layer, const torch::Tensor& out, bool replaces_previous) {
  // Our own tensor work must not be observed (it would recurse) nor recorded by autograd.
  at::DisableRecordFunctionGuard no_observer;
  torch::NoGradGuard no_grad;
  std::unique_lock<std::mutex> lock(buffers_->mutex);
  LayerCapture& cap = buffers_->layers[layer];
  note_run(layer);
  if (out.dim() == 0 || !out.is_floating_point()) return;
  const int64_t dim = layers_[layer].channel_axis && out.dim() >= 2 ? 1 : out.dim() - 1;
  if (cap.output_shape.empty()) {
    auto sizes = out.sizes().vec();
    if (sizes.size() >= 2) sizes.erase(sizes.begin());
    cap.output_shape = std::move(sizes);  // the recorder compares it with the metadata's
  }
  const int64_t neurons = out.size(dim);
  const double count = neurons ? double(out.numel()) / double(neurons) : 0;
  if (replaces_previous && !cap.activation.empty()) cap.activation.back().live = false;
  const size_t call = cap.activation.size();
  // The full tensors are of the module's first call as it ends: the last op continuing it (x W, then + b, then a
  // user module's own arithmetic), the same output its statistics describe.
  const bool first_call = call == 0 || (replaces_previous && cap.full_call + 1 == call);
  if (first_call) cap.full_call = call;
  ActivationCall taken;
  if (options_.activations) taken.stats = compute_neuron_stats(out, dim);
  taken.stats.count = count;
  cap.activation.push_back(std::move(taken));
  if (options_.full_activations && first_call)
    cap.full_activation = out.detach().to(torch::kCPU, torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
  if ((options_.activation_grads || options_.full_activation_grads) && out.requires_grad()) {
    lock.unlock();
    ActivationGradRecorder record{buffers_, layer, call, dim, count, buffers_->generation};
    // A pre-hook of the node that computed the output gets the gradient with respect to it: one allocation, where
    // Tensor::register_hook made half a dozen (its hook list, two std::function wrappers, two hook objects; ~3.6 us
    // an activation for the VAE). A tensor without a grad_fn (a leaf) takes a tensor hook.
    if (const std::shared_ptr<torch::autograd::Node>& node = out.grad_fn())
      node->add_pre_hook(std::make_unique<ActivationGradHook>(std::move(record), out.output_nr()));
    else
      out.register_hook([record = std::move(record)](const at::TensorBase& grad) { record(at::Tensor(grad)); });
  }
}

void ActivationGradRecorder::operator()(const at::Tensor& grad) const {
  try {
    at::DisableRecordFunctionGuard no_observer_in_hook;
    torch::NoGradGuard no_grad_in_hook;
    if (!grad.defined()) return;
    // want_grad and generation never change once the buffers exist: the reduction runs outside the lock.
    CallStats stats;
    if (buffers->want_grad) {
      stats = compute_neuron_stats(grad, dim);
      stats.count = count;
    }
    std::lock_guard<std::mutex> hook_lock(buffers->mutex);
    if (buffers->generation != generation) return;
    LayerCapture& c = buffers->layers[layer];
    if (buffers->want_grad) c.activation_grad.emplace_back(call, std::move(stats));
    if (buffers->want_full_grad && !c.full_activation_grad.defined() && call == c.full_call)
      c.full_activation_grad = grad.detach().to(torch::kCPU, torch::kFloat, false, true);
  } catch (...) {
    // Never disturb the user's backward pass.
  }
}

void OpObserver::add_edge(uint32_t from, uint32_t to) {
  // insert(), not emplace(): a std::set builds the node before it looks, one allocation per op for an edge it has.
  if (edges_.insert({from, to}).second) graph_changed_ = true;
}

std::vector<std::pair<std::pair<uint32_t, uint32_t>, bool>> OpObserver::edges() const {
  std::vector<std::pair<std::pair<uint32_t, uint32_t>, bool>> out;
  for (const auto& e : edges_) {
    const int a = first_rank_[e.first], b = first_rank_[e.second];
    // A feed into a layer that ran first closes a cycle: a recurrence (or a module reused later in the pass).
    const bool recurrent = e.first == e.second || (a >= 0 && b >= 0 && a >= b);
    out.push_back({e, recurrent});
  }
  return out;
}

bool OpObserver::take_graph_changed() {
  const bool changed = graph_changed_;
  graph_changed_ = false;
  return changed;
}

}  // namespace trainscope::detail
