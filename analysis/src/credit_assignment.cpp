#include <trainscope/analysis/credit_assignment.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <stdexcept>

namespace trainscope::analysis {

using format::FullTensor;
using format::Quantity;

const char* credit_direction_name(CreditDirection d) {
  return d == CreditDirection::Forward ? "forward" : "backward";
}

const char* credit_source_name(CreditSource s) {
  switch (s) {
    case CreditSource::TrainingBatch: return "training_batch";
    case CreditSource::ProbeBatch: return "probe_batch";
    case CreditSource::BatchMeans: return "batch_means";
  }
  return "unknown";
}

std::optional<uint32_t> find_layer(const LayerGraph& graph, const std::string& name_or_id) {
  for (uint32_t id = 0; id < graph.size(); ++id)
    if (graph.name(id) == name_or_id || (graph.layer(id).name == name_or_id && !name_or_id.empty())) return id;
  if (!name_or_id.empty() && name_or_id.find_first_not_of("0123456789") == std::string::npos) {
    const unsigned long long id = std::strtoull(name_or_id.c_str(), nullptr, 10);
    if (id < graph.size()) return uint32_t(id);
  }
  return std::nullopt;
}

namespace {

enum class LayerRole { Linear, Conv2d, PassThrough, Flatten, Other };

bool starts_with(const std::string& s, std::string_view p) {
  return s.rfind(p, 0) == 0;
}

// Layers whose neuron i depends on neuron i of their input only (elementwise), or channel c on channel c
// (pooling, batch norm): credit passes through them unchanged in identity.
bool is_pass_through_kind(const std::string& k) {
  static const std::set<std::string> kinds = {"ReLU",
                                              "ReLU6",
                                              "LeakyReLU",
                                              "ELU",
                                              "SELU",
                                              "CELU",
                                              "GELU",
                                              "SiLU",
                                              "Mish",
                                              "Sigmoid",
                                              "Tanh",
                                              "Softplus",
                                              "Hardtanh",
                                              "Threshold",
                                              "Dropout",
                                              "Dropout2d",
                                              "Dropout3d",
                                              "AlphaDropout",
                                              "FeatureAlphaDropout",
                                              "Identity",
                                              "Hardswish",
                                              "Hardsigmoid",
                                              "Softsign",
                                              "Tanhshrink"};
  if (kinds.count(k)) return true;
  for (std::string_view p : {"BatchNorm", "InstanceNorm", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool"})
    if (starts_with(k, p)) return true;
  return false;
}

const format::ParameterInfo* parameter(const format::Layer& l, std::string_view name) {
  for (const auto& p : l.parameters)
    if (p.name == name) return &p;
  return nullptr;
}

// A user-defined leaf module with an [out, in] "weight" (and perhaps a "bias" of out) most likely starts with that
// linear map: it is traced as one, and the completeness check against its recorded output tells whether that is
// all it does (the hop says so when it is not).
bool is_linear_like(const format::Layer& l) {
  static const std::set<std::string> other_kinds = {"Embedding", "EmbeddingBag", "Bilinear",           "LayerNorm",
                                                    "GroupNorm", "PReLU",        "MultiheadAttention", "Transformer"};
  if (!l.is_leaf || other_kinds.count(l.kind) || is_pass_through_kind(l.kind) || starts_with(l.kind, "Conv"))
    return false;
  const auto* w = parameter(l, "weight");
  if (!w || w->shape.size() != 2 || (l.neuron_count && uint64_t(w->shape[0]) != l.neuron_count)) return false;
  const auto* b = parameter(l, "bias");
  return !b || (b->shape.size() == 1 && b->shape[0] == w->shape[0]);
}

LayerRole role_of(const format::Layer& l) {
  const auto* w = parameter(l, "weight");
  if (l.kind == "Linear" && w && w->shape.size() == 2) return LayerRole::Linear;
  if (is_linear_like(l)) return LayerRole::Linear;
  if (l.kind == "Conv2d" && w && w->shape.size() == 4) return LayerRole::Conv2d;
  if (l.kind == "Flatten") return LayerRole::Flatten;
  if (is_pass_through_kind(l.kind)) return LayerRole::PassThrough;
  return LayerRole::Other;
}

bool is_weighted(LayerRole r) {
  return r == LayerRole::Linear || r == LayerRole::Conv2d;
}

int64_t product(const std::vector<int64_t>& s, size_t from = 0) {
  int64_t n = 1;
  for (size_t i = from; i < s.size(); ++i) n *= s[i];
  return n;
}

// Per-sample output shape [C,H,W] of a layer whose neurons are channels.
bool is_channel_map(const format::Layer& l) {
  return l.output_shape.size() == 3 && l.neuron_count == uint64_t(l.output_shape[0]);
}

// A recorded tensor reduced over the batch (or one sample of it): per-sample shape, values.
struct Reduced {
  std::vector<int64_t> shape;
  std::vector<double> values;
  CreditSource source = CreditSource::BatchMeans;
  bool uniform = false;  // built from per-neuron means: every position of a channel holds the channel's mean
};

// One axis of a conv: in = out*stride - pad + k*dilation.
struct Axis {
  int64_t kernel = 1, stride = 1, pad = 0, dilation = 1;
  int64_t in = 0, out = 0;
  int64_t input_of(int64_t o, int64_t k) const { return o * stride - pad + k * dilation; }
};

std::vector<Axis> axis_candidates(int64_t in, int64_t out, int64_t k) {
  std::vector<Axis> c;
  for (int64_t d = 1; d <= 2; ++d)
    for (int64_t s = 1; s <= 4; ++s)
      for (int64_t p = 0; p <= d * (k - 1); ++p) {
        const int64_t span = in + 2 * p - d * (k - 1) - 1;
        if (span >= 0 && span / s + 1 == out) c.push_back({k, s, p, d, in, out});
      }
  // The usual geometries first: no dilation, "same"-style padding.
  std::stable_sort(c.begin(), c.end(), [k](const Axis& a, const Axis& b) {
    auto key = [k](const Axis& x) { return std::make_tuple(x.dilation, std::abs(x.pad - (k - 1) / 2), x.stride); };
    return key(a) < key(b);
  });
  return c;
}

// Whether an axis turns its input extent into its output extent (floor division, as convolution and pooling do).
bool maps(const Axis& a) {
  const int64_t span = a.in + 2 * a.pad - a.dilation * (a.kernel - 1) - 1;
  return a.stride > 0 && span >= 0 && span / a.stride + 1 == a.out;
}

// The height and width axes of a 2-d convolution or pooling layer as the recorder read them from its options.
std::optional<std::pair<Axis, Axis>> recorded_axes(const format::Layer& l) {
  if (!l.geometry) return std::nullopt;
  const format::LayerGeometry& g = *l.geometry;
  const auto two = [](const std::vector<int64_t>& v) { return v.size() == 2; };
  if (g.transposed || !two(g.kernel_size) || !two(g.stride) || !two(g.padding) || !two(g.dilation)) return std::nullopt;
  Axis y{g.kernel_size[0], g.stride[0], g.padding[0], g.dilation[0], 0, 0};
  Axis x{g.kernel_size[1], g.stride[1], g.padding[1], g.dilation[1], 0, 0};
  return std::make_pair(y, x);
}

// Four significant digits: for messages a person reads.
std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string join_names(const LayerGraph& g, const std::vector<uint32_t>& ids) {
  std::string s;
  for (uint32_t id : ids) s += (s.empty() ? "" : ", ") + g.name(id);
  return s;
}

}  // namespace

struct CreditAssignment::Impl {
  format::RunReader& reader;
  const LayerGraph& graph;
  std::map<std::tuple<uint32_t, int, int64_t, bool>, std::shared_ptr<const FullTensor>> tensors;
  std::map<std::tuple<uint32_t, int, int64_t, int, int64_t>, std::shared_ptr<const Reduced>> reduced;
  std::map<int64_t, std::shared_ptr<const format::Snapshot>> snapshots;
  std::map<std::tuple<uint32_t, int>, std::vector<int64_t>> steps_cache;
  std::map<uint32_t, std::pair<Axis, Axis>> verified_geometry;  // conv layers whose geometry reproduced the data
  std::map<std::pair<uint32_t, int64_t>, std::shared_ptr<const FullTensor>> weight_blocks;

  Impl(format::RunReader& r, const LayerGraph& g) : reader(r), graph(g) {}

  std::shared_ptr<const FullTensor> tensor(uint32_t layer, Quantity q, int64_t step, bool probe) {
    const auto key = std::make_tuple(layer, int(q), step, probe);
    if (auto it = tensors.find(key); it != tensors.end()) return it->second;
    std::shared_ptr<const FullTensor> t = reader.full_tensor(layer, q, step, probe);  // shared, not copied
    tensors[key] = t;
    return t;
  }

  const format::Snapshot* snapshot(int64_t step) {
    if (auto it = snapshots.find(step); it != snapshots.end()) return it->second.get();
    std::shared_ptr<const format::Snapshot> s;
    try {
      s = std::make_shared<const format::Snapshot>(reader.read_snapshot(step));
    } catch (const format::FormatError&) {
    }
    snapshots[step] = s;
    return s.get();
  }

  const float* neuron_means(uint32_t layer, Quantity q, int64_t step, uint32_t* count) {
    const format::Snapshot* s = snapshot(step);
    if (!s) return nullptr;
    for (const auto& r : s->layers)
      if (r.layer_id == layer && r.quantity == q) {
        *count = r.neuron_count;
        return r.neuron_row(format::Statistic::Mean);
      }
    return nullptr;
  }

  // Weights at `step`, or at the nearest step that has them.
  std::shared_ptr<const FullTensor> weights(uint32_t layer, int64_t step, int64_t* used_step) {
    const auto key = std::make_tuple(layer, int(Quantity::Weight));
    auto it = steps_cache.find(key);
    if (it == steps_cache.end()) it = steps_cache.emplace(key, reader.full_tensor_steps(layer, Quantity::Weight)).first;
    const auto& steps = it->second;
    if (steps.empty()) return nullptr;
    int64_t best = steps.front();
    for (int64_t s : steps)
      if (std::llabs(s - step) < std::llabs(best - step) ||
          (std::llabs(s - step) == std::llabs(best - step) && s < best))
        best = s;
    *used_step = best;
    auto t = tensor(layer, Quantity::Weight, best, false);
    const format::ParameterInfo* w = parameter(graph.layer(layer), "weight");
    if (!t || !w || t->shape == w->shape) return t;
    return weight_block(layer, best, *t, *w);
  }

  // The recorder stores a module's non-bias parameters side by side, in their order, as one [rows, columns] matrix
  // (or one row when their row counts differ): a user module's [out, in] "weight" next to, say, a scalar temperature.
  // Cut the weight out of it.
  std::shared_ptr<const FullTensor> weight_block(uint32_t layer, int64_t step, const FullTensor& all,
                                                 const format::ParameterInfo& w) {
    const auto key = std::make_pair(layer, step);
    if (auto it = weight_blocks.find(key); it != weight_blocks.end()) return it->second;
    std::vector<const format::ParameterInfo*> parts;
    for (const auto& p : graph.layer(layer).parameters)
      if (!starts_with(p.name, "bias")) parts.push_back(&p);
    auto rows_of = [](const format::ParameterInfo& p) { return p.shape.empty() ? int64_t(1) : p.shape.front(); };
    bool same_rows = true;
    int64_t columns = 0, offset = -1;
    for (const auto* p : parts) {
      same_rows = same_rows && rows_of(*p) == rows_of(*parts.front());
      if (p == &w) offset = columns;
      columns += product(p->shape) / std::max<int64_t>(rows_of(*p), 1);
    }
    std::shared_ptr<const FullTensor> out;
    if (offset >= 0 && w.shape.size() == 2 && all.shape.size() == 2) {
      auto block = std::make_shared<FullTensor>(all);
      block->shape = w.shape;
      block->values.assign(size_t(product(w.shape)), 0.f);
      const int64_t out_n = w.shape[0], in_n = w.shape[1];
      if (same_rows && all.shape[0] == out_n && all.shape[1] == columns) {
        for (int64_t i = 0; i < out_n; ++i)
          std::copy_n(all.values.begin() + long(i * columns + offset), in_n, block->values.begin() + long(i * in_n));
        out = block;
      } else if (!same_rows && all.shape[0] == 1) {
        int64_t flat = 0;
        for (const auto* p : parts) {
          if (p == &w) break;
          flat += product(p->shape);
        }
        if (flat + out_n * in_n <= all.shape[1]) {
          std::copy_n(all.values.begin() + long(flat), out_n * in_n, block->values.begin());
          out = block;
        }
      }
    }
    weight_blocks[key] = out;
    return out;
  }

  // Bias of every neuron: the full tensor at the weights' step, else the per-neuron mean (a bias is one number per
  // neuron, so its mean is its value).
  std::vector<double> bias(uint32_t layer, int64_t weight_step, int64_t step, size_t n, std::string* note) {
    std::vector<double> b(n, 0.0);
    if (!parameter(graph.layer(layer), "bias")) return b;
    if (auto t = tensor(layer, Quantity::Bias, weight_step, false); t && t->values.size() == n) {
      for (size_t i = 0; i < n; ++i) b[i] = t->values[i];
      return b;
    }
    uint32_t count = 0;
    if (const float* m = neuron_means(layer, Quantity::Bias, step, &count); m && count == n) {
      for (size_t i = 0; i < n; ++i) b[i] = m[i];
      return b;
    }
    *note = "bias of " + graph.name(layer) + " not recorded: the completeness check leaves it out";
    return b;
  }

  std::shared_ptr<const Reduced> reduce(uint32_t layer, Quantity q, int64_t step, CreditSource src, int64_t sample) {
    const auto key = std::make_tuple(layer, int(q), step, int(src), src == CreditSource::BatchMeans ? -1 : sample);
    if (auto it = reduced.find(key); it != reduced.end()) return it->second;
    std::shared_ptr<Reduced> r;
    const format::Layer& l = graph.layer(layer);
    if (src != CreditSource::BatchMeans) {
      auto t = tensor(layer, q, step, src == CreditSource::ProbeBatch);
      if (t && t->shape.size() >= 2 && t->shape[0] > 0 && (sample < 0 || sample < t->shape[0])) {
        r = std::make_shared<Reduced>();
        r->source = src;
        r->shape.assign(t->shape.begin() + 1, t->shape.end());
        const auto per = size_t(product(r->shape));
        r->values.assign(per, 0.0);
        if (sample >= 0) {
          for (size_t i = 0; i < per; ++i) r->values[i] = t->values[size_t(sample) * per + i];
        } else {
          const auto batch = size_t(t->shape[0]);
          for (size_t b = 0; b < batch; ++b) {
            const float* row = t->values.data() + b * per;
            for (size_t i = 0; i < per; ++i) r->values[i] += row[i];
          }
          for (double& v : r->values) v /= double(batch);
        }
      }
    } else if (sample < 0) {
      uint32_t count = 0;
      const float* m = neuron_means(layer, q, step, &count);
      std::vector<int64_t> shape = l.output_shape.empty() ? std::vector<int64_t>{int64_t(count)} : l.output_shape;
      if (m && count > 0) {
        r = std::make_shared<Reduced>();
        r->source = src;
        r->uniform = true;
        if (shape.size() == 3 && shape[0] == int64_t(count)) {  // channel map: the mean fills each channel
          r->shape = shape;
          const auto hw = size_t(shape[1] * shape[2]);
          r->values.resize(count * hw);
          for (size_t c = 0; c < count; ++c) std::fill_n(r->values.begin() + long(c * hw), hw, double(m[c]));
        } else {
          r->shape = {int64_t(count)};
          r->values.assign(m, m + count);
        }
      }
    }
    reduced[key] = r;
    return r;
  }

  // ----- hops -----

  struct Target {
    uint32_t neuron;
    double share;
  };

  struct HopResult {
    bool ok = false;
    std::string message;
    CreditHop hop;
    std::vector<std::vector<double>> per_target;  // contributions of every source neuron, per target
  };

  // The layer whose output a weighted layer reads (through a Flatten, which only reshapes).
  std::optional<uint32_t> single_input(uint32_t layer, std::string* why) {
    const auto& in = graph.inputs(layer);
    if (in.empty()) {
      *why = graph.name(layer) + " reads the model input, which is not recorded";
      return std::nullopt;
    }
    if (in.size() > 1) {
      *why = graph.name(layer) + " reads " + std::to_string(in.size()) + " layers (" + join_names(graph, in) +
             "): its input cannot be split between them";
      return std::nullopt;
    }
    return in.front();
  }

  std::optional<uint32_t> single_output(uint32_t layer, std::string* why) {
    const auto& out = graph.outputs(layer);
    if (out.empty()) {
      *why = graph.name(layer) + " feeds no recorded layer: its gradient comes from the loss";
      return std::nullopt;
    }
    if (out.size() > 1) {
      *why = graph.name(layer) + " feeds " + std::to_string(out.size()) + " layers (" + join_names(graph, out) +
             "): its gradient is their sum, not traced";
      return std::nullopt;
    }
    return out.front();
  }

  // Geometry of a conv: as the recorder read it from the module's options (checked against the recorded output when
  // full tensors exist), else verified against the recorded output, else inferred from shapes. `*exact` is false only
  // when it was inferred.
  bool conv_geometry(uint32_t layer, const std::vector<int64_t>& in_shape, const std::vector<int64_t>& out_shape,
                     const std::vector<int64_t>& wshape, Axis* ay, Axis* ax, std::string* how, bool* exact,
                     std::string* why, const std::function<bool(const Axis&, const Axis&)>& verify) {
    *exact = false;
    if (in_shape.size() != 3 || out_shape.size() != 3) {
      *why = "conv input or output shape is not [C,H,W]";
      return false;
    }
    if (in_shape[0] != wshape[1]) {
      *why = "grouped convolutions (input channels " + std::to_string(in_shape[0]) + ", weight " +
             std::to_string(wshape[1]) + " per group) are not traced";
      return false;
    }
    if (auto recorded = recorded_axes(graph.layer(layer))) {
      Axis y = recorded->first, x = recorded->second;
      y.in = in_shape[1], y.out = out_shape[1], x.in = in_shape[2], x.out = out_shape[2];
      if (maps(y) && maps(x)) {
        if (verify && !verify(y, x)) {
          *why = "its recorded stride and padding do not reproduce its recorded output";
          return false;
        }
        verified_geometry[layer] = {y, x};
        *ay = y;
        *ax = x;
        *how = "recorded with the layer";
        *exact = true;
        return true;
      }
      // The recorded geometry does not turn these shapes into each other (a custom forward): infer instead.
    }
    const auto cy = axis_candidates(in_shape[1], out_shape[1], wshape[2]);
    const auto cx = axis_candidates(in_shape[2], out_shape[2], wshape[3]);
    if (cy.empty() || cx.empty()) {
      *why = "no stride and padding turn the input shape into the output shape";
      return false;
    }
    if (verify) {
      for (const auto& y : cy)
        for (const auto& x : cx)
          if (verify(y, x)) {
            verified_geometry[layer] = {y, x};
            *ay = y;
            *ax = x;
            *how = "verified against the recorded output";
            *exact = true;
            return true;
          }
      *why = "no stride and padding reproduce the recorded output";
      return false;
    }
    auto unique_plain = [](const std::vector<Axis>& c) {
      size_t n = 0;
      for (const auto& a : c) n += a.dilation == 1;
      return n == 1;
    };
    *ay = cy.front();
    *ax = cx.front();
    *how = unique_plain(cy) && unique_plain(cx) ? "inferred from shapes" : "assumed (shapes allow several)";
    return true;
  }

  // Conv window sums: S[ci][ky][kx] = Σ over output positions of X[ci, input position] (in bounds).
  static std::vector<double> window_sums(const Reduced& x, const Axis& ay, const Axis& ax) {
    const int64_t ci_n = x.shape[0], h = x.shape[1], w = x.shape[2];
    std::vector<double> s(size_t(ci_n * ay.kernel * ax.kernel), 0.0);
    for (int64_t ci = 0; ci < ci_n; ++ci)
      for (int64_t ky = 0; ky < ay.kernel; ++ky)
        for (int64_t kx = 0; kx < ax.kernel; ++kx) {
          double acc = 0;
          for (int64_t oy = 0; oy < ay.out; ++oy) {
            const int64_t iy = ay.input_of(oy, ky);
            if (iy < 0 || iy >= h) continue;
            const double* row = x.values.data() + (ci * h + iy) * w;
            for (int64_t ox = 0; ox < ax.out; ++ox) {
              const int64_t ix = ax.input_of(ox, kx);
              if (ix >= 0 && ix < w) acc += row[ix];
            }
          }
          s[size_t((ci * ay.kernel + ky) * ax.kernel + kx)] = acc;
        }
    return s;
  }

  // Backward: T[co][ky][kx] = Σ over output positions whose input position (for that kernel offset) is in bounds.
  static std::vector<double> grad_window_sums(const Reduced& g, const Axis& ay, const Axis& ax) {
    const int64_t co_n = g.shape[0], ho = g.shape[1], wo = g.shape[2];
    std::vector<double> s(size_t(co_n * ay.kernel * ax.kernel), 0.0);
    for (int64_t co = 0; co < co_n; ++co)
      for (int64_t ky = 0; ky < ay.kernel; ++ky)
        for (int64_t kx = 0; kx < ax.kernel; ++kx) {
          double acc = 0;
          for (int64_t oy = 0; oy < ho; ++oy) {
            const int64_t iy = ay.input_of(oy, ky);
            if (iy < 0 || iy >= ay.in) continue;
            const double* row = g.values.data() + (co * ho + oy) * wo;
            for (int64_t ox = 0; ox < wo; ++ox) {
              const int64_t ix = ax.input_of(ox, kx);
              if (ix >= 0 && ix < ax.in) acc += row[ox];
            }
          }
          s[size_t((co * ay.kernel + ky) * ax.kernel + kx)] = acc;
        }
    return s;
  }

  static double mean_of_neuron(const Reduced& r, uint32_t neuron, bool channel) {
    if (channel) {
      const auto hw = size_t(r.shape[1] * r.shape[2]);
      double s = 0;
      for (size_t i = 0; i < hw; ++i) s += r.values[neuron * hw + i];
      return s / double(hw);
    }
    const auto f = size_t(r.shape.back());
    const size_t rows = r.values.size() / f;
    double s = 0;
    for (size_t i = 0; i < rows; ++i) s += r.values[i * f + neuron];
    return s / double(rows);
  }

  std::vector<CreditSource> sources(CreditDirection d, const CreditOptions& o) {
    std::vector<CreditSource> s{CreditSource::TrainingBatch};
    if (d == CreditDirection::Forward && o.use_probe) s.push_back(CreditSource::ProbeBatch);
    if (o.use_means && o.sample < 0) s.push_back(CreditSource::BatchMeans);
    return s;
  }

  static std::string source_words(CreditSource s, Quantity q) {
    const std::string what = q == Quantity::Activation ? "activations" : "activation gradients";
    switch (s) {
      case CreditSource::TrainingBatch: return what + " of the training batch (full tensors)";
      case CreditSource::ProbeBatch: return what + " of the probe batch (full tensors)";
      case CreditSource::BatchMeans: return "per-neuron batch means of the " + what;
    }
    return what;
  }

  // One hop through weighted layer `wl`. Forward: targets are wl's neurons, sources the neurons of `io` (wl's
  // input). Backward: targets are `io`'s neurons (the layer wl reads), sources wl's neurons.
  HopResult hop(int64_t step, uint32_t wl, uint32_t io, CreditDirection dir, const std::vector<Target>& targets,
                const CreditOptions& opt) {
    HopResult res;
    CreditHop& h = res.hop;
    h.direction = dir;
    h.weighted_layer = wl;
    h.target_layer = dir == CreditDirection::Forward ? wl : io;
    h.source_layer = dir == CreditDirection::Forward ? io : wl;
    for (const auto& t : targets) h.targets.emplace_back(t.neuron, t.share);
    const format::Layer& L = graph.layer(wl);
    const format::Layer& Y = graph.layer(io);
    const LayerRole role = role_of(L);
    int64_t wstep = step;
    auto W = weights(wl, step, &wstep);
    if (!W) {
      res.message = "weights of " + graph.name(wl) + " were never recorded as full tensors";
      return res;
    }
    h.weight_step = wstep;
    h.data_step = step;
    std::vector<std::string> approx;
    if (wstep != step) approx.push_back("weights from step " + std::to_string(wstep) + ", not " + std::to_string(step));
    const Quantity q = dir == CreditDirection::Forward ? Quantity::Activation : Quantity::ActivationGrad;
    // Forward reads wl's input (io) and checks against wl's output; backward reads wl's output gradient and
    // checks against io's gradient.
    const uint32_t data_layer = dir == CreditDirection::Forward ? io : wl;
    const uint32_t check_layer = dir == CreditDirection::Forward ? wl : io;
    std::shared_ptr<const Reduced> data, check;
    for (CreditSource s : sources(dir, opt)) {
      data = reduce(data_layer, q, step, s, opt.sample);
      if (data) {
        check = reduce(check_layer, q, step, s, opt.sample);
        h.source = s;
        break;
      }
    }
    if (!data) {
      res.message = "no " + std::string(dir == CreditDirection::Forward ? "activations" : "activation gradients") +
                    " of " + graph.name(data_layer) + " at step " + std::to_string(step) +
                    (opt.sample >= 0 ? " for sample " + std::to_string(opt.sample) : "");
      return res;
    }
    const auto& ws = W->shape;
    const size_t n_out = size_t(ws[0]);
    std::string bias_note;
    const std::vector<double> b =
        dir == CreditDirection::Forward ? bias(wl, wstep, step, n_out, &bias_note) : std::vector<double>(n_out, 0.0);
    if (!bias_note.empty()) approx.push_back(bias_note);
    const bool io_channels = is_channel_map(Y) || (data_layer == io && data->shape.size() == 3);

    size_t n_src = 0;
    std::function<void(uint32_t, std::vector<double>&)> contributions;
    std::function<std::optional<double>(uint32_t)> recorded;
    if (role == LayerRole::Linear) {
      const auto n_in = size_t(ws[1]);
      const std::vector<int64_t> in_shape = Y.output_shape;
      const auto per_sample = size_t(product(in_shape));
      // Inputs grouped into the source layer's neurons: features, or channels of a flattened [C,H,W] map.
      size_t group = 1;
      if (io_channels && in_shape.size() == 3 && per_sample == n_in) {
        group = size_t(in_shape[1] * in_shape[2]);
        n_src = size_t(in_shape[0]);
      } else if (!in_shape.empty() && size_t(in_shape.back()) == n_in) {
        n_src = n_in;
      } else if (in_shape.empty() && Y.neuron_count == n_in) {
        n_src = n_in;
      } else {
        res.message = graph.name(wl) + " has " + std::to_string(n_in) + " inputs but " + graph.name(io) + " gives " +
                      std::to_string(per_sample) + " values per sample";
        return res;
      }
      if (dir == CreditDirection::Forward) {
        // x̄: mean over rows (leading per-sample dims) of the input, as the linear layer sees it (flattened).
        std::vector<double> x(n_in, 0.0);
        const size_t rows = data->values.size() / n_in;
        if (rows == 0 || data->values.size() % n_in != 0) {
          if (data->uniform && group > 1 && data->values.size() == n_src) {
            for (size_t j = 0; j < n_in; ++j) x[j] = data->values[j / group];
          } else {
            res.message = "recorded input of " + graph.name(wl) + " does not match its weights";
            return res;
          }
        } else {
          for (size_t r = 0; r < rows; ++r)
            for (size_t j = 0; j < n_in; ++j) x[j] += data->values[r * n_in + j];
          for (double& v : x) v /= double(rows);
        }
        if (data->uniform && group > 1)
          approx.push_back("channel means of " + graph.name(io) + " stand in for every position");
        contributions = [&, x = std::move(x), group, n_in](uint32_t i, std::vector<double>& c) {
          const float* w = W->values.data() + size_t(i) * n_in;
          c.assign(n_src, 0.0);
          if (group == 1) {
            for (size_t j = 0; j < n_in; ++j) c[j] = double(w[j]) * x[j];
          } else {
            for (size_t j = 0; j < n_in; ++j) c[j / group] += double(w[j]) * x[j];
          }
        };
        recorded = [&](uint32_t i) -> std::optional<double> {
          if (!check || check->values.size() % n_out) return std::nullopt;
          return mean_of_neuron(*check, i, false);
        };
      } else {
        // ḡ: mean over rows of wl's output gradient.
        std::vector<double> g(n_out, 0.0);
        const size_t rows = data->values.size() / n_out;
        if (rows == 0 || data->values.size() % n_out != 0) {
          res.message = "recorded gradient of " + graph.name(wl) + " does not match its weights";
          return res;
        }
        for (size_t r = 0; r < rows; ++r)
          for (size_t i = 0; i < n_out; ++i) g[i] += data->values[r * n_out + i];
        for (double& v : g) v /= double(rows);
        n_src = n_out;
        contributions = [&, g = std::move(g), group, n_in](uint32_t j, std::vector<double>& c) {
          c.assign(n_out, 0.0);
          for (size_t i = 0; i < n_out; ++i) {
            const float* w = W->values.data() + i * n_in + size_t(j) * group;
            double s = 0;
            for (size_t p = 0; p < group; ++p) s += double(w[p]);
            c[i] = s / double(group) * g[i];
          }
        };
        recorded = [&, group](uint32_t j) -> std::optional<double> {
          if (!check) return std::nullopt;
          if (group > 1 && check->shape.size() == 3) return mean_of_neuron(*check, j, true);
          if (group == 1 && !check->shape.empty() && check->shape.back() == int64_t(n_in))
            return mean_of_neuron(*check, j, false);
          return std::nullopt;
        };
      }
    } else if (role == LayerRole::Conv2d) {
      const std::vector<int64_t> in_shape = Y.output_shape, out_shape = L.output_shape;
      if (data->uniform && dir == CreditDirection::Forward)
        approx.push_back("channel means of " + graph.name(io) + " stand in for every position");
      if (data->uniform && dir == CreditDirection::Backward)
        approx.push_back("channel means of the gradient of " + graph.name(wl) + " stand in for every position");
      const int64_t co_n = ws[0], ci_n = ws[1], kh = ws[2], kw = ws[3];
      const int64_t ksz = kh * kw;
      Axis ay, ax;
      std::string how, why;
      bool exact = false;
      std::function<bool(const Axis&, const Axis&)> verify;
      // Exact data on both sides: the geometry must reproduce the recorded output (or gradient) of a few neurons.
      if (!data->uniform && check && !check->uniform) {
        verify = [&](const Axis& y, const Axis& x) {
          if (dir == CreditDirection::Forward) {
            const auto s = window_sums(*data, y, x);
            for (int64_t co = 0; co < std::min<int64_t>(co_n, 4); ++co) {
              double sum = b[size_t(co)], mag = std::abs(b[size_t(co)]);
              for (int64_t k = 0; k < ci_n * ksz; ++k) {
                const double v = double(W->values[size_t(co * ci_n * ksz + k)]) * s[size_t(k)];
                sum += v / double(y.out * x.out);
                mag += std::abs(v) / double(y.out * x.out);
              }
              const double rec = mean_of_neuron(*check, uint32_t(co), true);
              if (std::abs(sum - rec) > 1e-3 * (mag + std::abs(rec)) + 1e-12) return false;
            }
            return true;
          }
          const auto t = grad_window_sums(*data, y, x);
          for (int64_t ci = 0; ci < std::min<int64_t>(ci_n, 4); ++ci) {
            double sum = 0, mag = 0;
            for (int64_t co = 0; co < co_n; ++co)
              for (int64_t k = 0; k < ksz; ++k) {
                const double v = double(W->values[size_t((co * ci_n + ci) * ksz + k)]) * t[size_t(co * ksz + k)];
                sum += v;
                mag += std::abs(v);
              }
            sum /= double(y.in * x.in);
            mag /= double(y.in * x.in);
            const double rec = mean_of_neuron(*check, uint32_t(ci), true);
            if (std::abs(sum - rec) > 1e-3 * (mag + std::abs(rec)) + 1e-12) return false;
          }
          return true;
        };
      }
      if (!conv_geometry(wl, in_shape, out_shape, ws, &ay, &ax, &how, &exact, &why, verify)) {
        res.message = graph.name(wl) + ": " + why;
        return res;
      }
      if (!exact) approx.push_back("stride and padding of " + graph.name(wl) + " " + how);
      // The conv's window sums hold everything the contributions need: forward over the input, backward over the
      // output gradient (the same index arithmetic from the other side).
      auto sums = std::make_shared<std::vector<double>>(
          dir == CreditDirection::Forward ? window_sums(*data, ay, ax) : grad_window_sums(*data, ay, ax));
      if (dir == CreditDirection::Forward) {
        n_src = size_t(ci_n);
        const double positions = double(ay.out * ax.out);
        contributions = [&, sums, positions, ci_n, ksz](uint32_t co, std::vector<double>& c) {
          c.assign(size_t(ci_n), 0.0);
          const float* w = W->values.data() + size_t(co) * size_t(ci_n * ksz);
          for (int64_t ci = 0; ci < ci_n; ++ci) {
            double s = 0;
            for (int64_t k = 0; k < ksz; ++k) s += double(w[ci * ksz + k]) * (*sums)[size_t(ci * ksz + k)];
            c[size_t(ci)] = s / positions;
          }
        };
        recorded = [&](uint32_t co) -> std::optional<double> {
          if (!check || check->shape.size() != 3) return std::nullopt;
          return mean_of_neuron(*check, co, true);
        };
      } else {
        n_src = size_t(co_n);
        const double positions = double(ay.in * ax.in);
        contributions = [&, sums, positions, ci_n, co_n, ksz](uint32_t ci, std::vector<double>& c) {
          c.assign(size_t(co_n), 0.0);
          for (int64_t co = 0; co < co_n; ++co) {
            const float* w = W->values.data() + size_t((co * ci_n + int64_t(ci)) * ksz);
            double s = 0;
            for (int64_t k = 0; k < ksz; ++k) s += double(w[k]) * (*sums)[size_t(co * ksz + k)];
            c[size_t(co)] = s / positions;
          }
        };
        recorded = [&](uint32_t ci) -> std::optional<double> {
          if (!check || check->shape.size() != 3) return std::nullopt;
          return mean_of_neuron(*check, ci, true);
        };
      }
    } else {
      res.message = graph.name(wl) + " (" + L.kind + ") is not a layer whose weights can be traced";
      return res;
    }

    const size_t n_targets_max = dir == CreditDirection::Forward ? n_out : size_t(Y.neuron_count ? Y.neuron_count : 0);
    std::vector<double> agg_share(n_src, 0.0), agg_raw(n_src, 0.0);
    res.per_target.resize(targets.size());
    for (size_t t = 0; t < targets.size(); ++t) {
      const uint32_t tn = targets[t].neuron;
      if ((dir == CreditDirection::Forward && tn >= n_out) || (n_targets_max && tn >= n_targets_max)) {
        res.message = "neuron " + std::to_string(tn) + " is out of range for " + graph.name(h.target_layer);
        return res;
      }
      auto& c = res.per_target[t];
      contributions(tn, c);
      double norm = 0, sum = 0;
      for (double v : c) {
        norm += std::abs(v);
        sum += v;
      }
      CreditCheck chk;
      chk.neuron = tn;
      chk.sum = sum;
      chk.bias = dir == CreditDirection::Forward ? b[tn] : 0.0;
      chk.recorded = recorded(tn);
      h.checks.push_back(chk);
      for (size_t j = 0; j < n_src; ++j) {
        agg_raw[j] += c[j];
        if (norm > 0) agg_share[j] += targets[t].share * c[j] / norm;
      }
    }
    // Forward into a linear layer the parts must add up to its recorded output; where they do not, the layer does
    // more than Σ w·a + b (a user module's own arithmetic, or a non-finite value made inside it): say so.
    if (dir == CreditDirection::Forward && role == LayerRole::Linear) {
      if (L.kind != "Linear")
        approx.push_back(graph.name(wl) + " (" + L.kind + ") is traced as the linear map of its [" +
                         std::to_string(ws[0]) + ", " + std::to_string(ws[1]) + "] weight");
      for (size_t t = 0; t < h.checks.size(); ++t) {
        const CreditCheck& chk = h.checks[t];
        if (!chk.recorded) continue;
        double magnitude = std::abs(chk.bias) + std::abs(*chk.recorded);
        for (double v : res.per_target[t]) magnitude += std::abs(v);
        const bool finite = std::isfinite(chk.sum + chk.bias);
        if (finite && std::isfinite(*chk.recorded) && std::abs(chk.residual()) <= 1e-3 * magnitude + 1e-9) continue;
        approx.push_back("its recorded output differs from Σ w·a + b (neuron " + std::to_string(chk.neuron) + ": " +
                         short_number(*chk.recorded) + " recorded, " + short_number(chk.sum + chk.bias) +
                         " from its input)" +
                         (finite && !std::isfinite(*chk.recorded)
                              ? ": the non-finite value is made inside " + graph.name(wl) + ", not by its input"
                              : ": " + graph.name(wl) + " is not just w·a + b here"));
        break;
      }
    }
    h.source_neurons = n_src;
    std::vector<uint32_t> order(n_src);
    std::iota(order.begin(), order.end(), 0u);
    const size_t keep = std::min(opt.top_k, n_src);
    std::partial_sort(order.begin(), order.begin() + long(keep), order.end(), [&](uint32_t a, uint32_t c) {
      const double x = std::abs(agg_share[a]), y = std::abs(agg_share[c]);
      return x != y ? x > y : a < c;
    });
    for (size_t k = 0; k < keep; ++k) {
      const uint32_t j = order[k];
      h.neurons.push_back({h.source_layer, j, agg_raw[j], agg_share[j]});
      for (size_t t = 0; t < targets.size(); ++t) h.links.push_back({j, targets[t].neuron, res.per_target[t][j]});
    }
    h.data = "weights of " + graph.name(wl) + " (full tensor, step " + std::to_string(wstep) + "), " +
             source_words(h.source, q) + " of " + graph.name(data_layer);
    for (const auto& a : approx) h.approximation += (h.approximation.empty() ? "" : "; ") + a;
    if (h.source == CreditSource::BatchMeans && role == LayerRole::Linear && h.approximation.empty())
      h.data += " (exact for the batch mean: the layer is linear)";
    res.ok = true;
    return res;
  }

  // Forward: from a layer's neurons down through pass-through layers to the weighted layer that made them.
  // Returns the weighted layer, or nullopt with a message.
  std::optional<uint32_t> down_to_weighted(uint32_t layer, std::vector<Target>& neurons, std::vector<uint32_t>& via,
                                           std::string* why) {
    uint32_t cur = layer;
    for (size_t guard = 0; guard <= graph.size(); ++guard) {
      const format::Layer& l = graph.layer(cur);
      const LayerRole r = role_of(l);
      if (is_weighted(r)) return cur;
      if (r == LayerRole::Other) {
        *why = graph.name(cur) + " (" + l.kind +
               ") is not traced: its neurons mix their inputs in a way this "
               "analysis does not model";
        return std::nullopt;
      }
      auto in = single_input(cur, why);
      if (!in) return std::nullopt;
      if (r == LayerRole::Flatten) {
        const format::Layer& p = graph.layer(*in);
        if (!is_channel_map(p)) {
          *why = graph.name(cur) + " flattens " + graph.name(*in) + ", whose output is not a [C,H,W] map";
          return std::nullopt;
        }
        const auto hw = uint32_t(p.output_shape[1] * p.output_shape[2]);
        std::map<uint32_t, double> merged;
        for (const auto& t : neurons) merged[t.neuron / hw] += t.share;
        neurons.clear();
        for (const auto& [n, s] : merged) neurons.push_back({n, s});
      }
      via.push_back(cur);
      cur = *in;
    }
    *why = "the layer graph loops";
    return std::nullopt;
  }
};

CreditAssignment::CreditAssignment(format::RunReader& reader) : impl_(nullptr), graph_(reader.metadata()) {
  impl_ = std::make_unique<Impl>(reader, graph_);
}

CreditAssignment::~CreditAssignment() = default;

void CreditAssignment::clear_cache() {
  impl_->tensors.clear();
  impl_->reduced.clear();
  impl_->snapshots.clear();
  impl_->steps_cache.clear();
  impl_->weight_blocks.clear();
}

HopContributions CreditAssignment::contributions(int64_t step, uint32_t layer, uint32_t neuron,
                                                 CreditDirection direction, const CreditOptions& options) {
  HopContributions out;
  CreditOptions o = options;
  o.top_k = std::numeric_limits<size_t>::max();
  CreditTrace t = trace(step, layer, neuron, direction, [&] {
    CreditOptions one = o;
    one.depth = 1;
    return one;
  }());
  if (t.hops.empty()) {
    out.message = t.messages.empty() ? "nothing to trace" : t.messages.front();
    return out;
  }
  out.hop = std::move(t.hops.front());
  std::sort(out.hop.neurons.begin(), out.hop.neurons.end(),
            [](const NeuronCredit& a, const NeuronCredit& b) { return a.neuron < b.neuron; });
  for (const auto& n : out.hop.neurons) out.values.push_back(n.contribution);
  out.ok = true;
  return out;
}

CreditTrace CreditAssignment::trace(int64_t step, uint32_t layer, uint32_t neuron, CreditDirection direction,
                                    const CreditOptions& options) {
  CreditTrace tr;
  tr.layer = layer;
  tr.neuron = neuron;
  tr.step = step;
  tr.direction = direction;
  if (layer >= graph_.size()) {
    tr.messages.push_back("no layer with id " + std::to_string(layer));
    return tr;
  }
  const format::Layer& focus = graph_.layer(layer);
  if (focus.neuron_count && neuron >= focus.neuron_count) {
    tr.messages.push_back(graph_.name(layer) + " has " + std::to_string(focus.neuron_count) + " neurons; " +
                          std::to_string(neuron) + " is out of range");
    return tr;
  }
  std::vector<Impl::Target> frontier{{neuron, 1.0}};
  uint32_t cur = layer;
  for (int d = 0; d < options.depth && !frontier.empty(); ++d) {
    std::vector<uint32_t> via;
    std::string why;
    uint32_t weighted = 0, io = 0;
    if (direction == CreditDirection::Forward) {
      auto w = impl_->down_to_weighted(cur, frontier, via, &why);
      if (!w) {
        tr.messages.push_back(why);
        break;
      }
      weighted = *w;
      auto in = impl_->single_input(weighted, &why);
      if (!in) {
        tr.messages.push_back(why);
        break;
      }
      io = *in;
      if (role_of(graph_.layer(io)) == LayerRole::Flatten) {  // a reshape: attribute to the channels it flattens
        auto in2 = impl_->single_input(io, &why);
        if (!in2 || !is_channel_map(graph_.layer(*in2))) {
          tr.messages.push_back(in2 ? graph_.name(io) + " flattens a layer whose output is not a [C,H,W] map" : why);
          break;
        }
        io = *in2;
      }
    } else {
      // Up through pass-through consumers to the layer a weighted layer reads; the layers left behind are `via`.
      uint32_t y = cur;
      bool found = false;
      for (size_t guard = 0; guard <= graph_.size() && !found; ++guard) {
        auto next = impl_->single_output(y, &why);
        if (!next) break;
        const LayerRole r = role_of(graph_.layer(*next));
        if (is_weighted(r)) {
          weighted = *next;
          found = true;
        } else if (r == LayerRole::Flatten && is_channel_map(graph_.layer(y))) {
          auto after = impl_->single_output(*next, &why);
          if (!after) break;
          if (role_of(graph_.layer(*after)) != LayerRole::Linear) {
            why = graph_.name(*next) + " feeds " + graph_.name(*after) + ", which is not a Linear layer";
            break;
          }
          via.push_back(*next);
          weighted = *after;
          found = true;
        } else if (r == LayerRole::PassThrough) {
          via.push_back(y);
          y = *next;
        } else {
          why = graph_.name(*next) + " (" + graph_.layer(*next).kind +
                ") is not traced: its neurons mix their inputs in a way this analysis does not model";
          break;
        }
      }
      if (!found) {
        tr.messages.push_back(why);
        break;
      }
      io = y;
    }
    auto r = impl_->hop(step, weighted, io, direction, frontier, options);
    if (!r.ok) {
      tr.messages.push_back(r.message);
      break;
    }
    r.hop.via = via;
    frontier.clear();
    for (const auto& n : r.hop.neurons) frontier.push_back({n.neuron, n.share});
    cur = r.hop.source_layer;
    tr.hops.push_back(std::move(r.hop));
  }
  if (direction == CreditDirection::Forward && tr.messages.empty() && !tr.hops.empty() &&
      int(tr.hops.size()) == options.depth)
    tr.messages.push_back("depth " + std::to_string(options.depth) + " reached");

  // A conv channel: the image region one of its positions sees.
  if (is_channel_map(focus)) {
    int64_t y = focus.output_shape[1] / 2, x = focus.output_shape[2] / 2;
    if (options.position) {
      y = options.position->first;
      x = options.position->second;
    } else {
      // The strongest position of the focus channel in the recorded batch mean.
      for (CreditSource s : {CreditSource::TrainingBatch, CreditSource::ProbeBatch}) {
        auto r = impl_->reduce(layer, Quantity::Activation, step, s, options.sample);
        if (!r || r->shape.size() != 3) continue;
        const auto hw = size_t(r->shape[1] * r->shape[2]);
        size_t best = 0;
        for (size_t i = 1; i < hw; ++i)
          if (std::abs(r->values[neuron * hw + i]) > std::abs(r->values[neuron * hw + best])) best = i;
        y = int64_t(best) / r->shape[2];
        x = int64_t(best) % r->shape[2];
        break;
      }
    }
    tr.input_region = input_region(layer, y, x);
  }
  return tr;
}

InputRegion CreditAssignment::input_region(uint32_t layer, int64_t y, int64_t x) {
  InputRegion reg;
  reg.layer = layer;
  reg.y = y;
  reg.x = x;
  int64_t r0 = y, r1 = y, c0 = x, c1 = x;
  std::vector<std::string> notes;
  bool assumed = false, inferred = false;
  uint32_t cur = layer;
  for (size_t guard = 0; guard <= graph_.size(); ++guard) {
    const format::Layer& l = graph_.layer(cur);
    const LayerRole role = role_of(l);
    const auto& in = graph_.inputs(cur);
    const format::Layer* p = in.size() == 1 ? &graph_.layer(in.front()) : nullptr;
    if (role == LayerRole::Conv2d) {
      const auto& ws = parameter(l, "weight")->shape;
      Axis ay{ws[2], 1, (ws[2] - 1) / 2, 1, 0, 0}, ax{ws[3], 1, (ws[3] - 1) / 2, 1, 0, 0};
      if (auto v = impl_->verified_geometry.find(cur); v != impl_->verified_geometry.end()) {
        ay = v->second.first;
        ax = v->second.second;
      } else if (auto recorded = recorded_axes(l)) {
        ay = recorded->first;
        ax = recorded->second;
      } else if (p && p->output_shape.size() == 3 && l.output_shape.size() == 3) {
        const auto cy = axis_candidates(p->output_shape[1], l.output_shape[1], ws[2]);
        const auto cx = axis_candidates(p->output_shape[2], l.output_shape[2], ws[3]);
        if (!cy.empty() && !cx.empty()) {
          ay = cy.front();
          ax = cx.front();
          inferred = true;
          if (cy.size() > 1 || cx.size() > 1) {
            assumed = true;
            notes.push_back("several strides and paddings fit the shapes of " + graph_.name(cur) +
                            "; trace it with full tensors to verify");
          }
        } else {
          assumed = true;
        }
      } else {
        assumed = true;
        notes.push_back("assumed stride 1 and padding (k-1)/2 for " + graph_.name(cur) +
                        " (the model input's shape is not recorded)");
      }
      r0 = r0 * ay.stride - ay.pad;
      r1 = r1 * ay.stride - ay.pad + ay.dilation * (ay.kernel - 1);
      c0 = c0 * ax.stride - ax.pad;
      c1 = c1 * ax.stride - ax.pad + ax.dilation * (ax.kernel - 1);
    } else if (role == LayerRole::PassThrough &&
               (starts_with(l.kind, "MaxPool") || starts_with(l.kind, "AvgPool") || starts_with(l.kind, "Adaptive"))) {
      if (auto recorded = recorded_axes(l)) {
        const Axis& ay = recorded->first;
        const Axis& ax = recorded->second;
        r0 = r0 * ay.stride - ay.pad;
        r1 = r1 * ay.stride - ay.pad + ay.dilation * (ay.kernel - 1);
        c0 = c0 * ax.stride - ax.pad;
        c1 = c1 * ax.stride - ax.pad + ax.dilation * (ax.kernel - 1);
      } else if (p && p->output_shape.size() == 3 && l.output_shape.size() == 3 && l.output_shape[1] > 0 &&
                 l.output_shape[2] > 0) {
        const int64_t sy = std::max<int64_t>(1, p->output_shape[1] / l.output_shape[1]);
        const int64_t sx = std::max<int64_t>(1, p->output_shape[2] / l.output_shape[2]);
        // Without its options (adaptive pooling, an older recording): kernel = stride = the size ratio when it
        // divides (the usual 2x2 pool).
        r0 *= sy;
        r1 = r1 * sy + sy - 1;
        c0 *= sx;
        c1 = c1 * sx + sx - 1;
        assumed = true;
        notes.push_back("assumed kernel = stride = " + std::to_string(sy) + "x" + std::to_string(sx) + " for " +
                        graph_.name(cur));
      }
    } else if (role != LayerRole::PassThrough) {
      notes.push_back("stopped at " + graph_.name(cur) + " (" + l.kind + ")");
      assumed = true;
      break;
    }
    if (!p) {
      // The model input: its extent follows from the output's when the first layer has stride 1.
      const auto recorded = recorded_axes(l);
      if (recorded && l.output_shape.size() == 3 && in.empty()) {
        const Axis& ay = recorded->first;
        const Axis& ax = recorded->second;
        // The smallest input that gives this output; with stride 1 the only one.
        const int64_t rows = (l.output_shape[1] - 1) * ay.stride + ay.dilation * (ay.kernel - 1) - 2 * ay.pad + 1;
        const int64_t cols = (l.output_shape[2] - 1) * ax.stride + ax.dilation * (ax.kernel - 1) - 2 * ax.pad + 1;
        if (ay.stride == 1) r1 = std::min(r1, rows - 1);
        if (ax.stride == 1) c1 = std::min(c1, cols - 1);
        if (r1 > rows - 1 || c1 > cols - 1)
          notes.push_back("the region may reach past the input's bottom or right edge (its size is not recorded)");
      }
      break;
    }
    cur = in.front();
    // Clip to the layer's input extent where known.
    if (p->output_shape.size() == 3) {
      r0 = std::max<int64_t>(r0, 0);
      c0 = std::max<int64_t>(c0, 0);
      r1 = std::min<int64_t>(r1, p->output_shape[1] - 1);
      c1 = std::min<int64_t>(c1, p->output_shape[2] - 1);
    }
  }
  reg.row_first = std::max<int64_t>(r0, 0);
  reg.col_first = std::max<int64_t>(c0, 0);
  reg.row_last = r1;
  reg.col_last = c1;
  reg.geometry = assumed ? "partly assumed" : inferred ? "inferred from shapes" : "exact";
  for (const auto& n : notes) reg.geometry += "; " + n;
  return reg;
}

CreditOverTime CreditAssignment::over_time(int64_t step, uint32_t layer, uint32_t neuron, CreditDirection direction,
                                           int64_t before, int64_t after, const CreditOptions& options) {
  CreditOverTime out;
  auto focus = contributions(step, layer, neuron, direction, options);
  if (!focus.ok) {
    out.messages.push_back(focus.message);
    return out;
  }
  out.source_layer = focus.hop.source_layer;
  std::vector<uint32_t> idx(focus.values.size());
  std::iota(idx.begin(), idx.end(), 0u);
  const size_t keep = std::min(options.top_k, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + long(keep), idx.end(),
                    [&](uint32_t a, uint32_t b) { return std::abs(focus.values[a]) > std::abs(focus.values[b]); });
  out.neurons.assign(idx.begin(), idx.begin() + long(keep));
  // Steps with the data: full weights of the weighted layer, in the window.
  std::set<int64_t> steps;
  for (int64_t s : impl_->reader.full_tensor_steps(focus.hop.weighted_layer, Quantity::Weight))
    if (s >= step - before && s <= step + after) steps.insert(s);
  steps.insert(step);
  out.values.assign(keep, {});
  for (int64_t s : steps) {
    auto c = contributions(s, layer, neuron, direction, options);
    out.steps.push_back(s);
    for (size_t k = 0; k < keep; ++k)
      out.values[k].push_back(c.ok && c.hop.weight_step == s && out.neurons[k] < c.values.size()
                                  ? c.values[out.neurons[k]]
                                  : std::numeric_limits<double>::quiet_NaN());
    if (!c.ok) out.messages.push_back("step " + std::to_string(s) + ": " + c.message);
  }
  return out;
}

NeuronGrid neuron_grid_order(const std::vector<std::vector<double>>& profiles, const std::vector<double>& strength,
                             double min_fraction, size_t max_shown, double cut) {
  NeuronGrid grid;
  const size_t n = profiles.size();
  double top = 0;
  for (size_t i = 0; i < n; ++i) top = std::max(top, i < strength.size() ? std::abs(strength[i]) : 0.0);
  std::vector<uint32_t> shown;
  for (size_t i = 0; i < n; ++i) {
    const double s = i < strength.size() ? std::abs(strength[i]) : 0.0;
    if (top > 0 && s >= min_fraction * top)
      shown.push_back(uint32_t(i));
    else
      grid.hidden.push_back(uint32_t(i));
  }
  if (shown.size() > max_shown) {
    std::sort(shown.begin(), shown.end(), [&](uint32_t a, uint32_t b) {
      return std::abs(strength[a]) != std::abs(strength[b]) ? std::abs(strength[a]) > std::abs(strength[b]) : a < b;
    });
    grid.hidden.insert(grid.hidden.end(), shown.begin() + long(max_shown), shown.end());
    shown.resize(max_shown);
    std::sort(grid.hidden.begin(), grid.hidden.end());
  }
  const size_t m = shown.size();
  // Correlation distance between centred, normalised profiles.
  std::vector<std::vector<double>> z(m);
  for (size_t a = 0; a < m; ++a) {
    z[a] = profiles[shown[a]];
    double mean = 0;
    for (double v : z[a]) mean += std::isfinite(v) ? v : 0.0;
    mean /= std::max<size_t>(1, z[a].size());
    double norm = 0;
    for (double& v : z[a]) {
      v = std::isfinite(v) ? v - mean : 0.0;
      norm += v * v;
    }
    norm = std::sqrt(norm);
    for (double& v : z[a]) v = norm > 0 ? v / norm : 0.0;
  }
  std::vector<std::vector<double>> dist(m, std::vector<double>(m, 0.0));
  for (size_t a = 0; a < m; ++a)
    for (size_t b = a + 1; b < m; ++b) {
      double dot = 0;
      for (size_t k = 0; k < std::min(z[a].size(), z[b].size()); ++k) dot += z[a][k] * z[b][k];
      dist[a][b] = dist[b][a] = 1.0 - dot;
    }
  // Average-linkage agglomeration; each cluster keeps its members in leaf order, so merging concatenates them
  // with the closest ends facing each other.
  std::vector<std::vector<uint32_t>> members(m);
  std::vector<bool> alive(m, true);
  std::vector<int> cluster_of(m, -1);
  for (size_t a = 0; a < m; ++a) members[a] = {uint32_t(a)};
  std::vector<std::vector<double>> link = dist;
  std::vector<std::vector<uint32_t>> below_cut;
  for (size_t step = 1; step < m; ++step) {
    double best = std::numeric_limits<double>::infinity();
    size_t ba = 0, bb = 0;
    for (size_t a = 0; a < m; ++a) {
      if (!alive[a]) continue;
      for (size_t b = a + 1; b < m; ++b)
        if (alive[b] && link[a][b] < best) {
          best = link[a][b];
          ba = a;
          bb = b;
        }
    }
    if (best > cut && below_cut.empty()) {
      for (size_t a = 0; a < m; ++a)
        if (alive[a]) below_cut.push_back(members[a]);
    }
    auto& A = members[ba];
    auto& B = members[bb];
    // Orient: put the pair of ends with the smallest distance next to each other.
    const double d_ab = dist[A.back()][B.front()], d_ba = dist[B.back()][A.front()];
    const double d_aa = dist[A.back()][B.back()], d_ff = dist[A.front()][B.front()];
    const double bestend = std::min({d_ab, d_ba, d_aa, d_ff});
    if (bestend == d_ba) {
      std::swap(A, B);
    } else if (bestend == d_aa) {
      std::reverse(B.begin(), B.end());
    } else if (bestend == d_ff) {
      std::reverse(A.begin(), A.end());
    }
    const double na = double(A.size()), nb = double(B.size());
    A.insert(A.end(), B.begin(), B.end());
    B.clear();
    alive[bb] = false;
    for (size_t c = 0; c < m; ++c) {
      if (!alive[c] || c == ba) continue;
      link[ba][c] = link[c][ba] = (na * link[ba][c] + nb * link[bb][c]) / (na + nb);
    }
  }
  if (below_cut.empty())
    for (size_t a = 0; a < m; ++a)
      if (alive[a]) below_cut.push_back(members[a]);
  for (size_t c = 0; c < below_cut.size(); ++c)
    for (uint32_t a : below_cut[c]) cluster_of[a] = int(c);
  for (size_t a = 0; a < m; ++a)
    if (alive[a])
      for (uint32_t i : members[a]) {
        grid.order.push_back(shown[i]);
        grid.cluster.push_back(cluster_of[i]);
      }
  return grid;
}

}  // namespace trainscope::analysis
