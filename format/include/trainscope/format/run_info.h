// What `trainscope info` prints and the viewer's status line shows: a recording described from its index and its
// small chunks (scalars and layer summaries) only, never its per-neuron data.
#pragma once

#include <trainscope/format/run_reader.h>

#include <optional>
#include <string>
#include <vector>

namespace trainscope::format {

struct ScalarHealth {
  std::string name;
  uint64_t count = 0;
  std::optional<int64_t> first_non_finite_step;  // first step at which the scalar was NaN or Inf
  double last_value = 0;
};

struct RunInfo {
  std::filesystem::path directory;
  RunMetadata metadata;
  size_t layer_count = 0, leaf_count = 0;
  uint64_t neuron_count = 0;  // over leaf layers
  int64_t first_step = 0, last_step = 0;
  uint64_t scalar_steps = 0;  // steps with scalars
  uint64_t snapshots = 0;     // steps with per-neuron statistics
  uint64_t full_tensors = 0;
  uint64_t chunks = 0;
  size_t segments = 0;
  bool complete = false;  // every segment closed cleanly
  uint64_t stored_bytes = 0, raw_bytes = 0;
  std::vector<ScalarHealth> scalars;
  std::vector<GapInfo> gaps;
  std::vector<Problem> problems;  // found by indexing (not a full checksum pass: see RunReader::verify)
};

RunInfo describe_run(RunReader& reader);

}  // namespace trainscope::format
