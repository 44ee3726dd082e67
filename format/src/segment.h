// Segment files: header, self-framed chunks, index footer. The byte layout is documented in format/FORMAT.md.
#pragma once

#include <trainscope/format/run_reader.h>
#include <trainscope/format/thread_placement.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainscope.pb.h"

namespace trainscope::format {

enum class ChunkType : uint16_t {
  Metadata = 1,
  Scalars = 2,
  LayerSummary = 3,
  NeuronStats = 4,
  FullTensor = 5,
  Gap = 6,
  Index = 15,
};
const char* chunk_type_name(uint16_t type);

inline constexpr char kSegmentMagic[8] = {'T', 'R', 'S', 'C', 'O', 'P', 'E', '\0'};
inline constexpr uint32_t kChunkSync = 0x4B435354u;     // "TSCK" little-endian
inline constexpr uint32_t kTrailerMagic = 0x444E4554u;  // "TEND" little-endian
inline constexpr uint8_t kCodecZstd = 1;
inline constexpr size_t kSegmentHeaderSize = 32;
inline constexpr size_t kChunkHeaderSize = 48;
inline constexpr size_t kTrailerSize = 16;
inline constexpr uint32_t kNoLayer = 0xFFFFFFFFu;

// FULL_TENSOR aux bits: quantity in the low byte, then flags.
inline constexpr uint32_t kAuxProbeBatch = 1u << 8;
inline constexpr uint32_t kAuxKeyframe = 1u << 9;

std::string segment_file_name(uint32_t sequence);  // "segment-000000.tss"
bool is_segment_file_name(const std::string& name);

struct ChunkHeader {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint32_t layer_id = kNoLayer;
  uint32_t aux = 0;
  int64_t first_step = 0;
  int64_t last_step = 0;
  uint32_t stored_size = 0;
  uint32_t raw_size = 0;
  uint32_t payload_crc = 0;
};
void encode_chunk_header(const ChunkHeader& h, uint8_t out[kChunkHeaderSize]);
// False if the sync word or the header checksum is wrong.
bool decode_chunk_header(const uint8_t in[kChunkHeaderSize], ChunkHeader* h);

struct SegmentHeader {
  uint16_t format_major = 0;
  uint16_t format_minor = 0;
  uint8_t codec = kCodecZstd;
  uint32_t sequence = 0;
};

// Appends chunks to one segment file with plain write(2) calls, one per chunk, so a killed process leaves every
// completed chunk in the file.
class SegmentFileWriter {
 public:
  // Chunks of per-neuron statistics are compressed at `statistics_zstd_level`, all others at `zstd_level` (see
  // WriterOptions). Throws FormatError.
  SegmentFileWriter(std::filesystem::path path, uint32_t sequence, int zstd_level, int statistics_zstd_level);
  ~SegmentFileWriter();
  SegmentFileWriter(const SegmentFileWriter&) = delete;
  SegmentFileWriter& operator=(const SegmentFileWriter&) = delete;

  // Compresses `payload` and writes it as one chunk. Throws FormatError naming the file and offset.
  void write_chunk(ChunkHeader header, const std::string& payload);
  void write_chunk(ChunkHeader header, const uint8_t* payload, size_t size);
  // From now on, chunks are compressed in pieces with yielder->pause() between them (nullptr: in one call).
  void share_core(CoreYielder* yielder) { yielder_ = yielder; }
  // Writes an already framed chunk (header + payload) as it is; used by trim to copy without recompression.
  void write_framed_chunk(const ChunkHeader& header, const std::string& framed_bytes);
  // Writes the index footer and closes the file.
  void close();
  void sync();
  uint64_t size() const { return offset_; }
  const std::filesystem::path& path() const { return path_; }
  uint64_t raw_bytes() const { return raw_bytes_; }

 private:
  void write_all(const void* data, size_t size);
  size_t compress_in_pieces(uint8_t* out, size_t capacity, const uint8_t* payload, size_t size,
                            int level);  // zstd result
  void add_to_index(const ChunkHeader& header, uint64_t offset);

  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
  uint64_t raw_bytes_ = 0;
  int zstd_level_, statistics_zstd_level_;
  void* cctx_ = nullptr;
  CoreYielder* yielder_ = nullptr;
  std::string compressed_;
  proto::SegmentIndex index_;
};

// What indexing one segment file found.
struct SegmentScan {
  SegmentHeader header;
  bool has_footer = false;
  uint64_t file_size = 0;
  uint64_t scanned_until = 0;  // where a later rescan of a live segment continues
  std::vector<ChunkInfo> chunks;
  std::vector<Problem> problems;
};

// Reads the header (throws FormatError for a file that is not a segment, or of a newer major version), then the
// footer, or scans the chunk headers from `resume_offset` when there is no valid footer.
SegmentScan index_segment(const std::filesystem::path& path, uint32_t segment_number, uint64_t resume_offset = 0);

// Reads one chunk's framed bytes (header + payload) from an open file. Throws FormatError naming file and offset.
std::string read_framed_chunk(int fd, const std::filesystem::path& path, const ChunkInfo& chunk);
// The same into a buffer the caller reuses from chunk to chunk (no allocation once it is large enough).
void read_framed_chunk(int fd, const std::filesystem::path& path, const ChunkInfo& chunk, std::string* framed);
// Checks the checksum and decompresses. Throws FormatError naming file and offset.
std::string decompress_chunk(const std::filesystem::path& path, const ChunkInfo& chunk, const std::string& framed);
void decompress_chunk(const std::filesystem::path& path, const ChunkInfo& chunk, const std::string& framed,
                      std::string* raw);

}  // namespace trainscope::format

namespace trainscope::format {
// Checks a framed chunk's header and payload checksums without decompressing it.
bool framed_chunk_intact(const std::string& framed);
}  // namespace trainscope::format
