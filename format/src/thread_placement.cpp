#include <trainscope/format/thread_placement.h>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace trainscope::format {

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

}  // namespace trainscope::format
