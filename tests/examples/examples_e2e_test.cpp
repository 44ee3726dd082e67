// Each failure the VAE example can inject starts in a known layer at a known step. Trained for real, recorded with
// the one-call recorder, and analysed: the top suspect of the first abnormal step must be that layer, from within
// one recorded interval of the injection.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <trainscope/analysis/anomaly_report.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

namespace {

namespace fs = std::filesystem;
using namespace trainscope;

struct Case {
  std::string failure;
  std::set<std::string> layers;  // where the failure starts (a dead layer may be blamed on its ReLU)
};

class VaeFailure : public ::testing::TestWithParam<Case> {};

TEST_P(VaeFailure, TopSuspectIsTheInjectedLayer) {
  const Case& c = GetParam();
  const fs::path run = fs::temp_directory_path() / ("trainscope-e2e-" + c.failure + "-" + std::to_string(::getpid()));
  fs::remove_all(run);
  const int interval = 10, fail_step = 100;
  const std::string command = std::string("OMP_NUM_THREADS=1 ") + VAE_EXAMPLE + " --fail " + c.failure +
                              " --fail-step " + std::to_string(fail_step) + " --steps 160 --interval " +
                              std::to_string(interval) + " --out " + run.string() + " > " + run.string() + ".log 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command;

  format::RunReader reader(run);
  const analysis::AnomalyReport report = analysis::analyze_run(reader);
  const analysis::LayerGraph graph(reader.metadata());
  // The first abnormal step at or after the injection (earlier ones, if any, are the run's own noise).
  const analysis::AbnormalSnapshot* first = nullptr;
  for (const auto& a : report.anomalies)
    if (a.step >= fail_step && !a.suspects.empty() && (!first || a.step < first->step)) first = &a;
  ASSERT_NE(first, nullptr) << "no abnormal step with suspects after the injection";
  EXPECT_LE(first->step, fail_step + 2 * interval);
  const analysis::Suspect& top = first->suspects[0];
  EXPECT_TRUE(c.layers.count(graph.name(top.layer_id))) << "blamed " << graph.name(top.layer_id) << " (" << top.rule
                                                        << ": " << top.evidence << ") at step " << first->step;
  EXPECT_GE(top.first_step, fail_step);
  EXPECT_LE(top.first_step, fail_step + interval);
  fs::remove_all(run);
  fs::remove(run.string() + ".log");
}

INSTANTIATE_TEST_SUITE_P(Examples, VaeFailure,
                         ::testing::Values(Case{"exp", {"enc.logvar"}}, Case{"lr", {"dec.fc2"}},
                                           Case{"dead", {"enc.fc2", "enc.act2"}}),
                         [](const auto& info) { return info.param.failure; });

}  // namespace
