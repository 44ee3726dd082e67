// neuron_grid_order: the neuron view's grid puts neurons with similar profiles side by side, one cluster per group,
// and hides the weakly contributing ones.
#include <gtest/gtest.h>
#include <trainscope/analysis/credit_assignment.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

namespace {

using trainscope::analysis::neuron_grid_order;

// 30 neurons in three groups with unlike profiles (rising, falling, oscillating) plus noise, the groups interleaved
// by id (neuron i is in group i % 3) so that the grid must reorder them.
struct GroupedNeurons {
  std::vector<std::vector<double>> profiles;
  std::vector<double> strength;
  std::vector<int> group;
};

GroupedNeurons grouped_neurons(size_t n, size_t points, uint32_t seed) {
  GroupedNeurons g;
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 0.05);
  for (size_t i = 0; i < n; ++i) {
    const int group = int(i % 3);
    std::vector<double> p(points);
    for (size_t t = 0; t < points; ++t) {
      const double x = double(t) / double(points - 1);
      const double base = group == 0 ? x : group == 1 ? 1.0 - x * x : std::sin(6.28 * 2 * x);
      p[t] = (1.0 + 0.1 * double(i)) * base + noise(rng);
    }
    g.profiles.push_back(p);
    g.strength.push_back(1.0 + double(i % 5));
    g.group.push_back(group);
  }
  return g;
}

TEST(NeuronGrid, SimilarNeuronsSitSideBySideInOneClusterEach) {
  const auto g = grouped_neurons(30, 40, 1);
  const auto grid = neuron_grid_order(g.profiles, g.strength, 0.0);
  ASSERT_EQ(grid.order.size(), 30u);
  ASSERT_EQ(grid.cluster.size(), 30u);
  EXPECT_TRUE(grid.hidden.empty());
  // A permutation of all neurons.
  EXPECT_EQ(std::set<uint32_t>(grid.order.begin(), grid.order.end()).size(), 30u);
  // Each group is one contiguous run of the order: the group changes exactly twice along it.
  int changes = 0;
  for (size_t k = 1; k < grid.order.size(); ++k) changes += g.group[grid.order[k]] != g.group[grid.order[k - 1]];
  EXPECT_EQ(changes, 2);
  // One cluster per group, the same cluster for every member.
  std::map<int, std::set<int>> clusters_of_group;
  for (size_t k = 0; k < grid.order.size(); ++k) clusters_of_group[g.group[grid.order[k]]].insert(grid.cluster[k]);
  ASSERT_EQ(clusters_of_group.size(), 3u);
  std::set<int> all;
  for (const auto& [group, clusters] : clusters_of_group) {
    EXPECT_EQ(clusters.size(), 1u) << "group " << group << " split over clusters";
    all.insert(*clusters.begin());
  }
  EXPECT_EQ(all.size(), 3u) << "two groups share a cluster";
}

TEST(NeuronGrid, HidesWeakNeuronsAndKeepsTheStrongestWhenCapped) {
  auto g = grouped_neurons(30, 20, 2);
  // Neurons 5 and 17 contribute almost nothing; one contributes negatively but strongly (the magnitude counts).
  g.strength[5] = 0.01;
  g.strength[17] = 0.0;
  g.strength[8] = -50.0;
  const auto grid = neuron_grid_order(g.profiles, g.strength, 0.1 / 5.0);
  EXPECT_EQ(grid.hidden, (std::vector<uint32_t>{5, 17}));
  EXPECT_EQ(grid.order.size(), 28u);
  EXPECT_NE(std::find(grid.order.begin(), grid.order.end(), 8u), grid.order.end());

  // At most 6 shown: the 6 largest magnitudes, whatever their sign.
  const auto capped = neuron_grid_order(g.profiles, g.strength, 0.0, 6);
  ASSERT_EQ(capped.order.size(), 6u);
  std::vector<uint32_t> by_strength(30);
  for (uint32_t i = 0; i < 30; ++i) by_strength[i] = i;
  std::stable_sort(by_strength.begin(), by_strength.end(),
                   [&](uint32_t a, uint32_t b) { return std::abs(g.strength[a]) > std::abs(g.strength[b]); });
  EXPECT_EQ(std::set<uint32_t>(capped.order.begin(), capped.order.end()),
            std::set<uint32_t>(by_strength.begin(), by_strength.begin() + 6));
  EXPECT_EQ(capped.hidden.size(), 24u);
  EXPECT_TRUE(std::is_sorted(capped.hidden.begin(), capped.hidden.end()));
}

TEST(NeuronGrid, NonFiniteAndFlatProfilesDoNotBreakTheOrder) {
  auto g = grouped_neurons(12, 10, 3);
  g.profiles[4][3] = std::nan("");
  g.profiles[7].assign(10, 2.0);  // flat: no correlation with anything
  g.profiles[9][0] = INFINITY;
  const auto grid = neuron_grid_order(g.profiles, g.strength, 0.0);
  ASSERT_EQ(grid.order.size(), 12u);
  EXPECT_EQ(std::set<uint32_t>(grid.order.begin(), grid.order.end()).size(), 12u);
  for (int c : grid.cluster) EXPECT_GE(c, 0);
}

TEST(NeuronGrid, EmptyAndAllZeroInputs) {
  EXPECT_TRUE(neuron_grid_order({}, {}).order.empty());
  const auto g = grouped_neurons(4, 5, 4);
  const auto grid = neuron_grid_order(g.profiles, std::vector<double>(4, 0.0));
  EXPECT_TRUE(grid.order.empty());  // nothing contributes: nothing to show
  EXPECT_EQ(grid.hidden.size(), 4u);
}

}  // namespace
