// Recorder overhead on the VAE-sized MLP and on a 784-512-256-10 classifier, as ratios against the bare training loop
// measured in the same run (configurations interleaved, best of several rounds, so machine noise hits all alike).
//   default settings (interval 10, flight recorder on)            goal <= 1.05x
//   per-neuron statistics of all quantities every step             goal <= 1.15x
//   torch::save of parameters, gradients and activations / 10 steps (the naive alternative), and bytes per saved
//   step against the recorder storing the same full tensors       goal <= 0.55x
// Usage: recorder_bench [--steps N] [--rounds R] [--batch B] [--out DIR] [--only MODE]
//   --only default|every|full: run the bare loop and that one configuration (for profiling)
//   --ring-interval N, --zstd L, --keyframe K: override RecorderOptions::ring_interval, WriterOptions::zstd_level and
//   WriterOptions::keyframe_interval (to measure the choices documented in recorder.h)
#include <torch/torch.h>
#include <trainscope/recorder.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>

namespace fs = std::filesystem;

namespace {

struct Mlp : torch::nn::Module {
  explicit Mlp(const std::vector<int64_t>& widths) {
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
      layers.push_back(register_module("fc" + std::to_string(i), torch::nn::Linear(widths[i], widths[i + 1])));
      if (i + 2 < widths.size()) acts.push_back(register_module("act" + std::to_string(i), torch::nn::ReLU()));
    }
  }
  torch::Tensor forward(torch::Tensor x, std::vector<torch::Tensor>* hidden = nullptr) {
    for (size_t i = 0; i < layers.size(); ++i) {
      x = layers[i](x);
      if (i < acts.size()) {
        x = acts[i](x);
        if (hidden) hidden->push_back(x);
      }
    }
    return x;
  }
  std::vector<torch::nn::Linear> layers;
  std::vector<torch::nn::ReLU> acts;
};

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) bytes += e.file_size();
  return bytes;
}

struct Result {
  double seconds = 1e300;
  uint64_t bytes = 0;
  size_t held = 0;
  int64_t saved_steps = 0;
  double in_step = 0;  // seconds inside rec.step() on the training thread
};

enum class Mode { Bare, Default, EveryStep, TorchSave, RecorderFull };

int g_ring_interval = 0, g_zstd = 0, g_keyframe = 0;  // 0: the defaults

// One training run of `steps` steps on fixed synthetic data that looks like images; returns wall time.
Result run(Mode mode, const std::vector<int64_t>& widths, int steps, int batch, const fs::path& out) {
  torch::manual_seed(7);
  auto model = std::make_shared<Mlp>(widths);
  torch::optim::Adam opt(model->parameters(), 1e-3);
  const torch::Tensor x = torch::rand({batch, widths.front()});
  const torch::Tensor y = torch::randint(widths.back(), {batch}, torch::kLong);
  fs::remove_all(out);
  std::unique_ptr<trainscope::Recorder> rec;
  trainscope::RecorderOptions options;
  options.report_to_stderr = true;
  if (g_ring_interval > 0) options.ring_interval = g_ring_interval;
  if (g_zstd > 0) options.writer.zstd_level = g_zstd;
  if (g_keyframe > 0) options.writer.keyframe_interval = g_keyframe;
  if (mode == Mode::EveryStep) options.interval = 1;
  if (mode == Mode::RecorderFull) {
    options.full_tensor_interval = 10;
    options.full_tensor_quantities = trainscope::quantity_bit(trainscope::format::Quantity::Weight) |
                                     trainscope::quantity_bit(trainscope::format::Quantity::Bias) |
                                     trainscope::quantity_bit(trainscope::format::Quantity::WeightGrad) |
                                     trainscope::quantity_bit(trainscope::format::Quantity::BiasGrad) |
                                     trainscope::quantity_bit(trainscope::format::Quantity::Activation);
    options.quantities = 0;  // only the full tensors, to compare bytes with torch::save
    options.flight_recorder = false;
    options.interval = 1 << 30;
  }
  if (mode == Mode::Default || mode == Mode::EveryStep || mode == Mode::RecorderFull)
    rec = std::make_unique<trainscope::Recorder>(model, out, options);
  if (mode == Mode::TorchSave) fs::create_directories(out);
  Result r;
  const auto start = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    std::vector<torch::Tensor> hidden;
    const bool save = mode == Mode::TorchSave && s % 10 == 0;
    auto loss = torch::cross_entropy_loss(model->forward(x, save ? &hidden : nullptr), y);
    loss.backward();
    if (rec) rec->step(loss);
    if (save) {
      // What a LibTorch user can do today: save parameters, their gradients and the hidden activations.
      std::vector<torch::Tensor> all;
      for (const auto& p : model->parameters()) {
        all.push_back(p.detach());
        all.push_back(p.grad());
      }
      for (auto& h : hidden) all.push_back(h.detach());
      torch::save(all, (out / ("step-" + std::to_string(s) + ".pt")).string());
      ++r.saved_steps;
    }
    opt.step();
  }
  if (rec) {
    r.held = rec->stats().held_bytes;
    r.in_step = rec->stats().capture_seconds;
    rec->close();
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.bytes = directory_bytes(out);
  if (mode == Mode::RecorderFull) r.saved_steps = (steps + 9) / 10;
  return r;
}

std::vector<Mode> g_modes = {Mode::Bare, Mode::Default, Mode::EveryStep, Mode::TorchSave, Mode::RecorderFull};

void compare(const char* title, const std::vector<int64_t>& widths, int steps, int rounds, int batch,
             const fs::path& out) {
  std::map<Mode, Result> best;
  const std::vector<Mode>& modes = g_modes;
  run(Mode::Bare, widths, std::max(steps / 5, 2), batch, out / "warmup");
  for (int round = 0; round < rounds; ++round) {
    for (Mode m : modes) {
      Result r = run(m, widths, steps, batch, out / std::to_string(int(m)));
      Result& b = best[m];
      if (r.seconds < b.seconds) b = r;
    }
  }
  const double bare = best[Mode::Bare].seconds;
  std::printf("\n== %s, batch %d, %d steps, best of %d rounds ==\n", title, batch, steps, rounds);
  std::printf("bare loop                              %8.3f s  %6.2f ms/step\n", bare, 1000 * bare / steps);
  auto line = [&](const char* name, Mode m, const char* goal) {
    if (!best.count(m)) return;
    const Result& r = best[m];
    std::printf("%-38s %8.3f s  %5.3fx  (goal %s)  %10.0f bytes/step on disk  %6.3f ms/step in step()\n", name,
                r.seconds, r.seconds / bare, goal, double(r.bytes) / steps, 1000 * r.in_step / steps);
  };
  line("recorder, default settings", Mode::Default, "<= 1.05x");
  line("recorder, all statistics every step", Mode::EveryStep, "<= 1.15x");
  line("torch::save every 10 steps", Mode::TorchSave, "none");
  line("recorder, same full tensors / 10 steps", Mode::RecorderFull, "none");
  if (!best.count(Mode::TorchSave) || !best.count(Mode::RecorderFull)) return;
  const double save_per =
      double(best[Mode::TorchSave].bytes) / double(std::max<int64_t>(best[Mode::TorchSave].saved_steps, 1));
  const double rec_per =
      double(best[Mode::RecorderFull].bytes) / double(std::max<int64_t>(best[Mode::RecorderFull].saved_steps, 1));
  std::printf("bytes per saved step: torch::save %.0f, recorder %.0f  ->  %.3fx (goal <= 0.55x, lossless)\n", save_per,
              rec_per, rec_per / save_per);
  std::printf(
      "recorder memory held (default settings): %zu bytes; per recorded step on disk (every step): %.0f bytes\n",
      best[Mode::Default].held, double(best[Mode::EveryStep].bytes) / steps);
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 200, rounds = 3, batch = 64;
  fs::path out = fs::temp_directory_path() / "trainscope-recorder-bench";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--steps")
      steps = std::atoi(argv[i + 1]);
    else if (a == "--rounds")
      rounds = std::atoi(argv[i + 1]);
    else if (a == "--batch")
      batch = std::atoi(argv[i + 1]);
    else if (a == "--out")
      out = argv[i + 1];
    else if (a == "--ring-interval")
      g_ring_interval = std::atoi(argv[i + 1]);
    else if (a == "--zstd")
      g_zstd = std::atoi(argv[i + 1]);
    else if (a == "--keyframe")
      g_keyframe = std::atoi(argv[i + 1]);
    else if (a == "--only")
      g_modes = {Mode::Bare, std::string(argv[i + 1]) == "every"  ? Mode::EveryStep
                             : std::string(argv[i + 1]) == "full" ? Mode::RecorderFull
                                                                  : Mode::Default};
  }
  if (argc == 2 && std::string(argv[1]) == "--help") {
    std::printf(
        "recorder_bench [--steps N] [--rounds R] [--batch B] [--out DIR] [--only default|every|full]\n"
        "               [--ring-interval N] [--zstd L] [--keyframe K]\n");
    return 0;
  }
  torch::set_num_threads(1);  // one training thread: stable timings; the writer has the other core
  compare("VAE-sized MLP 784-256-128-16-128-256-784", {784, 256, 128, 16, 128, 256, 784}, steps, rounds, batch, out);
  compare("MLP 784-512-256-10", {784, 512, 256, 10}, steps, rounds, batch, out);
  fs::remove_all(out);
  return 0;
}
