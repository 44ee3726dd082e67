// Figures of BlueNoisePolylineSampler, each against random sampling of the same size measured in the same run, on
// synthetic layers with planted outlier neurons (--smoke: small sizes; --full: 100k lines, and 1M for speed) and on
// real recordings (--run DIR --layer NAME ...: a layer's per-neuron series read through format::RunReader).
// Each figure is printed with its goal and PASS/FAIL; the exit code is 0 either way unless --strict is given.
//
// What is measured (the metrics of issue 5; the random baselines were not changed when the sampler was tuned):
//  - recall: synthetic layers count the planted outliers in the first 5% of the order. Real layers have no planted
//    truth, so their abnormal lines are defined without the sampler: lines holding a NaN or Inf, and lines whose
//    worst-step deviation from the layer's median line, in robust standard deviations of that step (1.4826 MAD,
//    never below a pixel of the chart), lies beyond Tukey's far-out fence (Q3 + 3 IQR) of all lines' deviations.
//  - shape: L1 distance between the sample's density image (lines rasterised on the chart's 200x100 grid) and the
//    full set's, both normalised to unit mass. "weighted" is the Horvitz-Thompson estimate the view can draw: typical
//    lines and lines the sampler scores as outliers each weighted by the lines of their kind one sampled line stands
//    for. "every line weight 1" draws the sample plainly: a sample that keeps every outlier over-represents them
//    (350 of 100k lines are 7% of a 5% sample), so it is further from the full density than random by design.
//    "typical lines only" compares the typical lines of the sample with all typical lines at weight 1.
//  - clutter: overdraw of the typical lines, against as many random typical lines, measured per covered pixel:
//    sum over pixels of max(0, lines covering it - 1) / pixels covered (the mean number of hidden layers under a
//    lit pixel, the usual overdraw factor minus one). The first version divided the same sum by the lines drawn;
//    that equals ink per line - covered pixels / lines, and since the covered pixels cannot exceed the chart, it
//    tends to a line's own pixel count for any sampler once the chart is full (5000 lines on 20000 pixels: 270.9
//    vs 270.9, a tie decided by 0.1 px of line length). It is still printed, as "per drawn line (old)". The pairwise
//    overlap, sum over pixels of c (c - 1) per pair of lines, is printed too: it does not saturate but equals the
//    full set's value for any sample that keeps the density (what "shape" asks for), so it says nothing of spread.
//  - speed: the whole sampler (reduction to chart features included), 100k x 200 and 1M x 200; the process CPU time
//    is printed next to the wall time, since other work sharing the two cores inflates the wall time.
#include <trainscope/analysis/polyline_sampling.h>
#include <trainscope/format/run_reader.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "synthetic_layers.h"

namespace {

namespace format = trainscope::format;
using trainscope::analysis::BlueNoisePolylineSampler;
using trainscope::analysis::kOutlierScoreThreshold;
using trainscope::analysis::PolylineSample;
using trainscope::analysis::PolylineSet;
using trainscope::analysis::SamplerOptions;
using trainscope::testing::SyntheticLayer;

constexpr int kWidth = 200, kHeight = 100;

int failures = 0;

void figure(const char* name, const std::string& value, const std::string& goal, bool pass) {
  std::printf("  %-46s %-34s goal %-24s %s\n", name, value.c_str(), goal.c_str(), pass ? "PASS" : "FAIL");
  if (!pass) ++failures;
}
void info(const char* name, const std::string& value) {
  std::printf("  %-46s %s\n", name, value.c_str());
}

std::string fmt(const char* f, double a) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}
std::string fmt(const char* f, double a, double b) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}
std::string fmt(const char* f, double a, double b, double c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

std::vector<uint32_t> all_lines(size_t n) {
  std::vector<uint32_t> all(n);
  std::iota(all.begin(), all.end(), 0u);
  return all;
}

// Per-pixel count of the given lines drawn on a kWidth x kHeight chart with the y-range [low, high]: each column
// covers the rows between the line's heights at the column's two edges (what an antialias-free renderer fills).
// Segments touching a NaN or Inf point are not drawn.
std::vector<uint32_t> rasterise(const PolylineSet& set, const std::vector<uint32_t>& lines, double low, double high) {
  std::vector<uint32_t> image(size_t(kWidth) * kHeight, 0);
  const size_t T = set.points;
  if (T == 0) return image;
  auto value = [&](uint32_t line, double t) {
    const size_t a = std::min(T - 1, size_t(t));
    const size_t b = std::min(T - 1, a + 1);
    const double w = t - double(a);
    return (1 - w) * set.at(line, a) + w * set.at(line, b);
  };
  const double scale = double(kHeight) / (high - low);
  for (uint32_t line : lines)
    for (int x = 0; x < kWidth; ++x) {
      const double t0 = T > 1 ? double(x) * double(T - 1) / kWidth : 0.0;
      const double t1 = T > 1 ? double(x + 1) * double(T - 1) / kWidth : 0.0;
      const double y0 = (value(line, t0) - low) * scale, y1 = (value(line, t1) - low) * scale;
      if (!std::isfinite(y0) || !std::isfinite(y1)) continue;
      const int r0 = std::max(0, int(std::floor(std::min(y0, y1))));
      const int r1 = std::min(kHeight - 1, int(std::floor(std::max(y0, y1))));
      for (int r = r0; r <= r1; ++r) ++image[size_t(r) * kWidth + size_t(x)];
    }
  return image;
}

struct Clutter {
  double overdraw = 0;  // sum of max(0, c - 1) / covered pixels: the figure
  double per_line = 0;  // the same sum / lines drawn: saturates (the first version's figure)
  double covered = 0;   // pixels lit
  double pairs = 0;     // sum of c (c - 1) / (lines (lines - 1)): set by the density
};

Clutter clutter_of(const std::vector<uint32_t>& image, size_t lines) {
  double hidden = 0, covered = 0, pairs = 0;
  for (uint32_t c : image) {
    if (!c) continue;
    covered += 1, hidden += double(c - 1), pairs += double(c) * double(c - 1);
  }
  Clutter out;
  out.covered = covered;
  out.overdraw = covered > 0 ? hidden / covered : 0.0;
  out.per_line = lines ? hidden / double(lines) : 0.0;
  out.pairs = lines > 1 ? pairs / (double(lines) * double(lines - 1)) : 0.0;
  return out;
}

// k distinct lines of [0, n), uniformly at random (partial Fisher-Yates), deterministic for a seed.
std::vector<uint32_t> random_sample(size_t n, size_t k, uint64_t seed) {
  std::vector<uint32_t> all = all_lines(n);
  k = std::min(k, n);
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + size_t(trainscope::testing::synthetic_hash(seed * 1000003 + i) % (n - i));
    std::swap(all[i], all[j]);
  }
  all.resize(k);
  return all;
}

size_t kept_of(const std::vector<uint32_t>& sample, const std::vector<uint8_t>& is_outlier) {
  size_t kept = 0;
  for (uint32_t i : sample) kept += is_outlier[i];
  return kept;
}

// Lines a view folds into cluster bands (outlier score below the threshold) or, with typical = false, draws as
// outliers.
std::vector<uint32_t> lines_of_kind(const std::vector<uint32_t>& lines, const std::vector<float>& score, bool typical) {
  std::vector<uint32_t> out;
  for (uint32_t i : lines)
    if ((score[i] < kOutlierScoreThreshold) == typical) out.push_back(i);
  return out;
}

// L1 distance between two images normalised to unit mass (0 = same density, 2 = disjoint).
template <class A, class B>
double density_distance(const A& a, const B& b) {
  double sa = 0, sb = 0, d = 0;
  for (auto v : a) sa += double(v);
  for (auto v : b) sb += double(v);
  if (sa <= 0 || sb <= 0) return 2.0;
  for (size_t i = 0; i < a.size(); ++i) d += std::abs(double(a[i]) / sa - double(b[i]) / sb);
  return d;
}

// What a layer is measured on: its lines, the outliers a sample should keep, the sampler's result on all of it.
struct Evaluation {
  const PolylineSet& set;
  std::vector<uint8_t> is_outlier;  // per line: planted (synthetic) or abnormal (real)
  size_t outliers = 0;
  const PolylineSample& result;  // the whole progressive order
  std::vector<uint32_t> full, full_typical;
  size_t typical_total = 0, unusual_total = 0;

  Evaluation(const PolylineSet& s, const std::vector<uint32_t>& outlier_lines, const PolylineSample& r)
      : set(s), is_outlier(s.lines, 0), outliers(outlier_lines.size()), result(r) {
    for (uint32_t o : outlier_lines) is_outlier[o] = 1;
    const auto all = all_lines(set.lines);
    full = rasterise(set, all, result.low, result.high);
    const auto typical = lines_of_kind(all, result.outlier_score, true);
    full_typical = rasterise(set, typical, result.low, result.high);
    typical_total = typical.size(), unusual_total = set.lines - typical.size();
  }

  // The sample's density image as an estimate of the full set's: typical lines and outliers each weighted by how
  // many lines of their kind one sampled line stands for (a two-stratum Horvitz-Thompson estimate; the view knows
  // the scores, so it can weight the same way).
  std::vector<double> weighted_image(const std::vector<uint32_t>& sample) const {
    std::vector<double> image(size_t(kWidth) * kHeight, 0.0);
    for (bool typical : {true, false}) {
      const auto part = lines_of_kind(sample, result.outlier_score, typical);
      if (part.empty()) continue;
      const double weight = double(typical ? typical_total : unusual_total) / double(part.size());
      const auto img = rasterise(set, part, result.low, result.high);
      for (size_t p = 0; p < image.size(); ++p) image[p] += weight * img[p];
    }
    return image;
  }
};

struct Figures {
  double recall = 0, shape_drawn = 0, shape_weighted = 0, shape_typical = 0;
  Clutter clutter;          // of the typical lines drawn
  double overdraw_all = 0;  // overdraw of every drawn line (outliers included)
  double typical_lines = 0;

  void add(const Figures& f, double w) {
    recall += w * f.recall, shape_drawn += w * f.shape_drawn, shape_weighted += w * f.shape_weighted;
    shape_typical += w * f.shape_typical, overdraw_all += w * f.overdraw_all, typical_lines += w * f.typical_lines;
    clutter.overdraw += w * f.clutter.overdraw, clutter.per_line += w * f.clutter.per_line;
    clutter.covered += w * f.clutter.covered, clutter.pairs += w * f.clutter.pairs;
  }
};

Figures measure(const Evaluation& ev, const std::vector<uint32_t>& sample, const std::vector<uint32_t>& typical) {
  Figures f;
  f.recall = ev.outliers ? double(kept_of(sample, ev.is_outlier)) / double(ev.outliers) : 1.0;
  const auto drawn = rasterise(ev.set, sample, ev.result.low, ev.result.high);
  f.shape_drawn = density_distance(drawn, ev.full);
  f.shape_weighted = density_distance(ev.weighted_image(sample), ev.full);
  const auto typical_image = rasterise(ev.set, typical, ev.result.low, ev.result.high);
  f.shape_typical = density_distance(typical_image, ev.full_typical);
  f.clutter = clutter_of(typical_image, typical.size());
  f.overdraw_all = clutter_of(drawn, sample.size()).overdraw;
  f.typical_lines = double(typical.size());
  return f;
}

// Blue noise (a prefix of the order) against the mean of `draws` random samples of the same size, at each count.
// Each evaluation is the sampler's result for one seed; with several, blue noise is averaged over the seeds and the
// random samples over all their draws, so that both sides are estimates of an expectation (a layer of a few hundred
// lines gives samples of a dozen, whose figures vary a lot from one sample to the next).
// recall_goal_at: the count whose recall is a figure (the others are info); recall_capped: the goal is 95% of the
// outliers the sample can hold (real layers, where abnormal lines may outnumber a 5% sample).
void compare(const std::vector<const Evaluation*>& evs, const std::vector<size_t>& counts, int draws,
             size_t recall_goal_at, bool recall_capped) {
  const Evaluation& first = *evs.front();
  const size_t n = first.set.lines;
  for (size_t count : counts) {
    if (count == 0 || count > n) continue;
    Figures blue, rnd;
    double overdraw_low = 1e300, overdraw_high = 0, typical_count = 0;
    bool any_typical = false;
    for (size_t e = 0; e < evs.size(); ++e) {
      const Evaluation& ev = *evs[e];
      const auto all_typical = lines_of_kind(all_lines(n), ev.result.outlier_score, true);
      const std::vector<uint32_t> head(ev.result.order.begin(), ev.result.order.begin() + std::ptrdiff_t(count));
      const auto head_typical = lines_of_kind(head, ev.result.outlier_score, true);
      any_typical |= !head_typical.empty();
      typical_count += double(head_typical.size()) / double(evs.size());
      blue.add(measure(ev, head, head_typical), 1.0 / double(evs.size()));
      for (int d = 0; d < draws; ++d) {
        const uint64_t key = uint64_t(e) * 7919 + uint64_t(d);
        const auto r = random_sample(n, count, key + 1 + count);
        // Random typical lines, as many as the blue-noise prefix draws.
        auto rt = random_sample(all_typical.size(), head_typical.size(), key + 77 + count);
        for (auto& i : rt) i = all_typical[i];
        const Figures f = measure(ev, r, rt);
        rnd.add(f, 1.0 / (double(draws) * double(evs.size())));
        overdraw_low = std::min(overdraw_low, f.clutter.overdraw);
        overdraw_high = std::max(overdraw_high, f.clutter.overdraw);
      }
    }
    if (evs.size() == 1)
      std::printf(" prefix of %zu lines (%.2f%%): blue noise vs random (mean of %d draws)\n", count,
                  100.0 * double(count) / double(n), draws);
    else
      std::printf(" prefix of %zu lines (%.2f%%): blue noise (mean of %zu seeds) vs random (mean of %zu draws)\n",
                  count, 100.0 * double(count) / double(n), evs.size(), size_t(draws) * evs.size());
    const size_t holdable = std::min(first.outliers, count);
    const double recall_goal =
        recall_capped && first.outliers ? 0.95 * double(holdable) / double(first.outliers) : 0.95;
    const std::string recall_text =
        fmt("%.1f%% / %.1f%%", 100 * blue.recall, 100 * rnd.recall) + " (of " + std::to_string(first.outliers) + ")";
    if (count == recall_goal_at)
      figure("outlier recall", recall_text, fmt(">= %.1f%%", 100 * recall_goal), blue.recall >= recall_goal - 1e-12);
    else
      info("outlier recall (info)", recall_text);
    figure("shape: L1 to full density, weighted", fmt("%.4f / %.4f", blue.shape_weighted, rnd.shape_weighted),
           "blue < random", blue.shape_weighted < rnd.shape_weighted);
    info("shape: L1, every line weight 1 (info)", fmt("%.4f / %.4f", blue.shape_drawn, rnd.shape_drawn));
    info("shape: L1, typical lines only (info)", fmt("%.4f / %.4f", blue.shape_typical, rnd.shape_typical));
    if (!any_typical) {
      info("clutter", "no typical lines in this prefix");
      continue;
    }
    figure(
        "clutter: overdraw per covered px, typical",
        fmt("%.2f / %.2f", blue.clutter.overdraw, rnd.clutter.overdraw) + " (" + fmt("%.0f", typical_count) + " lines)",
        "blue < random", blue.clutter.overdraw < rnd.clutter.overdraw);
    info("  random draws' range (info)", fmt("%.2f .. %.2f", overdraw_low, overdraw_high));
    info("  covered px (info)", fmt("%.0f / %.0f of the full set's typical %.0f", blue.clutter.covered,
                                    rnd.clutter.covered, clutter_of(first.full_typical, 1).covered));
    info("  overlap px per drawn line (old, info)", fmt("%.1f / %.1f", blue.clutter.per_line, rnd.clutter.per_line));
    info("  pairwise overlap px per line pair (info)", fmt("%.3f / %.3f", blue.clutter.pairs, rnd.clutter.pairs));
    info("overdraw per covered px, all drawn (info)", fmt("%.2f / %.2f", blue.overdraw_all, rnd.overdraw_all));
  }
}

void synthetic_quality(size_t lines) {
  const size_t points = 200;
  const SyntheticLayer layer = trainscope::testing::make_synthetic_layer(lines, points, 3, 0.003, 11, lines / 2000);
  const PolylineSet set{layer.values.data(), lines, points, true};
  const auto result = BlueNoisePolylineSampler(SamplerOptions{}).sample(set);  // the whole progressive order
  std::printf("quality: %zu lines x %zu points, 3 groups, %zu planted outliers (%zu NaN/Inf), chart %dx%d px\n", lines,
              points, layer.outliers.size(), lines / 2000, kWidth, kHeight);
  const Evaluation ev(set, layer.outliers, result);
  compare({&ev}, {lines / 20, lines / 100, lines / 400}, 5, lines / 20, false);
}

// ---- Real recordings ----

// Abnormal lines by a definition that does not use the sampler: NaN/Inf lines, and lines whose worst-step robust
// deviation from the median line is beyond Tukey's far-out fence of all lines' deviations. `pixel`: the smallest
// scale a step's spread is given (a pixel of the chart in value units), so that steps where most lines agree exactly
// (dead units, a constant input) do not turn invisible differences into extreme ones.
std::vector<uint32_t> abnormal_lines(const PolylineSet& set, double pixel, size_t& non_finite, size_t& extreme) {
  const size_t n = set.lines, T = set.points;
  std::vector<uint8_t> finite(n, 1);
  for (size_t i = 0; i < n; ++i)
    for (size_t t = 0; t < T && finite[i]; ++t) finite[i] = std::isfinite(set.at(i, t));
  std::vector<double> worst(n, 0.0), column;
  for (size_t t = 0; t < T; ++t) {
    column.clear();
    for (size_t i = 0; i < n; ++i)
      if (finite[i]) column.push_back(set.at(i, t));
    if (column.size() < 3) break;
    auto median_of = [](std::vector<double>& v) {
      const auto mid = v.begin() + std::ptrdiff_t(v.size() / 2);
      std::nth_element(v.begin(), mid, v.end());
      return *mid;
    };
    const double median = median_of(column);
    for (double& v : column) v = std::abs(v - median);
    const double scale = std::max(1.4826 * median_of(column), pixel);
    for (size_t i = 0; i < n; ++i)
      if (finite[i]) worst[i] = std::max(worst[i], std::abs(set.at(i, t) - median) / scale);
  }
  std::vector<double> finite_worst;
  for (size_t i = 0; i < n; ++i)
    if (finite[i]) finite_worst.push_back(worst[i]);
  double fence = std::numeric_limits<double>::infinity();
  if (finite_worst.size() >= 4) {
    std::sort(finite_worst.begin(), finite_worst.end());
    const double q1 = finite_worst[finite_worst.size() / 4], q3 = finite_worst[finite_worst.size() * 3 / 4];
    fence = q3 + 3.0 * (q3 - q1);
  }
  std::vector<uint32_t> out;
  non_finite = extreme = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!finite[i])
      ++non_finite, out.push_back(uint32_t(i));
    else if (worst[i] > fence)
      ++extreme, out.push_back(uint32_t(i));
  }
  return out;
}

constexpr int kRealSeeds = 20;  // a real layer is sampled with this many seeds

struct RealLayer {
  std::string run, layer, quantity = "activation", statistic = "mean";
  int64_t first = INT64_MIN, last = INT64_MAX;
};

// Returns false (with a message) when the layer cannot be read.
bool real_quality(const RealLayer& spec) {
  try {
    const auto quantity = format::parse_quantity(spec.quantity);
    const auto statistic = format::parse_statistic(spec.statistic);
    if (!quantity || !statistic) {
      std::fprintf(stderr, "unknown quantity '%s' or statistic '%s'\n", spec.quantity.c_str(), spec.statistic.c_str());
      return false;
    }
    format::RunReader reader(spec.run);
    const format::Layer* layer = reader.metadata().find_layer(spec.layer);
    if (!layer) {
      std::fprintf(stderr, "%s: no layer named '%s'\n", spec.run.c_str(), spec.layer.c_str());
      return false;
    }
    const auto series = reader.read_neuron_series(layer->id, *quantity, *statistic, spec.first, spec.last);
    if (!series || series->steps.empty() || series->neuron_count == 0) {
      std::fprintf(stderr, "%s: layer '%s' has no per-neuron %s %s in these steps\n", spec.run.c_str(),
                   spec.layer.c_str(), spec.quantity.c_str(), spec.statistic.c_str());
      return false;
    }
    const PolylineSet set = PolylineSet::from(*series);
    std::vector<PolylineSample> results;
    const auto start = std::chrono::steady_clock::now();
    for (uint64_t seed = 1; seed <= uint64_t(kRealSeeds); ++seed) {
      SamplerOptions options;
      options.seed = seed;
      results.push_back(BlueNoisePolylineSampler(options).sample(set));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kRealSeeds;
    const PolylineSample& result = results.front();
    size_t non_finite = 0, extreme = 0;
    const auto abnormal = abnormal_lines(set, (result.high - result.low) / kHeight, non_finite, extreme);
    size_t scored = 0;
    for (float s : result.outlier_score) scored += s >= kOutlierScoreThreshold;
    std::printf("real: %s, layer %s %s %s, steps %lld..%lld (%zu points), %zu neurons, chart %dx%d px\n",
                spec.run.c_str(), spec.layer.c_str(), spec.quantity.c_str(), spec.statistic.c_str(),
                (long long)series->steps.front(), (long long)series->steps.back(), set.points, set.lines, kWidth,
                kHeight);
    std::printf(
        "  abnormal lines (not the sampler's score): %zu NaN/Inf + %zu extreme (worst-step robust z past "
        "Q3 + 3 IQR); the sampler (seed 1) scores %zu as outliers; sampled in %.4f s\n",
        non_finite, extreme, scored, seconds);
    std::vector<Evaluation> evs;
    evs.reserve(results.size());
    std::vector<const Evaluation*> ptrs;
    for (const auto& r : results) evs.emplace_back(set, abnormal, r), ptrs.push_back(&evs.back());
    // Few lines: a 5% sample is a dozen lines, so larger ones too, and many random draws (they are cheap).
    const size_t n = set.lines;
    std::vector<size_t> counts{std::max<size_t>(1, n / 20), std::max<size_t>(1, n / 10), std::max<size_t>(1, n / 4)};
    counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    compare(ptrs, counts, 200 / kRealSeeds, counts.front(), true);
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", spec.run.c_str(), e.what());
    return false;
  }
}

// ---- Speed ----

struct Timing {
  double wall = 1e30, cpu = 1e30;
};

Timing time_sample(size_t lines, int repeats) {
  const SyntheticLayer layer = trainscope::testing::make_synthetic_layer(lines, 200, 3, 0.003, 5, lines / 10000);
  PolylineSet set{layer.values.data(), lines, 200, true};
  SamplerOptions options;
  options.count = lines / 20;
  Timing best;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const std::clock_t cpu_start = std::clock();
    const auto result = BlueNoisePolylineSampler(options).sample(set);
    best.cpu = std::min(best.cpu, double(std::clock() - cpu_start) / CLOCKS_PER_SEC);
    best.wall = std::min(best.wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (result.order.size() != options.count) std::printf("  (unexpected sample size %zu)\n", result.order.size());
  }
  return best;
}

void speed(bool full) {
  const size_t small = full ? 100000 : 10000, large = full ? 1000000 : 100000;
  std::printf("speed: 200 points per line, 5%% sample, best of %d\n", full ? 3 : 2);
  const Timing t_small = time_sample(small, full ? 3 : 2);
  const Timing t_large = time_sample(large, full ? 2 : 1);
  std::printf(
      "  (cpu time of all threads: %.3f s and %.3f s, ratio %.1fx; the wall time suffers when other work shares the "
      "cores)\n",
      t_small.cpu, t_large.cpu, t_large.cpu / t_small.cpu);
  figure(("time " + std::to_string(small) + " x 200").c_str(), fmt("%.3f s", t_small.wall),
         full ? "<= 1 s" : "(report)", !full || t_small.wall <= 1.0);
  figure(("time " + std::to_string(large) + " x 200").c_str(),
         fmt("%.3f s (ratio %.1fx)", t_large.wall, t_large.wall / t_small.wall), "ratio <= 12x",
         t_large.wall / t_small.wall <= 12.0);
}

bool parse_steps(const std::string& text, int64_t& first, int64_t& last) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos) return false;
  try {
    if (colon > 0) first = std::stoll(text.substr(0, colon));
    if (colon + 1 < text.size()) last = std::stoll(text.substr(colon + 1));
  } catch (const std::exception&) {
    return false;
  }
  return first <= last;
}

constexpr const char* kUsage =
    "usage: sampling_benchmark [--smoke | --full] [--strict]\n"
    "                          [--run DIR --layer NAME [--layer NAME ...] [--quantity Q] [--stat S] [--steps A:B]]\n"
    "  --smoke   synthetic layers at small sizes (the default without --run)\n"
    "  --full    100k lines for quality, 100k and 1M for speed\n"
    "  --run     also (only, without --smoke/--full) evaluate the named layers of a recording; quantity activation\n"
    "            and statistic mean unless given\n";

}  // namespace

int main(int argc, char** argv) {
  bool full = false, strict = false, synthetic = false;
  std::vector<RealLayer> real;
  RealLayer spec;
  std::vector<std::string> layers;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (arg == "--full") {
      full = synthetic = true;
    } else if (arg == "--smoke") {
      full = false, synthetic = true;
    } else if (arg == "--strict") {
      strict = true;
    } else if ((arg == "--run" || arg == "--layer" || arg == "--quantity" || arg == "--stat" || arg == "--steps") &&
               (v = value())) {
      if (arg == "--run") spec.run = v;
      if (arg == "--layer") layers.push_back(v);
      if (arg == "--quantity") spec.quantity = v;
      if (arg == "--stat") spec.statistic = v;
      if (arg == "--steps" && !parse_steps(v, spec.first, spec.last)) {
        std::fprintf(stderr, "--steps: expected A:B, got '%s'\n%s", v, kUsage);
        return 2;
      }
    } else {
      std::fprintf(stderr, "%s: unknown or incomplete argument\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  if (spec.run.empty() != layers.empty()) {
    std::fprintf(stderr, "--run and --layer go together\n%s", kUsage);
    return 2;
  }
  if (spec.run.empty()) synthetic = true;
  std::printf("BlueNoisePolylineSampler benchmark (%s)\n", !synthetic ? "real recordings"
                                                           : full     ? "full"
                                                                      : "smoke: small sizes, figures indicative");
  if (synthetic) synthetic_quality(full ? 100000 : 10000);
  bool readable = true;
  for (const auto& name : layers) {
    RealLayer one = spec;
    one.layer = name;
    readable &= real_quality(one);
  }
  if (synthetic) speed(full);
  std::printf("%s\n", failures ? "some figures miss their goal" : "all figures meet their goal");
  if (!readable) return 1;
  return strict && failures ? 1 : 0;
}
