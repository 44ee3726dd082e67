// Two processes train one model with Gloo gradient all-reduce (data parallel); each rank records into its own
// rank-<r> sub-directory. The ranks' weights stay identical, so their recordings must agree on them.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/recorder.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>

#include "recorder_test_support.h"

namespace fs = std::filesystem;

namespace trainscope::test {
namespace {

constexpr int kSteps = 25;

int gloo_rank(int rank, const fs::path& run_dir, const fs::path& store_file) {
  auto store = c10::make_intrusive<::c10d::FileStore>(store_file.string(), 2);
  auto options = ::c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(60));
  options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  ::c10d::ProcessGroupGloo group(store, rank, 2, options);

  torch::manual_seed(11);  // same initial weights on both ranks
  auto model = torch::nn::Sequential(torch::nn::Linear(6, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
  torch::optim::SGD opt(model->parameters(), 0.05);
  RecorderOptions rec_options;
  rec_options.rank = rank;
  rec_options.world_size = 2;
  rec_options.interval = 5;
  rec_options.config["job"] = "gloo-test";
  Recorder rec(model, run_dir, rec_options);
  torch::manual_seed(100 + rank);  // each rank its own data shard
  const torch::Tensor x = torch::randn({16, 6}), y = torch::randn({16, 2});
  for (int s = 0; s < kSteps; ++s) {
    opt.zero_grad();
    auto loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    for (auto& p : model->parameters()) {
      std::vector<at::Tensor> grads = {p.grad()};
      group.allreduce(grads)->wait();
      p.grad().div_(2);
    }
    if (!rec.step(loss).recording_ok) return 3;
    opt.step();
  }
  rec.close();
  return 0;
}

TEST(MultiRank, TwoGlooProcessesRecordIntoRankDirectories) {
  TempDir tmp;
  const fs::path run = tmp.path() / "run";
  const fs::path store = tmp.path() / "store";
  const int a = spawn_self({"--child-gloo", "0", run.string(), store.string()});
  const int b = spawn_self({"--child-gloo", "1", run.string(), store.string()});
  ASSERT_EQ(wait_child(a), 0);
  ASSERT_EQ(wait_child(b), 0);

  const auto ranks = format::rank_directories(run);
  ASSERT_EQ(ranks.size(), 2u);
  std::vector<std::vector<float>> weights;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(ranks[size_t(r)].filename(), "rank-" + std::to_string(r));
    format::RunReader reader(ranks[size_t(r)]);
    EXPECT_EQ(reader.metadata().header.rank, uint32_t(r));
    EXPECT_EQ(reader.metadata().header.world_size, 2u);
    // Rank 0 carries the job's configuration.
    EXPECT_EQ(reader.metadata().header.config.count("job"), r == 0 ? 1u : 0u);
    EXPECT_EQ(reader.snapshot_steps(), (std::vector<int64_t>{0, 5, 10, 15, 20}));
    const auto* layer = reader.metadata().find_layer("2");
    ASSERT_NE(layer, nullptr);
    auto series = reader.read_neuron_series(layer->id, format::Quantity::Weight, format::Statistic::Mean);
    ASSERT_TRUE(series.has_value());
    weights.push_back(series->values);
  }
  EXPECT_EQ(weights[0], weights[1]);  // all-reduced gradients keep the ranks in step

  // The CLI reads both rank recordings.
  if (const char* cli = std::getenv("TRAINSCOPE_CLI")) {
    for (const auto& dir : ranks) {
      const std::string cmd = std::string(cli) + " info '" + dir.string() + "' > /dev/null";
      EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
  }
}

}  // namespace

int gloo_child_main(int argc, char** argv) {
  if (argc >= 5 && std::string(argv[1]) == "--child-gloo") {
    try {
      return gloo_rank(std::atoi(argv[2]), argv[3], argv[4]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %s: %s\n", argv[2], e.what());
      return 2;
    }
  }
  return -1;
}

}  // namespace trainscope::test
