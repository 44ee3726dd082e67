// BlueNoisePolylineSampler, cluster_polylines and `trainscope sample`: determinism, the progressive property,
// planted outliers kept, the score of a skewed layer, the order of outliers, degenerate inputs, clustering of
// planted groups, and the CLI on a real recording.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <trainscope/analysis/polyline_sampling.h>
#include <trainscope/format/run_writer.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

#include "../format/test_support.h"
#include "synthetic_layers.h"

namespace {

namespace analysis = trainscope::analysis;
namespace format = trainscope::format;
namespace ts = trainscope::testing;
using analysis::BlueNoisePolylineSampler;
using analysis::PolylineSet;
using analysis::SamplerOptions;
using ts::SyntheticLayer;

PolylineSet set_of(const SyntheticLayer& layer) {
  return {layer.values.data(), layer.lines, layer.points, true};
}

analysis::PolylineSample sample(const SyntheticLayer& layer, size_t count, uint64_t seed = 1, int threads = 0) {
  SamplerOptions o;
  o.count = count;
  o.seed = seed;
  o.threads = threads;
  return BlueNoisePolylineSampler(o).sample(set_of(layer));
}

// Mean distance from each line of `lines` to its nearest other line of `lines` (chart heights).
double mean_nearest(const analysis::PolylineFeatures& f, const std::vector<uint32_t>& lines) {
  double total = 0;
  for (uint32_t a : lines) {
    double best = std::numeric_limits<double>::infinity();
    for (uint32_t b : lines)
      if (a != b) best = std::min(best, analysis::polyline_distance(f, a, b));
    total += best;
  }
  return total / double(lines.size());
}

std::vector<uint32_t> random_lines(size_t n, size_t k, uint64_t seed) {
  std::vector<uint32_t> all(n);
  std::iota(all.begin(), all.end(), 0u);
  for (size_t i = 0; i < k; ++i) std::swap(all[i], all[i + ts::synthetic_hash(seed * 31 + i) % (n - i)]);
  all.resize(k);
  return all;
}

// Step-major values of lines at the given offsets, flat but for a little noise: a layer whose shape is set by hand.
std::vector<float> flat_lines(const std::vector<double>& offsets, size_t points, double noise, uint64_t seed) {
  std::vector<float> v(offsets.size() * points);
  for (size_t t = 0; t < points; ++t)
    for (size_t i = 0; i < offsets.size(); ++i)
      v[t * offsets.size() + i] = float(offsets[i] + noise * ts::synthetic_normal(seed + t * offsets.size() + i));
  return v;
}

TEST(PolylineSampling, SameSeedSameSampleWhateverTheThreads) {
  const auto layer = ts::make_synthetic_layer(8000, 60, 3, 0.005, 3, 4);
  const auto a = sample(layer, 400, 7, 1);
  const auto b = sample(layer, 400, 7, 2);
  const auto c = sample(layer, 400, 7, 0);
  EXPECT_EQ(a.order, b.order);
  EXPECT_EQ(a.order, c.order);
  EXPECT_EQ(a.outlier_score, b.outlier_score);
  const auto other = sample(layer, 400, 8, 2);
  EXPECT_NE(a.order, other.order);
  // A longer sample starts with the shorter one: the order does not depend on the count.
  const auto longer = sample(layer, 1000, 7, 2);
  EXPECT_TRUE(std::equal(a.order.begin(), a.order.end(), longer.order.begin()));
}

TEST(PolylineSampling, EveryPrefixIsSpreadOutBetterThanRandom) {
  // No planted outliers: only the blue-noise spread is measured. Prefixes of every size come from the hierarchy's
  // different levels (the first few from exact farthest-point order, then dart-throwing passes).
  const auto layer = ts::make_synthetic_layer(20000, 80, 3, 0.0, 5);
  const auto f = analysis::reduce_polylines(set_of(layer));
  const auto s = sample(layer, 0);
  ASSERT_EQ(s.order.size(), layer.lines);
  EXPECT_EQ(std::set<uint32_t>(s.order.begin(), s.order.end()).size(), layer.lines) << "a permutation";
  for (size_t prefix : {20, 60, 200, 600}) {
    const std::vector<uint32_t> head(s.order.begin(), s.order.begin() + std::ptrdiff_t(prefix));
    double random = 0;
    for (uint64_t d = 0; d < 5; ++d) random += mean_nearest(f, random_lines(layer.lines, prefix, d + 1)) / 5;
    const double blue = mean_nearest(f, head);
    EXPECT_GT(blue, 1.2 * random) << "prefix " << prefix << ": nearest-line distance " << blue << " vs random "
                                  << random;
  }
  // Density kept: every planted group gets about its share of a 5% prefix.
  std::array<size_t, 3> population{}, chosen{};
  for (size_t i = 0; i < layer.lines; ++i) ++population[size_t(layer.group[i])];
  for (size_t r = 0; r < 1000; ++r) ++chosen[size_t(layer.group[s.order[r]])];
  for (size_t g = 0; g < 3; ++g)
    EXPECT_NEAR(double(chosen[g]) / 1000.0, double(population[g]) / double(layer.lines), 0.05) << "group " << g;
}

TEST(PolylineSampling, AShortPrefixKeepsTheBundlesShape) {
  // One Gaussian bundle of 600 flat lines. A dozen lines spread by plain farthest-point selection would sit at its
  // edges (their mean distance from the centre 1.27 times the bundle's); measured in units of each line's own
  // spacing, the spread follows the density and the dozen look like the bundle.
  const size_t n = 600, points = 50;
  std::vector<double> offsets(n);
  double population = 0;
  for (size_t i = 0; i < n; ++i) offsets[i] = 0.3 * ts::synthetic_normal(77 + i), population += std::abs(offsets[i]);
  population /= double(n);
  const auto v = flat_lines(offsets, points, 0.01, 5000);
  double ratio = 0;
  const int seeds = 10;
  for (int seed = 1; seed <= seeds; ++seed) {
    SamplerOptions o;
    o.count = 12;
    o.seed = uint64_t(seed);
    const auto s = BlueNoisePolylineSampler(o).sample(PolylineSet{v.data(), n, points, true});
    double sum = 0;
    size_t typical = 0;
    for (uint32_t i : s.order)
      if (s.outlier_score[i] < analysis::kOutlierScoreThreshold) sum += std::abs(offsets[i]), ++typical;
    ASSERT_GT(typical, 6u);
    ratio += sum / double(typical) / population / seeds;
  }
  EXPECT_LT(ratio, 1.15) << "mean distance from the bundle's centre, relative to all lines'";
  EXPECT_GT(ratio, 0.85);
}

TEST(PolylineSampling, PlantedOutliersAreKeptAndScored) {
  for (size_t lines : {3000, 30000}) {
    const auto layer = ts::make_synthetic_layer(lines, 100, 3, 0.003, 9, 3);
    const auto s = sample(layer, lines / 20);
    const std::set<uint32_t> chosen(s.order.begin(), s.order.end());
    for (uint32_t o : layer.outliers) {
      EXPECT_TRUE(chosen.count(o)) << lines << " lines: planted outlier " << o << " (score " << s.outlier_score[o]
                                   << ") missing from the 5% sample";
      EXPECT_GE(s.outlier_score[o], analysis::kOutlierScoreThreshold) << "outlier " << o;
    }
    std::vector<float> typical;
    for (size_t i = 0; i < lines; ++i)
      if (layer.group[i] >= 0) typical.push_back(s.outlier_score[i]);
    std::sort(typical.begin(), typical.end());
    EXPECT_LT(typical[typical.size() / 2], 0.1f);
    EXPECT_LT(typical[typical.size() * 99 / 100], 0.5f);
    for (float v : s.outlier_score) EXPECT_TRUE(v >= 0.0f && v <= 1.0f);
  }
}

TEST(PolylineSampling, ASkewedLayersTailIsNotOutliersTheLinesSetApartAre) {
  // As in many real layers: a dense bundle, a long sparse tail above it, and four lines set apart from the tail.
  // Against twice the median spacing most of the tail looked unusual (a third of the VAE's enc.fc1); against the
  // far-out fence of the spacings only the four do, and they lead the outliers of the order.
  std::vector<double> offsets;
  for (int i = 0; i < 200; ++i) offsets.push_back(0.002 * i / 200.0);      // the bundle
  for (int j = 0; j < 96; ++j) offsets.push_back(0.05 + 0.95 * j / 95.0);  // the tail
  const size_t apart = offsets.size();
  for (double o : {2.0, 2.15, 2.3, 2.45}) offsets.push_back(o);
  const auto v = flat_lines(offsets, 50, 0.01, 17);
  SamplerOptions o;
  o.count = 20;
  const auto s = BlueNoisePolylineSampler(o).sample(PolylineSet{v.data(), offsets.size(), 50, true});
  size_t tail_outliers = 0;
  for (size_t i = 200; i < apart; ++i) tail_outliers += s.outlier_score[i] >= analysis::kOutlierScoreThreshold;
  EXPECT_LE(tail_outliers, 5u) << "of 96 tail lines";
  for (size_t i = apart; i < offsets.size(); ++i) {
    EXPECT_GE(s.outlier_score[i], analysis::kOutlierScoreThreshold) << "line " << i;
    EXPECT_NE(std::find(s.order.begin(), s.order.end(), uint32_t(i)), s.order.end())
        << "line " << i << " set apart is in the first 20 of 300";
  }
}

TEST(PolylineSampling, OutliersComeMostUnusualFirstRegionByRegion) {
  // A bundle at 0, two strong outliers far above it (0.5 apart) and a mild one just below it. Farthest-point order
  // would take the mild one second (it is the farthest from the first); capped at each line's own spacing, the second
  // strong one, not a near-duplicate of the first, comes before it.
  std::vector<double> offsets(400, 0.0);
  for (size_t i = 0; i < offsets.size(); ++i) offsets[i] = 0.01 * double(i % 7) / 7.0;
  const uint32_t strong_high = 400, strong_low = 401, mild = 402;
  offsets.push_back(1.3), offsets.push_back(0.8), offsets.push_back(-0.2);
  const auto v = flat_lines(offsets, 40, 0.005, 5);
  const auto s = BlueNoisePolylineSampler(SamplerOptions{}).sample(PolylineSet{v.data(), offsets.size(), 40, true});
  std::vector<uint32_t> outliers;
  for (uint32_t i : s.order)
    if (s.outlier_score[i] >= analysis::kOutlierScoreThreshold) outliers.push_back(i);
  ASSERT_EQ(outliers.size(), 3u);
  EXPECT_GT(s.outlier_score[strong_high], s.outlier_score[mild]);
  EXPECT_EQ(outliers, (std::vector<uint32_t>{strong_high, strong_low, mild}));
}

TEST(PolylineSampling, LinesWithNanOrInfComeFirst) {
  auto layer = ts::make_synthetic_layer(500, 30, 2, 0.0, 4);
  const size_t bad[] = {17, 230, 499};
  layer.values[5 * layer.lines + 17] = std::numeric_limits<float>::quiet_NaN();
  layer.values[0 * layer.lines + 230] = std::numeric_limits<float>::infinity();
  layer.values[29 * layer.lines + 499] = -std::numeric_limits<float>::infinity();
  const auto s = sample(layer, 10);
  ASSERT_EQ(s.order.size(), 10u);
  EXPECT_EQ(s.non_finite_lines, 3u);
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(s.order[r], bad[r]);
    EXPECT_EQ(s.outlier_score[bad[r]], 1.0f);
  }
  // Fewer slots than NaN lines: still only NaN lines, and every finite line still has its score.
  const auto few = sample(layer, 2);
  EXPECT_EQ(few.order, (std::vector<uint32_t>{17, 230}));
  EXPECT_EQ(few.outlier_score, s.outlier_score);
}

TEST(PolylineSampling, DegenerateInputs) {
  SamplerOptions o;
  o.count = 5;
  BlueNoisePolylineSampler sampler(o);
  // No lines.
  EXPECT_TRUE(sampler.sample(PolylineSet{nullptr, 0, 10, true}).order.empty());
  // One line.
  std::vector<float> one(7, 0.5f);
  auto s = sampler.sample(PolylineSet{one.data(), 1, 7, true});
  EXPECT_EQ(s.order, std::vector<uint32_t>{0});
  EXPECT_EQ(s.outlier_score, std::vector<float>{0.0f});
  // One point per line (T = 1): a scatter of values.
  std::vector<float> points(1000);
  for (size_t i = 0; i < points.size(); ++i) points[i] = float(i % 100) * 0.01f;
  points[500] = 40.0f;
  o.count = 50;
  s = BlueNoisePolylineSampler(o).sample(PolylineSet{points.data(), 1000, 1, true});
  EXPECT_EQ(s.order.size(), 50u);
  EXPECT_NE(std::find(s.order.begin(), s.order.end(), 500u), s.order.end()) << "the lone far value is kept";
  // Constant lines, all the same: any distinct lines, no NaN scores.
  std::vector<float> constant(300 * 20, 3.0f);
  s = BlueNoisePolylineSampler(o).sample(PolylineSet{constant.data(), 300, 20, true});
  EXPECT_EQ(s.order.size(), 50u);
  EXPECT_EQ(std::set<uint32_t>(s.order.begin(), s.order.end()).size(), 50u);
  for (float v : s.outlier_score) EXPECT_EQ(v, 0.0f);
  // Every line NaN.
  std::vector<float> nan(40 * 5, std::numeric_limits<float>::quiet_NaN());
  s = BlueNoisePolylineSampler(o).sample(PolylineSet{nan.data(), 40, 5, true});
  EXPECT_EQ(s.order.size(), 40u);
  EXPECT_EQ(s.non_finite_lines, 40u);
  // More requested than there are; line-major layout gives the same as step-major.
  const auto layer = ts::make_synthetic_layer(200, 16, 2, 0.02, 2);
  std::vector<float> line_major(layer.values.size());
  for (size_t i = 0; i < layer.lines; ++i)
    for (size_t t = 0; t < layer.points; ++t) line_major[i * layer.points + t] = layer.values[t * layer.lines + i];
  o.count = 1000;
  const auto a = BlueNoisePolylineSampler(o).sample(set_of(layer));
  const auto b = BlueNoisePolylineSampler(o).sample(PolylineSet{line_major.data(), layer.lines, layer.points, false});
  EXPECT_EQ(a.order.size(), 200u);
  EXPECT_EQ(a.order, b.order);
}

TEST(PolylineSampling, DistanceFollowsTheChart) {
  // Two lines a tenth of the chart apart everywhere are a tenth apart; a spike makes a line far from its twin.
  std::vector<float> v(4 * 100);
  for (size_t t = 0; t < 100; ++t) {
    v[t * 4 + 0] = 0.0f, v[t * 4 + 1] = 0.1f, v[t * 4 + 2] = 0.0f, v[t * 4 + 3] = t == 50 ? 1.0f : 0.0f;
  }
  analysis::ChartOptions chart;
  chart.range = analysis::ValueRange::Fixed;
  chart.low = 0, chart.high = 1;
  const PolylineSet set{v.data(), 4, 100, true};
  const auto f = analysis::reduce_polylines(set, chart);
  EXPECT_NEAR(analysis::polyline_distance(f, 0, 1), 0.1, 1e-6);
  EXPECT_NEAR(analysis::chart_distance(set, f, 0, 1), 0.1, 1e-6);
  EXPECT_EQ(analysis::polyline_distance(f, 0, 2), 0.0);
  EXPECT_GT(analysis::polyline_distance(f, 0, 3), 0.2) << "a spike is what the eye sees";
}

TEST(PolylineClustering, RecoversPlantedGroups) {
  const auto layer = ts::make_synthetic_layer(6000, 80, 3, 0.005, 21, 2);
  const auto set = set_of(layer);
  const auto f = analysis::reduce_polylines(set);
  const auto s = sample(layer, 300);
  const auto c = analysis::cluster_polylines(set, f, s.outlier_score);
  ASSERT_EQ(c.sizes.size(), 3u) << "k chosen by silhouette";
  EXPECT_EQ(std::accumulate(c.sizes.begin(), c.sizes.end(), uint64_t(0)), layer.lines - 2) << "NaN lines excluded";
  EXPECT_TRUE(std::is_sorted(c.sizes.rbegin(), c.sizes.rend()));
  // Each planted group maps to one cluster.
  std::array<std::array<size_t, 3>, 3> table{};
  for (size_t i = 0; i < layer.lines; ++i)
    if (layer.group[i] >= 0) {
      ASSERT_GE(c.labels[i], 0);
      ++table[size_t(layer.group[i])][size_t(c.labels[i])];
    }
  std::set<size_t> used;
  for (size_t g = 0; g < 3; ++g) {
    const size_t best = size_t(std::max_element(table[g].begin(), table[g].end()) - table[g].begin());
    const size_t total = std::accumulate(table[g].begin(), table[g].end(), size_t(0));
    EXPECT_GE(double(table[g][best]), 0.99 * double(total)) << "group " << g;
    used.insert(best);
  }
  EXPECT_EQ(used.size(), 3u);
  // Bands hold the group's lines and its mean.
  for (size_t k = 0; k < 3; ++k) {
    const auto& band = c.bands[k];
    ASSERT_EQ(band.mean.size(), layer.points);
    for (size_t t = 0; t < layer.points; ++t) {
      EXPECT_LE(band.min[t], band.q10[t]);
      EXPECT_LE(band.q10[t], band.mean[t] + 0.05f);
      EXPECT_LE(band.mean[t], band.q90[t] + 0.05f);
      EXPECT_LE(band.q90[t], band.max[t]);
    }
    EXPECT_EQ(c.labels[c.representative[k]], int(k));
  }
  EXPECT_EQ(std::accumulate(c.outliers.begin(), c.outliers.end(), uint64_t(0)),
            uint64_t(std::count_if(s.outlier_score.begin(), s.outlier_score.end(),
                                   [](float v) { return v >= analysis::kOutlierScoreThreshold && v < 1.0f; })) +
                0u);
  // A given k, deterministically.
  analysis::ClusterOptions two;
  two.clusters = 2;
  const auto c2 = analysis::cluster_polylines(set, f, s.outlier_score, two);
  EXPECT_EQ(c2.sizes.size(), 2u);
  EXPECT_EQ(c2.labels, analysis::cluster_polylines(set, f, s.outlier_score, two).labels);
}

// ---- The command line on a real recording ----

struct Result {
  int status;
  std::string out;
};

Result run(const std::string& command) {
  auto r = trainscope::testing::run_command(command);
  return {r.status, std::move(r.output)};
}

// 64 neurons of encoder.fc1 over 40 steps: two bundles, neuron 13 spikes at step 20, neuron 40 turns NaN at 30.
void write_sampling_run(const std::filesystem::path& dir) {
  const uint32_t neurons = 64;
  const auto m = ts::small_model_metadata(neurons);
  format::RunWriter writer(dir, m);
  for (int step = 0; step < 40; ++step) {
    format::Snapshot snap;
    snap.step = step;
    snap.scalars = {{"loss", 1.0 / (1 + step)}};
    format::LayerQuantityRecord r;
    r.layer_id = 2;
    r.quantity = format::Quantity::Activation;
    r.summary.numel = neurons;
    r.neuron_stats = format::statistic_bit(format::Statistic::Mean);
    r.neuron_count = neurons;
    r.neuron_values.resize(neurons);
    for (uint32_t n = 0; n < neurons; ++n) {
      const double x = step / 39.0;
      double v = n % 2 ? 1.0 - std::exp(-3 * x) : -0.5 + 0.2 * std::sin(6 * x);
      v += 0.01 * double(n % 7) + 0.005 * double((n * 13 + step * 7) % 5);
      if (n == 13 && step == 20) v = 4.0;
      if (n == 40 && step >= 30) v = std::numeric_limits<double>::quiet_NaN();
      r.neuron_values[n] = float(v);
    }
    snap.layers.push_back(std::move(r));
    writer.append(std::move(snap));
  }
  writer.close();
}

class SampleCli : public ::testing::Test {
 protected:
  void SetUp() override { write_sampling_run(dir_.path() / "run"); }
  std::string cli(const std::string& args) const {
    return std::string(TRAINSCOPE_CLI) + " sample " + (dir_.path() / "run").string() + " " + args;
  }
  ts::TempDir dir_{"sample-cli"};
};

void check_golden(const std::string& name, const std::string& actual) {
  const std::filesystem::path golden = std::filesystem::path(TRAINSCOPE_GOLDEN_DIR) / name;
  if (std::getenv("TRAINSCOPE_UPDATE_GOLDEN")) {
    std::ofstream(golden) << actual;
    return;
  }
  ASSERT_TRUE(std::filesystem::exists(golden)) << golden << " is missing; run with TRAINSCOPE_UPDATE_GOLDEN=1";
  std::ifstream in(golden);
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(actual, expected.str()) << "differs from " << golden
                                    << "\n(after an intended change: TRAINSCOPE_UPDATE_GOLDEN=1, then review the diff)";
}

TEST_F(SampleCli, JsonListsNeuronsInProgressiveOrderWithScores) {
  const auto r = run(cli("--layer encoder.fc1 --quantity activation --steps 0:39 --count 8 --json"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out.rfind("{\n  \"neurons\": [\n    {\n      \"neuron\": 40,\n      \"outlier_score\": 1\n", 0), 0u)
      << "NaN neuron first:\n"
      << r.out;
  EXPECT_NE(r.out.find("\"neuron\": 13,\n      \"outlier_score\": 0.9"), std::string::npos) << "spike kept:\n" << r.out;
  EXPECT_NE(r.out.find("\"non_finite_lines\": 1"), std::string::npos) << r.out;
  check_golden("sample_fc1.json", r.out);
  // The same again: deterministic.
  EXPECT_EQ(run(cli("--layer encoder.fc1 --quantity activation --steps 0:39 --count 8 --json")).out, r.out);
}

TEST_F(SampleCli, TextWithClusters) {
  const auto r = run(cli("--layer encoder.fc1 --quantity activation --count 6 --clusters 2 --seed 3"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("64 neurons"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NaN/Inf"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 clusters"), std::string::npos) << r.out;
  check_golden("sample_fc1_clusters.txt", r.out);
}

TEST_F(SampleCli, ErrorsNameTheArgument) {
  auto r = run(cli("--layer nope --quantity activation --count 5"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--layer: no layer named 'nope'"), std::string::npos) << r.out;
  r = run(cli("--layer encoder.fc1 --quantity activation"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--count"), std::string::npos) << r.out;
  r = run(cli("--layer encoder.fc1 --quantity bogus --count 5"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--quantity: unknown quantity 'bogus'"), std::string::npos) << r.out;
  r = run(cli("--layer encoder.fc1 --quantity weight --count 5"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("has no per-neuron weight mean"), std::string::npos) << r.out;
  r = run(cli("--layer encoder.fc1 --quantity activation --count 5 --range 3:1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--range"), std::string::npos) << r.out;
  r = run(std::string(TRAINSCOPE_CLI) + " sample /nonexistent/run --layer a --quantity activation --count 5");
  EXPECT_EQ(r.status, 1) << r.out;
}

}  // namespace
