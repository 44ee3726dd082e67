// Helpers shared by the format tests: temporary run directories and training-like synthetic data.
#pragma once

#include <trainscope/format/metadata.h>
#include <trainscope/format/types.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace trainscope::testing {

// A float's or double's bit pattern (to compare NaN payloads and signed zeros exactly), and back.
inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline uint64_t bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "run");
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A small MLP-like model: root, encoder (Sequential) with fc1 and act1, decoder.fc2.
format::RunMetadata small_model_metadata(uint32_t neurons = 16);

// A deterministic snapshot for `step`: smooth per-neuron series, all quantities and statistics.
format::Snapshot synthetic_snapshot(int64_t step, uint32_t neurons, const format::RunMetadata& metadata,
                                    bool with_neurons = true);

// Smoothly drifting weight values, as SGD produces between snapshots.
std::vector<float> drifting_weights(size_t count, int64_t step, uint32_t seed = 7);

// Runs a shell command and returns its exit status and what it printed (standard error too unless told not to).
struct CommandResult {
  int status = -1;  // the exit code, or -1 if the command did not exit normally
  std::string output;
};
CommandResult run_command(const std::string& command, bool with_stderr = true);

std::vector<uint8_t> read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::vector<uint8_t>& bytes);

}  // namespace trainscope::testing
