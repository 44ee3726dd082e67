// Figures of the recording format, each a ratio against a baseline measured in the same run on the same bytes:
//
//   1. compression ratio on drifting weight matrices (full tensors through RunWriter), goal >= 1.8x
//   2. compression ratio on per-neuron statistics (snapshots through RunWriter), goal >= 1.3x
//      (next to both: plain zstd level 1 on the same raw bytes, compressed in calls of the same size)
//   3. write throughput vs plain single-thread zstd level 1 on the same raw bytes, goal >= 70%
//   4. read throughput vs plain zstd decompression of those zstd frames, goal >= 70%
//   5. bytes decompressed to read one layer out of 100 vs that layer's share of the run, goal <= 2x
//   6. trim of a whole run vs copying the same files with read(2)/write(2), goal >= 50% of the speed
//
// Usage: format_benchmark [--smoke | --full] [--dir DIR]. The default is --smoke (small sizes, for ctest; the
// exit code then only reflects correctness). With --full the exit code is 1 if any figure misses its goal.
// Timings are the best of several repetitions, for ours and the baseline alike.
#include <fcntl.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>
#include <trainscope/format/trim.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fmt = trainscope::format;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  bool full = false;
  fs::path dir;
  // Drifting weights: `matrices` weight matrices of rows x columns, recorded `snapshots` times.
  uint32_t matrices = 2, rows = 128, columns = 256, snapshots = 12;
  // Per-neuron statistics: 100 layers of `neurons`, four quantities, eight statistics, `steps` snapshots.
  uint32_t layers = 100, neurons = 16, steps = 48;
  int repetitions = 1;
};

// A small, fast, deterministic generator (xorshift64*) with a Gaussian from the sum of uniforms.
struct Random {
  uint64_t state;
  explicit Random(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Dull;
  }
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }
  float gaussian() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f; }
};

// Weight matrices under SGD: W <- W - lr * G with a gradient that is a rank-one outer product (as a Linear layer's
// batch-averaged gradient is, to first order) plus per-element noise; lr is set so that the update is 1e-3 of the
// weights' size per snapshot, the usual healthy update/weight ratio of a training run.
std::vector<fmt::FullTensor> drifting_weight_snapshots(const Config& c) {
  std::vector<fmt::FullTensor> out;
  Random rng(42);
  const size_t n = size_t(c.rows) * c.columns;
  std::vector<std::vector<float>> weights(c.matrices, std::vector<float>(n));
  const float init_std = 1.0f / std::sqrt(float(c.columns));
  for (auto& w : weights)
    for (float& v : w) v = init_std * rng.gaussian();
  std::vector<float> a(c.rows), b(c.columns);
  for (uint32_t s = 0; s < c.snapshots; ++s) {
    for (uint32_t m = 0; m < c.matrices; ++m) {
      auto& w = weights[m];
      if (s > 0) {
        for (float& v : a) v = rng.gaussian();
        for (float& v : b) v = rng.gaussian();
        const float lr = 1e-3f * init_std / std::sqrt(2.0f);  // rms of (a_i b_j + noise) is sqrt(2)
        for (uint32_t i = 0; i < c.rows; ++i)
          for (uint32_t j = 0; j < c.columns; ++j) w[size_t(i) * c.columns + j] -= lr * (a[i] * b[j] + rng.gaussian());
      }
      fmt::FullTensor t;
      t.layer_id = m + 1;
      t.quantity = fmt::Quantity::Weight;
      t.step = int64_t(s) * 10;
      t.shape = {int64_t(c.rows), int64_t(c.columns)};
      t.values = w;
      out.push_back(std::move(t));
    }
  }
  return out;
}

// Per-neuron statistics as a recorder computes them each step: every neuron has its own level, which drifts slowly
// over training, plus minibatch noise (1% of the level for activations and weight gradients' spread; weights and
// their statistics move only by their small updates). Zero fraction is a count over a 256-sample batch; no NaN/Inf.
std::vector<fmt::Snapshot> neuron_statistics_snapshots(const Config& c) {
  Random rng(7);
  const fmt::Quantity quantities[] = {fmt::Quantity::Activation, fmt::Quantity::ActivationGrad, fmt::Quantity::Weight,
                                      fmt::Quantity::WeightGrad};
  const float noise[] = {1e-2f, 1e-2f, 1e-4f, 1e-2f};
  std::vector<std::vector<float>> level(size_t(c.layers) * 4, std::vector<float>(c.neurons));
  for (auto& l : level)
    for (float& v : l) v = 0.5f + rng.uniform();
  std::vector<fmt::Snapshot> out;
  for (uint32_t s = 0; s < c.steps; ++s) {
    fmt::Snapshot snap;
    snap.step = s;
    snap.wall_time = 0.1 * s;
    for (uint32_t layer = 0; layer < c.layers; ++layer) {
      for (int q = 0; q < 4; ++q) {
        fmt::LayerQuantityRecord r;
        r.layer_id = layer + 1;
        r.quantity = quantities[q];
        r.neuron_stats = fmt::kAllStatistics;
        r.neuron_count = c.neurons;
        r.neuron_values.resize(size_t(fmt::kStatisticCount) * c.neurons);
        const float scale = q == 1 || q == 3 ? 1e-3f : 1.0f;
        auto& lv = level[size_t(layer) * 4 + size_t(q)];
        double sum = 0;
        for (uint32_t n = 0; n < c.neurons; ++n) {
          lv[n] *= 1.0f + 1e-3f * rng.gaussian();  // slow drift
          const float mean = scale * lv[n] * (1.0f + noise[q] * rng.gaussian());
          const float std = scale * 0.5f * lv[n] * (1.0f + noise[q] * rng.gaussian());
          float* v = r.neuron_values.data();
          v[0 * c.neurons + n] = mean;
          v[1 * c.neurons + n] = std;
          v[2 * c.neurons + n] = mean - 2.5f * std * (1.0f + noise[q] * rng.gaussian());
          v[3 * c.neurons + n] = mean + 2.5f * std * (1.0f + noise[q] * rng.gaussian());
          v[4 * c.neurons + n] = std::sqrt(256.0f * (mean * mean + std * std));
          v[5 * c.neurons + n] = q == 0 ? float(int(64 + 16 * rng.uniform())) / 256.0f : 0.0f;
          v[6 * c.neurons + n] = 0.0f;
          v[7 * c.neurons + n] = 0.0f;
          sum += mean;
        }
        r.summary.mean = sum / c.neurons;
        r.summary.std = 0.5 * r.summary.mean;
        r.summary.min = -1, r.summary.max = 1, r.summary.norm = 10, r.summary.numel = 256.0 * c.neurons;
        snap.layers.push_back(std::move(r));
      }
    }
    out.push_back(std::move(snap));
  }
  return out;
}

fmt::RunMetadata model_metadata(uint32_t layers, uint32_t neurons) {
  fmt::RunMetadata m;
  m.header.model_name = "BenchmarkMLP";
  m.layers.push_back({0, "", std::nullopt, "Sequential", 0, {}, {}, false});
  for (uint32_t i = 1; i <= layers; ++i)
    m.layers.push_back({i, "fc" + std::to_string(i), 0u, "Linear", neurons, {neurons}, {}, true});
  return m;
}

// The raw bytes a plain recorder would dump: each tensor's floats; each record's summary (9 doubles) and its
// per-neuron statistics (floats).
std::vector<std::string> raw_blocks(const std::vector<fmt::FullTensor>& tensors) {
  std::vector<std::string> out;
  for (const auto& t : tensors)
    out.emplace_back(reinterpret_cast<const char*>(t.values.data()), t.values.size() * sizeof(float));
  return out;
}

std::vector<std::string> raw_blocks(const std::vector<fmt::Snapshot>& snapshots, size_t block_bytes) {
  std::vector<std::string> out(1);
  for (const auto& s : snapshots)
    for (const auto& r : s.layers) {
      const double summary[9] = {r.summary.mean,      r.summary.std,       r.summary.min,
                                 r.summary.max,       r.summary.norm,      r.summary.zero_fraction,
                                 r.summary.nan_count, r.summary.inf_count, r.summary.numel};
      out.back().append(reinterpret_cast<const char*>(summary), sizeof summary);
      out.back().append(reinterpret_cast<const char*>(r.neuron_values.data()), r.neuron_values.size() * 4);
      if (out.back().size() >= block_bytes) out.emplace_back();
    }
  if (out.back().empty()) out.pop_back();
  return out;
}

size_t total_size(const std::vector<std::string>& blocks) {
  size_t n = 0;
  for (const auto& b : blocks) n += b.size();
  return n;
}

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.file_size();
  return n;
}

double best_seconds(int repetitions, const std::function<void()>& setup, const std::function<void()>& work) {
  double best = 1e300;
  for (int i = 0; i < repetitions; ++i) {
    if (setup) setup();
    const auto t0 = Clock::now();
    work();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Times ours and the baseline alternately, `repetitions` times each, and keeps the best of each: a machine shared
// with other work then slows both alike instead of whichever ran during a busy moment.
struct Race {
  double ours = 1e300, baseline = 1e300;
};
Race race(int repetitions, const std::function<void()>& ours_setup, const std::function<void()>& ours,
          const std::function<void()>& baseline_setup, const std::function<void()>& baseline) {
  Race r;
  for (int i = 0; i < repetitions; ++i) {
    r.baseline = std::min(r.baseline, best_seconds(1, baseline_setup, baseline));
    r.ours = std::min(r.ours, best_seconds(1, ours_setup, ours));
  }
  return r;
}

// Plain zstd on the same blocks: one ZSTD_compressCCtx call per block, one thread, the same level as the writer;
// decompression into one reused buffer.
struct ZstdBaseline {
  const std::vector<std::string>& blocks;
  std::vector<std::string> frames;
  size_t compressed_bytes = 0;
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::string out;

  explicit ZstdBaseline(const std::vector<std::string>& b) : blocks(b), frames(b.size()) {
    compress();
    for (const auto& f : frames) compressed_bytes += f.size();
    size_t largest = 0;
    for (const auto& block : blocks) largest = std::max(largest, block.size());
    out.resize(largest);
  }
  ~ZstdBaseline() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }
  void compress() {
    for (size_t i = 0; i < blocks.size(); ++i) {
      std::string& f = frames[i];
      f.resize(ZSTD_compressBound(blocks[i].size()));
      f.resize(ZSTD_compressCCtx(cctx, f.data(), f.size(), blocks[i].data(), blocks[i].size(), 1));
    }
  }
  void decompress() {
    for (size_t i = 0; i < blocks.size(); ++i)
      if (ZSTD_decompressDCtx(dctx, out.data(), out.size(), frames[i].data(), frames[i].size()) != blocks[i].size())
        std::fprintf(stderr, "zstd baseline does not round-trip\n");
  }
};

int failures = 0, errors = 0;

void figure(const char* name, double value, double goal, bool at_least, const char* unit, const std::string& detail) {
  const bool pass = at_least ? value >= goal : value <= goal;
  if (!pass) ++failures;
  std::printf("%s  %-52s %7.2f%s  (goal %s %.2f%s)  %s\n", pass ? "PASS" : "FAIL", name, value, unit,
              at_least ? ">=" : "<=", goal, unit, detail.c_str());
}

void check(bool ok, const std::string& what) {
  if (ok) return;
  ++errors;
  std::printf("ERROR %s\n", what.c_str());
}

std::string mb_per_s(double bytes, double seconds) {
  char text[64];
  std::snprintf(text, sizeof text, "%.0f MB/s", bytes / seconds / 1e6);
  return text;
}

// Copies every file of `from` into `to` with read(2)/write(2) through a 1 MiB buffer: what `cp` does.
void copy_directory(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  std::vector<char> buffer(1 << 20);
  for (const auto& e : fs::directory_iterator(from)) {
    const int in = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    const int out = ::open((to / e.path().filename()).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    for (ssize_t n; (n = ::read(in, buffer.data(), buffer.size())) > 0;)
      if (::write(out, buffer.data(), size_t(n)) != n) check(false, "copy failed");
    ::close(in);
    ::close(out);
  }
}

void benchmark_weights(const Config& c) {
  std::printf(
      "\n-- drifting weight matrices: %u x (%u x %u) float32, %u snapshots, update/weight 1e-3 per "
      "snapshot\n",
      c.matrices, c.rows, c.columns, c.snapshots);
  const std::vector<fmt::FullTensor> tensors = drifting_weight_snapshots(c);
  const std::vector<std::string> blocks = raw_blocks(tensors);
  const double raw = double(total_size(blocks));
  ZstdBaseline z(blocks);
  const fs::path run = c.dir / "weights";
  const fmt::RunMetadata metadata = model_metadata(c.matrices, c.rows);

  std::vector<fmt::FullTensor> copies;
  const Race write = race(
      c.repetitions,
      [&] {
        fs::remove_all(run);
        copies = tensors;
      },
      [&] {
        fmt::RunWriter writer(run, metadata);
        for (auto& t : copies) check(writer.append(std::move(t)), "tensor dropped");
        writer.close();
        check(writer.status().error.empty(), writer.status().error);
      },
      nullptr, [&] { z.compress(); });
  const double stored = double(directory_bytes(run));

  // Every tensor read back and kept, through the reader's no-copy API (what a consumer of many tensors uses);
  // read_full_tensor(), which hands out a copy, is measured next to it for the record.
  std::vector<std::shared_ptr<const fmt::FullTensor>> read_back;
  const Race read = race(
      c.repetitions, [&] { read_back.clear(); },
      [&] {
        fmt::RunReader reader(run);
        for (const auto& t : tensors)
          if (auto got = reader.full_tensor(t.layer_id, t.quantity, t.step)) read_back.push_back(std::move(got));
      },
      nullptr, [&] { z.decompress(); });
  bool exact = read_back.size() == tensors.size();
  for (size_t i = 0; exact && i < tensors.size(); ++i)
    exact = read_back[i]->values.size() == tensors[i].values.size() &&
            std::memcmp(read_back[i]->values.data(), tensors[i].values.data(), tensors[i].values.size() * 4) == 0;
  check(exact, "full tensors do not read back bit-exact");
  read_back.clear();
  std::vector<fmt::FullTensor> copies_read;
  const Race read_copies = race(
      c.repetitions, [&] { copies_read.clear(); },
      [&] {
        fmt::RunReader reader(run);
        for (const auto& t : tensors)
          if (auto got = reader.read_full_tensor(t.layer_id, t.quantity, t.step))
            copies_read.push_back(std::move(*got));
      },
      nullptr, [&] { z.decompress(); });
  check(copies_read.size() == tensors.size(), "read_full_tensor missed tensors");

  char detail[256];
  std::snprintf(detail, sizeof detail, "%.1f MB raw -> %.1f MB on disk; plain zstd -1: %.2fx", raw / 1e6, stored / 1e6,
                raw / double(z.compressed_bytes));
  figure("compression ratio, drifting weight matrices", raw / stored, 1.8, true, "x", detail);
  figure("write throughput vs plain zstd -1, weights", 100 * write.baseline / write.ours, 70, true, "%",
         "ours " + mb_per_s(raw, write.ours) + ", zstd -1 " + mb_per_s(raw, write.baseline));
  figure("read throughput vs plain zstd decompression, weights", 100 * read.baseline / read.ours, 70, true, "%",
         "ours " + mb_per_s(raw, read.ours) + ", zstd " + mb_per_s(raw, read.baseline));
  std::printf("      (with read_full_tensor's copies: %.2f%%, ours %s, zstd %s)\n",
              100 * read_copies.baseline / read_copies.ours, mb_per_s(raw, read_copies.ours).c_str(),
              mb_per_s(raw, read_copies.baseline).c_str());

  // Trim of the whole run against copying its files.
  const fs::path copy = c.dir / "weights-copy", trimmed = c.dir / "weights-trim";
  fmt::TrimResult result;
  const Race trim = race(
      c.repetitions, [&] { fs::remove_all(trimmed); },
      [&] { result = fmt::trim_run(run, trimmed, INT64_MIN / 2, INT64_MAX / 2); }, [&] { fs::remove_all(copy); },
      [&] { copy_directory(run, copy); });
  const double trimmed_bytes = double(directory_bytes(trimmed));
  check(result.chunks_reencoded == 0 && result.chunks_skipped == 0, "whole-run trim re-encoded or skipped chunks");
  figure("trim speed vs copying the same bytes, weights", 100 * (trimmed_bytes / trim.ours) / (stored / trim.baseline),
         50, true, "%", "trim " + mb_per_s(trimmed_bytes, trim.ours) + ", copy " + mb_per_s(stored, trim.baseline));
  fs::remove_all(copy);
  fs::remove_all(trimmed);
}

void benchmark_statistics(const Config& c) {
  std::printf("\n-- per-neuron statistics: %u layers x %u neurons x 4 quantities x 8 statistics, %u steps\n", c.layers,
              c.neurons, c.steps);
  const std::vector<fmt::Snapshot> snapshots = neuron_statistics_snapshots(c);
  const fmt::WriterOptions options;
  const std::vector<std::string> blocks = raw_blocks(snapshots, options.chunk_bytes);
  const double raw = double(total_size(blocks));
  ZstdBaseline z(blocks);
  const fs::path run = c.dir / "statistics";
  const fmt::RunMetadata metadata = model_metadata(c.layers, c.neurons);

  std::vector<fmt::Snapshot> copies;
  const Race write = race(
      c.repetitions,
      [&] {
        fs::remove_all(run);
        copies = snapshots;
      },
      [&] {
        fmt::RunWriter writer(run, metadata, options);
        for (auto& s : copies) check(writer.append(std::move(s)), "snapshot dropped");
        writer.close();
        check(writer.status().error.empty(), writer.status().error);
      },
      nullptr, [&] { z.compress(); });
  const double stored = double(directory_bytes(run));

  // Read everything: every layer's every series.
  size_t values_read = 0;
  const Race read = race(
      c.repetitions, [&] { values_read = 0; },
      [&] {
        fmt::RunReader reader(run);
        for (uint32_t layer = 1; layer <= c.layers; ++layer)
          for (fmt::Quantity q : {fmt::Quantity::Activation, fmt::Quantity::ActivationGrad, fmt::Quantity::Weight,
                                  fmt::Quantity::WeightGrad})
            for (fmt::Statistic s : fmt::all_statistics()) {
              auto series = reader.read_neuron_series(layer, q, s);
              if (series) values_read += series->values.size();
            }
        (void)reader.read_all_summaries();
      },
      nullptr, [&] { z.decompress(); });
  check(values_read == size_t(c.layers) * 4 * 8 * c.neurons * c.steps, "not every statistic read back");

  char detail[256];
  std::snprintf(detail, sizeof detail, "%.1f MB raw -> %.1f MB on disk; plain zstd -1: %.2fx", raw / 1e6, stored / 1e6,
                raw / double(z.compressed_bytes));
  figure("compression ratio, per-neuron statistics", raw / stored, 1.3, true, "x", detail);
  figure("write throughput vs plain zstd -1, statistics", 100 * write.baseline / write.ours, 70, true, "%",
         "ours " + mb_per_s(raw, write.ours) + ", zstd -1 " + mb_per_s(raw, write.baseline));
  figure("read throughput vs plain zstd decompression, statistics", 100 * read.baseline / read.ours, 70, true, "%",
         "ours " + mb_per_s(raw, read.ours) + ", zstd " + mb_per_s(raw, read.baseline));

  // One layer out of 100: everything decompressed from opening the run to having that layer's every series.
  fmt::RunReader reader(run);
  const uint32_t layer = c.layers / 2;
  size_t rows = 0;
  for (fmt::Quantity q :
       {fmt::Quantity::Activation, fmt::Quantity::ActivationGrad, fmt::Quantity::Weight, fmt::Quantity::WeightGrad})
    for (fmt::Statistic s : fmt::all_statistics()) {
      auto series = reader.read_neuron_series(layer, q, s);
      if (series) rows += series->steps.size();
    }
  check(rows == size_t(c.steps) * 32, "one layer's series incomplete");
  const double share = double(reader.raw_bytes()) / c.layers;
  const double decompressed = double(reader.cache_stats().raw_bytes_decompressed);
  std::snprintf(detail, sizeof detail, "%.0f KB decompressed for a 1/%u share of %.0f KB", decompressed / 1e3, c.layers,
                share / 1e3);
  figure("bytes decompressed for one layer of 100 / its share", decompressed / share, 2.0, false, "x", detail);

  const fs::path copy = c.dir / "statistics-copy", trimmed = c.dir / "statistics-trim";
  fmt::TrimResult result;
  const Race trim = race(
      c.repetitions, [&] { fs::remove_all(trimmed); },
      [&] { result = fmt::trim_run(run, trimmed, INT64_MIN / 2, INT64_MAX / 2); }, [&] { fs::remove_all(copy); },
      [&] { copy_directory(run, copy); });
  const double trimmed_bytes = double(directory_bytes(trimmed));
  figure("trim speed vs copying the same bytes, statistics",
         100 * (trimmed_bytes / trim.ours) / (stored / trim.baseline), 50, true, "%",
         "trim " + mb_per_s(trimmed_bytes, trim.ours) + ", copy " + mb_per_s(stored, trim.baseline));
  fs::remove_all(copy);
  fs::remove_all(trimmed);
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--full") {
      c.full = true;
    } else if (a == "--smoke") {
      c.full = false;
    } else if (a == "--dir" && i + 1 < argc) {
      c.dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--smoke | --full] [--dir DIR]\n", argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  if (c.full) {
    c.matrices = 4, c.rows = 256, c.columns = 512, c.snapshots = 48;  // 96 MiB of weights
    c.neurons = 64, c.steps = 240;                                    // 100 MB of statistics
    c.repetitions = 5;
  }
  const bool own_dir = c.dir.empty();
  if (own_dir) c.dir = fs::temp_directory_path() / ("trainscope-format-benchmark-" + std::to_string(::getpid()));
  fs::remove_all(c.dir);
  fs::create_directories(c.dir);
  std::printf("trainscope format benchmark (%s), zstd %s, files in %s\n", c.full ? "full" : "smoke",
              ZSTD_versionString(), c.dir.c_str());
  benchmark_weights(c);
  benchmark_statistics(c);
  if (own_dir) fs::remove_all(c.dir);
  std::printf("\n%d of the figures miss their goal%s; %d errors\n", failures,
              c.full ? "" : " (smoke sizes: not judged)", errors);
  if (errors) return 2;
  return c.full && failures ? 1 : 0;
}
