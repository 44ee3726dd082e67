// Writes a recording: the training thread hands snapshots over cheaply; a background thread groups, filters,
// compresses and appends them as chunks to rolling segment files.
#pragma once

#include <trainscope/format/metadata.h>
#include <trainscope/format/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

namespace trainscope::format {

enum class QueuePolicy : uint8_t {
  Block,          // append() waits for room: nothing is lost, training may stall behind slow disks
  DropAndRecord,  // append() drops the snapshot and a GAP chunk records which steps are missing
};

struct WriterOptions {
  size_t segment_bytes = size_t(256) << 20;        // a segment rolls over once it reaches this size
  std::chrono::milliseconds flush_interval{1000};  // buffered data reaches the file at least this often
  size_t queue_bytes = size_t(256) << 20;          // bound of the hand-off queue
  QueuePolicy queue_policy = QueuePolicy::Block;
  size_t chunk_bytes = size_t(1) << 20;  // target raw size of one chunk
  int zstd_level = 1;                    // full tensors, scalars, summaries, metadata
  // Chunks of per-neuron statistics, most of what a recording writes: zstd's fast mode -1 skips the entropy coding
  // of literals, which gains little on the statistics' mantissa bytes. Measured on recorder_bench's every-step
  // statistics in the writer's 16 KB pieces: 1.6x the speed of level 1 (880 vs 560 MB/s) for 3-5 % more bytes; the
  // recorder's threads then took 1.44 instead of 1.78 ms of CPU a step. Full tensors keep level 1: at -1 they grew by
  // 12 %, past the recorder's size goal.
  int statistics_zstd_level = -1;
  Precision precision = Precision::Float32;
  int keyframe_interval = 64;  // full tensors: every n-th snapshot of a tensor is stored without a base
  // Weight gradients of low rank (a Linear layer's over a batch smaller than the layer) are stored as some of their
  // columns, the others' coefficients and a residual: 3.5x smaller for a 512x784 gradient of batch 64, at the cost
  // of about 3 x rows x columns x rank multiply-adds on the background thread (25 ms for that one).
  bool low_rank_gradients = true;
  bool fsync_on_flush = false;
  // The background thread gives its core back at least this often while it encodes and compresses (see
  // CoreYielder in thread_placement.h: the training job's BLAS worker shares that core); zero: never.
  std::chrono::microseconds yield_slice{20};
  // While work comes often (items less than 5 ms apart), the background thread looks for the next item this often
  // instead of waiting to be woken: waking it cost the thread that hands work over ~28 us each time on the 2-core VM
  // (a futex wake-up across cores), ~1 % of a VAE step recorded every step. flush() and request_flush() always wake
  // it. Zero: always woken.
  std::chrono::microseconds poll_period{1000};
};

struct WriterStatus {
  uint64_t snapshots_written = 0;
  uint64_t snapshots_dropped = 0;
  uint64_t chunks_written = 0;
  uint64_t raw_bytes = 0;     // protobuf payload bytes before compression
  uint64_t stored_bytes = 0;  // bytes in segment files, framing included
  uint32_t segments = 0;
  size_t queued_bytes = 0;
  uint64_t core_yields = 0;  // times the background thread gave its core back mid-work
  uint64_t wakeups = 0;      // times a hand-over woke the background thread (not polling for work then)
  std::string error;         // first I/O error; once set the writer stops writing and drops everything
};

class RunWriter {
 public:
  // Creates the run directory (and parents) and the first segment. Throws FormatError naming the path on failure.
  RunWriter(const std::filesystem::path& run_dir, RunMetadata metadata, WriterOptions options = {});
  ~RunWriter();  // close()s
  RunWriter(const RunWriter&) = delete;
  RunWriter& operator=(const RunWriter&) = delete;

  // Replaces the run metadata (e.g. once the layer graph was discovered). Never throws.
  void set_metadata(RunMetadata metadata);
  // Hands a snapshot over. Returns false if it was dropped (queue full with DropAndRecord, or writer failed).
  // Never throws.
  bool append(Snapshot snapshot);
  bool append(FullTensor tensor);
  // Writes out everything handed over so far; returns once it is in the segment file (and fsynced if asked).
  void flush();
  // Asks the background thread to write out everything buffered now, without waiting.
  void request_flush();
  // Flushes, writes the segment's index footer and stops the background thread. Idempotent, never throws.
  void close();

  WriterStatus status() const;
  const std::filesystem::path& directory() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainscope::format
