// Crash safety: a writer process (kill_writer) is killed with SIGKILL at random moments, and each torn recording
// must open, verify chunk by chunk, hold bit-exactly what the deterministic generator produced, and have lost no
// step handed over longer than flush_interval + margin before the kill.
//
// Reproduce a failure with TRAINSCOPE_KILL_SEED=<base seed printed by the test> (and TRAINSCOPE_KILL_RUNS=<n>);
// the run directory of a failed kill is kept and its path printed.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <trainscope/format/run_reader.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kill_writer_schedule.h"
#include "test_support.h"

namespace trainscope::format {
namespace {

using testing::KillSchedule;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}
bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

bool same_summary(const TensorSummary& a, const TensorSummary& b) {
  for (Statistic s : all_statistics())
    if (!same_bits(a.get(s), b.get(s))) return false;
  return same_bits(a.numel, b.numel);
}

// What the victim reported before it died.
struct Handover {
  int64_t ready_ns = -1;
  std::vector<std::pair<int64_t, int64_t>> steps;  // (step, steady-clock ns when append() returned)
  int64_t last_step() const { return steps.empty() ? -1 : steps.back().first; }
};

void parse_lines(std::string& pending, Handover* out) {
  size_t start = 0;
  for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::istringstream line(pending.substr(start, nl - start));
    std::string what;
    line >> what;
    if (what == "ready") {
      line >> out->ready_ns;
    } else if (what == "step") {
      int64_t step = 0, ns = 0;
      line >> step >> ns;
      out->steps.emplace_back(step, ns);
    }
  }
  pending.erase(0, start);
}

struct KillOutcome {
  Handover handover;
  int64_t kill_ns = 0;
  int status = 0;
};

// Starts the victim, reads its reports until `delay` has passed, kills it, and drains the pipe.
KillOutcome run_and_kill(const std::filesystem::path& dir, uint64_t seed, std::chrono::microseconds delay) {
  KillOutcome outcome;
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const std::string seed_text = std::to_string(seed);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl(TRAINSCOPE_KILL_WRITER, TRAINSCOPE_KILL_WRITER, dir.c_str(), seed_text.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  const int64_t deadline = now_ns() + int64_t(delay.count()) * 1000;
  std::string pending;
  char buffer[8192];
  bool open = true;
  for (int64_t now; open && (now = now_ns()) < deadline;) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, int(std::max<int64_t>(1, (deadline - now) / 1000000)));
    if (ready <= 0) continue;
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n <= 0) {
      open = false;  // the victim ended on its own: reported below through its status
      break;
    }
    pending.append(buffer, size_t(n));
    parse_lines(pending, &outcome.handover);
  }
  outcome.kill_ns = now_ns();
  ::kill(pid, SIGKILL);
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) pending.append(buffer, size_t(n));
  parse_lines(pending, &outcome.handover);
  ::close(fds[0]);
  ::waitpid(pid, &outcome.status, 0);
  return outcome;
}

struct CheckSummary {
  size_t steps_on_disk = 0, steps_required = 0, tensors_on_disk = 0, segments = 0;
  double newest_complete_age_ms = -1;  // how long before the kill the newest fully stored step was handed over
};

// Checks one killed run and fills in what it found for the log line. Failures are reported through gtest.
void check_run(const std::filesystem::path& dir, const KillSchedule& schedule, const KillOutcome& outcome,
               std::chrono::milliseconds margin, CheckSummary* out) {
  CheckSummary& summary = *out;
  const Handover& h = outcome.handover;
  std::unique_ptr<RunReader> reader;
  try {
    reader = std::make_unique<RunReader>(dir);
  } catch (const FormatError& e) {
    // Before "ready" the writer may not have written its metadata chunk yet; after it the run must open.
    if (h.ready_ns >= 0) {
      ADD_FAILURE() << "a killed run does not open: " << e.what();
    }
    return;
  }
  summary.segments = reader->segment_files().size();

  // Every chunk the reader indexes must verify; only the last segment may be torn or without footer.
  const auto last_segment = reader->segment_files().back();
  for (const Problem& p : reader->verify()) {
    const bool torn = p.kind == Problem::Kind::TornTail || p.kind == Problem::Kind::MissingFooter;
    EXPECT_TRUE(torn && p.file == last_segment) << "unexpected problem: " << p.message;
  }

  const RunMetadata metadata = testing::small_model_metadata(schedule.neurons);
  const int64_t last_handed = h.last_step();
  // A step may reach the file between append() and its report line; nothing later can exist.
  const int64_t newest_possible = last_handed + 1;
  const int64_t bound_ns = int64_t(std::chrono::nanoseconds(schedule.flush_interval + margin).count());
  std::set<int64_t> required;
  for (const auto& [step, ns] : h.steps)
    if (ns <= outcome.kill_ns - bound_ns) required.insert(step);
  summary.steps_required = required.size();

  // Scalars: bit-exact, nothing from the future, and every required step present.
  std::set<int64_t> steps_on_disk;
  for (const ScalarSeries& series : reader->read_scalars()) {
    std::set<int64_t> seen;
    for (size_t i = 0; i < series.steps.size(); ++i) {
      const int64_t step = series.steps[i];
      ASSERT_GE(step, 0);
      ASSERT_LE(step, newest_possible) << "scalar '" << series.name << "' at a step never handed over";
      EXPECT_TRUE(seen.insert(step).second) << "scalar '" << series.name << "' twice at step " << step;
      const Snapshot expected = schedule.snapshot(step, metadata);
      auto it = std::find_if(expected.scalars.begin(), expected.scalars.end(),
                             [&](const auto& kv) { return kv.first == series.name; });
      ASSERT_NE(it, expected.scalars.end()) << "unknown scalar '" << series.name << "'";
      EXPECT_TRUE(same_bits(series.values[i], it->second)) << series.name << " differs at step " << step;
      steps_on_disk.insert(step);
    }
    for (int64_t step : required) {
      EXPECT_TRUE(seen.count(step)) << "scalar '" << series.name << "' lost at step " << step;
    }
  }
  std::vector<int64_t> summary_steps;
  reader->read_all_summaries(INT64_MIN, INT64_MAX, &summary_steps);
  steps_on_disk.insert(summary_steps.begin(), summary_steps.end());
  steps_on_disk.insert(required.begin(), required.end());

  // Whole snapshots: whatever is present is bit-exact; required steps are complete.
  int64_t newest_complete = -1;
  for (int64_t step : steps_on_disk) {
    ASSERT_LE(step, newest_possible);
    const Snapshot expected = schedule.snapshot(step, metadata);
    Snapshot got;
    try {
      got = reader->read_snapshot(step);
    } catch (const FormatError& e) {
      ADD_FAILURE() << "step " << step << " unreadable: " << e.what();
      continue;
    }
    if (got.wall_time != 0) {
      EXPECT_TRUE(same_bits(got.wall_time, expected.wall_time)) << "wall time at " << step;
    }
    size_t complete_records = 0;
    for (const LayerQuantityRecord& r : got.layers) {
      auto want = std::find_if(expected.layers.begin(), expected.layers.end(), [&](const LayerQuantityRecord& e) {
        return e.layer_id == r.layer_id && e.quantity == r.quantity;
      });
      ASSERT_NE(want, expected.layers.end()) << "unexpected record at step " << step;
      if (r.summary.numel != 0 || r.summary.std != 0) {
        EXPECT_TRUE(same_summary(r.summary, want->summary)) << "summary differs at step " << step;
      }
      if (r.neuron_stats) {
        EXPECT_EQ(r.neuron_count, want->neuron_count);
        // Statistics arrive per layer chunk; a chunk holds all statistics of its layer, so a record is all or none.
        EXPECT_EQ(r.neuron_stats, want->neuron_stats) << "partial neuron statistics at step " << step;
        EXPECT_TRUE(same_bits(r.neuron_values, want->neuron_values)) << "neuron statistics differ at step " << step;
      }
      if (same_summary(r.summary, want->summary) && r.neuron_stats == want->neuron_stats) ++complete_records;
    }
    const bool complete = complete_records == expected.layers.size() && got.scalars.size() == expected.scalars.size();
    if (required.count(step)) {
      EXPECT_TRUE(complete) << "required step " << step << " is incomplete";
    }
    if (complete) newest_complete = std::max(newest_complete, step);
  }
  summary.steps_on_disk = steps_on_disk.size();

  // Full tensors: delta-coded against earlier ones, so each read also checks its chain of bases.
  std::set<int64_t> tensor_steps;
  for (int64_t step : reader->full_tensor_steps(KillSchedule::kTensorLayer, Quantity::Weight)) {
    EXPECT_TRUE(schedule.has_full_tensor(step) && step <= newest_possible) << "unexpected full tensor at " << step;
    auto t = reader->read_full_tensor(KillSchedule::kTensorLayer, Quantity::Weight, step);
    ASSERT_TRUE(t.has_value()) << "full tensor at step " << step << " is indexed but unreadable";
    const FullTensor want = schedule.full_tensor(step);
    EXPECT_EQ(t->shape, want.shape);
    EXPECT_TRUE(same_bits(t->values, want.values)) << "full tensor differs at step " << step;
    tensor_steps.insert(step);
  }
  summary.tensors_on_disk = tensor_steps.size();
  for (int64_t step : required) {
    if (schedule.has_full_tensor(step)) {
      EXPECT_TRUE(tensor_steps.count(step)) << "full tensor lost at step " << step;
    }
  }

  for (const auto& [step, ns] : h.steps)
    if (step == newest_complete) summary.newest_complete_age_ms = double(outcome.kill_ns - ns) / 1e6;
}

TEST(KillTest, SigkillAtRandomMomentsLosesOnlyTheLastFlushInterval) {
  const uint64_t base_seed = env_or("TRAINSCOPE_KILL_SEED", std::random_device{}());
  const uint64_t runs = env_or("TRAINSCOPE_KILL_RUNS", 50);
  const auto margin = std::chrono::milliseconds(env_or("TRAINSCOPE_KILL_MARGIN_MS", 400));
  std::printf(
      "kill test: base seed %llu, %llu runs, loss bound flush_interval + %lld ms "
      "(rerun with TRAINSCOPE_KILL_SEED=%llu)\n",
      static_cast<unsigned long long>(base_seed), static_cast<unsigned long long>(runs),
      static_cast<long long>(margin.count()), static_cast<unsigned long long>(base_seed));
  double worst_age_ms = 0;
  for (uint64_t i = 0; i < runs; ++i) {
    const uint64_t seed = base_seed + i;
    const KillSchedule schedule = KillSchedule::from_seed(seed);
    std::mt19937_64 rng(seed);
    // Mostly inside the steady state (several flushes and roll-overs), sometimes right after start-up.
    const auto delay =
        rng() % 8 == 0 ? std::chrono::microseconds(rng() % 30000) : std::chrono::microseconds(60000 + rng() % 1140000);
    testing::TempDir dir("kill");
    const auto run_dir = dir / "run";
    SCOPED_TRACE("kill #" + std::to_string(i) + " seed " + std::to_string(seed) + " after " +
                 std::to_string(delay.count() / 1000) + " ms");
    const KillOutcome outcome = run_and_kill(run_dir, seed, delay);
    ASSERT_TRUE(WIFSIGNALED(outcome.status) && WTERMSIG(outcome.status) == SIGKILL)
        << "the writer ended on its own (status " << outcome.status << ") before it was killed";
    CheckSummary s;
    check_run(run_dir, schedule, outcome, margin, &s);
    worst_age_ms = std::max(worst_age_ms, s.newest_complete_age_ms);
    std::printf(
        "kill #%02llu seed %llu after %4lld ms: handed %5zu steps, %5zu on disk (%zu required), %3zu tensors, "
        "%zu segments, newest complete step handed %.0f ms before the kill\n",
        static_cast<unsigned long long>(i), static_cast<unsigned long long>(seed),
        static_cast<long long>(delay.count() / 1000), outcome.handover.steps.size(), s.steps_on_disk, s.steps_required,
        s.tensors_on_disk, s.segments, s.newest_complete_age_ms);
    if (::testing::Test::HasFailure()) {
      const auto kept = std::filesystem::temp_directory_path() / ("trainscope-kill-failed-" + std::to_string(seed));
      std::error_code ec;
      std::filesystem::remove_all(kept, ec);
      std::filesystem::copy(run_dir, kept, std::filesystem::copy_options::recursive, ec);
      std::printf("kept the failed run in %s\n", kept.c_str());
      break;
    }
  }
  std::printf("kill test: worst age of the newest complete step at the kill: %.0f ms\n", worst_age_ms);
}

}  // namespace
}  // namespace trainscope::format
