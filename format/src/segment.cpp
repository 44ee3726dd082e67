#include "segment.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "crc32c.h"
#include "trainscope/format/version.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the on-disk format is little-endian; add byte swaps");

namespace trainscope::format {
namespace {

template <typename T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string at(const std::filesystem::path& path, uint64_t offset) {
  return path.string() + " at offset " + std::to_string(offset);
}

std::string errno_text() {
  return std::strerror(errno);
}

// Chunks up to this raw size are decompressed in one call into a buffer of the announced size; larger ones grow
// their buffer as the data really comes out.
constexpr uint32_t kTrustedRawSize = 64u << 20;

// Reads exactly `size` bytes at `offset`; returns how many were available.
size_t pread_full(int fd, void* data, size_t size, uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, static_cast<char*>(data) + done, size - done, off_t(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return done;
    }
    if (n == 0) break;
    done += size_t(n);
  }
  return done;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

const char* chunk_type_name(uint16_t type) {
  switch (ChunkType(type)) {
    case ChunkType::Metadata: return "metadata";
    case ChunkType::Scalars: return "scalars";
    case ChunkType::LayerSummary: return "layer-summary";
    case ChunkType::NeuronStats: return "neuron-stats";
    case ChunkType::FullTensor: return "full-tensor";
    case ChunkType::Gap: return "gap";
    case ChunkType::Index: return "index";
  }
  return "unknown";
}

std::string segment_file_name(uint32_t sequence) {
  char name[32];
  std::snprintf(name, sizeof name, "segment-%06u.tss", sequence);
  return name;
}

bool is_segment_file_name(const std::string& name) {
  return name.size() > 12 && name.rfind("segment-", 0) == 0 && name.substr(name.size() - 4) == ".tss";
}

void encode_chunk_header(const ChunkHeader& h, uint8_t out[kChunkHeaderSize]) {
  put<uint32_t>(out + 0, kChunkSync);
  put<uint16_t>(out + 4, h.type);
  put<uint16_t>(out + 6, h.flags);
  put<uint32_t>(out + 8, h.layer_id);
  put<uint32_t>(out + 12, h.aux);
  put<int64_t>(out + 16, h.first_step);
  put<int64_t>(out + 24, h.last_step);
  put<uint32_t>(out + 32, h.stored_size);
  put<uint32_t>(out + 36, h.raw_size);
  put<uint32_t>(out + 40, h.payload_crc);
  put<uint32_t>(out + 44, crc32c(out, 44));
}

bool decode_chunk_header(const uint8_t in[kChunkHeaderSize], ChunkHeader* h) {
  if (get<uint32_t>(in) != kChunkSync) return false;
  if (get<uint32_t>(in + 44) != crc32c(in, 44)) return false;
  h->type = get<uint16_t>(in + 4);
  h->flags = get<uint16_t>(in + 6);
  h->layer_id = get<uint32_t>(in + 8);
  h->aux = get<uint32_t>(in + 12);
  h->first_step = get<int64_t>(in + 16);
  h->last_step = get<int64_t>(in + 24);
  h->stored_size = get<uint32_t>(in + 32);
  h->raw_size = get<uint32_t>(in + 36);
  h->payload_crc = get<uint32_t>(in + 40);
  return true;
}

SegmentFileWriter::SegmentFileWriter(std::filesystem::path path, uint32_t sequence, int zstd_level,
                                     int statistics_zstd_level)
    : path_(std::move(path)), zstd_level_(zstd_level), statistics_zstd_level_(statistics_zstd_level) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FormatError(path_.string() + ": cannot create segment file: " + errno_text());
  cctx_ = ZSTD_createCCtx();
  uint8_t header[kSegmentHeaderSize] = {};
  std::memcpy(header, kSegmentMagic, 8);
  put<uint16_t>(header + 8, uint16_t(kFormatMajor));
  put<uint16_t>(header + 10, uint16_t(kFormatMinor));
  header[12] = kCodecZstd;
  put<uint32_t>(header + 16, sequence);
  put<uint32_t>(header + 28, crc32c(header, 28));
  write_all(header, sizeof header);
}

SegmentFileWriter::~SegmentFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx_));
}

void SegmentFileWriter::write_all(const void* data, size_t size) {
  const auto* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd_, p + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw FormatError(path_.string() + ": write failed at offset " + std::to_string(offset_ + done) + ": " +
                        errno_text());
    }
    done += size_t(n);
  }
  offset_ += size;
}

void SegmentFileWriter::add_to_index(const ChunkHeader& h, uint64_t offset) {
  index_.add_offset(offset);
  index_.add_type(h.type);
  index_.add_layer_id(h.layer_id);
  index_.add_aux(h.aux);
  index_.add_first_step(h.first_step);
  index_.add_last_step(h.last_step);
  index_.add_stored_size(h.stored_size);
  index_.add_raw_size(h.raw_size);
}

void SegmentFileWriter::write_chunk(ChunkHeader header, const std::string& payload) {
  write_chunk(header, reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
}

void SegmentFileWriter::write_chunk(ChunkHeader header, const uint8_t* payload, size_t size) {
  if (size > 0xFFFFFFF0u) throw FormatError(path_.string() + ": chunk payload over 4 GiB");
  const size_t bound = ZSTD_compressBound(size);
  if (compressed_.size() < kChunkHeaderSize + bound) compressed_.resize(kChunkHeaderSize + bound);
  auto* out = reinterpret_cast<uint8_t*>(compressed_.data());
  const int level = header.type == uint16_t(ChunkType::NeuronStats) ? statistics_zstd_level_ : zstd_level_;
  const size_t n =
      yielder_ ? compress_in_pieces(out + kChunkHeaderSize, bound, payload, size, level)
               : ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(cctx_), out + kChunkHeaderSize, bound, payload, size, level);
  if (ZSTD_isError(n)) throw FormatError(path_.string() + ": zstd compression failed: " + ZSTD_getErrorName(n));
  header.stored_size = uint32_t(n);
  header.raw_size = uint32_t(size);
  header.payload_crc = crc32c(out + kChunkHeaderSize, n);
  encode_chunk_header(header, out);
  const uint64_t offset = offset_;
  write_all(out, kChunkHeaderSize + n);
  raw_bytes_ += size;
  if (header.type != uint16_t(ChunkType::Index)) add_to_index(header, offset);
}

size_t SegmentFileWriter::compress_in_pieces(uint8_t* out, size_t capacity, const uint8_t* payload, size_t size,
                                             int level) {
  // One frame, as ZSTD_compressCCtx writes it (content size in the header), with each piece flushed as its own block:
  // zstd otherwise buffers 128 KB before compressing any of it. Measured: no larger than one call (synthetic
  // statistics in tests/format; recorder_bench's full tensors 0.497x of torch::save, 0.511x in one call).
  constexpr size_t kPiece = 16 * 1024;
  auto* cctx = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
  size_t r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setPledgedSrcSize(cctx, size);
  if (ZSTD_isError(r)) return r;
  ZSTD_outBuffer dst{out, capacity, 0};
  size_t done = 0;
  do {
    const size_t piece = std::min(kPiece, size - done);
    const bool last = done + piece == size;
    ZSTD_inBuffer src{payload + done, piece, 0};
    do {
      const size_t before = dst.pos;
      r = ZSTD_compressStream2(cctx, &dst, &src, last ? ZSTD_e_end : ZSTD_e_flush);
      if (ZSTD_isError(r)) return r;
      // The capacity is the bound, so each piece finishes; never spin on a full buffer all the same.
      if (r != 0 && dst.pos == before && dst.pos == dst.size) return size_t(-ZSTD_error_dstSize_tooSmall);
    } while (r != 0);
    done += piece;
    yielder_->pause();
  } while (done < size);
  return dst.pos;
}

void SegmentFileWriter::write_framed_chunk(const ChunkHeader& header, const std::string& framed_bytes) {
  const uint64_t offset = offset_;
  write_all(framed_bytes.data(), framed_bytes.size());
  raw_bytes_ += header.raw_size;
  add_to_index(header, offset);
}

void SegmentFileWriter::close() {
  if (fd_ < 0) return;
  const uint64_t index_offset = offset_;
  ChunkHeader h;
  h.type = uint16_t(ChunkType::Index);
  h.first_step = index_.first_step_size() ? index_.first_step(0) : 0;
  h.last_step = h.first_step;
  for (int i = 0; i < index_.first_step_size(); ++i) {
    h.first_step = std::min(h.first_step, index_.first_step(i));
    h.last_step = std::max(h.last_step, index_.last_step(i));
  }
  write_chunk(h, index_.SerializeAsString());
  uint8_t trailer[kTrailerSize];
  put<uint64_t>(trailer, index_offset);
  put<uint32_t>(trailer + 8, crc32c(trailer, 8));
  put<uint32_t>(trailer + 12, kTrailerMagic);
  write_all(trailer, sizeof trailer);
  ::close(fd_);
  fd_ = -1;
}

void SegmentFileWriter::sync() {
  if (fd_ >= 0) ::fdatasync(fd_);
}

std::string read_framed_chunk(int fd, const std::filesystem::path& path, const ChunkInfo& chunk) {
  std::string framed;
  read_framed_chunk(fd, path, chunk, &framed);
  return framed;
}

void read_framed_chunk(int fd, const std::filesystem::path& path, const ChunkInfo& chunk, std::string* framed) {
  framed->resize(kChunkHeaderSize + size_t(chunk.stored_size));
  if (pread_full(fd, framed->data(), framed->size(), chunk.offset) != framed->size())
    throw FormatError(at(path, chunk.offset) + ": chunk is cut short (file ends inside it)");
}

std::string decompress_chunk(const std::filesystem::path& path, const ChunkInfo& chunk, const std::string& framed) {
  std::string raw;
  decompress_chunk(path, chunk, framed, &raw);
  return raw;
}

void decompress_chunk(const std::filesystem::path& path, const ChunkInfo& chunk, const std::string& framed,
                      std::string* raw_out) {
  std::string& raw = *raw_out;
  ChunkHeader h;
  const auto* bytes = reinterpret_cast<const uint8_t*>(framed.data());
  if (framed.size() < kChunkHeaderSize || !decode_chunk_header(bytes, &h))
    throw FormatError(at(path, chunk.offset) + ": corrupt chunk header");
  if (framed.size() != kChunkHeaderSize + size_t(h.stored_size))
    throw FormatError(at(path, chunk.offset) + ": chunk length does not match its header");
  if (crc32c(bytes + kChunkHeaderSize, h.stored_size) != h.payload_crc)
    throw FormatError(at(path, chunk.offset) + ": checksum mismatch in " + chunk_type_name(h.type) + " chunk");
  // The raw size comes from the file: never allocate more than the payload can really expand to. Each zstd block
  // holds at most 128 KiB and takes at least 3 bytes, and the writer always records the content size in the frame.
  const unsigned long long content = ZSTD_getFrameContentSize(bytes + kChunkHeaderSize, h.stored_size);
  if (content != h.raw_size || uint64_t(h.raw_size) > (uint64_t(h.stored_size) / 3 + 1) * (128 << 10))
    throw FormatError(at(path, chunk.offset) + ": chunk does not decompress (its zstd frame does not hold the " +
                      std::to_string(h.raw_size) + " bytes its header announces)");
  if (h.raw_size <= kTrustedRawSize) {
    raw.resize(h.raw_size);
    const size_t n = ZSTD_decompress(raw.data(), raw.size(), bytes + kChunkHeaderSize, h.stored_size);
    if (ZSTD_isError(n) || n != h.raw_size)
      throw FormatError(at(path, chunk.offset) + ": chunk does not decompress (" +
                        (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size") + ")");
    return;
  }
  // Large: grow the output as zstd really produces it, so a forged size cannot make the reader allocate gigabytes.
  std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> stream(ZSTD_createDStream(), ZSTD_freeDStream);
  ZSTD_inBuffer in{bytes + kChunkHeaderSize, h.stored_size, 0};
  raw.resize(kTrustedRawSize);
  ZSTD_outBuffer out{raw.data(), raw.size(), 0};
  for (;;) {
    const size_t r = ZSTD_decompressStream(stream.get(), &out, &in);
    if (ZSTD_isError(r))
      throw FormatError(at(path, chunk.offset) + ": chunk does not decompress (" + ZSTD_getErrorName(r) + ")");
    if (r == 0) break;
    if (out.pos == out.size) {
      if (out.size >= h.raw_size) break;  // more output than announced
      raw.resize(std::min<size_t>(size_t(h.raw_size), raw.size() * 2));
      out.dst = raw.data();
      out.size = raw.size();
    } else if (in.pos == in.size) {
      break;  // the frame ends early
    }
  }
  if (out.pos != h.raw_size || in.pos != in.size)
    throw FormatError(at(path, chunk.offset) + ": chunk does not decompress (wrong size)");
}

namespace {

ChunkInfo info_from_header(const ChunkHeader& h, uint32_t segment, uint64_t offset) {
  ChunkInfo c;
  c.segment = segment;
  c.offset = offset;
  c.type = h.type;
  c.layer_id = h.layer_id;
  c.aux = h.aux;
  c.first_step = h.first_step;
  c.last_step = h.last_step;
  c.stored_size = h.stored_size;
  c.raw_size = h.raw_size;
  return c;
}

// Finds the next offset >= from where a valid chunk header starts, or file_size.
uint64_t resync(int fd, uint64_t from, uint64_t file_size) {
  std::vector<uint8_t> buffer(1 << 16);
  for (uint64_t base = from; base + kChunkHeaderSize <= file_size;) {
    const size_t got = pread_full(fd, buffer.data(), buffer.size(), base);
    if (got < kChunkHeaderSize) break;
    for (size_t i = 0; i + kChunkHeaderSize <= got; ++i) {
      if (get<uint32_t>(&buffer[i]) != kChunkSync) continue;
      ChunkHeader h;
      if (decode_chunk_header(&buffer[i], &h)) return base + i;
    }
    base += got - kChunkHeaderSize + 1;
  }
  return file_size;
}

bool read_footer(int fd, const std::filesystem::path& path, uint32_t segment, uint64_t file_size, SegmentScan* scan) {
  if (file_size < kSegmentHeaderSize + kChunkHeaderSize + kTrailerSize) return false;
  uint8_t trailer[kTrailerSize];
  if (pread_full(fd, trailer, kTrailerSize, file_size - kTrailerSize) != kTrailerSize) return false;
  if (get<uint32_t>(trailer + 12) != kTrailerMagic) return false;
  const auto problem = [&](const std::string& what) {
    scan->problems.push_back({Problem::Kind::BadFooter, path, file_size - kTrailerSize,
                              path.string() + ": " + what + "; the segment was indexed by scanning instead"});
    return false;
  };
  if (get<uint32_t>(trailer + 8) != crc32c(trailer, 8)) return problem("index footer trailer checksum mismatch");
  const uint64_t index_offset = get<uint64_t>(trailer);
  if (index_offset < kSegmentHeaderSize || index_offset + kChunkHeaderSize + kTrailerSize > file_size)
    return problem("index footer points outside the file");
  uint8_t hb[kChunkHeaderSize];
  ChunkHeader h;
  if (pread_full(fd, hb, kChunkHeaderSize, index_offset) != kChunkHeaderSize || !decode_chunk_header(hb, &h) ||
      h.type != uint16_t(ChunkType::Index) ||
      index_offset + kChunkHeaderSize + h.stored_size + kTrailerSize != file_size)
    return problem("corrupt index footer at offset " + std::to_string(index_offset));
  const ChunkInfo index_chunk = info_from_header(h, segment, index_offset);
  proto::SegmentIndex index;
  try {
    const std::string raw = decompress_chunk(path, index_chunk, read_framed_chunk(fd, path, index_chunk));
    if (!index.ParseFromString(raw)) return problem("index footer does not parse");
  } catch (const FormatError& e) {
    return problem(std::string("index footer unreadable (") + e.what() + ")");
  }
  const int n = index.offset_size();
  if (index.type_size() != n || index.layer_id_size() != n || index.aux_size() != n || index.first_step_size() != n ||
      index.last_step_size() != n || index.stored_size_size() != n || index.raw_size_size() != n)
    return problem("index footer columns differ in length");
  std::vector<ChunkInfo> chunks;
  chunks.reserve(size_t(n));
  for (int i = 0; i < n; ++i) {
    ChunkInfo c;
    c.segment = segment;
    c.offset = index.offset(i);
    c.type = uint16_t(index.type(i));
    c.layer_id = index.layer_id(i);
    c.aux = index.aux(i);
    c.first_step = index.first_step(i);
    c.last_step = index.last_step(i);
    c.stored_size = index.stored_size(i);
    c.raw_size = index.raw_size(i);
    if (c.offset < kSegmentHeaderSize || c.offset + kChunkHeaderSize + c.stored_size > index_offset)
      return problem("index footer entry " + std::to_string(i) + " points outside the data");
    chunks.push_back(c);
  }
  scan->chunks = std::move(chunks);
  scan->has_footer = true;
  scan->scanned_until = file_size;
  return true;
}

}  // namespace

SegmentScan index_segment(const std::filesystem::path& path, uint32_t segment, uint64_t resume_offset) {
  Fd file;
  file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file.fd < 0) throw FormatError(path.string() + ": cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) throw FormatError(path.string() + ": cannot stat: " + errno_text());
  SegmentScan scan;
  scan.file_size = uint64_t(st.st_size);

  uint8_t header[kSegmentHeaderSize];
  if (pread_full(file.fd, header, kSegmentHeaderSize, 0) != kSegmentHeaderSize)
    throw FormatError(path.string() + ": too short for a segment header (" + std::to_string(scan.file_size) +
                      " bytes)");
  if (std::memcmp(header, kSegmentMagic, 8) != 0)
    throw FormatError(path.string() + ": not a Trainscope segment (bad magic at offset 0)");
  if (get<uint32_t>(header + 28) != crc32c(header, 28))
    throw FormatError(path.string() + ": segment header checksum mismatch at offset 0");
  scan.header.format_major = get<uint16_t>(header + 8);
  scan.header.format_minor = get<uint16_t>(header + 10);
  scan.header.codec = header[12];
  scan.header.sequence = get<uint32_t>(header + 16);
  if (scan.header.format_major > kFormatMajor)
    throw FormatError(path.string() + ": written in format version " + std::to_string(scan.header.format_major) + "." +
                      std::to_string(scan.header.format_minor) + ", newer than this reader (" +
                      std::to_string(kFormatMajor) + ".x); use a newer trainscope");
  if (scan.header.format_major == 0) throw FormatError(path.string() + ": format version 0 is not a released version");
  if (scan.header.codec != kCodecZstd)
    throw FormatError(path.string() + ": unknown codec " + std::to_string(scan.header.codec) + " at offset 12");

  if (resume_offset == 0 && read_footer(file.fd, path, segment, scan.file_size, &scan)) return scan;

  // No usable footer: walk the chunk headers. Payloads are not read, so this is cheap even for large segments.
  uint64_t offset = std::max<uint64_t>(resume_offset, kSegmentHeaderSize);
  while (offset < scan.file_size) {
    uint8_t hb[kChunkHeaderSize];
    ChunkHeader h;
    const size_t got = pread_full(file.fd, hb, kChunkHeaderSize, offset);
    if (got < kChunkHeaderSize) {
      scan.problems.push_back({Problem::Kind::TornTail, path, offset,
                               at(path, offset) + ": torn tail, " + std::to_string(scan.file_size - offset) +
                                   " bytes of an incomplete chunk header (the writer stopped mid-write or is still "
                                   "writing)"});
      break;
    }
    if (!decode_chunk_header(hb, &h)) {
      const uint64_t next = resync(file.fd, offset + 1, scan.file_size);
      scan.problems.push_back({Problem::Kind::CorruptChunk, path, offset,
                               at(path, offset) + ": corrupt chunk header; skipped " + std::to_string(next - offset) +
                                   " bytes" +
                                   (next < scan.file_size ? " to the next chunk at offset " + std::to_string(next)
                                                          : " to the end of the file")});
      offset = next;
      continue;
    }
    const uint64_t end = offset + kChunkHeaderSize + h.stored_size;
    if (end > scan.file_size) {
      scan.problems.push_back({Problem::Kind::TornTail, path, offset,
                               at(path, offset) + ": torn tail, " + chunk_type_name(h.type) + " chunk needs " +
                                   std::to_string(kChunkHeaderSize + h.stored_size) + " bytes but only " +
                                   std::to_string(scan.file_size - offset) + " are present"});
      break;
    }
    if (h.type == uint16_t(ChunkType::Index)) {
      // A footer that failed to read: what follows is the trailer.
      offset = end;
      if (offset + kTrailerSize == scan.file_size) offset = scan.file_size;
      continue;
    }
    scan.chunks.push_back(info_from_header(h, segment, offset));
    offset = end;
  }
  scan.scanned_until = std::min(offset, scan.file_size);
  if (resume_offset == 0)
    scan.problems.push_back({Problem::Kind::MissingFooter, path, scan.file_size,
                             path.string() + ": no index footer (the writer did not close this segment); indexed " +
                                 std::to_string(scan.chunks.size()) + " chunks by scanning"});
  return scan;
}

}  // namespace trainscope::format

namespace trainscope::format {
bool framed_chunk_intact(const std::string& framed) {
  ChunkHeader h;
  const auto* bytes = reinterpret_cast<const uint8_t*>(framed.data());
  return framed.size() >= kChunkHeaderSize && decode_chunk_header(bytes, &h) &&
         framed.size() == kChunkHeaderSize + size_t(h.stored_size) &&
         crc32c(bytes + kChunkHeaderSize, h.stored_size) == h.payload_crc;
}
}  // namespace trainscope::format
