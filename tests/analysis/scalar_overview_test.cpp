// ScalarOverview against a brute-force scan: every column's min/max/first/last and NaN/Inf flags, for random
// series with spikes, NaN and Inf, evenly and irregularly spaced steps, and many ranges and widths.
#include <gtest/gtest.h>
#include <trainscope/analysis/scalar_overview.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace {

using trainscope::analysis::ScalarColumn;
using trainscope::analysis::ScalarOverview;

// A column's contents by brute force: the points whose steps lie in [lo, hi].
ScalarColumn scan(const std::vector<int64_t>& steps, const std::vector<double>& values, double lo, double hi) {
  ScalarColumn expect;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (double(steps[i]) < lo || double(steps[i]) > hi) continue;
    const double v = values[i];
    if (expect.empty) expect.first_step = steps[i];
    expect.empty = false;
    expect.last_step = steps[i];
    if (std::isnan(v))
      expect.nan = true;
    else if (v == INFINITY)
      expect.pos_inf = true;
    else if (v == -INFINITY)
      expect.neg_inf = true;
    else if (!expect.any_finite)
      expect.any_finite = true, expect.min = expect.max = v;
    else
      expect.min = std::min(expect.min, v), expect.max = std::max(expect.max, v);
  }
  return expect;
}

// Each column is checked against a scan of the points it reports (first_step..last_step); the columns must tile the
// points of the range with no gap or overlap, be empty exactly where the pixel's own range holds no point, and start
// within a sixteenth of a column of the pixel's own first point (exactly, at the chart's left edge).
TEST(ScalarOverview, ColumnsMatchABruteForceScan) {
  std::mt19937 rng(3);
  int moved_edges = 0;
  for (int trial = 0; trial < 80; ++trial) {
    const size_t n = 1 + rng() % (trial % 4 == 0 ? 40000 : 3000);
    std::vector<int64_t> steps(n);
    std::vector<double> values(n);
    int64_t step = int64_t(rng() % 50) - 20;
    // Every third series evenly spaced (every step or every k-th: the index is computed, not searched), the others
    // irregular.
    const int64_t stride = trial % 3 == 0 ? 1 + int64_t(rng() % 5) : 0;
    for (size_t i = 0; i < n; ++i) {
      step += stride > 0 ? stride : 1 + int64_t(rng() % 4);
      steps[i] = step;
      const unsigned kind = rng() % 200;
      values[i] = kind == 0   ? std::nan("")
                  : kind == 1 ? INFINITY
                  : kind == 2 ? -INFINITY
                  : kind == 3 ? 1e6  // a spike
                              : std::sin(double(i) / 50) + double(rng() % 100) / 1000;
    }
    const ScalarOverview overview(steps, values);
    auto index_of = [&](double s) {
      return long(std::lower_bound(steps.begin(), steps.end(), s, [](int64_t a, double x) { return double(a) < x; }) -
                  steps.begin());
    };
    for (int query = 0; query < 20; ++query) {
      const double from = double(steps.front()) - 10 + double(rng() % (n * 3 + 20)) + double(rng() % 4) / 4;
      const double to = from + 1 + double(rng() % (n * 3 + 20)) + double(rng() % 3) / 3;
      const int columns = 1 + int(rng() % 400);
      const auto cols = overview.columns(from, to, columns);
      ASSERT_EQ(cols.size(), size_t(columns));
      const double width = (to - from) / columns;
      long next = index_of(from);  // the point the next non-empty column must start with
      for (int c = 0; c < columns; ++c) {
        const double lo = from + width * c, hi = c + 1 == columns ? to : from + width * (c + 1);
        const long exact_begin = index_of(lo), exact_end = index_of(hi);
        const ScalarColumn& got = cols[size_t(c)];
        ASSERT_EQ(got.empty, exact_begin == exact_end) << "trial " << trial << " column " << c;
        if (got.empty) continue;
        const long begin = index_of(double(got.first_step));
        ASSERT_EQ(begin, next) << "trial " << trial << " column " << c << ": the columns must tile the points";
        next = index_of(double(got.last_step)) + 1;
        if (c + 1 == columns) {
          EXPECT_EQ(next, exact_end);
        }
        // How far this column's first point may be from the pixel's: a sixteenth of the smaller neighbour.
        const long before = c == 0 ? 0 : exact_begin - index_of(from + width * (c - 1));
        const long slack = c == 0 ? 0 : std::min(before, exact_end - exact_begin) / 16;
        EXPECT_LE(std::abs(begin - exact_begin), slack) << "trial " << trial << " column " << c;
        moved_edges += begin != exact_begin;
        const ScalarColumn expect = scan(steps, values, double(got.first_step), double(got.last_step));
        EXPECT_EQ(got.any_finite, expect.any_finite);
        EXPECT_EQ(got.nan, expect.nan);
        EXPECT_EQ(got.pos_inf, expect.pos_inf);
        EXPECT_EQ(got.neg_inf, expect.neg_inf);
        if (expect.any_finite) {
          EXPECT_EQ(got.min, expect.min);
          EXPECT_EQ(got.max, expect.max);
          EXPECT_GE(got.first, got.min);
          EXPECT_LE(got.last, got.max);
        }
      }
      EXPECT_EQ(next, index_of(to)) << "trial " << trial << ": the last column must end at the range's last point";
    }
  }
  EXPECT_GT(moved_edges, 0);  // the long series did take the block-aligned path
}

TEST(ScalarOverview, OneSpikeInAMillionStepsSurvivesA400ColumnChart) {
  std::vector<int64_t> steps(1000000);
  std::vector<double> values(steps.size(), 1.0);
  for (size_t i = 0; i < steps.size(); ++i) steps[i] = int64_t(i);
  values[654321] = 50.0;
  values[123456] = std::nan("");
  const ScalarOverview overview(steps, values);
  const auto cols = overview.columns(0, 1e6, 400);
  int spikes = 0, nans = 0;
  for (const auto& c : cols) {
    spikes += c.max == 50.0;
    nans += c.nan;
  }
  EXPECT_EQ(spikes, 1);
  EXPECT_EQ(nans, 1);
  EXPECT_EQ(cols[654321 * 400 / 1000000].max, 50.0);
  double lo = 0, hi = 0;
  ASSERT_TRUE(overview.finite_range(0, 1e6, &lo, &hi));
  EXPECT_EQ(lo, 1.0);
  EXPECT_EQ(hi, 50.0);
  EXPECT_EQ(overview.nearest(654321.4), 654321);
}

TEST(ScalarOverview, EmaSmoothsAndPassesNonFiniteThrough) {
  const std::vector<double> v = {1, 1, 1, 10, 1, std::nan(""), 1};
  const auto s = trainscope::analysis::exponential_moving_average(v, 0.9);
  EXPECT_DOUBLE_EQ(s[0], 1.0);  // debiased: the first point is itself
  EXPECT_GT(s[3], 1.0);
  EXPECT_LT(s[3], 10.0);  // the spike is damped
  EXPECT_TRUE(std::isnan(s[5]));
  EXPECT_GT(s[6], 1.0);  // the average remembers the spike, not the NaN
  EXPECT_EQ(trainscope::analysis::exponential_moving_average(v, 0.0)[3], 10.0);
}

}  // namespace
