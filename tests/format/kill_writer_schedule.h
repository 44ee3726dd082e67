// What the crash-safety victim (kill_writer.cpp) records, derived from one seed, so that the test (kill_test.cpp)
// can recompute bit for bit what each step must hold.
#pragma once

#include <trainscope/format/metadata.h>
#include <trainscope/format/types.h>

#include <chrono>
#include <cstdint>

#include "test_support.h"

namespace trainscope::testing {

struct KillSchedule {
  uint64_t seed = 0;
  std::chrono::milliseconds flush_interval{100};
  std::chrono::microseconds step_period{2000};
  size_t segment_bytes = 0;
  size_t chunk_bytes = 0;
  int keyframe_interval = 4;
  uint32_t neurons = 32;
  int full_tensor_every = 4;   // a full weight tensor of decoder.fc2 every n-th step
  int neuron_stats_every = 2;  // per-neuron statistics every n-th step, summaries in between

  static KillSchedule from_seed(uint64_t seed) {
    KillSchedule s;
    s.seed = seed;
    // Vary the layout between runs: small segments (several roll-overs before the kill) and chunk sizes that close
    // chunks by size as well as by the flush timer.
    s.segment_bytes = size_t(96 + seed % 5 * 64) << 10;
    s.chunk_bytes = size_t(16 + seed / 5 % 4 * 24) << 10;
    s.keyframe_interval = int(2 + seed % 7);
    s.neurons = uint32_t(16 + seed % 3 * 16);
    return s;
  }

  static constexpr uint32_t kTensorLayer = 4;  // decoder.fc2 in small_model_metadata

  format::Snapshot snapshot(int64_t step, const format::RunMetadata& metadata) const {
    format::Snapshot s = synthetic_snapshot(step, neurons, metadata, step % neuron_stats_every == 0);
    s.wall_time = 0.002 * double(step) + 1.0;  // fixed, so the test can compare it too
    s.scalars.emplace_back("seed", double(seed));
    return s;
  }
  bool has_full_tensor(int64_t step) const { return step % full_tensor_every == 1; }
  format::FullTensor full_tensor(int64_t step) const {
    format::FullTensor t;
    t.layer_id = kTensorLayer;
    t.quantity = format::Quantity::Weight;
    t.step = step;
    t.shape = {int64_t(neurons), int64_t(neurons) * 8};
    t.values = drifting_weights(size_t(neurons) * neurons * 8, step, uint32_t(seed));
    return t;
  }
};

}  // namespace trainscope::testing
