// Cuts a recording down to a window of steps, for sharing and fast reloading.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace trainscope::format {

struct TrimResult {
  uint64_t chunks_copied = 0;     // copied byte for byte, without recompression
  uint64_t chunks_reencoded = 0;  // straddled the window edge (or depended on a base outside it)
  uint64_t chunks_skipped = 0;    // corrupt in the input: left out, and named in `warnings`
  uint64_t bytes_written = 0;
  std::vector<std::string> warnings;
};

// Writes a new run at `output_dir` holding only the data of steps in [first_step, last_step] and all metadata.
// `output_dir` must not exist or be empty. Throws FormatError naming the file on any problem.
// progress(done, total) is called with input bytes.
TrimResult trim_run(const std::filesystem::path& input_dir, const std::filesystem::path& output_dir, int64_t first_step,
                    int64_t last_step, const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace trainscope::format
