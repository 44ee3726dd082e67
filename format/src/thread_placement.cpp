#include <trainscope/format/thread_placement.h>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace trainscope::format {

void name_this_thread(const char* name) {
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#else
  (void)name;
#endif
}

void CallerCpuAvoider::update(std::thread& worker) {
#if defined(__linux__)
  if (!worker.joinable()) return;
  const int cpu = sched_getcpu();
  if (cpu < 0 || cpu == avoided_) return;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;  // the calling thread's own mask
  if (!CPU_ISSET(cpu, &allowed)) return;
  CPU_CLR(cpu, &allowed);
  if (CPU_COUNT(&allowed) == 0) return;  // one core for all: the worker has to share it
  if (pthread_setaffinity_np(worker.native_handle(), sizeof allowed, &allowed) == 0) avoided_ = cpu;
#else
  (void)worker;
#endif
}

void CoreYielder::pause() {
  if (slice_.count() <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < slice_) return;
  std::this_thread::yield();  // sched_yield() on Linux
  ++yields_;
  last_ = std::chrono::steady_clock::now();
}

}  // namespace trainscope::format
