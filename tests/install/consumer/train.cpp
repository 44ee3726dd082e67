// Trains a tiny model with the one-call recorder, exactly as the README tells users to.
#include <torch/torch.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/recorder.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 1));
  torch::optim::SGD optimizer(model->parameters(), 0.01);
  {
    trainscope::Recorder rec(model, argv[1]);
    for (int step = 0; step < 30; ++step) {
      optimizer.zero_grad();
      auto x = torch::randn({16, 4});
      auto loss = (model->forward(x) - x.sum(1, true)).pow(2).mean();
      loss.backward();
      rec.step(loss);
      optimizer.step();
    }
  }
  trainscope::format::RunReader reader(argv[1]);
  const auto scalars = reader.read_scalars();
  if (scalars.empty() || scalars[0].steps.size() != 30) {
    std::fprintf(stderr, "consumer: expected 30 recorded steps\n");
    return 1;
  }
  std::printf("consumer: recorded %zu steps, %zu layers\n", scalars[0].steps.size(), reader.metadata().layers.size());
  return 0;
}
