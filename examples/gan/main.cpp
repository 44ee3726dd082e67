// A small GAN on Fashion-MNIST: generator and discriminator recorded as two runs (gen/ and disc/ under --out).
// Failure flags: "lr" lets the discriminator's learning rate explode, "dead" kills the generator's hidden layer.
#include <torch/torch.h>
#include <trainscope/recorder.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "../vae/fashion_mnist.h"

namespace {

constexpr int kNoise = 32;

torch::nn::Sequential make_generator() {
  return torch::nn::Sequential(
      torch::nn::Linear(kNoise, 128), torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)),
      torch::nn::Linear(128, 256), torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)),
      torch::nn::Linear(256, 784), torch::nn::Sigmoid());
}

torch::nn::Sequential make_discriminator() {
  return torch::nn::Sequential(
      torch::nn::Linear(784, 256), torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)),
      torch::nn::Dropout(0.3), torch::nn::Linear(256, 64),
      torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)), torch::nn::Linear(64, 1));
}

void usage() {
  std::cout
      << "trainscope-example-gan: a small GAN on Fashion-MNIST recorded with Trainscope.\n\n"
         "  --steps N        training steps (default 1000)\n"
         "  --batch N        batch size (default 64)\n"
         "  --out DIR        recording directory; runs gen/ and disc/ go below it (default runs/gan)\n"
         "  --fail KIND      none | lr | dead (default none)\n"
         "                     lr:   the discriminator's learning rate grows 10x per step (layer disc 0..5)\n"
         "                     dead: generator layer 2 (Linear 128->256) gets large negative biases\n"
         "  --fail-step S    step at which the failure starts (default 400)\n"
         "  --seed N         random seed (default 1)\n"
         "  --threads N      LibTorch's intra-op threads (default 1: its OpenBLAS runs matrix products on threads\n"
         "                   of its own, and intra-op threads beside them made it 2-6x slower on 2 cores)\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const trainscope::examples::Args args(argc, argv);
    if (args.has("--help")) {
      usage();
      return 0;
    }
    const long steps = args.get_int("--steps", 1000);
    const long batch = args.get_int("--batch", 64);
    const std::string fail = args.get("--fail", "none");
    const long fail_step = args.get_int("--fail-step", 400);
    const std::filesystem::path out = args.get("--out", "runs/gan");
    if (fail != "none" && fail != "lr" && fail != "dead")
      throw std::runtime_error("unknown --fail kind '" + fail + "' (none, lr, dead)");
    torch::manual_seed(args.get_int("--seed", 1));
    torch::set_num_threads(int(std::max(1L, args.get_int("--threads", 1))));

    const auto data = trainscope::examples::load_fashion_mnist(true);
    auto gen = make_generator();
    auto disc = make_discriminator();
    torch::optim::Adam gen_opt(gen->parameters(), torch::optim::AdamOptions(2e-4).betas({0.5, 0.999}));
    torch::optim::Adam disc_opt(disc->parameters(), torch::optim::AdamOptions(2e-4).betas({0.5, 0.999}));
    if (fail == "lr")
      std::cout << "ground truth: exploding learning rate in the discriminator from step " << fail_step << "\n";
    if (fail == "dead") std::cout << "ground truth: dead layer 2 of the generator from step " << fail_step << "\n";

    trainscope::RecorderOptions gen_options;
    gen_options.optimizer = &gen_opt;
    gen_options.model_name = "gan-generator";
    gen_options.config = {{"example", "gan"}, {"fail", fail}, {"fail_step", std::to_string(fail_step)}};
    trainscope::RecorderOptions disc_options = gen_options;
    disc_options.optimizer = &disc_opt;
    disc_options.model_name = "gan-discriminator";
    trainscope::Recorder gen_rec(gen, out / "gen", gen_options);
    trainscope::Recorder disc_rec(disc, out / "disc", disc_options);

    const int64_t n = data.images.size(0);
    const auto start = std::chrono::steady_clock::now();
    for (long step = 0; step < steps; ++step) {
      if (fail == "dead" && step == fail_step) {
        torch::NoGradGuard no_grad;
        gen[2]->as<torch::nn::Linear>()->bias.fill_(-20.0);
      }
      if (fail == "lr" && step >= fail_step)
        for (auto& g : disc_opt.param_groups())
          g.options().set_lr(std::min(g.options().get_lr() * 10, 1e30));  // lr is converted to float
      const torch::Tensor real = data.images.index_select(0, torch::randint(n, {batch}, torch::kLong));
      const torch::Tensor ones = torch::ones({batch, 1}), zeros = torch::zeros({batch, 1});

      // Discriminator step. The generator's forward here runs without autograd, so it is not recorded.
      torch::Tensor fake;
      {
        torch::NoGradGuard no_grad;
        fake = gen->forward(torch::randn({batch, kNoise}));
      }
      disc_opt.zero_grad();
      const torch::Tensor d_loss = torch::binary_cross_entropy_with_logits(disc->forward(real), ones) +
                                   torch::binary_cross_entropy_with_logits(disc->forward(fake), zeros);
      d_loss.backward();
      const auto d_seen = disc_rec.step(d_loss);
      disc_opt.step();

      // Generator step: the discriminator's forward is seen by disc_rec's observer only when it is armed, and its
      // gradients are cleared before its own next step.
      gen_opt.zero_grad();
      const torch::Tensor g_loss =
          torch::binary_cross_entropy_with_logits(disc->forward(gen->forward(torch::randn({batch, kNoise}))), ones);
      g_loss.backward();
      const auto g_seen = gen_rec.step(g_loss);
      gen_opt.step();
      if (step % 100 == 0 || step + 1 == steps || (!d_seen.finite && d_seen.anomaly_triggered))
        std::cout << "step " << step << " d_loss " << d_loss.item<double>() << " g_loss " << g_loss.item<double>()
                  << (d_seen.finite && g_seen.finite ? "" : " (non-finite)") << "\n";
    }
    gen_rec.close();
    disc_rec.close();
    std::cout << "trained " << steps << " steps in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s; recorded into "
              << out.string() << "/gen and " << out.string() << "/disc\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "trainscope-example-gan: " << e.what() << "\n";
    return 1;
  }
}
