#include <trainscope/analysis/dag_layout.h>

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <set>

namespace trainscope::analysis {
namespace {

// The node standing for layer `id`: its outermost collapsed ancestor, itself if it is a node, or -1.
int representative(const LayerGraph& graph, const std::vector<bool>& collapsed, const std::vector<int>& node_of_layer,
                   uint32_t id) {
  int rep = node_of_layer[id];
  for (auto p = graph.layer(id).parent_id; p; p = graph.layer(*p).parent_id)
    if (*p < collapsed.size() && collapsed[*p] && node_of_layer[*p] >= 0) rep = node_of_layer[*p];
  return rep;
}

}  // namespace

DagLayout layout_layer_dag(const LayerGraph& graph, const std::vector<bool>& collapsed) {
  DagLayout out;
  out.node_of_layer.assign(graph.size(), -1);
  auto is_collapsed = [&](uint32_t id) { return id < collapsed.size() && collapsed[id]; };
  // Visible nodes: leaves, and collapsed groups not inside another collapsed group; in forward order.
  std::function<void(uint32_t)> visit = [&](uint32_t id) {
    if (graph.children(id).empty() || is_collapsed(id)) {
      out.node_of_layer[id] = int(out.nodes.size());
      out.nodes.push_back({id, !graph.children(id).empty(), 0, 0});
      return;
    }
    for (uint32_t child : graph.children(id)) visit(child);
  };
  for (uint32_t root : graph.roots()) visit(root);
  const size_t n = out.nodes.size();
  if (n == 0) return out;
  // Nodes in the order of the forward pass (a group at its earliest leaf).
  std::vector<int> order_key(n, 0);
  for (size_t i = 0; i < n; ++i) {
    int key = graph.forward_rank(out.nodes[i].layer);
    for (uint32_t leaf : graph.leaves_under(out.nodes[i].layer)) key = std::min(key, graph.forward_rank(leaf));
    order_key[i] = key;
  }

  // Edges between visible nodes, deduplicated; edges inside one collapsed group disappear.
  std::set<std::pair<uint32_t, uint32_t>> seen;
  std::vector<std::vector<uint32_t>> preds(n), succs(n);
  for (const auto& e : graph.edges()) {
    const int a = representative(graph, collapsed, out.node_of_layer, e.from);
    const int b = representative(graph, collapsed, out.node_of_layer, e.to);
    if (a < 0 || b < 0 || a == b || !seen.insert({uint32_t(a), uint32_t(b)}).second) continue;
    out.edges.push_back({uint32_t(a), uint32_t(b), e.recurrent});
  }
  // Collapsing can turn forward edges into a cycle between groups: any edge against the forward order is drawn as a
  // back edge, so ranking never loops.
  for (auto& e : out.edges) {
    if (!e.recurrent && order_key[e.to] < order_key[e.from]) e.recurrent = true;
    if (e.recurrent) continue;
    preds[e.to].push_back(e.from);
    succs[e.from].push_back(e.to);
  }

  // Ranks: longest path from the inputs, visiting nodes in forward order (every forward edge goes up that order).
  std::vector<size_t> by_order(n);
  std::iota(by_order.begin(), by_order.end(), size_t(0));
  std::stable_sort(by_order.begin(), by_order.end(), [&](size_t a, size_t b) { return order_key[a] < order_key[b]; });
  int last_rank = -1;
  for (size_t i : by_order) {
    int rank = 0;
    if (preds[i].empty() && succs[i].empty()) {
      rank = graph.has_graph() ? std::max(0, last_rank) : last_rank + 1;  // unconnected: next to its neighbour in order
    } else {
      for (uint32_t p : preds[i]) rank = std::max(rank, out.nodes[p].rank + 1);
    }
    out.nodes[i].rank = rank;
    last_rank = std::max(last_rank, rank);
  }
  out.ranks = last_rank + 1;

  // Positions: forward order first, then barycentre sweeps down and up.
  std::vector<std::vector<uint32_t>> rank_members(size_t(out.ranks));
  for (size_t i : by_order) rank_members[size_t(out.nodes[i].rank)].push_back(uint32_t(i));
  auto assign_positions = [&] {
    for (auto& members : rank_members)
      for (size_t k = 0; k < members.size(); ++k) out.nodes[members[k]].position = int(k);
  };
  assign_positions();
  for (int sweep = 0; sweep < 4; ++sweep) {
    const bool down = sweep % 2 == 0;
    for (int r = down ? 1 : out.ranks - 2; down ? r < out.ranks : r >= 0; r += down ? 1 : -1) {
      auto& members = rank_members[size_t(r)];
      std::vector<std::pair<double, uint32_t>> keyed;
      for (uint32_t v : members) {
        const auto& neighbours = down ? preds[v] : succs[v];
        double sum = 0;
        int count = 0;
        for (uint32_t u : neighbours)
          if (out.nodes[u].rank == r + (down ? -1 : 1)) sum += out.nodes[u].position, ++count;
        keyed.push_back({count ? sum / count : double(out.nodes[v].position), v});
      }
      std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = 0; k < keyed.size(); ++k) members[k] = keyed[k].second;
      for (size_t k = 0; k < members.size(); ++k) out.nodes[members[k]].position = int(k);
    }
  }
  for (const auto& members : rank_members) out.max_rank_size = std::max(out.max_rank_size, int(members.size()));
  return out;
}

std::vector<bool> default_collapsed(const LayerGraph& graph, size_t max_nodes) {
  std::vector<bool> collapsed(graph.size(), false);
  // Groups by depth, deepest first; the roots stay open (the whole model as one box says nothing).
  std::vector<uint32_t> groups;
  for (uint32_t id = 0; id < graph.size(); ++id)
    if (!graph.children(id).empty() && graph.layer(id).parent_id) groups.push_back(id);
  std::stable_sort(groups.begin(), groups.end(),
                   [&](uint32_t a, uint32_t b) { return graph.depth(a) > graph.depth(b); });
  auto visible = [&] { return layout_layer_dag(graph, collapsed).nodes.size(); };
  size_t count = visible();
  for (size_t i = 0; i < groups.size() && count > max_nodes;) {
    // Collapse a whole depth level at once, so sibling groups look alike.
    const int depth = graph.depth(groups[i]);
    for (; i < groups.size() && graph.depth(groups[i]) == depth; ++i) collapsed[groups[i]] = true;
    count = visible();
  }
  return collapsed;
}

size_t count_crossings(const DagLayout& layout) {
  size_t crossings = 0;
  std::vector<const DagEdge*> forward;
  for (const auto& e : layout.edges)
    if (!e.recurrent && layout.nodes[e.to].rank == layout.nodes[e.from].rank + 1) forward.push_back(&e);
  for (size_t i = 0; i < forward.size(); ++i)
    for (size_t j = i + 1; j < forward.size(); ++j) {
      const auto &a = *forward[i], &b = *forward[j];
      if (layout.nodes[a.from].rank != layout.nodes[b.from].rank) continue;
      const int s = layout.nodes[a.from].position - layout.nodes[b.from].position;
      const int t = layout.nodes[a.to].position - layout.nodes[b.to].position;
      if ((s < 0 && t > 0) || (s > 0 && t < 0)) ++crossings;
    }
  return crossings;
}

}  // namespace trainscope::analysis
