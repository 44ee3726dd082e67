#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace trainscope::testing {

TempDir::TempDir(const std::string& tag) {
  static int counter = 0;
  path_ = std::filesystem::temp_directory_path() /
          ("trainscope-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

format::RunMetadata small_model_metadata(uint32_t neurons) {
  format::RunMetadata m;
  m.header.model_name = "TestMLP";
  m.header.config["lr"] = "0.001";
  m.layers = {
      {0, "", std::nullopt, "TestMLP", 0, {}, {}, false},
      {1, "encoder", 0u, "Sequential", 0, {}, {}, false},
      {2, "encoder.fc1", 1u, "Linear", neurons, {neurons}, {{"weight", {neurons, 8}}, {"bias", {neurons}}}, true},
      {3, "encoder.act1", 1u, "ReLU", neurons, {neurons}, {}, true},
      {4, "decoder.fc2", 0u, "Linear", neurons, {neurons}, {{"weight", {neurons, neurons}}}, true},
  };
  m.edges = {{2, 3, false}, {3, 4, false}};
  return m;
}

format::Snapshot synthetic_snapshot(int64_t step, uint32_t neurons, const format::RunMetadata& metadata,
                                    bool with_neurons) {
  format::Snapshot s;
  s.step = step;
  s.wall_time = 0.01 * double(step);
  s.scalars = {{"loss", 2.0 * std::exp(-0.001 * double(step)) + 0.01 * std::sin(double(step))}, {"lr", 1e-3}};
  for (const auto& layer : metadata.layers) {
    if (!layer.is_leaf) continue;
    for (format::Quantity q :
         {format::Quantity::Activation, format::Quantity::ActivationGrad, format::Quantity::Weight}) {
      format::LayerQuantityRecord r;
      r.layer_id = layer.id;
      r.quantity = q;
      r.summary.mean = 0.1 * layer.id + 0.001 * double(step);
      r.summary.std = 1.0 + 0.0001 * double(step);
      r.summary.min = -3, r.summary.max = 3, r.summary.norm = 10, r.summary.numel = neurons * 32.0;
      if (with_neurons) {
        r.neuron_stats = format::kAllStatistics;
        r.neuron_count = neurons;
        r.neuron_values.resize(size_t(format::kStatisticCount) * neurons);
        for (int st = 0; st < format::kStatisticCount; ++st)
          for (uint32_t n = 0; n < neurons; ++n)
            r.neuron_values[size_t(st) * neurons + n] =
                st >= 6 ? 0.0f
                        : float(std::sin(0.01 * double(step) + 0.3 * n + st) * (1.0 + 0.1 * layer.id) + int(q) * 0.5);
      }
      s.layers.push_back(std::move(r));
    }
  }
  return s;
}

std::vector<float> drifting_weights(size_t count, int64_t step, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> init(0.0f, 0.05f);
  std::vector<float> w(count);
  for (size_t i = 0; i < count; ++i) {
    const float start = init(rng);
    // Each weight drifts slowly along its own direction, like a weight under SGD with a small learning rate.
    w[i] = start * (1.0f + 1e-4f * float(step) * std::sin(float(i) * 0.37f));
  }
  return w;
}

CommandResult run_command(const std::string& command, bool with_stderr) {
  CommandResult result;
  FILE* pipe = ::popen((command + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  if (!pipe) return result;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) result.output.append(buf, n);
  const int raw = ::pclose(pipe);
  result.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return result;
}

std::vector<uint8_t> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

}  // namespace trainscope::testing
