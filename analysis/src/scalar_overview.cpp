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
  // The pyramid starts at blocks of kBlock points: the points themselves are the finest level (a quarter of the
  // memory, and a query's ends scan a few neighbouring values instead of visiting scattered nodes).
  std::vector<Node> base((values_.size() + kBlock - 1) / kBlock, Node{kInf, -kInf, kInf, 0});
  for (size_t i = 0; i < values_.size(); ++i) merge(base[i / kBlock], leaf(values_[i]));
  levels_.push_back(std::move(base));
  while (levels_.back().size() > 1) {
    const auto& below = levels_.back();
    std::vector<Node> up((below.size() + 1) / 2);
    for (size_t i = 0; i < up.size(); ++i) {
      up[i] = below[2 * i];
      if (2 * i + 1 < below.size()) merge(up[i], below[2 * i + 1]);
    }
    levels_.push_back(std::move(up));
  }
}

ScalarOverview::Node ScalarOverview::query(size_t begin, size_t end) const {
  Node out{kInf, -kInf, kInf, 0};
  // The partial blocks at both ends, point by point.
  while (begin < end && begin % kBlock) merge(out, leaf(values_[begin++]));
  while (end > begin && end % kBlock) merge(out, leaf(values_[--end]));
  // Then whole aligned blocks from both ends inwards, climbing the pyramid: O(log n).
  begin /= kBlock;
  end /= kBlock;
  size_t level = 0;
  while (begin < end) {
    if (begin & 1) merge(out, levels_[level][begin++]);
    if (end & 1) merge(out, levels_[level][--end]);
    begin >>= 1;
    end >>= 1;
    ++level;
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
  size_t begin = index_at(from);
  for (int c = 0; c < columns; ++c) {
    const size_t end = index_from(begin, c + 1 == columns ? to : from + width * (c + 1));
    ScalarColumn& col = out[size_t(c)];
    if (end > begin) {
      const Node n = query(begin, end);
      col.empty = false;
      col.any_finite = n.flags & 8;
      col.min = n.min;
      col.max = n.max;
      col.nan = n.flags & 1;
      col.pos_inf = n.flags & 2;
      col.neg_inf = n.flags & 4;
      col.first_step = steps_[begin];
      col.last_step = steps_[end - 1];
      // First and last finite values at the column's edges, for the line joining columns.
      col.first = std::isfinite(values_[begin]) ? values_[begin] : n.min;
      col.last = std::isfinite(values_[end - 1]) ? values_[end - 1] : n.max;
    }
    begin = end;
  }
  return out;
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
