#include <trainscope/format/run_reader.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>

#include "chunk_codec.h"
#include "segment.h"

namespace trainscope::format {
namespace {

using Decoded = std::variant<ScalarsData, SummaryData, NeuronStatsData, FullTensor, GapInfo, RunMetadata>;
using TensorKey = std::tuple<uint32_t, Quantity, bool>;

struct SegmentState {
  std::filesystem::path path;
  int fd = -1;
  bool closed = false;  // has a footer: will not grow
};

// True for a file shorter than a segment header whose bytes are the start of one (its magic, or nothing).
bool is_torn_segment_header(const std::filesystem::path& path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec || size >= kSegmentHeaderSize) return false;
  char head[kSegmentHeaderSize] = {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t got = ::pread(fd, head, sizeof head, 0);
  ::close(fd);
  if (got != ssize_t(size)) return false;
  return std::memcmp(head, kSegmentMagic, std::min<size_t>(size_t(got), sizeof kSegmentMagic)) == 0;
}

// Scratch memory taken from its owner for one use and handed back afterwards, so that a nested use (a full tensor's
// base decoded while the tensor's own payload is still being read) finds it empty and works on memory of its own.
template <typename T>
struct Borrowed {
  T& home;
  T value;
  explicit Borrowed(T& owner) : home(owner), value(std::exchange(owner, T{})) {}
  ~Borrowed() { home = std::move(value); }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
};

// A chunk's decoded columns as the visitor sees them.
SummaryColumns columns_of(const ChunkInfo& c, const SummaryColumnData& data) {
  SummaryColumns columns;
  columns.first_step = c.first_step;
  columns.last_step = c.last_step;
  columns.size = data.size();
  columns.layer_id = data.layer_id.data();
  columns.quantity = data.quantity.data();
  columns.step = data.step.data();
  columns.has_neuron_stats = data.has_neuron_stats.data();
  for (int f = 0; f <= kStatisticCount; ++f) columns.field[f] = data.field[f].data();
  return columns;
}

bool overlaps(const ChunkInfo& c, int64_t first, int64_t last) {
  return c.last_step >= first && c.first_step <= last;
}

// Reads, decompresses and decodes a list of layer-summary chunks on a thread of its own, up to `depth` chunks ahead
// of the caller, into buffers passed back and forth. It never touches the reader: it works on duplicates of the segment
// descriptors and on copies of the chunk infos, so that a reader call made by the visitor meanwhile (a refresh, say,
// which reopens segments) cannot pull them away from under it.
class ChunkReadAhead {
 public:
  struct Job {
    int fd;  // a duplicate owned by the read-ahead, or -1
    std::filesystem::path path;
    ChunkInfo chunk;
  };
  struct Slot {
    SummaryColumnData columns;
    size_t stored_read = 0, raw_produced = 0;  // for the reader's statistics: what read_payload would have counted
    std::exception_ptr error;                  // the chunk is unreadable: what reading or decoding it threw
    size_t ready_job = SIZE_MAX;               // the job whose result the slot holds
  };

  // `fds`: the duplicates the jobs read (with pread: the workers share them), closed at the end. `workers` threads
  // take the jobs in turn (job j is worker j % workers's); `depth` slots hold the results ahead of the caller.
  ChunkReadAhead(std::vector<Job> jobs, std::vector<int> fds, size_t depth, size_t workers)
      : jobs_(std::move(jobs)), fds_(std::move(fds)), slots_(std::max(depth, workers)) {
    for (size_t w = 0; w < workers; ++w) workers_.emplace_back([this, w, workers] { run(w, workers); });
  }
  ~ChunkReadAhead() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    for (auto& w : workers_) w.join();
    for (int fd : fds_) ::close(fd);
  }
  ChunkReadAhead(const ChunkReadAhead&) = delete;
  ChunkReadAhead& operator=(const ChunkReadAhead&) = delete;

  // The next job's result, once a worker has it; valid until release().
  Slot& next() {
    std::unique_lock<std::mutex> lock(mutex_);
    Slot& slot = slots_[consumed_ % slots_.size()];
    changed_.wait(lock, [&] { return slot.ready_job == consumed_; });
    return slot;
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++consumed_;
    }
    changed_.notify_all();
  }

 private:
  void run(size_t first, size_t stride) {
    // The stored and the decompressed bytes are needed only until the columns are decoded: one pair per worker,
    // not per slot (each is about a megabyte of fresh memory, and first touches are page faults).
    std::string framed, raw;
    for (size_t j = first; j < jobs_.size(); j += stride) {
      Slot& slot = slots_[j % slots_.size()];
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return stop_ || j - consumed_ < slots_.size(); });
        if (stop_) return;
      }
      // The slot is this worker's alone until its ready_job says otherwise: the job before in it was consumed.
      const Job& job = jobs_[j];
      slot.stored_read = slot.raw_produced = 0;
      slot.error = nullptr;
      try {
        if (job.fd < 0) throw FormatError(job.path.string() + ": cannot open");
        read_framed_chunk(job.fd, job.path, job.chunk, &framed);
        slot.stored_read = framed.size();
        decompress_chunk(job.path, job.chunk, framed, &raw);
        slot.raw_produced = raw.size();
        decode_summary_columns(raw, &slot.columns);
      } catch (...) {
        slot.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        slot.ready_job = j;
      }
      changed_.notify_all();
    }
  }

  std::vector<Job> jobs_;
  std::vector<int> fds_;
  std::vector<Slot> slots_;
  std::mutex mutex_;
  std::condition_variable changed_;
  size_t consumed_ = 0;  // jobs taken back by the caller
  bool stop_ = false;
  std::vector<std::thread> workers_;  // last: started once the rest exists
};

size_t decoded_bytes(const Decoded& d, const ChunkInfo& c) {
  if (const auto* n = std::get_if<NeuronStatsData>(&d)) return n->byte_size() + 256;
  if (const auto* t = std::get_if<FullTensor>(&d)) return t->values.size() * sizeof(float) + 256;
  if (const auto* s = std::get_if<SummaryData>(&d)) return s->records.size() * sizeof(SummaryRecord) + 256;
  return size_t(c.raw_size) * 2 + 256;
}

}  // namespace

struct RunReader::Impl {
  std::filesystem::path dir;
  ReaderOptions options;
  mutable std::recursive_mutex mutex;
  std::vector<SegmentState> segments;
  std::vector<std::filesystem::path> segment_paths;
  std::vector<ChunkInfo> chunks;
  std::vector<Problem> index_problems;               // from indexing; rebuilt by refresh()
  std::vector<Problem> read_problems;                // found while decoding chunks
  std::set<std::pair<uint32_t, uint64_t>> reported;  // chunks with a read problem already reported
  std::vector<Problem> all_problems;
  RunMetadata metadata;

  std::vector<size_t> scalar_chunks, summary_chunks, gap_chunks, metadata_chunks;
  std::map<uint32_t, std::vector<size_t>> neuron_chunks;
  std::map<TensorKey, std::map<int64_t, size_t>> tensor_chunks;

  // LRU cache of decoded chunks, keyed by (segment, offset).
  using Key = std::pair<uint32_t, uint64_t>;
  struct Entry {
    std::shared_ptr<const Decoded> value;
    size_t bytes;
    std::list<Key>::iterator position;
  };
  std::list<Key> lru;
  std::map<Key, Entry> cache;
  CacheStats stats;
  std::string framed_buffer, raw_buffer;    // scratch of decode_uncached()
  SummaryColumnData summary_column_buffer;  // scratch of for_each_summary_chunk()

  ~Impl() {
    for (auto& s : segments)
      if (s.fd >= 0) ::close(s.fd);
  }

  void index_all(bool initial);
  void rebuild_indices();
  void load_metadata();
  void refresh_problems() {
    all_problems = index_problems;
    all_problems.insert(all_problems.end(), read_problems.begin(), read_problems.end());
  }
  std::shared_ptr<const Decoded> decode(size_t chunk_index);
  std::shared_ptr<const Decoded> decode_uncached(const ChunkInfo& c);
  void read_payload(const ChunkInfo& c, std::string* framed, std::string* raw);
  // A layer-summary chunk as columns, from the cache if it is there, else decoded into `out` without caching.
  bool summary_columns(size_t chunk_index, SummaryColumnData* out);
  // Whether a chunk the read-ahead has read is readable (its problem reported if not), its reading counted.
  bool read_ahead_ok(size_t chunk_index, const ChunkReadAhead::Slot& read);
  void remember(const Key& key, std::shared_ptr<const Decoded> value, size_t bytes);
  void report(const ChunkInfo& c, const std::string& message) {
    if (!reported.insert({c.segment, c.offset}).second) return;
    read_problems.push_back({Problem::Kind::CorruptChunk, segments[c.segment].path, c.offset, message});
    refresh_problems();
  }
  void report(const ChunkInfo& c, const FormatError& e) {
    const std::string what = e.what();
    const std::string& path = segments[c.segment].path.string();
    report(c, what.rfind(path, 0) == 0 ? what
                                       : path + " at offset " + std::to_string(c.offset) + ": " +
                                             chunk_type_name(c.type) + " chunk: " + what);
  }
  template <typename T>
  std::shared_ptr<const T> get(size_t chunk_index) {
    auto d = decode(chunk_index);
    if (!d || !std::holds_alternative<T>(*d)) return nullptr;
    return std::shared_ptr<const T>(d, &std::get<T>(*d));
  }
};

void RunReader::Impl::index_all(bool initial) {
  std::error_code ec;
  std::vector<std::filesystem::path> found;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.is_regular_file() && is_segment_file_name(entry.path().filename().string()))
      found.push_back(entry.path());
  if (ec) throw FormatError(dir.string() + ": cannot list directory: " + ec.message());
  std::sort(found.begin(), found.end());
  if (initial && found.empty())
    throw FormatError(dir.string() + ": not a Trainscope recording (no segment-*.tss files)");

  std::vector<ChunkInfo> new_chunks;
  std::vector<Problem> problems;
  std::string first_error;
  std::vector<SegmentState> new_segments;
  for (size_t i = 0; i < found.size(); ++i) {
    SegmentState state;
    state.path = found[i];
    // Reuse the open descriptor and the footer of segments already known to be closed.
    auto known =
        std::find_if(segments.begin(), segments.end(), [&](const SegmentState& s) { return s.path == found[i]; });
    if (known != segments.end()) {
      state.fd = std::exchange(known->fd, -1);
      state.closed = known->closed;
      if (state.closed) {
        const auto old_index = uint32_t(known - segments.begin());
        for (const ChunkInfo& c : chunks)
          if (c.segment == old_index) {
            ChunkInfo copy = c;
            copy.segment = uint32_t(i);
            new_chunks.push_back(copy);
          }
        for (const Problem& p : index_problems)
          if (p.file == state.path) problems.push_back(p);
        new_segments.push_back(std::move(state));
        continue;
      }
    }
    // A writer killed between creating its newest segment and writing the segment header leaves a file shorter than
    // a header that starts like one: a torn tail like any other, not a corrupt segment.
    if (i + 1 == found.size() && is_torn_segment_header(found[i])) {
      std::error_code size_error;
      const uint64_t size = std::filesystem::file_size(found[i], size_error);
      problems.push_back({Problem::Kind::TornTail, found[i], 0,
                          found[i].string() + ": torn tail, " + std::to_string(size) +
                              " bytes of a segment header (the writer stopped while creating this segment)"});
      new_segments.push_back(std::move(state));
      continue;
    }
    try {
      SegmentScan scan = index_segment(found[i], uint32_t(i));
      state.closed = scan.has_footer;
      new_chunks.insert(new_chunks.end(), scan.chunks.begin(), scan.chunks.end());
      problems.insert(problems.end(), scan.problems.begin(), scan.problems.end());
    } catch (const FormatError& e) {
      const std::string what = e.what();
      if (what.find("newer than this reader") != std::string::npos) throw;
      if (first_error.empty()) first_error = what;
      problems.push_back({Problem::Kind::CorruptChunk, found[i], 0, what + "; segment skipped"});
    }
    if (state.fd < 0) state.fd = ::open(found[i].c_str(), O_RDONLY | O_CLOEXEC);
    new_segments.push_back(std::move(state));
  }
  if (initial && new_chunks.empty() && !first_error.empty()) throw FormatError(first_error);
  for (auto& s : segments)
    if (s.fd >= 0) ::close(s.fd);
  segments = std::move(new_segments);
  segment_paths.clear();
  for (const auto& s : segments) segment_paths.push_back(s.path);
  chunks = std::move(new_chunks);
  index_problems = std::move(problems);
  // Offsets may have been re-read: cached entries stay valid because (segment path order, offset) is stable for
  // files that only grow; a changed file set invalidates them.
  if (!initial) {
    cache.clear();
    lru.clear();
    stats.bytes_held = 0;
  }
  rebuild_indices();
  refresh_problems();
}

void RunReader::Impl::rebuild_indices() {
  scalar_chunks.clear();
  summary_chunks.clear();
  gap_chunks.clear();
  metadata_chunks.clear();
  neuron_chunks.clear();
  tensor_chunks.clear();
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkInfo& c = chunks[i];
    switch (ChunkType(c.type)) {
      case ChunkType::Metadata: metadata_chunks.push_back(i); break;
      case ChunkType::Scalars: scalar_chunks.push_back(i); break;
      case ChunkType::LayerSummary: summary_chunks.push_back(i); break;
      case ChunkType::NeuronStats: neuron_chunks[c.layer_id].push_back(i); break;
      case ChunkType::Gap: gap_chunks.push_back(i); break;
      case ChunkType::FullTensor: {
        const TensorKey key{c.layer_id, Quantity(c.aux & 0xFF), (c.aux & kAuxProbeBatch) != 0};
        tensor_chunks[key][c.first_step] = i;
        break;
      }
      default: break;  // unknown chunk types of a newer minor version are skipped
    }
  }
}

void RunReader::Impl::load_metadata() {
  for (auto it = metadata_chunks.rbegin(); it != metadata_chunks.rend(); ++it) {
    if (auto m = get<RunMetadata>(*it)) {
      metadata = *m;
      return;
    }
  }
  throw FormatError(dir.string() + ": no readable metadata chunk in " + std::to_string(segments.size()) +
                    " segment file(s)");
}

std::shared_ptr<const Decoded> RunReader::Impl::decode(size_t chunk_index) {
  const ChunkInfo& c = chunks[chunk_index];
  const Key key{c.segment, c.offset};
  if (auto it = cache.find(key); it != cache.end()) {
    ++stats.hits;
    lru.splice(lru.begin(), lru, it->second.position);
    return it->second.value;
  }
  ++stats.misses;
  try {
    auto value = decode_uncached(c);
    remember(key, value, decoded_bytes(*value, c));
    return value;
  } catch (const FormatError& e) {
    report(c, e);
    return nullptr;
  }
}

bool RunReader::Impl::summary_columns(size_t chunk_index, SummaryColumnData* out) {
  const ChunkInfo& c = chunks[chunk_index];
  if (auto it = cache.find({c.segment, c.offset}); it != cache.end()) {
    ++stats.hits;
    lru.splice(lru.begin(), lru, it->second.position);
    const auto* d = std::get_if<SummaryData>(it->second.value.get());
    if (!d) return false;
    const size_t n = d->records.size();
    out->layer_id.resize(n), out->quantity.resize(n), out->step.resize(n), out->has_neuron_stats.resize(n);
    for (auto& f : out->field) f.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const SummaryRecord& r = d->records[i];
      out->layer_id[i] = r.layer_id, out->quantity[i] = r.quantity, out->step[i] = r.step;
      out->has_neuron_stats[i] = r.has_neuron_stats;
      for (int f = 0; f < kStatisticCount; ++f) out->field[f][i] = r.summary.get(Statistic(f));
      out->field[kStatisticCount][i] = r.summary.numel;
    }
    return true;
  }
  try {
    Borrowed<std::string> framed(framed_buffer), raw(raw_buffer);
    read_payload(c, &framed.value, &raw.value);
    decode_summary_columns(raw.value, out);
    return true;
  } catch (const FormatError& e) {
    report(c, e);
    return false;
  }
}

bool RunReader::Impl::read_ahead_ok(size_t chunk_index, const ChunkReadAhead::Slot& read) {
  stats.stored_bytes_read += read.stored_read;
  stats.raw_bytes_decompressed += read.raw_produced;
  if (!read.error) return true;
  try {
    std::rethrow_exception(read.error);
  } catch (const FormatError& e) {
    report(chunks[chunk_index], e);
  }
  return false;
}

void RunReader::Impl::read_payload(const ChunkInfo& c, std::string* framed, std::string* raw) {
  const SegmentState& seg = segments[c.segment];
  if (seg.fd < 0) throw FormatError(seg.path.string() + ": cannot open");
  read_framed_chunk(seg.fd, seg.path, c, framed);
  stats.stored_bytes_read += framed->size();
  decompress_chunk(seg.path, c, *framed, raw);
  stats.raw_bytes_decompressed += raw->size();
}

std::shared_ptr<const Decoded> RunReader::Impl::decode_uncached(const ChunkInfo& c) {
  // Both buffers are reused from chunk to chunk: reading allocates only the decoded result. They are borrowed, not
  // shared: a full tensor is decoded from views into `raw`, and its base, decoded recursively meanwhile, must not
  // overwrite them (it finds the scratch empty and uses buffers of its own).
  Borrowed<std::string> framed_scratch(framed_buffer), raw_scratch(raw_buffer);
  std::string& raw = raw_scratch.value;
  read_payload(c, &framed_scratch.value, &raw);
  switch (ChunkType(c.type)) {
    case ChunkType::Metadata: return std::make_shared<Decoded>(decode_metadata(raw));
    case ChunkType::Scalars: return std::make_shared<Decoded>(decode_scalars(raw));
    case ChunkType::LayerSummary: return std::make_shared<Decoded>(decode_summaries(raw));
    case ChunkType::NeuronStats: return std::make_shared<Decoded>(decode_neuron_stats(raw));
    case ChunkType::Gap: return std::make_shared<Decoded>(decode_gap(raw));
    case ChunkType::FullTensor: {
      const TensorKey key{c.layer_id, Quantity(c.aux & 0xFF), (c.aux & kAuxProbeBatch) != 0};
      std::shared_ptr<const FullTensor> base_holder;
      auto base = [&](int64_t step) -> const FullTensor* {
        auto& by_step = tensor_chunks[key];
        auto it = by_step.find(step);
        if (it == by_step.end() || chunks[it->second].first_step >= c.first_step) return nullptr;
        base_holder = get<FullTensor>(it->second);
        return base_holder.get();
      };
      return std::make_shared<Decoded>(decode_full_tensor(raw, base).tensor);
    }
    default: throw FormatError("unknown chunk type " + std::to_string(c.type));
  }
}

void RunReader::Impl::remember(const Key& key, std::shared_ptr<const Decoded> value, size_t bytes) {
  stats.capacity = options.cache_bytes;
  if (bytes > options.cache_bytes) return;  // larger than the whole cache: hand it out uncached
  while (stats.bytes_held + bytes > options.cache_bytes && !lru.empty()) {
    auto victim = cache.find(lru.back());
    stats.bytes_held -= victim->second.bytes;
    cache.erase(victim);
    lru.pop_back();
  }
  lru.push_front(key);
  cache[key] = {std::move(value), bytes, lru.begin()};
  stats.bytes_held += bytes;
}

RunReader::RunReader(const std::filesystem::path& run_dir, ReaderOptions options) : impl_(std::make_unique<Impl>()) {
  std::error_code ec;
  if (!std::filesystem::exists(run_dir, ec)) throw FormatError(run_dir.string() + ": no such run directory");
  if (!std::filesystem::is_directory(run_dir, ec))
    throw FormatError(run_dir.string() + ": not a directory (a run is a directory of segment files)");
  impl_->dir = run_dir;
  // A multi-rank run without segments of its own opens its rank 0.
  const auto ranks = rank_directories(run_dir);
  if (ranks.size() > 1 || (ranks.size() == 1 && ranks.front() != run_dir)) impl_->dir = ranks.front();
  impl_->options = options;
  impl_->stats.capacity = options.cache_bytes;
  impl_->index_all(true);
  impl_->load_metadata();
}

RunReader::~RunReader() = default;

const std::filesystem::path& RunReader::directory() const {
  return impl_->dir;
}
const RunMetadata& RunReader::metadata() const {
  return impl_->metadata;
}
const std::vector<std::filesystem::path>& RunReader::segment_files() const {
  return impl_->segment_paths;
}
const std::vector<ChunkInfo>& RunReader::chunks() const {
  return impl_->chunks;
}
const std::vector<Problem>& RunReader::problems() const {
  return impl_->all_problems;
}

bool RunReader::complete() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  return std::all_of(impl_->segments.begin(), impl_->segments.end(), [](const SegmentState& s) { return s.closed; });
}

bool RunReader::refresh() {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  const size_t before = impl_->chunks.size();
  const size_t segments_before = impl_->segments.size();
  impl_->index_all(false);
  try {
    impl_->load_metadata();
  } catch (const FormatError&) {
    // keep the metadata we had
  }
  return impl_->chunks.size() != before || impl_->segments.size() != segments_before;
}

std::vector<std::string> RunReader::scalar_names() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<std::string> names;
  for (size_t i : impl_->scalar_chunks)
    if (auto d = impl_->get<ScalarsData>(i))
      for (const auto& c : d->columns)
        if (std::find(names.begin(), names.end(), c.name) == names.end()) names.push_back(c.name);
  return names;
}

std::vector<ScalarSeries> RunReader::read_scalars(int64_t first_step, int64_t last_step) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<ScalarSeries> out;
  std::map<std::string, size_t> by_name;
  for (size_t i : impl_->scalar_chunks) {
    if (!overlaps(impl_->chunks[i], first_step, last_step)) continue;
    auto d = impl_->get<ScalarsData>(i);
    if (!d) continue;
    for (const auto& c : d->columns) {
      auto it = by_name.find(c.name);
      if (it == by_name.end()) {
        it = by_name.emplace(c.name, out.size()).first;
        out.push_back({c.name, {}, {}});
      }
      ScalarSeries& series = out[it->second];
      for (size_t r = 0; r < d->steps.size(); ++r) {
        if (!c.present[r] || d->steps[r] < first_step || d->steps[r] > last_step) continue;
        series.steps.push_back(d->steps[r]);
        series.values.push_back(c.values[r]);
      }
    }
  }
  for (ScalarSeries& s : out) {  // chunks are in file order; a trimmed or multi-segment run is still sorted by step
    if (std::is_sorted(s.steps.begin(), s.steps.end())) continue;
    std::vector<size_t> order(s.steps.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.steps[a] < s.steps[b]; });
    ScalarSeries sorted{s.name, {}, {}};
    for (size_t i : order) sorted.steps.push_back(s.steps[i]), sorted.values.push_back(s.values[i]);
    s = std::move(sorted);
  }
  return out;
}

std::vector<int64_t> RunReader::snapshot_steps() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::set<int64_t> steps;
  for (size_t i : impl_->summary_chunks)
    if (auto d = impl_->get<SummaryData>(i))
      for (const auto& r : d->records)
        if (r.has_neuron_stats) steps.insert(r.step);
  return {steps.begin(), steps.end()};
}

int64_t RunReader::first_step() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  int64_t s = INT64_MAX;
  for (const ChunkInfo& c : impl_->chunks)
    if (c.type != uint16_t(ChunkType::Metadata)) s = std::min(s, c.first_step);
  return s == INT64_MAX ? 0 : s;
}

int64_t RunReader::last_step() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  int64_t s = INT64_MIN;
  for (const ChunkInfo& c : impl_->chunks)
    if (c.type != uint16_t(ChunkType::Metadata)) s = std::max(s, c.last_step);
  return s == INT64_MIN ? 0 : s;
}

std::vector<SummaryPoint> RunReader::read_summaries(uint32_t layer_id, Quantity q, int64_t first_step,
                                                    int64_t last_step) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<SummaryPoint> out;
  for (size_t i : impl_->summary_chunks) {
    if (!overlaps(impl_->chunks[i], first_step, last_step)) continue;
    auto d = impl_->get<SummaryData>(i);
    if (!d) continue;
    for (const auto& r : d->records)
      if (r.layer_id == layer_id && r.quantity == q && r.step >= first_step && r.step <= last_step)
        out.push_back({r.step, r.summary});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const SummaryPoint& a, const SummaryPoint& b) { return a.step < b.step; });
  return out;
}

std::vector<LayerQuantityRecord> RunReader::read_all_summaries(int64_t first_step, int64_t last_step,
                                                               std::vector<int64_t>* steps_out) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<LayerQuantityRecord> out;
  std::vector<int64_t> steps;
  std::vector<std::shared_ptr<const SummaryData>> decoded;
  size_t count = 0;
  for (size_t i : impl_->summary_chunks) {
    if (!overlaps(impl_->chunks[i], first_step, last_step)) continue;
    if (auto d = impl_->get<SummaryData>(i)) {
      for (const auto& r : d->records) count += r.step >= first_step && r.step <= last_step;
      decoded.push_back(std::move(d));
    }
  }
  out.reserve(count);
  steps.reserve(count);
  for (const auto& d : decoded) {
    for (const auto& r : d->records) {
      if (r.step < first_step || r.step > last_step) continue;
      LayerQuantityRecord rec;
      rec.layer_id = r.layer_id;
      rec.quantity = r.quantity;
      rec.summary = r.summary;
      out.push_back(std::move(rec));
      steps.push_back(r.step);
    }
  }
  if (steps_out) *steps_out = std::move(steps);
  return out;
}

void RunReader::for_each_summary(int64_t first_step, int64_t last_step, const SummaryVisitor& visit) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  for (size_t i : impl_->summary_chunks) {
    if (!overlaps(impl_->chunks[i], first_step, last_step)) continue;
    auto d = impl_->get<SummaryData>(i);
    if (!d) continue;
    for (const auto& r : d->records)
      if (r.step >= first_step && r.step <= last_step)
        visit(r.step, r.layer_id, r.quantity, r.summary, r.has_neuron_stats);
  }
}

void RunReader::for_each_summary_chunk(int64_t first_step, int64_t last_step, const SummaryChunkVisitor& visit) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  Borrowed<SummaryColumnData> scratch(impl_->summary_column_buffer);  // a nested call gets columns of its own
  SummaryColumnData& data = scratch.value;
  std::vector<size_t> wanted;
  for (size_t i : impl_->summary_chunks)
    if (overlaps(impl_->chunks[i], first_step, last_step)) wanted.push_back(i);
  // The chunks not in the cache now are read ahead; the others are taken from the cache as they come.
  std::vector<bool> ahead_of_time(wanted.size(), false);
  std::unique_ptr<ChunkReadAhead> ahead;
  if (impl_->options.read_ahead) {
    std::vector<ChunkReadAhead::Job> jobs;
    std::map<uint32_t, int> by_segment;  // segment -> the duplicate of its descriptor
    std::vector<int> fds;
    for (size_t k = 0; k < wanted.size(); ++k) {
      const ChunkInfo& c = impl_->chunks[wanted[k]];
      if (impl_->cache.count({c.segment, c.offset})) continue;
      auto fd = by_segment.find(c.segment);
      if (fd == by_segment.end()) {
        const int own = impl_->segments[c.segment].fd;
        fd = by_segment.emplace(c.segment, own < 0 ? -1 : ::fcntl(own, F_DUPFD_CLOEXEC, 0)).first;
        if (fd->second >= 0) fds.push_back(fd->second);
      }
      jobs.push_back({fd->second, impl_->segments[c.segment].path, c});
      ahead_of_time[k] = true;
    }
    if (jobs.size() >= 2) {  // a second thread for one chunk would only add its start-up
      // Two workers: decoding a chunk's columns costs about as much as decompressing it, and the two together take
      // longer than the analyses' visitors. Measured (analysis_benchmark, 2.3 GB run, 172 summary chunks): the
      // anomaly pass 0.094-0.097 s with one worker, 0.077-0.086 s with two.
      const size_t workers = jobs.size() >= 4 ? 2 : 1;
      ahead = std::make_unique<ChunkReadAhead>(std::move(jobs), std::move(fds), 4, workers);
    } else {
      for (int fd : fds) ::close(fd);
      std::fill(ahead_of_time.begin(), ahead_of_time.end(), false);
    }
  }
  for (size_t k = 0; k < wanted.size(); ++k) {
    const size_t i = wanted[k];
    const ChunkInfo& c = impl_->chunks[i];
    const SummaryColumnData* decoded = nullptr;
    ChunkReadAhead::Slot* read = ahead_of_time[k] ? &ahead->next() : nullptr;
    if (read ? impl_->read_ahead_ok(i, *read) : impl_->summary_columns(i, &data))
      decoded = read ? &read->columns : &data;
    if (decoded) visit(columns_of(c, *decoded));
    if (read) ahead->release();
  }
}

std::optional<NeuronSeries> RunReader::read_neuron_series(uint32_t layer_id, Quantity q, Statistic s,
                                                          int64_t first_step, int64_t last_step) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  auto it = impl_->neuron_chunks.find(layer_id);
  if (it == impl_->neuron_chunks.end()) return std::nullopt;
  NeuronSeries out;
  out.layer_id = layer_id;
  out.quantity = q;
  out.statistic = s;
  // Two passes: the blocks first, then one allocation for the whole series and one copy per block.
  struct Part {
    std::shared_ptr<const NeuronStatsData> chunk;
    const NeuronBlockData* block;
    size_t first_row, end_row;
  };
  std::vector<Part> parts;
  bool found = false;
  size_t rows = 0;
  for (size_t i : it->second) {
    const ChunkInfo& c = impl_->chunks[i];
    if (!overlaps(c, first_step, last_step) || !(c.aux & (1u << unsigned(q)))) continue;
    auto d = impl_->get<NeuronStatsData>(i);
    if (!d) continue;
    for (const NeuronBlockData& b : d->blocks) {
      if (b.quantity != q || b.statistic != s) continue;
      if (!found) out.neuron_count = b.neuron_count;
      found = true;
      if (b.neuron_count != out.neuron_count) continue;  // the layer changed size; keep the first shape
      // A block's steps are ascending: the rows in range are one stretch, found without a scan.
      size_t r = 0;
      while (r < b.steps.size()) {
        while (r < b.steps.size() && (b.steps[r] < first_step || b.steps[r] > last_step)) ++r;
        const size_t begin = r;
        while (r < b.steps.size() && b.steps[r] >= first_step && b.steps[r] <= last_step) ++r;
        if (r > begin) {
          parts.push_back({d, &b, begin, r});
          rows += r - begin;
        }
      }
    }
  }
  if (!found) return std::nullopt;
  out.steps.reserve(rows);
  out.values.reserve(rows * out.neuron_count);
  for (const Part& p : parts) {
    const NeuronBlockData& b = *p.block;
    out.steps.insert(out.steps.end(), b.steps.begin() + ptrdiff_t(p.first_row), b.steps.begin() + ptrdiff_t(p.end_row));
    out.values.insert(out.values.end(), b.values.begin() + ptrdiff_t(p.first_row * b.neuron_count),
                      b.values.begin() + ptrdiff_t(p.end_row * b.neuron_count));
  }
  return out;
}

Snapshot RunReader::read_snapshot(int64_t step) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  Snapshot snap;
  snap.step = step;
  bool any = false;
  for (size_t i : impl_->scalar_chunks) {
    if (!overlaps(impl_->chunks[i], step, step)) continue;
    auto d = impl_->get<ScalarsData>(i);
    if (!d) continue;
    for (size_t r = 0; r < d->steps.size(); ++r) {
      if (d->steps[r] != step) continue;
      any = true;
      snap.wall_time = d->wall_time[r];
      for (const auto& c : d->columns)
        if (c.present[r]) snap.scalars.emplace_back(c.name, c.values[r]);
    }
  }
  std::map<std::pair<uint32_t, Quantity>, size_t> records;
  for (size_t i : impl_->summary_chunks) {
    if (!overlaps(impl_->chunks[i], step, step)) continue;
    auto d = impl_->get<SummaryData>(i);
    if (!d) continue;
    for (const auto& r : d->records) {
      if (r.step != step) continue;
      any = true;
      records[{r.layer_id, r.quantity}] = snap.layers.size();
      LayerQuantityRecord rec;
      rec.layer_id = r.layer_id;
      rec.quantity = r.quantity;
      rec.summary = r.summary;
      snap.layers.push_back(std::move(rec));
    }
  }
  for (const auto& [layer_id, indices] : impl_->neuron_chunks) {
    for (size_t i : indices) {
      if (!overlaps(impl_->chunks[i], step, step)) continue;
      auto d = impl_->get<NeuronStatsData>(i);
      if (!d) continue;
      // Blocks are gathered per quantity in statistic order, as LayerQuantityRecord lays them out.
      for (Quantity q : all_quantities()) {
        for (Statistic s : all_statistics()) {
          for (const NeuronBlockData& b : d->blocks) {
            if (b.quantity != q || b.statistic != s) continue;
            auto row = std::find(b.steps.begin(), b.steps.end(), step);
            if (row == b.steps.end()) continue;
            auto rec_it = records.find({layer_id, q});
            if (rec_it == records.end()) {
              rec_it = records.emplace(std::make_pair(layer_id, q), snap.layers.size()).first;
              snap.layers.push_back({layer_id, q, {}, 0, 0, {}});
            }
            LayerQuantityRecord& rec = snap.layers[rec_it->second];
            if (rec.neuron_stats && rec.neuron_count != b.neuron_count) continue;
            if (rec.neuron_stats & statistic_bit(s)) continue;
            rec.neuron_count = b.neuron_count;
            rec.neuron_stats |= statistic_bit(s);
            const size_t r = size_t(row - b.steps.begin());
            rec.neuron_values.insert(rec.neuron_values.end(), b.values.begin() + ptrdiff_t(r * b.neuron_count),
                                     b.values.begin() + ptrdiff_t((r + 1) * b.neuron_count));
            any = true;
          }
        }
      }
    }
  }
  if (!any) throw FormatError(impl_->dir.string() + ": no data recorded at step " + std::to_string(step));
  return snap;
}

std::vector<int64_t> RunReader::full_tensor_steps(uint32_t layer_id, Quantity q, bool probe_batch) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<int64_t> steps;
  auto it = impl_->tensor_chunks.find({layer_id, q, probe_batch});
  if (it != impl_->tensor_chunks.end())
    for (const auto& [step, index] : it->second) steps.push_back(step);
  return steps;
}

std::optional<FullTensor> RunReader::read_full_tensor(uint32_t layer_id, Quantity q, int64_t step, bool probe_batch) {
  auto t = full_tensor(layer_id, q, step, probe_batch);
  if (!t) return std::nullopt;
  return *t;
}

std::shared_ptr<const FullTensor> RunReader::full_tensor(uint32_t layer_id, Quantity q, int64_t step,
                                                         bool probe_batch) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  auto it = impl_->tensor_chunks.find({layer_id, q, probe_batch});
  if (it == impl_->tensor_chunks.end()) return nullptr;
  auto found = it->second.find(step);
  if (found == it->second.end()) return nullptr;
  return impl_->get<FullTensor>(found->second);
}

std::vector<GapInfo> RunReader::gaps() {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<GapInfo> out;
  for (size_t i : impl_->gap_chunks)
    if (auto g = impl_->get<GapInfo>(i)) out.push_back(*g);
  return out;
}

std::vector<Problem> RunReader::verify(const std::function<void(uint64_t, uint64_t)>& progress) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  std::vector<Problem> problems = impl_->index_problems;
  uint64_t total = 0, done = 0;
  for (const ChunkInfo& c : impl_->chunks) total += kChunkHeaderSize + c.stored_size;
  for (const ChunkInfo& c : impl_->chunks) {
    try {
      (void)impl_->decode_uncached(c);  // checksum, decompression and full decoding
    } catch (const FormatError& e) {
      const std::string what = e.what();
      const std::string path = impl_->segments[c.segment].path.string();
      problems.push_back({Problem::Kind::CorruptChunk, impl_->segments[c.segment].path, c.offset,
                          what.rfind(path, 0) == 0 ? what
                                                   : path + " at offset " + std::to_string(c.offset) + ": " +
                                                         chunk_type_name(c.type) + " chunk: " + what});
    }
    done += kChunkHeaderSize + c.stored_size;
    if (progress) progress(done, total);
  }
  return problems;
}

CacheStats RunReader::cache_stats() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  return impl_->stats;
}

void RunReader::clear_cache() {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  impl_->cache.clear();
  impl_->lru.clear();
  impl_->stats.bytes_held = 0;
}

uint64_t RunReader::stored_bytes() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& s : impl_->segments) n += std::filesystem::file_size(s.path, ec);
  return n;
}

uint64_t RunReader::raw_bytes() const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mutex);
  uint64_t n = 0;
  for (const ChunkInfo& c : impl_->chunks) n += c.raw_size;
  return n;
}

std::vector<std::filesystem::path> rank_directories(const std::filesystem::path& run_dir) {
  std::vector<std::filesystem::path> ranks;
  std::error_code ec;
  bool has_segments = false;
  std::vector<std::pair<long, std::filesystem::path>> numbered;
  for (const auto& entry : std::filesystem::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && is_segment_file_name(name)) has_segments = true;
    if (entry.is_directory() && name.rfind("rank-", 0) == 0 && name.size() > 5 &&
        name.find_first_not_of("0123456789", 5) == std::string::npos)
      numbered.emplace_back(std::stol(name.substr(5)), entry.path());
  }
  if (has_segments || numbered.empty()) return {run_dir};
  std::sort(numbered.begin(), numbered.end());
  for (auto& [n, p] : numbered) ranks.push_back(p);
  return ranks;
}

}  // namespace trainscope::format
