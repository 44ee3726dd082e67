#include "synthetic_runs.h"

#include <trainscope/format/run_writer.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>

namespace trainscope::testing {
namespace {

using format::Quantity;

// A chain: root > fc1 > act1 > fc2 > act2 > fc3, as named_modules() of a Sequential-like model gives it.
format::RunMetadata chain_metadata(uint32_t neurons) {
  format::RunMetadata m;
  m.header.model_name = "SyntheticMLP";
  m.layers.push_back({0, "", std::nullopt, "SyntheticMLP", 0, {}, {}, false});
  const char* names[] = {"fc1", "act1", "fc2", "act2", "fc3"};
  const char* kinds[] = {"Linear", "ReLU", "Linear", "ReLU", "Linear"};
  for (uint32_t i = 0; i < 5; ++i) {
    format::Layer l{i + 1, names[i], 0u, kinds[i], neurons, {neurons}, {}, true};
    if (i % 2 == 0) l.parameters = {{"weight", {neurons, neurons}}, {"bias", {neurons}}};
    m.layers.push_back(l);
  }
  for (uint32_t i = 1; i < 5; ++i) m.edges.push_back({i, i + 1, false});
  return m;
}

format::TensorSummary summary(double scale, double numel, std::mt19937& rng) {
  std::normal_distribution<double> noise(1.0, 0.03);
  format::TensorSummary s;
  s.mean = 0.1 * scale * noise(rng);
  s.std = scale * noise(rng);
  s.max = 3 * s.std;
  s.min = -3 * s.std;
  s.numel = numel;
  s.norm = std::sqrt(numel) * s.std;
  return s;
}

}  // namespace

std::vector<std::string> synthetic_run_names() {
  return {"healthy", "nan_in_fc2", "exploding_fc1", "dead_act1"};
}

void write_synthetic_run(const std::string& name, const std::filesystem::path& dir) {
  const uint32_t neurons = 16;
  const format::RunMetadata m = chain_metadata(neurons);
  std::mt19937 rng(42);
  std::normal_distribution<double> noise(0.0, 1.0);
  const int steps = 400;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  format::WriterOptions options;
  format::RunWriter writer(dir, m, options);
  for (int step = 0; step < steps; ++step) {
    format::Snapshot snap;
    snap.step = step;
    snap.wall_time = 0.01 * step;
    double loss = 0.5 + 2.0 * std::exp(-step / 150.0) + 0.01 * noise(rng);
    double fc1_grad_scale = 1.0;
    if (name == "nan_in_fc2" && step >= 120) loss = nan;
    if (name == "exploding_fc1" && step >= 200) {
      fc1_grad_scale = std::pow(1.5, step - 199);
      if (step >= 230) loss = 1.5 * std::pow(1.2, step - 229) + loss;
    }
    if (name == "dead_act1") loss = 1.5 + 0.01 * noise(rng);
    snap.scalars = {{"loss", loss}, {"lr", 0.01}};
    for (uint32_t id = 1; id <= 5; ++id) {
      const bool has_weights = id % 2 == 1;
      for (Quantity q : {Quantity::Activation, Quantity::ActivationGrad, Quantity::Weight, Quantity::WeightGrad}) {
        if (!has_weights && (q == Quantity::Weight || q == Quantity::WeightGrad)) continue;
        const double base = q == Quantity::Activation ? 1.0 : q == Quantity::Weight ? 0.1 : 0.01;
        format::LayerQuantityRecord r;
        r.layer_id = id;
        r.quantity = q;
        r.summary = summary(base, q == Quantity::Weight || q == Quantity::WeightGrad ? 256 : 512, rng);
        if (name == "exploding_fc1" && id == 1 && q == Quantity::WeightGrad) {
          r.summary.std *= fc1_grad_scale, r.summary.max *= fc1_grad_scale, r.summary.min *= fc1_grad_scale;
          r.summary.norm *= fc1_grad_scale;
        }
        if (name == "exploding_fc1" && step >= 215 && q == Quantity::ActivationGrad) {
          // The blow-up reaches the other gradients later, through the loss.
          const double g = std::pow(1.4, step - 214);
          r.summary.std *= g, r.summary.max *= g, r.summary.min *= g, r.summary.norm *= g;
        }
        if (name == "nan_in_fc2" && step >= 120) {
          const bool forward = q == Quantity::Activation;
          if ((forward && id == 3)) r.summary.inf_count = 7, r.summary.max = inf;
          if ((forward && id > 3) || (!forward && q != Quantity::Weight)) {
            r.summary.nan_count = r.summary.numel;
            r.summary.mean = r.summary.std = r.summary.norm = nan;
          }
          if (q == Quantity::Weight && step >= 121) {  // the optimizer then writes NaN into every weight
            r.summary.nan_count = r.summary.numel;
            r.summary.mean = r.summary.std = r.summary.norm = nan;
          }
        }
        if (name == "dead_act1" && id == 2 && q == Quantity::Activation) r.summary.zero_fraction = 0.85;
        // Per-neuron statistics every 10 steps.
        if (step % 10 == 0 && q == Quantity::Activation) {
          r.neuron_stats =
              format::statistic_bit(format::Statistic::Mean) | format::statistic_bit(format::Statistic::ZeroFraction);
          r.neuron_count = neurons;
          for (uint32_t n = 0; n < neurons; ++n) r.neuron_values.push_back(float(r.summary.mean + 0.1 * n));
          for (uint32_t n = 0; n < neurons; ++n) {
            float zero = 0.3f;
            if (name == "dead_act1" && id == 2) zero = n < 13 ? 1.0f : 0.2f;  // 13 of 16 dead
            r.neuron_values.push_back(zero);
          }
        }
        snap.layers.push_back(std::move(r));
      }
    }
    writer.append(std::move(snap));
  }
  writer.close();
  if (!writer.status().error.empty()) throw std::runtime_error(writer.status().error);
}

float credit_run_weight(int64_t step, int target, int source) {
  return float((target + 1) * (source - 1.5) * (1.0 + double(step) / 10.0));
}

float credit_run_activation(int64_t step, int neuron) {
  return float((neuron + 1) * (neuron + 1) * (1.0 - double(step) / 40.0));
}

void write_credit_run(const std::filesystem::path& dir) {
  namespace f = trainscope::format;
  f::RunMetadata m;
  m.header.model_name = "TwoLinear";
  m.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  m.layers.push_back({1, "fc1", 0u, "Linear", 4, {4}, {{"weight", {4, 2}}, {"bias", {4}}}, true});
  m.layers.push_back({2, "fc2", 0u, "Linear", 3, {3}, {{"weight", {3, 4}}, {"bias", {3}}}, true});
  m.layers.push_back({3, "conv", 0u, "Conv2d", 2, {2, 3, 3}, {{"weight", {2, 1, 3, 3}}}, true});
  m.edges.push_back({1, 2, false});
  f::RunWriter writer(dir, m);
  for (int64_t t : {0, 10, 20, 30}) {
    f::Snapshot s;
    s.step = t;
    s.scalars = {{"loss", 1.0}};
    f::LayerQuantityRecord a;
    a.layer_id = 1;
    a.quantity = f::Quantity::Activation;
    a.summary.numel = 4;
    a.neuron_stats = f::statistic_bit(f::Statistic::Mean);
    a.neuron_count = 4;
    for (int j = 0; j < 4; ++j) a.neuron_values.push_back(credit_run_activation(t, j));
    s.layers.push_back(a);
    writer.append(std::move(s));
    if (t == 10) {
      f::FullTensor probe;
      probe.layer_id = 3;
      probe.quantity = f::Quantity::Activation;
      probe.step = t;
      probe.probe_batch = true;
      probe.shape = {1, 2, 3, 3};
      for (int c = 0; c < 2; ++c)
        for (int i = 0; i < 9; ++i) probe.values.push_back(float(c * 10 + i));
      writer.append(std::move(probe));
    }
    if (t == 30) continue;
    f::FullTensor w;
    w.layer_id = 2;
    w.quantity = f::Quantity::Weight;
    w.step = t;
    w.shape = {3, 4};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) w.values.push_back(credit_run_weight(t, i, j));
    writer.append(std::move(w));
  }
  writer.close();
  if (!writer.status().error.empty()) throw std::runtime_error(writer.status().error);
}

}  // namespace trainscope::testing
