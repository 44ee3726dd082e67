#include <trainscope/analysis/layer_rules.h>
#include <trainscope/analysis/robust_stats.h>

#include "chunk_scan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>

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
  void prefetch() const {
    if (capacity_) __builtin_prefetch(&ring_[next_]);
  }
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

// One series' next records, field by field: a stretch of a chunk's columns, or a SummarySeries laid out the same
// way. The rules read them through local copies of these pointers, which no write to a rule's state can move.
struct RecordColumns {
  const int64_t* step = nullptr;
  const double* field[format::kStatisticCount + 1] = {};  // each Statistic in its order, then numel

  double get(format::Statistic s, size_t k) const { return field[int(s)][k]; }
  double numel(size_t k) const { return field[format::kStatisticCount][k]; }
  TensorSummary summary(size_t k) const {
    using S = format::Statistic;
    return {get(S::Mean, k),         get(S::Std, k),      get(S::Min, k),      get(S::Max, k), get(S::Norm, k),
            get(S::ZeroFraction, k), get(S::NanCount, k), get(S::InfCount, k), numel(k)};
  }
};

RecordColumns columns_at(const format::SummaryColumns& c, size_t offset) {
  RecordColumns r;
  r.step = c.step + offset;
  for (int f = 0; f <= format::kStatisticCount; ++f) r.field[f] = c.field[f] + offset;
  return r;
}

// A SummarySeries as columns, for the same rule code.
struct SeriesColumns {
  std::vector<double> values[format::kStatisticCount + 1];
  RecordColumns view;
  explicit SeriesColumns(const SummarySeries& s) {
    for (int f = 0; f <= format::kStatisticCount; ++f) {
      values[f].reserve(s.values.size());
      for (const TensorSummary& v : s.values)
        values[f].push_back(f == format::kStatisticCount ? v.numel : v.get(format::Statistic(f)));
      view.field[f] = values[f].data();
    }
    view.step = s.steps.data();
  }
  SeriesColumns(const SeriesColumns&) = delete;  // the view points into this object
  SeriesColumns& operator=(const SeriesColumns&) = delete;
};

// LearningRate::at for every weight record of a pass: series after series meet the same few steps, so each step is
// searched for once and then found in a small direct-mapped table.
class RateLookup {
 public:
  explicit RateLookup(const LearningRate& lr) : lr_(lr) {}
  double at(int64_t step) {
    Entry& e = table_[uint64_t(step) % kEntries];
    if (!e.used || e.step != step) e = {step, lr_.at(step), true};
    return e.rate;
  }

 private:
  static constexpr size_t kEntries = 256;
  struct Entry {
    int64_t step = 0;
    double rate = 0;
    bool used = false;
  };
  const LearningRate& lr_;
  std::vector<Entry> table_ = std::vector<Entry>(kEntries);
};

// The rules that read one (layer, quantity) series, fed its records in step order, a stretch at a time. Hits are
// kept per rule group in the order evaluate_layer_rules has always listed them: non-finite, gradients, all-zero,
// weight updates. A pass over a long run meets every series once per chunk, a few records each time: what a record
// without a hit reads and writes (counters, the gradient history, the previous weight record, one bit per rule
// saying whether its run is open) comes first, in three cache lines, and the collectors of the hits after it.
class alignas(64) SeriesRules {
 public:
  SeriesRules(uint32_t layer, Quantity q, RateLookup& rates, const LayerRuleParams& p)
      : layer_(layer),
        q_(q),
        history_(is_gradient(q) ? p.exploding_history : 0),
        rates_(rates),
        p_(p),
        non_finite_(non_finite_hits_, LayerRule::NonFinite, layer, q),
        vanishing_(gradient_hits_, LayerRule::VanishingGradient, layer, q),
        exploding_(gradient_hits_, LayerRule::ExplodingGradient, layer, q),
        all_zero_(all_zero_hits_, LayerRule::AllZero, layer, q),
        large_(update_hits_, LayerRule::WeightUpdateTooLarge, layer, Quantity::Weight),
        small_(update_hits_, LayerRule::WeightUpdateTooSmall, layer, Quantity::Weight),
        unchanged_(update_hits_, LayerRule::UnchangedWeights, layer, Quantity::Weight) {}

  uint32_t layer() const { return layer_; }
  Quantity quantity() const { return q_; }
  void prefetch() const {  // the per-record state, and where the gradient history is written next
    for (size_t line = 0; line < 3; ++line) __builtin_prefetch(reinterpret_cast<const char*>(this) + 64 * line);
    history_.prefetch();
  }
  bool maybe_dead() const { return maybe_dead_; }
  bool has_first() const { return records_ > 0; }
  int64_t first_step() const { return first_step_; }
  const TensorSummary& first() const { return first_; }

  // The next n records, with their record_flags() (nullptr: all clear). For a weight series, grad_norm[k] is the
  // norm of the weight gradient recorded at record k's step, NaN when there is none (grad_here[k] == 0).
  void add(const RecordColumns& records, size_t n, const uint8_t* flags, const uint8_t* grad_here = nullptr,
           const double* grad_norm = nullptr) {
    if (n == 0) return;
    const RecordColumns r = records;
    if (records_ == 0) first_step_ = r.step[0], first_ = r.summary(0);
    // Most stretches of a healthy run hold nothing for the rules below but a miss.
    uint8_t any = 0;
    if (flags)
      for (size_t k = 0; k < n; ++k) any |= flags[k];
    // Rule group by rule group: each sees the records in order, and a stretch without a hit is one miss.
    if (!(any & kNonFiniteRecord))
      miss(kNonFinite);
    else
      for (size_t k = 0; k < n; ++k) non_finite(r, k);
    if (q_ == Quantity::Activation || q_ == Quantity::Weight) {
      if (!(any & kAllZeroRecord))
        miss(kAllZero);
      else
        for (size_t k = 0; k < n; ++k) all_zero(r, k);
    }
    // Dead units need many zeros: the summary's zero fraction is a cheap filter before per-neuron reads.
    if (q_ == Quantity::Activation && (any & kMaybeDeadRecord)) maybe_dead_ = true;
    if (q_ == Quantity::Weight) weight_updates(r, n, grad_here, grad_norm);
    if (is_gradient(q_)) gradients(r, n);
    records_ += n;
  }

  // Closes the runs still open, in the order the rules, one function per group, always closed them; then hands
  // the hits over, group after group.
  void finish(std::vector<RuleHit>& out) {
    for (Rule rule : {kNonFinite, kExploding, kVanishing, kAllZero, kUnchanged, kSmall, kLarge}) miss(rule);
    for (auto* group : {&non_finite_hits_, &gradient_hits_, &all_zero_hits_, &update_hits_})
      for (RuleHit& h : *group) out.push_back(std::move(h));
  }

 private:
  enum Rule : uint8_t {
    kNonFinite = 1,
    kVanishing = 2,
    kExploding = 4,
    kAllZero = 8,
    kLarge = 16,
    kSmall = 32,
    kUnchanged = 64
  };
  HitCollector& collector(Rule rule) {
    switch (rule) {
      case kNonFinite: return non_finite_;
      case kVanishing: return vanishing_;
      case kExploding: return exploding_;
      case kAllZero: return all_zero_;
      case kLarge: return large_;
      case kSmall: return small_;
      case kUnchanged: break;
    }
    return unchanged_;
  }
  template <typename Evidence>
  void hit(Rule rule, int64_t step, double score, Evidence&& evidence) {
    open_ |= rule;
    collector(rule).hit(step, score, std::forward<Evidence>(evidence));
  }
  void miss(Rule rule) {  // closes the rule's run, if one is open; touches nothing else
    if (!(open_ & rule)) return;
    open_ &= uint8_t(~rule);
    collector(rule).close();
  }

  void non_finite(const RecordColumns& r, size_t k) {
    const double nan = r.get(format::Statistic::NanCount, k), inf = r.get(format::Statistic::InfCount, k);
    if (nan > 0 || inf > 0)
      hit(kNonFinite, r.step[k], 1.0, [&] {
        return fmt("%.0f NaN and %.0f Inf values of %.0f", nan, inf, r.numel(k)) + " in " +
               std::string(format::quantity_name(q_)) + " from step " + std::to_string(r.step[k]);
      });
    else
      miss(kNonFinite);
  }

  void gradients(const RecordColumns& r, size_t n) {
    using S = format::Statistic;
    const double *nan = r.field[int(S::NanCount)], *inf = r.field[int(S::InfCount)];
    const double *norm = r.field[int(S::Norm)], *numel = r.field[format::kStatisticCount];
    const double vanishing = p_.vanishing_gradient_rms, factor = p_.exploding_gradient_factor;
    for (size_t k = 0; k < n; ++k) {
      if (nan[k] != 0 || inf[k] != 0 || numel[k] <= 0) {
        miss(kVanishing);
        miss(kExploding);
        continue;
      }
      const double rms = std::sqrt(norm[k] * norm[k] / numel[k]);  // rms(), numel > 0 here
      if (rms < vanishing)
        vanishing_gradient(r.step[k], rms);
      else
        miss(kVanishing);
      if (history_.seen() >= p_.exploding_min_history) {
        // factor x a lower bound of the median bounds factor x the median from below: at or under it, no hit. No
        // finite value at all: no median either.
        double bound = 0;
        const bool any_finite = history_.lower_bound(&bound);
        if (factor >= 0 && (!any_finite || !(rms > factor * bound)))
          miss(kExploding);
        else
          exploding_gradient(r.step[k], rms);
      }
      history_.push(rms);
    }
  }
  void vanishing_gradient(int64_t step, double r) {
    hit(kVanishing, step, std::min(1.0, std::log10(p_.vanishing_gradient_rms / std::max(r, 1e-45)) / 10 + 0.5), [&] {
      return std::string(format::quantity_name(q_)) + fmt(" RMS %.3g below %.3g", r, p_.vanishing_gradient_rms);
    });
  }
  void exploding_gradient(int64_t step, double r) {  // r may be above factor x the median of the recent values
    const double m = history_.median_of_recent();
    if (m > 0 && r > p_.exploding_gradient_factor * m)
      hit(kExploding, step, std::min(1.0, 0.5 + std::log10(r / m) / 10), [&] {
        return std::string(format::quantity_name(q_)) +
               fmt(" RMS %.3g is %.0fx its median %.3g over the recorded steps before", r, r / m, m);
      });
    else
      miss(kExploding);
  }

  void all_zero(const RecordColumns& r, size_t k) {
    if (r.numel(k) > 0 && r.get(format::Statistic::ZeroFraction, k) >= 1.0)
      hit(kAllZero, r.step[k], 0.8, [&] { return std::string(format::quantity_name(q_)) + " is all zero"; });
    else
      miss(kAllZero);
  }

  void weight_updates(const RecordColumns& r, size_t n, const uint8_t* grad_here, const double* grad_norm) {
    using S = format::Statistic;
    const double *mean = r.field[int(S::Mean)], *std = r.field[int(S::Std)], *min = r.field[int(S::Min)];
    const double *max = r.field[int(S::Max)], *norms = r.field[int(S::Norm)], *numel = r.field[format::kStatisticCount];
    for (size_t k = 0; k < n; ++k) {
      const int64_t step = r.step[k];
      const double norm = norms[k], gradient = grad_norm[k];
      if (grad_here[k]) {
        const double rate = rates_.at(step);
        if (std::isfinite(rate) && std::isfinite(gradient) && norm > 0 && std::isfinite(norm))
          update_ratio(step, rate * gradient / norm, gradient);
      }
      if (records_ + k > 0) {
        // The record before: earlier in this stretch, or the last of the previous one.
        const bool identical = k > 0 ? mean[k] == mean[k - 1] && std[k] == std[k - 1] && min[k] == min[k - 1] &&
                                           max[k] == max[k - 1] && norm == norms[k - 1] && numel[k] > 0
                                     : mean[k] == previous_[int(S::Mean)] && std[k] == previous_[int(S::Std)] &&
                                           min[k] == previous_[int(S::Min)] && max[k] == previous_[int(S::Max)] &&
                                           norm == previous_[int(S::Norm)] && numel[k] > 0;
        same_ = identical ? same_ + 1 : 0;
        if (same_ + 1 >= p_.unchanged_steps && grad_here[k] && gradient > 0 && std::isfinite(gradient))
          hit(kUnchanged, step, 0.6, [&] {
            return "weights unchanged for " + std::to_string(same_ + 1) + " recorded steps although gradients flow";
          });
        else
          miss(kUnchanged);
      }
    }
    for (S st : {S::Mean, S::Std, S::Min, S::Max, S::Norm}) previous_[int(st)] = r.get(st, n - 1);
  }
  void update_ratio(int64_t step, double ratio, double grad_norm) {
    if (ratio > p_.max_update_ratio)
      hit(kLarge, step, std::min(1.0, 0.5 + std::log10(ratio / p_.max_update_ratio) / 4),
          [&] { return fmt("update ratio lr*|grad W|/|W| = %.3g above %.3g", ratio, p_.max_update_ratio); });
    else
      miss(kLarge);
    if (ratio < p_.min_update_ratio && grad_norm > 0)
      hit(kSmall, step, 0.5,
          [&] { return fmt("update ratio lr*|grad W|/|W| = %.3g below %.3g", ratio, p_.min_update_ratio); });
    else
      miss(kSmall);
  }

  // Read and written at every record.
  uint32_t layer_;
  Quantity q_;
  uint8_t open_ = 0;  // the rules (Rule bits) with a run open
  bool maybe_dead_ = false;
  size_t records_ = 0, same_ = 0;
  RecentValues history_;
  RateLookup& rates_;
  const LayerRuleParams& p_;
  double previous_[int(format::Statistic::Norm) + 1] = {};  // the last weight record's mean, std, min, max, norm
  // Read when a rule hits, and at the end.
  int64_t first_step_ = 0;
  TensorSummary first_;
  std::vector<RuleHit> non_finite_hits_, gradient_hits_, all_zero_hits_, update_hits_;
  HitCollector non_finite_, vanishing_, exploding_, all_zero_, large_, small_, unchanged_;
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
  RateLookup rates(lr);
  for (const SummarySeries& s : table.series()) {
    if (s.layer_id >= graph.size()) continue;
    SeriesRules rules(s.layer_id, s.quantity, rates, params);
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
    const SeriesColumns columns(s);
    using S = format::Statistic;
    std::vector<uint8_t> flags(s.steps.size());
    record_flags(columns.view.field[int(S::NanCount)], columns.view.field[int(S::InfCount)],
                 columns.view.field[int(S::ZeroFraction)], columns.view.field[format::kStatisticCount], s.steps.size(),
                 params.dead_layer_fraction * params.dead_unit_zero_fraction, flags.data());
    rules.add(columns.view, s.steps.size(), flags.data(), grad_here.data(), grad_norm.data());
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
  RateLookup rates{lr};
  std::vector<std::unique_ptr<SeriesRules>> series;  // by layer x quantity; null until its first record
  std::vector<SeriesRules*> order;                   // in the order of their first records
  bool any_chunk = false;
  int64_t last_step_seen = 0;
  ChunkSeries chunk;                            // scratch: the series of a chunk
  std::vector<uint8_t> flags, grad_here, ones;  // scratch: record_flags(), and for the weight series of a chunk
  std::vector<double> grad_norm;

  Impl(const LayerGraph& g, LearningRate rate, const LayerRuleParams& p) : graph(g), lr(std::move(rate)), params(p) {
    series.resize(graph.size() * size_t(format::kQuantityCount));
  }
  SeriesRules& rules_of(uint32_t layer, Quantity q) {
    auto& slot = series[size_t(layer) * format::kQuantityCount + size_t(q)];
    if (!slot) {
      slot = std::make_unique<SeriesRules>(layer, q, rates, params);
      order.push_back(slot.get());
    }
    return *slot;
  }
};

LayerRuleStream::LayerRuleStream(const LayerGraph& graph, LearningRate lr, const LayerRuleParams& params)
    : impl_(new Impl(graph, std::move(lr), params)) {}

LayerRuleStream::~LayerRuleStream() = default;

bool LayerRuleStream::add(const format::SummaryColumns& c) {
  constexpr size_t kPrefetchAhead = 4;
  Impl& m = *impl_;
  // One pass equals the table only if every step's records are in this chunk (step ranges of chunks increase and
  // do not overlap) and each series comes in step order (the writer sorts a chunk by layer, quantity, step).
  if (m.any_chunk && c.first_step <= m.last_step_seen) return false;
  find_series(c, &m.chunk);
  if (!m.chunk.in_order) return false;
  m.any_chunk = true;
  m.last_step_seen = c.last_step;
  using S = format::Statistic;
  m.flags.resize(c.size);
  const bool any_flag =
      record_flags(c.field[int(S::NanCount)], c.field[int(S::InfCount)], c.field[int(S::ZeroFraction)],
                   c.field[format::kStatisticCount], c.size,
                   m.params.dead_layer_fraction * m.params.dead_unit_zero_fraction, m.flags.data()) != 0;
  const double* norms = c.field[int(S::Norm)];
  const std::vector<uint32_t>& begin = m.chunk.begin;
  for (size_t run = 0; run + 1 < begin.size(); ++run) {
    const size_t i = begin[run], end = begin[run + 1];  // the series' records in this chunk: [i, end)
    const uint32_t layer = c.layer_id[i];
    const Quantity q = c.quantity[i];
    if (layer >= m.graph.size()) continue;
    if (run + kPrefetchAhead + 1 < begin.size()) {
      // The state of the series a few stretches on is far from this one's in memory, and out of cache since the
      // last chunk: fetched while this one is worked on.
      const size_t ahead = begin[run + kPrefetchAhead];
      if (c.layer_id[ahead] < m.graph.size())
        if (const auto& next = m.series[size_t(c.layer_id[ahead]) * format::kQuantityCount + size_t(c.quantity[ahead])])
          next->prefetch();
    }
    SeriesRules& rules = m.rules_of(layer, q);
    const uint8_t* grad_here = nullptr;
    const double* grad_norm = nullptr;
    if (q == Quantity::Weight) {
      // A weight's gradient at the same step: the weight gradient records follow the weight's in a sorted chunk,
      // most often at the same, distinct steps.
      const bool grad_next = end < c.size && c.layer_id[end] == layer && c.quantity[end] == Quantity::WeightGrad;
      const size_t g0 = end, grad_end = grad_next ? begin[run + 2] : end;
      if (m.chunk.rising && grad_end - g0 == end - i && std::equal(c.step + i, c.step + end, c.step + g0)) {
        if (m.ones.size() < end - i) m.ones.resize(end - i, 1);
        grad_here = m.ones.data();
        grad_norm = norms + g0;
      } else {
        m.grad_here.assign(end - i, 0);
        m.grad_norm.assign(end - i, NAN);
        for (size_t k = i, g = g0; k < end; ++k) {  // g: one past the last gradient record at or before step k
          while (g < grad_end && c.step[g] <= c.step[k]) ++g;
          if (g > g0 && c.step[g - 1] == c.step[k]) m.grad_here[k - i] = 1, m.grad_norm[k - i] = norms[g - 1];
        }
        grad_here = m.grad_here.data();
        grad_norm = m.grad_norm.data();
      }
    }
    rules.add(columns_at(c, i), end - i, any_flag ? m.flags.data() + i : nullptr, grad_here, grad_norm);
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
