// The victim of the crash-safety test (kill_test.cpp): records training-like snapshots and full weight tensors
// with a short flush interval until it is killed, and reports on stdout, one line per event, what it handed over:
//
//   ready <steady-clock ns>          the RunWriter exists (its metadata chunk is in the file)
//   step <n> <steady-clock ns>       append() of step n (snapshot and, if due, full tensor) returned
//
// Everything it records comes from the deterministic generators of test_support, so the test can recompute what
// any step must hold. Lines are written with one write(2) each so that a SIGKILL never leaves half a line.
#include <trainscope/format/run_writer.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "kill_writer_schedule.h"
#include "test_support.h"

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void report(const std::string& line) {
  const std::string text = line + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, text.data() + done, text.size() - done);
    if (n <= 0) std::_Exit(3);  // the test went away
    done += size_t(n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace trainscope;
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s RUN_DIR SEED\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  const testing::KillSchedule schedule = testing::KillSchedule::from_seed(std::strtoull(argv[2], nullptr, 10));

  format::WriterOptions options;
  options.flush_interval = schedule.flush_interval;
  options.segment_bytes = schedule.segment_bytes;
  options.chunk_bytes = schedule.chunk_bytes;
  options.keyframe_interval = schedule.keyframe_interval;
  const format::RunMetadata metadata = testing::small_model_metadata(schedule.neurons);
  format::RunWriter writer(dir, metadata, options);
  report("ready " + std::to_string(now_ns()));

  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0;; ++step) {
    if (!writer.append(schedule.snapshot(step, metadata))) {
      std::fprintf(stderr, "snapshot %lld dropped: %s\n", static_cast<long long>(step), writer.status().error.c_str());
      return 1;
    }
    if (schedule.has_full_tensor(step) && !writer.append(schedule.full_tensor(step))) {
      std::fprintf(stderr, "tensor %lld dropped: %s\n", static_cast<long long>(step), writer.status().error.c_str());
      return 1;
    }
    report("step " + std::to_string(step) + " " + std::to_string(now_ns()));
    // Paced like a training loop, so that the background thread keeps up and the loss bound is meaningful.
    std::this_thread::sleep_until(start + schedule.step_period * (step + 1));
  }
}
