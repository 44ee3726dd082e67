#include <trainscope/analysis/layer_graph.h>

#include <algorithm>
#include <functional>

namespace trainscope::analysis {

LayerGraph::LayerGraph(const format::RunMetadata& metadata) : layers_(metadata.layers) {
  const size_t n = layers_.size();
  for (size_t i = 0; i < n; ++i) layers_[i].id = uint32_t(i);  // ids are dense by contract; be safe anyway
  children_.resize(n);
  inputs_.resize(n);
  outputs_.resize(n);
  depth_.assign(n, 0);
  for (size_t i = 0; i < n; ++i)
    if (layers_[i].parent_id && *layers_[i].parent_id < n && *layers_[i].parent_id != i)
      children_[*layers_[i].parent_id].push_back(uint32_t(i));
  for (size_t i = 0; i < n; ++i) {  // depth by walking up, bounded in case parents form a loop
    int d = 0;
    auto p = layers_[i].parent_id;
    while (p && *p < n && d <= int(n)) {
      ++d;
      p = layers_[*p].parent_id;
    }
    depth_[i] = d;
  }

  // Back edges by depth-first search in module order: an edge to a layer still on the stack closes a cycle.
  std::vector<std::vector<std::pair<uint32_t, size_t>>> adjacency(n);
  for (const auto& e : metadata.edges) {
    if (e.from_layer >= n || e.to_layer >= n) continue;
    edges_.push_back({e.from_layer, e.to_layer, e.recurrent || e.from_layer == e.to_layer});
    adjacency[e.from_layer].push_back({e.to_layer, edges_.size() - 1});
  }
  std::vector<int> state(n, 0);  // 0 new, 1 on stack, 2 done
  for (uint32_t start = 0; start < n; ++start) {
    if (state[start]) continue;
    std::vector<std::pair<uint32_t, size_t>> stack{{start, 0}};
    state[start] = 1;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < adjacency[node].size()) {
        const auto [to, edge] = adjacency[node][next++];
        if (state[to] == 1) edges_[edge].recurrent = true;
        if (state[to] == 0) {
          state[to] = 1;
          stack.push_back({to, 0});
        }
      } else {
        state[node] = 2;
        stack.pop_back();
      }
    }
  }
  for (const auto& e : edges_) {
    if (e.recurrent) continue;
    outputs_[e.from].push_back(e.to);
    inputs_[e.to].push_back(e.from);
  }

  // Kahn's algorithm over forward edges; among ready layers the lowest module id goes first.
  std::vector<int> pending(n, 0);
  for (const auto& e : edges_)
    if (!e.recurrent) ++pending[e.to];
  std::vector<uint32_t> ready;
  for (uint32_t i = 0; i < n; ++i)
    if (!pending[i]) ready.push_back(i);
  std::make_heap(ready.begin(), ready.end(), std::greater<>());
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), std::greater<>());
    const uint32_t id = ready.back();
    ready.pop_back();
    forward_order_.push_back(id);
    for (uint32_t to : outputs_[id])
      if (--pending[to] == 0) {
        ready.push_back(to);
        std::push_heap(ready.begin(), ready.end(), std::greater<>());
      }
  }
  forward_rank_.assign(n, 0);
  for (size_t i = 0; i < forward_order_.size(); ++i) forward_rank_[forward_order_[i]] = int(i);
}

std::vector<uint32_t> LayerGraph::roots() const {
  std::vector<uint32_t> r;
  for (const auto& l : layers_)
    if (!l.parent_id || *l.parent_id >= layers_.size()) r.push_back(l.id);
  return r;
}

std::vector<uint32_t> LayerGraph::leaves_under(uint32_t id) const {
  std::vector<uint32_t> out, stack{id};
  std::vector<bool> seen(layers_.size(), false);
  while (!stack.empty()) {
    const uint32_t x = stack.back();
    stack.pop_back();
    if (seen[x]) continue;
    seen[x] = true;
    if (children_[x].empty()) out.push_back(x);
    for (auto it = children_[x].rbegin(); it != children_[x].rend(); ++it) stack.push_back(*it);
  }
  return out;
}

bool LayerGraph::is_ancestor(uint32_t ancestor, uint32_t id) const {
  auto p = layers_[id].parent_id;
  for (size_t guard = 0; p && *p < layers_.size() && guard <= layers_.size(); ++guard) {
    if (*p == ancestor) return true;
    p = layers_[*p].parent_id;
  }
  return false;
}

}  // namespace trainscope::analysis
