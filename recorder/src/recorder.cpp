#include <ATen/record_function.h>
#include <torch/torch.h>
#include <trainscope/recorder.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <unordered_map>

#include "loss_spike.h"
#include "neuron_stats.h"
#include "op_observer.h"

namespace trainscope {

using format::Quantity;

std::string_view anomaly_name(AnomalyKind kind) {
  switch (kind) {
    case AnomalyKind::None: return "none";
    case AnomalyKind::NonFiniteLoss: return "non_finite_loss";
    case AnomalyKind::NonFiniteTensor: return "non_finite_tensor";
    case AnomalyKind::LossSpike: return "loss_spike";
  }
  return "unknown";
}

namespace {

using Clock = std::chrono::steady_clock;

std::string module_kind(const torch::nn::Module& m) {
  std::string n = m.name();
  if (auto lt = n.find('<'); lt != std::string::npos) n.resize(lt);  // template arguments
  if (auto colon = n.rfind("::"); colon != std::string::npos) n = n.substr(colon + 2);
  if (n.size() > 4 && n.compare(n.size() - 4, 4, "Impl") == 0) n.resize(n.size() - 4);
  return n;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.rfind(prefix, 0) == 0;
}

template <size_t D>
std::vector<int64_t> axes(const torch::ExpandingArray<D>& a) {
  return {a->begin(), a->end()};
}

// Stride, padding and dilation of a convolution, from its options: the neuron-level analysis maps an output position
// to the input region it sees with them, instead of guessing from shapes.
template <size_t D, typename Derived>
bool conv_geometry(const torch::nn::Module& m, format::LayerGeometry* g) {
  const auto* conv = dynamic_cast<const torch::nn::ConvNdImpl<D, Derived>*>(&m);
  if (!conv) return false;
  const auto& o = conv->options;
  g->kernel_size = axes<D>(o.kernel_size());
  g->stride = axes<D>(o.stride());
  g->dilation = axes<D>(o.dilation());
  if (const auto* pad = c10::get_if<torch::ExpandingArray<D>>(&o.padding())) {
    g->padding = axes<D>(*pad);
  } else {
    g->padding.assign(D, 0);  // kValid
    if (c10::get_if<torch::enumtype::kSame>(&o.padding()))
      for (size_t i = 0; i < D; ++i) g->padding[i] = g->dilation[i] * (g->kernel_size[i] - 1) / 2;  // left side
  }
  g->groups = o.groups();
  g->transposed = o.transposed();
  if (o.transposed()) g->output_padding = axes<D>(o.output_padding());
  return true;
}

template <size_t D, typename Derived>
bool max_pool_geometry(const torch::nn::Module& m, format::LayerGeometry* g) {
  const auto* pool = dynamic_cast<const torch::nn::MaxPoolImpl<D, Derived>*>(&m);
  if (!pool) return false;
  const auto& o = pool->options;
  g->kernel_size = axes<D>(o.kernel_size());
  g->stride = axes<D>(o.stride());
  g->padding = axes<D>(o.padding());
  g->dilation = axes<D>(o.dilation());
  g->ceil_mode = o.ceil_mode();
  return true;
}

template <size_t D, typename Derived>
bool avg_pool_geometry(const torch::nn::Module& m, format::LayerGeometry* g) {
  const auto* pool = dynamic_cast<const torch::nn::AvgPoolImpl<D, Derived>*>(&m);
  if (!pool) return false;
  const auto& o = pool->options;
  g->kernel_size = axes<D>(o.kernel_size());
  g->stride = axes<D>(o.stride());
  g->padding = axes<D>(o.padding());
  g->dilation.assign(D, 1);
  g->ceil_mode = o.ceil_mode();
  return true;
}

std::optional<format::LayerGeometry> layer_geometry(const torch::nn::Module& m) {
  namespace nn = torch::nn;
  format::LayerGeometry g;
  if (conv_geometry<1, nn::Conv1dImpl>(m, &g) || conv_geometry<2, nn::Conv2dImpl>(m, &g) ||
      conv_geometry<3, nn::Conv3dImpl>(m, &g) || conv_geometry<1, nn::ConvTranspose1dImpl>(m, &g) ||
      conv_geometry<2, nn::ConvTranspose2dImpl>(m, &g) || conv_geometry<3, nn::ConvTranspose3dImpl>(m, &g) ||
      max_pool_geometry<1, nn::MaxPool1dImpl>(m, &g) || max_pool_geometry<2, nn::MaxPool2dImpl>(m, &g) ||
      max_pool_geometry<3, nn::MaxPool3dImpl>(m, &g) || avg_pool_geometry<1, nn::AvgPool1dImpl>(m, &g) ||
      avg_pool_geometry<2, nn::AvgPool2dImpl>(m, &g) || avg_pool_geometry<3, nn::AvgPool3dImpl>(m, &g))
    return g;
  return std::nullopt;
}

bool kind_has_channel_axis(const std::string& kind) {
  for (std::string_view p : {"Conv", "BatchNorm", "InstanceNorm", "GroupNorm", "MaxPool", "AvgPool", "AdaptiveAvgPool",
                             "AdaptiveMaxPool", "Dropout2d", "Dropout3d", "FeatureAlphaDropout", "Upsample",
                             "PixelShuffle", "ZeroPad", "ReflectionPad", "ReplicationPad", "LocalResponseNorm"})
    if (starts_with(kind, p)) return true;
  return false;
}

// ATen ops a parameter-free module runs as its forward (base names, in-place suffix removed).
std::vector<std::string> follower_ops_for(const std::string& kind) {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"ReLU", {"relu"}},
      {"ReLU6", {"hardtanh", "relu6"}},
      {"LeakyReLU", {"leaky_relu"}},
      {"ELU", {"elu"}},
      {"SELU", {"selu"}},
      {"CELU", {"celu"}},
      {"GELU", {"gelu"}},
      {"SiLU", {"silu"}},
      {"Mish", {"mish"}},
      {"Sigmoid", {"sigmoid"}},
      {"Tanh", {"tanh"}},
      {"Softplus", {"softplus"}},
      {"Softmax", {"softmax", "_softmax"}},
      {"LogSoftmax", {"log_softmax", "_log_softmax"}},
      {"Hardtanh", {"hardtanh"}},
      {"Threshold", {"threshold"}},
      {"Dropout", {"dropout", "feature_dropout"}},
      {"Dropout2d", {"dropout", "feature_dropout"}},
      {"Dropout3d", {"dropout", "feature_dropout"}},
      {"AlphaDropout", {"alpha_dropout"}},
      {"FeatureAlphaDropout", {"feature_alpha_dropout"}},
      {"MaxPool1d", {"max_pool1d", "max_pool1d_with_indices"}},
      {"MaxPool2d", {"max_pool2d", "max_pool2d_with_indices"}},
      {"MaxPool3d", {"max_pool3d", "max_pool3d_with_indices"}},
      {"AvgPool1d", {"avg_pool1d"}},
      {"AvgPool2d", {"avg_pool2d"}},
      {"AvgPool3d", {"avg_pool3d"}},
      {"AdaptiveAvgPool1d", {"adaptive_avg_pool1d"}},
      {"AdaptiveAvgPool2d", {"adaptive_avg_pool2d"}},
      {"AdaptiveMaxPool2d", {"adaptive_max_pool2d"}},
      {"Flatten", {"flatten"}},
      {"Unflatten", {"unflatten"}},
  };
  auto it = table.find(kind);
  return it == table.end() ? std::vector<std::string>{} : it->second;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return end && *end == 0 ? int(x) : fallback;
}

// A module's direct parameters of one kind ("weight*" or "bias*") as one matrix: a neuron's incoming weights are a
// row (the output channel of a conv; gate units of an LSTM, all its weight matrices side by side). This is the row
// count, each parameter giving numel() / rows columns; parameters of unequal row counts are treated as one neuron.
int64_t parameter_rows(const std::vector<torch::Tensor>& params) {
  const auto rows = [](const torch::Tensor& p) { return p.dim() == 0 ? int64_t(1) : p.size(0); };
  for (const auto& p : params)
    if (rows(p) != rows(params.front())) return 1;
  return rows(params.front());
}

torch::Tensor parameter_matrix(const std::vector<torch::Tensor>& params) {
  const int64_t rows = parameter_rows(params);
  std::vector<torch::Tensor> parts;
  for (const auto& p : params) parts.push_back(p.reshape({rows, rows > 0 ? p.numel() / rows : 0}));
  return parts.size() == 1 ? parts.front() : torch::cat(parts, 1);
}

// Per-neuron statistics of parameter_matrix(params). For CPU float32 parameters the matrix is put together by
// copying into `scratch` rather than with reshape and cat: those ops took ~8% of a captured step() on the VAE, for
// one small module (enc.logvar: a weight and a temperature, so both go in one neuron).
detail::CallStats parameter_stats(const std::vector<torch::Tensor>& params, std::vector<float>& scratch) {
  if (params.size() == 1) return detail::compute_neuron_stats(params.front(), 0);
  const bool host = std::all_of(params.begin(), params.end(),
                                [](const torch::Tensor& p) { return detail::host_readable(p) && p.is_contiguous(); });
  if (!host) return detail::compute_neuron_stats(parameter_matrix(params), 0);
  const int64_t rows = parameter_rows(params);  // > 0: host_readable() parameters are not empty
  int64_t width = 0;
  for (const auto& p : params) width += p.numel() / rows;
  scratch.resize(size_t(rows * width));
  float* out = scratch.data();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0, offset = 0; k < int64_t(params.size()); ++k) {
      const int64_t n = params[size_t(k)].numel() / rows;
      std::copy_n(params[size_t(k)].data_ptr<float>() + i * n, n, out + i * width + offset);
      offset += n;
    }
  detail::CallStats stats;
  stats.host = detail::host_neuron_moments(out, 1, rows, width);
  stats.count = double(width);
  return stats;
}

size_t snapshot_bytes(const format::Snapshot& s) {
  size_t bytes = sizeof(s);
  for (const auto& r : s.layers) bytes += sizeof(r) + r.neuron_values.size() * sizeof(float);
  for (const auto& sc : s.scalars) bytes += sizeof(sc) + sc.first.size();
  return bytes;
}

// A loss or named scalar on the host: one element is read as it is (no conversion ops), more are averaged. A CPU
// float or double element is read from memory: item() is an op dispatch (~2 us, three of them every step).
double scalar_value(const torch::Tensor& t) {
  if (t.numel() == 1 && t.device().is_cpu() && t.layout() == torch::kStrided && !t.is_conj() && !t.is_neg()) {
    if (t.scalar_type() == torch::kFloat) return double(*t.data_ptr<float>());
    if (t.scalar_type() == torch::kDouble) return *t.data_ptr<double>();
  }
  if (t.numel() == 1) return t.item<double>();
  return t.detach().to(torch::kDouble).mean().item<double>();
}

std::vector<float> to_host_floats(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

struct Recorder::Impl {
  RecorderOptions options;
  std::shared_ptr<torch::nn::Module> model;
  std::filesystem::path dir;
  format::RunMetadata metadata;
  std::vector<std::shared_ptr<torch::nn::Module>> modules;  // by layer id
  std::vector<detail::LayerInfo> infos;
  std::unique_ptr<detail::OpObserver> observer;
  std::unique_ptr<format::RunWriter> writer;
  detail::LossSpikeDetector spikes;

  bool recording = true;  // false once a recording problem was reported, or after close()
  bool captured_this_step = false;
  int64_t step = 0;
  int64_t dense_until = -1;
  bool previous_anomalous = false;
  std::deque<format::Snapshot> ring;
  size_t ring_bytes = 0;
  RecorderStats stats;
  bool shapes_changed = false;  // collect() found a layer output shape the metadata did not have yet

  Impl(std::shared_ptr<torch::nn::Module> m, const std::filesystem::path& run_dir, RecorderOptions o)
      : options(std::move(o)),
        model(std::move(m)),
        spikes(options.spike_threshold, options.spike_window, options.spike_warmup) {
    options.interval = std::max<int64_t>(options.interval, 1);
    options.ring_interval = std::max<int64_t>(options.ring_interval, 1);
    const int rank = options.rank >= 0 ? options.rank : env_int("RANK", 0);
    const int world = options.world_size > 0 ? options.world_size : env_int("WORLD_SIZE", 1);
    dir = world > 1 ? run_dir / ("rank-" + std::to_string(rank)) : run_dir;
    build_hierarchy();
    metadata.header.rank = uint32_t(std::max(rank, 0));
    metadata.header.world_size = uint32_t(std::max(world, 1));
    metadata.header.model_name = options.model_name.empty() ? metadata.layers.front().kind : options.model_name;
    metadata.header.producer = "trainscope-recorder (libtorch " + std::to_string(TORCH_VERSION_MAJOR) + "." +
                               std::to_string(TORCH_VERSION_MINOR) + ")";
    // Rank 0 carries the job's configuration; the other ranks only say who they are.
    if (rank <= 0) {
      metadata.header.config = options.config;
      metadata.header.config["interval"] = std::to_string(options.interval);
      metadata.header.config["flight_recorder"] = options.flight_recorder ? "on" : "off";
    }
    observer = std::make_unique<detail::OpObserver>(infos);
    try {
      format::WriterOptions w = options.writer;
      w.precision = options.precision;
      writer = std::make_unique<format::RunWriter>(dir, metadata, w);
    } catch (const std::exception& e) {
      fail(e.what());
    }
    if (recording) arm_for(0);
  }

  void build_hierarchy() {
    const auto named = model->named_modules("", /*include_self=*/true);
    std::unordered_map<const torch::nn::Module*, uint32_t> id_of;
    for (const auto& item : named) {
      const uint32_t id = uint32_t(metadata.layers.size());
      id_of[item.value().get()] = id;
      format::Layer layer;
      layer.id = id;
      layer.name = item.key();
      layer.kind = module_kind(*item.value());
      for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
        layer.parameters.push_back({p.key(), p.value().sizes().vec()});
        if (layer.neuron_count == 0 && starts_with(p.key(), "weight") && p.value().dim() >= 1)
          layer.neuron_count = uint64_t(p.value().size(0));
      }
      layer.is_leaf = item.value()->children().empty();
      layer.geometry = layer_geometry(*item.value());
      metadata.layers.push_back(std::move(layer));
      modules.push_back(item.value());
      detail::LayerInfo info;
      info.name = metadata.layers.back().name;
      info.kind = metadata.layers.back().kind;
      info.channel_axis = kind_has_channel_axis(info.kind);
      info.has_parameters = !metadata.layers.back().parameters.empty();
      infos.push_back(std::move(info));
    }
    // Parents, and parameter-free followers: the sibling registered just before (its last leaf, for a container).
    for (uint32_t id = 0; id < modules.size(); ++id) {
      int32_t previous = -1;
      for (const auto& child : modules[id]->named_children()) {
        const uint32_t cid = id_of.at(child.value().get());
        metadata.layers[cid].parent_id = id;
        detail::LayerInfo& info = infos[cid];
        if (previous >= 0 && metadata.layers[cid].is_leaf && !info.has_parameters) {
          info.follower_ops = follower_ops_for(info.kind);
          if (!info.follower_ops.empty()) {
            int32_t target = previous;
            while (!metadata.layers[size_t(target)].is_leaf) {
              const auto grandchildren = modules[size_t(target)]->children();
              target = int32_t(id_of.at(grandchildren.back().get()));
            }
            info.follows = target;
            if (!kind_has_channel_axis(info.kind)) info.channel_axis = infos[size_t(target)].channel_axis;
          }
        }
        previous = int32_t(cid);
      }
    }
  }

  // Parameters by TensorImpl, so that an op's inputs tell which module runs.
  void refresh_parameters() {
    std::unordered_map<const c10::TensorImpl*, uint32_t> owner;
    for (uint32_t id = 0; id < modules.size(); ++id)
      for (const auto& p : modules[id]->parameters(false)) owner[p.unsafeGetTensorImpl()] = id;
    observer->set_parameters(std::move(owner));
  }

  // Which of layer `id`'s direct parameters, in parameters(false) order, are biases ("bias*"): named_parameters()
  // copies every name and its index map (~60 us a captured step for the VAE), so the names are read again only when
  // the layer's parameter count changed.
  struct BiasFlags {
    bool known = false;
    std::vector<bool> of_parameter;
  };
  std::vector<BiasFlags> bias_of;
  const std::vector<bool>& bias_flags(uint32_t id, size_t count) {
    if (bias_of.size() != modules.size()) bias_of.assign(modules.size(), {});
    BiasFlags& flags = bias_of[id];
    if (!flags.known || flags.of_parameter.size() != count) {
      flags.of_parameter.clear();
      for (const auto& p : modules[id]->named_parameters(false))
        flags.of_parameter.push_back(starts_with(p.key(), "bias"));
      flags.known = true;
    }
    return flags.of_parameter;
  }

  bool is_full_step(int64_t s) const {
    return options.full_tensor_interval > 0 && s % options.full_tensor_interval == 0;
  }

  bool wants_capture(int64_t s) const {
    if (s % options.interval == 0 || s <= dense_until || is_full_step(s)) return true;
    return options.flight_recorder && s % options.ring_interval == 0;
  }

  void arm_for(int64_t s) {
    captured_this_step = false;
    if (!recording || !wants_capture(s)) return;
    const auto has = [&](QuantityMask mask, Quantity q) { return (mask & quantity_bit(q)) != 0; };
    detail::ArmOptions arm;
    arm.activations = has(options.quantities, Quantity::Activation);
    arm.activation_grads = has(options.quantities, Quantity::ActivationGrad);
    arm.full_activations = is_full_step(s) && has(options.full_tensor_quantities, Quantity::Activation);
    arm.full_activation_grads = is_full_step(s) && has(options.full_tensor_quantities, Quantity::ActivationGrad);
    refresh_parameters();
    observer->arm(arm);
    captured_this_step = true;
  }

  void fail(const std::string& why) {
    if (recording && options.report_to_stderr)
      std::cerr << "trainscope: recording into " << dir.string() << " stopped, training continues: " << why << "\n";
    recording = false;
    observer->disarm();
  }

  // ----- per-step work -----

  // Sum of squares of every gradient: on the host for CPU float32 gradients (no LibTorch op; each split between
  // LibTorch's threads as the gradients' accumulation split it, see host_parameter_moments()), per-parameter norms
  // in one fused op for the others. A non-finite sum marks the layer whose gradient is bad. Layers whose squares
  // the captured statistics already hold (`known`; NaN when unknown, or when NaN: read again, they give NaN) are not
  // read again.
  double gradient_norm(std::vector<bool>& grad_bad, const std::vector<double>& known) {
    std::vector<torch::Tensor> grads;
    std::vector<uint32_t> owners, host_owners;
    std::vector<detail::ParameterRows> host_grads;
    grad_bad.assign(modules.size(), false);
    double sum = 0;
    for (uint32_t id = 0; id < modules.size(); ++id) {
      if (!known.empty() && !std::isnan(known[id])) {
        sum += known[id];
        if (!std::isfinite(known[id])) grad_bad[id] = true;
        continue;
      }
      for (const auto& p : modules[id]->parameters(false)) {
        const torch::Tensor& g = p.grad();
        if (!g.defined()) continue;
        if (detail::host_readable(g) && g.is_contiguous()) {
          host_grads.push_back({g.data_ptr<float>(), g.numel(), 1});
          host_owners.push_back(id);
        } else {
          grads.push_back(g);
          owners.push_back(id);
        }
      }
    }
    const std::vector<double> host_squares = detail::host_sums_of_squares(host_grads);
    for (size_t i = 0; i < host_squares.size(); ++i) {
      sum += host_squares[i];
      if (!std::isfinite(host_squares[i])) grad_bad[host_owners[i]] = true;
    }
    if (!grads.empty()) {
      const torch::Tensor norms = torch::stack(at::_foreach_norm(grads, 2)).to(torch::kCPU, torch::kDouble);
      const double* n = norms.data_ptr<double>();
      for (size_t i = 0; i < grads.size(); ++i) {
        sum += n[i] * n[i];
        if (!std::isfinite(n[i])) grad_bad[owners[i]] = true;
      }
    }
    return std::sqrt(sum);
  }

  std::vector<bool> nonfinite_weights() {
    std::vector<bool> bad(modules.size(), false);
    std::vector<torch::Tensor> params;
    std::vector<uint32_t> owners;
    for (uint32_t id = 0; id < modules.size(); ++id)
      for (const auto& p : modules[id]->named_parameters(false)) {
        params.push_back(p.value().detach());
        owners.push_back(id);
      }
    if (params.empty()) return bad;
    const torch::Tensor norms = torch::stack(at::_foreach_norm(params, 2)).to(torch::kCPU, torch::kDouble);
    for (size_t i = 0; i < params.size(); ++i)
      if (!std::isfinite(norms.data_ptr<double>()[i])) bad[owners[i]] = true;
    return bad;
  }

  std::vector<float> parameter_scratch;  // parameter_stats()'s matrices, kept from step to step

  struct Pending {
    uint32_t layer;
    Quantity quantity;
    std::vector<detail::CallStats> calls;  // host or device statistics of each call
  };

  // Everything captured for this step as format records: host statistics as they are; device statistics with one
  // transfer to the host; calls merged on the host. The parameters' statistics run in LibTorch's intra-op threads,
  // each thread on the rows it wrote last (host_parameter_moments()). Another split measured worse: a helper thread
  // taking ranges of neurons from a shared counter made step() 0.02 ms faster on the VAE but the next zero_grad()
  // 0.11 ms slower and the optimizer's step 0.03 ms, the lines being in the wrong core's cache when they were
  // written next; and with two intra-op threads, the training thread reading all of them made zero_grad()
  // 0.2-0.3 ms slower. `grad_squares` gets, per layer, the sum of squares of all its parameters' gradients when
  // their statistics were computed here (NaN otherwise), for the gradient norm.
  std::vector<format::LayerQuantityRecord> collect(std::vector<bool>& act_bad, std::vector<bool>& param_bad,
                                                   std::vector<format::FullTensor>& full, bool full_step,
                                                   std::vector<double>& grad_squares) {
    const auto buffers = observer->buffers();
    std::vector<Pending> pending;
    const auto has = [&](Quantity q) { return (options.quantities & quantity_bit(q)) != 0; };
    const auto full_has = [&](Quantity q) { return full_step && (options.full_tensor_quantities & quantity_bit(q)); };
    {
      // The statistics are moved out: nothing reads this step's buffers after this (late hooks write to them, unread).
      std::lock_guard<std::mutex> lock(buffers->mutex);
      for (uint32_t id = 0; id < buffers->layers.size(); ++id) {
        detail::LayerCapture& cap = buffers->layers[id];
        Pending act{id, Quantity::Activation, {}}, grad{id, Quantity::ActivationGrad, {}};
        for (auto& c : cap.activation)
          if (c.live && c.stats.defined()) act.calls.push_back(std::move(c.stats));
        for (auto& [call, c] : cap.activation_grad)
          if (call < cap.activation.size() && cap.activation[call].live && c.defined())
            grad.calls.push_back(std::move(c));
        if (!act.calls.empty()) pending.push_back(std::move(act));
        if (!grad.calls.empty()) pending.push_back(std::move(grad));
        auto add_full = [&](const torch::Tensor& t, Quantity q) {
          if (!t.defined() || !full_has(q)) return;
          full.push_back({id, q, step, t.sizes().vec(), to_host_floats(t), false});
        };
        add_full(cap.full_activation, Quantity::Activation);
        add_full(cap.full_activation_grad, Quantity::ActivationGrad);
        if (!cap.output_shape.empty() && metadata.layers[id].output_shape != cap.output_shape) {
          metadata.layers[id].output_shape = cap.output_shape;
          shapes_changed = true;
          const int64_t n = infos[id].channel_axis && cap.output_shape.size() >= 2 ? cap.output_shape.front()
                                                                                   : cap.output_shape.back();
          metadata.layers[id].neuron_count = uint64_t(n);
        }
      }
    }
    std::vector<detail::ParameterRows> host_parameters;  // and where each one's statistics go in `pending`
    std::vector<size_t> host_parameter_slots;
    grad_squares.assign(modules.size(), std::nan(""));
    std::vector<int> grad_parts(modules.size(), 0);  // gradient quantities of the layer computed on the host
    std::vector<int> grad_kinds(modules.size(), 0);  // gradient quantities the layer has
    for (uint32_t id = 0; id < modules.size(); ++id) {
      const std::vector<torch::Tensor> params = modules[id]->parameters(false);
      const std::vector<bool>& is_bias = bias_flags(id, params.size());
      std::vector<torch::Tensor> w, b, wg, bg;
      for (size_t k = 0; k < params.size(); ++k) {
        (is_bias[k] ? b : w).push_back(params[k]);
        if (params[k].grad().defined()) (is_bias[k] ? bg : wg).push_back(params[k].grad());
      }
      grad_kinds[id] = int(!wg.empty()) + int(!bg.empty());
      auto add = [&](const std::vector<torch::Tensor>& ts, size_t expected, Quantity q) {
        if (ts.empty() || ts.size() != expected || (!has(q) && !full_has(q))) return;
        if (has(q)) {
          pending.push_back({id, q, {}});
          const torch::Tensor& t = ts.front();
          if (ts.size() == 1 && detail::host_readable(t) && t.is_contiguous()) {
            // The usual parameter: computed below with all others of its kind, in LibTorch's threads.
            const int64_t rows = t.dim() == 0 ? 1 : t.size(0);
            host_parameters.push_back({t.data_ptr<float>(), rows, t.numel() / rows});
            host_parameter_slots.push_back(pending.size() - 1);
            pending.back().calls.emplace_back();
          } else {
            pending.back().calls.push_back(parameter_stats(ts, parameter_scratch));
          }
          const bool on_host = !pending.back().calls.back().defined() || !pending.back().calls.back().host.empty();
          if ((q == Quantity::WeightGrad || q == Quantity::BiasGrad) && on_host) ++grad_parts[id];
        }
        if (full_has(q)) {
          // A single parameter is read as it is (neurons along dim 0), without a reshaped view.
          const torch::Tensor m = ts.size() == 1 ? ts.front() : parameter_matrix(ts);
          full.push_back({id, q, step, m.sizes().vec(), to_host_floats(m), false});
        }
      };
      add(w, w.size(), Quantity::Weight);
      add(b, b.size(), Quantity::Bias);
      add(wg, w.size(), Quantity::WeightGrad);
      add(bg, b.size(), Quantity::BiasGrad);
    }
    // The module tree holds the parameters and their gradients: the pointers stay valid until this step ends.
    std::vector<detail::NeuronRows> parameter_rows = detail::host_parameter_moments(host_parameters);
    for (size_t k = 0; k < parameter_rows.size(); ++k) {
      detail::CallStats& c = pending[host_parameter_slots[k]].calls.front();
      c.count = double(host_parameters[k].inner);
      c.host = std::move(parameter_rows[k]);
    }
    // One transfer of all small statistic vectors to the host.
    std::vector<torch::Tensor> flat;
    for (const auto& p : pending)
      for (const auto& c : p.calls)
        if (c.host.empty()) flat.push_back(c.device.reshape({-1}).to(torch::kFloat));
    std::vector<format::LayerQuantityRecord> records;
    act_bad.assign(modules.size(), false);
    param_bad.assign(modules.size(), false);
    if (pending.empty()) return records;
    torch::Tensor host;
    if (!flat.empty()) host = torch::cat(flat).to(torch::kCPU).contiguous();
    const float* data = flat.empty() ? nullptr : host.data_ptr<float>();
    // Where each layer quantity's device statistics start in `host`; then the tables are merged and written.
    std::vector<size_t> offsets(pending.size());
    for (size_t i = 0, offset = 0; i < pending.size(); ++i) {
      offsets[i] = offset;
      for (const auto& c : pending[i].calls)
        if (c.host.empty()) offset += size_t(c.device.numel());
    }
    records.resize(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) {
      Pending& p = pending[i];
      detail::NeuronTable table;
      size_t offset = offsets[i];
      for (auto& c : p.calls) {
        if (!c.host.empty()) {
          table.add_call(std::move(c.host));
          continue;
        }
        const auto neurons = uint32_t(c.device.size(1));
        table.add_call(data + offset, neurons, c.count);
        offset += size_t(c.device.numel());
      }
      format::LayerQuantityRecord& r = records[i];
      r.layer_id = p.layer;
      r.quantity = p.quantity;
      r.neuron_stats = options.statistics;
      r.neuron_count = table.neurons();
      table.take(options.statistics, r.summary, r.neuron_values);
    }
    std::vector<double> squares(modules.size(), 0);
    for (const format::LayerQuantityRecord& r : records) {
      if (r.summary.nan_count != 0 || r.summary.inf_count != 0) {
        if (r.quantity == Quantity::Activation) act_bad[r.layer_id] = true;
        if (r.quantity == Quantity::Weight || r.quantity == Quantity::Bias) param_bad[r.layer_id] = true;
      }
      if (r.quantity == Quantity::WeightGrad || r.quantity == Quantity::BiasGrad)
        squares[r.layer_id] += r.summary.norm * r.summary.norm;
    }
    for (uint32_t id = 0; id < modules.size(); ++id)
      if (grad_kinds[id] > 0 && grad_parts[id] == grad_kinds[id]) grad_squares[id] = squares[id];
    return records;
  }

  // Probe batch: run the user's probe with the observer in probe mode and keep every layer's full output.
  void run_probe(std::vector<format::FullTensor>& full) {
    detail::ArmOptions arm;
    arm.activations = false;
    arm.activation_grads = false;
    arm.full_activations = true;
    arm.probe = true;
    refresh_parameters();
    observer->arm(arm);
    try {
      torch::NoGradGuard no_grad;
      options.probe();
    } catch (const std::exception& e) {
      observer->disarm();
      if (options.report_to_stderr) std::cerr << "trainscope: probe batch failed: " << e.what() << "\n";
      return;
    }
    observer->disarm();
    const auto buffers = observer->buffers();
    std::lock_guard<std::mutex> lock(buffers->mutex);
    for (uint32_t id = 0; id < buffers->layers.size(); ++id) {
      const torch::Tensor& t = buffers->layers[id].full_activation;
      if (t.defined()) full.push_back({id, Quantity::Activation, step, t.sizes().vec(), to_host_floats(t), true});
    }
  }

  // Order in which layers ran: this step's capture order first, then the order of first runs.
  std::vector<uint32_t> forward_order() const {
    std::vector<std::pair<int64_t, uint32_t>> keyed;
    const auto& first = observer->first_run_order();
    std::vector<int64_t> rank(modules.size(), int64_t(1) << 40);
    for (size_t i = 0; i < first.size(); ++i) rank[size_t(first[i])] = int64_t(i);
    const auto buffers = observer->buffers();
    for (uint32_t id = 0; id < modules.size(); ++id) {
      const int order = captured_this_step ? buffers->layers[id].order : -1;
      keyed.emplace_back(order >= 0 ? order : (int64_t(1) << 20) + rank[id], id);
    }
    std::sort(keyed.begin(), keyed.end());
    std::vector<uint32_t> out;
    for (const auto& k : keyed) out.push_back(k.second);
    return out;
  }

  std::vector<NonFiniteOrigin> origins(const std::vector<bool>& act_bad, std::vector<bool> param_bad,
                                       const std::vector<bool>& grad_bad) {
    std::vector<NonFiniteOrigin> out;
    const bool have_params = std::find(param_bad.begin(), param_bad.end(), true) != param_bad.end();
    if (!captured_this_step && !have_params) param_bad = nonfinite_weights();
    std::vector<std::vector<uint32_t>> feeds(modules.size());
    for (const auto& [edge, recurrent] : observer->edges())
      if (!recurrent) feeds[edge.second].push_back(edge.first);
    for (uint32_t id : forward_order()) {
      if (param_bad[id]) {
        out.push_back({metadata.layers[id].name, Quantity::Weight});
      } else if (!act_bad.empty() && act_bad[id]) {
        const bool fed_bad = std::any_of(feeds[id].begin(), feeds[id].end(), [&](uint32_t f) { return act_bad[f]; });
        if (!fed_bad) out.push_back({metadata.layers[id].name, Quantity::Activation});
      }
    }
    if (out.empty())
      for (uint32_t id : forward_order())
        if (grad_bad[id]) out.push_back({metadata.layers[id].name, Quantity::WeightGrad});
    return out;
  }

  // The metadata goes to the writer again only when the graph or a shape changed: rewriting it at every captured
  // step cost ~0.15 ms there, and a metadata chunk in the file each time.
  void update_graph_metadata() {
    const bool graph_changed = observer->take_graph_changed();
    if (!graph_changed && !shapes_changed) return;
    shapes_changed = false;
    metadata.edges.clear();
    for (const auto& [edge, recurrent] : observer->edges())
      metadata.edges.push_back({edge.first, edge.second, recurrent});
    if (writer) writer->set_metadata(metadata);
  }

  void push_ring(format::Snapshot snap) {
    ring_bytes += snapshot_bytes(snap);
    ring.push_back(std::move(snap));
    while (!ring.empty() && (ring.size() > options.ring_steps || ring_bytes > options.ring_bytes)) {
      ring_bytes -= snapshot_bytes(ring.front());
      ring.pop_front();
    }
  }

  void append(format::Snapshot snap) {
    if (!writer->append(std::move(snap)) && options.writer.queue_policy == format::QueuePolicy::Block) {
      const auto status = writer->status();
      if (!status.error.empty()) fail(status.error);
    }
  }

  // Steps' scalars wait here and go to the writer together: one wake-up of its thread per batch instead of per step
  // (measured: ~4 context switches a step on 2 cores). They wait at most kOutboxWait, a small part of the writer's
  // flush interval; snapshots with per-neuron statistics, dense steps and anomalies go at once.
  static constexpr auto kOutboxWait = std::chrono::milliseconds(50);
  static constexpr size_t kOutboxSteps = 64;
  std::vector<format::Snapshot> outbox;
  Clock::time_point outbox_since;

  void hand_over() {
    for (auto& s : outbox)
      if (recording) append(std::move(s));
    outbox.clear();
    if (recording) {
      const auto status = writer->status();
      if (!status.error.empty()) fail(status.error);
    }
  }

  void post(format::Snapshot snap, bool now) {
    if (outbox.empty()) outbox_since = Clock::now();
    outbox.push_back(std::move(snap));
    if (now || outbox.size() >= kOutboxSteps || Clock::now() - outbox_since >= kOutboxWait) hand_over();
  }

  void do_step(const torch::Tensor& loss, const std::vector<NamedScalar>& named, StepReport& report) {
    const auto start = Clock::now();
    observer->disarm();
    at::DisableRecordFunctionGuard no_observer;
    torch::NoGradGuard no_grad;
    const bool captured = captured_this_step && recording;
    report.captured = captured;

    report.loss = !loss.defined() || loss.numel() == 0 ? std::nan("") : scalar_value(loss);
    format::Snapshot snap;
    snap.step = step;
    snap.scalars.emplace_back("loss", report.loss);
    bool scalars_finite = true;
    for (const auto& s : named) {
      const double v = s.tensor.defined() ? scalar_value(s.tensor) : s.value;
      scalars_finite = scalars_finite && std::isfinite(v);
      snap.scalars.emplace_back(s.name, v);
    }

    std::vector<bool> act_bad, param_bad;
    std::vector<format::FullTensor> full;
    std::vector<format::LayerQuantityRecord> records;
    std::vector<double> grad_squares;
    if (captured) {
      records = collect(act_bad, param_bad, full, is_full_step(step), grad_squares);
      if (is_full_step(step) && options.probe) run_probe(full);
      update_graph_metadata();
      ++stats.captured_steps;
    }
    std::vector<bool> grad_bad;
    report.grad_norm = gradient_norm(grad_bad, grad_squares);
    snap.scalars.emplace_back("grad_norm", report.grad_norm);
    if (options.optimizer && !options.optimizer->param_groups().empty()) {
      try {
        snap.scalars.emplace_back("lr", options.optimizer->param_groups().front().options().get_lr());
      } catch (...) {
        // Optimizers without a learning rate have none to record.
      }
    }

    const bool tensors_finite = std::none_of(act_bad.begin(), act_bad.end(), [](bool b) { return b; }) &&
                                std::none_of(param_bad.begin(), param_bad.end(), [](bool b) { return b; });
    report.finite = std::isfinite(report.loss) && std::isfinite(report.grad_norm) && scalars_finite && tensors_finite;
    if (!std::isfinite(report.loss))
      report.anomaly = AnomalyKind::NonFiniteLoss;
    else if (!report.finite)
      report.anomaly = AnomalyKind::NonFiniteTensor;
    else if (spikes.observe(report.loss))
      report.anomaly = AnomalyKind::LossSpike;
    if (!report.finite) report.origins = origins(act_bad, param_bad, grad_bad);

    if (recording) {
      const bool anomalous = report.anomaly != AnomalyKind::None;
      if (anomalous && !previous_anomalous && options.flight_recorder) {
        report.anomaly_triggered = true;
        hand_over();  // the steps before, in order
        for (auto& old : ring) {
          ++stats.written_snapshots;
          append(std::move(old));
        }
        ring.clear();
        ring_bytes = 0;
        dense_until = step + options.dense_steps;
      }
      previous_anomalous = anomalous;
      const bool dense = step <= dense_until;
      if (captured && !records.empty()) {
        if (step % options.interval == 0 || dense) {
          snap.layers = std::move(records);
          report.written = true;
          ++stats.written_snapshots;
        } else {
          format::Snapshot kept;
          kept.step = step;
          kept.layers = std::move(records);
          push_ring(std::move(kept));
        }
      }
      const bool now = report.written || dense || anomalous || !full.empty();
      if (recording) post(std::move(snap), now);
      for (auto& t : full)
        if (recording) writer->append(std::move(t));
      // The window around an anomaly goes to disk at once, so a crash right after it cannot lose it.
      // The trigger waits until the ring and this step are in the file: RunWriter::request_flush() only flushes what
      // its thread has already taken from the queue, so a ring handed over just now could stay buffered for the whole
      // flush interval. The dense steps after it ask without waiting; each request also covers the step before.
      if (recording && report.anomaly_triggered)
        writer->flush();
      else if (recording && dense)
        writer->request_flush();
    }
    report.recording_ok = recording;
    ++stats.steps;
    ++step;
    arm_for(step);
    stats.capture_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }
};

Recorder::Recorder(std::shared_ptr<torch::nn::Module> model, const std::filesystem::path& run_dir,
                   RecorderOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), run_dir, std::move(options))) {}

Recorder::~Recorder() {
  close();
}

StepReport Recorder::step(const torch::Tensor& loss, const std::vector<NamedScalar>& scalars) {
  StepReport report;
  report.step = impl_->step;
  try {
    impl_->do_step(loss, scalars, report);
  } catch (const std::exception& e) {
    // Recording trouble never reaches the training loop.
    impl_->fail(e.what());
    impl_->step = report.step + 1;
    report.recording_ok = false;
  } catch (...) {
    impl_->fail("unknown error");
    impl_->step = report.step + 1;
    report.recording_ok = false;
  }
  return report;
}

void Recorder::flush() {
  try {
    if (impl_->writer && impl_->recording) {
      impl_->hand_over();
      impl_->writer->flush();
    }
  } catch (...) {
  }
}

void Recorder::close() {
  impl_->observer->disarm();
  try {
    if (impl_->writer && impl_->recording) impl_->hand_over();
  } catch (...) {
  }
  impl_->recording = false;
  if (impl_->writer) impl_->writer->close();
}

bool Recorder::recording_ok() const {
  return impl_->recording;
}
int64_t Recorder::next_step() const {
  return impl_->step;
}
const std::filesystem::path& Recorder::directory() const {
  return impl_->dir;
}
format::RunMetadata Recorder::metadata() const {
  return impl_->metadata;
}

RecorderStats Recorder::stats() const {
  RecorderStats s = impl_->stats;
  s.ring_snapshots = impl_->ring.size();
  s.ring_bytes = impl_->ring_bytes;
  if (impl_->observer) {
    s.lazily_armed_steps = impl_->observer->waited_captures();
    s.observed_ops = impl_->observer->observed_ops();
  }
  s.held_bytes = impl_->ring_bytes + sizeof(Impl);
  for (const auto& l : impl_->metadata.layers) s.held_bytes += sizeof(l) + l.name.size() + l.kind.size();
  if (impl_->writer) s.writer = impl_->writer->status();
  return s;
}

}  // namespace trainscope
