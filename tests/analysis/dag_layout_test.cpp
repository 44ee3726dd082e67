// layout_layer_dag: ranks follow the edges, nodes never share a slot, groups collapse into one node with their
// edges merged, back edges are marked, and barycentre ordering untangles a crossed graph.
#include <gtest/gtest.h>
#include <trainscope/analysis/dag_layout.h>

#include <set>

namespace {

namespace f = trainscope::format;
using trainscope::analysis::DagLayout;
using trainscope::analysis::LayerGraph;

// root -> {enc: {a, b, c}, dec: {d, e}}, edges a->b->c->d->e plus a skip a->c and a recurrent e->a.
f::RunMetadata model() {
  f::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  m.layers.push_back({1, "enc", 0u, "Sequential", 0, {}, {}, false});
  m.layers.push_back({2, "dec", 0u, "Sequential", 0, {}, {}, false});
  const char* names[] = {"enc.a", "enc.b", "enc.c", "dec.d", "dec.e"};
  for (uint32_t i = 0; i < 5; ++i) m.layers.push_back({3 + i, names[i], i < 3 ? 1u : 2u, "Linear", 4, {4}, {}, true});
  m.edges = {{3, 4, false}, {4, 5, false}, {5, 6, false}, {6, 7, false}, {3, 5, false}, {7, 3, true}};
  return m;
}

TEST(DagLayout, RanksFollowForwardEdgesAndSlotsAreDistinct) {
  const LayerGraph graph(model());
  const DagLayout layout = trainscope::analysis::layout_layer_dag(graph, std::vector<bool>(graph.size(), false));
  ASSERT_EQ(layout.nodes.size(), 5u);  // the leaves; expanded groups are not nodes
  std::set<std::pair<int, int>> slots;
  for (const auto& n : layout.nodes) EXPECT_TRUE(slots.insert({n.rank, n.position}).second);
  size_t back = 0;
  for (const auto& e : layout.edges) {
    if (e.recurrent) {
      ++back;
      continue;
    }
    EXPECT_LT(layout.nodes[e.from].rank, layout.nodes[e.to].rank);
  }
  EXPECT_EQ(back, 1u);
  // Longest path: a=0, b=1, c=2 (not 1, despite the skip), d=3, e=4.
  EXPECT_EQ(layout.nodes[size_t(layout.node_of_layer[5])].rank, 2);
  EXPECT_EQ(layout.ranks, 5);
  EXPECT_EQ(layout.node_of_layer[1], -1);
}

TEST(DagLayout, ACollapsedGroupIsOneNodeWithMergedEdges) {
  const LayerGraph graph(model());
  std::vector<bool> collapsed(graph.size(), false);
  collapsed[1] = true;  // enc
  const DagLayout layout = trainscope::analysis::layout_layer_dag(graph, collapsed);
  ASSERT_EQ(layout.nodes.size(), 3u);  // enc, d, e
  const int enc = layout.node_of_layer[1];
  ASSERT_GE(enc, 0);
  EXPECT_TRUE(layout.nodes[size_t(enc)].group);
  EXPECT_EQ(layout.node_of_layer[3], -1);  // hidden inside enc
  // enc->d once (from c), d->e, and the recurrent e->enc; the edges inside enc are gone.
  std::set<std::tuple<uint32_t, uint32_t, bool>> edges;
  for (const auto& e : layout.edges) edges.insert({layout.nodes[e.from].layer, layout.nodes[e.to].layer, e.recurrent});
  EXPECT_EQ(edges, (std::set<std::tuple<uint32_t, uint32_t, bool>>{{1, 6, false}, {6, 7, false}, {7, 1, true}}));
}

TEST(DagLayout, DefaultCollapseKeepsManyLayersSmall) {
  f::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  for (uint32_t g = 0; g < 50; ++g)
    m.layers.push_back({1 + g, "block" + std::to_string(g), 0u, "Seq", 0, {}, {}, false});
  for (uint32_t i = 0; i < 500; ++i)
    m.layers.push_back({51 + i,
                        "block" + std::to_string(i / 10) + ".fc" + std::to_string(i % 10),
                        1 + i / 10,
                        "Linear",
                        8,
                        {8},
                        {},
                        true});
  for (uint32_t i = 51; i + 1 < 551; ++i) m.edges.push_back({i, i + 1, false});
  const LayerGraph graph(m);
  const auto collapsed = trainscope::analysis::default_collapsed(graph, 60);
  const DagLayout layout = trainscope::analysis::layout_layer_dag(graph, collapsed);
  EXPECT_EQ(layout.nodes.size(), 50u);  // one node per block
  EXPECT_EQ(layout.ranks, 50);
  EXPECT_EQ(layout.edges.size(), 49u);
}

TEST(DagLayout, BarycentreOrderingRemovesCrossings) {
  // Two parallel chains whose second ranks are listed crossed in module order: x1->y2, x2->y1.
  f::RunMetadata m;
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  const char* names[] = {"x1", "x2", "y1", "y2", "z1", "z2"};
  for (uint32_t i = 0; i < 6; ++i) m.layers.push_back({1 + i, names[i], 0u, "Linear", 4, {4}, {}, true});
  m.edges = {{1, 4, false}, {2, 3, false}, {4, 5, false}, {3, 6, false}};
  const LayerGraph graph(m);
  const DagLayout layout = trainscope::analysis::layout_layer_dag(graph, std::vector<bool>(graph.size(), false));
  EXPECT_EQ(trainscope::analysis::count_crossings(layout), 0u);
}

}  // namespace
