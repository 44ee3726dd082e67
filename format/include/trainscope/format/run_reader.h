// Reads a recording (finished, still being written, or torn by a crash) with random access by step and by layer.
// Only the chunks a request needs are decompressed; decoded chunks are kept in an LRU cache bounded in bytes.
#pragma once

#include <trainscope/format/metadata.h>
#include <trainscope/format/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace trainscope::format {

struct ReaderOptions {
  // Bound of the decoded-chunk cache: 64 of the writer's 1 MB chunks, a few layers' worth. More only pays when the
  // same chunks are read again (the viewer asks for 256 MB); every cached byte is fresh memory, and filling a large
  // cache costs page faults: reading a 200 MB run series by series went from 56-72% of plain zstd's speed with a
  // 512 MB cache to 92% with this one (format_benchmark). A chunk larger than the cache is decoded but not kept.
  size_t cache_bytes = size_t(64) << 20;
  // for_each_summary_chunk reads, decompresses and decodes the next chunks on up to two threads of its own while the
  // visitor works on one (a few chunks ahead, in buffers of their own). Off: everything on the calling thread.
  bool read_ahead = true;
};

// Something wrong found in the files: a torn tail, a corrupt chunk, a missing footer. Reading goes on past it.
struct Problem {
  enum class Kind { TornTail, CorruptChunk, MissingFooter, BadFooter, Gap } kind;
  std::filesystem::path file;
  uint64_t offset = 0;
  std::string message;  // complete sentence naming file and offset
};

// Where one chunk lives; what the index footer (or a scan) says about it.
struct ChunkInfo {
  uint32_t segment = 0;  // index into segment_files()
  uint64_t offset = 0;
  uint16_t type = 0;
  uint32_t layer_id = 0;
  uint32_t aux = 0;
  int64_t first_step = 0;
  int64_t last_step = 0;
  uint32_t stored_size = 0;  // payload bytes on disk
  uint32_t raw_size = 0;
};

struct ScalarSeries {
  std::string name;
  std::vector<int64_t> steps;
  std::vector<double> values;
};

// One layer's per-neuron series: values[row * neuron_count + neuron], one row per step.
struct NeuronSeries {
  uint32_t layer_id = 0;
  Quantity quantity = Quantity::Activation;
  Statistic statistic = Statistic::Mean;
  uint32_t neuron_count = 0;
  std::vector<int64_t> steps;
  std::vector<float> values;
};

struct SummaryPoint {
  int64_t step = 0;
  TensorSummary summary;
};

// One layer-summary chunk's records as the columns they are stored in, sorted by (layer, quantity, step) as the
// writer sorts them. The pointers are valid only during the visit.
struct SummaryColumns {
  int64_t first_step = 0, last_step = 0;  // the steps the chunk covers, from its header
  size_t size = 0;                        // records
  const uint32_t* layer_id = nullptr;
  const Quantity* quantity = nullptr;
  const int64_t* step = nullptr;
  const uint8_t* has_neuron_stats = nullptr;      // 1: per-neuron statistics were recorded too
  const double* field[kStatisticCount + 1] = {};  // each Statistic in its order, then numel

  TensorSummary summary(size_t i) const {
    return {field[0][i], field[1][i], field[2][i],
            field[3][i], field[4][i], field[5][i],
            field[6][i], field[7][i], field[kStatisticCount][i]};
  }
};

struct GapInfo {
  int64_t first_step = 0, last_step = 0;
  uint64_t dropped_snapshots = 0;
  std::string reason;
};

struct CacheStats {
  size_t bytes_held = 0;
  size_t capacity = 0;
  uint64_t hits = 0, misses = 0;
  uint64_t stored_bytes_read = 0;       // compressed payload bytes read from disk
  uint64_t raw_bytes_decompressed = 0;  // payload bytes produced by zstd
};

class RunReader {
 public:
  // Opens a run directory (or, for a multi-rank run, the directory of one rank; see open_rank()).
  // Throws FormatError naming the path if it is not a readable recording or its format is newer than this reader.
  explicit RunReader(const std::filesystem::path& run_dir, ReaderOptions options = {});
  ~RunReader();
  RunReader(const RunReader&) = delete;
  RunReader& operator=(const RunReader&) = delete;

  const std::filesystem::path& directory() const;
  const RunMetadata& metadata() const;
  const std::vector<std::filesystem::path>& segment_files() const;
  const std::vector<ChunkInfo>& chunks() const;
  const std::vector<Problem>& problems() const;
  bool complete() const;  // every segment was closed cleanly (has its footer)

  // Picks up chunks appended since open (a run still being written). Returns true if anything new arrived.
  bool refresh();

  // Steps with scalars, and names of the scalars.
  std::vector<std::string> scalar_names() const;
  std::vector<ScalarSeries> read_scalars(int64_t first_step = INT64_MIN, int64_t last_step = INT64_MAX);
  // Steps for which per-neuron statistics exist (any layer), sorted.
  std::vector<int64_t> snapshot_steps() const;
  int64_t first_step() const;  // over all data; 0 for an empty run
  int64_t last_step() const;

  std::vector<SummaryPoint> read_summaries(uint32_t layer_id, Quantity q, int64_t first_step = INT64_MIN,
                                           int64_t last_step = INT64_MAX);
  // Summaries of every layer and quantity at once: the call the anomaly analysis and the snapshot view use.
  std::vector<LayerQuantityRecord> read_all_summaries(int64_t first_step = INT64_MIN, int64_t last_step = INT64_MAX,
                                                      std::vector<int64_t>* steps_out = nullptr);

  // Every layer summary in [first_step, last_step], chunk by chunk in file order (not sorted by step), handed to
  // `visit` without copies: for analyses that build their own columns over a long run.
  using SummaryVisitor = std::function<void(int64_t step, uint32_t layer_id, Quantity quantity,
                                            const TensorSummary& summary, bool has_neuron_stats)>;
  void for_each_summary(int64_t first_step, int64_t last_step, const SummaryVisitor& visit);
  // Every layer-summary chunk overlapping [first_step, last_step], in file order, whole (records outside the range
  // included), as columns: decoded into memory reused from chunk to chunk and not kept in the cache, so that one
  // pass over a long run costs the decompression and little else. For analyses of the whole run. With
  // ReaderOptions::read_ahead, the chunks are read, decompressed and decoded on up to two threads of the reader's,
  // ahead of the visitor; they are visited on the calling thread, in the same order, with the same problems reported.
  using SummaryChunkVisitor = std::function<void(const SummaryColumns& chunk)>;
  void for_each_summary_chunk(int64_t first_step, int64_t last_step, const SummaryChunkVisitor& visit);

  std::optional<NeuronSeries> read_neuron_series(uint32_t layer_id, Quantity q, Statistic s,
                                                 int64_t first_step = INT64_MIN, int64_t last_step = INT64_MAX);
  // Everything recorded at one step (scalars, summaries, per-neuron statistics). Throws FormatError if the step has
  // no data.
  Snapshot read_snapshot(int64_t step);
  // Steps at which a full tensor of (layer, quantity) exists.
  std::vector<int64_t> full_tensor_steps(uint32_t layer_id, Quantity q, bool probe_batch = false) const;
  std::optional<FullTensor> read_full_tensor(uint32_t layer_id, Quantity q, int64_t step, bool probe_batch = false);
  // The same without copying the values: the decoded tensor the reader caches, shared with the caller (it stays
  // valid after eviction or clear_cache()). nullptr when there is none or its chunk is unreadable.
  std::shared_ptr<const FullTensor> full_tensor(uint32_t layer_id, Quantity q, int64_t step, bool probe_batch = false);
  std::vector<GapInfo> gaps();

  // Reads and decompresses every chunk, checking every checksum; reports each problem found. progress(done, total)
  // is called with bytes.
  std::vector<Problem> verify(const std::function<void(uint64_t, uint64_t)>& progress = {});

  CacheStats cache_stats() const;
  void clear_cache();

  uint64_t stored_bytes() const;  // bytes of all segment files
  uint64_t raw_bytes() const;     // decompressed payload bytes of all chunks, from the index

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Rank directories of a multi-rank run ("rank-0", "rank-1", ...), or just `run_dir` itself for a one-rank run.
std::vector<std::filesystem::path> rank_directories(const std::filesystem::path& run_dir);

}  // namespace trainscope::format
