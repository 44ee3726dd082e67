// `trainscope`: the command line. Each command lives in its own file and only calls the libraries.
#include <trainscope/format/types.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "cli.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};

const Command kCommands[] = {
    {"info", "summary of a recording: model, layers, steps, size, health", trainscope::cli::run_info},
    {"check", "verify every checksum and index; non-zero exit on any problem", trainscope::cli::run_check},
    {"trim", "write a new recording holding only a window of steps", trainscope::cli::run_trim},
    {"export", "scalars or one layer's per-neuron series as CSV or JSON", trainscope::cli::run_export},
    {"sample", "a layer's neurons to draw: blue-noise sample keeping outliers, clusters", trainscope::cli::run_sample},
    {"anomalies", "abnormal steps and, for each, the layers where the failure starts", trainscope::cli::run_anomalies},
    {"layers", "the layer hierarchy with each layer's dynamics around a step and rule hits",
     trainscope::cli::run_layers},
    {"trace", "credit assignment: which neurons drive a neuron, forward and backward", trainscope::cli::run_trace},
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: trainscope COMMAND [ARGS...]\n\n"
               "Finds out why a training run failed, from a recording made by the Trainscope recorder.\n\n"
               "commands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\n'trainscope COMMAND --help' describes a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (name == "--version") {
    std::printf("trainscope 0.1.0\n");
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const trainscope::cli::UsageError& e) {
      std::fprintf(stderr, "trainscope %s: %s\n", c.name, e.what());
      return 2;
    } catch (const trainscope::format::FormatError& e) {
      std::fprintf(stderr, "trainscope %s: %s\n", c.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "trainscope %s: unexpected error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "trainscope: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
