#include "helper_thread.h"

#include <exception>
#include <system_error>
#include <utility>

namespace trainscope::detail {

HelperThread::HelperThread() : usable_(std::thread::hardware_concurrency() > 1) {}

HelperThread::~HelperThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

bool HelperThread::claim(uint32_t generation, size_t count, size_t& chunk) {
  uint64_t v = next_.load(std::memory_order_acquire);
  while (true) {
    if (uint32_t(v >> 32) != generation || size_t(uint32_t(v)) >= count) return false;
    if (next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) {
      chunk = size_t(uint32_t(v));
      return true;
    }
  }
}

void HelperThread::run(size_t count, const std::function<void(size_t)>& task) {
  const bool split = count > 1 && count <= UINT32_MAX;
  if (split && usable_ && !thread_.joinable()) {
    try {
      thread_ = std::thread([this] {
        format::name_this_thread("ts-helper");
        loop();
      });
    } catch (const std::system_error&) {
      usable_ = false;  // no thread to be had: the work stays on this one
    }
  }
  if (!split || !usable_) {
    for (size_t i = 0; i < count; ++i) task(i);
    return;
  }
  placement_.update(thread_);
  uint32_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation = ++generation_;
    count_ = count;
    task_ = &task;
    done_.store(0, std::memory_order_relaxed);
    next_.store(uint64_t(generation) << 32, std::memory_order_release);
  }
  wake_.notify_one();
  size_t chunk;
  size_t mine = 0;
  std::exception_ptr error;
  while (claim(generation, count, chunk)) {
    try {
      task(chunk);
    } catch (...) {
      if (!error) error = std::current_exception();
    }
    ++mine;
  }
  // The helper holds at most one chunk now; `task` must outlive it, so even an error waits for it.
  while (done_.load(std::memory_order_acquire) + mine < count) std::this_thread::yield();
  std::exception_ptr helper_error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    helper_error = std::exchange(helper_error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
  if (helper_error) std::rethrow_exception(helper_error);
}

void HelperThread::loop() {
  uint32_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const size_t count = count_;
    const std::function<void(size_t)>* task = task_;
    lock.unlock();
    size_t chunk;
    std::exception_ptr error;
    while (claim(seen, count, chunk)) {
      try {
        (*task)(chunk);
      } catch (...) {
        if (!error) error = std::current_exception();  // rethrown by run() on the caller's thread
      }
      helper_chunks_.fetch_add(1, std::memory_order_relaxed);
      if (error) {
        std::lock_guard<std::mutex> guard(mutex_);
        if (!helper_error_) helper_error_ = error;
        error = nullptr;
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
    lock.lock();
  }
}

}  // namespace trainscope::detail
