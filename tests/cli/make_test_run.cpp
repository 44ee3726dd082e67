// Writes a synthetic recording for the CLI tests: `make_test_run DIR STEPS [--nan-at STEP] [--open]`.
// --open leaves the last segment without its footer, as a killed writer would.
#include <trainscope/format/run_writer.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "test_support.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: make_test_run DIR STEPS [--nan-at STEP] [--open]\n");
    return 2;
  }
  const int steps = std::atoi(argv[2]);
  int nan_at = -1;
  bool open = false;
  for (int i = 3; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--nan-at") && i + 1 < argc) nan_at = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--open")) open = true;
  }
  using namespace trainscope;
  const format::RunMetadata m = testing::small_model_metadata(8);
  format::WriterOptions options;
  options.chunk_bytes = 8 << 10;
  auto* writer = new format::RunWriter(argv[1], m, options);
  for (int s = 0; s < steps; ++s) {
    format::Snapshot snap = testing::synthetic_snapshot(s, 8, m, s % 10 == 0);
    if (nan_at >= 0 && s >= nan_at) snap.scalars[0].second = std::nan("");
    writer->append(std::move(snap));
    if (s % 50 == 0)
      writer->append(
          format::FullTensor{2, format::Quantity::Weight, s, {8, 8}, testing::drifting_weights(64, s), false});
  }
  if (open) {
    writer->flush();
    std::_Exit(0);  // no close(): the segment keeps no footer
  }
  delete writer;
  return 0;
}
