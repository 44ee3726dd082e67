#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>
#include <trainscope/format/trim.h>

#include <fcntl.h>
#include <unistd.h>

#include <set>
#include <tuple>

#include "chunk_codec.h"
#include "segment.h"

namespace trainscope::format {
namespace {

constexpr uint64_t kTrimSegmentBytes = uint64_t(256) << 20;

struct InputFiles {
  std::vector<int> fds;
  ~InputFiles() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
};

// Keeps only the rows of a partly covered chunk that fall inside [first, last].
std::string cut_payload(const ChunkInfo& c, const std::string& raw, int64_t first, int64_t last, ChunkHeader* h) {
  const auto inside = [&](int64_t step) { return step >= first && step <= last; };
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  const auto widen = [&](int64_t step) { lo = std::min(lo, step), hi = std::max(hi, step); };
  std::string out;
  switch (ChunkType(c.type)) {
    case ChunkType::Scalars: {
      ScalarsData in = decode_scalars(raw), kept;
      kept.columns.resize(in.columns.size());
      for (size_t k = 0; k < in.columns.size(); ++k) kept.columns[k].name = in.columns[k].name;
      for (size_t r = 0; r < in.steps.size(); ++r) {
        if (!inside(in.steps[r])) continue;
        widen(in.steps[r]);
        kept.steps.push_back(in.steps[r]);
        kept.wall_time.push_back(in.wall_time[r]);
        for (size_t k = 0; k < in.columns.size(); ++k) {
          kept.columns[k].values.push_back(in.columns[k].values[r]);
          kept.columns[k].present.push_back(in.columns[k].present[r]);
        }
      }
      if (kept.steps.empty()) return {};
      out = encode_scalars(kept);
      break;
    }
    case ChunkType::LayerSummary: {
      SummaryData in = decode_summaries(raw), kept;
      for (const SummaryRecord& r : in.records)
        if (inside(r.step)) kept.records.push_back(r), widen(r.step);
      if (kept.records.empty()) return {};
      out = encode_summaries(std::move(kept));
      break;
    }
    case ChunkType::NeuronStats: {
      NeuronStatsData in = decode_neuron_stats(raw), kept;
      kept.layer_id = in.layer_id;
      for (const NeuronBlockData& b : in.blocks) {
        NeuronBlockData nb{b.quantity, b.statistic, b.neuron_count, {}, {}};
        for (size_t r = 0; r < b.steps.size(); ++r) {
          if (!inside(b.steps[r])) continue;
          widen(b.steps[r]);
          nb.steps.push_back(b.steps[r]);
          nb.values.insert(nb.values.end(), b.values.begin() + ptrdiff_t(r * b.neuron_count),
                           b.values.begin() + ptrdiff_t((r + 1) * b.neuron_count));
        }
        if (!nb.steps.empty()) kept.blocks.push_back(std::move(nb));
      }
      if (kept.blocks.empty()) return {};
      out = encode_neuron_stats(kept, Precision::Float32);  // decoded values are exact in float32
      break;
    }
    case ChunkType::Gap: return raw;
    default: return {};
  }
  h->first_step = lo;
  h->last_step = hi;
  return out;
}

}  // namespace

TrimResult trim_run(const std::filesystem::path& input_dir, const std::filesystem::path& output_dir, int64_t first_step,
                    int64_t last_step, const std::function<void(uint64_t, uint64_t)>& progress) {
  if (first_step > last_step)
    throw FormatError("trim window " + std::to_string(first_step) + ":" + std::to_string(last_step) +
                      " is empty (the first step is after the last)");
  RunReader reader(input_dir);
  std::error_code ec;
  if (std::filesystem::exists(output_dir, ec) && !std::filesystem::is_empty(output_dir, ec))
    throw FormatError(output_dir.string() + ": output directory exists and is not empty");
  std::filesystem::create_directories(output_dir, ec);
  if (ec) throw FormatError(output_dir.string() + ": cannot create output directory: " + ec.message());

  InputFiles inputs;
  for (const auto& path : reader.segment_files()) {
    inputs.fds.push_back(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (inputs.fds.back() < 0) throw FormatError(path.string() + ": cannot open for reading");
  }

  TrimResult result;
  uint32_t sequence = 0;
  const std::string metadata = encode_metadata(reader.metadata());
  auto open_output = [&] {
    const WriterOptions defaults;  // chunks cut at the window's edges are compressed again as the writer would
    auto w = std::make_unique<SegmentFileWriter>(output_dir / segment_file_name(sequence), sequence,
                                                 defaults.zstd_level, defaults.statistics_zstd_level);
    ++sequence;
    w->write_chunk({uint16_t(ChunkType::Metadata), 0, kNoLayer, 0, 0, 0}, metadata);
    return w;
  };
  std::unique_ptr<SegmentFileWriter> out = open_output();
  std::set<std::tuple<uint32_t, uint32_t, bool>> tensors_started;  // full tensors with a keyframe in this segment

  uint64_t total = 0, done = 0;
  for (const ChunkInfo& c : reader.chunks()) total += kChunkHeaderSize + c.stored_size;
  std::string framed;  // reused: a fresh buffer per chunk costs page faults and zero-filling
  for (const ChunkInfo& c : reader.chunks()) {
    done += kChunkHeaderSize + c.stored_size;
    if (progress) progress(done, total);
    const auto type = ChunkType(c.type);
    if (type == ChunkType::Metadata || type == ChunkType::Index) continue;
    if (c.last_step < first_step || c.first_step > last_step) continue;
    const auto& path = reader.segment_files()[c.segment];
    try {
      read_framed_chunk(inputs.fds[c.segment], path, c, &framed);
    } catch (const FormatError& e) {
      ++result.chunks_skipped;
      result.warnings.push_back(e.what());
      continue;
    }
    if (!framed_chunk_intact(framed)) {
      ++result.chunks_skipped;
      result.warnings.push_back(path.string() + " at offset " + std::to_string(c.offset) + ": corrupt " +
                                chunk_type_name(c.type) + " chunk left out");
      continue;
    }
    ChunkHeader header;
    decode_chunk_header(reinterpret_cast<const uint8_t*>(framed.data()), &header);

    if (type == ChunkType::FullTensor) {
      const std::tuple<uint32_t, uint32_t, bool> key{c.layer_id, c.aux & 0xFF, (c.aux & kAuxProbeBatch) != 0};
      if ((c.aux & kAuxKeyframe) || tensors_started.count(key)) {
        out->write_framed_chunk(header, framed);
        ++result.chunks_copied;
      } else {  // its base lies before the window (or in an earlier output segment): store it whole
        auto tensor =
            reader.read_full_tensor(c.layer_id, Quantity(c.aux & 0xFF), c.first_step, (c.aux & kAuxProbeBatch) != 0);
        if (!tensor) {
          ++result.chunks_skipped;
          result.warnings.push_back(path.string() + " at offset " + std::to_string(c.offset) +
                                    ": full tensor whose base is unreadable left out");
          continue;
        }
        header.aux |= kAuxKeyframe;
        out->write_chunk(header, encode_full_tensor(*tensor, nullptr, Precision::Float32));
        ++result.chunks_reencoded;
      }
      tensors_started.insert(key);
    } else if ((c.first_step >= first_step && c.last_step <= last_step) || type == ChunkType::Gap) {
      out->write_framed_chunk(header, framed);
      ++result.chunks_copied;
    } else {
      std::string payload;
      try {
        payload = cut_payload(c, decompress_chunk(path, c, framed), first_step, last_step, &header);
      } catch (const FormatError& e) {
        ++result.chunks_skipped;
        result.warnings.push_back(path.string() + " at offset " + std::to_string(c.offset) + ": " + e.what());
        continue;
      }
      if (payload.empty()) continue;
      out->write_chunk(header, payload);
      ++result.chunks_reencoded;
    }
    if (out->size() >= kTrimSegmentBytes) {
      out->close();
      result.bytes_written += out->size();
      out = open_output();
      tensors_started.clear();
    }
  }
  out->close();
  result.bytes_written += out->size();
  return result;
}

}  // namespace trainscope::format
