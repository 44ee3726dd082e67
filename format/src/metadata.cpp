#include <trainscope/format/metadata.h>

#include "metadata_proto.h"

namespace trainscope::format {

const Layer* RunMetadata::find_layer(const std::string& name) const {
  for (const Layer& layer : layers)
    if (layer.name == name) return &layer;
  if (name == "(root)")
    for (const Layer& layer : layers)
      if (layer.name.empty()) return &layer;
  return nullptr;
}

std::string RunMetadata::display_name(const Layer& layer) {
  return layer.name.empty() ? "(root)" : layer.name;
}

void to_proto(const RunMetadata& in, proto::RunMetadata* out) {
  auto* h = out->mutable_header();
  h->set_format_major(in.header.format_major);
  h->set_format_minor(in.header.format_minor);
  h->set_created_unix_ms(in.header.created_unix_ms);
  h->set_model_name(in.header.model_name);
  h->set_rank(in.header.rank);
  h->set_world_size(in.header.world_size);
  for (const auto& [k, v] : in.header.config) (*h->mutable_config())[k] = v;
  h->set_producer(in.header.producer);
  for (const Layer& layer : in.layers) {
    auto* l = out->add_layers();
    l->set_id(layer.id);
    l->set_name(layer.name);
    if (layer.parent_id) l->set_parent_id(*layer.parent_id);
    l->set_kind(layer.kind);
    l->set_neuron_count(layer.neuron_count);
    for (int64_t d : layer.output_shape) l->add_output_shape(d);
    for (const ParameterInfo& p : layer.parameters) {
      auto* pi = l->add_parameters();
      pi->set_name(p.name);
      for (int64_t d : p.shape) pi->add_shape(d);
    }
    l->set_is_leaf(layer.is_leaf);
    if (const auto& g = layer.geometry) {
      auto* pg = l->mutable_geometry();
      for (int64_t v : g->kernel_size) pg->add_kernel_size(v);
      for (int64_t v : g->stride) pg->add_stride(v);
      for (int64_t v : g->padding) pg->add_padding(v);
      for (int64_t v : g->dilation) pg->add_dilation(v);
      pg->set_groups(g->groups);
      pg->set_transposed(g->transposed);
      for (int64_t v : g->output_padding) pg->add_output_padding(v);
      pg->set_ceil_mode(g->ceil_mode);
    }
  }
  for (const LayerEdge& e : in.edges) {
    auto* pe = out->add_edges();
    pe->set_from_layer(e.from_layer);
    pe->set_to_layer(e.to_layer);
    pe->set_recurrent(e.recurrent);
  }
}

RunMetadata from_proto(const proto::RunMetadata& in) {
  RunMetadata out;
  const auto& h = in.header();
  out.header.format_major = h.format_major();
  out.header.format_minor = h.format_minor();
  out.header.created_unix_ms = h.created_unix_ms();
  out.header.model_name = h.model_name();
  out.header.rank = h.rank();
  out.header.world_size = h.world_size();
  for (const auto& [k, v] : h.config()) out.header.config[k] = v;
  out.header.producer = h.producer();
  for (const auto& l : in.layers()) {
    Layer layer;
    layer.id = l.id();
    layer.name = l.name();
    if (l.has_parent_id()) layer.parent_id = l.parent_id();
    layer.kind = l.kind();
    layer.neuron_count = l.neuron_count();
    layer.output_shape.assign(l.output_shape().begin(), l.output_shape().end());
    for (const auto& p : l.parameters()) layer.parameters.push_back({p.name(), {p.shape().begin(), p.shape().end()}});
    layer.is_leaf = l.is_leaf();
    if (l.has_geometry()) {
      const auto& pg = l.geometry();
      LayerGeometry g;
      g.kernel_size.assign(pg.kernel_size().begin(), pg.kernel_size().end());
      g.stride.assign(pg.stride().begin(), pg.stride().end());
      g.padding.assign(pg.padding().begin(), pg.padding().end());
      g.dilation.assign(pg.dilation().begin(), pg.dilation().end());
      g.groups = pg.groups();
      g.transposed = pg.transposed();
      g.output_padding.assign(pg.output_padding().begin(), pg.output_padding().end());
      g.ceil_mode = pg.ceil_mode();
      layer.geometry = std::move(g);
    }
    out.layers.push_back(std::move(layer));
  }
  for (const auto& e : in.edges()) out.edges.push_back({e.from_layer(), e.to_layer(), e.recurrent()});
  return out;
}

}  // namespace trainscope::format
