#include <gtest/gtest.h>
#include <trainscope/analysis/json_writer.h>

#include <cmath>
#include <limits>

namespace trainscope::analysis {
namespace {

TEST(JsonWriter, WritesNestedValuesWithCommasAndIndentation) {
  JsonWriter w;
  w.begin_object().key("name").value("a\"b").key("n").value(int64_t(-3)).key("list").begin_array();
  w.value(1.5).value(std::nan("")).value(-std::numeric_limits<double>::infinity()).null();
  w.end_array().key("empty").begin_object().end_object().key("steps").value(std::vector<int64_t>{1, 2});
  w.end_object();
  EXPECT_EQ(w.str(),
            "{\n  \"name\": \"a\\\"b\",\n  \"n\": -3,\n  \"list\": [\n    1.5,\n    \"NaN\",\n    \"-Infinity\",\n"
            "    null\n  ],\n  \"empty\": {},\n  \"steps\": [1, 2]\n}\n");
}

TEST(JsonWriter, NumbersReadBackExactly) {
  for (double v : {0.1, 1.0 / 3.0, 1e-300, 123456789.125, -2.5e17})
    EXPECT_EQ(std::strtod(json_number(v).c_str(), nullptr), v);
  EXPECT_EQ(json_number(2.0), "2");
  EXPECT_EQ(json_escape(std::string("x\n\x01")), "x\\n\\u0001");
}

}  // namespace
}  // namespace trainscope::analysis
