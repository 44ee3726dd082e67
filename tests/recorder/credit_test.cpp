// Credit assignment on real recordings: small models trained under the real Recorder, read back, traced with
// Trainscope::analysis and compared with values computed here with LibTorch autograd. Every contribution is compared
// one by one, and the completeness sums are compared with autograd's pre-activations and gradients (not only with
// the recorded ones), so neither can pass by accident.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <trainscope/analysis/credit_assignment.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/recorder.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

namespace fs = std::filesystem;
using trainscope::analysis::CreditAssignment;
using trainscope::analysis::CreditDirection;
using trainscope::analysis::CreditOptions;
using trainscope::analysis::CreditSource;
using trainscope::format::RunReader;

namespace {

struct TempDir {
  TempDir() {
    path = fs::temp_directory_path() /
           ("trainscope-credit-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(6, 16))),
        relu1(register_module("relu1", torch::nn::ReLU())),
        fc2(register_module("fc2", torch::nn::Linear(16, 12))),
        relu2(register_module("relu2", torch::nn::ReLU())),
        fc3(register_module("fc3", torch::nn::Linear(12, 3))) {}
  torch::nn::Linear fc1;
  torch::nn::ReLU relu1;
  torch::nn::Linear fc2;
  torch::nn::ReLU relu2;
  torch::nn::Linear fc3;
  // The intermediate tensors of the last forward, kept for autograd checks.
  torch::Tensor a1, z2, a2, z3;
  torch::Tensor forward(torch::Tensor x) {
    a1 = relu1(fc1(x));
    z2 = fc2(a1);
    a2 = relu2(z2);
    z3 = fc3(a2);
    for (auto* t : {&a1, &z2, &a2, &z3}) t->retain_grad();
    return z3;
  }
};
TORCH_MODULE(Mlp);

struct CnnImpl : torch::nn::Module {
  CnnImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 3).padding(1)))),
        relu1(register_module("relu1", torch::nn::ReLU())),
        pool1(register_module("pool1", torch::nn::MaxPool2d(2))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 6, 3)))),
        relu2(register_module("relu2", torch::nn::ReLU())),
        flatten(register_module("flatten", torch::nn::Flatten())),
        fc(register_module("fc", torch::nn::Linear(6 * 2 * 2, 3))) {}
  torch::nn::Conv2d conv1;
  torch::nn::ReLU relu1;
  torch::nn::MaxPool2d pool1;
  torch::nn::Conv2d conv2;
  torch::nn::ReLU relu2;
  torch::nn::Flatten flatten;
  torch::nn::Linear fc;
  torch::Tensor p1, z2, a2, z3;
  torch::Tensor forward(torch::Tensor x) {
    p1 = pool1(relu1(conv1(x)));
    z2 = conv2(p1);
    a2 = relu2(z2);
    z3 = fc(flatten(a2));
    for (auto* t : {&p1, &z2, &a2, &z3}) t->retain_grad();
    return z3;
  }
};
TORCH_MODULE(Cnn);

trainscope::RecorderOptions full_options(trainscope::QuantityMask full) {
  trainscope::RecorderOptions o;
  o.interval = 1;
  o.full_tensor_interval = 1;
  o.full_tensor_quantities = full;
  o.flight_recorder = false;
  o.report_to_stderr = false;
  return o;
}

uint32_t id_of(const CreditAssignment& c, const std::string& name) {
  auto id = trainscope::analysis::find_layer(c.graph(), name);
  EXPECT_TRUE(id.has_value()) << name;
  return id.value_or(0);
}

double tol(double scale) {
  return 1e-4 * (1.0 + std::abs(scale));
}

// What autograd saw at the checked step.
struct MlpTruth {
  torch::Tensor w2, b2, a1, z2, a1_grad, z2_grad;
};

MlpTruth train_mlp(const fs::path& dir, trainscope::QuantityMask full, int steps, int check_step,
                   const std::function<void(Mlp&)>& inject = {}) {
  torch::manual_seed(7);
  Mlp model;
  if (inject) inject(model);
  torch::optim::SGD opt(model->parameters(), 0.05);
  const torch::Tensor x = torch::randn({5, 6});
  const torch::Tensor y = torch::randn({5, 3});
  MlpTruth truth;
  trainscope::Recorder rec(model, dir, full_options(full));
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    if (s == check_step) {
      truth = {model->fc2->weight.detach().clone(), model->fc2->bias.detach().clone(), model->a1.detach().clone(),
               model->z2.detach().clone(),          model->a1.grad().clone(),          model->z2.grad().clone()};
    }
    rec.step(loss);
    opt.step();
  }
  rec.close();
  return truth;
}

TEST(CreditAssignment, MlpForwardAndBackwardMatchAutograd) {
  TempDir tmp;
  const int step = 2;
  const auto truth = train_mlp(tmp.path, trainscope::kAllQuantities, 4, step);
  RunReader reader(tmp.path);
  CreditAssignment credit(reader);
  const uint32_t fc2 = id_of(credit, "fc2"), relu1 = id_of(credit, "relu1");

  for (int64_t sample : {int64_t(-1), int64_t(3)}) {
    CreditOptions o;
    o.sample = sample;
    const torch::Tensor a = sample < 0 ? truth.a1.mean(0) : truth.a1[sample];
    const torch::Tensor z = sample < 0 ? truth.z2.mean(0) : truth.z2[sample];
    const torch::Tensor ga = sample < 0 ? truth.a1_grad.mean(0) : truth.a1_grad[sample];
    const torch::Tensor gz = sample < 0 ? truth.z2_grad.mean(0) : truth.z2_grad[sample];
    for (uint32_t i = 0; i < 12; ++i) {
      auto f = credit.contributions(step, fc2, i, CreditDirection::Forward, o);
      ASSERT_TRUE(f.ok) << f.message;
      EXPECT_EQ(f.hop.source, CreditSource::TrainingBatch);
      EXPECT_EQ(f.hop.source_layer, relu1);
      ASSERT_EQ(f.values.size(), 16u);
      double sum = 0;
      for (uint32_t j = 0; j < 16; ++j) {
        const double expected = truth.w2[i][j].item<double>() * a[j].item<double>();
        EXPECT_NEAR(f.values[j], expected, tol(expected)) << "fc2 neuron " << i << " input " << j;
        sum += f.values[j];
      }
      // Completeness: contributions + bias = the pre-activation autograd computed (and the recorded one).
      const double zi = z[i].item<double>();
      ASSERT_EQ(f.hop.checks.size(), 1u);
      EXPECT_NEAR(sum + f.hop.checks[0].bias, zi, tol(zi));
      EXPECT_NEAR(f.hop.checks[0].bias, truth.b2[i].item<double>(), 1e-6);
      ASSERT_TRUE(f.hop.checks[0].recorded.has_value());
      EXPECT_NEAR(*f.hop.checks[0].recorded, zi, tol(zi));
    }
    int nonzero_gradients = 0;
    for (uint32_t j = 0; j < 16; ++j) {
      auto b = credit.contributions(step, relu1, j, CreditDirection::Backward, o);
      ASSERT_TRUE(b.ok) << b.message;
      EXPECT_EQ(b.hop.weighted_layer, fc2);
      ASSERT_EQ(b.values.size(), 12u);
      double sum = 0;
      for (uint32_t i = 0; i < 12; ++i) {
        const double expected = truth.w2[i][j].item<double>() * gz[i].item<double>();
        EXPECT_NEAR(b.values[i], expected, 1e-6 + 1e-4 * std::abs(expected));
        sum += b.values[i];
      }
      const double g = ga[j].item<double>();
      EXPECT_NEAR(sum, g, 1e-7 + 1e-4 * std::abs(g)) << "gradient of relu1 neuron " << j;
      nonzero_gradients += std::abs(g) > 1e-6;
    }
    EXPECT_GT(nonzero_gradients, 4);  // the check compared real gradients, not zeros
  }
}

TEST(CreditAssignment, MlpBatchMeansAreExactForLinearLayers) {
  TempDir tmp;
  const int step = 2;
  // Only parameters as full tensors: activations and gradients come from the per-neuron batch means.
  const auto truth = train_mlp(tmp.path, trainscope::kParameterQuantities, 4, step);
  RunReader reader(tmp.path);
  CreditAssignment credit(reader);
  const uint32_t fc2 = id_of(credit, "fc2"), relu1 = id_of(credit, "relu1");
  auto f = credit.contributions(step, fc2, 5, CreditDirection::Forward);
  ASSERT_TRUE(f.ok) << f.message;
  EXPECT_EQ(f.hop.source, CreditSource::BatchMeans);
  EXPECT_TRUE(f.hop.approximation.empty()) << f.hop.approximation;
  double sum = 0;
  for (double v : f.values) sum += v;
  const double z = truth.z2.mean(0)[5].item<double>();
  EXPECT_NEAR(sum + f.hop.checks[0].bias, z, tol(z));
  auto b = credit.contributions(step, relu1, 2, CreditDirection::Backward);
  ASSERT_TRUE(b.ok) << b.message;
  EXPECT_EQ(b.hop.source, CreditSource::BatchMeans);
  sum = 0;
  for (double v : b.values) sum += v;
  EXPECT_NEAR(sum, truth.a1_grad.mean(0)[2].item<double>(), 1e-7);
  // One sample needs full tensors: the hop says so instead of using the means.
  CreditOptions one;
  one.sample = 1;
  auto s = credit.contributions(step, fc2, 5, CreditDirection::Forward, one);
  EXPECT_FALSE(s.ok);
  EXPECT_NE(s.message.find("sample 1"), std::string::npos) << s.message;
}

TEST(CreditAssignment, CnnConvAndFlattenMatchAutograd) {
  TempDir tmp;
  const int step = 1;
  torch::manual_seed(11);
  Cnn model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  const torch::Tensor x = torch::randn({4, 2, 8, 8});
  const torch::Tensor y = torch::randn({4, 3});
  torch::Tensor p1, z2, a2, p1_grad, z2_grad, a2_grad, w2, b2, wfc;
  {
    trainscope::Recorder rec(model, tmp.path, full_options(trainscope::kAllQuantities));
    for (int s = 0; s < 3; ++s) {
      opt.zero_grad();
      auto loss = torch::mse_loss(model->forward(x), y);
      loss.backward();
      if (s == step) {
        p1 = model->p1.detach().clone();
        z2 = model->z2.detach().clone();
        a2 = model->a2.detach().clone();
        p1_grad = model->p1.grad().clone();
        z2_grad = model->z2.grad().clone();
        a2_grad = model->a2.grad().clone();
        w2 = model->conv2->weight.detach().clone();
        b2 = model->conv2->bias.detach().clone();
        wfc = model->fc->weight.detach().clone();
      }
      rec.step(loss);
      opt.step();
    }
  }
  RunReader reader(tmp.path);
  CreditAssignment credit(reader);
  const uint32_t conv2 = id_of(credit, "conv2"), pool1 = id_of(credit, "pool1"), fc = id_of(credit, "fc"),
                 relu2 = id_of(credit, "relu2");
  torch::NoGradGuard no_grad;

  // Forward through conv2: input channel ci's part of output channel co, mean over batch and positions.
  for (uint32_t co = 0; co < 6; ++co) {
    auto f = credit.contributions(step, conv2, co, CreditDirection::Forward);
    ASSERT_TRUE(f.ok) << f.message;
    EXPECT_EQ(f.hop.source_layer, pool1);
    EXPECT_TRUE(f.hop.approximation.empty()) << f.hop.approximation;  // geometry verified, full tensors
    ASSERT_EQ(f.values.size(), 4u);
    double sum = 0;
    for (int64_t ci = 0; ci < 4; ++ci) {
      const auto part = torch::conv2d(p1.slice(1, ci, ci + 1), w2.slice(0, co, co + 1).slice(1, ci, ci + 1));
      const double expected = part.mean().item<double>();
      EXPECT_NEAR(f.values[size_t(ci)], expected, tol(expected)) << "conv2 " << co << " from pool1 " << ci;
      sum += f.values[size_t(ci)];
    }
    const double z = z2.select(1, co).mean().item<double>();
    EXPECT_NEAR(sum + f.hop.checks[0].bias, z, tol(z));
    EXPECT_NEAR(f.hop.checks[0].bias, b2[co].item<double>(), 1e-6);
  }
  // Backward into pool1: output channel co's part of ∂L/∂pool1[ci], via the transposed convolution of its gradient.
  for (uint32_t ci = 0; ci < 4; ++ci) {
    auto b = credit.contributions(step, pool1, ci, CreditDirection::Backward);
    ASSERT_TRUE(b.ok) << b.message;
    EXPECT_EQ(b.hop.weighted_layer, conv2);
    ASSERT_EQ(b.values.size(), 6u);
    double sum = 0;
    for (int64_t co = 0; co < 6; ++co) {
      const auto part =
          torch::conv_transpose2d(z2_grad.slice(1, co, co + 1), w2.slice(0, co, co + 1).slice(1, ci, ci + 1));
      const double expected = part.mean().item<double>();
      EXPECT_NEAR(b.values[size_t(co)], expected, 1e-7 + 1e-4 * std::abs(expected));
      sum += b.values[size_t(co)];
    }
    const double g = p1_grad.select(1, ci).mean().item<double>();
    EXPECT_NEAR(sum, g, 1e-7 + 1e-4 * std::abs(g));
  }
  // fc reads relu2 through Flatten: contributions per relu2 channel (summed over its 2x2 positions).
  for (uint32_t i = 0; i < 3; ++i) {
    auto f = credit.contributions(step, fc, i, CreditDirection::Forward);
    ASSERT_TRUE(f.ok) << f.message;
    EXPECT_EQ(f.hop.source_layer, relu2);
    ASSERT_EQ(f.values.size(), 6u);
    const auto am = a2.mean(0).reshape({6, 4});
    for (int64_t c = 0; c < 6; ++c) {
      const double expected = (wfc[i].reshape({6, 4})[c] * am[c]).sum().item<double>();
      EXPECT_NEAR(f.values[size_t(c)], expected, tol(expected));
    }
    ASSERT_TRUE(f.hop.checks[0].recorded.has_value());
    EXPECT_NEAR(f.hop.checks[0].sum + f.hop.checks[0].bias, *f.hop.checks[0].recorded, 1e-4);
  }
  for (uint32_t c = 0; c < 6; ++c) {
    auto b = credit.contributions(step, relu2, c, CreditDirection::Backward);
    ASSERT_TRUE(b.ok) << b.message;
    double sum = 0;
    for (double v : b.values) sum += v;
    const double g = a2_grad.select(1, c).mean().item<double>();
    EXPECT_NEAR(sum, g, 1e-7 + 1e-4 * std::abs(g));
  }
  // A trace from the output back through fc, relu2, conv2, pool1/relu1 to conv1, which reads the model input.
  CreditOptions o;
  o.top_k = 3;
  auto t = credit.trace(step, fc, 0, CreditDirection::Forward, o);
  ASSERT_GE(t.hops.size(), 2u);
  EXPECT_EQ(t.hops[1].weighted_layer, conv2);
  EXPECT_LE(t.hops[1].neurons.size(), 3u);
  // The image region of conv2 channel 0 at (0,0): conv2 3x3 on pool1 (2x2 pool) on conv1 3x3 "same".
  auto region = credit.input_region(conv2, 0, 0);
  EXPECT_EQ(region.row_first, 0);
  EXPECT_EQ(region.col_first, 0);
  EXPECT_EQ(region.row_last, 6);  // pool rows 0..2 -> conv1 rows 0..5 -> input rows -1..6, clipped at 0
  EXPECT_EQ(region.col_last, 6);
}

// Strides, paddings and pooling windows the shapes alone cannot tell apart (a 3x3 average pool with stride 1 keeps the
// size, like a 1x1 one): the recorder stores them from the modules' options, and the image region a conv position
// sees must be exactly the input pixels autograd says it depends on. No full tensors: the geometry alone decides.
struct StridedCnnImpl : torch::nn::Module {
  StridedCnnImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 3).stride(2)))),
        act1(register_module("act1", torch::nn::Tanh())),
        pool1(register_module("pool1", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(3).stride(1).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)))),
        flatten(register_module("flatten", torch::nn::Flatten())),
        fc(register_module("fc", torch::nn::Linear(4 * 4 * 4, 2))) {}
  torch::Tensor features(torch::Tensor x) { return conv2(pool1(act1(conv1(x)))); }
  torch::Tensor forward(torch::Tensor x) { return fc(flatten(features(x))); }
  torch::nn::Conv2d conv1;
  torch::nn::Tanh act1;
  torch::nn::AvgPool2d pool1;
  torch::nn::Conv2d conv2;
  torch::nn::Flatten flatten;
  torch::nn::Linear fc;
};
TORCH_MODULE(StridedCnn);

TEST(CreditAssignment, InputRegionFollowsTheRecordedStridesAndPaddings) {
  TempDir tmp;
  torch::manual_seed(3);
  StridedCnn model;
  const torch::Tensor x = torch::randn({2, 2, 9, 9});
  {
    trainscope::RecorderOptions o;
    o.interval = 1;
    o.report_to_stderr = false;
    trainscope::Recorder rec(model, tmp.path, o);
    for (int s = 0; s < 2; ++s) {
      model->zero_grad();
      auto loss = model->forward(x).pow(2).mean();
      loss.backward();
      rec.step(loss);
    }
  }
  RunReader reader(tmp.path);
  const auto& m = reader.metadata();
  const auto* conv1 = m.find_layer("conv1");
  const auto* pool1 = m.find_layer("pool1");
  const auto* conv2 = m.find_layer("conv2");
  ASSERT_TRUE(conv1 && pool1 && conv2);
  ASSERT_TRUE(conv1->geometry && pool1->geometry && conv2->geometry);
  EXPECT_EQ(conv1->geometry->stride, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(conv1->geometry->padding, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(conv1->geometry->groups, 1);
  EXPECT_EQ(pool1->geometry->kernel_size, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(pool1->geometry->stride, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(pool1->geometry->padding, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(conv2->geometry->padding, (std::vector<int64_t>{1, 1}));
  EXPECT_FALSE(m.find_layer("act1")->geometry.has_value());

  CreditAssignment credit(reader);
  const uint32_t conv2_id = id_of(credit, "conv2");
  const torch::Tensor input = x.slice(0, 0, 1).clone().requires_grad_(true);
  const torch::Tensor out = model->features(input);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 4, 4, 4}));
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t xx = 0; xx < 4; ++xx) {
      const auto grad = torch::autograd::grad({out[0][1][y][xx]}, {input}, {}, /*retain_graph=*/true)[0];
      const auto support = grad[0].abs().sum(0).gt(0).nonzero();  // [pixels, 2]: (row, col)
      const auto region = credit.input_region(conv2_id, y, xx);
      EXPECT_EQ(region.row_first, support.select(1, 0).min().item<int64_t>()) << y << "," << xx;
      EXPECT_EQ(region.row_last, support.select(1, 0).max().item<int64_t>()) << y << "," << xx;
      EXPECT_EQ(region.col_first, support.select(1, 1).min().item<int64_t>()) << y << "," << xx;
      EXPECT_EQ(region.col_last, support.select(1, 1).max().item<int64_t>()) << y << "," << xx;
      EXPECT_EQ(region.geometry.rfind("exact", 0), 0u) << region.geometry;
    }
}

// A user-defined head like the VAE example's: an [out, in] weight, a bias and a scalar parameter beside them. It is
// traced as its linear map (the scalar is cut out of the recorded weight matrix); when it makes a NaN/Inf itself,
// the hop says that its input did not.
struct ScaledHeadImpl : torch::nn::Module {
  ScaledHeadImpl(int in, int out)
      : weight(register_parameter("weight", torch::randn({out, in}) * 0.3)),
        bias(register_parameter("bias", torch::randn({out}) * 0.1)),
        scale(register_parameter("scale", torch::ones({1}))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor z = torch::linear(x, weight, bias);
    if (unstable) z = -torch::log(1 + torch::exp(-z * 400.0)) / 400.0;  // a soft min(z, 0) whose exp overflows
    return z * scale;
  }
  torch::Tensor weight, bias, scale;
  bool unstable = false;
};
TORCH_MODULE(ScaledHead);

struct HeadNetImpl : torch::nn::Module {
  HeadNetImpl()
      : fc(register_module("fc", torch::nn::Linear(5, 7))),
        act(register_module("act", torch::nn::ReLU())),
        head(register_module("head", ScaledHead(7, 3))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    a = act(fc(x));
    return head(a);
  }
  torch::nn::Linear fc;
  torch::nn::ReLU act;
  ScaledHead head;
  torch::Tensor a;
};
TORCH_MODULE(HeadNet);

TEST(CreditAssignment, UserModuleWithAWeightIsTracedAsItsLinearMap) {
  for (const bool overflow : {false, true}) {
    TempDir tmp;
    torch::manual_seed(5);
    HeadNet model;
    if (overflow) {
      torch::NoGradGuard no_grad;
      model->head->unstable = true;
      model->head->bias[1].fill_(-10.0);  // unit 1's exp overflows: -Inf
    }
    const torch::Tensor x = torch::randn({6, 5});
    torch::Tensor a, w, b, out;
    {
      trainscope::Recorder rec(model, tmp.path, full_options(trainscope::kAllQuantities));
      out = model->forward(x);
      auto loss = out.isfinite().all().item<bool>() ? out.pow(2).mean() : out.sum() * 0;
      loss.backward();
      a = model->a.detach().clone();
      w = model->head->weight.detach().clone();
      b = model->head->bias.detach().clone();
      rec.step(loss);
    }
    RunReader reader(tmp.path);
    CreditAssignment credit(reader);
    const uint32_t head = id_of(credit, "head");
    for (uint32_t i = 0; i < 3; ++i) {
      auto f = credit.contributions(0, head, i, CreditDirection::Forward);
      ASSERT_TRUE(f.ok) << f.message;
      EXPECT_EQ(credit.graph().name(f.hop.source_layer), "act");
      EXPECT_NE(f.hop.approximation.find("head (ScaledHead) is traced as the linear map of its [3, 7] weight"),
                std::string::npos)
          << f.hop.approximation;
      ASSERT_EQ(f.values.size(), 7u);
      for (int64_t j = 0; j < 7; ++j) {
        const double expected = (w[i][j] * a.select(1, j)).mean().item<double>();
        EXPECT_NEAR(f.values[size_t(j)], expected, tol(expected)) << "head " << i << " from act " << j;
      }
      EXPECT_NEAR(f.hop.checks[0].bias, b[i].item<double>(), 1e-6);
      const bool broken = !out.select(1, i).isfinite().all().item<bool>();
      if (overflow && i == 1) {
        EXPECT_TRUE(broken);
      }
      EXPECT_EQ(
          f.hop.approximation.find("the non-finite value is made inside head, not by its input") != std::string::npos,
          broken)
          << f.hop.approximation;
      if (!overflow) {
        EXPECT_EQ(f.hop.approximation.find("differs"), std::string::npos) << f.hop.approximation;
        ASSERT_TRUE(f.hop.checks[0].recorded.has_value());
        EXPECT_NEAR(f.hop.checks[0].sum + f.hop.checks[0].bias, *f.hop.checks[0].recorded, 1e-4);
      }
    }
  }
}

// A failing model: two neurons of fc1 are made to produce huge values; the trace from the exploding output
// neuron must lead back to them.
TEST(CreditAssignment, TraceFromExplodingNeuronFindsInjectedNeurons) {
  TempDir tmp;
  const std::set<uint32_t> injected{3, 11};
  train_mlp(tmp.path, trainscope::kAllQuantities, 2, 1, [&](Mlp& m) {
    torch::NoGradGuard no_grad;
    for (uint32_t n : injected) {
      m->fc1->weight[n].abs_().mul_(1e4);  // large and positive: ReLU lets it through
      m->fc1->bias[n].fill_(1e4);
    }
    m->fc2->weight.abs_();
    m->fc3->weight.abs_();
  });
  RunReader reader(tmp.path);
  CreditAssignment credit(reader);
  const uint32_t fc3 = id_of(credit, "fc3");
  // The exploding neuron: the fc3 unit with the largest recorded |mean|.
  const auto snap = reader.read_snapshot(0);  // before the first update: later steps may overflow
  uint32_t worst = 0;
  float worst_value = 0;
  for (const auto& r : snap.layers)
    if (r.layer_id == fc3 && r.quantity == trainscope::format::Quantity::Activation)
      for (uint32_t n = 0; n < r.neuron_count; ++n)
        if (std::abs(r.neuron_row(trainscope::format::Statistic::Mean)[n]) > worst_value) {
          worst_value = std::abs(r.neuron_row(trainscope::format::Statistic::Mean)[n]);
          worst = n;
        }
  ASSERT_GT(worst_value, 50.f);  // an untouched unit of this model stays near 1
  CreditOptions o;
  o.top_k = 2;
  auto t = credit.trace(0, fc3, worst, CreditDirection::Forward, o);
  ASSERT_GE(t.hops.size(), 2u);
  EXPECT_EQ(credit.graph().name(t.hops[1].source_layer), "relu1");
  std::set<uint32_t> found;
  for (const auto& n : t.hops[1].neurons) found.insert(n.neuron);
  EXPECT_EQ(found, injected);
}

int run(const std::string& cmd, std::string* out) {
  std::array<char, 4096> buf{};
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  out->clear();
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out->append(buf.data(), n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(CreditAssignment, TraceCommand) {
  TempDir tmp;
  train_mlp(tmp.path, trainscope::kAllQuantities, 3, 1);
  const std::string cli = TRAINSCOPE_CLI, run_dir = tmp.path.string();
  std::string out;
  ASSERT_EQ(run(cli + " trace " + run_dir + " --step 1 --layer fc2 --neuron 4 --depth 2 --top 3 --json", &out), 0)
      << out;
  EXPECT_NE(out.find("\"schema\": \"trainscope-trace/1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"direction\": \"forward\""), std::string::npos);
  EXPECT_NE(out.find("\"direction\": \"backward\""), std::string::npos);
  EXPECT_NE(out.find("\"layer\": \"relu1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"source\": \"training_batch\""), std::string::npos);
  EXPECT_NE(out.find("reads the model input"), std::string::npos) << out;
  ASSERT_EQ(run(cli + " trace " + run_dir + " --step 1 --layer relu1 --neuron 0 --direction backward", &out), 0);
  EXPECT_NE(out.find("Backward credit of relu1 neuron 0"), std::string::npos) << out;
  EXPECT_NE(out.find("hop 1: fc2 -> relu1"), std::string::npos) << out;

  struct Bad {
    std::string args, message;
  };
  for (const Bad& b :
       {Bad{"--layer fc2 --neuron 1", "--step: required"}, Bad{"--step 1 --neuron 1", "--layer: required"},
        Bad{"--step 1 --layer fc2", "--neuron: required"},
        Bad{"--step 1 --layer nope --neuron 1", "--layer: no layer named 'nope'"},
        Bad{"--step 1 --layer fc2 --neuron 99", "--neuron: fc2 has 12 neurons"},
        Bad{"--step 1 --layer fc2 --neuron -1", "--neuron: must not be negative"},
        Bad{"--step 1 --layer fc2 --neuron 1 --direction up", "--direction: 'up'"},
        Bad{"--step 1 --layer fc2 --neuron 1 --depth 0", "--depth: must be between"},
        Bad{"--step 1 --layer fc2 --neuron 1 --top x", "--top"},
        Bad{"--step 77 --layer fc2 --neuron 1", "--step: no snapshot at step 77; the nearest snapshot is step 2"}}) {
    EXPECT_EQ(run(cli + " trace " + run_dir + " " + b.args, &out), 2) << b.args << "\n" << out;
    EXPECT_NE(out.find("trainscope trace: " + b.message), std::string::npos) << b.args << "\n" << out;
  }
  EXPECT_EQ(run(cli + " trace " + (tmp.path / "missing").string() + " --step 1 --layer fc2 --neuron 1", &out), 1)
      << out;
}

}  // namespace
