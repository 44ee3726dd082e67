#include <trainscope/format/run_reader.h>

#include <cstdio>

#include "cli.h"

namespace trainscope::cli {
namespace {
constexpr const char* kHelp = R"(usage: trainscope check RUN

Reads every chunk of every segment, verifies its checksums, decompresses and decodes it, and checks each segment's
index footer. Prints each problem with its file and offset. Exit status: 0 when the recording is clean, 1 when
anything is wrong (a torn tail after a crash counts: the chunks before it are still readable), 2 on bad usage.
)";
}  // namespace

int run_check(int argc, char** argv) {
  Arguments args("check", argc, argv, {}, {});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  int status = 0;
  for (const auto& dir : format::rank_directories(args.run_path())) {
    format::RunReader reader(dir);
    Progress progress("checking " + dir.string());
    const auto problems = reader.verify([&](uint64_t done, uint64_t total) { progress.update(done, total); });
    progress.finish();
    if (problems.empty()) {
      std::printf("%s: OK, %s chunks in %zu segment(s) verified (%s)\n", dir.c_str(),
                  format_count(reader.chunks().size()).c_str(), reader.segment_files().size(),
                  format_bytes(reader.stored_bytes()).c_str());
      continue;
    }
    status = 1;
    std::printf("%s: %zu problem(s) in %s chunks:\n", dir.c_str(), problems.size(),
                format_count(reader.chunks().size()).c_str());
    for (const auto& p : problems) std::printf("  %s\n", p.message.c_str());
  }
  return status;
}

}  // namespace trainscope::cli
