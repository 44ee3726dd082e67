// Whole-chunk passes over a layer-summary chunk's columns for the streaming analysis (LayerRuleStream,
// DepartureStream): where each series' stretch begins, whether the chunk is in the order a single pass needs, and
// the per-record tests the rules make first. Column by column, without a branch per record, so that the compiler
// vectorises them (an AVX2 build is chosen at load time on CPUs that have it).
#pragma once

#include <trainscope/format/run_reader.h>

#include <cstdint>
#include <vector>

namespace trainscope::analysis {

// The series of a chunk sorted by (layer, quantity, step), as the writer sorts it.
struct ChunkSeries {
  std::vector<uint32_t> begin;  // each series' first record, then the chunk's size
  bool in_order = true;         // each series' steps ascend, within the chunk's step range, series after series
  bool rising = true;           // ... strictly
  std::vector<uint8_t> starts;  // scratch: 1 where a series begins
};
void find_series(const format::SummaryColumns& c, ChunkSeries* out);

// Per-record flags of what the rules look at first; a stretch whose flags are all clear holds no non-finite
// value, no all-zero tensor and nothing that points at dead units.
enum RecordFlag : uint8_t {
  kNonFiniteRecord = 1,  // nan_count > 0 or inf_count > 0
  kAllZeroRecord = 2,    // numel > 0 and zero_fraction >= 1
  kMaybeDeadRecord = 4,  // zero_fraction >= the dead-units filter
};
// flags[k] for records [0, n) of the columns `nan`, `inf`, `zeros` (zero fraction) and `numel`; the OR of all.
uint8_t record_flags(const double* nan, const double* inf, const double* zeros, const double* numel, size_t n,
                     double dead_zero_fraction, uint8_t* flags);

}  // namespace trainscope::analysis
