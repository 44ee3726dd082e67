#include <trainscope/format/run_writer.h>
#include <trainscope/format/thread_placement.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <variant>

#include "chunk_codec.h"
#include "segment.h"
#include "trainscope/format/version.h"

namespace trainscope::format {
namespace {

using Clock = std::chrono::steady_clock;

struct FlushMarker {};
using WorkItem = std::variant<Snapshot, FullTensor, RunMetadata, FlushMarker>;

size_t item_bytes(const WorkItem& item) {
  if (const auto* s = std::get_if<Snapshot>(&item)) {
    size_t n = sizeof(Snapshot) + s->scalars.size() * 48;
    for (const auto& r : s->layers) n += sizeof(r) + r.neuron_values.size() * sizeof(float);
    return n;
  }
  if (const auto* t = std::get_if<FullTensor>(&item)) return sizeof(FullTensor) + t->values.size() * sizeof(float);
  return 256;
}

using TensorKey = std::tuple<uint32_t, Quantity, bool>;

}  // namespace

struct RunWriter::Impl {
  std::filesystem::path dir;
  WriterOptions options;
  Clock::time_point created = Clock::now();

  // Shared between the training thread and the background thread.
  mutable std::mutex mutex;
  std::condition_variable work_ready, space_free, item_done;
  std::deque<std::pair<uint64_t, WorkItem>> queue;
  size_t queued_bytes = 0;
  uint64_t enqueued = 0, processed = 0;
  bool closing = false, closed = false, failed = false;
  int64_t dropped_first = 0, dropped_last = 0;
  uint64_t dropped_pending = 0;
  WriterStatus status;
  std::thread thread;
  CallerCpuAvoider placement;  // guarded by mutex: the thread that hands work over keeps its core

  // Under `mutex`, once work is queued: the writer thread is woken, off the handing thread's core, unless it is
  // polling for work anyway (and the work can wait for its next look).
  void wake_writer(bool urgent = false) {
    placement.update(thread);
    if (polling && !urgent) return;
    ++status.wakeups;
    work_ready.notify_one();
  }
  // The writer thread looks for work every poll_period without being woken while work comes often (the last two
  // items taken less than kPollWindow apart, and the last one within it): a futex wake-up across cores cost the
  // handing thread ~28 us on the 2-core VM, one in every step() that hands a snapshot over when every step is
  // recorded. Items further apart (default settings: a snapshot every 10 steps) are woken for: polling after each
  // would only wake the thread for nothing on the core the training job's BLAS worker shares. Guarded by `mutex`.
  static constexpr auto kPollWindow = std::chrono::milliseconds(5);
  bool polling = false;
  Clock::time_point last_item, item_before;

  // Owned by the background thread.
  std::unique_ptr<SegmentFileWriter> segment;
  uint32_t next_sequence = 0;
  uint64_t closed_segment_bytes = 0;
  RunMetadata metadata;
  ScalarsData scalars;
  std::map<std::string, size_t> scalar_column;
  SummaryData summaries;
  // Per layer, the neuron statistics waiting for its next chunk. The rows stay in the snapshots' own vectors (moved
  // in) until the chunk is encoded: copying them into growing per-block vectors cost fresh pages and reallocations.
  struct PendingLayer {
    NeuronStatsData data;                         // each block's quantity, statistic, neuron count and steps only
    std::vector<std::vector<const float*>> rows;  // per block, one row per step, pointing into `records`
    std::vector<std::vector<float>> records;      // the neuron_values the rows point into
    size_t bytes = 0;                             // what data.byte_size() would count with the rows gathered
  };
  std::map<uint32_t, PendingLayer> neurons;
  NeuronStatsData gathered;  // the chunk being encoded, its rows copied in; reused so its memory stays warm
  std::vector<NeuronBlockData> spare_blocks;  // gathered's blocks not needed by the current layer, kept for capacity
  std::map<TensorKey, FullTensor> tensor_base;
  std::map<TensorKey, int> since_keyframe;
  ByteBuffer payload_buffer;                          // full tensors are encoded into it, chunk after chunk
  CoreYielder yielder{std::chrono::microseconds(0)};  // set up with the options
  bool buffered = false;
  Clock::time_point oldest_buffered;

  template <typename T>
  bool enqueue(T value, int64_t step) {
    Impl& impl = *this;
    WorkItem item = std::move(value);
    const size_t bytes = item_bytes(item);
    std::unique_lock<std::mutex> lock(impl.mutex);
    auto drop = [&] {
      if (impl.dropped_pending++ == 0) impl.dropped_first = step;
      impl.dropped_first = std::min(impl.dropped_first, step);
      impl.dropped_last = std::max(impl.dropped_last, step);
      ++impl.status.snapshots_dropped;
      return false;
    };
    if (impl.closing || impl.closed || impl.failed) return drop();
    if (impl.queued_bytes + bytes > impl.options.queue_bytes && !impl.queue.empty()) {
      if (impl.options.queue_policy == QueuePolicy::DropAndRecord) return drop();
      impl.space_free.wait(lock, [&] {
        return impl.queue.empty() || impl.queued_bytes + bytes <= impl.options.queue_bytes || impl.failed ||
               impl.closing;
      });
      if (impl.failed || impl.closing) return drop();
    }
    impl.queued_bytes += bytes;
    impl.queue.emplace_back(++impl.enqueued, std::move(item));
    impl.wake_writer();
    return true;
  }

  void run();
  void process(WorkItem& item);
  void add_snapshot(Snapshot& s);
  void add_full_tensor(FullTensor t);
  void write(ChunkHeader header, const std::string& payload);
  void write(ChunkHeader header, const uint8_t* payload, size_t size);
  void open_segment();
  void emit_scalars();
  void emit_summaries();
  void emit_neurons(uint32_t layer);
  void emit_all();
  void mark_buffered() {
    if (!buffered) oldest_buffered = Clock::now();
    buffered = true;
  }
  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex);
    if (status.error.empty()) status.error = message;
    failed = true;
    space_free.notify_all();
  }
};

RunWriter::RunWriter(const std::filesystem::path& run_dir, RunMetadata metadata, WriterOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = run_dir;
  impl_->options = options;
  if (options.segment_bytes < 4096) impl_->options.segment_bytes = 4096;
  if (options.keyframe_interval < 1) impl_->options.keyframe_interval = 1;
  impl_->yielder = CoreYielder(options.yield_slice);
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) throw FormatError(run_dir.string() + ": cannot create run directory: " + ec.message());
  for (const auto& entry : std::filesystem::directory_iterator(run_dir, ec))
    if (is_segment_file_name(entry.path().filename().string()))
      throw FormatError(run_dir.string() + ": already holds a recording (" + entry.path().filename().string() +
                        "); choose a new directory");
  if (metadata.header.created_unix_ms == 0)
    metadata.header.created_unix_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
  metadata.header.format_major = kFormatMajor;
  metadata.header.format_minor = kFormatMinor;
  if (metadata.header.producer.empty()) metadata.header.producer = std::string("trainscope ") + kTrainscopeVersion;
  impl_->metadata = std::move(metadata);
  impl_->open_segment();  // on the caller's thread so that an unwritable directory is reported here
  impl_->thread = std::thread([impl = impl_.get()] {
    name_this_thread("ts-writer");
    impl->run();
  });
}

RunWriter::~RunWriter() {
  close();
}

const std::filesystem::path& RunWriter::directory() const {
  return impl_->dir;
}

void RunWriter::set_metadata(RunMetadata metadata) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  if (impl_->closing || impl_->closed) return;
  WorkItem item = std::move(metadata);
  impl_->queue.emplace_back(++impl_->enqueued, std::move(item));
  impl_->work_ready.notify_one();
}

bool RunWriter::append(Snapshot snapshot) {
  if (snapshot.wall_time == 0)
    snapshot.wall_time = std::chrono::duration<double>(Clock::now() - impl_->created).count();
  const int64_t step = snapshot.step;
  return impl_->enqueue(std::move(snapshot), step);
}

bool RunWriter::append(FullTensor tensor) {
  const int64_t step = tensor.step;
  return impl_->enqueue(std::move(tensor), step);
}

void RunWriter::flush() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  if (impl_->closed || impl_->failed) return;
  const uint64_t target = ++impl_->enqueued;
  impl_->queue.emplace_back(target, FlushMarker{});
  impl_->wake_writer(/*urgent=*/true);
  impl_->item_done.wait(lock, [&] { return impl_->processed >= target || impl_->failed || impl_->closed; });
}

void RunWriter::request_flush() {
  // A marker behind everything handed over so far, so that items still queued are written too.
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->closing || impl_->closed || impl_->failed) return;
  impl_->queue.emplace_back(++impl_->enqueued, FlushMarker{});
  impl_->wake_writer(/*urgent=*/true);
}

void RunWriter::close() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->closing || impl_->closed) return;
    impl_->closing = true;
    impl_->work_ready.notify_one();
    impl_->space_free.notify_all();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->closed = true;
  impl_->item_done.notify_all();
}

WriterStatus RunWriter::status() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  WriterStatus s = impl_->status;
  s.queued_bytes = impl_->queued_bytes;
  return s;
}

void RunWriter::Impl::run() {
  for (;;) {
    std::unique_lock<std::mutex> lock(mutex);
    const auto ready = [&] { return !queue.empty() || closing; };
    const auto now = Clock::now();
    polling = !ready() && options.poll_period.count() > 0 && now - last_item < kPollWindow &&
              last_item - item_before < kPollWindow;
    if (polling) {
      const auto look = now + options.poll_period;
      work_ready.wait_until(lock, buffered ? std::min(look, oldest_buffered + options.flush_interval) : look, ready);
      polling = false;
    } else if (buffered) {
      work_ready.wait_until(lock, oldest_buffered + options.flush_interval, ready);
    } else {
      work_ready.wait(lock, ready);
    }
    if (queue.empty() && closing) break;
    std::optional<std::pair<uint64_t, WorkItem>> item;
    if (!queue.empty()) {
      item = std::move(queue.front());
      queue.pop_front();
      item_before = last_item;
      last_item = Clock::now();
      queued_bytes -= std::min(queued_bytes, item_bytes(item->second));
      space_free.notify_all();
    }
    GapInfo gap;
    if (dropped_pending && !failed) {
      gap = {dropped_first, dropped_last, dropped_pending, "writer queue full"};
      dropped_pending = 0;
    }
    const bool skip = failed;
    lock.unlock();
    yielder.start();

    if (!skip) {
      try {
        if (item) process(item->second);
        if (gap.dropped_snapshots)
          write({uint16_t(ChunkType::Gap), 0, kNoLayer, 0, gap.first_step, gap.last_step}, encode_gap(gap));
        if (buffered && Clock::now() - oldest_buffered >= options.flush_interval) emit_all();
      } catch (const FormatError& e) {
        fail(e.what());
      } catch (const std::exception& e) {
        fail(dir.string() + ": " + e.what());
      }
    }
    lock.lock();
    if (item) processed = item->first;
    item_done.notify_all();
  }
  if (!failed) {
    try {
      emit_all();
      std::unique_lock<std::mutex> lock(mutex);
      GapInfo gap{dropped_first, dropped_last, dropped_pending, "writer queue full"};
      const bool has_gap = dropped_pending > 0;
      dropped_pending = 0;
      lock.unlock();
      if (has_gap) write({uint16_t(ChunkType::Gap), 0, kNoLayer, 0, gap.first_step, gap.last_step}, encode_gap(gap));
      if (segment) {
        segment->close();
        std::lock_guard<std::mutex> guard(mutex);
        status.stored_bytes = closed_segment_bytes + segment->size();
      }
    } catch (const FormatError& e) {
      fail(e.what());
    }
  }
  segment.reset();
}

void RunWriter::Impl::open_segment() {
  if (segment) {
    segment->close();
    closed_segment_bytes += segment->size();
  }
  const uint32_t sequence = next_sequence++;
  segment = std::make_unique<SegmentFileWriter>(dir / segment_file_name(sequence), sequence, options.zstd_level,
                                                options.statistics_zstd_level);
  if (options.yield_slice.count() > 0) segment->share_core(&yielder);
  tensor_base.clear();  // every segment decodes on its own: full tensors restart with a keyframe
  since_keyframe.clear();
  {
    std::lock_guard<std::mutex> lock(mutex);
    status.segments = next_sequence;
  }
  write({uint16_t(ChunkType::Metadata), 0, kNoLayer, 0, 0, 0}, encode_metadata(metadata));
}

void RunWriter::Impl::write(ChunkHeader header, const std::string& payload) {
  write(header, reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
}

void RunWriter::Impl::write(ChunkHeader header, const uint8_t* payload, size_t size) {
  segment->write_chunk(header, payload, size);
  {
    std::lock_guard<std::mutex> lock(mutex);
    ++status.chunks_written;
    status.core_yields = yielder.yields();
    status.raw_bytes += size;
    status.stored_bytes = closed_segment_bytes + segment->size();
  }
  if (segment->size() >= options.segment_bytes && header.type != uint16_t(ChunkType::Metadata)) {
    if (options.fsync_on_flush) segment->sync();
    open_segment();
  }
}

void RunWriter::Impl::process(WorkItem& item) {
  if (auto* s = std::get_if<Snapshot>(&item)) {
    add_snapshot(*s);
    std::lock_guard<std::mutex> lock(mutex);
    ++status.snapshots_written;
  } else if (auto* t = std::get_if<FullTensor>(&item)) {
    add_full_tensor(std::move(*t));
  } else if (auto* m = std::get_if<RunMetadata>(&item)) {
    m->header.format_major = kFormatMajor;
    m->header.format_minor = kFormatMinor;
    if (m->header.created_unix_ms == 0) m->header.created_unix_ms = metadata.header.created_unix_ms;
    if (m->header.producer.empty()) m->header.producer = metadata.header.producer;
    metadata = std::move(*m);
    write({uint16_t(ChunkType::Metadata), 0, kNoLayer, 0, 0, 0}, encode_metadata(metadata));
  } else {
    emit_all();
    if (options.fsync_on_flush && segment) segment->sync();
  }
}

void RunWriter::Impl::add_snapshot(Snapshot& s) {
  if (!s.scalars.empty() || s.layers.empty()) {
    const size_t row = scalars.steps.size();
    scalars.steps.push_back(s.step);
    scalars.wall_time.push_back(s.wall_time);
    for (auto& c : scalars.columns) {
      c.values.push_back(0.0);
      c.present.push_back(0);
    }
    for (const auto& [name, value] : s.scalars) {
      auto it = scalar_column.find(name);
      if (it == scalar_column.end()) {
        it = scalar_column.emplace(name, scalars.columns.size()).first;
        scalars.columns.push_back({name, std::vector<double>(row + 1, 0.0), std::vector<uint8_t>(row + 1, 0)});
      }
      scalars.columns[it->second].values[row] = value;
      scalars.columns[it->second].present[row] = 1;
    }
    mark_buffered();
  }
  for (LayerQuantityRecord& r : s.layers) {
    summaries.records.push_back({r.layer_id, r.quantity, s.step, r.summary, r.neuron_stats && r.neuron_count});
    if (r.neuron_stats && r.neuron_count) {
      PendingLayer& layer = neurons[r.layer_id];
      std::vector<NeuronBlockData>& blocks = layer.data.blocks;
      layer.data.layer_id = r.layer_id;
      bool referenced = false;
      for (Statistic stat : all_statistics()) {
        const float* row = r.neuron_row(stat);
        if (!row) continue;
        auto block = std::find_if(blocks.begin(), blocks.end(), [&](const NeuronBlockData& b) {
          return b.quantity == r.quantity && b.statistic == stat;
        });
        if (block != blocks.end() && block->neuron_count != r.neuron_count) {
          if (!block->steps.empty()) emit_neurons(r.layer_id);  // the layer changed size: close the chunk
          block->neuron_count = r.neuron_count;
        }
        if (block == blocks.end()) {
          blocks.push_back({r.quantity, stat, r.neuron_count, {}, {}});
          layer.rows.emplace_back();
          block = blocks.end() - 1;
        }
        block->steps.push_back(s.step);
        layer.rows[size_t(block - blocks.begin())].push_back(row);
        layer.bytes += size_t(r.neuron_count) * sizeof(float) + sizeof(int64_t);
        referenced = true;
      }
      // A moved vector keeps its heap buffer, so the row pointers stay valid.
      if (referenced) layer.records.push_back(std::move(r.neuron_values));
    }
    mark_buffered();
  }
  if (scalars.byte_size() >= options.chunk_bytes) emit_scalars();
  if (summaries.records.size() * sizeof(SummaryRecord) >= options.chunk_bytes) emit_summaries();
  for (const LayerQuantityRecord& r : s.layers) {
    auto it = neurons.find(r.layer_id);
    if (it != neurons.end() && it->second.bytes >= options.chunk_bytes) emit_neurons(r.layer_id);
  }
}

void RunWriter::Impl::add_full_tensor(FullTensor t) {
  const TensorKey key{t.layer_id, t.quantity, t.probe_batch};
  auto base = tensor_base.find(key);
  int& count = since_keyframe[key];
  bool against_base = base != tensor_base.end() && count + 1 < options.keyframe_interval &&
                      base->second.values.size() == t.values.size();
  const EncodedPayload payload = encode_full_tensor(t, against_base ? &base->second : nullptr, options.precision,
                                                    &against_base, &payload_buffer, options.low_rank_gradients);
  const bool keyframe = !against_base;
  count = keyframe ? 0 : count + 1;
  const uint32_t aux = uint32_t(t.quantity) | (t.probe_batch ? kAuxProbeBatch : 0) | (keyframe ? kAuxKeyframe : 0);
  const uint32_t sequence_before = next_sequence;
  write({uint16_t(ChunkType::FullTensor), 0, t.layer_id, aux, t.step, t.step}, payload.data, payload.size);
  if (next_sequence == sequence_before) tensor_base[key] = std::move(t);  // a roll-over restarts with keyframes
}

void RunWriter::Impl::emit_scalars() {
  if (scalars.steps.empty()) return;
  const auto [lo, hi] = std::minmax_element(scalars.steps.begin(), scalars.steps.end());
  const std::string payload = encode_scalars(scalars);
  ChunkHeader h{uint16_t(ChunkType::Scalars), 0, kNoLayer, 0, *lo, *hi};
  scalars = {};
  scalar_column.clear();
  write(h, payload);
}

void RunWriter::Impl::emit_summaries() {
  if (summaries.records.empty()) return;
  int64_t lo = summaries.records.front().step, hi = lo;
  for (const auto& r : summaries.records) lo = std::min(lo, r.step), hi = std::max(hi, r.step);
  const std::string payload = encode_summaries_in_place(&summaries);
  summaries.records.clear();  // its capacity serves the next chunk
  write({uint16_t(ChunkType::LayerSummary), 0, kNoLayer, 0, lo, hi}, payload);
}

void RunWriter::Impl::emit_neurons(uint32_t layer_id) {
  auto it = neurons.find(layer_id);
  if (it == neurons.end()) return;
  PendingLayer& layer = it->second;
  // The blocks holding rows go into the chunk, in the layer's block order.
  std::vector<NeuronBlockData>& out = gathered.blocks;
  gathered.layer_id = layer_id;
  size_t used = 0;
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  uint32_t quantities = 0;
  for (size_t i = 0; i < layer.data.blocks.size(); ++i) {
    NeuronBlockData& b = layer.data.blocks[i];
    if (b.steps.empty()) continue;
    if (used == out.size()) {
      if (spare_blocks.empty()) {
        out.emplace_back();
      } else {
        out.push_back(std::move(spare_blocks.back()));
        spare_blocks.pop_back();
      }
    }
    NeuronBlockData& g = out[used++];
    g.quantity = b.quantity;
    g.statistic = b.statistic;
    g.neuron_count = b.neuron_count;
    g.steps.assign(b.steps.begin(), b.steps.end());
    g.values.clear();
    for (const float* row : layer.rows[i]) g.values.insert(g.values.end(), row, row + b.neuron_count);
    yielder.pause();
    quantities |= 1u << unsigned(b.quantity);
    for (int64_t s : b.steps) lo = std::min(lo, s), hi = std::max(hi, s);
    b.steps.clear();
    layer.rows[i].clear();
  }
  while (out.size() > used) {
    spare_blocks.push_back(std::move(out.back()));
    out.pop_back();
  }
  layer.records.clear();
  layer.bytes = 0;
  if (used == 0) return;
  const EncodedPayload payload = encode_neuron_stats(gathered, options.precision, &payload_buffer);
  yielder.pause();
  write({uint16_t(ChunkType::NeuronStats), 0, layer_id, quantities, lo, hi}, payload.data, payload.size);
}

void RunWriter::Impl::emit_all() {
  emit_scalars();
  emit_summaries();
  for (const auto& [layer_id, layer] : neurons) emit_neurons(layer_id);
  buffered = false;
}

}  // namespace trainscope::format
