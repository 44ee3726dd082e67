#include <trainscope/analysis/layer_rules.h>
#include <trainscope/analysis/robust_stats.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>

namespace trainscope::analysis {
namespace {

using format::Quantity;
using format::TensorSummary;

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_gradient(Quantity q) {
  return q == Quantity::ActivationGrad || q == Quantity::WeightGrad || q == Quantity::BiasGrad;
}

// Collects per-step hits of one rule on one series into runs of consecutive recorded steps. The evidence is a
// callable: it is formatted only for the step that opens a run, the one whose words the hit keeps.
class HitCollector {
 public:
  HitCollector(std::vector<RuleHit>& out, LayerRule rule, uint32_t layer, Quantity q)
      : out_(out), rule_(rule), layer_(layer), q_(q) {}
  ~HitCollector() { close(); }
  HitCollector(const HitCollector&) = delete;
  HitCollector& operator=(const HitCollector&) = delete;
  template <typename Evidence>
  void hit(int64_t step, double score, Evidence&& evidence) {
    if (!open_) {
      current_ = {rule_, layer_, q_, step, step, 0, 0, evidence()};
      open_ = true;
    }
    current_.last_step = step;
    ++current_.steps_hit;
    if (score > current_.score) current_.score = score;
  }
  void miss() { close(); }
  void close() {
    if (open_) out_.push_back(std::move(current_));
    open_ = false;
  }

 private:
  std::vector<RuleHit>& out_;
  LayerRule rule_;
  uint32_t layer_;
  Quantity q_;
  RuleHit current_;
  bool open_ = false;
};

// The last `capacity` gradient RMS values of a series, and a lower bound of their median at hand: the exploding
// rule needs the median only when a value exceeds factor x that bound, which in a healthy run it never does. The
// bound is the smallest finite value of the current and the previous block of `capacity` values, which hold the
// window: a minimum over more than the window, never above the window's own.
class RecentValues {
 public:
  explicit RecentValues(size_t capacity) : capacity_(capacity), ring_(capacity) {}
  size_t seen() const { return seen_; }
  void push(double v) {
    ++seen_;
    if (capacity_ == 0) return;
    ring_[next_] = v;
    next_ = next_ + 1 == capacity_ ? 0 : next_ + 1;
    if (std::isfinite(v)) current_minimum_ = std::min(current_minimum_, v);
    if (next_ == 0) {  // a block is full: it becomes the previous one
      previous_minimum_ = current_minimum_;
      current_minimum_ = kNone;
    }
  }
  // A value at or below every finite recent value; false when no value of the blocks is finite.
  bool lower_bound(double* out) const {
    const double m = std::min(previous_minimum_, current_minimum_);
    if (m == kNone || capacity_ == 0) return false;
    *out = m;
    return true;
  }
  // Median of the recent values (robust_stats' median: finite values only, NaN if none).
  double median_of_recent() const {
    const size_t n = std::min(seen_, capacity_);
    std::vector<double> window(n);
    for (size_t k = 0; k < n; ++k) window[k] = ring_[(seen_ - n + k) % capacity_];
    return median(std::move(window));
  }

 private:
  static constexpr double kNone = std::numeric_limits<double>::infinity();
  size_t capacity_;
  std::vector<double> ring_;
  size_t next_ = 0, seen_ = 0;
  double current_minimum_ = kNone, previous_minimum_ = kNone;  // finite values only; kNone for none
};

// A series' records as the rules read them, field by field: a stretch of a summary chunk's columns, or of a
// SummarySeries. Both paths run the same rule code on them.
struct ColumnRecords {
  const format::SummaryColumns& c;
  size_t offset;
  int64_t step(size_t k) const { return c.step[offset + k]; }
  double get(format::Statistic s, size_t k) const { return c.field[int(s)][offset + k]; }
  double numel(size_t k) const { return c.field[format::kStatisticCount][offset + k]; }
  TensorSummary summary(size_t k) const { return c.summary(offset + k); }
};
struct SeriesRecords {
  const SummarySeries& s;
  size_t offset;
  int64_t step(size_t k) const { return s.steps[offset + k]; }
  double get(format::Statistic st, size_t k) const { return s.values[offset + k].get(st); }
  double numel(size_t k) const { return s.values[offset + k].numel; }
  TensorSummary summary(size_t k) const { return s.values[offset + k]; }
};

// The rules that read one (layer, quantity) series, fed its records in step order, a stretch at a time. Hits are
// kept per rule group in the order evaluate_layer_rules has always listed them: non-finite, gradients, all-zero,
// weight updates.
class SeriesRules {
 public:
  SeriesRules(uint32_t layer, Quantity q, const LearningRate& lr, const LayerRuleParams& p)
      : layer_(layer),
        q_(q),
        lr_(lr),
        p_(p),
        non_finite_(non_finite_hits_, LayerRule::NonFinite, layer, q),
        vanishing_(gradient_hits_, LayerRule::VanishingGradient, layer, q),
        exploding_(gradient_hits_, LayerRule::ExplodingGradient, layer, q),
        all_zero_(all_zero_hits_, LayerRule::AllZero, layer, q),
        large_(update_hits_, LayerRule::WeightUpdateTooLarge, layer, Quantity::Weight),
        small_(update_hits_, LayerRule::WeightUpdateTooSmall, layer, Quantity::Weight),
        unchanged_(update_hits_, LayerRule::UnchangedWeights, layer, Quantity::Weight),
        history_(is_gradient(q) ? p.exploding_history : 0) {}

  uint32_t layer() const { return layer_; }
  Quantity quantity() const { return q_; }
  bool maybe_dead() const { return maybe_dead_; }
  bool has_first() const { return records_ > 0; }
  int64_t first_step() const { return first_step_; }
  const TensorSummary& first() const { return first_; }

  // The next n records. For a weight series, grad_norm[k] is the norm of the weight gradient recorded at record
  // k's step, NaN when there is none (grad_here[k] == 0).
  template <typename Records>
  void add(const Records& r, size_t n, const uint8_t* grad_here = nullptr, const double* grad_norm = nullptr) {
    if (n == 0) return;
    if (records_ == 0) first_step_ = r.step(0), first_ = r.summary(0);
    using S = format::Statistic;
    // Rule group by rule group: each sees the records in order, and a stretch without a hit is one miss.
    for (size_t k = 0; k < n;) {
      size_t j = k;
      while (j < n && !(r.get(S::NanCount, j) > 0 || r.get(S::InfCount, j) > 0)) ++j;
      if (j > k) non_finite_.miss();
      if (j < n) non_finite(r, j);
      k = j + 1;
    }
    if (q_ == Quantity::Activation || q_ == Quantity::Weight)
      for (size_t k = 0; k < n;) {
        size_t j = k;
        while (j < n && !(r.numel(j) > 0 && r.get(S::ZeroFraction, j) >= 1.0)) ++j;
        if (j > k) all_zero_.miss();
        if (j < n) all_zero(r, j);
        k = j + 1;
      }
    if (q_ == Quantity::Activation) {
      // Dead units need many zeros: the summary's zero fraction is a cheap filter before per-neuron reads.
      const double dead = p_.dead_layer_fraction * p_.dead_unit_zero_fraction;
      for (size_t k = 0; k < n && !maybe_dead_; ++k) maybe_dead_ = r.get(S::ZeroFraction, k) >= dead;
    }
    if (q_ == Quantity::Weight) {
      for (size_t k = 0; k < n; ++k) weight_update(r, k, grad_here[k] != 0, grad_norm[k]);
      previous_ = r.summary(n - 1);
    }
    if (is_gradient(q_))
      for (size_t k = 0; k < n; ++k) gradients(r, k);
    records_ += n;
  }

  // Closes the runs still open, in the order the rules, one function per group, always closed them; then hands
  // the hits over, group after group.
  void finish(std::vector<RuleHit>& out) {
    non_finite_.close();
    exploding_.close();
    vanishing_.close();
    all_zero_.close();
    unchanged_.close();
    small_.close();
    large_.close();
    for (auto* group : {&non_finite_hits_, &gradient_hits_, &all_zero_hits_, &update_hits_})
      for (RuleHit& h : *group) out.push_back(std::move(h));
  }

 private:
  template <typename Records>
  void non_finite(const Records& r, size_t k) {
    const double nan = r.get(format::Statistic::NanCount, k), inf = r.get(format::Statistic::InfCount, k);
    if (nan > 0 || inf > 0)
      non_finite_.hit(r.step(k), 1.0, [&] {
        return fmt("%.0f NaN and %.0f Inf values of %.0f", nan, inf, r.numel(k)) + " in " +
               std::string(format::quantity_name(q_)) + " from step " + std::to_string(r.step(k));
      });
    else
      non_finite_.miss();
  }

  template <typename Records>
  void gradients(const Records& rec, size_t k) {
    const double numel = rec.numel(k);
    if (rec.get(format::Statistic::NanCount, k) != 0 || rec.get(format::Statistic::InfCount, k) != 0 || numel <= 0) {
      vanishing_.miss();
      exploding_.miss();
      return;
    }
    const int64_t step = rec.step(k);
    const double norm = rec.get(format::Statistic::Norm, k);
    const double r = std::sqrt(norm * norm / numel);  // rms(), numel > 0 here
    if (r < p_.vanishing_gradient_rms)
      vanishing_.hit(step, std::min(1.0, std::log10(p_.vanishing_gradient_rms / std::max(r, 1e-45)) / 10 + 0.5), [&] {
        return std::string(format::quantity_name(q_)) + fmt(" RMS %.3g below %.3g", r, p_.vanishing_gradient_rms);
      });
    else
      vanishing_.miss();
    if (history_.seen() >= p_.exploding_min_history) {
      // factor x a lower bound of the median bounds factor x the median from below: at or under it, no hit. No
      // finite value at all: no median either.
      double bound = 0;
      const bool any_finite = history_.lower_bound(&bound);
      const bool surely_not =
          p_.exploding_gradient_factor >= 0 && (!any_finite || !(r > p_.exploding_gradient_factor * bound));
      const double m = surely_not ? 0.0 : history_.median_of_recent();
      if (!surely_not && m > 0 && r > p_.exploding_gradient_factor * m)
        exploding_.hit(step, std::min(1.0, 0.5 + std::log10(r / m) / 10), [&] {
          return std::string(format::quantity_name(q_)) +
                 fmt(" RMS %.3g is %.0fx its median %.3g over the recorded steps before", r, r / m, m);
        });
      else
        exploding_.miss();
    }
    history_.push(r);
  }

  template <typename Records>
  void all_zero(const Records& r, size_t k) {
    if (r.numel(k) > 0 && r.get(format::Statistic::ZeroFraction, k) >= 1.0)
      all_zero_.hit(r.step(k), 0.8, [&] { return std::string(format::quantity_name(q_)) + " is all zero"; });
    else
      all_zero_.miss();
  }

  // lr_.at(step) for steps in increasing order: a galloping search from where the last one ended.
  double rate_at(int64_t step) {
    const std::vector<int64_t>& steps = lr_.steps;
    if (step < last_rate_step_) rate_next_ = 0;
    last_rate_step_ = step;
    size_t i = rate_next_;  // every earlier learning-rate step is at or before `step`
    if (i < steps.size() && steps[i] <= step) {
      size_t stride = 1, hi = i + 1;
      while (hi < steps.size() && steps[hi] <= step) {
        i = hi;
        stride *= 2;
        hi = i + stride;
      }
      i = size_t(
          std::upper_bound(steps.begin() + ptrdiff_t(i), steps.begin() + ptrdiff_t(std::min(hi, steps.size())), step) -
          steps.begin());
    }
    rate_next_ = i;
    return i == 0 ? NAN : lr_.values[i - 1];
  }

  template <typename Records>
  void weight_update(const Records& r, size_t k, bool grad_here, double grad_norm) {
    using S = format::Statistic;
    const int64_t step = r.step(k);
    const double norm = r.get(S::Norm, k);
    const double rate = grad_here ? rate_at(step) : NAN;  // only read with a gradient
    if (grad_here && std::isfinite(rate) && std::isfinite(grad_norm) && norm > 0 && std::isfinite(norm)) {
      const double ratio = rate * grad_norm / norm;
      if (ratio > p_.max_update_ratio)
        large_.hit(step, std::min(1.0, 0.5 + std::log10(ratio / p_.max_update_ratio) / 4),
                   [&] { return fmt("update ratio lr*|grad W|/|W| = %.3g above %.3g", ratio, p_.max_update_ratio); });
      else
        large_.miss();
      if (ratio < p_.min_update_ratio && grad_norm > 0)
        small_.hit(step, 0.5,
                   [&] { return fmt("update ratio lr*|grad W|/|W| = %.3g below %.3g", ratio, p_.min_update_ratio); });
      else
        small_.miss();
    }
    if (records_ + k > 0) {
      // The record before: earlier in this stretch, or the last of the previous one.
      const bool here = k > 0;
      const auto prev = [&](S st) { return here ? r.get(st, k - 1) : previous_.get(st); };
      const bool identical = r.get(S::Mean, k) == prev(S::Mean) && r.get(S::Std, k) == prev(S::Std) &&
                             r.get(S::Min, k) == prev(S::Min) && r.get(S::Max, k) == prev(S::Max) &&
                             norm == prev(S::Norm) && r.numel(k) > 0;
      same_ = identical ? same_ + 1 : 0;
      if (same_ + 1 >= p_.unchanged_steps && grad_here && grad_norm > 0 && std::isfinite(grad_norm))
        unchanged_.hit(step, 0.6, [&] {
          return "weights unchanged for " + std::to_string(same_ + 1) + " recorded steps although gradients flow";
        });
      else
        unchanged_.miss();
    }
  }

  uint32_t layer_;
  Quantity q_;
  const LearningRate& lr_;
  const LayerRuleParams& p_;
  std::vector<RuleHit> non_finite_hits_, gradient_hits_, all_zero_hits_, update_hits_;
  HitCollector non_finite_, vanishing_, exploding_, all_zero_, large_, small_, unchanged_;
  RecentValues history_;
  size_t records_ = 0, same_ = 0;
  size_t rate_next_ = 0;  // upper bound of the last step looked up in lr_.steps
  int64_t last_rate_step_ = INT64_MIN;
  int64_t first_step_ = 0;
  TensorSummary first_, previous_;
  bool maybe_dead_ = false;
};

// Per-neuron data of one activation layer, read only when its summaries point at dead units (`maybe_dead`) or the
// layer is a tanh or sigmoid.
void rule_dead_and_saturated(const LayerGraph& graph, uint32_t layer, bool maybe_dead, format::RunReader* reader,
                             const LayerRuleParams& p, std::vector<RuleHit>& out) {
  if (!reader) return;
  const std::string kind = lower(graph.layer(layer).kind);
  const bool tanh = kind.find("tanh") != std::string::npos;
  const bool sigmoid = kind.find("sigmoid") != std::string::npos;
  if (maybe_dead) {
    if (auto zeros = reader->read_neuron_series(layer, Quantity::Activation, format::Statistic::ZeroFraction)) {
      HitCollector c(out, LayerRule::DeadUnits, layer, Quantity::Activation);
      for (size_t r = 0; r < zeros->steps.size(); ++r) {
        size_t dead = 0;
        for (uint32_t n = 0; n < zeros->neuron_count; ++n)
          dead += zeros->values[r * zeros->neuron_count + n] >= p.dead_unit_zero_fraction;
        const double fraction = zeros->neuron_count ? double(dead) / zeros->neuron_count : 0;
        if (fraction >= p.dead_layer_fraction)
          c.hit(zeros->steps[r], std::min(1.0, fraction), [&] {
            return fmt("%.0f of %.0f units (%.0f%%) are zero on at least ", double(dead), double(zeros->neuron_count),
                       100 * fraction) +
                   fmt("%.0f%% of the inputs", 100 * p.dead_unit_zero_fraction);
          });
        else
          c.miss();
      }
    }
  }
  if (!tanh && !sigmoid) return;
  auto means = reader->read_neuron_series(layer, Quantity::Activation, format::Statistic::Mean);
  if (!means) return;
  HitCollector c(out, LayerRule::SaturatedActivation, layer, Quantity::Activation);
  for (size_t r = 0; r < means->steps.size(); ++r) {
    size_t saturated = 0;
    for (uint32_t n = 0; n < means->neuron_count; ++n) {
      const double m = means->values[r * means->neuron_count + n];
      saturated += tanh ? std::abs(m) >= p.tanh_saturated_output
                        : (m <= p.sigmoid_saturated_output || m >= 1 - p.sigmoid_saturated_output);
    }
    const double fraction = means->neuron_count ? double(saturated) / means->neuron_count : 0;
    if (fraction >= p.saturated_layer_fraction)
      c.hit(means->steps[r], std::min(1.0, fraction), [&] {
        return fmt("%.0f of %.0f units (%.0f%%) saturated", double(saturated), double(means->neuron_count),
                   100 * fraction) +
               (tanh ? " (|mean tanh output| near 1)" : " (mean sigmoid output near 0 or 1)");
      });
    else
      c.miss();
  }
}

// The first recorded activation summary of a layer: its step and value.
struct FirstActivation {
  int64_t step;
  const TensorSummary* value;
};

template <typename FirstOf>
void rule_initialization(const LayerGraph& graph, const FirstOf& first_activation, const LayerRuleParams& p,
                         std::vector<RuleHit>& out) {
  for (const GraphEdge& e : graph.edges()) {
    // Only a layer fed by exactly one layer: with several inputs (a VAE's decoder fed by mu and logvar through the
    // sampling) the variance of any one of them says little about the layer's own input.
    if (e.recurrent || graph.inputs(e.to).size() != 1) continue;
    const std::optional<FirstActivation> from = first_activation(e.from), to = first_activation(e.to);
    if (!from || !to) continue;
    if (from->step != to->step) continue;
    const double vf = from->value->std * from->value->std;
    const double vt = to->value->std * to->value->std;
    if (!(vf > 0) || !(vt > 0) || !std::isfinite(vf) || !std::isfinite(vt)) continue;
    const double ratio = vt / vf;
    if (ratio > p.init_variance_ratio || ratio < 1 / p.init_variance_ratio) {
      const double severity = std::abs(std::log10(ratio)) / std::log10(p.init_variance_ratio);
      out.push_back({LayerRule::PoorInitialization, e.to, Quantity::Activation, to->step, to->step, 1,
                     std::min(1.0, 0.4 + 0.2 * severity),
                     fmt("activation variance %.3g is %.3gx that of its input layer", vt, ratio) + " (" +
                         graph.name(e.from) + fmt(", %.3g) at the first recorded step", vf)});
    }
  }
}

void sort_hits(std::vector<RuleHit>& hits) {
  std::stable_sort(hits.begin(), hits.end(), [](const RuleHit& a, const RuleHit& b) {
    return std::tie(a.first_step, a.layer_id) < std::tie(b.first_step, b.layer_id);
  });
}

}  // namespace

const char* layer_rule_name(LayerRule rule) {
  switch (rule) {
    case LayerRule::NonFinite: return "non_finite";
    case LayerRule::VanishingGradient: return "vanishing_gradient";
    case LayerRule::ExplodingGradient: return "exploding_gradient";
    case LayerRule::DeadUnits: return "dead_units";
    case LayerRule::SaturatedActivation: return "saturated_activation";
    case LayerRule::PoorInitialization: return "poor_initialization";
    case LayerRule::WeightUpdateTooLarge: return "weight_update_too_large";
    case LayerRule::WeightUpdateTooSmall: return "weight_update_too_small";
    case LayerRule::AllZero: return "all_zero";
    case LayerRule::UnchangedWeights: return "unchanged_weights";
  }
  return "unknown";
}

double LearningRate::at(int64_t step) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), step);
  if (it == steps.begin()) return NAN;
  return values[size_t(it - steps.begin()) - 1];
}

LearningRate read_learning_rate(format::RunReader& reader, const std::string& name) {
  for (const auto& s : reader.read_scalars())
    if (s.name == name) return {s.steps, s.values};
  return {};
}

std::vector<RuleHit> evaluate_layer_rules(const LayerGraph& graph, const SummaryTable& table, format::RunReader* reader,
                                          const LearningRate& lr, const LayerRuleParams& params) {
  std::vector<RuleHit> out;
  for (const SummarySeries& s : table.series()) {
    if (s.layer_id >= graph.size()) continue;
    SeriesRules rules(s.layer_id, s.quantity, lr, params);
    std::vector<uint8_t> grad_here;
    std::vector<double> grad_norm;
    if (s.quantity == Quantity::Weight) {
      const SummarySeries* grad = table.find(s.layer_id, Quantity::WeightGrad);
      for (int64_t step : s.steps) {
        const ptrdiff_t gi = grad ? grad->index_at_or_before(step) : -1;
        const bool here = gi >= 0 && grad->steps[size_t(gi)] == step;
        grad_here.push_back(here);
        grad_norm.push_back(here ? grad->values[size_t(gi)].norm : NAN);
      }
    }
    rules.add(SeriesRecords{s, 0}, s.steps.size(), grad_here.data(), grad_norm.data());
    rules.finish(out);
    if (s.quantity == Quantity::Activation)
      rule_dead_and_saturated(graph, s.layer_id, rules.maybe_dead(), reader, params, out);
  }
  rule_initialization(
      graph,
      [&](uint32_t layer) -> std::optional<FirstActivation> {
        const SummarySeries* s = table.find(layer, Quantity::Activation);
        if (!s || s->steps.empty()) return std::nullopt;
        return FirstActivation{s->steps.front(), &s->values.front()};
      },
      params, out);
  sort_hits(out);
  return out;
}

struct LayerRuleStream::Impl {
  const LayerGraph& graph;
  LearningRate lr;
  LayerRuleParams params;
  std::vector<std::unique_ptr<SeriesRules>> series;  // by layer x quantity; null until its first record
  std::vector<SeriesRules*> order;                   // in the order of their first records
  bool any_chunk = false;
  int64_t last_step_seen = 0;
  std::vector<uint8_t> grad_here;  // scratch for the weight series of a chunk
  std::vector<double> grad_norm;

  SeriesRules& rules_of(uint32_t layer, Quantity q) {
    auto& slot = series[size_t(layer) * format::kQuantityCount + size_t(q)];
    if (!slot) {
      slot = std::make_unique<SeriesRules>(layer, q, lr, params);
      order.push_back(slot.get());
    }
    return *slot;
  }
};

LayerRuleStream::LayerRuleStream(const LayerGraph& graph, LearningRate lr, const LayerRuleParams& params)
    : impl_(new Impl{graph, std::move(lr), params, {}, {}, false, 0, {}, {}}) {
  impl_->series.resize(graph.size() * size_t(format::kQuantityCount));
}

LayerRuleStream::~LayerRuleStream() = default;

bool LayerRuleStream::add(const format::SummaryColumns& c) {
  Impl& m = *impl_;
  // One pass equals the table only if every step's records are in this chunk (step ranges of chunks increase and
  // do not overlap) and each series comes in step order (the writer sorts a chunk by layer, quantity, step).
  if (m.any_chunk && c.first_step <= m.last_step_seen) return false;
  m.any_chunk = true;
  m.last_step_seen = c.last_step;
  for (size_t i = 0; i < c.size;) {
    const uint32_t layer = c.layer_id[i];
    const Quantity q = c.quantity[i];
    size_t end = i;  // the series' records in this chunk: [i, end)
    for (; end < c.size && c.layer_id[end] == layer && c.quantity[end] == q; ++end) {
      if (c.step[end] < c.first_step || c.step[end] > c.last_step) return false;
      if (end > i && c.step[end] < c.step[end - 1]) return false;
    }
    if (end < c.size && std::make_pair(c.layer_id[end], c.quantity[end]) < std::make_pair(layer, q)) return false;
    if (layer >= m.graph.size()) {
      i = end;
      continue;
    }
    SeriesRules& rules = m.rules_of(layer, q);
    if (q == Quantity::Weight) {
      // A weight's gradient at the same step: the weight gradient records follow the weight's in a sorted chunk.
      size_t grad_end = end;
      while (grad_end < c.size && c.layer_id[grad_end] == layer && c.quantity[grad_end] == Quantity::WeightGrad)
        ++grad_end;
      m.grad_here.assign(end - i, 0);
      m.grad_norm.assign(end - i, NAN);
      const double* norms = c.field[int(format::Statistic::Norm)];
      for (size_t k = i, g = end; k < end; ++k) {  // g: one past the last gradient record at or before step k
        while (g < grad_end && c.step[g] <= c.step[k]) ++g;
        if (g > end && c.step[g - 1] == c.step[k]) m.grad_here[k - i] = 1, m.grad_norm[k - i] = norms[g - 1];
      }
    }
    rules.add(ColumnRecords{c, i}, end - i, m.grad_here.data(), m.grad_norm.data());
    i = end;
  }
  return true;
}

std::vector<RuleHit> LayerRuleStream::finish(format::RunReader* reader) {
  Impl& m = *impl_;
  std::vector<RuleHit> out;
  for (SeriesRules* rules : m.order) {
    rules->finish(out);
    if (rules->quantity() == Quantity::Activation)
      rule_dead_and_saturated(m.graph, rules->layer(), rules->maybe_dead(), reader, m.params, out);
  }
  rule_initialization(
      m.graph,
      [&](uint32_t layer) -> std::optional<FirstActivation> {
        const auto& slot = m.series[size_t(layer) * format::kQuantityCount + size_t(Quantity::Activation)];
        if (!slot || !slot->has_first()) return std::nullopt;
        return FirstActivation{slot->first_step(), &slot->first()};
      },
      m.params, out);
  sort_hits(out);
  return out;
}

}  // namespace trainscope::analysis
