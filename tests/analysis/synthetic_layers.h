// Synthetic layers of neuron time series with planted groups and planted outlier neurons, for the polyline
// sampling tests and benchmark. Header-only so the benchmark can use it too. Deterministic for a seed.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace trainscope::testing {

struct SyntheticLayer {
  size_t lines = 0, points = 0;
  std::vector<float> values;       // step-major: values[t * lines + line], as NeuronSeries stores them
  std::vector<int> group;          // per line: planted group, -1 for a planted outlier
  std::vector<uint32_t> outliers;  // planted outliers, ascending
};

inline uint64_t synthetic_hash(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline double synthetic_uniform(uint64_t key) {
  return double(synthetic_hash(key) >> 11) * 0x1.0p-53;
}
// Roughly normal (sum of four uniforms, scaled to unit variance): cheap enough for 200M points.
inline double synthetic_normal(uint64_t key) {
  double s = 0;
  for (uint64_t j = 0; j < 4; ++j) s += synthetic_uniform(key * 4 + j);
  return (s - 2.0) * 1.7320508075688772;
}

// The shape of planted group g at x in [0, 1]; groups sit apart so that a chart shows them as separate bundles.
inline double synthetic_group_shape(int g, double x, double phase) {
  switch (g % 4) {
    case 0: return 1.0 - std::exp(-4.0 * x);                // rising, levels off
    case 1: return 1.6 + 0.8 * std::exp(-3.0 * x);          // decaying from above
    case 2: return -1.2 + 0.3 * std::sin(8.0 * x + phase);  // oscillating below
    default: return 3.0 - 1.0 * x;                          // slow linear drift, high up
  }
}

// `outlier_fraction` of the lines are outliers of six kinds (a spike, a level shift, an exploding tail, an inverted
// shape, heavy noise, a flat dead line between the groups); `nan_lines` more turn NaN (or Inf) part way.
inline SyntheticLayer make_synthetic_layer(size_t lines, size_t points, int groups, double outlier_fraction,
                                           uint64_t seed, size_t nan_lines = 0) {
  SyntheticLayer layer;
  layer.lines = lines, layer.points = points;
  layer.values.resize(lines * points);
  layer.group.resize(lines);
  struct Params {
    int group, kind;  // kind -1 = inlier
    float amplitude, offset, phase, at, height;
  };
  std::vector<Params> p(lines);
  const size_t outlier_count = size_t(double(lines) * outlier_fraction + 0.5);
  // Outliers spread evenly over the neuron indices, with a seeded jitter.
  std::vector<uint8_t> is_outlier(lines, 0);
  for (size_t o = 0; o < outlier_count + nan_lines && lines; ++o) {
    size_t i =
        size_t((double(o) + synthetic_uniform(seed * 7 + o)) * double(lines) / double(outlier_count + nan_lines));
    i = std::min(i, lines - 1);
    while (is_outlier[i]) i = (i + 1) % lines;
    is_outlier[i] = o < outlier_count ? 1 : 2;
  }
  size_t kind_counter = 0;
  for (size_t i = 0; i < lines; ++i) {
    const uint64_t key = synthetic_hash(seed ^ (i * 0x100000001B3ull));
    Params& q = p[i];
    q.group = int(synthetic_hash(key + 1) % uint64_t(std::max(1, groups)));
    q.kind = is_outlier[i] == 1 ? int(kind_counter++ % 6) : is_outlier[i] == 2 ? 6 : -1;
    q.amplitude = float(1.0 + 0.08 * synthetic_normal(key + 2));
    q.offset = float(0.06 * synthetic_normal(key + 3));
    q.phase = float(0.3 * synthetic_normal(key + 4));
    q.at = float(0.15 + 0.7 * synthetic_uniform(key + 5));
    q.height = float(1.5 + 1.0 * synthetic_uniform(key + 6));
    layer.group[i] = q.kind >= 0 ? -1 : q.group;
    if (q.kind >= 0) layer.outliers.push_back(uint32_t(i));
  }
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (size_t t = 0; t < points; ++t) {
    const double x = points > 1 ? double(t) / double(points - 1) : 0.0;
    float* row = layer.values.data() + t * lines;
    for (size_t i = 0; i < lines; ++i) {
      const Params& q = p[i];
      const double noise = 0.02 * synthetic_normal(seed * 0x9E37 + t * lines + i);
      double v = q.offset + q.amplitude * synthetic_group_shape(q.group, x, q.phase) + noise;
      switch (q.kind) {
        case 0: v += std::abs(x - q.at) * double(points) < 1.5 ? q.height : 0.0; break;  // spike over ~3 steps
        case 1: v += x > q.at ? 0.8 * q.height : 0.0; break;                             // level shift
        case 2: v += x > q.at ? std::expm1(6.0 * (x - q.at)) : 0.0; break;               // exploding tail
        case 3: v = 0.8 - (v - 0.8); break;                                              // upside down
        case 4: v += 0.5 * synthetic_normal(seed * 0x51ED + t * lines + i); break;       // very noisy
        case 5: v = -2.2 + 0.3 * q.phase; break;                                         // dead, flat below all
        case 6: v = x > q.at ? (i % 2 ? nan : inf) : v; break;                           // turns NaN / Inf
        default: break;
      }
      row[i] = float(v);
    }
  }
  return layer;
}

}  // namespace trainscope::testing
