// Blue-noise sampling and clustering of a layer's neuron time series, as the layer view draws them: N polylines of
// T points on a chart. Drawing every line of a million-neuron layer is unreadable; a good subset is spread out (no
// two chosen lines run close together for long), keeps the overall shape (dense regions stay dense) and keeps the
// lines that behave unlike the rest (outliers, often the neurons that break training).
//
// How (ideas from multi-class blue noise, Wei 2010; outlier-biased blue noise, Yuan et al. 2021; void-and-cluster
// sampling of curves, Rapp et al. 2019):
//  - Each line is reduced to what the eye sees at chart resolution: the chart's columns are split into `buckets`
//    groups and each group keeps the line's minimum and maximum (the M4 idea without first/last), in chart-height
//    units after the chart's y-range normalisation. Two lines are as far apart as the RMS of these differences: lines
//    that run together over most of the width are close, a spike or a level shift anywhere makes a line far.
//  - Neighbours come once from a forest of random-projection trees plus one neighbours-of-neighbours round
//    (approximate k nearest neighbours); the lines are then renumbered in the first tree's leaf order, so lines close
//    on the chart are close in memory. The distance to the k-th neighbour is a line's local spacing.
//  - Outlier score in [0, 1]: the larger of a local term, 1 - reference / own spacing (the reference is the median
//    spacing or half Tukey's far-out fence of the spacings, whichever is larger: a long sparse tail of a skewed
//    layer is not all outliers, the lines set apart from it are), and a global term,
//    1 - 1.5 R / d with d the distance to the nearest k-means centre of the main bundles (centres holding >= 1% of the
//    lines) and R that bundle's 90th-percentile distance to its centre. The global term catches small tight groups
//    far from the bundles (50 dead neurons flat at one value are each other's neighbours: locally typical).
//  - Two classes (multi-class blue noise). Outliers (score >= kOutlierScoreThreshold) are all kept, ordered among
//    themselves by farthest-point selection weighted by score with each line's distance capped at its own spacing
//    (the most unusual line of each region first), and fill at most `outlier_share` of any prefix. Typical lines are
//    stratified by 64 k-means cells and the cells' orders interleaved in proportion to their populations, so every
//    prefix keeps the layer's density; within a cell, dart throwing in passes with a conflict radius at a shrinking
//    neighbour rank; the first pass's lines are themselves ordered by the same procedure, recursively (a hierarchy
//    of ever sparser samples, each level's neighbour lists derived from the finer level's, no new search), and small
//    sets by exact farthest-point selection. So every prefix of the order is a blue-noise sample of the whole.
//  - Lines holding a NaN or Inf come first, with score 1: they are where training broke.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace trainscope::format {
struct NeuronSeries;
}

namespace trainscope::analysis {

// N polylines of T points each; `values` must outlive the set.
struct PolylineSet {
  const float* values = nullptr;
  size_t lines = 0;   // N (neurons)
  size_t points = 0;  // T (steps)
  // values[point * lines + line] when step-major (how format::NeuronSeries stores them), else values[line * points
  // + point].
  bool step_major = true;

  float at(size_t line, size_t point) const {
    return step_major ? values[point * lines + line] : values[line * points + point];
  }
  static PolylineSet from(const format::NeuronSeries& series);
};

// How values map to the chart's height, as the view draws them.
enum class ValueRange {
  Extent,    // minimum .. maximum of all finite values
  Quantile,  // the `quantile` .. 1 - `quantile` quantiles of the finite values (robust: one exploding line does
             // not squash the rest); values beyond are clamped a chart height past the edge
  Fixed,     // `low` .. `high` as given (the view's current zoom)
};

struct ChartOptions {
  ValueRange range = ValueRange::Quantile;
  double quantile = 0.001;
  double low = 0, high = 1;             // for ValueRange::Fixed
  int width_px = 200, height_px = 100;  // the chart's resolution: a pixel is the smallest visible difference
};

// Each line reduced to 2 * buckets numbers (per bucket of columns: min and max) in chart-height units.
struct PolylineFeatures {
  size_t lines = 0;
  size_t dims = 0;
  std::vector<float> values;    // values[line * dims + d]
  std::vector<uint8_t> finite;  // 0 when the line has a NaN or Inf point
  double low = 0, high = 1;     // the value range mapped to chart heights 0 .. 1
  double pixel = 0.01;          // one pixel in chart-height units

  const float* line(size_t i) const { return values.data() + i * dims; }
};

PolylineFeatures reduce_polylines(const PolylineSet& set, const ChartOptions& chart = {}, int buckets = 8,
                                  int threads = 0);

// The sampler's distance between two reduced lines: RMS of the envelope differences, in chart heights.
double polyline_distance(const PolylineFeatures& features, size_t a, size_t b);
// Reference distance at full resolution: mean over columns of the vertical distance in chart heights (values
// clamped as the features are). For tests and evaluation; O(T).
double chart_distance(const PolylineSet& set, const PolylineFeatures& features, size_t a, size_t b);

struct SamplerOptions {
  ChartOptions chart;
  size_t count = 0;           // lines to order; 0 = all of them (the whole progressive order)
  uint64_t seed = 1;          // the result depends only on the input, the options and this seed (not on `threads`)
  int buckets = 8;            // chart columns grouped into this many (min, max) pairs
  int neighbours = 10;        // k: local spacing = distance to the k-th nearest line
  double outlier_bias = 4.0;  // > 0: outliers are a class of their own, all kept (0: ordered like typical lines)
  // Lines scoring >= kOutlierScoreThreshold are all kept but fill at most this share of any prefix of the order (as
  // long as typical lines remain): every outlier of a 5% sample is kept when at most 1% of the lines are outliers,
  // and a short prefix still shows the layer's shape.
  double outlier_share = 0.2;
  int trees = 2;    // random-projection trees for the (single) neighbour search
  int threads = 0;  // 0 = all cores
};

struct PolylineSample {
  std::vector<uint32_t> order;       // chosen lines, progressive: every prefix is a good sample
  std::vector<float> outlier_score;  // per line, all N: 0 = typical, 1 = unlike any other (or NaN/Inf)
  std::vector<float> spacing;        // per line: distance to the k-th neighbour in chart heights (Inf if NaN/Inf)
  size_t non_finite_lines = 0;       // how many lines hold a NaN or Inf point (they lead `order`)
  double low = 0, high = 1;          // value range used for the chart normalisation
};

class BlueNoisePolylineSampler {
 public:
  explicit BlueNoisePolylineSampler(SamplerOptions options = {}) : options_(options) {}
  PolylineSample sample(const PolylineSet& set) const;
  // With the lines already reduced (to share them with clustering).
  PolylineSample sample(const PolylineFeatures& features) const;
  const SamplerOptions& options() const { return options_; }

 private:
  SamplerOptions options_;
};

// Lines with an outlier score at or above this are drawn as lines rather than folded into a cluster band.
inline constexpr float kOutlierScoreThreshold = 0.5f;

struct ClusterOptions {
  int clusters = 0;  // 0 = choose 1..max_clusters by the silhouette of a subsample
  int max_clusters = 8;
  uint64_t seed = 1;
  int max_iterations = 30;
  int threads = 0;
};

// Per-step band of one cluster, in the recorded values' units (for the view to draw as a band).
struct ClusterBand {
  std::vector<float> mean, min, max, q10, q90;  // one per point; q10/q90 from up to 1024 members
};

struct PolylineClustering {
  std::vector<int32_t> labels;           // per line; -1 for lines holding a NaN or Inf
  std::vector<uint64_t> sizes;           // per cluster, largest first
  std::vector<uint32_t> representative;  // per cluster: the member nearest to its centre
  std::vector<ClusterBand> bands;        // per cluster
  std::vector<uint64_t> outliers;        // per cluster: members with outlier score >= kOutlierScoreThreshold
};

// k-means (k-means++ seeding from `seed`) on the reduced lines. Lines scored as outliers do not move the centres
// but are labelled with the nearest cluster. `outlier_score` may be empty.
PolylineClustering cluster_polylines(const PolylineSet& set, const PolylineFeatures& features,
                                     const std::vector<float>& outlier_score, const ClusterOptions& options = {});

}  // namespace trainscope::analysis
