#include <gtest/gtest.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>
#include <trainscope/format/trim.h>

#include <cstring>

#include "test_support.h"

namespace trainscope::format {
namespace {

using testing::TempDir;

TEST(Trim, KeepsExactlyTheWindowAndAllMetadata) {
  TempDir dir;
  const RunMetadata m = testing::small_model_metadata(32);
  WriterOptions options;
  options.chunk_bytes = 16 << 10;
  options.keyframe_interval = 5;
  {
    RunWriter w(dir / "in", m, options);
    for (int s = 0; s < 400; ++s) {
      w.append(testing::synthetic_snapshot(s, 32, m, s % 2 == 0));
      if (s % 10 == 0) w.append(FullTensor{2, Quantity::Weight, s, {32, 8}, testing::drifting_weights(256, s), false});
    }
  }
  uint64_t last_done = 0, progress_calls = 0;
  const TrimResult result = trim_run(dir / "in", dir / "out", 155, 262, [&](uint64_t done, uint64_t total) {
    EXPECT_LE(done, total);
    EXPECT_GE(done, last_done);
    last_done = done;
    ++progress_calls;
  });
  EXPECT_GT(progress_calls, 0u);
  EXPECT_GT(result.chunks_copied, 0u);     // whole chunks inside the window are copied as they are
  EXPECT_GT(result.chunks_reencoded, 0u);  // the edges are cut
  EXPECT_TRUE(result.warnings.empty());

  RunReader in(dir / "in"), out(dir / "out");
  EXPECT_TRUE(out.complete());
  EXPECT_TRUE(out.verify().empty());
  EXPECT_EQ(out.metadata().layers.size(), m.layers.size());
  EXPECT_EQ(out.metadata().header.model_name, "TestMLP");
  EXPECT_EQ(out.first_step(), 155);
  EXPECT_EQ(out.last_step(), 262);
  auto scalars = out.read_scalars();
  ASSERT_FALSE(scalars.empty());
  EXPECT_EQ(scalars[0].steps.front(), 155);
  EXPECT_EQ(scalars[0].steps.back(), 262);
  EXPECT_EQ(scalars[0].steps.size(), 108u);
  EXPECT_EQ(scalars[0].values, in.read_scalars(155, 262)[0].values);
  auto a = out.read_neuron_series(3, Quantity::ActivationGrad, Statistic::Std);
  auto b = in.read_neuron_series(3, Quantity::ActivationGrad, Statistic::Std, 155, 262);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->steps, b->steps);
  EXPECT_EQ(0, std::memcmp(a->values.data(), b->values.data(), a->values.size() * 4));
  EXPECT_EQ(out.snapshot_steps(), in.snapshot_steps().size() ? [&] {
    std::vector<int64_t> kept;
    for (int64_t s : in.snapshot_steps())
      if (s >= 155 && s <= 262) kept.push_back(s);
    return kept;
  }() : std::vector<int64_t>{});
  // Full tensors: the first in the window had its base outside it; all decode to the original values.
  const auto steps = out.full_tensor_steps(2, Quantity::Weight);
  EXPECT_EQ(steps, (std::vector<int64_t>{160, 170, 180, 190, 200, 210, 220, 230, 240, 250, 260}));
  for (int64_t s : steps) {
    auto t = out.read_full_tensor(2, Quantity::Weight, s);
    ASSERT_TRUE(t);
    EXPECT_EQ(t->values, testing::drifting_weights(256, s));
  }
  EXPECT_LT(out.stored_bytes(), in.stored_bytes() / 2);
}

TEST(Trim, RefusesBadArguments) {
  TempDir dir;
  const RunMetadata m = testing::small_model_metadata(4);
  {
    RunWriter w(dir / "in", m);
    w.append(testing::synthetic_snapshot(1, 4, m));
  }
  EXPECT_THROW(trim_run(dir / "in", dir / "out", 10, 5, {}), FormatError);
  EXPECT_THROW(trim_run(dir / "missing", dir / "out", 0, 5, {}), FormatError);
  EXPECT_THROW(trim_run(dir / "in", dir / "in", 0, 5, {}), FormatError);  // output exists, not empty
}

}  // namespace
}  // namespace trainscope::format
