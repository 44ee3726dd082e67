// Recorder overhead, as ratios against the bare training loop measured in the same run. The goals' figures come
// last: the bare loop and the recorder's live in one process and run in alternating blocks of 20 steps, a fresh
// pair each round, so that both meet the VM's drifting speed in the same seconds. The table before it runs each
// configuration as a whole run, one after another round by round (the best round of each, and the median of the
// per-round ratios): it gives the CPU, bytes, memory and per-phase figures, and its wall ratios drift by +-10%.
// Models: the VAE of examples/vae (the same modules, reparameterisation, BCE + KL loss, its named scalars passed to
// step(), Adam) on synthetic image-like batches, and a 784-512-256-10 classifier.
//   default settings (RecorderOptions{}: interval 10, flight recorder on)   goal <= 1.05x
//   per-neuron statistics of all quantities every step (interval 1)          goal <= 1.15x
//   torch::save of parameters, gradients and activations / 10 steps (the naive alternative), and bytes per saved
//   step against the recorder storing the same full tensors                   goal <= 0.55x
// Besides wall time it prints the training thread's CPU time and the whole process's (writer thread included) as
// ratios: less disturbed by other processes on a shared machine; page faults per step; the CPU time of the
// recorder's own threads (the writer) per step; and the mean time of the
// steps the recorder captured and of the others, against the bare loop's, also by steps since the last capture.
// The goals are on the interleaved wall-time ratios; under each, the mean time of every phase of the step
// (zero_grad, forward, backward, step(), optimizer) in the same blocks, this loop's against the bare one's.
// Two more rows, no goal: the bare loop with 1.5 ms of work a step on another thread, in one go and yielding every
// 20 us, which is why the writer yields (format::CoreYielder).
// Usage: recorder_bench [--steps N] [--rounds R] [--batch B] [--out DIR] [--only MODE] [--model vae|mlp|all]
//   [--blocks N]: blocks of 20 steps per round of the interleaved figures (30; 0: none)
//   [--threads N]: LibTorch's intra-op threads (1, as examples/vae and examples/gan train by default)
//   --only default|every|full: run the bare loop and that one configuration (for profiling); --only bare: the bare
//   loop alone, --only-recorder bare|default|every|full: that configuration alone (to compare profiles of the two)
//   --interval N, --ring-interval N, --zstd L, --stats-zstd L, --keyframe K: override RecorderOptions::interval (of
//   the default configuration), RecorderOptions::ring_interval, WriterOptions::zstd_level, statistics_zstd_level and
//   WriterOptions::keyframe_interval (to measure the choices documented in recorder.h); --quantities LIST:
//   RecorderOptions::quantities of the recorder configurations (what each quantity's capture costs);
//   --yield-slice US: WriterOptions::yield_slice (0: the writer never yields); --poll-period US:
//   WriterOptions::poll_period (0: the writer is woken for every hand-over)
#include <sys/resource.h>
#include <torch/torch.h>
#include <trainscope/format/thread_placement.h>
#include <trainscope/recorder.h>

#include "vae_model.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

namespace fs = std::filesystem;

namespace {

// ----- the VAE of examples/vae (vae_model.h) -----

using trainscope::examples::Vae;

// ----- the classifier -----

struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : fc0(register_module("fc0", torch::nn::Linear(784, 512))),
        act0(register_module("act0", torch::nn::ReLU())),
        fc1(register_module("fc1", torch::nn::Linear(512, 256))),
        act1(register_module("act1", torch::nn::ReLU())),
        fc2(register_module("fc2", torch::nn::Linear(256, 10))) {}
  torch::Tensor forward(torch::Tensor x, std::vector<torch::Tensor>* hidden = nullptr) {
    x = act0(fc0(x));
    if (hidden) hidden->push_back(x);
    x = act1(fc1(x));
    if (hidden) hidden->push_back(x);
    return fc2(x);
  }
  torch::nn::Linear fc0;
  torch::nn::ReLU act0;
  torch::nn::Linear fc1;
  torch::nn::ReLU act1;
  torch::nn::Linear fc2;
};
TORCH_MODULE(Mlp);

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) bytes += e.file_size();
  return bytes;
}

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// CPU time of this process's threads whose names start with "ts-" (the recorder's writer), read from
// their thread CPU clocks (nanoseconds; /proc's tick counts are too coarse for a run of a second). A figure the VM's
// speed changes less than wall time: what the recorder's background work costs, whichever core it ran on.
double recorder_threads_cpu_seconds() {
  double sum = 0;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/self/task", ec)) {
    std::FILE* f = std::fopen((task.path() / "comm").c_str(), "r");
    if (!f) continue;
    char name[32] = {};
    const bool named = std::fgets(name, sizeof name, f) && std::string(name).rfind("ts-", 0) == 0;
    std::fclose(f);
    if (!named) continue;
    const auto tid = uint32_t(std::atoi(task.path().filename().c_str()));
    // The kernel's CPU clock of thread `tid` (CPUCLOCK_SCHED, per thread), built in unsigned arithmetic: shifting the
    // negative ~tid left is undefined in C++17.
    const auto clock = clockid_t(int32_t((~tid << 3) | 6u));
    timespec t{};
    if (clock_gettime(clock, &t) == 0) sum += double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
  }
  return sum;
}

// Minor page faults of the whole process: fresh memory touched. On a VM a fault can cost microseconds, so the
// allocator's choices (returning freed memory, then faulting it in again) weigh on the step time.
int64_t process_page_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_minflt);
}

struct Result {
  double wall = 0, thread_cpu = 0, process_cpu = 0;
  uint64_t bytes = 0;
  size_t held = 0;
  int64_t saved_steps = 0;
  int64_t lazily_armed = 0;   // captures whose observer let the optimizer's step run unobserved
  double in_step = 0;         // seconds inside rec.step() on the training thread
  double background_cpu = 0;  // CPU seconds of the recorder's own threads (the writer)
  int64_t faults = 0;         // minor page faults during the run
  // Wall time of whole steps (forward to optimizer), split by whether the recorder captured the step: where the
  // overhead sits. The bare loop's steps are all "other" steps.
  double captured_seconds = 0, other_seconds = 0;
  int64_t captured_steps = 0, other_steps = 0;
  // The same by steps since the last captured one (0: captured; the last index takes all later ones), whole step
  // and its optimizer step alone (the step before a capture runs it armed): which steps carry the overhead.
  static constexpr int kAfter = 6;
  double after_seconds[kAfter] = {}, after_opt_seconds[kAfter] = {};
  int64_t after_steps[kAfter] = {};
  // Wall time of each phase of a step, summed over all steps: forward (zero_grad included), backward, what runs
  // between backward and optimizer (rec.step(); torch::save's save; the burst rows' hand-over), optimizer.
  double phase_seconds[4] = {};
};

// The last two: the bare loop with 1.5 ms of work handed to another thread after each backward pass, done in one go
// or yielding every 20 us (format::CoreYielder, as the writer does): what background work costs the loop's BLAS.
enum class Mode { Bare, Default, EveryStep, TorchSave, RecorderFull, BurstBlocking, BurstYielding };
enum class Model { Vae, Mlp };

int g_ring_interval = 0, g_keyframe = 0, g_interval = 0, g_yield_slice = -1,
    g_poll_period = -1;  // 0 (-1): the defaults
std::optional<int> g_zstd, g_stats_zstd;
std::optional<trainscope::QuantityMask> g_quantities;

trainscope::RecorderOptions options_for(Mode mode) {
  trainscope::RecorderOptions options;  // what a user gets
  if (g_ring_interval > 0) options.ring_interval = g_ring_interval;
  if (g_interval > 0) options.interval = g_interval;
  if (g_zstd) options.writer.zstd_level = *g_zstd;
  if (g_stats_zstd) options.writer.statistics_zstd_level = *g_stats_zstd;
  if (g_keyframe > 0) options.writer.keyframe_interval = g_keyframe;
  if (g_yield_slice >= 0) options.writer.yield_slice = std::chrono::microseconds(g_yield_slice);
  if (g_poll_period >= 0) options.writer.poll_period = std::chrono::microseconds(g_poll_period);
  if (g_quantities) options.quantities = *g_quantities;
  if (mode == Mode::EveryStep) options.interval = 1;
  if (mode == Mode::RecorderFull) {
    using trainscope::quantity_bit;
    using Q = trainscope::format::Quantity;
    options.full_tensor_interval = 10;
    options.full_tensor_quantities = quantity_bit(Q::Weight) | quantity_bit(Q::Bias) | quantity_bit(Q::WeightGrad) |
                                     quantity_bit(Q::BiasGrad) | quantity_bit(Q::Activation);
    options.quantities = 0;  // only the full tensors, to compare bytes with torch::save
    options.flight_recorder = false;
    options.interval = 1 << 30;
  }
  return options;
}

// What a LibTorch user can do today: save parameters, their gradients and the hidden activations.
void save_step(const torch::nn::Module& model, const std::vector<torch::Tensor>& hidden, const fs::path& file) {
  std::vector<torch::Tensor> all;
  for (const auto& p : model.parameters()) {
    all.push_back(p.detach());
    all.push_back(p.grad());
  }
  for (const auto& h : hidden) all.push_back(h.detach());
  torch::save(all, file.string());
}

// A background thread that, once started, works for 1.5 ms on a buffer, off the starting thread's core.
class Burst {
 public:
  explicit Burst(bool yielding) : yielder_(std::chrono::microseconds(yielding ? 20 : 0)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Burst() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  void start() {
    std::lock_guard<std::mutex> lock(mutex_);
    placement_.update(thread_);
    ++pending_;
    wake_.notify_one();
  }

 private:
  void loop() {
    std::vector<float> buffer(16 * 1024, 1.0f);
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] { return stop_ || pending_ > 0; });
      if (stop_) return;
      pending_ = 0;
      lock.unlock();
      yielder_.start();
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(1500);
      float sum = 0;
      while (std::chrono::steady_clock::now() < until) {
        for (float& f : buffer) sum += f * f;  // a few microseconds a pass, as a piece of the writer's work
        buffer[0] = sum * 1e-30f;
        yielder_.pause();
      }
      lock.lock();
    }
  }
  trainscope::format::CoreYielder yielder_;
  trainscope::format::CallerCpuAvoider placement_;
  std::mutex mutex_;
  std::condition_variable wake_;
  int pending_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// Fixed synthetic batches that look like images: in [0, 1], mostly dark, as Fashion-MNIST.
std::vector<torch::Tensor> make_images(int batch) {
  std::vector<torch::Tensor> images;
  for (int i = 0; i < 8; ++i) images.push_back(torch::relu(torch::rand({batch, 784}) * 1.6 - 0.6));
  return images;
}

// The forward pass and loss of one step; the VAE's named scalars go to `recon` and `kl`, the MLP's hidden
// activations to `hidden` when given.
torch::Tensor forward_loss(Model which, Vae& vae, Mlp& mlp, const torch::Tensor& x, const torch::Tensor& labels,
                           torch::Tensor& recon, torch::Tensor& kl, std::vector<torch::Tensor>* hidden) {
  if (which == Model::Mlp) return torch::cross_entropy_loss(mlp->forward(x, hidden), labels);
  auto [mu, logvar] = vae->enc->forward(x);
  const torch::Tensor z = mu + torch::randn_like(mu) * torch::exp(0.5 * logvar);
  const torch::Tensor logits = vae->dec->forward(z);
  const double batch = double(x.size(0));
  recon = torch::binary_cross_entropy_with_logits(logits, x, {}, {}, torch::Reduction::Sum) / batch;
  kl = -0.5 * torch::sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch;
  if (hidden) *hidden = {mu, logvar, z, logits};
  return recon + kl;
}

// The one call, with the VAE's named scalars; whether the step was captured.
bool record_step(trainscope::Recorder& rec, Model which, const torch::Tensor& loss, const torch::Tensor& recon,
                 const torch::Tensor& kl) {
  if (which == Model::Vae) return rec.step(loss, {{"recon", recon}, {"kl", kl}}).captured;
  return rec.step(loss).captured;
}

// One training run of `steps` steps on fixed synthetic batches that look like images.
Result run(Model which, Mode mode, int steps, int batch, const fs::path& out) {
  torch::manual_seed(7);
  fs::remove_all(out);
  if (mode == Mode::TorchSave) fs::create_directories(out);
  const std::vector<torch::Tensor> images = make_images(batch);
  const torch::Tensor labels = torch::randint(10, {batch}, torch::kLong);

  Vae vae;
  Mlp mlp;
  std::shared_ptr<torch::nn::Module> model =
      which == Model::Vae ? std::shared_ptr<torch::nn::Module>(vae.ptr()) : mlp.ptr();
  torch::optim::Adam opt(model->parameters(), 1e-3);
  std::unique_ptr<trainscope::Recorder> rec;
  if (mode == Mode::Default || mode == Mode::EveryStep || mode == Mode::RecorderFull)
    rec = std::make_unique<trainscope::Recorder>(model, out, options_for(mode));

  std::unique_ptr<Burst> burst;
  if (mode == Mode::BurstBlocking || mode == Mode::BurstYielding)
    burst = std::make_unique<Burst>(mode == Mode::BurstYielding);

  Result r;
  const auto start = std::chrono::steady_clock::now();
  const double thread_start = thread_cpu_seconds(), process_start = process_cpu_seconds();
  const int64_t faults_start = process_page_faults();
  int since_capture = Result::kAfter - 1;
  for (int s = 0; s < steps; ++s) {
    const auto step_start = std::chrono::steady_clock::now();
    auto forward_end = step_start, backward_end = step_start;
    bool captured = false;
    const bool save = mode == Mode::TorchSave && s % 10 == 0;
    std::vector<torch::Tensor> hidden;
    const torch::Tensor& x = images[size_t(s) % images.size()];
    opt.zero_grad();
    torch::Tensor recon, kl;
    const torch::Tensor loss = forward_loss(which, vae, mlp, x, labels, recon, kl, save ? &hidden : nullptr);
    forward_end = std::chrono::steady_clock::now();
    loss.backward();
    backward_end = std::chrono::steady_clock::now();
    if (rec) captured = record_step(*rec, which, loss, recon, kl);
    if (burst) burst->start();
    if (save) {
      save_step(*model, hidden, out / ("step-" + std::to_string(s) + ".pt"));
      ++r.saved_steps;
    }
    const auto opt_start = std::chrono::steady_clock::now();
    opt.step();
    const auto step_end = std::chrono::steady_clock::now();
    const auto seconds = [](auto from, auto to) { return std::chrono::duration<double>(to - from).count(); };
    const double step_seconds = seconds(step_start, step_end);
    r.phase_seconds[0] += seconds(step_start, forward_end);
    r.phase_seconds[1] += seconds(forward_end, backward_end);
    r.phase_seconds[2] += seconds(backward_end, opt_start);
    r.phase_seconds[3] += seconds(opt_start, step_end);
    (captured ? r.captured_seconds : r.other_seconds) += step_seconds;
    ++(captured ? r.captured_steps : r.other_steps);
    since_capture = captured ? 0 : std::min(since_capture + 1, Result::kAfter - 1);
    r.after_seconds[since_capture] += step_seconds;
    r.after_opt_seconds[since_capture] += std::chrono::duration<double>(step_end - opt_start).count();
    ++r.after_steps[since_capture];
  }
  if (rec) {
    r.held = rec->stats().held_bytes;
    r.lazily_armed = rec->stats().lazily_armed_steps;
    r.in_step = rec->stats().capture_seconds;
    rec->flush();  // the writer's last work counts, in the wall time and in its CPU time, read while it still runs
    r.background_cpu = recorder_threads_cpu_seconds();
    rec->close();
  }
  r.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.thread_cpu = thread_cpu_seconds() - thread_start;
  r.process_cpu = process_cpu_seconds() - process_start;
  r.faults = process_page_faults() - faults_start;
  r.bytes = directory_bytes(out);
  if (mode == Mode::RecorderFull) r.saved_steps = (steps + 9) / 10;
  return r;
}

// A training loop that runs steps when asked, with or without a recorder: two of them live in one process, see
// interleave().
class Loop {
 public:
  Loop(Model which, Mode mode, int batch, const fs::path& out)
      : which_(which),
        images_(make_images(batch)),
        labels_(torch::randint(10, {batch}, torch::kLong)),
        model_(which == Model::Vae ? std::shared_ptr<torch::nn::Module>(vae_.ptr()) : mlp_.ptr()),
        opt_(model_->parameters(), 1e-3) {
    fs::remove_all(out);
    if (mode != Mode::Bare) rec_ = std::make_unique<trainscope::Recorder>(model_, out, options_for(mode));
  }
  ~Loop() {
    if (rec_) rec_->close();
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Wall seconds of `n` whole steps; each phase's seconds are added to phases().
  double steps(int n) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    auto mark = start;
    const auto phase_done = [&](Phase p) {
      const auto now = Clock::now();
      phases_[p] += std::chrono::duration<double>(now - mark).count();
      mark = now;
    };
    for (int i = 0; i < n; ++i, ++step_) {
      opt_.zero_grad();
      phase_done(kZeroGrad);
      torch::Tensor recon, kl;
      const torch::Tensor& x = images_[size_t(step_) % images_.size()];
      const torch::Tensor loss = forward_loss(which_, vae_, mlp_, x, labels_, recon, kl, nullptr);
      phase_done(kForward);
      loss.backward();
      phase_done(kBackward);
      if (rec_) record_step(*rec_, which_, loss, recon, kl);
      phase_done(kRecord);
      opt_.step();
      phase_done(kOptimizer);
    }
    return std::chrono::duration<double>(Clock::now() - start).count();
  }
  enum Phase { kZeroGrad, kForward, kBackward, kRecord, kOptimizer, kPhases };
  // Seconds spent in each phase over all timed steps (the warm-up's included until reset).
  const std::array<double, kPhases>& phases() const { return phases_; }
  void reset_phases() { phases_.fill(0); }

 private:
  Model which_;
  std::vector<torch::Tensor> images_;
  torch::Tensor labels_;
  Vae vae_;
  Mlp mlp_;
  std::shared_ptr<torch::nn::Module> model_;
  torch::optim::Adam opt_;
  std::unique_ptr<trainscope::Recorder> rec_;
  int64_t step_ = 0;
  std::array<double, kPhases> phases_{};
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct Interleaved {
  double bare = 0, recorded = 0;                                       // seconds, all blocks
  std::vector<double> ratios;                                          // of each block
  std::array<double, Loop::kPhases> bare_phases{}, recorded_phases{};  // seconds, all blocks
  int steps = 0;                                                       // of each loop, all blocks
};

// Runs tasks one at a time on a thread of its own. Each loop of interleave() lives on one: a recorder arms its
// observer for the next step at the end of step(), on the training thread, and would otherwise observe every op of
// the other loop's block run on the same thread (the observer's cost, ~1% of a step, went to the bare loop).
class TaskThread {
 public:
  TaskThread() : thread_([this] { serve(); }) {}
  ~TaskThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  void run(const std::function<void()>& task) {
    std::unique_lock<std::mutex> lock(mutex_);
    task_ = &task;
    done_ = false;
    wake_.notify_all();
    wake_.wait(lock, [&] { return done_; });
    if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
  }

 private:
  void serve() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return quit_ || task_; });
      if (!task_) return;
      const std::function<void()>* task = std::exchange(task_, nullptr);
      lock.unlock();
      try {
        (*task)();
      } catch (...) {
        failure_ = std::current_exception();
      }
      lock.lock();
      done_ = true;
      wake_.notify_all();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  const std::function<void()>* task_ = nullptr;
  bool done_ = false, quit_ = false;
  std::exception_ptr failure_;
  std::thread thread_;  // last: it starts serving once the members above exist
};

// The bare loop and a recorder loop in one process, alternating in blocks of 20 steps (two intervals of the
// default settings), which one goes first swapping every block, with an untimed 2 ms pause before each block for
// the writer to finish a block's last work; each loop on its own thread (TaskThread). Both meet the machine in the
// same seconds: runs one after another do not, on a VM whose speed drifts by seconds (the bare VAE step between 3.8
// and 9 ms from one run to the next).
Interleaved interleave(Model which, Mode mode, int blocks, int batch, const fs::path& out) {
  constexpr int kBlockSteps = 20;
  TaskThread bare_thread, recorded_thread;
  std::unique_ptr<Loop> bare_loop, recorded_loop;
  const auto start = [&](TaskThread& thread, std::unique_ptr<Loop>& loop, Mode m, const char* dir) {
    thread.run([&] {
      torch::manual_seed(7);
      loop = std::make_unique<Loop>(which, m, batch, out / dir);
      loop->steps(kBlockSteps);  // warm-up, untimed
      loop->reset_phases();
    });
  };
  start(bare_thread, bare_loop, Mode::Bare, "interleaved-bare");
  start(recorded_thread, recorded_loop, mode, "interleaved-recorder");
  Loop &bare = *bare_loop, &recorded = *recorded_loop;
  const auto block = [&](TaskThread& thread, Loop& loop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    double seconds = 0;
    thread.run([&] { seconds = loop.steps(kBlockSteps); });
    return seconds;
  };
  Interleaved result;
  for (int k = 0; k < blocks; ++k) {
    double b, r;
    if (k % 2 == 0) {
      b = block(bare_thread, bare);
      r = block(recorded_thread, recorded);
    } else {
      r = block(recorded_thread, recorded);
      b = block(bare_thread, bare);
    }
    result.bare += b;
    result.recorded += r;
    result.ratios.push_back(r / b);
  }
  result.bare_phases = bare.phases();
  result.recorded_phases = recorded.phases();
  result.steps = blocks * kBlockSteps;
  bare_thread.run([&] { bare_loop.reset(); });  // the recorder closes on the thread it recorded
  recorded_thread.run([&] { recorded_loop.reset(); });
  return result;
}

std::vector<Mode> g_modes = {Mode::Bare,         Mode::Default,       Mode::EveryStep,    Mode::TorchSave,
                             Mode::RecorderFull, Mode::BurstBlocking, Mode::BurstYielding};

int g_blocks = 30;

void compare(const char* title, Model which, int steps, int rounds, int batch, const fs::path& out) {
  std::map<Mode, Result> best;                             // each measure's best round
  std::map<Mode, std::vector<double>> ratios, background;  // per round
  int64_t bare_worst_faults = 0;                           // of the bare loop's rounds
  run(which, g_modes.front(), std::max(steps / 5, 2), batch, out / "warmup");
  for (int round = 0; round < rounds; ++round) {
    std::map<Mode, Result> this_round;
    for (Mode m : g_modes) {
      const Result r = run(which, m, steps, batch, out / std::to_string(int(m)));
      this_round[m] = r;
      background[m].push_back(r.background_cpu);
      if (!best.count(m)) {
        best[m] = r;
        continue;
      }
      Result& b = best[m];
      if (r.wall < b.wall) {
        b.wall = r.wall;
        b.in_step = r.in_step;
        b.captured_seconds = r.captured_seconds;
        b.other_seconds = r.other_seconds;
        b.captured_steps = r.captured_steps;
        b.other_steps = r.other_steps;
        std::copy(std::begin(r.after_seconds), std::end(r.after_seconds), std::begin(b.after_seconds));
        std::copy(std::begin(r.after_opt_seconds), std::end(r.after_opt_seconds), std::begin(b.after_opt_seconds));
        std::copy(std::begin(r.after_steps), std::end(r.after_steps), std::begin(b.after_steps));
        std::copy(std::begin(r.phase_seconds), std::end(r.phase_seconds), std::begin(b.phase_seconds));
      }
      b.thread_cpu = std::min(b.thread_cpu, r.thread_cpu);
      b.process_cpu = std::min(b.process_cpu, r.process_cpu);
      b.faults = std::min(b.faults, r.faults);
    }
    if (this_round.count(Mode::Bare)) {
      bare_worst_faults = std::max(bare_worst_faults, this_round[Mode::Bare].faults);
      for (Mode m : g_modes) ratios[m].push_back(this_round[m].wall / this_round[Mode::Bare].wall);
    }
  }
  if (!best.count(Mode::Bare)) {
    for (const auto& [m, r] : best) std::printf("mode %d: %.3f s, %.3f s thread CPU\n", int(m), r.wall, r.thread_cpu);
    return;
  }
  const Result& bare = best[Mode::Bare];
  std::printf("\n== %s, batch %d, %d steps, best of %d rounds ==\n", title, batch, steps, rounds);
  std::printf("%-38s %8s %7s %8s %9s %10s %8s %14s %12s\n", "", "wall s", "ratio", "(median)", "thread", "process",
              "faults", "bytes/step", "ms/step in");
  std::printf("%-38s %8s %7s %8s %9s %10s %8s %14s %12s\n", "", "", "", "", "CPU", "CPU", "/step", "on disk", "step()");
  std::printf("%-38s %8.3f %6.3fx %8s %8.3fs %9.3fs %8.0f\n", "bare loop", bare.wall, 1.0, "", bare.thread_cpu,
              bare.process_cpu, double(bare.faults) / steps);
  auto line = [&](const char* name, Mode m, const char* goal) {
    if (!best.count(m)) return;
    const Result& r = best[m];
    std::printf("%-38s %8.3f %6.3fx (%5.3fx) %7.3fx %9.3fx %8.0f %14.0f %12.3f   goal %s\n", name, r.wall,
                r.wall / bare.wall, median(ratios[m]), r.thread_cpu / bare.thread_cpu, r.process_cpu / bare.process_cpu,
                double(r.faults) / steps, double(r.bytes) / steps, 1000 * r.in_step / steps, goal);
  };
  line("recorder, default settings", Mode::Default, "<= 1.05x");
  line("recorder, all statistics every step", Mode::EveryStep, "<= 1.15x");
  line("torch::save every 10 steps", Mode::TorchSave, "none");
  line("recorder, same full tensors / 10 steps", Mode::RecorderFull, "none");
  line("bare + 1.5 ms background work a step", Mode::BurstBlocking, "none");
  line("  the same, yielding every 20 us", Mode::BurstYielding, "none (the writer does this)");
  if (best.count(Mode::TorchSave) && best.count(Mode::RecorderFull)) {
    const double save_per =
        double(best[Mode::TorchSave].bytes) / double(std::max<int64_t>(best[Mode::TorchSave].saved_steps, 1));
    const double rec_per =
        double(best[Mode::RecorderFull].bytes) / double(std::max<int64_t>(best[Mode::RecorderFull].saved_steps, 1));
    std::printf("bytes per saved step: torch::save %.0f, recorder %.0f  ->  %.3fx (goal <= 0.55x, lossless)\n",
                save_per, rec_per, rec_per / save_per);
  }
  // Seen on this project's 2-core VM: in some processes glibc trims the heap after every step and the next step faults
  // the pages in again (~870 faults a step), which made the bare loop itself up to 4x slower; such ratios mean little.
  if (double(bare_worst_faults) / steps > 100)
    std::printf(
        "note: a bare-loop round faulted %.0f pages a step (glibc returned freed heap memory and took it back):"
        " its times vary up to 4x on a VM; GLIBC_TUNABLES=glibc.malloc.mmap_threshold=67108864:"
        "glibc.malloc.trim_threshold=1073741824 keeps the heap\n",
        double(bare_worst_faults) / steps);
  auto per_step = [](double seconds, int64_t n) { return n > 0 ? 1e3 * seconds / double(n) : 0.0; };
  if (best.count(Mode::Default) || best.count(Mode::EveryStep)) {
    std::string figures;
    char buf[64];
    for (const auto& [m, name] : {std::pair{Mode::Default, "default"}, std::pair{Mode::EveryStep, "every step"}}) {
      if (!best.count(m)) continue;
      std::snprintf(buf, sizeof buf, "%s%s %.3f", figures.empty() ? "" : ", ", name,
                    per_step(median(background[m]), steps));
      figures += buf;
    }
    std::printf("recorder threads' CPU (the writer), median of rounds, ms a step: %s\n", figures.c_str());
  }
  std::printf("ms a step by phase, best rounds (forward, backward, step() or the bare loop's nothing, optimizer):");
  for (const auto& [m, name] :
       {std::pair{Mode::Bare, "bare"}, std::pair{Mode::Default, "default"}, std::pair{Mode::EveryStep, "every step"}}) {
    if (!best.count(m)) continue;
    const double* p = best[m].phase_seconds;
    std::printf(" %s %.3f %.3f %.3f %.3f;", name, per_step(p[0], steps), per_step(p[1], steps), per_step(p[2], steps),
                per_step(p[3], steps));
  }
  std::printf("\n");
  if (best.count(Mode::Default))
    std::printf("recorder memory held (default settings): %zu bytes\n", best[Mode::Default].held);
  const double bare_step = per_step(bare.other_seconds, bare.other_steps);
  for (const auto& [m, name] : {std::pair{Mode::Default, "default settings"}, {Mode::EveryStep, "every step"}}) {
    if (!best.count(m)) continue;
    const Result& r = best[m];
    std::printf(
        "%s, best round: captured steps %.3f ms (%lld, %lld with the optimizer unobserved), other steps %.3f ms "
        "(%lld), "
        "bare loop %.3f ms a step\n",
        name, per_step(r.captured_seconds, r.captured_steps), static_cast<long long>(r.captured_steps),
        static_cast<long long>(r.lazily_armed), per_step(r.other_seconds, r.other_steps),
        static_cast<long long>(r.other_steps), bare_step);
    std::printf("  ms a step by steps since the last capture (optimizer step alone; bare loop %.3f, optimizer %.3f):",
                bare_step, per_step(bare.after_opt_seconds[Result::kAfter - 1], bare.after_steps[Result::kAfter - 1]));
    for (int k = 0; k < Result::kAfter; ++k)
      if (r.after_steps[k] > 0)
        std::printf(" %s%d: %.3f (%.3f)", k == Result::kAfter - 1 ? ">=" : "", k,
                    per_step(r.after_seconds[k], r.after_steps[k]), per_step(r.after_opt_seconds[k], r.after_steps[k]));
    std::printf("\n");
  }
  // The goals' figures. A fresh pair of loops each round: a pair keeps its memory layout for its whole life, and
  // two bare loops interleaved this way differed by up to 6% in one process.
  if (g_blocks > 0) {
    std::printf(
        "interleaved: the bare loop and the recorder's in one process, alternating in blocks of 20 steps, "
        "%d blocks in each of %d rounds with a fresh pair of loops:\n",
        g_blocks, rounds);
    // Two bare loops measured the same way first: how far apart two identical loops come out, the figures' noise.
    for (const auto& [m, name, goal] : {std::tuple{Mode::Bare, "bare loop against a second bare loop", "1.00x"},
                                        std::tuple{Mode::Default, "default settings", "1.05x"},
                                        std::tuple{Mode::EveryStep, "all statistics every step", "1.15x"}}) {
      if (std::find(g_modes.begin(), g_modes.end(), m) == g_modes.end()) continue;
      double bare_total = 0, recorded_total = 0;
      std::vector<double> blocks, per_round;
      std::array<double, Loop::kPhases> bare_phases{}, recorded_phases{};
      int timed_steps = 0;
      for (int round = 0; round < rounds; ++round) {
        const Interleaved r = interleave(which, m, g_blocks, batch, out);
        bare_total += r.bare;
        recorded_total += r.recorded;
        per_round.push_back(r.recorded / r.bare);
        blocks.insert(blocks.end(), r.ratios.begin(), r.ratios.end());
        for (int p = 0; p < Loop::kPhases; ++p) {
          bare_phases[size_t(p)] += r.bare_phases[size_t(p)];
          recorded_phases[size_t(p)] += r.recorded_phases[size_t(p)];
        }
        timed_steps += r.steps;
      }
      std::string rounds_text;
      for (double x : per_round) rounds_text += (rounds_text.empty() ? "" : " ") + std::to_string(x).substr(0, 5);
      std::printf("  %-36s %6.3fx   (rounds %s; median block %.3fx)   %s %s\n", name, recorded_total / bare_total,
                  rounds_text.c_str(), median(blocks), m == Mode::Bare ? "noise, ideally" : "goal <=", goal);
      // Where the difference lies: each phase's mean in the same interleaved blocks.
      std::string phase_text;
      char buf[96];
      const char* phase_names[Loop::kPhases] = {"zero_grad", "forward", "backward", "step()", "optimizer"};
      for (int p = 0; p < Loop::kPhases; ++p) {
        const double b = per_step(bare_phases[size_t(p)], timed_steps);
        const double r = per_step(recorded_phases[size_t(p)], timed_steps);
        std::snprintf(buf, sizeof buf, "%s%s %.3f/%.3f", p ? ", " : "", phase_names[p], r, b);
        phase_text += buf;
      }
      std::printf("    ms a step by phase, this loop/the bare one: %s\n", phase_text.c_str());
    }
  }
}

// "activation,weight_grad" (or "none") as a mask; exits naming the word it does not know.
trainscope::QuantityMask parse_quantities(const std::string& list) {
  trainscope::QuantityMask mask = 0;
  if (list == "none") return mask;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string word = list.substr(start, comma - start);
    const auto q = trainscope::format::parse_quantity(word);
    if (!q) {
      std::fprintf(stderr, "recorder_bench: --quantities: unknown quantity '%s'\n", word.c_str());
      std::exit(2);
    }
    mask |= trainscope::quantity_bit(*q);
    start = comma + 1;
  }
  return mask;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 200, rounds = 3, batch = 64, threads = 1;
  std::string models = "all";
  fs::path out = fs::temp_directory_path() / "trainscope-recorder-bench";
  if (argc == 2 && std::string(argv[1]) == "--help") {
    std::printf(
        "recorder_bench [--steps N] [--rounds R] [--batch B] [--out DIR] [--only default|every|full]\n"
        "               [--only-recorder MODE] [--model vae|mlp|all] [--interval N] [--ring-interval N] [--zstd L]\n"
        "               [--stats-zstd L] [--keyframe K] [--quantities activation,weight_grad,...|none]\n"
        "               [--yield-slice US] [--poll-period US] [--blocks N] [--threads N]\n");
    return 0;
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "recorder_bench: option '%s' needs a value (--help lists them)\n", argv[argc - 1]);
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--steps")
      steps = std::atoi(v.c_str());
    else if (a == "--rounds")
      rounds = std::atoi(v.c_str());
    else if (a == "--batch")
      batch = std::atoi(v.c_str());
    else if (a == "--threads")
      threads = std::max(1, std::atoi(v.c_str()));
    else if (a == "--out")
      out = v;
    else if (a == "--model")
      models = v;
    else if (a == "--interval")
      g_interval = std::atoi(v.c_str());
    else if (a == "--ring-interval")
      g_ring_interval = std::atoi(v.c_str());
    else if (a == "--zstd")
      g_zstd = std::atoi(v.c_str());  // negative levels are zstd's fast modes
    else if (a == "--stats-zstd")
      g_stats_zstd = std::atoi(v.c_str());
    else if (a == "--yield-slice")
      g_yield_slice = std::atoi(v.c_str());  // microseconds; 0: the writer never yields
    else if (a == "--poll-period")
      g_poll_period = std::atoi(v.c_str());  // microseconds; 0: always woken
    else if (a == "--keyframe")
      g_keyframe = std::atoi(v.c_str());
    else if (a == "--blocks")
      g_blocks = std::atoi(v.c_str());
    else if (a == "--quantities")
      g_quantities = parse_quantities(v);
    else if (a == "--only" && v == "bare")
      g_modes = {Mode::Bare};
    else if (a == "--only")
      g_modes = {Mode::Bare, v == "every" ? Mode::EveryStep : v == "full" ? Mode::RecorderFull : Mode::Default};
    else if (a == "--only-recorder")  // without the bare loop: to profile one configuration alone
      g_modes = {v == "every"  ? Mode::EveryStep
                 : v == "full" ? Mode::RecorderFull
                 : v == "bare" ? Mode::Bare
                               : Mode::Default};
    else {
      std::fprintf(stderr, "recorder_bench: unknown option '%s' (--help lists them)\n", a.c_str());
      return 2;
    }
  }
  torch::set_num_threads(threads);  // LibTorch's OpenBLAS keeps its own threads
  if (models == "all" || models == "vae")
    compare("VAE of examples/vae (784-256-128-16 / 16-128-256-784)", Model::Vae, steps, rounds, batch, out);
  if (models == "all" || models == "mlp") compare("MLP 784-512-256-10", Model::Mlp, steps, rounds, batch, out);
  fs::remove_all(out);
  return 0;
}
