// Runs the real `trainscope` binary on real recordings and checks what a user sees: output, files, exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;

struct Result {
  int status;
  std::string out;  // stdout and stderr together
};

Result run(const std::string& command) {
  auto r = trainscope::testing::run_command(command);
  return {r.status, std::move(r.output)};
}

std::string cli(const std::string& args) {
  return std::string(TRAINSCOPE_CLI) + " " + args;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("trainscope-cli-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string make_run(const std::string& name, const std::string& args) {
    const auto r = run(std::string(MAKE_TEST_RUN) + " " + (dir_ / name).string() + " " + args);
    EXPECT_EQ(r.status, 0) << r.out;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

TEST_F(Cli, InfoDescribesTheRunAndItsHealth) {
  const auto r1 = make_run("r", "300 --nan-at 250");
  const auto r = run(cli("info " + r1));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(has(r.out, "TestMLP")) << r.out;
  EXPECT_TRUE(has(r.out, "3 leaf layers, 24 neurons")) << r.out;
  EXPECT_TRUE(has(r.out, "0 .. 299")) << r.out;
  EXPECT_TRUE(has(r.out, "per-neuron snapshots at 30 steps")) << r.out;
  EXPECT_TRUE(has(r.out, "loss is NaN/Inf from step 250")) << r.out;
  EXPECT_TRUE(has(r.out, "compression")) << r.out;
  const auto j = run(cli("info --json " + r1));
  EXPECT_EQ(j.status, 0);
  EXPECT_TRUE(has(j.out, "\"first_non_finite_step\": 250")) << j.out;
  EXPECT_TRUE(has(j.out, "\"snapshots\": 30")) << j.out;
}

TEST_F(Cli, CheckIsCleanOnAGoodRunAndPreciseOnADamagedOne) {
  const auto good = make_run("good", "200");
  auto r = run(cli("check " + good));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(has(r.out, "OK")) << r.out;

  // Flip one byte in the middle of the segment.
  const fs::path segment = fs::path(good) / "segment-000000.tss";
  std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
  const auto size = fs::file_size(segment);
  f.seekg(std::streamoff(size / 2));
  char c;
  f.read(&c, 1);
  c ^= 0x20;
  f.seekp(std::streamoff(size / 2));
  f.write(&c, 1);
  f.close();
  r = run(cli("check " + good));
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(has(r.out, segment.string() + " at offset ")) << r.out;
}

TEST_F(Cli, CheckReportsATornTailAfterACrash) {
  const auto open = make_run("open", "120 --open");
  auto info = run(cli("info " + open));
  EXPECT_EQ(info.status, 0) << info.out;
  EXPECT_TRUE(has(info.out, "not closed")) << info.out;
  const fs::path segment = fs::path(open) / "segment-000000.tss";
  fs::resize_file(segment, fs::file_size(segment) - 5);
  const auto r = run(cli("check " + open));
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(has(r.out, "torn tail")) << r.out;
  EXPECT_TRUE(has(r.out, "no index footer")) << r.out;
}

TEST_F(Cli, TrimWritesAValidSmallerRun) {
  const auto in = make_run("in", "400");
  const auto out = (dir_ / "out").string();
  auto r = run(cli("trim " + in + " --steps 100:199 -o " + out));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(run(cli("check " + out)).status, 0);
  const auto info = run(cli("info " + out));
  EXPECT_TRUE(has(info.out, "100 .. 199")) << info.out;
  EXPECT_TRUE(has(info.out, "scalars at 100 steps")) << info.out;
  EXPECT_LT(fs::file_size(fs::path(out) / "segment-000000.tss"), fs::file_size(fs::path(in) / "segment-000000.tss"));
  // The trimmed run exports the same values as the original over the window.
  EXPECT_EQ(run(cli("export " + out + " --scalars")).out, run(cli("export " + in + " --scalars --steps 100:199")).out);
  r = run(cli("trim " + in + " --steps 100:199 -o " + out));  // exists now
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(has(r.out, out)) << r.out;
}

TEST_F(Cli, ExportWritesCsvAndJson) {
  const auto in = make_run("in", "60 --nan-at 55");
  auto r = run(cli("export " + in + " --scalars"));
  EXPECT_EQ(r.status, 0) << r.out;
  std::istringstream lines(r.out);
  std::string header, first;
  std::getline(lines, header);
  std::getline(lines, first);
  EXPECT_EQ(header, "step,loss,lr");
  EXPECT_EQ(first, "0,2,0.001");
  EXPECT_TRUE(has(r.out, "\n55,nan,0.001\n")) << r.out;

  r = run(cli("export " + in + " --layer encoder.fc1 --quantity weight --stat max --steps 10:30"));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "step,n0,n1,n2,n3,n4,n5,n6,n7");
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4);  // header + steps 10, 20, 30

  r = run(cli("export " + in + " --scalars --json"));
  EXPECT_TRUE(has(r.out, "\"NaN\"")) << r.out;
  r = run(cli("export " + in + " --layer encoder.fc1 --quantity activation --summary -o " + (dir_ / "s.csv").string()));
  EXPECT_EQ(r.status, 0) << r.out;
  std::ifstream csv(dir_ / "s.csv");
  std::getline(csv, header);
  EXPECT_EQ(header, "step,mean,std,min,max,norm,zero_fraction,nan_count,inf_count,numel");
}

TEST_F(Cli, AnomaliesAndLayersOnARunWithANan) {
  const auto in = make_run("nan", "300 --nan-at 250");
  auto r = run(cli("anomalies " + in));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(has(r.out, "1. step 250  non_finite")) << r.out;
  r = run(cli("anomalies --json " + in));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(has(r.out, "\"schema\": \"trainscope-anomalies/1\"")) << r.out;
  EXPECT_TRUE(has(r.out, "\"step\": 250")) << r.out;
  r = run(cli("layers " + in + " --step 100 --window 20"));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(has(r.out, "    encoder.fc1")) << r.out;  // indented under its parent
  EXPECT_TRUE(has(r.out, "Layers around step 100 (+-20 steps)")) << r.out;
  r = run(cli("layers --json " + in));
  EXPECT_TRUE(has(r.out, "\"focus_step\": 299")) << r.out;
  // A run whose writer was killed: still analysed.
  const auto open = make_run("open", "120 --open");
  EXPECT_EQ(run(cli("anomalies " + open)).status, 0);
}

TEST_F(Cli, BadInputGetsAClearErrorAndNonZeroExit) {
  const auto in = make_run("in", "20");
  struct Case {
    std::string args, expected;
    int status;
  } cases[] = {
      {"", "usage", 2},
      {"frobnicate", "unknown command 'frobnicate'", 2},
      {"info", "missing the RUN directory", 2},
      {"info /no/such/run", "/no/such/run: no such run directory", 1},
      {"info " + in + " --bogus", "unknown option '--bogus'", 2},
      {"trim " + in + " -o x", "missing --steps", 2},
      {"trim " + in + " --steps 9:3 -o x", "is after the last step", 2},
      {"trim " + in + " --steps abc -o x", "--steps: expected FIRST:LAST", 2},
      {"export " + in + " --layer nope --quantity weight --stat mean", "no layer named 'nope'", 2},
      {"export " + in + " --layer encoder.fc1 --quantity weights --stat mean", "unknown quantity 'weights'", 2},
      {"export " + in + " --layer encoder.fc1 --quantity weight --stat average", "unknown statistic 'average'", 2},
      {"export " + in + " --layer encoder.fc1 --quantity bias_grad --stat mean", "no per-neuron bias_grad", 2},
      {"export " + in + " --scalars -o /no/such/dir/x.csv", "/no/such/dir/x.csv: cannot open", 2},
      {"check " + (dir_ / "empty").string(), "no such run directory", 1},
      {"anomalies " + in + " --max 0", "--max: must be at least 1", 2},
      {"anomalies " + in + " --spike-z high", "--spike-z: 'high' is not a number", 2},
      {"layers " + in + " --step 5000", "--step: 5000 is outside the recorded steps 0..19", 2},
      {"layers " + in + " --window -3", "--window: must not be negative", 2},
  };
  for (const auto& c : cases) {
    const auto r = run(cli(c.args));
    EXPECT_EQ(r.status, c.status) << c.args << "\n" << r.out;
    EXPECT_TRUE(has(r.out, c.expected)) << c.args << "\n" << r.out;
  }
  for (const char* command : {"info", "check", "trim", "export", "anomalies", "layers"}) {
    const auto r = run(cli(std::string(command) + " --help"));
    EXPECT_EQ(r.status, 0);
    EXPECT_TRUE(has(r.out, std::string("usage: trainscope ") + command)) << r.out;
  }
}

}  // namespace
