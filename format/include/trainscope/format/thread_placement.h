// Keeps a background thread off the core of the thread that hands it work.
//
// Woken by a futex from the training thread, Linux tends to run the woken thread on the waker's core (it expects the
// waker to sleep soon). The training thread does not sleep: it was preempted for as long as the woken thread worked.
// Measured on the 2-core VM: the writer compressing a step's statistics held the training thread ~0.4 ms in every
// step() that handed it a snapshot, and a helper thread meant to split a reduction took 85% of its chunks itself,
// so the split ran no faster. Placed on the other cores instead, the worker shares a core with LibTorch's OpenBLAS
// worker, which spins in sched_yield between calls and gives way.
#pragma once

#include <chrono>
#include <cstdint>
#include <thread>

namespace trainscope::format {

// Names the calling thread as profilers and `top -H` show it (at most 15 characters; Linux only).
void name_this_thread(const char* name);

class CallerCpuAvoider {
 public:
  // Call from the thread that hands work over, before waking `worker`: when that thread runs on another core than
  // last time, `worker` may run anywhere the caller may except that core. A system call only when the core changed;
  // nothing when only one core is allowed, or on systems other than Linux.
  void update(std::thread& worker);

 private:
  int avoided_ = -1;
};

// Makes a long piece of background work give its core back every `slice`.
//
// That core is not free: the training job's BLAS library runs half of every matrix product there, and its worker
// waits for work by spinning in sched_yield(). Once our thread has the core, the scheduler lets it run until its time
// slice ends (milliseconds), and every matrix product started meanwhile waits for its second half. Measured on the
// 2-core VM (recorder_bench's last two rows): 1.5 ms of work after each step of the VAE loop cost 1.22-1.27x of the
// loop's time in one go and 1.04-1.05x when it yielded every 20 us. The writer compresses ~0.3 ms a step when every
// step is recorded (1 MB chunks at once), though its gain there was within the VM's noise. Call pause() between
// pieces of work of a few microseconds: it reads the clock and, once `slice` has passed, yields. When no other
// thread wants the core, the yield returns at once.
class CoreYielder {
 public:
  explicit CoreYielder(std::chrono::microseconds slice) : slice_(slice) {}
  // The work starts (after the thread waited): the first slice counts from now.
  void start() { last_ = std::chrono::steady_clock::now(); }
  // Between two pieces of work. A zero slice never yields.
  void pause();
  uint64_t yields() const { return yields_; }

 private:
  std::chrono::microseconds slice_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  uint64_t yields_ = 0;
};

}  // namespace trainscope::format
