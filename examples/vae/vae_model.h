// The VAE of examples/vae: an encoder with two heads (mu, and enc.logvar, a user-defined module) and a decoder.
// Shared by the example and the recorder's benchmark, so that the benchmark measures the model the README shows.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <utility>

namespace trainscope::examples {

constexpr int kLatent = 16;

// enc.logvar: a linear head with a learned temperature. With the "exp" failure it switches (at the failure step) to
// a sharpened log-sigmoid written naively, -log(1 + exp(-k z)) / k, whose exp overflows to Inf for -k z > 88.
struct LogVarHeadImpl : torch::nn::Module {
  LogVarHeadImpl(int in, int out)
      : weight(register_parameter("weight", torch::randn({out, in}) * (1.0 / std::sqrt(double(in))))),
        bias(register_parameter("bias", torch::zeros({out}))),
        temperature(register_parameter("temperature", torch::ones({1}))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor z = torch::linear(x, weight, bias);
    if (unstable) z = -torch::log(1 + torch::exp(-z * 400.0)) / 400.0;
    return z * temperature;
  }
  torch::Tensor weight, bias, temperature;
  bool unstable = false;
};
TORCH_MODULE(LogVarHead);

struct EncoderImpl : torch::nn::Module {
  EncoderImpl()
      : fc1(register_module("fc1", torch::nn::Linear(784, 256))),
        act(register_module("act", torch::nn::ReLU())),
        fc2(register_module("fc2", torch::nn::Linear(256, 128))),
        act2(register_module("act2", torch::nn::ReLU())),
        mu(register_module("mu", torch::nn::Linear(128, kLatent))),
        logvar(register_module("logvar", LogVarHead(128, kLatent))) {}
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    torch::Tensor h = act2(fc2(act(fc1(x))));
    return {mu(h), logvar(h)};
  }
  torch::nn::Linear fc1;
  torch::nn::ReLU act;
  torch::nn::Linear fc2;
  torch::nn::ReLU act2;
  torch::nn::Linear mu;
  LogVarHead logvar;
};
TORCH_MODULE(Encoder);

struct DecoderImpl : torch::nn::Module {
  DecoderImpl()
      : fc1(register_module("fc1", torch::nn::Linear(kLatent, 128))),
        act(register_module("act", torch::nn::ReLU())),
        fc2(register_module("fc2", torch::nn::Linear(128, 256))),
        act2(register_module("act2", torch::nn::ReLU())),
        out(register_module("out", torch::nn::Linear(256, 784))) {}
  torch::Tensor forward(const torch::Tensor& z) { return out(act2(fc2(act(fc1(z))))); }  // logits
  torch::nn::Linear fc1;
  torch::nn::ReLU act;
  torch::nn::Linear fc2;
  torch::nn::ReLU act2;
  torch::nn::Linear out;
};
TORCH_MODULE(Decoder);

struct VaeImpl : torch::nn::Module {
  VaeImpl() : enc(register_module("enc", Encoder())), dec(register_module("dec", Decoder())) {}
  Encoder enc;
  Decoder dec;
};
TORCH_MODULE(Vae);

}  // namespace trainscope::examples
