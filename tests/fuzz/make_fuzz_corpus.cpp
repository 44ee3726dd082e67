// Generates the seed corpus of segment_reader_fuzzer from small recordings made by the real writer, so that no
// binary seeds live in the repository. Usage: make_fuzz_corpus OUTPUT_DIR
#include <trainscope/format/run_writer.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_input.h"
#include "segment.h"

namespace {

namespace fmt = trainscope::format;
namespace fs = std::filesystem;
using namespace trainscope::fuzzing;

fmt::RunMetadata tiny_model() {
  fmt::RunMetadata m;
  m.header.model_name = "Tiny";
  m.header.config["lr"] = "0.1";
  m.layers = {{0, "", std::nullopt, "Tiny", 0, {}, {}, false},
              {1, "fc1", 0u, "Linear", 4, {4}, {{"weight", {4, 3}}, {"bias", {4}}}, true},
              {2, "act", 0u, "ReLU", 4, {4}, {}, true}};
  m.edges = {{1, 2, false}};
  return m;
}

fmt::Snapshot tiny_snapshot(int64_t step, bool neurons) {
  fmt::Snapshot s;
  s.step = step;
  s.wall_time = 0.5 * double(step) + 0.25;
  s.scalars = {{"loss", 1.0 / double(step + 1)}, {"lr", 0.1}};
  for (uint32_t layer : {1u, 2u}) {
    fmt::LayerQuantityRecord r;
    r.layer_id = layer;
    r.quantity = layer == 1 ? fmt::Quantity::Weight : fmt::Quantity::Activation;
    r.summary.mean = 0.1 * double(step), r.summary.std = 1, r.summary.numel = 12;
    if (neurons) {
      r.neuron_stats = fmt::statistic_bit(fmt::Statistic::Mean) | fmt::statistic_bit(fmt::Statistic::NanCount);
      r.neuron_count = 4;
      r.neuron_values = {0.5f + float(step), -1.0f, 2.0f, 0.25f, 0, 0, 1, 0};
    }
    s.layers.push_back(std::move(r));
  }
  return s;
}

fmt::FullTensor tiny_tensor(int64_t step) {
  fmt::FullTensor t;
  t.layer_id = 1;
  t.step = step;
  t.shape = {4, 3};
  for (int i = 0; i < 12; ++i) t.values.push_back(0.1f * float(i) + 0.001f * float(step));
  return t;
}

void record(const fs::path& dir, fmt::WriterOptions options, bool tensors, int steps) {
  fmt::RunWriter w(dir, tiny_model(), options);
  for (int s = 0; s < steps; ++s) {
    w.append(tiny_snapshot(s, s % 2 == 0));
    if (tensors) w.append(tiny_tensor(s));
  }
  w.close();
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The kExpandedPayloads form: every chunk's payload decompressed, its stored-size field holding the raw length.
std::string expand(const std::string& segment) {
  std::string out = segment.substr(0, fmt::kSegmentHeaderSize);
  size_t offset = fmt::kSegmentHeaderSize;
  while (offset + fmt::kChunkHeaderSize <= segment.size()) {
    uint8_t header[fmt::kChunkHeaderSize];
    std::memcpy(header, segment.data() + offset, sizeof header);
    fmt::ChunkHeader h;
    if (!fmt::decode_chunk_header(header, &h) || offset + fmt::kChunkHeaderSize + h.stored_size > segment.size()) break;
    std::string raw(h.raw_size, '\0');
    ZSTD_decompress(raw.data(), raw.size(), segment.data() + offset + fmt::kChunkHeaderSize, h.stored_size);
    const uint32_t length = h.raw_size;
    std::memcpy(header + 32, &length, 4);
    out.append(reinterpret_cast<const char*>(header), sizeof header);
    out += raw;
    offset += fmt::kChunkHeaderSize + h.stored_size;
  }
  return out + segment.substr(offset);
}

int written = 0;
void emit(const fs::path& out, const std::string& name, uint8_t mode, const std::string& bytes) {
  std::ofstream f(out / (name + "-m" + std::to_string(mode)), std::ios::binary | std::ios::trunc);
  f.put(char(mode));
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ++written;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  fs::create_directories(out);
  const fs::path work = fs::temp_directory_path() / ("trainscope-fuzz-corpus-" + std::to_string(::getpid()));
  fs::remove_all(work);

  fmt::WriterOptions plain;
  record(work / "stats", plain, false, 6);
  record(work / "tensors", plain, true, 5);
  fmt::WriterOptions half = plain;
  half.precision = fmt::Precision::Float16;
  half.keyframe_interval = 3;
  record(work / "half", half, true, 4);
  fmt::WriterOptions dropping = plain;
  dropping.queue_policy = fmt::QueuePolicy::DropAndRecord;
  dropping.queue_bytes = 1;
  record(work / "gaps", dropping, false, 40);

  for (const char* run : {"stats", "tensors", "half", "gaps"}) {
    const std::string segment = read_all(work / run / fmt::segment_file_name(0));
    const std::string name = run;
    emit(out, name, 0, segment);
    emit(out, name, kRepairChecksums | kTinyCache, segment);
    emit(out, name, kExpandedPayloads, expand(segment));
    // Without its footer (a writer that was killed), and torn inside the last chunk.
    uint64_t index_offset = 0;
    std::memcpy(&index_offset, segment.data() + segment.size() - fmt::kTrailerSize, 8);
    if (index_offset < segment.size()) {
      emit(out, name + "-unclosed", 0, segment.substr(0, index_offset));
      emit(out, name + "-torn", kRepairChecksums, segment.substr(0, index_offset - 7));
    }
  }
  fs::remove_all(work);
  std::printf("wrote %d seed inputs to %s\n", written, out.c_str());
  return 0;
}
