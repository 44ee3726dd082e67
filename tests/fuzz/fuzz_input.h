// The fuzz input of segment_reader_fuzzer: one mode byte, then the bytes of one segment file.
//
// A mutated segment almost never passes its CRC32C checksums or decompresses, so most inputs would stop at the
// first check. The mode byte lets inputs reach the code behind those checks:
//   kRepairChecksums  the harness recomputes the segment header, chunk header, payload and trailer checksums of
//                     every chunk it finds walking the file, so mutations reach decompression and decoding;
//   kExpandedPayloads chunk payloads are stored uncompressed in the input (the stored-size field holds their
//                     length); the harness compresses each one with zstd and fixes the sizes and checksums, so
//                     mutations reach the protobuf and array decoders;
//   kTinyCache        the reader's cache holds 4 KiB, so decoded chunks are evicted and decoded again.
#pragma once

#include <cstdint>

namespace trainscope::fuzzing {

inline constexpr uint8_t kRepairChecksums = 1;
inline constexpr uint8_t kExpandedPayloads = 2;
inline constexpr uint8_t kTinyCache = 4;

}  // namespace trainscope::fuzzing
