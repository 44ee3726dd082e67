// CallerCpuAvoider: the worker's allowed cores lose the caller's core, and nothing else. CoreYielder: yields once
// per slice of work, never with a zero slice.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <trainscope/format/thread_placement.h>

#include <chrono>
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

// Busy for at least `d` without sleeping, as a piece of the writer's work is.
void work_for(std::chrono::microseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

TEST(CoreYielder, YieldsOncePerSliceOfWork) {
  CoreYielder yielder(std::chrono::microseconds(100));
  const auto begin = std::chrono::steady_clock::now();
  yielder.start();
  for (int i = 0; i < 40; ++i) {
    work_for(std::chrono::microseconds(30));
    yielder.pause();
  }
  const double elapsed_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
  // Pieces of at least 30 us: 100 us have passed after at most 4 of them, so at least every 4th pause yields; and no
  // two yields are less than a slice apart, however much the pieces were stretched by other load.
  EXPECT_GE(yielder.yields(), 10u);
  EXPECT_LE(double(yielder.yields()), elapsed_us / 100.0 + 1);
}

TEST(CoreYielder, StartCountsTheSliceFromNowAndAZeroSliceNeverYields) {
  CoreYielder yielder(std::chrono::microseconds(2000));
  work_for(std::chrono::microseconds(2500));  // a wait before the work: not work
  yielder.start();
  yielder.pause();
  EXPECT_EQ(yielder.yields(), 0u);
  CoreYielder never(std::chrono::microseconds(0));
  never.start();
  for (int i = 0; i < 5; ++i) {
    work_for(std::chrono::microseconds(50));
    never.pause();
  }
  EXPECT_EQ(never.yields(), 0u);
}

}  // namespace
}  // namespace trainscope::format
