// A scalar series (a loss term, the learning rate, ...) reduced to what a chart of N pixel columns shows, in time
// proportional to N, not to the series' length: a min/max pyramid over the points. Each column keeps its minimum,
// maximum, first and last value (the M4 idea) and whether a NaN or Inf fell in it, so a one-step spike or a single
// NaN stays visible over millions of steps at any zoom.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace trainscope::analysis {

struct ScalarColumn {
  bool empty = true;        // no point in this column
  bool any_finite = false;  // min/max/first/last are meaningful only then
  double min = 0, max = 0, first = 0, last = 0;
  bool nan = false, pos_inf = false, neg_inf = false;
  int64_t first_step = 0, last_step = 0;
};

class ScalarOverview {
 public:
  ScalarOverview() = default;
  // `steps` ascending (not necessarily evenly spaced); values.size() == steps.size().
  ScalarOverview(std::vector<int64_t> steps, std::vector<double> values);

  size_t size() const { return steps_.size(); }
  const std::vector<int64_t>& steps() const { return steps_; }
  const std::vector<double>& values() const { return values_; }

  // `columns` columns splitting the step range [from, to) evenly, O(columns) however long the series: where columns
  // hold many points, their inner edges move to pyramid block edges, by at most 1/16 of a column (the columns still
  // tile the points, and each is exact for the steps it reports in first_step..last_step).
  std::vector<ScalarColumn> columns(double from, double to, int columns) const;
  // Index of the point nearest to `step` (-1 when empty).
  long nearest(double step) const;
  // Minimum and maximum of the finite values of points with steps in [from, to); false when there is none.
  bool finite_range(double from, double to, double* min, double* max) const;
  // Smallest positive finite value in [from, to) (for a log scale); false when there is none.
  bool smallest_positive(double from, double to, double* value) const;

 private:
  struct Node {
    double min, max, min_positive;
    uint8_t flags;  // 1 NaN, 2 +Inf, 4 -Inf, 8 any finite
  };
  static constexpr size_t kBlock = 8;   // points per node of the finest pyramid level
  static constexpr size_t kFanout = 4;  // nodes of a level per node of the next coarser one
  static Node leaf(double value);
  static void merge(Node& into, const Node& n) {
    into.min = n.min < into.min ? n.min : into.min;
    into.max = n.max > into.max ? n.max : into.max;
    into.min_positive = n.min_positive < into.min_positive ? n.min_positive : into.min_positive;
    into.flags |= n.flags;
  }
  Node query(size_t begin, size_t end) const;  // over points [begin, end)
  size_t dense_index(double step) const;       // lower bound of `step` when the steps are evenly spaced
  int64_t step_at(size_t i) const { return stride_ > 0 ? steps_.front() + int64_t(i) * stride_ : steps_[i]; }

  std::vector<int64_t> steps_;
  std::vector<double> values_;
  int64_t stride_ = 0;                     // the spacing of evenly spaced steps, 0 when they are not
  std::vector<std::vector<Node>> levels_;  // levels_[k][i] covers points [i·8·4^k, (i+1)·8·4^k)
};

// Exponential moving average with the given weight of the past (0 = none, 0.99 = heavy), as TensorBoard smooths:
// debiased at the start, and NaN/Inf points passed through unchanged without disturbing the average.
std::vector<double> exponential_moving_average(const std::vector<double>& values, double weight);

}  // namespace trainscope::analysis
