// Fashion-MNIST from the Debian package dataset-fashion-mnist: the gzipped idx files are unpacked once into a cache
// directory (LibTorch's MNIST reader wants them plain) and loaded whole into memory. Shared by the examples.
#pragma once

#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace trainscope::examples {

inline std::filesystem::path fashion_mnist_source() {
  if (const char* dir = std::getenv("TRAINSCOPE_FASHION_MNIST")) return dir;
  return "/usr/share/datasets/fashion-mnist";
}

inline std::filesystem::path cache_dir() {
  if (const char* dir = std::getenv("XDG_CACHE_HOME")) return std::filesystem::path(dir) / "trainscope";
  if (const char* home = std::getenv("HOME")) return std::filesystem::path(home) / ".cache" / "trainscope";
  return std::filesystem::temp_directory_path() / "trainscope-cache";
}

inline void gunzip(const std::filesystem::path& from, const std::filesystem::path& to) {
  gzFile in = gzopen(from.c_str(), "rb");
  if (!in) throw std::runtime_error("cannot open " + from.string() + " (install dataset-fashion-mnist)");
  // Each process unpacks into its own file: two examples started at once on a fresh machine (the test suite does)
  // wrote the same ".partial" and one renamed it away under the other.
  const std::filesystem::path partial = to.string() + ".partial-" + std::to_string(getpid());
  std::ofstream out(partial, std::ios::binary);
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(in, buffer, sizeof buffer)) > 0) out.write(buffer, n);
  const bool ok = n == 0 && out.good();
  gzclose(in);
  out.close();
  if (!ok) throw std::runtime_error("cannot unpack " + from.string() + " into " + partial.string());
  std::filesystem::rename(partial, to);  // atomic: a killed unpack never leaves a truncated file behind
}

// Images [N, 784] in [0, 1] and labels [N].
struct Dataset {
  torch::Tensor images, labels;
};

inline Dataset load_fashion_mnist(bool train = true) {
  const std::filesystem::path dir = cache_dir() / "fashion-mnist";
  std::filesystem::create_directories(dir);
  for (const char* name :
       {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    if (!std::filesystem::exists(dir / name)) gunzip(fashion_mnist_source() / (std::string(name) + ".gz"), dir / name);
  }
  torch::data::datasets::MNIST mnist(
      dir.string(), train ? torch::data::datasets::MNIST::Mode::kTrain : torch::data::datasets::MNIST::Mode::kTest);
  return {mnist.images().reshape({mnist.images().size(0), 784}), mnist.targets()};
}

// A tiny argument parser: --name value pairs and --flags.
struct Args {
  Args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw std::runtime_error("unexpected argument '" + a + "'");
      if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
        values[a] = argv[++i];
      else
        values[a] = "";
    }
  }
  bool has(const std::string& k) const { return values.count(k) != 0; }
  std::string get(const std::string& k, const std::string& fallback) const {
    auto it = values.find(k);
    return it == values.end() ? fallback : it->second;
  }
  long get_int(const std::string& k, long fallback) const {
    const std::string v = get(k, "");
    if (v.empty()) return fallback;
    char* end = nullptr;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (!end || *end) throw std::runtime_error("argument " + k + " wants a number, got '" + v + "'");
    return x;
  }
  std::map<std::string, std::string> values;
};

}  // namespace trainscope::examples
