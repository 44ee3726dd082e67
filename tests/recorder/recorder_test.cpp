// Real LibTorch training under the recorder, read back with the format's RunReader and compared with values computed
// directly in the test.
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/recorder.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "loss_spike.h"
#include "recorder_test_support.h"

namespace fs = std::filesystem;
using trainscope::format::Quantity;
using trainscope::format::RunReader;
using trainscope::format::Statistic;

namespace trainscope::test {
namespace {

struct MlpImpl : torch::nn::Module {
  MlpImpl(int in, int hidden, int out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        act1(register_module("act1", torch::nn::ReLU())),
        fc2(register_module("fc2", torch::nn::Linear(hidden, hidden))),
        act2(register_module("act2", torch::nn::Tanh())),
        fc3(register_module("fc3", torch::nn::Linear(hidden, out))) {}
  torch::Tensor forward(torch::Tensor x) { return fc3(act2(fc2(act1(fc1(x))))); }
  torch::nn::Linear fc1;
  torch::nn::ReLU act1;
  torch::nn::Linear fc2;
  torch::nn::Tanh act2;
  torch::nn::Linear fc3;
};
TORCH_MODULE(Mlp);

uint32_t layer_id(RunReader& reader, const std::string& name) {
  const auto* layer = reader.metadata().find_layer(name);
  EXPECT_NE(layer, nullptr) << name;
  return layer ? layer->id : 0;
}

// Per-neuron row of one statistic at one step.
std::vector<float> neuron_row(RunReader& reader, const std::string& layer, Quantity q, Statistic s, int64_t step) {
  auto series = reader.read_neuron_series(layer_id(reader, layer), q, s, step, step);
  EXPECT_TRUE(series.has_value()) << layer << " " << int(q);
  if (!series || series->steps.empty()) return {};
  EXPECT_EQ(series->steps.front(), step);
  return std::vector<float>(series->values.begin(), series->values.begin() + series->neuron_count);
}

void expect_close(const std::vector<float>& recorded, const torch::Tensor& expected, const std::string& what) {
  const torch::Tensor e = expected.detach().to(torch::kFloat).contiguous().reshape({-1});
  ASSERT_EQ(recorded.size(), size_t(e.numel())) << what;
  for (size_t i = 0; i < recorded.size(); ++i)
    EXPECT_NEAR(recorded[i], e[int64_t(i)].item<float>(), 1e-5 + 1e-4 * std::fabs(recorded[i]))
        << what << " [" << i << "]";
}

TEST(Recorder, RecordedStatisticsMatchDirectComputation) {
  torch::manual_seed(1);
  TempDir tmp;
  Mlp model(5, 4, 3);
  torch::optim::SGD opt(model->parameters(), 0.1);
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  options.optimizer = &opt;
  Recorder rec(model, tmp.path() / "run", options);
  const torch::Tensor x = torch::randn({6, 5});
  const torch::Tensor target = torch::randn({6, 3});

  // Step 0, recorded.
  opt.zero_grad();
  torch::Tensor loss = torch::mse_loss(model->forward(x), target);
  loss.backward();
  const StepReport report = rec.step(loss, {{"twice", loss * 2}, {"const", 7.0}});
  EXPECT_TRUE(report.captured);
  EXPECT_TRUE(report.written);
  EXPECT_TRUE(report.finite);

  // The same computation by hand, on copies of the parameters, with the activations' gradients retained.
  auto copy = [](const torch::Tensor& p) { return p.detach().clone().requires_grad_(true); };
  torch::Tensor w1 = copy(model->fc1->weight), b1 = copy(model->fc1->bias), w2 = copy(model->fc2->weight),
                b2 = copy(model->fc2->bias), w3 = copy(model->fc3->weight), b3 = copy(model->fc3->bias);
  torch::Tensor h1 = torch::linear(x, w1, b1);
  h1.retain_grad();
  torch::Tensor r1 = torch::relu(h1);
  r1.retain_grad();
  torch::Tensor h2 = torch::linear(r1, w2, b2);
  h2.retain_grad();
  torch::Tensor r2 = torch::tanh(h2);
  torch::Tensor h3 = torch::linear(r2, w3, b3);
  h3.retain_grad();
  torch::Tensor direct_loss = torch::mse_loss(h3, target);
  direct_loss.backward();
  EXPECT_NEAR(report.loss, direct_loss.item<double>(), 1e-6);
  const torch::Tensor grads =
      torch::cat({w1.grad().flatten(), b1.grad(), w2.grad().flatten(), b2.grad(), w3.grad().flatten(), b3.grad()});
  EXPECT_NEAR(report.grad_norm, grads.norm().item<double>(), 1e-5);
  opt.step();
  rec.close();

  RunReader reader(tmp.path() / "run");
  expect_close(neuron_row(reader, "fc1", Quantity::Activation, Statistic::Mean, 0), h1.mean(0), "fc1 act mean");
  expect_close(neuron_row(reader, "fc1", Quantity::Activation, Statistic::Std, 0), h1.std(0, false), "fc1 act std");
  expect_close(neuron_row(reader, "fc1", Quantity::Activation, Statistic::Min, 0), std::get<0>(h1.min(0)),
               "fc1 act min");
  expect_close(neuron_row(reader, "fc1", Quantity::Activation, Statistic::Norm, 0), h1.norm(2, 0), "fc1 act norm");
  expect_close(neuron_row(reader, "act1", Quantity::Activation, Statistic::Mean, 0), r1.mean(0), "relu act mean");
  expect_close(neuron_row(reader, "act1", Quantity::Activation, Statistic::ZeroFraction, 0),
               r1.eq(0).to(torch::kFloat).mean(0), "relu zero fraction");
  expect_close(neuron_row(reader, "act2", Quantity::Activation, Statistic::Max, 0), std::get<0>(r2.max(0)),
               "tanh act max");
  expect_close(neuron_row(reader, "fc1", Quantity::ActivationGrad, Statistic::Mean, 0), h1.grad().mean(0),
               "fc1 act grad");
  expect_close(neuron_row(reader, "fc2", Quantity::ActivationGrad, Statistic::Mean, 0), h2.grad().mean(0),
               "fc2 act grad");
  expect_close(neuron_row(reader, "fc3", Quantity::ActivationGrad, Statistic::Mean, 0), h3.grad().mean(0),
               "fc3 act grad");
  expect_close(neuron_row(reader, "fc2", Quantity::Weight, Statistic::Mean, 0), w2.mean(1), "fc2 weight mean");
  expect_close(neuron_row(reader, "fc2", Quantity::Weight, Statistic::Norm, 0), w2.norm(2, 1), "fc2 weight norm");
  expect_close(neuron_row(reader, "fc2", Quantity::WeightGrad, Statistic::Mean, 0), w2.grad().mean(1),
               "fc2 weight grad mean");
  expect_close(neuron_row(reader, "fc1", Quantity::Bias, Statistic::Mean, 0), b1, "fc1 bias");
  expect_close(neuron_row(reader, "fc3", Quantity::BiasGrad, Statistic::Mean, 0), b3.grad(), "fc3 bias grad");

  // Layer-level summaries over the whole tensor.
  const auto summaries = reader.read_summaries(layer_id(reader, "fc1"), Quantity::Activation, 0, 0);
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_NEAR(summaries[0].summary.mean, h1.mean().item<double>(), 1e-6);
  EXPECT_NEAR(summaries[0].summary.std, h1.std(false).item<double>(), 1e-5);
  EXPECT_NEAR(summaries[0].summary.norm, h1.norm().item<double>(), 1e-5);
  EXPECT_NEAR(summaries[0].summary.min, h1.min().item<double>(), 1e-6);
  EXPECT_EQ(summaries[0].summary.numel, double(h1.numel()));

  // Scalars of every step.
  std::map<std::string, double> scalars;
  for (const auto& s : reader.read_scalars(0, 0)) scalars[s.name] = s.values.at(0);
  EXPECT_NEAR(scalars.at("loss"), direct_loss.item<double>(), 1e-6);
  EXPECT_NEAR(scalars.at("twice"), 2 * direct_loss.item<double>(), 1e-6);
  EXPECT_EQ(scalars.at("const"), 7.0);
  EXPECT_NEAR(scalars.at("lr"), 0.1, 1e-12);
  EXPECT_NEAR(scalars.at("grad_norm"), grads.norm().item<double>(), 1e-5);
}

// A model with an embedding layer feeding an LSTM, two branches (one a Sequential), a head joining them, and a
// hand-written recurrent cell.
struct BranchNetImpl : torch::nn::Module {
  BranchNetImpl()
      : fc_in(register_module("fc_in", torch::nn::Linear(6, 8))),
        lstm(register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(8, 5)))),
        left(register_module("left", torch::nn::Linear(5, 4))),
        right(register_module("right", torch::nn::Sequential(torch::nn::Linear(5, 4), torch::nn::Tanh()))),
        head(register_module("head", torch::nn::Linear(8, 3))),
        cell(register_module("cell", torch::nn::Linear(3 + 3, 3))) {}
  torch::Tensor forward(torch::Tensor x) {                                 // x: [T, B, 6]
    auto seq = std::get<0>(lstm(fc_in(x)));                                // [T, B, 5]
    auto joined = head(torch::cat({left(seq), right->forward(seq)}, -1));  // [T, B, 3]
    torch::Tensor h = torch::zeros({x.size(1), 3});
    for (int64_t t = 0; t < x.size(0); ++t) h = torch::tanh(cell(torch::cat({joined[t], h}, -1)));
    return h;
  }
  torch::nn::Linear fc_in;
  torch::nn::LSTM lstm;
  torch::nn::Linear left;
  torch::nn::Sequential right;
  torch::nn::Linear head, cell;
};
TORCH_MODULE(BranchNet);

TEST(Recorder, HierarchyAndGraphOfBranchedRecurrentModel) {
  torch::manual_seed(2);
  TempDir tmp;
  BranchNet model;
  torch::optim::Adam opt(model->parameters(), 1e-3);
  Recorder rec(model, tmp.path() / "run");
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    auto loss = model->forward(torch::randn({4, 2, 6})).pow(2).mean();
    loss.backward();
    EXPECT_TRUE(rec.step(loss).finite);
    opt.step();
  }
  rec.close();
  RunReader reader(tmp.path() / "run");
  const auto& meta = reader.metadata();
  std::map<std::string, const format::Layer*> by_name;
  for (size_t i = 0; i < meta.layers.size(); ++i) {
    EXPECT_EQ(meta.layers[i].id, i);
    by_name[meta.layers[i].name] = &meta.layers[i];
  }
  ASSERT_EQ(by_name.size(), 9u);  // root, fc_in, lstm, left, right, right.0, right.1, head, cell
  EXPECT_EQ(by_name.at("")->kind, "BranchNet");
  EXPECT_FALSE(by_name.at("")->parent_id.has_value());
  EXPECT_FALSE(by_name.at("")->is_leaf);
  EXPECT_EQ(by_name.at("lstm")->kind, "LSTM");
  EXPECT_EQ(by_name.at("right")->kind, "Sequential");
  EXPECT_EQ(by_name.at("right.1")->kind, "Tanh");
  EXPECT_EQ(by_name.at("right.0")->parent_id, by_name.at("right")->id);
  EXPECT_TRUE(by_name.at("right.0")->is_leaf);
  EXPECT_EQ(by_name.at("fc_in")->neuron_count, 8u);
  EXPECT_EQ(by_name.at("lstm")->neuron_count, 5u);
  EXPECT_EQ(by_name.at("head")->output_shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(by_name.at("fc_in")->parameters.size(), 2u);
  EXPECT_EQ(by_name.at("fc_in")->parameters[0].name, "weight");
  EXPECT_EQ(by_name.at("fc_in")->parameters[0].shape, (std::vector<int64_t>{8, 6}));

  std::set<std::tuple<std::string, std::string, bool>> edges;
  for (const auto& e : meta.edges)
    edges.emplace(meta.layers[e.from_layer].name, meta.layers[e.to_layer].name, e.recurrent);
  const std::set<std::tuple<std::string, std::string, bool>> expected = {
      {"fc_in", "lstm", false},   {"lstm", "lstm", true},        {"lstm", "left", false},
      {"lstm", "right.0", false}, {"right.0", "right.1", false}, {"left", "head", false},
      {"right.1", "head", false}, {"head", "cell", false},       {"cell", "cell", true}};
  EXPECT_EQ(edges, expected);

  // The LSTM's weights: its gate units are the neurons (4 * hidden), both weight matrices side by side.
  auto w = reader.read_neuron_series(by_name.at("lstm")->id, Quantity::Weight, Statistic::Mean);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->neuron_count, 20u);
  auto act = reader.read_neuron_series(by_name.at("cell")->id, Quantity::Activation, Statistic::Mean);
  ASSERT_TRUE(act.has_value());
  EXPECT_EQ(act->neuron_count, 3u);
}

// A user module with several parameters of one kind: two weight matrices with the same rows (a neuron's weights are
// its row of both, side by side, as an LSTM's) and a bias beside a one-element scale (unequal rows: one neuron).
struct TwoPathImpl : torch::nn::Module {
  TwoPathImpl()
      : weight_a(register_parameter("weight_a", torch::randn({3, 4}))),
        weight_b(register_parameter("weight_b", torch::randn({3, 2}))),
        bias(register_parameter("bias", torch::randn({3}))),
        bias_scale(register_parameter("bias_scale", torch::full({1}, 0.7))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::linear(x, weight_a, bias * bias_scale) + torch::linear(x.slice(1, 0, 2), weight_b);
  }
  torch::Tensor weight_a, weight_b, bias, bias_scale;
};
TORCH_MODULE(TwoPath);

TEST(Recorder, ParametersOfOneKindAreOneMatrix) {
  torch::manual_seed(4);
  TempDir tmp;
  TwoPath model;
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  Recorder rec(model, tmp.path() / "run", options);
  auto loss = model->forward(torch::randn({5, 4})).pow(2).sum();
  loss.backward();
  EXPECT_TRUE(rec.step(loss).captured);
  rec.close();

  RunReader reader(tmp.path() / "run");
  const torch::Tensor weights = torch::cat({model->weight_a, model->weight_b}, 1).detach();  // [3, 6]
  const torch::Tensor weight_grads = torch::cat({model->weight_a.grad(), model->weight_b.grad()}, 1);
  const torch::Tensor biases = torch::cat({model->bias, model->bias_scale}).detach().reshape({1, -1});  // [1, 4]
  const torch::Tensor bias_grads = torch::cat({model->bias.grad(), model->bias_scale.grad()}).reshape({1, -1});
  for (const auto& [q, m] : std::vector<std::pair<Quantity, torch::Tensor>>{{Quantity::Weight, weights},
                                                                            {Quantity::WeightGrad, weight_grads},
                                                                            {Quantity::Bias, biases},
                                                                            {Quantity::BiasGrad, bias_grads}}) {
    const std::string what = "quantity " + std::to_string(int(q));
    expect_close(neuron_row(reader, "", q, Statistic::Mean, 0), m.mean(1), what + " mean");
    expect_close(neuron_row(reader, "", q, Statistic::Std, 0), m.std(1, /*unbiased=*/false), what + " std");
    expect_close(neuron_row(reader, "", q, Statistic::Min, 0), std::get<0>(m.min(1)), what + " min");
    expect_close(neuron_row(reader, "", q, Statistic::Max, 0), std::get<0>(m.max(1)), what + " max");
    expect_close(neuron_row(reader, "", q, Statistic::Norm, 0), m.norm(2, 1), what + " norm");
  }
}

TEST(Recorder, NonFiniteValuesAppearExactlyWhereInjected) {
  torch::manual_seed(3);
  TempDir tmp;
  Mlp model(5, 4, 3);
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  Recorder rec(model, tmp.path() / "run", options);
  const torch::Tensor x = torch::randn({8, 5});
  std::vector<StepReport> reports;
  for (int s = 0; s < 4; ++s) {
    {
      torch::NoGradGuard guard;
      if (s == 1) model->fc2->weight[2].fill_(std::nan(""));  // neuron 2 of fc2 at step 1
      if (s == 2) model->fc2->weight[2].fill_(0.5);
      if (s == 3) model->fc1->bias[1].fill_(INFINITY);  // neuron 1 of fc1's bias at step 3
    }
    model->zero_grad();
    auto loss = model->forward(x).pow(2).mean();
    loss.backward();
    reports.push_back(rec.step(loss));
  }
  rec.close();
  EXPECT_TRUE(reports[0].finite);
  EXPECT_TRUE(reports[2].finite);
  ASSERT_FALSE(reports[1].finite);
  EXPECT_EQ(reports[1].anomaly, AnomalyKind::NonFiniteLoss);
  ASSERT_EQ(reports[1].origins.size(), 1u);
  EXPECT_EQ(reports[1].origins[0].layer, "fc2");
  EXPECT_EQ(reports[1].origins[0].quantity, Quantity::Weight);
  ASSERT_FALSE(reports[3].finite);
  ASSERT_GE(reports[3].origins.size(), 1u);
  EXPECT_EQ(reports[3].origins[0].layer, "fc1");

  RunReader reader(tmp.path() / "run");
  auto nan_of = [&](const std::string& layer, Quantity q, int64_t step) {
    return neuron_row(reader, layer, q, Statistic::NanCount, step);
  };
  // Step 1: NaN in fc2's weight row 2 only; fc1 and act1 clean; fc2's output neuron 2 NaN for every sample.
  EXPECT_EQ(nan_of("fc2", Quantity::Weight, 1), (std::vector<float>{0, 0, 4, 0}));
  EXPECT_EQ(nan_of("fc1", Quantity::Activation, 1), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(nan_of("act1", Quantity::Activation, 1), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(nan_of("fc2", Quantity::Activation, 1), (std::vector<float>{0, 0, 8, 0}));
  EXPECT_EQ(nan_of("act2", Quantity::Activation, 1), (std::vector<float>{0, 0, 8, 0}));
  EXPECT_EQ(nan_of("fc3", Quantity::Activation, 1), (std::vector<float>{8, 8, 8}));
  for (int64_t step : {0, 2})
    for (const char* layer : {"fc1", "fc2", "fc3"})
      for (Quantity q : format::all_quantities())
        for (float v : nan_of(layer, q, step)) EXPECT_EQ(v, 0.f) << layer << " step " << step;
  // Step 3: +Inf in fc1's bias neuron 1, and so in fc1's output neuron 1 for all 8 samples.
  EXPECT_EQ(neuron_row(reader, "fc1", Quantity::Bias, Statistic::InfCount, 3), (std::vector<float>{0, 1, 0, 0}));
  EXPECT_EQ(neuron_row(reader, "fc1", Quantity::Activation, Statistic::InfCount, 3), (std::vector<float>{0, 8, 0, 0}));
  const auto summary = reader.read_summaries(layer_id(reader, "fc1"), Quantity::Activation, 3, 3);
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_EQ(summary[0].summary.inf_count, 8);
  EXPECT_EQ(summary[0].summary.nan_count, 0);
}

TEST(Recorder, NonFiniteActivationIsLocatedInForwardOrder) {
  torch::manual_seed(4);
  TempDir tmp;
  Mlp model(5, 4, 3);
  RecorderOptions options;
  options.interval = 1;
  Recorder rec(model, tmp.path() / "run", options);
  torch::Tensor x = torch::randn({8, 5});
  x[3][2] = std::nan("");  // one sample's feature: every fc1 neuron sees it
  auto loss = model->forward(x).pow(2).mean();
  loss.backward();
  const StepReport report = rec.step(loss);
  EXPECT_FALSE(report.finite);
  ASSERT_EQ(report.origins.size(), 1u);
  EXPECT_EQ(report.origins[0].layer, "fc1");
  EXPECT_EQ(report.origins[0].quantity, Quantity::Activation);
}

// The observer is switched off during backward passes and on again after each: a second forward after a backward
// pass (a GAN's generator step, a gradient penalty) is recorded too, and the activation gradients of both passes.
TEST(Recorder, ForwardAfterABackwardPassInTheSameStepIsRecorded) {
  torch::manual_seed(6);
  TempDir tmp;
  Mlp model(5, 4, 3);
  const torch::Tensor a = torch::randn({6, 5}), b = torch::randn({10, 5}) + 1;
  // fc2's output and its gradient for each batch, computed on copies of the parameters before recording (no
  // optimizer: they do not change).
  std::vector<torch::Tensor> fc2_out, fc2_grad;
  for (const torch::Tensor& x : {a, b}) {
    const torch::Tensor h1 = torch::relu(torch::linear(x, model->fc1->weight.detach(), model->fc1->bias.detach()));
    torch::Tensor h2 = torch::linear(h1, model->fc2->weight.detach(), model->fc2->bias.detach()).requires_grad_(true);
    torch::linear(torch::tanh(h2), model->fc3->weight.detach(), model->fc3->bias.detach()).pow(2).mean().backward();
    fc2_out.push_back(h2.detach());
    fc2_grad.push_back(h2.grad());
  }
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  Recorder rec(model, tmp.path() / "run", options);
  for (int s = 0; s < 2; ++s) {
    model->zero_grad();
    torch::Tensor loss;
    for (const torch::Tensor& x : {a, b}) {  // two forward/backward passes before step()
      loss = model->forward(x).pow(2).mean();
      loss.backward();
    }
    EXPECT_TRUE(rec.step(loss).captured);
  }
  rec.close();
  RunReader reader(tmp.path() / "run");
  const torch::Tensor both = torch::cat(fc2_out), both_grad = torch::cat(fc2_grad);
  for (int64_t step : {0, 1}) {
    expect_close(neuron_row(reader, "fc2", Quantity::Activation, Statistic::Mean, step), both.mean(0),
                 "fc2 activation mean over both passes");
    expect_close(neuron_row(reader, "fc2", Quantity::Activation, Statistic::Max, step), std::get<0>(both.max(0)),
                 "fc2 activation max over both passes");
    const auto summary = reader.read_summaries(layer_id(reader, "fc2"), Quantity::Activation, step, step);
    ASSERT_EQ(summary.size(), 1u);
    EXPECT_EQ(summary[0].summary.numel, double(both.numel()));
    expect_close(neuron_row(reader, "fc2", Quantity::ActivationGrad, Statistic::Mean, step), both_grad.mean(0),
                 "fc2 activation gradient mean over both backward passes");
  }
}

// An in-place activation (ReLU(inplace)) rewrites the Linear layer's output after the layer ran: the Linear's
// activation gradient is still the gradient with respect to its own output, and the ReLU's with respect to its.
TEST(Recorder, ActivationGradientsAreOfEachLayersOwnOutputWhenTheNextOneWorksInPlace) {
  struct InPlaceImpl : torch::nn::Module {
    InPlaceImpl()
        : fc1(register_module("fc1", torch::nn::Linear(5, 4))),
          act1(register_module("act1", torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)))),
          fc2(register_module("fc2", torch::nn::Linear(4, 3))) {}
    torch::Tensor forward(torch::Tensor x) { return fc2(act1(fc1(x))); }
    torch::nn::Linear fc1;
    torch::nn::ReLU act1;
    torch::nn::Linear fc2;
  };
  torch::manual_seed(3);
  TempDir tmp;
  auto model = std::make_shared<InPlaceImpl>();
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  Recorder rec(model, tmp.path() / "run", options);
  const torch::Tensor x = torch::randn({7, 5});
  const torch::Tensor target = torch::randn({7, 3});
  torch::mse_loss(model->forward(x), target).backward();
  EXPECT_TRUE(rec.step(torch::tensor(0.0)).captured);
  rec.close();

  auto copy = [](const torch::Tensor& p) { return p.detach().clone().requires_grad_(true); };
  torch::Tensor h1 = torch::linear(x, copy(model->fc1->weight), copy(model->fc1->bias));
  h1.retain_grad();
  torch::Tensor r1 = torch::relu(h1);
  r1.retain_grad();
  torch::mse_loss(torch::linear(r1, copy(model->fc2->weight), copy(model->fc2->bias)), target).backward();
  ASSERT_FALSE(torch::allclose(h1.grad(), r1.grad())) << "the test needs a ReLU that blocks some gradient";

  RunReader reader(tmp.path() / "run");
  expect_close(neuron_row(reader, "fc1", Quantity::Activation, Statistic::Mean, 0), h1.mean(0), "fc1 act mean");
  expect_close(neuron_row(reader, "act1", Quantity::Activation, Statistic::Mean, 0), r1.mean(0), "relu act mean");
  expect_close(neuron_row(reader, "fc1", Quantity::ActivationGrad, Statistic::Mean, 0), h1.grad().mean(0),
               "fc1 act grad");
  expect_close(neuron_row(reader, "act1", Quantity::ActivationGrad, Statistic::Mean, 0), r1.grad().mean(0),
               "relu act grad");
}

// The observer's own work inside the user's ops runs with RecordFunction switched off (DisableRecordFunctionGuard):
// it must be on again after every observed op, for the user's code and the next op, also when an op throws.
TEST(Recorder, RecordFunctionIsOnAgainAfterEveryObservedOp) {
  torch::manual_seed(8);
  TempDir tmp;
  Mlp model(5, 4, 3);
  RecorderOptions options;
  options.interval = 1;
  Recorder rec(model, tmp.path() / "run", options);
  torch::optim::SGD opt(model->parameters(), 0.01);
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    ASSERT_TRUE(at::isRecordFunctionEnabled());
    const torch::Tensor out = model->forward(torch::randn({6, 5}));
    EXPECT_TRUE(at::isRecordFunctionEnabled()) << "after the forward of step " << s;
    EXPECT_THROW(torch::mm(out, torch::randn({7, 2})), c10::Error);  // a shape error inside an observed op
    EXPECT_TRUE(at::isRecordFunctionEnabled()) << "after an op that threw, step " << s;
    const torch::Tensor loss = out.pow(2).mean();
    loss.backward();
    EXPECT_TRUE(at::isRecordFunctionEnabled()) << "after the backward of step " << s;
    EXPECT_TRUE(rec.step(loss).captured);
    opt.step();
    EXPECT_TRUE(at::isRecordFunctionEnabled()) << "after the optimizer of step " << s;
  }
  rec.close();
  RunReader reader(tmp.path() / "run");
  // The activations of the observed ops are all there.
  for (const char* layer : {"fc1", "act1", "fc2", "act2", "fc3"})
    EXPECT_EQ(neuron_row(reader, layer, Quantity::Activation, Statistic::Mean, 2).size(),
              size_t(std::string(layer) == "fc3" ? 3 : 4))
        << layer;
}

// Counts the ops RecordFunction runs on this thread while `on`, and those not nested in another op.
namespace op_count {
thread_local bool on = false;
thread_local int depth = 0;
thread_local int64_t all = 0, top = 0;
std::unique_ptr<at::ObserverContext> start(const at::RecordFunction& fn) {
  if (on && fn.scope() == at::RecordScope::FUNCTION) {
    ++all;
    if (depth == 0) ++top;
  }
  ++depth;
  return nullptr;
}
void end(const at::RecordFunction&, at::ObserverContext*) {
  --depth;
}
}  // namespace op_count

// The observer boxes the inputs and outputs of the ops it is called for: only top-level ops (aten::linear, not the
// t and addmm inside it; a loss, not its dozen parts), and of the backward pass only its start. An op that throws
// must not leave it off for the layers after it.
TEST(Recorder, ObserverLooksAtTopLevelOpsOnly) {
  torch::manual_seed(10);
  TempDir tmp;
  const at::CallbackHandle counter =
      at::addGlobalCallback(at::RecordFunctionCallback(&op_count::start, &op_count::end));
  Mlp model(5, 4, 3);
  torch::optim::SGD opt(model->parameters(), 0.01);
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  Recorder rec(model, tmp.path() / "run", options);
  const torch::Tensor target = torch::rand({6, 3});
  constexpr int kSteps = 4;
  int64_t all = 0, top = 0, observed = 0;
  for (int s = 0; s < kSteps; ++s) {
    const int64_t before = rec.stats().observed_ops;
    op_count::all = op_count::top = 0;
    op_count::on = true;
    const torch::Tensor x = torch::randn({6, 5});
    opt.zero_grad();
    EXPECT_THROW(torch::mm(x, x), c10::Error);  // a shape error inside an op, before the layers
    const torch::Tensor loss = torch::binary_cross_entropy_with_logits(model->forward(x), target);
    op_count::on = false;
    loss.backward();
    ASSERT_TRUE(rec.step(loss).captured);
    opt.step();
    all = op_count::all;
    top = op_count::top;
    observed = rec.stats().observed_ops - before;
  }
  at::removeCallback(counter);
  rec.close();
  ASSERT_GT(all, top + 5) << "the forward runs nested ops";
  // The last step was lazily armed: the full callback came on inside its first op in grad mode (randn), so it saw
  // the two ops randn runs as top-level ones; then all other top-level ops; in the backward pass, ones_like and
  // the first node.
  EXPECT_GE(rec.stats().lazily_armed_steps, 1);
  EXPECT_GE(observed, top - 1);
  EXPECT_LE(observed, top + 4) << "of " << all << " ops in the forward, " << top << " at the top level";
  RunReader reader(tmp.path() / "run");
  for (const char* layer : {"fc1", "act1", "fc2", "act2", "fc3"})
    EXPECT_EQ(neuron_row(reader, layer, Quantity::Activation, Statistic::Mean, kSteps - 1).size(),
              size_t(std::string(layer) == "fc3" ? 3 : 4))
        << layer;
}

// Once the loop's first op in grad mode is known to be an unconnected one (zero_grad()'s), an arming waits for it and
// the optimizer's step runs unobserved; a loop that then changes (no zero_grad() any more: the first op is fc1's
// linear) goes back to observing from the start of every step. No activation of any step may go missing.
TEST(Recorder, ObserverSkipsTheOptimizerStepWithoutLosingActivations) {
  torch::manual_seed(9);
  TempDir tmp;
  Mlp model(5, 4, 3);
  torch::optim::Adam opt(model->parameters(), 0.01);
  RecorderOptions options;
  options.interval = 1;
  options.flight_recorder = false;
  Recorder rec(model, tmp.path() / "run", options);
  constexpr int kSteps = 12, kWithZeroGrad = 8;
  std::vector<torch::Tensor> inputs;  // made before: in the loop, randn would be the first op in grad mode
  for (int s = 0; s < kSteps; ++s) inputs.push_back(torch::randn({6, 5}));
  std::vector<std::vector<torch::Tensor>> expected;  // per step: fc1, act1, fc3 outputs
  int64_t waited_with_zero_grad = 0;
  for (int s = 0; s < kSteps; ++s) {
    if (s < kWithZeroGrad) {
      opt.zero_grad();
    } else {
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();  // no op at all
    }
    const torch::Tensor& x = inputs[size_t(s)];
    {
      torch::NoGradGuard no_grad;  // ops without autograd: neither callback takes them
      const torch::Tensor h1 = model->fc1(x), r1 = model->act1(h1);
      expected.push_back({h1, r1, model->fc3(model->act2(model->fc2(r1)))});
    }
    const torch::Tensor loss = model->forward(x).pow(2).mean();
    loss.backward();
    EXPECT_TRUE(rec.step(loss).captured);
    opt.step();
    if (s == kWithZeroGrad - 1) waited_with_zero_grad = rec.stats().lazily_armed_steps;
  }
  // Step 0 starts with fc1 (no gradients to zero yet); steps 1 and 2 show detach_ twice; 3..7 wait for it.
  EXPECT_EQ(waited_with_zero_grad, kWithZeroGrad - 3);
  // Step 8 waited and met fc1's linear first (seen through the addmm inside it); every later step was observed from
  // its start.
  EXPECT_EQ(rec.stats().lazily_armed_steps, waited_with_zero_grad + 1);
  rec.close();
  RunReader reader(tmp.path() / "run");
  for (int64_t s = 0; s < kSteps; ++s) {
    const std::string at = " at step " + std::to_string(s);
    expect_close(neuron_row(reader, "fc1", Quantity::Activation, Statistic::Mean, s), expected[size_t(s)][0].mean(0),
                 "fc1" + at);
    expect_close(neuron_row(reader, "act1", Quantity::Activation, Statistic::Mean, s), expected[size_t(s)][1].mean(0),
                 "act1" + at);
    expect_close(neuron_row(reader, "fc3", Quantity::Activation, Statistic::Max, s),
                 std::get<0>(expected[size_t(s)][2].max(0)), "fc3" + at);
  }
}

TEST(LossSpikeDetector, FiresOnSpikesOnlyAfterWarmup) {
  detail::LossSpikeDetector d(10, 32, 8);
  for (int i = 0; i < 7; ++i) EXPECT_FALSE(d.observe(i == 3 ? 1e6 : 1.0 - 0.01 * i));
  for (int i = 7; i < 40; ++i) EXPECT_FALSE(d.observe(1.0 - 0.01 * i + 0.003 * (i % 3))) << i;
  EXPECT_TRUE(d.observe(5.0));
  EXPECT_FALSE(d.observe(0.6));
  EXPECT_FALSE(d.observe(std::nan("")));
}

// Trains an MLP; optionally injects a NaN input at `bad_step` (optimizer skipped there so training recovers).
struct Trained {
  std::vector<StepReport> reports;
  RecorderStats max_stats;
};
Trained train_mlp(const fs::path& dir, RecorderOptions options, int steps, int bad_step,
                  const std::function<void(int)>& after_step = {}) {
  torch::manual_seed(5);
  Mlp model(10, 16, 4);
  torch::optim::SGD opt(model->parameters(), 0.05);
  Recorder rec(model, dir, options);
  Trained out;
  const torch::Tensor x = torch::randn({32, 10});
  const torch::Tensor y = torch::randn({32, 4});
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    torch::Tensor input = x;
    if (s == bad_step) {
      input = x.clone();
      input[0][0] = std::nan("");
    }
    auto loss = torch::mse_loss(model->forward(input), y);
    loss.backward();
    out.reports.push_back(rec.step(loss));
    if (out.reports.back().finite) opt.step();
    const auto st = rec.stats();
    out.max_stats.ring_bytes = std::max(out.max_stats.ring_bytes, st.ring_bytes);
    out.max_stats.ring_snapshots = std::max(out.max_stats.ring_snapshots, st.ring_snapshots);
    if (after_step) after_step(s);
  }
  return out;
}

TEST(FlightRecorder, DenseAroundAnomalySparseElsewhereAndOnDiskAtOnce) {
  TempDir tmp;
  RecorderOptions options;
  options.interval = 10;
  options.ring_interval = 1;
  options.ring_steps = 8;
  options.dense_steps = 5;
  options.writer.flush_interval = std::chrono::milliseconds(600000);  // only the anomaly's flush counts
  bool seen_on_disk = false;
  const fs::path dir = tmp.path() / "run";
  auto trained = train_mlp(dir, options, 70, 37, [&](int s) {
    if (s != 38) return;
    // The recorder is still running: the ring and the first dense steps must already be readable.
    for (int i = 0; i < 50 && !seen_on_disk; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      try {
        RunReader reader(dir);
        const auto steps = reader.snapshot_steps();
        seen_on_disk = std::count(steps.begin(), steps.end(), 28) && std::count(steps.begin(), steps.end(), 37);
      } catch (const std::exception&) {
      }
    }
  });
  EXPECT_TRUE(seen_on_disk);
  EXPECT_TRUE(trained.reports[37].anomaly_triggered);
  EXPECT_EQ(trained.reports[37].anomaly, AnomalyKind::NonFiniteLoss);
  EXPECT_TRUE(trained.reports[38].finite);
  EXPECT_LE(trained.max_stats.ring_snapshots, 8u);

  RunReader reader(dir);
  std::vector<int64_t> expected = {0, 10, 20};
  for (int64_t s = 28; s <= 42; ++s) expected.push_back(s);  // ring (28..36) + anomaly + 5 dense steps
  for (int64_t s : {50, 60}) expected.push_back(s);
  EXPECT_EQ(reader.snapshot_steps(), expected);
  // Scalars of every step regardless.
  const auto scalars = reader.read_scalars();
  ASSERT_FALSE(scalars.empty());
  EXPECT_EQ(scalars.front().steps.size(), 70u);
}

// Steps' scalars reach the writer in batches (one wake-up of its thread per batch); flush() hands over whatever
// waits, so a reader opened right after sees every step, not only those up to the last per-neuron snapshot.
TEST(Recorder, FlushPutsEveryStepsScalarsOnDisk) {
  TempDir tmp;
  RecorderOptions options;
  options.interval = 10;
  options.writer.flush_interval = std::chrono::milliseconds(600000);  // only the explicit flush counts
  torch::manual_seed(5);
  Mlp model(10, 16, 4);
  const fs::path dir = tmp.path() / "run";
  Recorder rec(model, dir, options);
  const torch::Tensor x = torch::randn({32, 10}), y = torch::randn({32, 4});
  for (int s = 0; s < 25; ++s) {
    model->zero_grad();
    auto loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    rec.step(loss, {{"half", loss / 2}});
  }
  rec.flush();
  RunReader reader(dir);  // while the recorder still runs
  const auto scalars = reader.read_scalars();
  size_t checked = 0;
  for (const auto& series : scalars) {
    if (series.name != "loss" && series.name != "half") continue;
    ++checked;
    ASSERT_EQ(series.steps.size(), 25u) << series.name;
    EXPECT_EQ(series.steps.back(), 24) << series.name;
  }
  EXPECT_EQ(checked, 2u);
}

// The metadata (hierarchy, graph, output shapes) is written again only when it changes: once the graph is known,
// further captured steps add no metadata chunk; a new output shape adds one.
TEST(Recorder, MetadataIsRewrittenOnlyWhenItChanges) {
  constexpr uint16_t kMetadataChunk = 1;  // chunk type 1 in format/FORMAT.md
  TempDir tmp;
  RecorderOptions options;
  options.interval = 1;
  torch::manual_seed(6);
  Mlp model(10, 16, 4);
  const fs::path dir = tmp.path() / "run";
  auto metadata_chunks = [&] {
    RunReader reader(dir);
    size_t n = 0;
    for (const auto& c : reader.chunks()) n += c.type == kMetadataChunk ? 1 : 0;
    return n;
  };
  Recorder rec(model, dir, options);
  // Sequences of `length` positions: Linear layers act on the last dimension, so the output shape (batch dimension
  // dropped) is [length, width].
  auto train = [&](int steps, int64_t length) {
    const torch::Tensor x = torch::randn({8, length, 10}), y = torch::randn({8, length, 4});
    for (int s = 0; s < steps; ++s) {
      model->zero_grad();
      auto loss = torch::mse_loss(model->forward(x), y);
      loss.backward();
      EXPECT_TRUE(rec.step(loss).captured);
    }
  };
  train(3, 2);
  rec.flush();
  const size_t known = metadata_chunks();
  EXPECT_GE(known, 1u);
  train(20, 2);  // the same graph and shapes, every step captured
  rec.flush();
  EXPECT_EQ(metadata_chunks(), known);
  train(2, 3);
  rec.flush();
  EXPECT_EQ(metadata_chunks(), known + 1);
  RunReader reader(dir);
  const auto* fc2 = reader.metadata().find_layer("fc2");
  ASSERT_NE(fc2, nullptr);
  EXPECT_EQ(fc2->output_shape, (std::vector<int64_t>{3, 16}));
}

TEST(FlightRecorder, MemoryIsBoundedInBytes) {
  TempDir tmp;
  RecorderOptions options;
  options.interval = 1000;
  options.ring_interval = 1;
  options.ring_steps = 1;
  const size_t one = train_mlp(tmp.path() / "one", options, 5, -1).max_stats.ring_bytes;  // one snapshot
  ASSERT_GT(one, 1000u);
  options.ring_steps = 1000;
  options.ring_bytes = one * 5 / 2;
  const auto trained = train_mlp(tmp.path() / "run", options, 40, -1);
  EXPECT_LE(trained.max_stats.ring_bytes, options.ring_bytes);
  EXPECT_EQ(trained.max_stats.ring_snapshots, 2u);
}

TEST(RecordingTrouble, UnwritableDirectoryNeverStopsTraining) {
  TempDir tmp;
  std::ofstream(tmp.path() / "blocker") << "a file where a directory should be";
  testing::internal::CaptureStderr();
  const auto trained = train_mlp(tmp.path() / "blocker" / "run", {}, 30, -1);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(trained.reports.size(), 30u);
  for (const auto& r : trained.reports) {
    EXPECT_FALSE(r.recording_ok);
    EXPECT_TRUE(r.finite);
  }
  EXPECT_LT(trained.reports.back().loss, trained.reports.front().loss);  // it did train
  EXPECT_NE(err.find("blocker"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;  // reported once
}

// Child process: a full disk, simulated by a file-size limit, while recording full tensors every step.
int child_full_disk(const fs::path& dir) {
  std::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead of killing us
  rlimit limit{256 * 1024, 256 * 1024};
  setrlimit(RLIMIT_FSIZE, &limit);
  RecorderOptions options;
  options.interval = 1;
  options.full_tensor_interval = 1;
  options.full_tensor_quantities = kAllQuantities;
  options.writer.flush_interval = std::chrono::milliseconds(1);
  options.writer.segment_bytes = size_t(64) << 20;
  const auto trained =
      train_mlp(dir, options, 400, -1, [](int) { std::this_thread::sleep_for(std::chrono::milliseconds(1)); });
  if (trained.reports.size() != 400) return 2;
  if (trained.reports.back().recording_ok) return 3;  // the disk never filled up: the test is broken
  if (!(trained.reports.back().loss < trained.reports.front().loss)) return 4;
  return 0;
}

TEST(RecordingTrouble, FullDiskNeverStopsTrainingAndLeavesReadableRecording) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "run";
  const int rc = run_self({"--child-full-disk", dir.string()});
  ASSERT_EQ(rc, 0);
  RunReader reader(dir);
  EXPECT_GT(reader.snapshot_steps().size(), 2u);
  EXPECT_EQ(reader.snapshot_steps().front(), 0);
  EXPECT_FALSE(reader.read_scalars().empty());
}

}  // namespace

int child_main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--child-full-disk") return child_full_disk(argv[2]);
  return -1;
}

}  // namespace trainscope::test
