// CallerCpuAvoider: the worker's allowed cores lose the caller's core, and nothing else.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <trainscope/format/thread_placement.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace trainscope::format {
namespace {

TEST(CallerCpuAvoider, KeepsTheWorkerOffTheCallersCore) {
  cpu_set_t mine;
  CPU_ZERO(&mine);
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  if (CPU_COUNT(&mine) < 2) GTEST_SKIP() << "one core allowed: the worker has to share it";
  std::mutex mutex;
  std::condition_variable done;
  bool stop = false;
  std::thread worker([&] {
    std::unique_lock<std::mutex> lock(mutex);
    done.wait(lock, [&] { return stop; });
  });
  CallerCpuAvoider avoider;
  // The caller may move between cores; retry until sched_getcpu() agrees before and after the update.
  int cpu = -1;
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int before = sched_getcpu();
    avoider.update(worker);
    if (sched_getcpu() == before) {
      cpu = before;
      break;
    }
  }
  ASSERT_GE(cpu, 0);
  cpu_set_t theirs;
  CPU_ZERO(&theirs);
  ASSERT_EQ(pthread_getaffinity_np(worker.native_handle(), sizeof theirs, &theirs), 0);
  EXPECT_FALSE(CPU_ISSET(cpu, &theirs)) << "the worker may still run on the caller's core " << cpu;
  EXPECT_EQ(CPU_COUNT(&theirs), CPU_COUNT(&mine) - 1) << "only the caller's core is taken away";
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &theirs)) {
      EXPECT_TRUE(CPU_ISSET(c, &mine)) << "core " << c << " was never allowed";
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
  }
  done.notify_one();
  worker.join();
}

}  // namespace
}  // namespace trainscope::format
