#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

#include "recorder_test_support.h"

extern char** environ;

namespace trainscope::test {

TempDir::TempDir() {
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() / ("trainscope-recorder-test-" + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int spawn_self(const std::vector<std::string>& args) {
  std::vector<std::string> all = {"/proc/self/exe"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return int(pid);
}

int wait_child(int pid) {
  int status = 0;
  if (pid <= 0 || waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run_self(const std::vector<std::string>& args) {
  return wait_child(spawn_self(args));
}

}  // namespace trainscope::test

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]).rfind("--child", 0) == 0) {
    int rc = trainscope::test::child_main(argc, argv);
    if (rc == -1) rc = trainscope::test::gloo_child_main(argc, argv);
    return rc == -1 ? 100 : rc;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
