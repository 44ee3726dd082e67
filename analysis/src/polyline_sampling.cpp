#include <trainscope/analysis/polyline_sampling.h>
#include <trainscope/format/run_reader.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <thread>
#include <utility>

namespace trainscope::analysis {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

// SplitMix64: the same numbers on every platform and standard library, so a seed means the same sample everywhere.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  size_t below(size_t n) { return size_t(next() % n); }
  double gaussian() {
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }

 private:
  uint64_t state_;
};

uint64_t derive_seed(uint64_t seed, uint64_t salt) {
  Random r(seed ^ (salt * 0xD1B54A32D192ED03ull));
  return r.next();
}

int thread_count(int requested) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
}

// Runs fn(block, begin, end) over [0, n) in blocks of `block` items, spread over threads. Any reduction is done per
// block and combined in block order afterwards, so results never depend on the thread count.
template <class Fn>
void parallel_blocks(size_t n, size_t block, int threads, Fn&& fn) {
  if (n == 0) return;
  const size_t blocks = (n + block - 1) / block;
  if (threads <= 1 || blocks <= 1) {
    for (size_t b = 0; b < blocks; ++b) fn(b, b * block, std::min(n, (b + 1) * block));
    return;
  }
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (;;) {
      const size_t b = next.fetch_add(1);
      if (b >= blocks) return;
      fn(b, b * block, std::min(n, (b + 1) * block));
    }
  };
  std::vector<std::thread> pool;
  const size_t extra = std::min(size_t(threads), blocks) - 1;
  for (size_t t = 0; t < extra; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

// Squared L2 distance; four partial sums so the compiler can keep them in one vector register.
inline float distance2(const float* a, const float* b, size_t dims) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t d = 0;
  for (; d + 4 <= dims; d += 4) {
    const float e0 = a[d] - b[d], e1 = a[d + 1] - b[d + 1], e2 = a[d + 2] - b[d + 2], e3 = a[d + 3] - b[d + 3];
    s0 += e0 * e0, s1 += e1 * e1, s2 += e2 * e2, s3 += e3 * e3;
  }
  for (; d < dims; ++d) s0 += (a[d] - b[d]) * (a[d] - b[d]);
  return (s0 + s1) + (s2 + s3);
}

std::pair<double, double> value_range(const PolylineSet& set, const ChartOptions& chart, int threads) {
  double lo = 0, hi = 1;
  const size_t total = set.lines * set.points;
  if (chart.range == ValueRange::Fixed) {
    lo = std::min(chart.low, chart.high), hi = std::max(chart.low, chart.high);
  } else if (chart.range == ValueRange::Extent) {
    const size_t block = size_t(1) << 16;
    std::vector<std::pair<float, float>> partial((total + block - 1) / block, {kInf, -kInf});
    parallel_blocks(total, block, threads, [&](size_t b, size_t begin, size_t end) {
      float mn = kInf, mx = -kInf;
      for (size_t i = begin; i < end; ++i) {
        const float v = set.values[i];
        if (std::isfinite(v)) mn = std::min(mn, v), mx = std::max(mx, v);
      }
      partial[b] = {mn, mx};
    });
    float mn = kInf, mx = -kInf;
    for (const auto& [a, b] : partial) mn = std::min(mn, a), mx = std::max(mx, b);
    if (mn <= mx) lo = mn, hi = mx;
  } else {
    // A strided sample of 256k values pins the quantiles to well under a pixel.
    const size_t stride = std::max<size_t>(1, total / (size_t(1) << 18));
    std::vector<float> sample;
    sample.reserve(total / stride + 1);
    for (size_t i = stride / 2; i < total; i += stride)
      if (std::isfinite(set.values[i])) sample.push_back(set.values[i]);
    if (!sample.empty()) {
      const double q = std::clamp(chart.quantile, 0.0, 0.5);
      const size_t a = size_t(q * double(sample.size() - 1));
      const size_t b = sample.size() - 1 - a;
      std::nth_element(sample.begin(), sample.begin() + std::ptrdiff_t(a), sample.end());
      lo = sample[a];
      std::nth_element(sample.begin(), sample.begin() + std::ptrdiff_t(b), sample.end());
      hi = sample[b];
    }
  }
  if (!(hi > lo)) {  // constant lines sit in the middle of the chart
    const double half = lo == 0 ? 0.5 : 0.5 * std::abs(lo);
    lo -= half, hi += half;
  }
  return {lo, hi};
}

// ---- Approximate nearest neighbours: a forest of random-projection trees, all pairs within each leaf. ----

struct Neighbours {
  size_t n = 0, m = 0;
  std::vector<uint32_t> lines;  // [i]: the line (global index) of local index i
  std::vector<uint32_t> ids;    // [i * m + r], ascending distance, kNone past the end
  std::vector<float> d2;        // squared L2 in feature space
  std::vector<float> spacing;   // RMS distance to the k-th neighbour, floored

  const uint32_t* ids_of(size_t i) const { return ids.data() + i * m; }
  const float* d2_of(size_t i) const { return d2.data() + i * m; }
};

// Keeps the m nearest, ordered by (distance, id) so that the result never depends on the order of offers.
inline void offer(uint32_t* ids, float* d2, size_t m, uint32_t id, float d) {
  if (d > d2[m - 1] || (d == d2[m - 1] && id >= ids[m - 1])) return;
  for (size_t r = 0; r < m && ids[r] != kNone; ++r)
    if (ids[r] == id) return;
  size_t pos = m - 1;
  while (pos > 0 && (d2[pos - 1] > d || (d2[pos - 1] == d && ids[pos - 1] > id))) {
    ids[pos] = ids[pos - 1], d2[pos] = d2[pos - 1];
    --pos;
  }
  ids[pos] = id, d2[pos] = d;
}

using Leaf = std::pair<uint32_t, uint32_t>;

// A random-projection tree: the lines' rows moved into leaf order, so that a leaf is a contiguous block of rows.
struct Tree {
  std::vector<uint32_t> perm;  // [p]: the line at position p
  std::vector<float> rows;     // [p * dims + d]: the features of line perm[p]
  std::vector<Leaf> leaves;    // ranges of positions, left to right
};

// Splits at the median of the projection on the direction between two random members (as RP-trees / Annoy do),
// down to leaves of at most `leaf_size`. Each split partitions the node's rows in place (two cursors walking in from
// the ends), so every pass reads memory in order: a tree over a million lines (64 MB of features) then costs little
// more per line than one over a hundred thousand that fits in the cache, where gathering rows through a permutation
// would miss the cache at every level.
Tree build_tree(const float* features, size_t n, size_t dims, uint64_t seed, size_t leaf_size) {
  Random rng(seed);
  Tree tree;
  tree.perm.resize(n);
  std::iota(tree.perm.begin(), tree.perm.end(), 0u);
  tree.rows.assign(features, features + n * dims);
  float* rows = tree.rows.data();
  std::vector<float> key(n), scratch, direction(dims), swap_row(dims);
  std::vector<uint8_t> left(n);
  std::vector<Leaf> stack{{0u, uint32_t(n)}};
  while (!stack.empty()) {
    const auto [b, e] = stack.back();
    stack.pop_back();
    if (e - b <= leaf_size) {
      tree.leaves.push_back({b, e});
      continue;
    }
    const float* p = rows + size_t(b + rng.below(e - b)) * dims;
    const float* q = rows + size_t(b + rng.below(e - b)) * dims;
    float norm = 0;
    for (size_t d = 0; d < dims; ++d) direction[d] = p[d] - q[d], norm += direction[d] * direction[d];
    if (norm < 1e-12f)
      for (size_t d = 0; d < dims; ++d) direction[d] = float(rng.gaussian());
    for (uint32_t j = b; j < e; ++j) {
      const float* x = rows + size_t(j) * dims;
      float s = 0;
      for (size_t d = 0; d < dims; ++d) s += x[d] * direction[d];
      key[j] = s;
    }
    // The median key; exactly half the rows go left, ties split in row order.
    const uint32_t mid = b + (e - b) / 2;
    scratch.assign(key.begin() + b, key.begin() + e);
    std::nth_element(scratch.begin(), scratch.begin() + (mid - b), scratch.end());
    const float pivot = scratch[mid - b];
    size_t equal_left = mid - b;
    for (uint32_t j = b; j < e; ++j) equal_left -= key[j] < pivot;
    for (uint32_t j = b; j < e; ++j) {
      left[j] = key[j] < pivot || (key[j] == pivot && equal_left > 0);
      if (key[j] == pivot && left[j]) --equal_left;
    }
    for (uint32_t lo = b, hi = e - 1;;) {
      while (lo < mid && left[lo]) ++lo;
      while (hi >= mid && !left[hi]) --hi;
      if (lo >= mid || hi < mid) break;  // both halves hold only their own rows
      std::swap(tree.perm[lo], tree.perm[hi]);
      std::swap(left[lo], left[hi]);
      float* a = rows + size_t(lo) * dims;
      float* c = rows + size_t(hi) * dims;
      std::copy_n(a, dims, swap_row.data());
      std::copy_n(c, dims, a);
      std::copy_n(swap_row.data(), dims, c);
    }
    stack.push_back({mid, e});
    stack.push_back({b, mid});
  }
  return tree;
}

// Spacing of every line: RMS distance to its k-th neighbour (or the farthest it has), never below a quarter pixel.
void set_spacing(Neighbours& nb, const PolylineFeatures& f, size_t k) {
  const size_t m = nb.m;
  const float floor = float(0.25 * f.pixel);
  const float inv_dims = f.dims ? 1.0f / float(f.dims) : 1.0f;
  nb.spacing.assign(nb.n, floor);
  for (size_t i = 0; i < nb.n; ++i) {
    size_t r = std::min(k, m) - 1;
    while (r > 0 && nb.ids[i * m + r] == kNone) --r;
    const float d2 = nb.ids[i * m + r] == kNone ? 0.0f : nb.d2[i * m + r];
    nb.spacing[i] = std::max(floor, std::sqrt(d2 * inv_dims));
  }
}

constexpr size_t kExactNeighbours = 512;  // sets this small get exact neighbour lists

// Neighbours of the given lines among themselves. Local index i is the line nb.lines[i] (a permutation of `ids`).
// `features_out` (optional) receives the lines' features in local order.
Neighbours find_neighbours(const PolylineFeatures& f, const std::vector<uint32_t>& ids, size_t k, int trees,
                           uint64_t seed, int threads, std::vector<float>* features_out = nullptr) {
  Neighbours nb;
  const size_t n = ids.size(), dims = f.dims;
  nb.n = n;
  nb.m = std::max<size_t>(1, std::min<size_t>(std::max<size_t>(k + 6, 16), n > 1 ? n - 1 : 1));
  nb.ids.assign(n * nb.m, kNone);
  nb.d2.assign(n * nb.m, kInf);
  nb.lines = ids;
  if (n == 0) return nb;
  std::vector<float> x(n * dims);  // the lines of this level, contiguous
  for (size_t i = 0; i < n; ++i) std::copy_n(f.line(ids[i]), dims, x.data() + i * dims);
  const size_t m = nb.m;

  if (n <= kExactNeighbours) {
    parallel_blocks(n, 64, threads, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        for (size_t j = 0; j < n; ++j)
          if (j != i) offer(&nb.ids[i * m], &nb.d2[i * m], m, uint32_t(j), distance2(&x[i * dims], &x[j * dims], dims));
    });
  } else {
    const size_t leaf_size = 32;
    // The trees are independent (each its own seed, over the lines in the given order): built side by side.
    std::vector<Tree> forest(size_t(std::max(1, trees)));
    parallel_blocks(forest.size(), 1, threads, [&](size_t t, size_t, size_t) {
      forest[t] = build_tree(x.data(), n, dims, derive_seed(seed, t), leaf_size);
    });
    // Locality: the lines are renumbered in the first tree's leaf order (its rows are the features in that order),
    // so that lines close on the chart are close in memory. Every later step (the neighbour lists, the passes) then
    // touches nearby rows. The other trees' permutations are renumbered to match.
    std::vector<uint32_t> renumbered(n);
    for (size_t i = 0; i < n; ++i) nb.lines[i] = ids[forest[0].perm[i]], renumbered[forest[0].perm[i]] = uint32_t(i);
    x = std::move(forest[0].rows);
    std::iota(forest[0].perm.begin(), forest[0].perm.end(), 0u);
    for (size_t t = 1; t < forest.size(); ++t)
      for (uint32_t& line : forest[t].perm) line = renumbered[line];
    for (size_t t = 0; t < forest.size(); ++t) {
      // Within one tree every line is in exactly one leaf: leaves never touch the same neighbour list. Distances are
      // taken between the tree's own rows, contiguous within a leaf.
      const Tree& tree = forest[t];
      const float* rows = t == 0 ? x.data() : tree.rows.data();
      parallel_blocks(tree.leaves.size(), 256, threads, [&](size_t, size_t begin, size_t end) {
        for (size_t l = begin; l < end; ++l) {
          const auto [b, e] = tree.leaves[l];
          for (uint32_t p = b; p < e; ++p) {
            const uint32_t i = tree.perm[p];
            for (uint32_t q = p + 1; q < e; ++q) {
              const uint32_t j = tree.perm[q];
              const float d = distance2(rows + size_t(p) * dims, rows + size_t(q) * dims, dims);
              offer(&nb.ids[size_t(i) * m], &nb.d2[size_t(i) * m], m, j, d);
              offer(&nb.ids[size_t(j) * m], &nb.d2[size_t(j) * m], m, i, d);
            }
          }
        }
      });
      if (t > 0) forest[t] = Tree{};  // its rows are no longer needed
    }
    // One round of "neighbours of neighbours" (NN-descent) repairs lines cut off from theirs by leaf borders.
    const std::vector<uint32_t> snapshot = nb.ids;
    const size_t fan = std::min<size_t>(m, 4);
    parallel_blocks(n, 1024, threads, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        for (size_t r = 0; r < fan; ++r) {
          const uint32_t j = snapshot[i * m + r];
          if (j == kNone) break;
          for (size_t s = 0; s < fan; ++s) {
            const uint32_t l = snapshot[size_t(j) * m + s];
            if (l == kNone) break;
            if (l == i) continue;
            offer(&nb.ids[i * m], &nb.d2[i * m], m, l, distance2(&x[i * dims], &x[size_t(l) * dims], dims));
          }
        }
    });
  }
  set_spacing(nb, f, k);
  if (features_out) *features_out = std::move(x);
  return nb;
}

// The neighbour lists of a subset of the lines (`keep`: local indices of `parent`, ascending), reusing the parent's
// lists instead of searching again: the parent's neighbours that are in the subset are kept and, with `two_hop`,
// the subset's members among the neighbours' neighbours are offered too, which finds the neighbours of a sparse
// subset (a coarser level of the hierarchy). Linear in the subset's size; keeps the parent's memory order.
// `local` is scratch of parent.n entries, all kNone, and is left so (one allocation for many subsets).
Neighbours subgraph(const PolylineFeatures& f, const Neighbours& parent, const std::vector<uint32_t>& keep, size_t k,
                    bool two_hop, int threads, std::vector<uint32_t>& local) {
  Neighbours nb;
  const size_t n = keep.size(), m = parent.m, dims = f.dims;
  nb.n = n, nb.m = m;
  nb.lines.resize(n);
  local.resize(parent.n, kNone);
  for (size_t j = 0; j < n; ++j) local[keep[j]] = uint32_t(j), nb.lines[j] = parent.lines[keep[j]];
  nb.ids.assign(n * m, kNone);
  nb.d2.assign(n * m, kInf);
  parallel_blocks(n, 1024, threads, [&](size_t, size_t begin, size_t end) {
    for (size_t j = begin; j < end; ++j) {
      uint32_t* ids = &nb.ids[j * m];
      float* d2 = &nb.d2[j * m];
      const uint32_t* pn = parent.ids_of(keep[j]);
      const float* pd = parent.d2_of(keep[j]);
      for (size_t r = 0; r < m && pn[r] != kNone; ++r)
        if (local[pn[r]] != kNone) offer(ids, d2, m, local[pn[r]], pd[r]);
      if (!two_hop) continue;
      const float* x = f.line(nb.lines[j]);
      for (size_t r = 0; r < m && pn[r] != kNone; ++r) {
        const uint32_t* qn = parent.ids_of(pn[r]);
        for (size_t q = 0; q < m && qn[q] != kNone; ++q) {
          const uint32_t l = local[qn[q]];
          if (l == kNone || l == j) continue;
          offer(ids, d2, m, l, distance2(x, f.line(nb.lines[l]), dims));
        }
      }
    }
  });
  for (uint32_t p : keep) local[p] = kNone;
  set_spacing(nb, f, k);
  return nb;
}

// ---- Progressive blue-noise order ----

struct Context {
  const PolylineFeatures& f;
  const std::vector<float>& bias;  // per line (global index): 1 + outlier_bias * score
  const SamplerOptions& options;
  int threads;
};

constexpr double kRankShrink = 0.7;  // neighbour rank of the conflict radius, from pass to pass
constexpr size_t kExactOrder = 64;   // sets this small are ordered by exact farthest-point selection

// Conflict radius of every line for one pass: the distance to its r-th nearest neighbour. A radius at a neighbour
// rank (rather than a multiple of one spacing) thins every region to about the same fraction whatever its density
// and its intrinsic dimension, so the sample keeps the shape of the whole. The radius is capped at twice the median:
// a line in a sparse region only conflicts with lines about as close as typical neighbours are. (Outliers are not
// ordered here: they are a class of their own, see BlueNoisePolylineSampler::sample.)
std::vector<float> pass_radius(const Context& cx, const Neighbours& nb, size_t rank) {
  const size_t n = nb.n, m = nb.m;
  const float floor = float(0.25 * cx.f.pixel), inv_dims = 1.0f / float(cx.f.dims ? cx.f.dims : 1);
  std::vector<float> rad(n);
  for (size_t i = 0; i < n; ++i) {
    size_t q = std::min(rank, m) - 1;
    while (q > 0 && nb.ids_of(i)[q] == kNone) --q;
    const float d2 = nb.ids_of(i)[q] == kNone ? 0.0f : nb.d2_of(i)[q];
    rad[i] = std::max(floor, std::sqrt(d2 * inv_dims));
  }
  if (n == 0) return rad;
  std::vector<float> sorted = rad;
  std::nth_element(sorted.begin(), sorted.begin() + std::ptrdiff_t(n / 2), sorted.end());
  const float cap = 2.0f * sorted[n / 2];
  for (float& r : rad) r = std::min(r, cap);
  return rad;
}

// Farthest-point order for tiny sets: the next line is the one farthest (in conflict radii, weighted by its bias)
// from every line taken so far. Exact, O(n^2).
std::vector<uint32_t> farthest_point_order(const Context& cx, const Neighbours& nb, size_t limit, uint64_t seed) {
  const std::vector<uint32_t>& ids = nb.lines;
  const size_t n = ids.size(), dims = cx.f.dims;
  std::vector<uint32_t> out;
  if (n == 0) return out;
  const std::vector<float> rad = pass_radius(cx, nb, size_t(std::max(1, cx.options.neighbours)));
  Random rng(seed);
  std::vector<double> tiebreak(n);
  for (auto& t : tiebreak) t = rng.uniform();
  std::vector<float> gap(n, kInf);
  std::vector<uint8_t> taken(n, 0);
  const float inv_dims = dims ? 1.0f / float(dims) : 1.0f;
  limit = std::min(limit, n);
  out.reserve(limit);
  while (out.size() < limit) {
    size_t best = kNone;
    float best_key = -1;
    for (size_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      const float b = cx.bias[ids[i]];
      const float key = gap[i] == kInf ? kInf : gap[i] * b;
      if (best == kNone || key > best_key ||
          (key == best_key && (b > cx.bias[ids[best]] || (b == cx.bias[ids[best]] && tiebreak[i] > tiebreak[best])))) {
        best = i, best_key = key;
      }
    }
    taken[best] = 1;
    out.push_back(uint32_t(best));
    const float* p = cx.f.line(ids[best]);
    for (size_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      const float d = std::sqrt(distance2(p, cx.f.line(ids[i]), dims) * inv_dims);
      gap[i] = std::min(gap[i], d / std::min(rad[i], rad[best]));
    }
  }
  return out;
}

// Orders (a prefix of) the lines of `nb`; returns local indices of `nb`.
std::vector<uint32_t> progressive_order(const Context& cx, const Neighbours& nb, size_t limit, uint64_t seed) {
  const std::vector<uint32_t>& ids = nb.lines;
  const size_t n = ids.size();
  limit = std::min(limit, n);
  if (n <= kExactOrder) return farthest_point_order(cx, nb, limit, seed);

  // Visiting order: a random permutation weighted by bias (Efraimidis-Spirakis keys): outliers tend to come first.
  Random rng(derive_seed(seed, 1));
  std::vector<std::pair<double, uint32_t>> keyed(n);
  for (size_t i = 0; i < n; ++i) keyed[i] = {std::log(1.0 - rng.uniform()) / cx.bias[ids[i]], uint32_t(i)};
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<uint32_t> visit(n);
  for (size_t i = 0; i < n; ++i) visit[i] = keyed[i].second;
  keyed = {};

  const size_t m = nb.m;
  const float inv_dims = 1.0f / float(cx.f.dims ? cx.f.dims : 1);
  std::vector<uint8_t> accepted(n, 0);
  std::vector<float> block(n);  // per pass: nearest accepted line found through the reverse neighbour lists
  std::vector<uint32_t> out;
  std::vector<float> rad;
  // Distance to the r-th neighbour of i over the pair's conflict radius; < 1 / bias means conflict.
  auto ratio = [&](size_t i, size_t r) {
    return std::sqrt(nb.d2_of(i)[r] * inv_dims) / std::min(rad[i], rad[nb.ids_of(i)[r]]);
  };
  auto note = [&](size_t i) {  // i accepted: its neighbours learn how close it is
    for (size_t r = 0; r < m && nb.ids_of(i)[r] != kNone; ++r) {
      float& b = block[nb.ids_of(i)[r]];
      b = std::min(b, ratio(i, r));
    }
  };
  auto gap = [&](size_t i) {
    float g = block[i];
    for (size_t r = 0; r < m && nb.ids_of(i)[r] != kNone; ++r)
      if (accepted[nb.ids_of(i)[r]]) g = std::min(g, ratio(i, r));
    return g * cx.bias[ids[i]];
  };
  auto pass = [&](size_t rank, size_t stop) {
    rad = pass_radius(cx, nb, rank);
    std::fill(block.begin(), block.end(), kInf);
    for (uint32_t a : out) note(a);
    for (uint32_t i : visit) {
      if (out.size() >= stop) return;
      if (accepted[i] || gap(i) < 1.0f) continue;
      accepted[i] = 1;
      out.push_back(i);
      note(i);
    }
  };

  // The first pass (the widest radius the neighbour lists hold) gives a sparser blue-noise set; order it
  // recursively, then go on from it with ever smaller radii.
  const size_t top = std::max<size_t>(1, m - 1);
  pass(top, n);
  std::vector<uint32_t> coarse = std::move(out);
  if (coarse.size() > n / 2) coarse.resize(n / 4);
  // The coarse level's neighbour lists come from this level's (no new search): in memory order, through the
  // neighbours' neighbours. Small levels are searched exactly, which costs no more.
  std::sort(coarse.begin(), coarse.end());
  std::vector<uint32_t> coarse_order;
  {
    const size_t k = size_t(std::max(1, cx.options.neighbours));
    Neighbours coarse_nb;
    if (coarse.size() <= kExactNeighbours) {  // exact search keeps the given order: local j is coarse[j]
      std::vector<uint32_t> coarse_ids(coarse.size());
      for (size_t i = 0; i < coarse.size(); ++i) coarse_ids[i] = ids[coarse[i]];
      coarse_nb = find_neighbours(cx.f, coarse_ids, k, cx.options.trees, derive_seed(seed, 2), cx.threads);
    } else {
      std::vector<uint32_t> local;
      coarse_nb = subgraph(cx.f, nb, coarse, k, true, cx.threads, local);
    }
    coarse_order = progressive_order(cx, coarse_nb, limit, derive_seed(seed, 3));
  }
  std::fill(accepted.begin(), accepted.end(), 0);
  out.clear();
  out.reserve(limit);
  for (uint32_t c : coarse_order) accepted[coarse[c]] = 1, out.push_back(coarse[c]);
  if (out.size() >= limit) {
    out.resize(limit);
    return out;
  }
  for (size_t rank = top; rank > 1;) {
    rank = std::min(rank - 1, size_t(double(rank) * kRankShrink));
    pass(std::max<size_t>(1, rank), limit);
    if (out.size() >= limit) return out;
  }
  // The rest, emptiest surroundings first.
  rad = pass_radius(cx, nb, 1);
  std::fill(block.begin(), block.end(), kInf);
  for (uint32_t a : out) note(a);
  std::vector<std::pair<float, uint32_t>> rest;
  for (size_t v = 0; v < n; ++v)
    if (!accepted[visit[v]]) rest.push_back({gap(visit[v]), uint32_t(v)});
  std::stable_sort(rest.begin(), rest.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& r : rest) {
    if (out.size() >= limit) break;
    out.push_back(visit[r.second]);
  }
  return out;
}

// ---- k-means (clustering, and the global outlier term) ----

struct KMeans {
  size_t k = 0, dims = 0;
  std::vector<float> centres;  // [c * dims + d]
  size_t nearest(const float* x, float* d2_out = nullptr) const {
    size_t best = 0;
    float best_d = kInf;
    for (size_t c = 0; c < k; ++c) {
      const float d = distance2(x, &centres[c * dims], dims);
      if (d < best_d) best_d = d, best = c;
    }
    if (d2_out) *d2_out = best_d;
    return best;
  }
};

// k-means++ seeding then Lloyd iterations over `ids`. Sums per fixed block, combined in block order: deterministic.
KMeans fit_kmeans(const PolylineFeatures& f, const std::vector<uint32_t>& ids, size_t k, uint64_t seed, int iterations,
                  int threads, const KMeans* start = nullptr) {
  const size_t dims = f.dims, n = ids.size();
  KMeans km;
  km.k = std::min(k, n);
  km.dims = dims;
  if (start) {
    km = *start;
  } else {
    Random rng(seed);
    km.centres.resize(km.k * dims);
    std::vector<float> best(n, kInf);
    size_t pick = rng.below(n);
    for (size_t c = 0; c < km.k; ++c) {
      std::copy_n(f.line(ids[pick]), dims, &km.centres[c * dims]);
      double total = 0;
      for (size_t i = 0; i < n; ++i) {
        best[i] = std::min(best[i], distance2(f.line(ids[i]), &km.centres[c * dims], dims));
        total += best[i];
      }
      if (total <= 0) {  // fewer distinct lines than clusters
        km.k = c + 1;
        km.centres.resize(km.k * dims);
        break;
      }
      double target = rng.uniform() * total;
      pick = n - 1;
      for (size_t i = 0; i < n; ++i) {
        target -= best[i];
        if (target < 0) {
          pick = i;
          break;
        }
      }
    }
  }
  const size_t block = 8192, blocks = (n + block - 1) / block;
  std::vector<double> sums(blocks * km.k * dims);
  std::vector<uint64_t> counts(blocks * km.k);
  std::vector<uint32_t> label(n, kNone);
  for (int it = 0; it < iterations; ++it) {
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    std::atomic<bool> changed{false};
    parallel_blocks(n, block, threads, [&](size_t b, size_t begin, size_t end) {
      bool moved = false;
      for (size_t i = begin; i < end; ++i) {
        const float* x = f.line(ids[i]);
        const uint32_t c = uint32_t(km.nearest(x));
        moved |= c != label[i];
        label[i] = c;
        ++counts[b * km.k + c];
        double* s = &sums[(b * km.k + c) * dims];
        for (size_t d = 0; d < dims; ++d) s[d] += x[d];
      }
      if (moved) changed = true;
    });
    if (!changed && it > 0) break;
    for (size_t c = 0; c < km.k; ++c) {
      uint64_t count = 0;
      std::vector<double> s(dims, 0.0);
      for (size_t b = 0; b < blocks; ++b) {
        count += counts[b * km.k + c];
        for (size_t d = 0; d < dims; ++d) s[d] += sums[(b * km.k + c) * dims + d];
      }
      if (count)  // an empty cluster keeps its centre
        for (size_t d = 0; d < dims; ++d) km.centres[c * dims + d] = float(s[d] / double(count));
    }
  }
  return km;
}

// ---- Outliers ----

constexpr size_t kGlobalCentres = 8;  // k-means centres for the global outlier term
constexpr size_t kGlobalSubsample = 4096;
constexpr size_t kSpreadPrefix = 256;  // prefixes this short pick their strata for spread
constexpr double kSpreadSlack = 0.25;  // ... among the strata within this many lines of the furthest behind
constexpr size_t kStrata = 64;         // finer k-means cells: strata of the typical lines' order
constexpr double kMajorShare = 0.01;   // centres holding less than this share of the lines are not bundles
constexpr float kGlobalReach = 1.5f;   // score 0.5 at three times a bundle's median distance to its centre
constexpr size_t kOutlierExactOrder = 2048;

// The global outlier term of every line (indexed like `ids`): how far it lies from the main bundles. The local
// term (spacing to the k-th neighbour) misses a small tight group of lines far from everything else (say 50 dead
// neurons flat at the same value): they are each other's neighbours. Here k-means centres are fitted on a
// subsample; centres holding under 1% of it are dropped (a small far group owns one: it is not a bundle); a line's
// term is 1 - 1.5 R_c / d(line, c), with c the remaining centre nearest in units of R_c, the median distance of the
// subsample's members of c to it. Linear in N.
// `cell` receives every line's stratum: the nearest of kStrata finer k-means centres (for the typical order).
std::vector<float> global_outlier_term(const PolylineFeatures& f, const std::vector<uint32_t>& ids, uint64_t seed,
                                       int threads, std::vector<uint32_t>& cell) {
  const size_t n = ids.size(), dims = f.dims;
  std::vector<float> term(n, 0.0f);
  cell.assign(n, 0);
  if (n < 8 * kGlobalCentres || dims == 0) return term;  // too few lines to tell bundles: the local term decides
  std::vector<uint32_t> sub;
  const size_t count = std::min(n, kGlobalSubsample);
  sub.reserve(count);
  for (size_t i = 0; i < count; ++i) sub.push_back(ids[i * n / count]);
  std::sort(sub.begin(), sub.end());
  const KMeans km = fit_kmeans(f, sub, kGlobalCentres, seed, 15, threads);
  const KMeans strata = fit_kmeans(f, sub, kStrata, derive_seed(seed, 1), 10, threads);
  std::vector<size_t> members(km.k, 0);
  for (uint32_t i : sub) ++members[km.nearest(f.line(i))];
  std::vector<uint8_t> major(km.k, 0);
  size_t majors = 0;
  for (size_t c = 0; c < km.k; ++c) majors += major[c] = double(members[c]) >= kMajorShare * double(sub.size());
  if (majors == 0) major[size_t(std::max_element(members.begin(), members.end()) - members.begin())] = 1;
  // Nearest bundle centre of a line, by plain distance.
  auto nearest_major = [&](const float* x, float& d2) {
    size_t best = kNone;
    d2 = kInf;
    for (size_t c = 0; c < km.k; ++c) {
      if (!major[c]) continue;
      const float d = distance2(x, &km.centres[c * dims], dims);
      if (d < d2) d2 = d, best = c;
    }
    return best;
  };
  std::vector<std::vector<float>> dist(km.k);
  for (uint32_t i : sub) {
    float d2;
    const size_t c = nearest_major(f.line(i), d2);
    dist[c].push_back(std::sqrt(d2 / float(dims)));
  }
  const float floor = float(0.25 * f.pixel);
  std::vector<float> radius(km.k, kInf);
  for (size_t c = 0; c < km.k; ++c) {
    if (!major[c] || dist[c].empty()) continue;
    auto mid = dist[c].begin() + std::ptrdiff_t(dist[c].size() * 9 / 10);
    std::nth_element(dist[c].begin(), mid, dist[c].end());
    radius[c] = std::max(floor, *mid);
  }
  parallel_blocks(n, 4096, threads, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const float* x = f.line(ids[i]);
      cell[i] = uint32_t(strata.nearest(x));
      float ratio = kInf;
      for (size_t c = 0; c < km.k; ++c)
        if (radius[c] < kInf)
          ratio = std::min(ratio, std::sqrt(distance2(x, &km.centres[c * dims], dims) / float(dims)) / radius[c]);
      term[i] = ratio < kInf ? std::max(0.0f, 1.0f - kGlobalReach / ratio) : 0.0f;
    }
  });
  return term;
}

// Lines scored as outliers are a class of their own (multi-class blue noise): all are kept, ordered among
// themselves by farthest-point selection weighted by score, where a line's distance to the lines taken counts only
// up to its own spacing (`spacing`, by local index: its distance to its k-th neighbour). So the most unusual come
// first, and a line with a taken outlier inside its own neighbourhood waits behind the lines that have none: a short
// prefix shows the most unusual line of each region before a second one of the same region. Plain farthest-point
// selection would take as second outlier the one farthest from the first (a mild outlier on the opposite side)
// before the next most unusual; ordering by score alone would give a run of one kind (the exploding tails of a
// layer before any dead or spiking neuron). Past kOutlierExactOrder of them (a layer that is mostly unusual), the
// rest follow by score.
std::vector<uint32_t> outlier_order(const PolylineFeatures& f, std::vector<uint32_t> lines,
                                    const std::vector<float>& score, const std::vector<float>& spacing) {
  std::stable_sort(lines.begin(), lines.end(), [&](uint32_t a, uint32_t b) { return score[a] > score[b]; });
  const size_t exact = std::min(lines.size(), kOutlierExactOrder);
  std::vector<uint32_t> out;
  out.reserve(lines.size());
  std::vector<float> gap(exact, kInf);
  std::vector<uint8_t> taken(exact, 0);
  for (size_t step = 0; step < exact; ++step) {
    size_t best = kNone;
    float best_key = -1;
    for (size_t i = 0; i < exact; ++i) {
      if (taken[i]) continue;
      const float w = 1.0f + score[lines[i]];
      const float reach2 = spacing[lines[i]] * spacing[lines[i]] * float(f.dims);  // distance2 sums over dims
      const float key = gap[i] == kInf ? kInf : std::min(gap[i], reach2) * w * w;
      if (best == kNone || key > best_key) best = i, best_key = key;
    }
    taken[best] = 1;
    out.push_back(lines[best]);
    const float* p = f.line(lines[best]);
    for (size_t i = 0; i < exact; ++i)
      if (!taken[i]) gap[i] = std::min(gap[i], distance2(p, f.line(lines[i]), f.dims));
  }
  for (size_t i = exact; i < lines.size(); ++i) out.push_back(lines[i]);
  return out;
}

}  // namespace

PolylineSet PolylineSet::from(const format::NeuronSeries& series) {
  PolylineSet set;
  set.values = series.values.data();
  set.lines = series.neuron_count;
  set.points = series.steps.size();
  set.step_major = true;
  return set;
}

PolylineFeatures reduce_polylines(const PolylineSet& set, const ChartOptions& chart, int buckets, int threads) {
  threads = thread_count(threads);
  PolylineFeatures f;
  const size_t n = set.lines, t_count = set.points;
  const size_t b_count =
      std::max<size_t>(1, std::min<size_t>(size_t(std::max(1, buckets)), std::max<size_t>(1, t_count)));
  f.lines = n;
  f.dims = 2 * b_count;
  f.values.assign(n * f.dims, 0.0f);
  f.finite.assign(n, 1);
  f.pixel = 1.0 / std::max(1, chart.height_px);
  std::tie(f.low, f.high) = value_range(set, chart, threads);
  if (n == 0 || t_count == 0) return f;
  const float low = float(f.low), scale = float(1.0 / (f.high - f.low));
  std::vector<uint32_t> bucket(t_count);
  for (size_t t = 0; t < t_count; ++t) bucket[t] = uint32_t(t * b_count / t_count);
  const size_t dims = f.dims;
  // Values past the chart's edge are clamped a chart height beyond it: far, but not dominating every distance.
  auto chart_y = [&](float v) { return std::clamp((v - low) * scale, -1.0f, 2.0f); };
  parallel_blocks(n, 2048, threads, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      for (size_t b = 0; b < b_count; ++b) f.values[i * dims + 2 * b] = kInf, f.values[i * dims + 2 * b + 1] = -kInf;
    auto add = [&](size_t i, size_t t, float v) {
      if (!std::isfinite(v)) {
        f.finite[i] = 0;
        return;
      }
      const float y = chart_y(v);
      float* fb = &f.values[i * dims + 2 * bucket[t]];
      fb[0] = std::min(fb[0], y), fb[1] = std::max(fb[1], y);
    };
    if (set.step_major) {
      for (size_t t = 0; t < t_count; ++t) {
        const float* row = set.values + t * n;
        for (size_t i = begin; i < end; ++i) add(i, t, row[i]);
      }
    } else {
      for (size_t i = begin; i < end; ++i)
        for (size_t t = 0; t < t_count; ++t) add(i, t, set.values[i * t_count + t]);
    }
    for (size_t i = begin; i < end; ++i) {
      if (!f.finite[i]) std::fill_n(&f.values[i * dims], dims, 0.0f);
    }
  });
  return f;
}

double polyline_distance(const PolylineFeatures& f, size_t a, size_t b) {
  if (f.dims == 0) return 0;
  return std::sqrt(double(distance2(f.line(a), f.line(b), f.dims)) / double(f.dims));
}

double chart_distance(const PolylineSet& set, const PolylineFeatures& f, size_t a, size_t b) {
  if (set.points == 0) return 0;
  const double scale = 1.0 / (f.high - f.low);
  auto y = [&](float v) { return std::clamp((double(v) - f.low) * scale, -1.0, 2.0); };
  double sum = 0;
  for (size_t t = 0; t < set.points; ++t) sum += std::abs(y(set.at(a, t)) - y(set.at(b, t)));
  return sum / double(set.points);
}

PolylineSample BlueNoisePolylineSampler::sample(const PolylineSet& set) const {
  return sample(reduce_polylines(set, options_.chart, options_.buckets, options_.threads));
}

PolylineSample BlueNoisePolylineSampler::sample(const PolylineFeatures& f) const {
  const int threads = thread_count(options_.threads);
  PolylineSample result;
  result.low = f.low, result.high = f.high;
  const size_t n = f.lines;
  result.outlier_score.assign(n, 1.0f);
  result.spacing.assign(n, kInf);
  std::vector<uint32_t> finite_ids;
  finite_ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (f.finite[i])
      finite_ids.push_back(uint32_t(i));
    else
      result.order.push_back(uint32_t(i));  // NaN/Inf lines lead, in neuron order
  }
  result.non_finite_lines = result.order.size();
  const size_t limit = options_.count ? std::min(options_.count, n) : n;
  // Every finite line gets its score even when NaN/Inf lines fill the whole sample (the view colours all lines).
  if (finite_ids.empty()) {
    result.order.resize(std::min(result.order.size(), limit));
    return result;
  }

  const size_t k = size_t(std::max(1, options_.neighbours));
  // From here on the finite lines are numbered in the neighbour search's memory order (lines close on the chart
  // are close in memory): `lf` holds their features in that order, line_of maps back to neurons.
  PolylineFeatures lf;
  Neighbours nb =
      find_neighbours(f, finite_ids, k, options_.trees, derive_seed(options_.seed, 100), threads, &lf.values);
  lf.lines = nb.n, lf.dims = f.dims, lf.low = f.low, lf.high = f.high, lf.pixel = f.pixel;
  lf.finite.assign(nb.n, 1);
  const std::vector<uint32_t> line_of = nb.lines;
  std::iota(nb.lines.begin(), nb.lines.end(), 0u);
  std::vector<uint32_t> cell;
  const std::vector<float> global = global_outlier_term(lf, nb.lines, derive_seed(options_.seed, 200), threads, cell);
  // Outlier score from the local spacing against a reference: twice the median spacing or Tukey's far-out fence of
  // the spacings (Q3 + 3 IQR), whichever is larger, scores 0.5. The fence matters when the spacings are skewed: a
  // layer with a dense bundle and a long sparse tail (common in real layers: a few hundred neurons, most near one
  // value) would otherwise call the whole tail outliers (a third of enc.fc1's lines in the VAE example), while only
  // the lines set apart from the tail are unusual. Never below a pixel: lines closer than that look the same.
  std::vector<float> spacing = nb.spacing;
  auto quantile = [&](size_t rank) {  // linear time: a sort of a million spacings would cost more than the rest
    std::nth_element(spacing.begin(), spacing.begin() + std::ptrdiff_t(rank), spacing.end());
    return spacing[rank];
  };
  const float median = quantile(spacing.size() / 2), q1 = quantile(spacing.size() / 4),
              q3 = quantile(spacing.size() * 3 / 4);
  const float typical = std::max({median, 0.5f * (q3 + 3.0f * (q3 - q1)), float(f.pixel)});
  // Outliers are ordered as a class of their own (below), so the typical lines' order carries no outlier bias: all
  // weights 1, the density of every stratum kept.
  const std::vector<float> bias(nb.n, 1.0f);
  // The score is the larger of the local term and the global one.
  std::vector<uint32_t> typical_local, unusual;
  std::vector<float> score(nb.n);
  for (size_t i = 0; i < nb.n; ++i) {
    const uint32_t line = line_of[i];
    const float local = std::max(0.0f, 1.0f - typical / nb.spacing[i]);
    const float s = std::max(local, global[i]);
    result.outlier_score[line] = score[i] = s;
    result.spacing[line] = nb.spacing[i];
    if (s >= kOutlierScoreThreshold && options_.outlier_bias > 0)
      unusual.push_back(uint32_t(i));
    else
      typical_local.push_back(uint32_t(i));
  }
  // Typical lines, stratified by k-means cell so that every prefix keeps the layer's density: each cell is ordered
  // by the progressive blue-noise order on its own neighbour lists (the parent's, restricted to the cell), and the
  // cells' orders are interleaved in proportion to their populations (each next line from the cell furthest behind
  // its share). A cell never gives more than its share + 4 of any prefix, so ordering it that far is enough and
  // the result stays the same whatever the count (progressive).
  const size_t rest = limit - std::min(limit, result.order.size());
  std::vector<uint32_t> typical_order;
  if (!typical_local.empty() && rest > 0) {
    const size_t cells = cell.empty() ? 1 : size_t(*std::max_element(cell.begin(), cell.end())) + 1;
    std::vector<std::vector<uint32_t>> members(cells);
    for (uint32_t i : typical_local) members[cell[i]].push_back(i);
    const double total = double(typical_local.size());
    const Context cx{lf, bias, options_, threads};
    std::vector<std::vector<uint32_t>> orders(cells);
    std::vector<uint32_t> local;
    for (size_t c = 0; c < cells; ++c) {
      if (members[c].empty()) continue;
      const size_t quota =
          std::min(members[c].size(), size_t(std::ceil(double(members[c].size()) * double(rest) / total)) + 4);
      const Neighbours cell_nb = subgraph(lf, nb, members[c], k, false, threads, local);
      for (uint32_t i : progressive_order(cx, cell_nb, quota, derive_seed(options_.seed, 300 + c)))
        orders[c].push_back(cell_nb.lines[i]);
    }
    std::vector<size_t> taken(cells, 0);
    // In a short prefix (fewer lines than cells, or a few per cell) which cell goes next matters for the spread:
    // among the cells within a quarter line of the furthest behind, the one whose next line is farthest from the lines
    // taken so far, in units of that line's own spacing, goes first (farthest-point selection over the cells' heads,
    // with a radius adapting to the density). Plain distances would take the sparse edges of the layer first: a
    // dozen lines of a few hundred would show its extremes rather than its shape.
    std::vector<float> head_gap(cells, kInf);  // squared distance to the nearest line taken
    auto head_key = [&](size_t c) {
      if (head_gap[c] == kInf) return kInf;
      const float own = nb.spacing[orders[c][taken[c]]];
      return head_gap[c] / (own * own);
    };
    auto gap_of = [&](uint32_t line) {
      float g = kInf;
      for (uint32_t o : typical_order) g = std::min(g, distance2(lf.line(line), lf.line(o), lf.dims));
      return g;
    };
    while (typical_order.size() < rest) {
      const double next = double(typical_order.size() + 1);
      double most = -std::numeric_limits<double>::infinity();
      for (size_t c = 0; c < cells; ++c)
        if (taken[c] < orders[c].size())
          most = std::max(most, double(members[c].size()) * next / total - double(taken[c]));
      const bool spread = typical_order.size() < kSpreadPrefix;
      size_t best = kNone;
      double best_deficit = 0;
      for (size_t c = 0; c < cells; ++c) {
        if (taken[c] >= orders[c].size()) continue;
        const double deficit = double(members[c].size()) * next / total - double(taken[c]);
        if (spread ? deficit > most - kSpreadSlack && (best == kNone || head_key(c) > head_key(best))
                   : best == kNone || deficit > best_deficit)
          best = c, best_deficit = deficit;
      }
      if (best == kNone) break;
      const uint32_t line = orders[best][taken[best]++];
      typical_order.push_back(line);
      if (typical_order.size() < kSpreadPrefix) {
        if (taken[best] < orders[best].size()) head_gap[best] = gap_of(orders[best][taken[best]]);
        for (size_t c = 0; c < cells; ++c)
          if (c != best && taken[c] < orders[c].size())
            head_gap[c] = std::min(head_gap[c], distance2(lf.line(orders[c][taken[c]]), lf.line(line), lf.dims));
      }
    }
  }
  // Outliers are all kept but take at most `outlier_share` of any prefix (while typical lines remain), so that a short
  // prefix still shows the shape of the layer. The merge depends only on prefixes of both orders: progressive.
  if (result.order.size() >= limit) {  // NaN/Inf lines fill the sample
    result.order.resize(limit);
    return result;
  }
  const std::vector<uint32_t> unusual_order = outlier_order(lf, unusual, score, nb.spacing);
  const double share = std::clamp(options_.outlier_share, 0.0, 1.0);
  size_t a = 0, b = 0;
  while (result.order.size() < limit && (a < typical_order.size() || b < unusual_order.size())) {
    const bool outlier =
        b < unusual_order.size() && (a >= typical_order.size() || double(b) * (1.0 - share) <= double(a) * share);
    result.order.push_back(line_of[outlier ? unusual_order[b++] : typical_order[a++]]);
  }
  return result;
}

// ---- Clustering ----

namespace {

// Mean silhouette of the lines `ids` under their nearest centres (distances among `ids` only).
double silhouette(const PolylineFeatures& f, const std::vector<uint32_t>& ids, const KMeans& km,
                  const std::vector<float>& dist) {
  const size_t n = ids.size();
  std::vector<size_t> label(n);
  for (size_t i = 0; i < n; ++i) label[i] = km.nearest(f.line(ids[i]));
  double total = 0;
  std::vector<double> sum(km.k);
  std::vector<size_t> count(km.k);
  for (size_t i = 0; i < n; ++i) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (size_t j = 0; j < n; ++j) {
      if (j == i) continue;
      sum[label[j]] += dist[i * n + j];
      ++count[label[j]];
    }
    if (count[label[i]] == 0) continue;  // a singleton scores 0
    const double a = sum[label[i]] / double(count[label[i]]);
    double b = std::numeric_limits<double>::infinity();
    for (size_t c = 0; c < km.k; ++c)
      if (c != label[i] && count[c]) b = std::min(b, sum[c] / double(count[c]));
    if (!std::isfinite(b)) continue;
    const double denom = std::max(a, b);
    total += denom > 0 ? (b - a) / denom : 0.0;
  }
  return n ? total / double(n) : 0.0;
}

std::vector<uint32_t> evenly_spaced(const std::vector<uint32_t>& ids, size_t count) {
  if (ids.size() <= count) return ids;
  std::vector<uint32_t> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = ids[i * ids.size() / count];
  return out;
}

}  // namespace

PolylineClustering cluster_polylines(const PolylineSet& set, const PolylineFeatures& f,
                                     const std::vector<float>& outlier_score, const ClusterOptions& options) {
  const int threads = thread_count(options.threads);
  PolylineClustering out;
  const size_t n = f.lines, dims = f.dims;
  out.labels.assign(n, -1);
  std::vector<uint32_t> finite, fit;
  for (size_t i = 0; i < n; ++i) {
    if (!f.finite[i]) continue;
    finite.push_back(uint32_t(i));
    if (outlier_score.size() != n || outlier_score[i] < kOutlierScoreThreshold) fit.push_back(uint32_t(i));
  }
  if (finite.empty()) return out;
  if (fit.size() < 2) fit = finite;

  // Choose k on a subsample: the best silhouette over 2..max, or one cluster if no split is clearly better.
  const std::vector<uint32_t> sub = evenly_spaced(fit, 4000);
  size_t k = size_t(std::max(0, options.clusters));
  if (k == 0) {
    const std::vector<uint32_t> eval = evenly_spaced(sub, 1000);
    std::vector<float> dist(eval.size() * eval.size());
    for (size_t i = 0; i < eval.size(); ++i)
      for (size_t j = 0; j < eval.size(); ++j)
        dist[i * eval.size() + j] = float(polyline_distance(f, eval[i], eval[j]));
    k = 1;
    double best = 0.25;  // below this a split is not worth a band of its own
    for (size_t c = 2; c <= size_t(std::max(2, options.max_clusters)) && c <= sub.size(); ++c) {
      const KMeans km = fit_kmeans(f, sub, c, derive_seed(options.seed, c), options.max_iterations, threads);
      if (km.k < c) break;
      const double s = silhouette(f, eval, km, dist);
      if (s > best + 0.02) best = s, k = c;
    }
  }
  k = std::max<size_t>(1, std::min(k, fit.size()));
  const KMeans seeded = fit_kmeans(f, sub, k, derive_seed(options.seed, k), options.max_iterations, threads);
  const KMeans km = fit_kmeans(f, fit, seeded.k, 0, options.max_iterations, threads, &seeded);
  k = km.k;

  // Label every finite line; clusters renumbered largest first.
  std::vector<uint32_t> raw(n, kNone);
  parallel_blocks(finite.size(), 8192, threads, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) raw[finite[i]] = uint32_t(km.nearest(f.line(finite[i])));
  });
  std::vector<uint64_t> size(k, 0);
  for (uint32_t i : finite) ++size[raw[i]];
  std::vector<uint32_t> rank(k);
  std::iota(rank.begin(), rank.end(), 0u);
  std::stable_sort(rank.begin(), rank.end(), [&](uint32_t a, uint32_t b) { return size[a] > size[b]; });
  std::vector<int32_t> relabel(k);
  for (size_t r = 0; r < k; ++r) relabel[rank[r]] = int32_t(r);
  out.sizes.resize(k);
  out.outliers.assign(k, 0);
  out.representative.assign(k, 0);
  std::vector<float> rep_d(k, kInf);
  std::vector<std::vector<uint32_t>> members(k);
  for (uint32_t i : finite) {
    const int32_t c = relabel[raw[i]];
    out.labels[i] = c;
    members[size_t(c)].push_back(i);
    if (outlier_score.size() == n && outlier_score[i] >= kOutlierScoreThreshold) ++out.outliers[size_t(c)];
    const float d = distance2(f.line(i), &km.centres[size_t(raw[i]) * dims], dims);
    if (d < rep_d[size_t(c)]) rep_d[size_t(c)] = d, out.representative[size_t(c)] = i;
  }
  for (size_t c = 0; c < k; ++c) out.sizes[c] = members[c].size();

  // Bands in the recorded units, per step.
  const size_t t_count = set.points;
  out.bands.resize(k);
  for (auto& band : out.bands) {
    band.mean.assign(t_count, std::numeric_limits<float>::quiet_NaN());
    band.min = band.max = band.q10 = band.q90 = band.mean;
  }
  std::vector<std::vector<uint32_t>> quantile_members(k);
  for (size_t c = 0; c < k; ++c) quantile_members[c] = evenly_spaced(members[c], 1024);
  parallel_blocks(t_count, 8, threads, [&](size_t, size_t begin, size_t end) {
    std::vector<double> sum(k);
    std::vector<uint64_t> count(k);
    std::vector<float> lo(k), hi(k), values;
    for (size_t t = begin; t < end; ++t) {
      std::fill(sum.begin(), sum.end(), 0.0);
      std::fill(count.begin(), count.end(), 0);
      std::fill(lo.begin(), lo.end(), kInf);
      std::fill(hi.begin(), hi.end(), -kInf);
      for (uint32_t i : finite) {
        const float v = set.at(i, t);
        const size_t c = size_t(out.labels[i]);
        sum[c] += v, ++count[c];
        lo[c] = std::min(lo[c], v), hi[c] = std::max(hi[c], v);
      }
      for (size_t c = 0; c < k; ++c) {
        if (!count[c]) continue;
        auto& band = out.bands[c];
        band.mean[t] = float(sum[c] / double(count[c]));
        band.min[t] = lo[c], band.max[t] = hi[c];
        values.clear();
        for (uint32_t i : quantile_members[c]) values.push_back(set.at(i, t));
        const size_t a = values.size() / 10, b = values.size() - 1 - a;
        std::nth_element(values.begin(), values.begin() + std::ptrdiff_t(a), values.end());
        band.q10[t] = values[a];
        std::nth_element(values.begin(), values.begin() + std::ptrdiff_t(b), values.end());
        band.q90[t] = values[b];
      }
    }
  });
  return out;
}

}  // namespace trainscope::analysis
