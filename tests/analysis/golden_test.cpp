// Golden-file tests: the real `trainscope anomalies --json` on recordings with known failures, compared with the
// expected output checked in under tests/analysis/golden/. After an intended change of the analysis, regenerate
// with TRAINSCOPE_UPDATE_GOLDEN=1 and review the diff.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "synthetic_runs.h"
#include "test_support.h"

namespace trainscope::testing {
namespace {

std::string run_cli(const std::string& args, int* status) {
  CommandResult r = run_command(std::string(TRAINSCOPE_CLI) + " " + args, /*with_stderr=*/false);
  *status = r.status;
  return r.output;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, AnomaliesJsonMatchesTheExpectedFile) {
  TempDir dir("golden");
  write_synthetic_run(GetParam(), dir / "run");
  int status = 0;
  const std::string actual = run_cli("anomalies --json " + (dir / "run").string(), &status);
  ASSERT_EQ(status, 0) << actual;
  const std::filesystem::path golden = std::filesystem::path(TRAINSCOPE_GOLDEN_DIR) / (GetParam() + ".anomalies.json");
  if (std::getenv("TRAINSCOPE_UPDATE_GOLDEN")) {
    std::ofstream(golden) << actual;
    GTEST_SKIP() << "wrote " << golden;
  }
  ASSERT_TRUE(std::filesystem::exists(golden)) << golden << " is missing; run with TRAINSCOPE_UPDATE_GOLDEN=1";
  const std::string expected = read_text(golden);
  if (actual == expected) return;
  // Name the first line that differs instead of dumping both files.
  std::istringstream a(actual), e(expected);
  std::string la, le;
  for (int line = 1;; ++line) {
    const bool more_a = bool(std::getline(a, la)), more_e = bool(std::getline(e, le));
    if (!more_a && !more_e) break;
    if (la != le || more_a != more_e) {
      ADD_FAILURE() << golden << " differs at line " << line << ":\n  expected: " << le << "\n  actual:   " << la
                    << "\n(after an intended change: TRAINSCOPE_UPDATE_GOLDEN=1, then review the diff)";
      return;
    }
  }
}

TEST(AnomaliesText, NanSpreadIsOneLineAndTheRankingNamesWhereItStarts) {
  TempDir dir("text");
  write_synthetic_run("nan_in_fc2", dir / "run");
  const CommandResult r = run_command(std::string(TRAINSCOPE_CLI) + " anomalies " + (dir / "run").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("-> fc2 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("NaN/Inf in 5 layers from step 120"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("  non_finite               fc"), std::string::npos) << "one line per hit again:\n"
                                                                               << r.output;
}

INSTANTIATE_TEST_SUITE_P(SyntheticRuns, Golden, ::testing::ValuesIn(synthetic_run_names()));

}  // namespace
}  // namespace trainscope::testing
