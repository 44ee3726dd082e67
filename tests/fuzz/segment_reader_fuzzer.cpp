// libFuzzer target for the segment reader: writes the input as the one segment file of a run directory, then opens
// the run, verifies it, reads everything a user can ask for, and trims it. Any crash, sanitizer report, leak or
// runaway allocation is a bug: the reader must report bad input as FormatError or Problem, never crash.
#include <fcntl.h>
#include <trainscope/format/run_info.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/trim.h>
#include <unistd.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "crc32c.h"
#include "fuzz_input.h"
#include "segment.h"

namespace {

namespace fmt = trainscope::format;
namespace fs = std::filesystem;

template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

// Rebuilds the segment from `in` as the mode byte says (see fuzz_input.h).
std::string build_segment(const uint8_t* in, size_t size, uint8_t mode) {
  std::string out(reinterpret_cast<const char*>(in), size);
  if (!(mode & (trainscope::fuzzing::kRepairChecksums | trainscope::fuzzing::kExpandedPayloads))) return out;
  if (size < fmt::kSegmentHeaderSize) return out;
  auto* bytes = reinterpret_cast<uint8_t*>(out.data());
  put<uint32_t>(bytes + 28, fmt::crc32c(bytes, 28));
  const bool expanded = mode & trainscope::fuzzing::kExpandedPayloads;
  std::string result = out.substr(0, fmt::kSegmentHeaderSize);
  size_t offset = fmt::kSegmentHeaderSize;
  uint64_t last_index_offset = 0;
  while (offset + fmt::kChunkHeaderSize <= size) {
    uint8_t header[fmt::kChunkHeaderSize];
    std::memcpy(header, in + offset, sizeof header);
    if (get<uint32_t>(header) != fmt::kChunkSync) break;
    const uint32_t length = get<uint32_t>(header + 32);
    if (length > size - offset - fmt::kChunkHeaderSize) break;
    std::string payload(reinterpret_cast<const char*>(in + offset + fmt::kChunkHeaderSize), length);
    if (expanded) {
      std::string compressed(ZSTD_compressBound(payload.size()), '\0');
      compressed.resize(ZSTD_compress(compressed.data(), compressed.size(), payload.data(), payload.size(), 1));
      put<uint32_t>(header + 36, uint32_t(payload.size()));
      payload = std::move(compressed);
      put<uint32_t>(header + 32, uint32_t(payload.size()));
    }
    put<uint32_t>(header + 40, fmt::crc32c(payload.data(), payload.size()));
    put<uint32_t>(header + 44, fmt::crc32c(header, 44));
    if (get<uint16_t>(header + 4) == uint16_t(fmt::ChunkType::Index)) last_index_offset = result.size();
    result.append(reinterpret_cast<const char*>(header), sizeof header);
    result += payload;
    offset += fmt::kChunkHeaderSize + length;
  }
  std::string rest = out.substr(offset);
  if (rest.size() == fmt::kTrailerSize &&
      get<uint32_t>(reinterpret_cast<const uint8_t*>(rest.data()) + 12) == fmt::kTrailerMagic) {
    auto* t = reinterpret_cast<uint8_t*>(rest.data());
    if (expanded && last_index_offset) put<uint64_t>(t, last_index_offset);
    put<uint32_t>(t + 8, fmt::crc32c(t, 8));
  }
  return result + rest;
}

const fs::path& work_dir() {
  static const fs::path dir = [] {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("trainscope-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d / "run");
    return d;
  }();
  return dir;
}

void write_file(const fs::path& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) __builtin_trap();
  if (!bytes.empty() && ::write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size())) __builtin_trap();
  ::close(fd);
}

// Everything a user of the reader can ask for, bounded so that one input stays fast.
void exercise(fmt::RunReader& reader) {
  (void)reader.verify();
  (void)fmt::describe_run(reader);
  (void)reader.read_scalars();
  // The one-pass, uncached read of the summaries (before read_all_summaries caches them), every column touched.
  volatile double touched = 0;
  reader.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const fmt::SummaryColumns& c) {
    for (size_t i = 0; i < c.size; ++i)
      touched = touched + c.summary(i).numel + double(c.layer_id[i]) + double(c.quantity[i]) + double(c.step[i]) +
                c.has_neuron_stats[i];
  });
  (void)reader.read_all_summaries();
  const std::vector<int64_t> steps = reader.snapshot_steps();
  for (size_t i = 0; i < steps.size() && i < 4; ++i) {
    try {
      (void)reader.read_snapshot(steps[i]);
    } catch (const fmt::FormatError&) {
    }
  }
  try {
    (void)reader.read_snapshot(reader.first_step());
  } catch (const fmt::FormatError&) {
  }
  size_t series = 0;
  for (const fmt::ChunkInfo& c : reader.chunks()) {
    if (series >= 8) break;
    if (c.type != uint16_t(fmt::ChunkType::NeuronStats)) continue;
    for (fmt::Quantity q : fmt::all_quantities()) {
      (void)reader.read_neuron_series(c.layer_id, q, fmt::Statistic::Mean);
      (void)reader.read_summaries(c.layer_id, q);
    }
    ++series;
  }
  size_t tensors = 0;
  for (const fmt::ChunkInfo& c : reader.chunks()) {
    if (c.type != uint16_t(fmt::ChunkType::FullTensor) || tensors++ >= 8) continue;
    const auto q = fmt::Quantity(c.aux & 0xFF);
    const bool probe = (c.aux & fmt::kAuxProbeBatch) != 0;
    for (int64_t step : reader.full_tensor_steps(c.layer_id, q, probe))
      (void)reader.read_full_tensor(c.layer_id, q, step, probe);
  }
  (void)reader.gaps();
  (void)reader.refresh();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const fs::path& dir = work_dir();
  write_file(dir / "run" / fmt::segment_file_name(0), build_segment(data + 1, size - 1, mode));
  fmt::ReaderOptions options;
  if (mode & trainscope::fuzzing::kTinyCache) options.cache_bytes = 4096;
  try {
    fmt::RunReader reader(dir / "run", options);
    exercise(reader);
  } catch (const fmt::FormatError&) {
    return 0;  // refused with a message: fine
  }
  std::error_code ec;
  fs::remove_all(dir / "trimmed", ec);
  try {
    (void)fmt::trim_run(dir / "run", dir / "trimmed", INT64_MIN / 2, INT64_MAX / 2);
    fmt::RunReader trimmed(dir / "trimmed");
    (void)trimmed.verify();
  } catch (const fmt::FormatError&) {
  }
  return 0;
}
