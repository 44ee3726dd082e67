#include <trainscope/format/trim.h>

#include <cstdio>

#include "cli.h"

namespace trainscope::cli {
namespace {
constexpr const char* kHelp = R"(usage: trainscope trim RUN --steps FIRST:LAST -o OUT

Writes a new recording OUT holding every snapshot of steps FIRST..LAST (inclusive; either side may be left open,
e.g. 1200:) and all of RUN's metadata. Whole chunks inside the window are copied without recompression; chunks
that straddle its edges are cut. OUT must not exist or be empty. Corrupt chunks of RUN are left out and named.

options:
  --steps FIRST:LAST   the window to keep
  -o, --output OUT     the new recording's directory
)";
}  // namespace

int run_trim(int argc, char** argv) {
  Arguments args("trim", argc, argv, {"--steps", "-o", "--output"}, {});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  const std::string run = args.run_path();
  const auto steps = args.value("--steps");
  if (!steps) throw UsageError("missing --steps FIRST:LAST");
  const auto [first, last] = parse_step_range("--steps", *steps);
  auto output = args.value("-o");
  if (!output) output = args.value("--output");
  if (!output) throw UsageError("missing -o OUT, the new recording's directory");
  Progress progress("trimming " + run);
  const auto result =
      format::trim_run(run, *output, first, last, [&](uint64_t done, uint64_t total) { progress.update(done, total); });
  progress.finish();
  for (const auto& w : result.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::printf("%s: %s chunks copied, %s cut at the window's edges, %s written\n", output->c_str(),
              format_count(result.chunks_copied).c_str(), format_count(result.chunks_reencoded).c_str(),
              format_bytes(result.bytes_written).c_str());
  return result.chunks_skipped ? 1 : 0;
}

}  // namespace trainscope::cli
