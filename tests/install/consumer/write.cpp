// Writes and reads a recording with the installed format library alone.
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  namespace f = trainscope::format;
  f::RunMetadata m;
  m.header.model_name = "consumer";
  m.layers.push_back({0, "", std::nullopt, "Model", 0, {}, {}, true});
  {
    f::RunWriter writer(argv[1], m);
    for (int step = 0; step < 30; ++step) writer.append(f::Snapshot{step, 0, {{"loss", 1.0 / (step + 1)}}, {}});
  }
  f::RunReader reader(argv[1]);
  if (reader.read_scalars().at(0).steps.size() != 30) return 1;
  std::printf("consumer: 30 steps read back\n");
  return 0;
}
