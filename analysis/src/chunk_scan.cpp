#include "chunk_scan.h"

#include <trainscope/format/simd_clones.h>

#include <cstring>
#include <utility>

namespace trainscope::analysis {
namespace {

// starts[k] = 1 where record k begins a series (k = 0 included); whether any step falls, or repeats, within one.
TRAINSCOPE_SIMD_CLONES void mark_series_starts(const uint32_t* layer, const format::Quantity* quantity,
                                               const int64_t* step, size_t n, uint8_t* starts, bool* falls,
                                               bool* repeats) {
  starts[0] = 1;
  uint8_t down = 0, same = 0;
  for (size_t k = 1; k < n; ++k) {
    const uint8_t start = uint8_t((layer[k] != layer[k - 1]) | (quantity[k] != quantity[k - 1]));
    starts[k] = start;
    down |= uint8_t(!start & (step[k] < step[k - 1]));
    same |= uint8_t(!start & (step[k] == step[k - 1]));
  }
  *falls = down != 0;
  *repeats = same != 0;
}

TRAINSCOPE_SIMD_CLONES uint8_t flags_of(const double* nan, const double* inf, const double* zeros, const double* numel,
                                        size_t n, double dead, uint8_t* flags) {
  uint8_t any = 0;
  for (size_t k = 0; k < n; ++k) {
    const uint8_t f =
        uint8_t(((nan[k] > 0) | (inf[k] > 0)) * kNonFiniteRecord |
                ((numel[k] > 0) & (zeros[k] >= 1.0)) * kAllZeroRecord | (zeros[k] >= dead) * kMaybeDeadRecord);
    flags[k] = f;
    any |= f;
  }
  return any;
}

}  // namespace

void find_series(const format::SummaryColumns& c, ChunkSeries* out) {
  out->begin.clear();
  out->in_order = out->rising = true;
  const size_t n = c.size;
  if (n > 0) {
    std::vector<uint8_t>& starts = out->starts;
    starts.resize(n + 8);  // zero padding: the search below reads eight bytes at a time
    std::memset(starts.data() + n, 0, 8);
    bool falls = false, repeats = false;
    mark_series_starts(c.layer_id, c.quantity, c.step, n, starts.data(), &falls, &repeats);
    out->in_order = !falls;
    out->rising = !falls && !repeats;
    // The starts are few (a series holds several records): skip eight records at a time between them.
    for (size_t k = 0; k < n;) {
      uint64_t word;
      std::memcpy(&word, starts.data() + k, 8);
      if (word == 0) {
        k += 8;
        continue;
      }
      const size_t at = k + size_t(__builtin_ctzll(word)) / 8;  // little-endian: the lowest byte comes first
      if (at >= n) break;
      out->begin.push_back(uint32_t(at));
      k = at + 1;
    }
  }
  out->begin.push_back(uint32_t(n));
  // Per series: its steps ascend, so its first and last say whether all are within the chunk's range; and the
  // series come in (layer, quantity) order.
  for (size_t s = 0; s + 1 < out->begin.size() && out->in_order; ++s) {
    const size_t first = out->begin[s], last = out->begin[s + 1] - 1;
    out->in_order = c.step[first] >= c.first_step && c.step[last] <= c.last_step &&
                    (s == 0 || std::make_pair(c.layer_id[out->begin[s - 1]], c.quantity[out->begin[s - 1]]) <
                                   std::make_pair(c.layer_id[first], c.quantity[first]));
  }
  out->rising = out->rising && out->in_order;
}

uint8_t record_flags(const double* nan, const double* inf, const double* zeros, const double* numel, size_t n,
                     double dead_zero_fraction, uint8_t* flags) {
  return flags_of(nan, inf, zeros, numel, n, dead_zero_fraction, flags);
}

}  // namespace trainscope::analysis
