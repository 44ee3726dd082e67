// Trainscope recorder: one call per training step records why a LibTorch training run goes wrong.
//
//   #include <trainscope/recorder.h>
//   trainscope::Recorder rec(model, "runs/vae-01");          // optional 3rd argument: trainscope::RecorderOptions
//   for (...) {
//     auto loss = ...;
//     loss.backward();
//     auto seen = rec.step(loss, {{"kl", kl}, {"acc", acc}});  // named scalars are optional
//     if (!seen.finite) break;                                 // optional: stop on NaN/Inf
//     optimizer.step();
//   }
//
// What is recorded: the module tree (named_modules()), the layer graph (found while the model runs), scalars and
// NaN/Inf health every step, per-neuron statistics of activations, activation gradients, weights, weight gradients,
// biases and bias gradients every `interval` steps, and a flight recorder that writes the steps around an anomaly
// densely. The model's code does not change.
//
// How layers are found (LibTorch C++ has no module hooks): while a step is being captured, an at::RecordFunction
// observer sees every ATen op. An op that takes a module's own parameter is that module's forward; its output is the
// module's activation, and the module that produced an op's inputs feeds it (an edge of the graph). Parameter-free
// activation modules (ReLU, Tanh, Sigmoid, Dropout, ...) are recognised when their op consumes the output of the
// module registered just before them in the same parent. Not captured: activations of containers (Sequential, user
// modules with children: use their last child), and of parameter-free modules that are not such a follower.
// The observer is disabled on steps that are not captured, so they cost only the loss and gradient-norm checks. On a
// captured step it waits for the loop's first op in grad mode once that op is known to be unconnected (zero_grad()'s),
// so the optimizer's step before it runs unobserved (RecorderStats::lazily_armed_steps).
//
// Cost (recorder_bench, VAE-sized MLP, batch 64, one training thread, 2-core machine): per-neuron statistics of CPU
// float32 tensors are computed in one pass over the data in plain C++ (no LibTorch ops); CUDA and other tensors use
// reductions on their own device. A step that is not captured costs the loss read and a sum of squares over the
// gradients on the training thread (~0.07 ms for 0.47 M parameters). A captured step of the VAE, every step
// recorded (recorder_bench's interleaved phases and timers inside step(), 2026-12-04): 0.23-0.29 ms inside step()
// (the parameters' statistics 0.22-0.25 ms, 0.94 M floats; the records take the kernel's float rows over without a
// copy; handing over and arming the next capture ~0.03), 0.13-0.2 ms more in forward (the activations' statistics
// ~80 us, the observer's ~70 top-level ops ~40 us) and 0.03-0.13 ms more in backward (the activation gradients'
// statistics ~70 us). The statistics run two to three times their
// in-cache time there (a Linear output read a second time right after the first took a third of the time): OpenBLAS's idle worker spins in sched_yield on the other core (such a spinner slowed the kernel by 25%
// in a scratch benchmark), and half of every matrix product's output was written by that core. The writer compresses
// on its own thread (per-neuron statistics at zstd level -1: 0.5-0.9 ms of CPU a step when every step is recorded),
// kept off the training thread's core; it polls for work while snapshots come less than 5 ms apart instead of being
// woken for each.
// The statistics are computed on the training thread, at step(): a second thread reading the parameters made the next
// zero_grad() slower by more than it saved. Two other placements measured within noise of this (2026-12-04): the
// weights' statistics on a background thread during forward and backward (step() 0.15-0.2 ms shorter, the matrix
// products and the optimizer's writes as much slower) and the gradients' in a post-hook of each gradient accumulator
// (the backward pass longer by what step() saved).
// LibTorch's OpenBLAS keeps its own worker threads (torch::set_num_threads() does not bound them) which spin in
// sched_yield between calls and then compete with the writer for the cores. On a machine with few cores,
// OPENBLAS_NUM_THREADS=1 (or openblas_set_num_threads(1)) when the training loop runs one thread anyway leaves the
// other core to the writer; the recorder never changes the training thread's or LibTorch's settings.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>
#include <trainscope/format/metadata.h>
#include <trainscope/format/run_writer.h>
#include <trainscope/format/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace trainscope {

// Bit i set = format::Quantity(i) recorded.
using QuantityMask = uint8_t;
inline constexpr QuantityMask quantity_bit(format::Quantity q) {
  return QuantityMask(1u << unsigned(q));
}
inline constexpr QuantityMask kAllQuantities = (1u << format::kQuantityCount) - 1;
inline constexpr QuantityMask kParameterQuantities =
    quantity_bit(format::Quantity::Weight) | quantity_bit(format::Quantity::Bias);

struct RecorderOptions {
  // Per-neuron statistics are written every `interval` steps (steps 0, interval, 2*interval, ...).
  int64_t interval = 10;
  QuantityMask quantities = kAllQuantities;
  format::StatisticMask statistics = format::kAllStatistics;  // per-neuron; layer summaries always hold all
  format::Precision precision = format::Precision::Float32;   // of per-neuron statistics and full tensors

  // Flight recorder: every `ring_interval` steps a full per-neuron snapshot is kept in memory (the last
  // `ring_steps`, at most `ring_bytes`). On an anomaly they are written, and the next `dense_steps` steps are
  // captured and written every step, flushed at once.
  // ring_interval 5 with interval 10 captures two steps in ten instead of one: measured, this adds about 0.05 ms per
  // step on average inside step() (0.385 against 0.335 ms/step in recorder_bench --ring-interval 10), which is why
  // the default keeps twice the density before a failure. Set ring_interval = interval to capture only what is written.
  bool flight_recorder = true;
  int64_t ring_interval = 5;
  size_t ring_steps = 16;
  size_t ring_bytes = size_t(64) << 20;
  int64_t dense_steps = 30;

  // Loss spike: loss above median + spike_threshold * 1.4826 * MAD of the last `spike_window` finite losses,
  // once `spike_warmup` losses were seen. 0 disables the spike rule.
  double spike_threshold = 12.0;
  size_t spike_window = 64;
  size_t spike_warmup = 20;

  // Full tensors every `full_tensor_interval` steps (0 = never): the quantities in `full_tensor_quantities`
  // (activations and their gradients of the training batch, parameters and their gradients), and, if `probe` is
  // set, the activations of every layer while `probe` runs (it should run the model on a fixed probe batch).
  int64_t full_tensor_interval = 0;
  QuantityMask full_tensor_quantities = kParameterQuantities;
  std::function<void()> probe;

  // Learning rate scalar "lr" is read from this optimizer's first parameter group when set.
  torch::optim::Optimizer* optimizer = nullptr;

  // Multi-process jobs: rank and world size; -1 takes them from the environment (RANK, WORLD_SIZE), else 0 and 1.
  // With world_size > 1 every rank records into `<dir>/rank-<rank>`.
  int rank = -1;
  int world_size = -1;

  std::string model_name;                     // defaults to the root module's kind
  std::map<std::string, std::string> config;  // stored in the run header
  format::WriterOptions writer;               // precision is taken from `precision` above
  bool report_to_stderr = true;               // one line per recording problem
};

enum class AnomalyKind : uint8_t { None, NonFiniteLoss, NonFiniteTensor, LossSpike };
std::string_view anomaly_name(AnomalyKind kind);

// Where NaN/Inf was seen first: a layer whose tensor is non-finite while the layers feeding it are finite.
struct NonFiniteOrigin {
  std::string layer;  // dotted module name
  format::Quantity quantity = format::Quantity::Activation;
};

// What step() saw. step() never throws because of recording trouble; `recording_ok` turns false instead.
struct StepReport {
  int64_t step = 0;
  double loss = 0;
  double grad_norm = 0;
  bool finite = true;     // loss, named scalars, gradients and every captured tensor finite
  bool captured = false;  // per-neuron statistics were captured for this step
  bool written = false;   // this step's per-neuron statistics went to disk (not only to the ring)
  AnomalyKind anomaly = AnomalyKind::None;
  bool anomaly_triggered = false;        // this step started a dense window (ring written, next steps dense)
  std::vector<NonFiniteOrigin> origins;  // in forward order; empty when finite
  bool recording_ok = true;
};

// A named scalar passed to step(): a 0-dim tensor (read on the host) or a number.
struct NamedScalar {
  NamedScalar(std::string n, const torch::Tensor& t) : name(std::move(n)), tensor(t) {}
  NamedScalar(std::string n, double v) : name(std::move(n)), value(v) {}
  std::string name;
  torch::Tensor tensor;
  double value = 0;
};

struct RecorderStats {
  int64_t steps = 0;
  int64_t captured_steps = 0;
  int64_t written_snapshots = 0;  // with per-neuron statistics
  size_t ring_snapshots = 0;
  size_t ring_bytes = 0;       // memory held by the flight recorder
  size_t held_bytes = 0;       // everything the recorder holds on the host, ring included (estimate)
  double capture_seconds = 0;  // time spent in step() and in the observer, on the training thread
  // Captured steps whose op observer turned itself fully on only at the loop's first op in grad mode, so that the
  // optimizer's step ran unobserved (after two captures showed that op to be unconnected, e.g. zero_grad()'s).
  int64_t lazily_armed_steps = 0;
  // Ops the observer looked at in all captured steps: the top-level ones (aten::linear, not the t and addmm it
  // runs) from the loop's first op in grad mode, and the first node of each backward pass.
  int64_t observed_ops = 0;
  format::WriterStatus writer;
};

class Recorder {
 public:
  // Starts recording into `run_dir`. Never throws because the directory cannot be written: the problem is reported
  // once and training goes on with recording off (recording_ok() is false).
  Recorder(std::shared_ptr<torch::nn::Module> model, const std::filesystem::path& run_dir,
           RecorderOptions options = {});
  template <typename ModuleType>
  Recorder(const torch::nn::ModuleHolder<ModuleType>& model, const std::filesystem::path& run_dir,
           RecorderOptions options = {})
      : Recorder(std::shared_ptr<torch::nn::Module>(model.ptr()), run_dir, std::move(options)) {}
  ~Recorder();  // close()s
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Call once per training step, after backward() and before the optimizer's step.
  StepReport step(const torch::Tensor& loss, const std::vector<NamedScalar>& scalars = {});

  void flush();  // everything handed over so far is in the files when it returns
  void close();  // flushes and finishes the files; later step() calls only check health

  bool recording_ok() const;
  int64_t next_step() const;
  const std::filesystem::path& directory() const;  // includes rank-<r> for multi-rank jobs
  format::RunMetadata metadata() const;            // hierarchy and graph as discovered so far
  RecorderStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainscope
