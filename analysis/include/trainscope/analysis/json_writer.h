// A small streaming JSON writer: the CLI's --json output and the analyses' golden files share it, so the two
// never drift apart. JSON has no NaN or Inf: they are written as the strings "NaN", "Infinity" and "-Infinity".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trainscope::analysis {

class JsonWriter {
 public:
  explicit JsonWriter(int indent = 2) : indent_(indent) {}

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view name);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(double v);
  JsonWriter& value(int64_t v);
  JsonWriter& value(uint64_t v);
  JsonWriter& value(int v) { return value(int64_t(v)); }
  JsonWriter& value(unsigned v) { return value(uint64_t(v)); }
  JsonWriter& value(bool v);
  JsonWriter& null();
  // Arrays of numbers on one line: long series stay readable.
  JsonWriter& value(const std::vector<double>& values);
  JsonWriter& value(const std::vector<int64_t>& values);

  const std::string& str() const { return out_; }

 private:
  void before_value();
  void newline();
  std::string out_;
  std::vector<bool> first_;  // per open container: nothing written yet
  bool after_key_ = false;
  int indent_;
};

std::string json_escape(std::string_view s);
// Shortest decimal text that reads back to the same finite double (the CSV and text outputs use it too).
std::string shortest_decimal(double v);
// shortest_decimal, or the JSON strings above for NaN and Inf.
std::string json_number(double v);

}  // namespace trainscope::analysis
