// The snapshot view's picture of the model: the layer graph as a layered (Sugiyama-style) drawing, with groups of the
// module tree collapsed into one node or expanded into their children, so hundreds of layers fit. Layers are ranked
// by the longest path over forward edges (recurrent edges are kept apart and drawn as back edges); within a rank they
// are ordered by barycentre sweeps, which removes most edge crossings. Pure geometry in abstract units: the view
// scales it to its size.
#pragma once

#include <trainscope/analysis/layer_graph.h>

#include <cstdint>
#include <vector>

namespace trainscope::analysis {

struct DagNode {
  uint32_t layer = 0;
  bool group = false;  // a collapsed group standing for all its leaves
  int rank = 0;        // column, from the inputs (0) to the outputs
  int position = 0;    // row within the rank
};

struct DagEdge {
  uint32_t from = 0, to = 0;  // indices into DagLayout::nodes
  bool recurrent = false;     // a back edge (or recorded as recurrent)
};

struct DagLayout {
  std::vector<DagNode> nodes;
  std::vector<DagEdge> edges;
  std::vector<int> node_of_layer;  // layer id -> node index, or -1 (hidden in a collapsed group, or an expanded group)
  int ranks = 0;
  int max_rank_size = 0;
};

// `collapsed[id]` true: the group `id` is one node. Leaves are always nodes; an expanded group is not a node itself.
DagLayout layout_layer_dag(const LayerGraph& graph, const std::vector<bool>& collapsed);
// Collapses the deepest groups first until at most `max_nodes` nodes remain (or only the top-level groups are left).
std::vector<bool> default_collapsed(const LayerGraph& graph, size_t max_nodes = 60);
// Crossings between forward edges of adjacent ranks (for tests and for judging the ordering).
size_t count_crossings(const DagLayout& layout);

}  // namespace trainscope::analysis
