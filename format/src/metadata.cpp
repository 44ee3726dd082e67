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
    out.layers.push_back(std::move(layer));
  }
  for (const auto& e : in.edges()) out.edges.push_back({e.from_layer(), e.to_layer(), e.recurrent()});
  return out;
}

}  // namespace trainscope::format
