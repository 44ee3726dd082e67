// A variational autoencoder on Fashion-MNIST, recorded by Trainscope with the one call. Failure flags make it go
// wrong in realistic ways, each starting in one named layer at one step; the ground truth is printed at the start.
#include <torch/torch.h>
#include <trainscope/recorder.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>

#include "fashion_mnist.h"
#include "vae_model.h"

namespace {

using trainscope::examples::Vae;

void usage() {
  std::cout
      << "trainscope-example-vae: a VAE on Fashion-MNIST recorded with Trainscope.\n\n"
         "  --steps N        training steps (default 1500)\n"
         "  --batch N        batch size (default 64)\n"
         "  --out DIR        recording directory (default runs/vae)\n"
         "  --fail KIND      none | lr | exp | dead (default none)\n"
         "                     lr:   the learning rate of dec.fc2 grows 10x per step from the failure step\n"
         "                     exp:  enc.logvar switches to a naive -log(1+exp(-k z))/k that overflows to Inf\n"
         "                     dead: enc.fc2 is re-initialised with large negative biases: its ReLUs die\n"
         "  --fail-step S    step at which the failure starts (default 600)\n"
         "  --interval N     recorder interval (default 10)\n"
         "  --full-interval N  full weight tensors every N steps, for credit assignment (default 100, 0 = never)\n"
         "  --no-record      train without the recorder (for timing)\n"
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
    const long steps = args.get_int("--steps", 1500);
    const long batch = args.get_int("--batch", 64);
    const std::string fail = args.get("--fail", "none");
    const long fail_step = args.get_int("--fail-step", 600);
    const std::string out = args.get("--out", "runs/vae");
    if (fail != "none" && fail != "lr" && fail != "exp" && fail != "dead")
      throw std::runtime_error("unknown --fail kind '" + fail + "' (none, lr, exp, dead)");
    torch::manual_seed(args.get_int("--seed", 1));
    torch::set_num_threads(int(std::max(1L, args.get_int("--threads", 1))));

    const auto data = trainscope::examples::load_fashion_mnist(true);
    Vae model;
    // dec.fc2 has its own parameter group, as with a layer-wise learning rate: the "lr" failure targets it.
    std::vector<torch::Tensor> rest;
    for (const auto& p : model->named_parameters())
      if (p.key().rfind("dec.fc2.", 0) != 0) rest.push_back(p.value());
    torch::optim::Adam opt(
        {torch::optim::OptimizerParamGroup(rest), torch::optim::OptimizerParamGroup(model->dec->fc2->parameters())},
        torch::optim::AdamOptions(1e-3));

    if (fail == "lr")
      std::cout << "ground truth: exploding learning rate in layer dec.fc2 from step " << fail_step << "\n";
    if (fail == "exp")
      std::cout << "ground truth: numerically unstable exp in layer enc.logvar from step " << fail_step << "\n";
    if (fail == "dead")
      std::cout << "ground truth: bad re-initialisation kills layer enc.fc2 (dead ReLUs in enc.act2) at step "
                << fail_step << "\n";

    std::unique_ptr<trainscope::Recorder> rec;
    if (!args.has("--no-record")) {
      trainscope::RecorderOptions options;
      options.interval = args.get_int("--interval", 10);
      options.full_tensor_interval = args.get_int("--full-interval", 100);
      options.optimizer = &opt;
      options.model_name = "vae-fashion-mnist";
      options.config = {{"example", "vae"},
                        {"fail", fail},
                        {"fail_step", std::to_string(fail_step)},
                        {"batch", std::to_string(batch)},
                        {"steps", std::to_string(steps)}};
      rec = std::make_unique<trainscope::Recorder>(model, out, options);
    }
    const auto start = std::chrono::steady_clock::now();
    const int64_t n = data.images.size(0);
    int64_t first_nonfinite = -1;
    for (long step = 0; step < steps; ++step) {
      if (step == fail_step) {
        torch::NoGradGuard no_grad;
        if (fail == "exp") model->enc->logvar->unstable = true;
        if (fail == "dead") {
          model->enc->fc2->weight.normal_(0, 0.01);
          model->enc->fc2->bias.fill_(-5.0);
        }
      }
      if (fail == "lr" && step >= fail_step) {
        auto& group = opt.param_groups()[1];
        // Capped: the optimizer converts lr to float, and past ~3e38 LibTorch refuses the step instead of failing.
        group.options().set_lr(std::min(group.options().get_lr() * 10, 1e30));
      }
      const torch::Tensor idx = torch::randint(n, {batch}, torch::kLong);
      const torch::Tensor x = data.images.index_select(0, idx);
      opt.zero_grad();
      auto [mu, logvar] = model->enc->forward(x);
      const torch::Tensor z = mu + torch::randn_like(mu) * torch::exp(0.5 * logvar);
      const torch::Tensor logits = model->dec->forward(z);
      const torch::Tensor recon =
          torch::binary_cross_entropy_with_logits(logits, x, {}, {}, torch::Reduction::Sum) / double(batch);
      const torch::Tensor kl = -0.5 * torch::sum(1 + logvar - mu.pow(2) - logvar.exp()) / double(batch);
      const torch::Tensor loss = recon + kl;
      loss.backward();
      if (rec) {
        const auto seen = rec->step(loss, {{"recon", recon}, {"kl", kl}});
        if (!seen.finite && first_nonfinite < 0) {
          first_nonfinite = step;
          std::cout << "step " << step << ": " << trainscope::anomaly_name(seen.anomaly);
          for (const auto& o : seen.origins)
            std::cout << " | first non-finite: " << o.layer << " (" << trainscope::format::quantity_name(o.quantity)
                      << ")";
          std::cout << "\n";
        }
      }
      opt.step();
      if (step % 100 == 0 || step + 1 == steps)
        std::cout << "step " << step << " loss " << loss.item<double>() << " (recon " << recon.item<double>() << ", kl "
                  << kl.item<double>() << ")\n";
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rec) {
      rec->close();
      const auto st = rec->stats();
      std::cout << "recorded " << st.steps << " steps (" << st.written_snapshots << " snapshots) into "
                << rec->directory().string() << ": " << st.writer.stored_bytes << " bytes\n";
    }
    std::cout << "trained " << steps << " steps in " << seconds << " s\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "trainscope-example-vae: " << e.what() << "\n";
    return 1;
  }
}
