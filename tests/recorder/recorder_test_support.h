// Helpers shared by the recorder tests: temporary directories and child processes of the test binary itself (so
// that a child starts fresh, without the parent's LibTorch thread pools, which fork() would not carry over).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace trainscope::test {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs this test binary with `args` and returns its exit code (-1 if it did not exit normally).
int run_self(const std::vector<std::string>& args);
// Spawns without waiting; returns the pid.
int spawn_self(const std::vector<std::string>& args);
int wait_child(int pid);

// Child modes of each test file: return -1 when argv names none of theirs.
int child_main(int argc, char** argv);
int gloo_child_main(int argc, char** argv);

}  // namespace trainscope::test
