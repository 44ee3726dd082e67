#include <trainscope/format/run_info.h>
#include <trainscope/format/run_reader.h>

#include <cstdio>
#include <ctime>

#include "cli.h"

namespace trainscope::cli {
namespace {

constexpr const char* kHelp = R"(usage: trainscope info RUN [--json]

Describes a recording: model, rank, configuration, layers and neurons, step range, number of snapshots, bytes on
disk and raw, compression ratio, segments and health (torn tails, corrupt chunks, dropped steps, non-finite
scalars). Reads only the index and the small chunks. For a multi-rank run (RUN/rank-N/), describes every rank.

options:
  --json    machine-readable output
)";

std::string utc_time(int64_t unix_ms) {
  const std::time_t t = std::time_t(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

void print_text(const format::RunInfo& info) {
  const auto& h = info.metadata.header;
  std::printf("Run:          %s\n", info.directory.c_str());
  std::printf("Model:        %s", h.model_name.empty() ? "(unnamed)" : h.model_name.c_str());
  if (h.world_size > 1) std::printf("  (rank %u of %u)", h.rank, h.world_size);
  std::printf("\nCreated:      %s by %s\n", utc_time(h.created_unix_ms).c_str(), h.producer.c_str());
  std::printf("Format:       %u.%u\n", h.format_major, h.format_minor);
  if (!h.config.empty()) {
    std::printf("Config:      ");
    for (const auto& [k, v] : h.config) std::printf(" %s=%s", k.c_str(), v.c_str());
    std::printf("\n");
  }
  std::printf("Layers:       %zu modules, %zu leaf layers, %s neurons, %zu graph edges\n", info.layer_count,
              info.leaf_count, format_count(info.neuron_count).c_str(), info.metadata.edges.size());
  std::printf("Steps:        %lld .. %lld; scalars at %s steps, per-neuron snapshots at %s steps, %s full tensors\n",
              static_cast<long long>(info.first_step), static_cast<long long>(info.last_step),
              format_count(info.scalar_steps).c_str(), format_count(info.snapshots).c_str(),
              format_count(info.full_tensors).c_str());
  if (!info.scalars.empty()) {
    std::printf("Scalars:     ");
    for (const auto& s : info.scalars)
      std::printf(" %s (last %s)", s.name.c_str(), format_double(s.last_value).c_str());
    std::printf("\n");
  }
  const double ratio = info.stored_bytes ? double(info.raw_bytes) / double(info.stored_bytes) : 0.0;
  std::printf("Size:         %s on disk, %s raw, compression %.2fx\n", format_bytes(info.stored_bytes).c_str(),
              format_bytes(info.raw_bytes).c_str(), ratio);
  std::printf("Segments:     %zu (%s chunks), %s\n", info.segments, format_count(info.chunks).c_str(),
              info.complete ? "all closed cleanly" : "not closed: the run is still being written or was interrupted");
  std::vector<std::string> health;
  for (const auto& s : info.scalars)
    if (s.first_non_finite_step)
      health.push_back(s.name + " is NaN/Inf from step " + std::to_string(*s.first_non_finite_step));
  for (const auto& g : info.gaps)
    health.push_back(std::to_string(g.dropped_snapshots) + " snapshots dropped in steps " +
                     std::to_string(g.first_step) + ".." + std::to_string(g.last_step) + " (" + g.reason + ")");
  for (const auto& p : info.problems) health.push_back(p.message);
  if (health.empty()) {
    std::printf("Health:       OK\n");
  } else {
    std::printf("Health:       %zu finding(s)\n", health.size());
    for (const auto& line : health) std::printf("  - %s\n", line.c_str());
  }
}

void print_json(const format::RunInfo& info, bool last) {
  const auto& h = info.metadata.header;
  std::printf("  {\n    \"run\": \"%s\",\n    \"model\": \"%s\",\n    \"rank\": %u,\n    \"world_size\": %u,\n",
              json_escape(info.directory.string()).c_str(), json_escape(h.model_name).c_str(), h.rank, h.world_size);
  std::printf("    \"created_unix_ms\": %lld,\n    \"producer\": \"%s\",\n    \"format_version\": \"%u.%u\",\n",
              static_cast<long long>(h.created_unix_ms), json_escape(h.producer).c_str(), h.format_major,
              h.format_minor);
  std::printf("    \"config\": {");
  bool first = true;
  for (const auto& [k, v] : h.config) {
    std::printf("%s\"%s\": \"%s\"", first ? "" : ", ", json_escape(k).c_str(), json_escape(v).c_str());
    first = false;
  }
  std::printf("},\n    \"layers\": %zu,\n    \"leaf_layers\": %zu,\n    \"neurons\": %llu,\n    \"edges\": %zu,\n",
              info.layer_count, info.leaf_count, static_cast<unsigned long long>(info.neuron_count),
              info.metadata.edges.size());
  std::printf(
      "    \"first_step\": %lld,\n    \"last_step\": %lld,\n    \"scalar_steps\": %llu,\n"
      "    \"snapshots\": %llu,\n    \"full_tensors\": %llu,\n",
      static_cast<long long>(info.first_step), static_cast<long long>(info.last_step),
      static_cast<unsigned long long>(info.scalar_steps), static_cast<unsigned long long>(info.snapshots),
      static_cast<unsigned long long>(info.full_tensors));
  std::printf("    \"segments\": %zu,\n    \"chunks\": %llu,\n    \"complete\": %s,\n", info.segments,
              static_cast<unsigned long long>(info.chunks), info.complete ? "true" : "false");
  std::printf("    \"stored_bytes\": %llu,\n    \"raw_bytes\": %llu,\n",
              static_cast<unsigned long long>(info.stored_bytes), static_cast<unsigned long long>(info.raw_bytes));
  std::printf("    \"scalars\": [");
  for (size_t i = 0; i < info.scalars.size(); ++i) {
    const auto& s = info.scalars[i];
    std::printf("%s{\"name\": \"%s\", \"count\": %llu, \"last\": %s, \"first_non_finite_step\": %s}", i ? ", " : "",
                json_escape(s.name).c_str(), static_cast<unsigned long long>(s.count),
                json_number(s.last_value).c_str(),
                s.first_non_finite_step ? std::to_string(*s.first_non_finite_step).c_str() : "null");
  }
  std::printf("],\n    \"gaps\": [");
  for (size_t i = 0; i < info.gaps.size(); ++i)
    std::printf("%s{\"first_step\": %lld, \"last_step\": %lld, \"dropped\": %llu}", i ? ", " : "",
                static_cast<long long>(info.gaps[i].first_step), static_cast<long long>(info.gaps[i].last_step),
                static_cast<unsigned long long>(info.gaps[i].dropped_snapshots));
  std::printf("],\n    \"problems\": [");
  for (size_t i = 0; i < info.problems.size(); ++i)
    std::printf("%s\"%s\"", i ? ", " : "", json_escape(info.problems[i].message).c_str());
  std::printf("]\n  }%s\n", last ? "" : ",");
}

}  // namespace

int run_info(int argc, char** argv) {
  Arguments args("info", argc, argv, {}, {"--json"});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  const auto ranks = format::rank_directories(args.run_path());
  const bool json = args.has("--json");
  if (json) std::printf("[\n");
  for (size_t i = 0; i < ranks.size(); ++i) {
    format::RunReader reader(ranks[i]);
    const format::RunInfo info = format::describe_run(reader);
    if (json) {
      print_json(info, i + 1 == ranks.size());
    } else {
      if (i) std::printf("\n");
      print_text(info);
    }
  }
  if (json) std::printf("]\n");
  return 0;
}

}  // namespace trainscope::cli
