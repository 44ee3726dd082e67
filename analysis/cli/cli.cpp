#include "cli.h"

#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace trainscope::cli {

Arguments::Arguments(const std::string& command, int argc, char** argv, const std::set<std::string>& with_value,
                     const std::set<std::string>& flags)
    : command_(command) {
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.size() > 1 && arg[0] == '-' &&
        !(arg.size() > 1 && (std::isdigit(static_cast<unsigned char>(arg[1])) || arg[1] == ':'))) {
      std::string name = arg, inline_value;
      bool has_inline = false;
      if (auto eq = arg.find('='); eq != std::string::npos) {
        name = arg.substr(0, eq);
        inline_value = arg.substr(eq + 1);
        has_inline = true;
      }
      if (with_value.count(name)) {
        if (!has_inline) {
          if (i + 1 >= argc) throw UsageError("option " + name + " needs a value");
          inline_value = argv[++i];
        }
        values_[name] = inline_value;
      } else if (flags.count(name) && !has_inline) {
        flags_.insert(name);
      } else {
        throw UsageError("unknown option '" + arg + "' (see trainscope " + command_ + " --help)");
      }
      continue;
    }
    positional_.push_back(arg);
  }
}

std::optional<std::string> Arguments::value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Arguments::run_path() const {
  if (positional_.empty())
    throw UsageError("missing the RUN directory argument (see trainscope " + command_ + " --help)");
  if (positional_.size() > 1) throw UsageError("unexpected argument '" + positional_[1] + "'");
  return positional_[0];
}

int64_t parse_integer(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    throw UsageError(option + ": '" + text + "' is not an integer");
  }
}

std::pair<int64_t, int64_t> parse_step_range(const std::string& option, const std::string& text) {
  const auto colon = text.find(':');
  if (colon == std::string::npos) throw UsageError(option + ": expected FIRST:LAST (e.g. 100:250), got '" + text + "'");
  const std::string a = text.substr(0, colon), b = text.substr(colon + 1);
  const int64_t first = a.empty() ? INT64_MIN : parse_integer(option, a);
  const int64_t last = b.empty() ? INT64_MAX : parse_integer(option, b);
  if (first > last) throw UsageError(option + ": the first step " + a + " is after the last step " + b);
  return {first, last};
}

Progress::Progress(std::string what)
    : what_(std::move(what)), start_(std::chrono::steady_clock::now()), last_(start_), terminal_(::isatty(2)) {}

Progress::~Progress() {
  finish();
}

void Progress::update(uint64_t done, uint64_t total) {
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < std::chrono::seconds(1)) return;  // short work stays quiet
  const double fraction = total ? double(done) / double(total) : 1.0;
  if (terminal_) {
    if (now - last_ < std::chrono::milliseconds(100) && done != total) return;
    last_ = now;
    std::fprintf(stderr, "\r%s: %3.0f%% (%s of %s)", what_.c_str(), 100 * fraction, format_bytes(done).c_str(),
                 format_bytes(total).c_str());
    shown_ = true;
  } else {
    const int decile = int(fraction * 10);
    if (decile == last_decile_) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s: %d%%\n", what_.c_str(), decile * 10);
  }
}

void Progress::finish() {
  if (shown_) std::fprintf(stderr, "\n");
  shown_ = false;
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string format_count(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return analysis::shortest_decimal(v);
}

std::string format_float(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  for (int precision = 6; precision <= 9; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, double(v));
    if (std::strtof(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace trainscope::cli
