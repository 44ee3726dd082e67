// analyze_run's one pass over the summary chunks (LayerRuleStream, DepartureStream) and the sliding-window scalar
// detectors give exactly what the straightforward versions give: rules on a SummaryTable of the whole run,
// rank_suspects on that table, and medians taken afresh at every step. The references below are those versions.
#include <gtest/gtest.h>
#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/robust_stats.h>
#include <trainscope/format/run_writer.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <tuple>

#include "synthetic_runs.h"
#include "test_support.h"

namespace trainscope::analysis {
namespace {

uint64_t bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// ---- Scalar anomalies: the detectors with a fresh median of every window.

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

std::vector<double> finite_of(const std::vector<double>& v, size_t from, size_t to) {
  std::vector<double> w;
  for (size_t i = from; i < to; ++i)
    if (std::isfinite(v[i])) w.push_back(v[i]);
  return w;
}

std::vector<ScalarAnomaly> reference_scalar_anomalies(const std::string& name, const std::vector<int64_t>& steps,
                                                      const std::vector<double>& values, const ScalarAnomalyParams& p) {
  std::vector<ScalarAnomaly> out;
  const size_t n = std::min(steps.size(), values.size());
  const bool loss = is_loss_name(name);
  for (size_t i = 0; i < n; ++i) {
    if (std::isfinite(values[i]) || (i > 0 && !std::isfinite(values[i - 1]))) continue;
    out.push_back({steps[i], AnomalyKind::NonFinite, name, values[i], 1000.0,
                   name + " is " + (std::isnan(values[i]) ? "NaN" : "Inf") + " from step " + std::to_string(steps[i])});
  }
  std::vector<double> history;
  std::optional<size_t> last_spike;
  size_t spike_index = 0;
  for (size_t i = 0; i < n; ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) continue;
    if (history.size() >= p.min_history) {
      const size_t from = history.size() > p.window ? history.size() - p.window : 0;
      const RobustScale scale = robust_scale(std::vector<double>(history.begin() + ptrdiff_t(from), history.end()));
      const double z = robust_z(v, scale);
      const bool spike = z > p.spike_z || (!loss && -z > p.spike_z);
      if (spike && last_spike && i - *last_spike <= p.window) {
        out[spike_index].score = std::max(out[spike_index].score, std::min(std::abs(z), p.max_spike_score));
        last_spike = i;
      } else if (spike) {
        last_spike = i;
        spike_index = out.size();
        out.push_back({steps[i], AnomalyKind::Spike, name, v, std::min(std::abs(z), p.max_spike_score),
                       name +
                           fmt(" = %.6g at this step, %.1f robust standard deviations from the median %.6g", v,
                               std::abs(z), scale.median) +
                           " of the previous " + std::to_string(std::min(history.size(), p.window)) + " steps"});
      }
    }
    history.push_back(v);
  }
  const size_t w = p.shift_window;
  if (n >= 2 * w && w > 0) {
    std::vector<double> z(n, 0.0), contrast(n, 0.0);
    const auto mean = [](const std::vector<double>& v) {
      double sum = 0;
      for (double x : v) sum += x;
      return v.empty() ? 0.0 : sum / double(v.size());
    };
    for (size_t i = std::max(w, p.min_history); i + w <= n; ++i) {
      const std::vector<double> before = finite_of(values, i - w, i), after = finite_of(values, i, i + w);
      if (before.size() < w / 2 || after.size() < w / 2) continue;
      z[i] = robust_z(median(after), robust_scale(before));
      if (loss && z[i] < 0) z[i] = 0;
      contrast[i] = std::abs(mean(after) - mean(before));
    }
    for (size_t i = w; i + w <= n; ++i) {
      if (std::abs(z[i]) <= p.shift_z) continue;
      bool strongest = true;
      for (size_t j = i > w ? i - w : 0; j < std::min(n, i + w) && strongest; ++j)
        if (std::abs(z[j]) > p.shift_z) strongest = contrast[j] < contrast[i] || (contrast[j] == contrast[i] && j >= i);
      if (!strongest) continue;
      out.push_back({steps[i], AnomalyKind::LevelShift, name, values[i], std::abs(z[i]),
                     name + " shifts " + (z[i] > 0 ? "up" : "down") +
                         fmt(": the median of the next %.0f steps is %.1f robust standard deviations away from the "
                             "previous ones",
                             double(w), std::abs(z[i]))});
    }
  }
  if (loss) {
    const size_t rw = std::max<size_t>(p.divergence_window, 1);
    double best = INFINITY;
    for (size_t i = rw; i <= n; ++i) {
      const double m = median(finite_of(values, i - rw, i));
      if (!std::isfinite(m)) continue;
      best = std::min(best, std::abs(m));
      if (best > 0 && std::abs(m) > p.divergence_factor * best) {
        const double factor = std::abs(m) / best;
        out.push_back({steps[i - 1], AnomalyKind::Divergence, name, values[i - 1], 100.0 + std::log10(factor),
                       name + fmt(" diverges: its running median %.6g is %.1fx its lowest, %.6g", m, factor, best)});
        break;
      }
    }
    const size_t sw = p.stall_window;
    for (size_t i = 2 * sw; sw > 0 && i <= n; i += std::max<size_t>(1, sw / 4)) {
      const double before = median(finite_of(values, i - 2 * sw, i - sw));
      const double after = median(finite_of(values, i - sw, i));
      if (!std::isfinite(before) || !std::isfinite(after)) continue;
      if (after > before - p.stall_min_decrease * std::abs(before) &&
          after < before + p.stall_max_increase * std::abs(before)) {
        out.push_back({steps[i - 2 * sw], AnomalyKind::Stall, name, values[i - 2 * sw], 1.0,
                       name + fmt(" stops decreasing: median %.6g over %.0f steps after a median of %.6g", after,
                                  double(sw), before)});
        break;
      }
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const ScalarAnomaly& a, const ScalarAnomaly& b) { return a.step < b.step; });
  return out;
}

void expect_same(const std::vector<ScalarAnomaly>& a, const std::vector<ScalarAnomaly>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].step, b[i].step) << what << " #" << i;
    EXPECT_EQ(a[i].kind, b[i].kind) << what << " #" << i;
    EXPECT_EQ(bits(a[i].value), bits(b[i].value)) << what << " #" << i;
    EXPECT_EQ(bits(a[i].score), bits(b[i].score)) << what << " #" << i;
    EXPECT_EQ(a[i].reason, b[i].reason) << what << " #" << i;
  }
}

// Series that exercise every corner of the sliding windows: ties (a constant stretch, values on a coarse grid),
// NaN and Inf holes, magnitudes whose deviations overflow, signed zeros, spikes, shifts, a divergence.
std::vector<double> awkward_series(int kind, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i);
    switch (kind) {
      case 0: v[i] = 2.0 * std::exp(-t / 300) + 0.01 * noise(rng); break;                 // a loss
      case 1: v[i] = std::round(4 * noise(rng)) / 4; break;                               // many equal values
      case 2: v[i] = i < n / 2 ? 1.0 : 1.0 + (i % 7 == 0 ? 50.0 : 0.0); break;            // flat, then spikes
      case 3: v[i] = (i % 11 == 0 ? 1e300 : -1e300) * (1 + 0.1 * noise(rng)); break;      // deviations overflow
      case 4: v[i] = i % 5 == 0 ? -0.0 : (i % 5 == 1 ? 0.0 : 0.001 * noise(rng)); break;  // signed zeros
      case 5: v[i] = 1.0 + (i > n / 3 ? 3.0 : 0.0) + 0.05 * noise(rng); break;            // a level shift
      default: v[i] = std::exp(t / 60) * (1 + 0.01 * noise(rng)); break;                  // divergence
    }
    if (i % 97 == 13) v[i] = std::numeric_limits<double>::quiet_NaN();
    if (i % 131 == 7) v[i] = std::numeric_limits<double>::infinity();
  }
  return v;
}

TEST(StreamingAnalysis, ScalarDetectorsEqualFreshMediansOnAwkwardSeries) {
  std::vector<ScalarAnomalyParams> params(3);
  params[1].window = 7, params[1].min_history = 3, params[1].shift_window = 6, params[1].spike_z = 3;
  params[1].shift_z = 2, params[1].stall_window = 20, params[1].divergence_window = 4;
  params[2].window = 64, params[2].min_history = 0, params[2].shift_window = 1, params[2].spike_z = 0.5;
  size_t compared = 0;
  for (int kind = 0; kind <= 6; ++kind)
    for (const char* name : {"loss", "grad_norm"})
      for (size_t pi = 0; pi < params.size(); ++pi) {
        const size_t n = 600;
        const std::vector<double> v = awkward_series(kind, n, uint32_t(kind * 10 + pi));
        std::vector<int64_t> steps(n);
        for (size_t i = 0; i < n; ++i) steps[i] = int64_t(3 * i);
        const auto fast = find_scalar_anomalies(name, steps, v, params[pi]);
        const auto reference = reference_scalar_anomalies(name, steps, v, params[pi]);
        expect_same(fast, reference,
                    std::string(name) + " kind " + std::to_string(kind) + " params " + std::to_string(pi));
        compared += reference.size();
      }
  EXPECT_GT(compared, 50u);  // the series do produce anomalies to compare
}

// ---- Layer rules and suspects: the table of the whole run as the reference.

void expect_same(const std::vector<RuleHit>& a, const std::vector<RuleHit>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].rule, b[i].rule) << what << " #" << i;
    EXPECT_EQ(a[i].layer_id, b[i].layer_id) << what << " #" << i;
    EXPECT_EQ(a[i].quantity, b[i].quantity) << what << " #" << i;
    EXPECT_EQ(a[i].first_step, b[i].first_step) << what << " #" << i;
    EXPECT_EQ(a[i].last_step, b[i].last_step) << what << " #" << i;
    EXPECT_EQ(a[i].steps_hit, b[i].steps_hit) << what << " #" << i;
    EXPECT_EQ(bits(a[i].score), bits(b[i].score)) << what << " #" << i;
    EXPECT_EQ(a[i].evidence, b[i].evidence) << what << " #" << i;
  }
}

void expect_same(const std::vector<Suspect>& a, const std::vector<Suspect>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].layer_id, b[i].layer_id) << what << " #" << i;
    EXPECT_EQ(a[i].quantity, b[i].quantity) << what << " #" << i;
    EXPECT_EQ(a[i].first_step, b[i].first_step) << what << " #" << i;
    EXPECT_EQ(a[i].rule, b[i].rule) << what << " #" << i;
    EXPECT_EQ(bits(a[i].score), bits(b[i].score)) << what << " #" << i;
    EXPECT_EQ(a[i].evidence, b[i].evidence) << what << " #" << i;
  }
}

// A series' departure as the walk back from the window's end finds it (the reference for the forward scan).
std::optional<Suspect> reference_departure(const SummarySeries& s, int64_t anomaly_step, const RootCauseParams& p) {
  const auto log_magnitude = [](double v) { return std::log10(std::abs(v) + 1e-30); };
  const auto begin =
      size_t(std::lower_bound(s.steps.begin(), s.steps.end(), anomaly_step - p.lookback_steps) - s.steps.begin());
  const auto end =
      size_t(std::upper_bound(s.steps.begin(), s.steps.end(), anomaly_step + p.lookahead_steps) - s.steps.begin());
  if (begin >= end) return std::nullopt;
  for (size_t i = begin; i < end; ++i) {
    const auto& v = s.values[i];
    if (v.finite()) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%.0f NaN and %.0f Inf values of %.0f", v.nan_count, v.inf_count, v.numel);
    return Suspect{s.layer_id, s.quantity, s.steps[i], "non_finite", 1.0, buf};
  }
  std::vector<double> magnitude, spread;
  for (size_t i = begin; i < end && magnitude.size() < p.baseline_points; ++i) {
    magnitude.push_back(log_magnitude(max_abs(s.values[i])));
    spread.push_back(log_magnitude(rms(s.values[i])));
  }
  if (magnitude.size() < p.min_baseline_points || begin + magnitude.size() >= end) return std::nullopt;
  const RobustScale ms = robust_scale(magnitude), ss = robust_scale(spread);
  const auto z_at = [&](size_t i) {
    const double zm = (log_magnitude(max_abs(s.values[i])) - ms.median) / std::max(ms.sigma, 0.05);
    const double zs = (log_magnitude(rms(s.values[i])) - ss.median) / std::max(ss.sigma, 0.05);
    return std::abs(zm) > std::abs(zs) ? zm : zs;
  };
  std::optional<size_t> start;
  double peak = 0;
  for (size_t i = end; i-- > begin + magnitude.size();) {
    const double z = z_at(i);
    if (std::abs(z) < p.departure_z / 2) break;
    peak = std::max(peak, std::abs(z));
    if (std::abs(z) >= p.departure_z) start = i;
  }
  if (!start) return std::nullopt;
  const double z = z_at(*start);
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "%s %s from step %lld: %.1f robust standard deviations (log scale) %s its range "
                "before, up to %.1f by step %lld",
                std::string(format::quantity_name(s.quantity)).c_str(), z > 0 ? "grows" : "shrinks",
                static_cast<long long>(s.steps[*start]), std::abs(z), z > 0 ? "above" : "below", peak,
                static_cast<long long>(s.steps[end - 1]));
  return Suspect{s.layer_id, s.quantity, s.steps[*start], "departure", std::min(1.0, 0.5 + peak / (8 * p.departure_z)),
                 buf};
}

TEST(StreamingAnalysis, ForwardDepartureScanEqualsTheWalkBack) {
  // One series per table: rank_suspects then returns its departure alone, with the confidence as its score.
  format::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  m.layers.push_back({1, "fc", 0u, "Linear", 4, {}, {}, true});
  const LayerGraph graph(m);
  std::mt19937 rng(11);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::vector<RootCauseParams> sets(3);
  sets[1].departure_z = 2, sets[1].baseline_points = 5, sets[1].lookback_steps = 60;
  sets[2].baseline_points = 3, sets[2].min_baseline_points = 3, sets[2].lookahead_steps = 0;
  size_t departures = 0;
  for (int trial = 0; trial < 60; ++trial) {
    SummarySeries s;
    s.layer_id = 1;
    s.quantity = trial % 2 ? format::Quantity::WeightGrad : format::Quantity::Activation;
    double level = 1;
    for (int64_t step = 0; step < 300; step += 1 + trial % 3) {
      // Excursions that come and go, some lasting to the end; now and then a NaN.
      const bool out = (step / 20) % 3 == 2 || (trial % 4 == 0 && step > 250);
      level = out ? 30.0 * (1 + 0.2 * noise(rng)) : 1.0 + 0.02 * noise(rng);
      format::TensorSummary v;
      v.std = level, v.max = 3 * level, v.min = -2.5 * level, v.numel = 100, v.norm = 10 * level;
      if (trial % 7 == 3 && step == 200) v.nan_count = 1;
      s.steps.push_back(step);
      s.values.push_back(v);
    }
    const SummaryTable table = SummaryTable::from_series({s});
    for (const RootCauseParams& p : sets)
      for (int64_t anomaly = 0; anomaly < 320; anomaly += 7) {
        const auto got = rank_suspects(graph, table, {}, anomaly, p);
        const auto want = reference_departure(s, anomaly, p);
        const std::string at = "trial " + std::to_string(trial) + " step " + std::to_string(anomaly);
        ASSERT_EQ(got.size(), want ? 1u : 0u) << at;
        if (want) expect_same(got, {*want}, at);
        departures += want && want->rule == "departure";
      }
  }
  EXPECT_GT(departures, 100u);
}

// The exploding-gradient rule with the median of the recent values taken at every step, as it was.
std::vector<RuleHit> reference_exploding(const SummarySeries& s, const LayerRuleParams& p) {
  std::vector<RuleHit> out;
  std::optional<RuleHit> open;
  const auto close = [&] {
    if (open) out.push_back(*open);
    open.reset();
  };
  std::vector<double> history;
  for (size_t i = 0; i < s.steps.size(); ++i) {
    const format::TensorSummary& v = s.values[i];
    if (!v.finite() || v.numel <= 0) {
      close();
      continue;
    }
    const double r = rms(v);
    if (history.size() >= p.exploding_min_history) {
      const size_t from = history.size() > p.exploding_history ? history.size() - p.exploding_history : 0;
      const double m = median(std::vector<double>(history.begin() + ptrdiff_t(from), history.end()));
      if (m > 0 && r > p.exploding_gradient_factor * m) {
        const double score = std::min(1.0, 0.5 + std::log10(r / m) / 10);
        if (!open)
          open = RuleHit{LayerRule::ExplodingGradient,
                         s.layer_id,
                         s.quantity,
                         s.steps[i],
                         s.steps[i],
                         0,
                         0,
                         std::string(format::quantity_name(s.quantity)) +
                             fmt(" RMS %.3g is %.0fx its median %.3g over the recorded steps before", r, r / m, m)};
        open->last_step = s.steps[i];
        ++open->steps_hit;
        open->score = std::max(open->score, score);
      } else {
        close();
      }
    }
    history.push_back(r);
  }
  close();
  return out;
}

TEST(StreamingAnalysis, ExplodingGradientsNeedTheMedianOnlyAboveTheMinimum) {
  format::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  m.layers.push_back({1, "fc", 0u, "Linear", 4, {}, {}, true});
  const LayerGraph graph(m);
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  size_t hits = 0;
  for (int trial = 0; trial < 40; ++trial) {
    LayerRuleParams p;
    p.exploding_gradient_factor = trial % 4 == 0 ? 1.0 : 1.5 + 3 * unit(rng);
    p.exploding_history = size_t(1 + trial % 9);
    p.exploding_min_history = size_t(trial % 3);
    p.vanishing_gradient_rms = 0;
    SummarySeries s;
    s.layer_id = 1;
    s.quantity = format::Quantity::WeightGrad;
    for (int64_t step = 0; step < 400; ++step) {
      // A wandering level with bursts, steady climbs and drops (the minimum leaves the window), zeros and
      // overflowing norms (non-finite RMS values the median skips).
      double level = std::exp(0.3 * noise(rng)) * (1 + 0.01 * double(step % 50));
      if (unit(rng) < 0.05) level *= 2 + 20 * unit(rng);
      if (step % 61 < 8) level *= double(step % 61 + 1);
      if (unit(rng) < 0.03) level = 0;
      format::TensorSummary v;
      v.numel = 100, v.norm = 10 * level, v.std = level;
      if (unit(rng) < 0.02) v.norm = 1e300;  // norm * norm overflows: an infinite RMS
      if (unit(rng) < 0.01) v.nan_count = 1;
      s.steps.push_back(step);
      s.values.push_back(v);
    }
    std::vector<RuleHit> got;
    for (const RuleHit& h : evaluate_layer_rules(graph, SummaryTable::from_series({s}), nullptr, {}, p))
      if (h.rule == LayerRule::ExplodingGradient) got.push_back(h);
    const std::vector<RuleHit> want = reference_exploding(s, p);
    expect_same(got, want, "trial " + std::to_string(trial));
    hits += want.size();
  }
  EXPECT_GT(hits, 100u);
}

// analyze_run as it was before the single pass: everything from a SummaryTable of the whole run.
AnomalyReport reference_report(format::RunReader& reader, const AnalysisParams& params) {
  AnomalyReport report;
  report.first_step = reader.first_step();
  report.last_step = reader.last_step();
  const LayerGraph graph(reader.metadata());
  std::vector<AbnormalSnapshot> found;
  LearningRate lr;
  for (const format::ScalarSeries& s : reader.read_scalars()) {
    if (s.name == params.rules.learning_rate_scalar) lr = {s.steps, s.values};
    for (const ScalarAnomaly& a : reference_scalar_anomalies(s.name, s.steps, s.values, params.scalars))
      found.push_back({a.step, a.kind, a.scalar, a.value, a.score, a.reason, {}});
  }
  const SummaryTable table = SummaryTable::load(reader);
  report.rule_hits = evaluate_layer_rules(graph, table, &reader, lr, params.rules);
  const bool scalar_non_finite = std::any_of(
      found.begin(), found.end(), [](const AbnormalSnapshot& a) { return a.kind == AnomalyKind::NonFinite; });
  if (!scalar_non_finite) {
    const RuleHit* first = nullptr;
    for (const RuleHit& h : report.rule_hits)
      if (h.rule == LayerRule::NonFinite && (!first || h.first_step < first->first_step)) first = &h;
    if (first)
      found.push_back({first->first_step,
                       AnomalyKind::NonFinite,
                       "",
                       NAN,
                       1000.0,
                       "NaN/Inf in layer tensors from step " + std::to_string(first->first_step) + " (" +
                           graph.name(first->layer_id) + ")",
                       {}});
  }
  std::stable_sort(found.begin(), found.end(), [](const AbnormalSnapshot& a, const AbnormalSnapshot& b) {
    return std::make_tuple(a.step, int(a.kind)) < std::make_tuple(b.step, int(b.kind));
  });
  for (AbnormalSnapshot& a : found) {
    if (!report.anomalies.empty() && report.anomalies.back().step == a.step && report.anomalies.back().kind == a.kind) {
      AbnormalSnapshot& b = report.anomalies.back();
      b.score = std::max(b.score, a.score);
      b.scalar += "," + a.scalar;
      b.reason += "; " + a.reason;
      continue;
    }
    report.anomalies.push_back(std::move(a));
  }
  std::stable_sort(report.anomalies.begin(), report.anomalies.end(),
                   [](const AbnormalSnapshot& a, const AbnormalSnapshot& b) {
                     return a.score != b.score ? a.score > b.score : a.step < b.step;
                   });
  if (report.anomalies.size() > params.max_anomalies) report.anomalies.resize(params.max_anomalies);
  for (AbnormalSnapshot& a : report.anomalies)
    a.suspects = rank_suspects(graph, table, report.rule_hits, a.step, params.root_cause);
  return report;
}

void expect_same(const AnomalyReport& a, const AnomalyReport& b, const std::string& what) {
  EXPECT_EQ(a.first_step, b.first_step) << what;
  EXPECT_EQ(a.last_step, b.last_step) << what;
  expect_same(a.rule_hits, b.rule_hits, what + " rule hits");
  ASSERT_EQ(a.anomalies.size(), b.anomalies.size()) << what;
  for (size_t i = 0; i < a.anomalies.size(); ++i) {
    const std::string at = what + " anomaly #" + std::to_string(i);
    EXPECT_EQ(a.anomalies[i].step, b.anomalies[i].step) << at;
    EXPECT_EQ(a.anomalies[i].kind, b.anomalies[i].kind) << at;
    EXPECT_EQ(a.anomalies[i].scalar, b.anomalies[i].scalar) << at;
    EXPECT_EQ(bits(a.anomalies[i].value), bits(b.anomalies[i].value)) << at;
    EXPECT_EQ(bits(a.anomalies[i].score), bits(b.anomalies[i].score)) << at;
    EXPECT_EQ(a.anomalies[i].reason, b.anomalies[i].reason) << at;
    expect_same(a.anomalies[i].suspects, b.anomalies[i].suspects, at + " suspects");
  }
}

// Defaults, and thresholds that make every rule and detector fire often (many anomalies, more than are kept).
std::vector<AnalysisParams> parameter_sets() {
  std::vector<AnalysisParams> sets(3);
  AnalysisParams& eager = sets[1];
  eager.scalars.spike_z = 1.5, eager.scalars.shift_z = 1.0, eager.scalars.min_history = 5;
  eager.rules.vanishing_gradient_rms = 0.5, eager.rules.exploding_gradient_factor = 1.02;
  eager.rules.exploding_min_history = 2, eager.rules.exploding_history = 7, eager.rules.unchanged_steps = 1;
  eager.rules.max_update_ratio = 1e-6, eager.rules.min_update_ratio = 1e-2, eager.rules.dead_layer_fraction = 0.1;
  eager.root_cause.departure_z = 1.0, eager.root_cause.baseline_points = 6, eager.root_cause.lookback_steps = 120;
  eager.max_anomalies = 7;
  AnalysisParams& odd = sets[2];
  odd.rules.exploding_history = 0, odd.rules.exploding_gradient_factor = -1, odd.rules.exploding_min_history = 0;
  odd.root_cause.baseline_points = 2, odd.root_cause.min_baseline_points = 3, odd.root_cause.lookahead_steps = 0;
  odd.max_anomalies = 1;
  return sets;
}

TEST(StreamingAnalysis, OnePassEqualsTheWholeRunTable) {
  const auto sets = parameter_sets();
  size_t hits = 0, suspects = 0;
  for (const std::string& name : testing::synthetic_run_names()) {
    testing::TempDir dir("stream");
    testing::write_synthetic_run(name, dir / "run");
    for (size_t k = 0; k < sets.size(); ++k) {
      format::RunReader fresh(dir / "run");
      const AnomalyReport reference = reference_report(fresh, sets[k]);
      // The scalar detectors beside the pass (their entry points known from whichever chunk they finish at; the
      // windows the pass went into before are read again), and before it, on this thread.
      for (bool concurrent : {true, false}) {
        AnalysisParams params = sets[k];
        params.concurrent_scalars = concurrent;
        format::RunReader reader(dir / "run");
        const AnomalyReport fast = analyze_run(reader, params);
        expect_same(fast, reference,
                    name + " parameter set " + std::to_string(k) + (concurrent ? " concurrent" : " scalars first"));
      }
      hits += reference.rule_hits.size();
      for (const auto& a : reference.anomalies) suspects += a.suspects.size();
    }
  }
  EXPECT_GT(hits, 20u);
  EXPECT_GT(suspects, 20u);
}

TEST(StreamingAnalysis, DeparturesOfManyWindowsEqualRankSuspectsOnTheTable) {
  for (const std::string& name : testing::synthetic_run_names()) {
    testing::TempDir dir("departures");
    testing::write_synthetic_run(name, dir / "run");
    format::RunReader reader(dir / "run");
    const LayerGraph graph(reader.metadata());
    const SummaryTable table = SummaryTable::load(reader);
    const std::vector<RuleHit> hits = evaluate_layer_rules(graph, table, &reader, read_learning_rate(reader));
    for (const AnalysisParams& params : parameter_sets()) {
      std::vector<int64_t> steps;
      for (int64_t s = -20; s <= 420; s += 23) steps.push_back(s);
      DepartureStream stream(graph, steps, params.root_cause);
      reader.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const format::SummaryColumns& c) { stream.add(c); });
      for (size_t k = 0; k < steps.size(); ++k)
        expect_same(stream.suspects(k, hits), rank_suspects(graph, table, hits, steps[k], params.root_cause),
                    name + " step " + std::to_string(steps[k]));
    }
  }
}

// A run with NaN in one layer while the loss stays finite (the entry point comes from the rules, and its window
// is read in a second pass), and a run whose steps go back (its chunks overlap: the table is needed after all).
void write_run(const std::filesystem::path& dir, bool steps_go_back) {
  format::RunMetadata m;
  m.header.model_name = "Three";
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  for (uint32_t i = 1; i <= 3; ++i) m.layers.push_back({i, "fc" + std::to_string(i), 0u, "Linear", 4, {4}, {}, true});
  for (uint32_t i = 1; i < 3; ++i) m.edges.push_back({i, i + 1, false});
  format::WriterOptions options;
  options.chunk_bytes = 8 << 10;  // many chunks
  format::RunWriter writer(dir, m, options);
  std::mt19937 rng(3);
  std::normal_distribution<double> noise(1.0, 0.02);
  const auto snapshot = [&](int64_t step) {
    format::Snapshot s;
    s.step = step;
    s.scalars = {{"loss", 1.0 + 0.01 * noise(rng)}, {"lr", 0.1}};
    for (uint32_t layer = 1; layer <= 3; ++layer)
      for (auto q : {format::Quantity::Activation, format::Quantity::Weight, format::Quantity::WeightGrad}) {
        format::LayerQuantityRecord r;
        r.layer_id = layer;
        r.quantity = q;
        r.summary.std = noise(rng) * (q == format::Quantity::WeightGrad ? 1e-3 : 1.0);
        r.summary.max = 3 * r.summary.std, r.summary.min = -r.summary.max, r.summary.numel = 64;
        r.summary.norm = 8 * r.summary.std;
        if (layer == 2 && q == format::Quantity::Activation && step >= 150) r.summary.nan_count = 3;
        if (layer == 3 && step >= 170) r.summary.std *= 40, r.summary.max *= 40, r.summary.norm *= 40;
        s.layers.push_back(r);
      }
    return s;
  };
  for (int64_t step = 0; step < 200; ++step) ASSERT_TRUE(writer.append(snapshot(step)));
  if (steps_go_back) {
    for (int64_t step = 100; step < 130; ++step) ASSERT_TRUE(writer.append(snapshot(step)));
  }
  writer.close();
}

TEST(StreamingAnalysis, NanInLayersOnlyAndStepsGoingBackEqualTheTable) {
  for (bool back : {false, true}) {
    testing::TempDir dir("layer-nan");
    write_run(dir / "run", back);
    format::RunReader reader(dir / "run");
    const LayerGraph graph(reader.metadata());
    LayerRuleStream stream(graph, read_learning_rate(reader));
    bool in_order = true;
    reader.for_each_summary_chunk(INT64_MIN, INT64_MAX,
                                  [&](const format::SummaryColumns& c) { in_order = in_order && stream.add(c); });
    EXPECT_EQ(in_order, !back) << "a run whose steps go back cannot be taken in one pass";
    for (const AnalysisParams& params : parameter_sets()) {
      format::RunReader a(dir / "run"), b(dir / "run");
      const AnomalyReport fast = analyze_run(a, params), reference = reference_report(b, params);
      expect_same(fast, reference, back ? "steps going back" : "NaN in layers only");
      if (params.max_anomalies > 1) {
        ASSERT_FALSE(fast.anomalies.empty());
        EXPECT_EQ(fast.anomalies[0].kind, AnomalyKind::NonFinite);
        EXPECT_EQ(fast.anomalies[0].scalar, "");
        EXPECT_EQ(fast.anomalies[0].step, 150);
        ASSERT_FALSE(fast.anomalies[0].suspects.empty());
        EXPECT_EQ(fast.anomalies[0].suspects[0].layer_id, 2u);
      }
    }
  }
}

// Windows named only once part of the pass has gone by (as when the scalar detectors finish beside it): those that
// began before are not complete (analyze_run reads them again), the others equal rank_suspects on the table.
TEST(StreamingAnalysis, WindowsNamedLateAreCompleteOnlyIfTheyBeganAfter) {
  testing::TempDir dir("late");
  write_run(dir / "run", false);
  format::RunReader reader(dir / "run");
  const LayerGraph graph(reader.metadata());
  const SummaryTable table = SummaryTable::load(reader);
  const std::vector<RuleHit> hits = evaluate_layer_rules(graph, table, &reader, read_learning_rate(reader));
  for (AnalysisParams params : parameter_sets()) {
    params.root_cause.lookback_steps = 30;  // windows shorter than the run's halves
    std::vector<int64_t> steps;
    for (int64_t s = 5; s < 200; s += 15) steps.push_back(s);
    DepartureStream late(graph, {}, params.root_cause);
    size_t chunks = 0, seen = 0;
    int64_t named_at = INT64_MIN;
    reader.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const format::SummaryColumns&) { ++chunks; });
    ASSERT_GT(chunks, 3u);
    reader.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const format::SummaryColumns& c) {
      if (seen++ == chunks / 2) {
        late.follow(steps);
        named_at = c.first_step;
      }
      late.add(c);
    });
    size_t complete = 0, incomplete = 0;
    for (size_t k = 0; k < steps.size(); ++k) {
      const int64_t window_begins = steps[k] - params.root_cause.lookback_steps;
      const std::string at = "step " + std::to_string(steps[k]) + " named at " + std::to_string(named_at);
      if (window_begins < named_at) {
        EXPECT_FALSE(late.complete(k)) << at;
        ++incomplete;
      } else {
        EXPECT_TRUE(late.complete(k)) << at;
        expect_same(late.suspects(k, hits), rank_suspects(graph, table, hits, steps[k], params.root_cause), at);
        ++complete;
      }
    }
    EXPECT_GT(incomplete, 0u);
    EXPECT_GT(complete, 0u) << "lookback " << params.root_cause.lookback_steps;
  }
}

}  // namespace
}  // namespace trainscope::analysis
