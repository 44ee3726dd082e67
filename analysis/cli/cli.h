// Shared pieces of the `trainscope` command line: argument parsing, errors, progress, number formatting.
// Every command is a thin shell over the libraries; the work happens in format/ and analysis/.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <trainscope/analysis/json_writer.h>

namespace trainscope::cli {

using analysis::json_escape;
using analysis::json_number;

// A user error: the message names the argument or file. Printed as "trainscope <command>: <message>", exit 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parsed "--name value", "--flag" and positional arguments of one command.
class Arguments {
 public:
  // `with_value` lists the options that take a value; `flags` those that do not. Anything else is an error.
  Arguments(const std::string& command, int argc, char** argv, const std::set<std::string>& with_value,
            const std::set<std::string>& flags);
  bool has(const std::string& name) const { return values_.count(name) || flags_.count(name); }
  std::optional<std::string> value(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  bool help() const { return help_; }
  // The one positional RUN argument, or a UsageError.
  std::string run_path() const;

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// "A:B", "A:" or ":B" -> inclusive step range.
std::pair<int64_t, int64_t> parse_step_range(const std::string& option, const std::string& text);
int64_t parse_integer(const std::string& option, const std::string& text);

// Progress on stderr for long work: redrawn in place on a terminal, a line per 10% otherwise, silent for work
// that ends within a second.
class Progress {
 public:
  explicit Progress(std::string what);
  ~Progress();
  void update(uint64_t done, uint64_t total);
  void finish();

 private:
  std::string what_;
  std::chrono::steady_clock::time_point start_, last_;
  bool terminal_;
  bool shown_ = false;
  int last_decile_ = -1;
};

std::string format_bytes(uint64_t bytes);
std::string format_count(uint64_t n);  // 1234567 -> "1,234,567"
// Shortest text that reads back to the same value; "nan", "inf", "-inf" for the specials.
std::string format_double(double v);
std::string format_float(float v);

int run_info(int argc, char** argv);
int run_check(int argc, char** argv);
int run_trim(int argc, char** argv);
int run_export(int argc, char** argv);
int run_sample(int argc, char** argv);
int run_anomalies(int argc, char** argv);
int run_layers(int argc, char** argv);
int run_trace(int argc, char** argv);

}  // namespace trainscope::cli
