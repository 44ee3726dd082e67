#include <trainscope/analysis/scalar_overview.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace trainscope::analysis {
namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}

ScalarOverview::Node ScalarOverview::leaf(double v) {
  if (std::isfinite(v)) return {v, v, v > 0 ? v : kInf, 8};
  return {kInf, -kInf, kInf, uint8_t(std::isnan(v) ? 1 : v > 0 ? 2 : 4)};
}

ScalarOverview::ScalarOverview(std::vector<int64_t> steps, std::vector<double> values)
    : steps_(std::move(steps)), values_(std::move(values)) {
  values_.resize(steps_.size(), std::numeric_limits<double>::quiet_NaN());
  // Evenly spaced steps (the common case: every step, or every k-th) map a step to its index arithmetically, without
  // touching the (possibly huge, cache-cold) step array.
  if (steps_.size() >= 2 && steps_[1] > steps_[0]) {
    stride_ = steps_[1] - steps_[0];
    for (size_t i = 1; i < steps_.size() && stride_ > 0; ++i)
      if (steps_[i] - steps_[i - 1] != stride_) stride_ = 0;
  }
  // The pyramid starts at blocks of kBlock points: the points themselves are the finest level (a quarter of the
  // memory, and a query's ends scan a few neighbouring values instead of visiting scattered nodes).
  std::vector<Node> base((values_.size() + kBlock - 1) / kBlock, Node{kInf, -kInf, kInf, 0});
  for (size_t i = 0; i < values_.size(); ++i) merge(base[i / kBlock], leaf(values_[i]));
  levels_.push_back(std::move(base));
  // Each coarser level merges kFanout nodes: half the levels of a binary pyramid, so a query visits fewer scattered
  // places (a handful of neighbouring nodes per level, mostly in one cache line).
  while (levels_.back().size() > 1) {
    const auto& below = levels_.back();
    std::vector<Node> up((below.size() + kFanout - 1) / kFanout, Node{kInf, -kInf, kInf, 0});
    for (size_t i = 0; i < below.size(); ++i) merge(up[i / kFanout], below[i]);
    levels_.push_back(std::move(up));
  }
}

ScalarOverview::Node ScalarOverview::query(size_t begin, size_t end) const {
  Node out{kInf, -kInf, kInf, 0};
  // The partial blocks at both ends, point by point.
  while (begin < end && begin % kBlock) merge(out, leaf(values_[begin++]));
  while (end > begin && end % kBlock) merge(out, leaf(values_[--end]));
  // Then whole blocks from both ends inwards, climbing the pyramid where the ends align: O(kFanout · log n).
  begin /= kBlock;
  end /= kBlock;
  for (size_t level = 0; begin < end; ++level) {
    const auto& nodes = levels_[level];
    const size_t up_begin = (begin + kFanout - 1) / kFanout, up_end = end / kFanout;
    if (up_begin >= up_end) {  // no whole parent inside: the rest lies on this level
      while (begin < end) merge(out, nodes[begin++]);
      break;
    }
    while (begin < up_begin * kFanout) merge(out, nodes[begin++]);
    while (end > up_end * kFanout) merge(out, nodes[--end]);
    begin = up_begin;
    end = up_end;
  }
  return out;
}

std::vector<ScalarColumn> ScalarOverview::columns(double from, double to, int columns) const {
  std::vector<ScalarColumn> out(size_t(std::max(columns, 0)));
  if (columns <= 0 || !(to > from) || steps_.empty()) return out;
  const double width = (to - from) / columns;
  auto index_at = [this](double step) {
    return size_t(
        std::lower_bound(steps_.begin(), steps_.end(), step, [](int64_t s, double x) { return double(s) < x; }) -
        steps_.begin());
  };
  // The next column's first point, searched from the previous one by galloping: a few nearby probes instead of a
  // binary search over the whole (possibly huge, cache-cold) step array.
  auto index_from = [this](size_t start, double step) {
    const auto below = [step](int64_t s) { return double(s) < step; };
    size_t lo = start, stride = 1;
    while (lo + stride < steps_.size() && below(steps_[lo + stride])) lo += stride, stride *= 2;
    const size_t hi = std::min(steps_.size(), lo + stride + 1);
    return size_t(std::lower_bound(steps_.begin() + long(lo), steps_.begin() + long(hi), step,
                                   [](int64_t s, double x) { return double(s) < x; }) -
                  steps_.begin());
  };
  // Column edges as point indices: edges[c] is column c's first point.
  std::vector<size_t> edges(size_t(columns) + 1);
  edges[0] = index_at(from);
  for (int c = 0; c < columns; ++c) {
    const double edge = c + 1 == columns ? to : from + width * (c + 1);
    edges[size_t(c) + 1] = stride_ > 0 ? dense_index(edge) : index_from(edges[size_t(c)], edge);
  }
  // Many points per column: an inner edge moves to the nearest edge of a pyramid block at most an eighth as long as
  // the columns on either side, so that each column is a few whole blocks and costs the same however long the series
  // is (exact edges make every column climb the pyramid from single points). The columns still tile the points, and
  // each column's min/max/first/last are exact for the points it reports (first_step..last_step), which differ from
  // the pixel's own range by at most a sixteenth of a column at either edge. The chart's outer edges stay exact.
  const size_t average = (edges.back() - edges.front()) / size_t(columns);
  size_t block = kBlock;
  for (size_t level = 0; level + 1 < levels_.size() && block * kFanout * 8 <= average; ++level) block *= kFanout;
  if (block * 8 <= average) {
    const std::vector<size_t> exact = edges;
    for (size_t c = 1; c < size_t(columns); ++c) {
      if (std::min(exact[c] - exact[c - 1], exact[c + 1] - exact[c]) < block * 8) continue;
      const size_t snapped = std::min((exact[c] + block / 2) / block * block, values_.size());
      edges[c] = std::clamp(snapped, edges[c - 1], exact[c + 1]);
    }
  }
  for (int c = 0; c < columns; ++c) {
    const size_t begin = edges[size_t(c)], end = edges[size_t(c) + 1];
    ScalarColumn& col = out[size_t(c)];
    if (end <= begin) continue;
    const Node n = query(begin, end);
    col.empty = false;
    col.any_finite = n.flags & 8;
    col.min = n.min;
    col.max = n.max;
    col.nan = n.flags & 1;
    col.pos_inf = n.flags & 2;
    col.neg_inf = n.flags & 4;
    col.first_step = step_at(begin);
    col.last_step = step_at(end - 1);
    // First and last finite values at the column's edges, for the line joining columns.
    col.first = std::isfinite(values_[begin]) ? values_[begin] : n.min;
    col.last = std::isfinite(values_[end - 1]) ? values_[end - 1] : n.max;
  }
  return out;
}

size_t ScalarOverview::dense_index(double step) const {
  // The first index whose step is >= `step`: ceil((step - first) / stride), clamped to [0, size].
  const double offset = std::ceil((step - double(steps_.front())) / double(stride_));
  if (!(offset > 0)) return 0;
  if (offset >= double(steps_.size())) return steps_.size();
  size_t i = size_t(offset);
  // Guard against rounding in the division: settle on the exact lower bound (step i is first + i · stride).
  while (i > 0 && double(step_at(i - 1)) >= step) --i;
  while (i < steps_.size() && double(step_at(i)) < step) ++i;
  return i;
}

long ScalarOverview::nearest(double step) const {
  if (steps_.empty()) return -1;
  auto it = std::lower_bound(steps_.begin(), steps_.end(), step, [](int64_t s, double x) { return double(s) < x; });
  if (it == steps_.end()) return long(steps_.size()) - 1;
  if (it != steps_.begin() && step - double(*(it - 1)) < double(*it) - step) --it;
  return long(it - steps_.begin());
}

bool ScalarOverview::finite_range(double from, double to, double* min, double* max) const {
  auto lo = std::lower_bound(steps_.begin(), steps_.end(), from, [](int64_t s, double x) { return double(s) < x; });
  auto hi = std::lower_bound(steps_.begin(), steps_.end(), to, [](int64_t s, double x) { return double(s) < x; });
  if (hi <= lo) return false;
  const Node n = query(size_t(lo - steps_.begin()), size_t(hi - steps_.begin()));
  if (!(n.flags & 8)) return false;
  *min = n.min;
  *max = n.max;
  return true;
}

bool ScalarOverview::smallest_positive(double from, double to, double* value) const {
  auto lo = std::lower_bound(steps_.begin(), steps_.end(), from, [](int64_t s, double x) { return double(s) < x; });
  auto hi = std::lower_bound(steps_.begin(), steps_.end(), to, [](int64_t s, double x) { return double(s) < x; });
  if (hi <= lo) return false;
  const Node n = query(size_t(lo - steps_.begin()), size_t(hi - steps_.begin()));
  if (!(n.min_positive < kInf)) return false;
  *value = n.min_positive;
  return true;
}

std::vector<double> exponential_moving_average(const std::vector<double>& values, double weight) {
  std::vector<double> out(values.size());
  double average = 0, debias = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!std::isfinite(v) || weight <= 0) {
      out[i] = v;
      continue;
    }
    average = weight * average + (1 - weight) * v;
    debias = weight * debias + (1 - weight);
    out[i] = average / debias;
  }
  return out;
}

}  // namespace trainscope::analysis
