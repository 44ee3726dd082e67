// Keeps a background thread off the core of the thread that hands it work.
//
// Woken by a futex from the training thread, Linux tends to run the woken thread on the waker's core (it expects the
// waker to sleep soon). The training thread does not sleep: it was preempted for as long as the woken thread worked.
// Measured on the 2-core VM: the writer compressing a step's statistics held the training thread ~0.4 ms in every
// step() that handed it a snapshot, and a helper thread meant to split a reduction took 85% of its chunks itself,
// so the split ran no faster. Placed on the other cores instead, the worker shares a core with LibTorch's OpenBLAS
// worker, which spins in sched_yield between calls and gives way.
#pragma once

#include <thread>

namespace trainscope::format {

class CallerCpuAvoider {
 public:
  // Call from the thread that hands work over, before waking `worker`: when that thread runs on another core than
  // last time, `worker` may run anywhere the caller may except that core. A system call only when the core changed;
  // nothing when only one core is allowed, or on systems other than Linux.
  void update(std::thread& worker);

 private:
  int avoided_ = -1;
};

}  // namespace trainscope::format
