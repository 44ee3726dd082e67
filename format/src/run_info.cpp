#include <trainscope/format/run_info.h>

#include <cmath>

#include "segment.h"

namespace trainscope::format {

RunInfo describe_run(RunReader& reader) {
  RunInfo info;
  info.directory = reader.directory();
  info.metadata = reader.metadata();
  info.layer_count = info.metadata.layers.size();
  for (const Layer& layer : info.metadata.layers)
    if (layer.is_leaf) ++info.leaf_count, info.neuron_count += layer.neuron_count;
  info.first_step = reader.first_step();
  info.last_step = reader.last_step();
  info.snapshots = reader.snapshot_steps().size();
  for (const ChunkInfo& c : reader.chunks()) info.full_tensors += c.type == uint16_t(ChunkType::FullTensor);
  info.chunks = reader.chunks().size();
  info.segments = reader.segment_files().size();
  info.complete = reader.complete();
  info.stored_bytes = reader.stored_bytes();
  info.raw_bytes = reader.raw_bytes();
  for (const ScalarSeries& s : reader.read_scalars()) {
    ScalarHealth h{s.name, s.values.size(), std::nullopt, s.values.empty() ? 0.0 : s.values.back()};
    for (size_t i = 0; i < s.values.size(); ++i)
      if (!std::isfinite(s.values[i])) {
        h.first_non_finite_step = s.steps[i];
        break;
      }
    info.scalar_steps = std::max<uint64_t>(info.scalar_steps, s.steps.size());
    info.scalars.push_back(std::move(h));
  }
  info.gaps = reader.gaps();
  info.problems = reader.problems();
  return info;
}

}  // namespace trainscope::format
