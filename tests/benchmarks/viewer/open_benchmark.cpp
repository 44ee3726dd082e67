// Viewer figures of opening a recording, each against a baseline measured in the same run:
//  1. open to first paint (the window's loss and snapshot views drawn with their data) on a large recording vs on a
//     small one of the same model (goal: <= 1.5x; opening is index-based, never a full scan);
//  2. peak memory after opening the large recording, waiting for the anomaly analysis and moving the focus and the
//     selected layer across the whole run, vs the small one's peak plus the reader's cache budget (goal: within).
// Usage: open_benchmark [--full] [--dir DIR]    (--full: 20 MB vs 2 GB; default: 4 MB vs 40 MB, a smoke run)
#include "main_window.h"
#include "run_view.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <trainscope/format/run_writer.h>
#include <unistd.h>

#include <QApplication>
#include <QElapsedTimer>
#include <QImage>
#include <QPainter>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace {

namespace fs = std::filesystem;
namespace f = trainscope::format;
using trainscope::viewer::MainWindow;

// 200 Linear layers of 256 neurons in 20 groups; every statistic of four quantities every 10 steps; scalars every
// step. The two recordings differ only in length.
void write_recording(const fs::path& dir, uint64_t target_bytes) {
  if (fs::exists(dir / "done")) return;  // reuse a recording from an earlier run of the benchmark
  fs::remove_all(dir);
  const uint32_t groups = 20, layers = 200, neurons = 64;
  f::RunMetadata m;
  m.header.model_name = "OpenBenchmark";
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  for (uint32_t g = 0; g < groups; ++g)
    m.layers.push_back({uint32_t(m.layers.size()), "block" + std::to_string(g), 0u, "Sequential", 0, {}, {}, false});
  for (uint32_t i = 0; i < layers; ++i) {
    const uint32_t parent = 1 + i / (layers / groups);
    m.layers.push_back({uint32_t(m.layers.size()),
                        m.layers[parent].name + ".fc" + std::to_string(i),
                        parent,
                        "Linear",
                        neurons,
                        {neurons},
                        {},
                        true});
  }
  for (uint32_t i = groups + 1; i + 1 < m.layers.size(); ++i) m.edges.push_back({i, i + 1, false});
  f::WriterOptions options;
  options.queue_bytes = size_t(512) << 20;
  f::RunWriter writer(dir, m, options);
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.f, 1.f);
  const f::Quantity quantities[] = {f::Quantity::Activation, f::Quantity::ActivationGrad, f::Quantity::Weight,
                                    f::Quantity::WeightGrad};
  std::vector<float> level(size_t(layers) * 4 * neurons * f::kStatisticCount);
  for (float& v : level) v = noise(rng);
  int64_t step = 0;
  uint64_t appended_bytes = 0;  // the per-neuron data is a random walk: it hardly compresses
  while (appended_bytes < target_bytes) {
    for (int k = 0; k < 10; ++k, ++step) {
      f::Snapshot s;
      s.step = step;
      s.scalars = {{"loss", 1.0 + std::exp(-double(step) / 3000.0) + 0.02 * noise(rng)}, {"lr", 1e-3}};
      if (k == 0) {
        for (uint32_t i = 0; i < layers; ++i)
          for (size_t q = 0; q < 4; ++q) {
            f::LayerQuantityRecord r;
            r.layer_id = groups + 1 + i;
            r.quantity = quantities[q];
            r.summary.mean = 0.1, r.summary.std = 1, r.summary.min = -3, r.summary.max = 3;
            r.summary.norm = 40, r.summary.numel = neurons * 32.0;
            r.neuron_stats = f::kAllStatistics;
            r.neuron_count = neurons;
            r.neuron_values.resize(size_t(neurons) * f::kStatisticCount);
            float* l = &level[(size_t(i) * 4 + q) * r.neuron_values.size()];
            for (size_t n = 0; n < r.neuron_values.size(); ++n) r.neuron_values[n] = l[n] += 0.05f * noise(rng);
            appended_bytes += r.neuron_values.size() * sizeof(float);
            s.layers.push_back(std::move(r));
          }
      }
      writer.append(std::move(s));
    }
  }
  writer.close();
  std::ofstream(dir / "done") << step << "\n";
  std::printf("  wrote %s: %.0f MB, %lld steps\n", dir.c_str(), double(writer.status().stored_bytes) / 1e6,
              static_cast<long long>(step));
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

struct OpenFigures {
  double first_paint_ms = 0;
  double peak_rss_mb = 0;
};

// Wall time from open_run() until the loss and snapshot views have their data and are drawn; then, for memory, the
// whole analysis and a sweep of the focus and layer selection over the run.
OpenFigures open_and_sweep(const fs::path& run) {
  OpenFigures figures;
  MainWindow window;  // its document has the default cache budget
  window.resize(1600, 1000);
  auto* loss = window.view("loss");
  auto* snapshot = window.view("snapshot");
  QImage image(1200, 700, QImage::Format_ARGB32_Premultiplied);
  QElapsedTimer timer;
  timer.start();
  window.open_run(QString::fromStdString(run.string()));
  while (!window.document().is_open() || loss->waiting() || snapshot->waiting())
    QCoreApplication::processEvents(QEventLoop::AllEvents, 1);
  {
    QPainter painter(&image);
    loss->render_view(painter, image.size());
    snapshot->render_view(painter, image.size());
  }
  figures.first_paint_ms = double(timer.nsecsElapsed()) / 1e6;

  window.document().wait_idle();  // the anomaly analysis
  const auto& steps = window.document().snapshot_steps();
  const auto& graph = window.document().graph();
  for (int i = 0; i < 12 && !steps.empty(); ++i) {
    window.state().set_focus_step(steps[steps.size() * size_t(i) / 12]);
    window.state().set_layer(int(graph.forward_order()[graph.size() * size_t(i) / 12 % graph.size()]));
    window.document().wait_idle();
    QPainter painter(&image);
    for (auto* view : window.views()) view->render_view(painter, image.size());
  }
  figures.peak_rss_mb = peak_rss_mb();
  return figures;
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  bool full = false;
  fs::path dir = fs::temp_directory_path() / "trainscope-open-benchmark";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--full") == 0)
      full = true;
    else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: open_benchmark [--full] [--dir DIR]\n");
      return 2;
    }
  }
  const uint64_t small_bytes = full ? uint64_t(20) << 20 : uint64_t(4) << 20;
  const uint64_t large_bytes = full ? uint64_t(2048) << 20 : uint64_t(40) << 20;
  const size_t cache_bytes = trainscope::viewer::DocumentOptions{}.cache_bytes;
  const fs::path small_run = dir / (full ? "small-full" : "small"), large_run = dir / (full ? "large-full" : "large");
  std::printf("open_benchmark (%s)\n", full ? "full: 20 MB vs 2 GB" : "smoke: 4 MB vs 40 MB; --full for the figures");
  // Written by a child process, so that the writer's memory does not count in this process's peak RSS.
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    write_recording(small_run, small_bytes);
    write_recording(large_run, large_bytes);
    std::fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "open_benchmark: writing the recordings under %s failed\n", dir.c_str());
    return 1;
  }
  QApplication app(argc, argv);
  QApplication::setOrganizationName("TrainscopeBenchmarks");

  // Warm both once (file system cache, Qt's first-use costs), then take the best of three of each: the figure is
  // about work done, not about the disk.
  open_and_sweep(small_run);
  double small_ms = 1e18, large_ms = 1e18;
  OpenFigures small{}, large{};
  for (int round = 0; round < 3; ++round) {
    small = open_and_sweep(small_run);
    small_ms = std::min(small_ms, small.first_paint_ms);
  }
  const double small_peak = peak_rss_mb();
  for (int round = 0; round < 3; ++round) {
    large = open_and_sweep(large_run);
    large_ms = std::min(large_ms, large.first_paint_ms);
  }
  const double ratio = large_ms / small_ms;
  std::printf("open to first paint: small %.1f ms, large %.1f ms, ratio %.2fx (goal <= 1.5x) %s\n", small_ms, large_ms,
              ratio, ratio <= 1.5 ? "PASS" : "MISS");
  const double growth = large.peak_rss_mb - small_peak;
  const double budget_mb = double(cache_bytes) / (1 << 20);
  std::printf(
      "peak RSS: %.0f MB after the small run, %.0f MB after the large one: +%.0f MB = %.2fx the %.0f MB cache "
      "budget (goal <= 1x) %s\n",
      small_peak, large.peak_rss_mb, growth, growth / budget_mb, budget_mb, growth <= budget_mb ? "PASS" : "MISS");
  return 0;
}
