// The run's description: header, layer hierarchy and layer graph. Plain structs; the on-disk form is the
// RunMetadata protobuf message of format/proto/trainscope.proto.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace trainscope::format {

struct RunHeader {
  uint32_t format_major = 0;  // filled in by the writer
  uint32_t format_minor = 0;
  int64_t created_unix_ms = 0;  // 0 lets the writer stamp it
  std::string model_name;
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::map<std::string, std::string> config;
  std::string producer;
};

struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;
};

// A convolution's or pooling layer's mapping of input to output positions, one value per spatial axis.
struct LayerGeometry {
  std::vector<int64_t> kernel_size, stride, padding, dilation;
  int64_t groups = 0;  // 0 when not a convolution
  bool transposed = false;
  std::vector<int64_t> output_padding;
  bool ceil_mode = false;
  bool operator==(const LayerGeometry& o) const {
    return kernel_size == o.kernel_size && stride == o.stride && padding == o.padding && dilation == o.dilation &&
           groups == o.groups && transposed == o.transposed && output_padding == o.output_padding &&
           ceil_mode == o.ceil_mode;
  }
};

struct Layer {
  uint32_t id = 0;
  std::string name;  // dotted module path, "" for the root
  std::optional<uint32_t> parent_id;
  std::string kind;
  uint64_t neuron_count = 0;
  std::vector<int64_t> output_shape;
  std::vector<ParameterInfo> parameters;
  bool is_leaf = true;
  std::optional<LayerGeometry> geometry;  // convolution and pooling layers (format 1.1)
};

struct LayerEdge {
  uint32_t from_layer = 0;
  uint32_t to_layer = 0;
  bool recurrent = false;
};

struct RunMetadata {
  RunHeader header;
  std::vector<Layer> layers;  // layers[i].id == i
  std::vector<LayerEdge> edges;

  const Layer* find_layer(const std::string& name) const;
  // Dotted name for display: the root module is shown as "(root)".
  static std::string display_name(const Layer& layer);
};

}  // namespace trainscope::format
