// ScalarOverview against a brute-force scan: every column's min/max/first/last and NaN/Inf flags, for random
// series with spikes, NaN and Inf, evenly and irregularly spaced steps, and many ranges and widths.
#include <gtest/gtest.h>
#include <trainscope/analysis/scalar_overview.h>

#include <cmath>
#include <limits>
#include <random>

namespace {

using trainscope::analysis::ScalarColumn;
using trainscope::analysis::ScalarOverview;

TEST(ScalarOverview, ColumnsMatchABruteForceScan) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 60; ++trial) {
    const size_t n = 1 + rng() % 3000;
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
    for (int query = 0; query < 20; ++query) {
      const double from = double(steps.front()) - 10 + double(rng() % (n * 3 + 20)) + double(rng() % 4) / 4;
      const double to = from + 1 + double(rng() % (n * 3 + 20)) + double(rng() % 3) / 3;
      const int columns = 1 + int(rng() % 400);
      const auto cols = overview.columns(from, to, columns);
      ASSERT_EQ(cols.size(), size_t(columns));
      const double width = (to - from) / columns;
      for (int c = 0; c < columns; ++c) {
        const double lo = from + width * c, hi = c + 1 == columns ? to : from + width * (c + 1);
        ScalarColumn expect;
        bool first_seen = false;
        for (size_t i = 0; i < n; ++i) {
          if (double(steps[i]) < lo || double(steps[i]) >= hi) continue;
          const double v = values[i];
          if (!first_seen) expect.first_step = steps[i];
          first_seen = true;
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
        const ScalarColumn& got = cols[size_t(c)];
        ASSERT_EQ(got.empty, expect.empty) << "trial " << trial << " column " << c;
        if (expect.empty) continue;
        EXPECT_EQ(got.any_finite, expect.any_finite);
        EXPECT_EQ(got.nan, expect.nan);
        EXPECT_EQ(got.pos_inf, expect.pos_inf);
        EXPECT_EQ(got.neg_inf, expect.neg_inf);
        EXPECT_EQ(got.first_step, expect.first_step);
        EXPECT_EQ(got.last_step, expect.last_step);
        if (expect.any_finite) {
          EXPECT_EQ(got.min, expect.min);
          EXPECT_EQ(got.max, expect.max);
          EXPECT_GE(got.first, got.min);
          EXPECT_LE(got.last, got.max);
        }
      }
    }
  }
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
