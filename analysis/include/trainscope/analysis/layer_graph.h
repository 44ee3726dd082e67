// The recorded model as a hierarchy (the module tree) and a graph (which layer feeds which), with the orders the
// analyses need. Cycles (recurrent layers, back edges) are found and marked, so no traversal ever loops.
#pragma once

#include <trainscope/format/metadata.h>

#include <cstdint>
#include <string>
#include <vector>

namespace trainscope::analysis {

struct GraphEdge {
  uint32_t from = 0, to = 0;
  bool recurrent = false;  // closes a cycle: recorded as such, or found to be a back edge
};

class LayerGraph {
 public:
  explicit LayerGraph(const format::RunMetadata& metadata);

  size_t size() const { return layers_.size(); }
  const format::Layer& layer(uint32_t id) const { return layers_[id]; }
  const std::vector<format::Layer>& layers() const { return layers_; }
  std::string name(uint32_t id) const { return format::RunMetadata::display_name(layers_[id]); }

  // Hierarchy.
  const std::vector<uint32_t>& children(uint32_t id) const { return children_[id]; }
  std::vector<uint32_t> roots() const;
  int depth(uint32_t id) const { return depth_[id]; }
  std::vector<uint32_t> leaves_under(uint32_t id) const;  // the layer itself if it is a leaf
  bool is_ancestor(uint32_t ancestor, uint32_t id) const;

  // Data-flow graph between layers.
  const std::vector<GraphEdge>& edges() const { return edges_; }
  const std::vector<uint32_t>& inputs(uint32_t id) const { return inputs_[id]; }    // forward edges only
  const std::vector<uint32_t>& outputs(uint32_t id) const { return outputs_[id]; }  // forward edges only
  // Position in a topological order of the forward edges (recurrent edges ignored). Layers outside the graph are
  // placed by their module order, which for most models is the order of the forward pass.
  int forward_rank(uint32_t id) const { return forward_rank_[id]; }
  const std::vector<uint32_t>& forward_order() const { return forward_order_; }
  bool has_graph() const { return !edges_.empty(); }

 private:
  std::vector<format::Layer> layers_;
  std::vector<std::vector<uint32_t>> children_, inputs_, outputs_;
  std::vector<int> depth_, forward_rank_;
  std::vector<uint32_t> forward_order_;
  std::vector<GraphEdge> edges_;
};

}  // namespace trainscope::analysis
