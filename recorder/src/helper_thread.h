// A second thread for the recorder's own reductions inside step(): the parameter statistics of a captured step read
// every weight and gradient (~4 MB for the VAE) and are memory-bound on one core, while the other core only runs
// OpenBLAS's sched_yield spinner at that moment. Chunks are claimed from a shared counter, so the caller finishes
// alone when the helper is not scheduled in time: splitting never waits on a busy core.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include <trainscope/format/thread_placement.h>

namespace trainscope::detail {

class HelperThread {
 public:
  HelperThread();  // starts no thread yet: the first run() with more than one chunk does
  ~HelperThread();
  HelperThread(const HelperThread&) = delete;
  HelperThread& operator=(const HelperThread&) = delete;

  // Calls task(i) once for every i in [0, count), on the calling thread and the helper, and returns when all are
  // done. Tasks must be independent. An exception from a task (on either thread) is rethrown here once all tasks
  // ran. Runs everything inline on a one-core machine.
  void run(size_t count, const std::function<void(size_t)>& task);

  // Chunks the helper took in all runs so far (for tests: proof that the work really was shared).
  uint64_t helper_chunks() const { return helper_chunks_.load(std::memory_order_relaxed); }

 private:
  void loop();
  // Claims the next chunk of run `generation`: false once that run has no chunk left or a newer run started.
  bool claim(uint32_t generation, size_t count, size_t& chunk);

  std::thread thread_;
  format::CallerCpuAvoider placement_;  // woken on the caller's core, the helper would preempt it
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool usable_ = true;  // false on a one-core machine or when the thread could not start
  // The current run, published under mutex_: the helper copies them when it wakes.
  uint32_t generation_ = 0;
  size_t count_ = 0;
  const std::function<void(size_t)>* task_ = nullptr;
  // (generation << 32) | next chunk: a helper that woke late for an old run cannot claim a chunk of a newer one.
  std::atomic<uint64_t> next_{0};
  std::atomic<size_t> done_{0};
  std::atomic<uint64_t> helper_chunks_{0};
  std::exception_ptr helper_error_;  // guarded by mutex_: the first exception of a task on the helper
};

}  // namespace trainscope::detail
