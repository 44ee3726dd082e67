#include <trainscope/analysis/robust_stats.h>
#include <trainscope/analysis/root_cause.h>

#include "chunk_scan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

namespace trainscope::analysis {
namespace {

using format::Quantity;
using format::TensorSummary;

bool is_gradient(Quantity q) {
  return q == Quantity::ActivationGrad || q == Quantity::WeightGrad || q == Quantity::BiasGrad;
}

double log_magnitude(double v) {
  return std::log10(std::abs(v) + 1e-30);
}

struct Candidate {
  Suspect suspect;
  double confidence = 0;
};

// What a departure scan reads of one record: its largest magnitude and RMS, and their log_magnitude() computed at
// most once however many windows ask; the counts only for the evidence of a NaN/Inf.
struct RecordLogs {
  double max_abs = 0, rms = 0;
  double nan_count = 0, inf_count = 0, numel = 0;
  bool done = false;
  double log_max_abs = 0, log_rms = 0;

  static RecordLogs of(const TensorSummary& v) {
    return {analysis::max_abs(v), analysis::rms(v), v.nan_count, v.inf_count, v.numel};
  }
  static RecordLogs of(const format::SummaryColumns& c, size_t i) {  // the same from a chunk's columns
    using S = format::Statistic;
    const double norm = c.field[int(S::Norm)][i], numel = c.field[format::kStatisticCount][i];
    return {std::max(std::abs(c.field[int(S::Min)][i]), std::abs(c.field[int(S::Max)][i])),
            numel > 0 ? std::sqrt(norm * norm / numel) : 0.0, c.field[int(S::NanCount)][i],
            c.field[int(S::InfCount)][i], numel};
  }
  bool finite() const { return nan_count == 0 && inf_count == 0; }
  void compute() {
    if (done) return;
    log_max_abs = log_magnitude(max_abs);
    log_rms = log_magnitude(rms);
    done = true;
  }
};

// Has one series departed from its normal range in one anomaly's window? Fed the window's records in step order.
// The series has departed at its first NaN/Inf; else, after a baseline of its first `baseline_points` records, from
// the first step of the stretch reaching the window's end where the robust z-score stays at or above departure_z / 2,
// that stretch's first step with one at or above departure_z.
class DepartureScan {
 public:
  explicit DepartureScan(const RootCauseParams& p) : p_(p) {
    magnitude_.reserve(p.baseline_points);
    spread_.reserve(p.baseline_points);
  }

  void add(int64_t step, RecordLogs& logs) {
    ++records_;
    last_step_ = step;
    if (non_finite_) return;
    if (!logs.finite()) {
      non_finite_ = true;
      first_non_finite_ = {step, logs};
      return;
    }
    if (past_baseline_ == 0 && magnitude_.size() < p_.baseline_points) {
      logs.compute();
      magnitude_.push_back(logs.log_max_abs);
      spread_.push_back(logs.log_rms);
      return;
    }
    if (past_baseline_++ == 0) {
      magnitude_scale_ = robust_scale(magnitude_);
      spread_scale_ = robust_scale(spread_);
      magnitude_range_ = normal_range(magnitude_scale_);
      spread_range_ = normal_range(spread_scale_);
    }
    if (surely_normal(logs)) {  // |z| < departure_z / 2 without a logarithm: back within range
      departed_ = false;
      peak_ = 0;
      return;
    }
    logs.compute();
    const double z = z_of(logs.log_max_abs, logs.log_rms);
    if (std::abs(z) < p_.departure_z / 2) {  // back within range: a departure has to start after this
      departed_ = false;
      peak_ = 0;
      return;
    }
    peak_ = std::max(peak_, std::abs(z));
    if (std::abs(z) >= p_.departure_z && !departed_) {
      departed_ = true;
      start_step_ = step;
      start_z_ = z;
    }
  }

  std::optional<Candidate> result(uint32_t layer, Quantity q) const {
    if (records_ == 0) return std::nullopt;
    if (non_finite_) {
      const RecordLogs& v = first_non_finite_.second;
      char buf[160];
      std::snprintf(buf, sizeof buf, "%.0f NaN and %.0f Inf values of %.0f", v.nan_count, v.inf_count, v.numel);
      return Candidate{{layer, q, first_non_finite_.first, "non_finite", 0, buf}, 1.0};
    }
    if (magnitude_.size() < p_.min_baseline_points || past_baseline_ == 0 || !departed_) return std::nullopt;
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "%s %s from step %lld: %.1f robust standard deviations (log scale) %s its range "
                  "before, up to %.1f by step %lld",
                  std::string(format::quantity_name(q)).c_str(), start_z_ > 0 ? "grows" : "shrinks",
                  static_cast<long long>(start_step_), std::abs(start_z_), start_z_ > 0 ? "above" : "below", peak_,
                  static_cast<long long>(last_step_));
    return Candidate{{layer, q, start_step_, "departure", 0, buf}, std::min(1.0, 0.5 + peak_ / (8 * p_.departure_z))};
  }

 private:
  // The values (not their logarithms) whose robust z-score is surely below departure_z / 2: 10^(median -+ the
  // threshold), narrowed by a relative 1e-9, far more than log10's and pow's rounding, so that a value inside gets
  // |z| < departure_z / 2 from log10 as well. Empty when the threshold is not positive.
  std::pair<double, double> normal_range(const RobustScale& scale) const {
    const double t = p_.departure_z / 2 * std::max(scale.sigma, 0.05);
    if (!(t > 0) || !std::isfinite(scale.median)) return {INFINITY, -INFINITY};
    return {std::pow(10.0, scale.median - t) * (1 + 1e-9), std::pow(10.0, scale.median + t) * (1 - 1e-9)};
  }
  bool surely_normal(const RecordLogs& v) const {
    const double m = std::abs(v.max_abs) + 1e-30, r = std::abs(v.rms) + 1e-30;  // log_magnitude's arguments
    return m > magnitude_range_.first && m < magnitude_range_.second && r > spread_range_.first &&
           r < spread_range_.second;
  }

  // log10 values: a floor of 0.05 decades keeps a flat baseline from making noise look like a departure.
  double z_of(double log_max_abs, double log_rms) const {
    const double zm = (log_max_abs - magnitude_scale_.median) / std::max(magnitude_scale_.sigma, 0.05);
    const double zs = (log_rms - spread_scale_.median) / std::max(spread_scale_.sigma, 0.05);
    return std::abs(zm) > std::abs(zs) ? zm : zs;
  }

  const RootCauseParams& p_;
  size_t records_ = 0, past_baseline_ = 0;
  int64_t last_step_ = 0;
  bool non_finite_ = false;
  std::pair<int64_t, RecordLogs> first_non_finite_;
  std::vector<double> magnitude_, spread_;
  RobustScale magnitude_scale_, spread_scale_;
  std::pair<double, double> magnitude_range_, spread_range_;
  bool departed_ = false;
  int64_t start_step_ = 0;
  double start_z_ = 0, peak_ = 0;
};

std::pair<int64_t, int64_t> window_of(int64_t anomaly_step, const RootCauseParams& p) {
  // Layer data is captured every few steps while scalars come every step: look a little past the anomaly.
  const int64_t first =
      p.lookback_steps > 0 && anomaly_step < INT64_MIN + p.lookback_steps ? INT64_MIN : anomaly_step - p.lookback_steps;
  const int64_t last = p.lookahead_steps > 0 && anomaly_step > INT64_MAX - p.lookahead_steps
                           ? INT64_MAX
                           : anomaly_step + p.lookahead_steps;
  return {first, last};
}

std::optional<Candidate> departure(const SummarySeries& s, int64_t anomaly_step, const RootCauseParams& p) {
  const auto [first, last] = window_of(anomaly_step, p);
  const auto begin = size_t(std::lower_bound(s.steps.begin(), s.steps.end(), first) - s.steps.begin());
  const auto end = size_t(std::upper_bound(s.steps.begin(), s.steps.end(), last) - s.steps.begin());
  DepartureScan scan(p);
  for (size_t i = begin; i < end; ++i) {
    RecordLogs logs = RecordLogs::of(s.values[i]);
    scan.add(s.steps[i], logs);
  }
  return scan.result(s.layer_id, s.quantity);
}

// The ranking itself, from the departures (in the order of the run's series) and the rule hits.
std::vector<Suspect> rank(const LayerGraph& graph, std::vector<Candidate> candidates,
                          const std::vector<RuleHit>& rule_hits, int64_t anomaly_step, const RootCauseParams& params) {
  for (const RuleHit& hit : rule_hits) {
    if (hit.rule == LayerRule::NonFinite || hit.layer_id >= graph.size()) continue;  // covered by departures
    // Only conditions present at the anomaly: a rule that stopped firing long before did not cause it.
    if (hit.first_step > anomaly_step + params.lookahead_steps || hit.last_step < anomaly_step - params.lookahead_steps)
      continue;
    candidates.push_back(
        {{hit.layer_id, hit.quantity, hit.first_step, layer_rule_name(hit.rule), 0, hit.evidence}, 0.8 * hit.score});
  }
  // Containers repeat what their children show: blame the leaf when a descendant departs as early.
  std::vector<Candidate> kept;
  for (const Candidate& c : candidates) {
    const bool covered_by_child = std::any_of(candidates.begin(), candidates.end(), [&](const Candidate& d) {
      return graph.is_ancestor(c.suspect.layer_id, d.suspect.layer_id) && d.suspect.first_step <= c.suspect.first_step;
    });
    if (!covered_by_child) kept.push_back(c);
  }
  candidates = std::move(kept);
  // Tiers: NaN/Inf first (the failure itself), then data leaving its normal range, then rules that began within
  // the look-back window, then older, chronic conditions (a dead layer since step 0 explains a stall, but not a NaN
  // that appears in another layer at step 300).
  const auto tier = [&](const Candidate& c) {
    if (c.suspect.rule == "non_finite") return 0;
    if (c.suspect.rule == "departure") return 1;
    return c.suspect.first_step >= anomaly_step - params.recent_steps ? 2 : 3;
  };
  const auto key = [&](const Candidate& c) {
    const bool gradient = is_gradient(c.suspect.quantity);
    const int order = graph.forward_rank(c.suspect.layer_id);
    return std::make_tuple(tier(c), c.suspect.first_step, gradient ? 1 : 0, gradient ? -order : order,
                           -int(graph.depth(c.suspect.layer_id)), -c.confidence);
  };
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](const Candidate& a, const Candidate& b) { return key(a) < key(b); });

  std::vector<Suspect> out;
  std::map<uint32_t, bool> seen;
  for (Candidate& c : candidates) {
    if (seen[c.suspect.layer_id]) continue;  // one entry per layer: its earliest evidence
    seen[c.suspect.layer_id] = true;
    c.suspect.score = c.confidence / (1.0 + 0.5 * double(out.size()));
    out.push_back(std::move(c.suspect));
    if (out.size() >= params.max_suspects) break;
  }
  return out;
}

}  // namespace

std::vector<Suspect> rank_suspects(const LayerGraph& graph, const SummaryTable& table,
                                   const std::vector<RuleHit>& rule_hits, int64_t anomaly_step,
                                   const RootCauseParams& params) {
  std::vector<Candidate> candidates;
  for (const SummarySeries& s : table.series()) {
    if (s.layer_id >= graph.size()) continue;
    if (auto c = departure(s, anomaly_step, params)) candidates.push_back(std::move(*c));
  }
  return rank(graph, std::move(candidates), rule_hits, anomaly_step, params);
}

struct DepartureStream::Impl {
  const LayerGraph& graph;
  RootCauseParams params;
  bool fixed_order = false;
  std::vector<int64_t> anomaly_steps;
  std::vector<std::pair<int64_t, int64_t>> windows;
  std::vector<uint8_t> followed;  // by anomaly: its window is followed from its start
  std::vector<int32_t> position;  // by layer x quantity: rank of the series' first record in the run, or -1
  int32_t next_position = 0;
  bool any_chunk = false;
  int64_t last_step_seen = INT64_MIN;                 // the latest step of the chunks added so far
  std::vector<std::unique_ptr<DepartureScan>> scans;  // by (layer x quantity) x anomaly, made at the first record
  std::vector<size_t> active;                         // the anomalies whose windows overlap the current chunk
  ChunkSeries chunk;                                  // scratch: the series of a chunk
  std::vector<RecordLogs> logs;                       // scratch: one series' records in a chunk
};

DepartureStream::DepartureStream(const LayerGraph& graph, std::vector<int64_t> anomaly_steps,
                                 const RootCauseParams& params, const DepartureStream* order_of)
    : impl_(new Impl{graph, params, order_of != nullptr}) {
  const size_t slots = graph.size() * size_t(format::kQuantityCount);
  impl_->position = order_of ? order_of->impl_->position : std::vector<int32_t>(slots, -1);
  follow(std::move(anomaly_steps));
}

void DepartureStream::follow(std::vector<int64_t> anomaly_steps) {
  Impl& m = *impl_;
  m.anomaly_steps = std::move(anomaly_steps);
  m.windows.clear();
  m.followed.clear();
  for (int64_t a : m.anomaly_steps) {
    m.windows.push_back(window_of(a, m.params));
    // The chunks added so far hold no step after last_step_seen: a window that starts later misses none of them.
    m.followed.push_back(!m.any_chunk || m.windows.back().first > m.last_step_seen);
  }
  m.scans.clear();
  m.scans.resize(m.position.size() * m.anomaly_steps.size());
}

bool DepartureStream::complete(size_t anomaly) const {
  return impl_->followed[anomaly] != 0;
}

DepartureStream::~DepartureStream() = default;

void DepartureStream::add(const format::SummaryColumns& c) {
  Impl& m = *impl_;
  m.active.clear();
  for (size_t k = 0; k < m.windows.size(); ++k)
    if (m.followed[k] && m.windows[k].second >= c.first_step && m.windows[k].first <= c.last_step)
      m.active.push_back(k);
  m.any_chunk = true;
  m.last_step_seen = std::max(m.last_step_seen, c.last_step);
  if (m.active.empty() && m.fixed_order) return;
  const size_t anomalies = m.anomaly_steps.size();
  find_series(c, &m.chunk);
  for (size_t run = 0; run + 1 < m.chunk.begin.size(); ++run) {
    const size_t i = m.chunk.begin[run], end = m.chunk.begin[run + 1];  // the series' records in this chunk
    const uint32_t layer = c.layer_id[i];
    const Quantity q = c.quantity[i];
    if (layer >= m.graph.size()) continue;
    const size_t slot = size_t(layer) * format::kQuantityCount + size_t(q);
    if (m.position[slot] < 0) m.position[slot] = m.next_position++;
    if (m.active.empty()) continue;
    // The records in some window, read once however many windows take them; each window's scan fed in order.
    m.logs.clear();
    for (size_t k = i; k < end; ++k) {
      const bool wanted = std::any_of(m.active.begin(), m.active.end(), [&](size_t w) {
        return c.step[k] >= m.windows[w].first && c.step[k] <= m.windows[w].second;
      });
      m.logs.push_back(wanted ? RecordLogs::of(c, k) : RecordLogs{});
    }
    for (size_t w : m.active) {
      auto& scan = m.scans[slot * anomalies + w];
      for (size_t k = i; k < end; ++k) {
        if (c.step[k] < m.windows[w].first || c.step[k] > m.windows[w].second) continue;
        if (!scan) scan = std::make_unique<DepartureScan>(m.params);
        scan->add(c.step[k], m.logs[k - i]);
      }
    }
  }
}

std::vector<Suspect> DepartureStream::suspects(size_t anomaly, const std::vector<RuleHit>& rule_hits) const {
  const Impl& m = *impl_;
  const size_t anomalies = m.anomaly_steps.size();
  std::vector<std::pair<int32_t, size_t>> series;  // (position, slot) of the series seen in this window
  for (size_t slot = 0; slot < m.position.size(); ++slot)
    if (m.scans[slot * anomalies + anomaly]) series.emplace_back(m.position[slot], slot);
  std::sort(series.begin(), series.end());
  std::vector<Candidate> candidates;
  for (const auto& [position, slot] : series) {
    const auto layer = uint32_t(slot / format::kQuantityCount);
    const auto q = Quantity(slot % format::kQuantityCount);
    if (auto c = m.scans[slot * anomalies + anomaly]->result(layer, q)) candidates.push_back(std::move(*c));
  }
  return rank(m.graph, std::move(candidates), rule_hits, m.anomaly_steps[anomaly], m.params);
}

}  // namespace trainscope::analysis
