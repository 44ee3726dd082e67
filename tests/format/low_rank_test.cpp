// LOW_RANK_SPLIT (format 1.3): a Linear layer's weight gradient over a batch smaller than the layer is a sum of one
// outer product per sample, so it is stored as some of its own columns, their coefficients and a residual. Lossless
// for every float, chosen only when it pays, and safe on damaged data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "array_codec.h"
#include "chunk_codec.h"
#include "trainscope.pb.h"

namespace trainscope::format {
namespace {

// sum over `rank` samples of delta_s (rows) x input_s (columns), in float as LibTorch computes it.
std::vector<float> outer_product_sum(uint32_t rows, uint32_t columns, uint32_t rank, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> delta(0.0f, 1e-3f);
  std::uniform_real_distribution<float> input(0.0f, 1.0f);
  std::vector<float> g(size_t(rows) * columns, 0.0f);
  for (uint32_t s = 0; s < rank; ++s) {
    std::vector<float> d(rows), x(columns);
    for (auto& v : d) v = delta(rng);
    for (auto& v : x) v = input(rng) < 0.3f ? 0.0f : input(rng);  // pixels and ReLU outputs: many zeros
    for (uint32_t i = 0; i < rows; ++i)
      for (uint32_t j = 0; j < columns; ++j) g[size_t(i) * columns + j] += d[i] * x[j];
  }
  return g;
}

FullTensorData round_trip(const FullTensor& t, std::string* payload) {
  *payload = encode_full_tensor(t, nullptr, Precision::Float32);
  return decode_full_tensor(*payload, [](int64_t) { return nullptr; });
}

proto::ArrayFilter stored_filter(const std::string& payload) {
  proto::FullTensorChunk m;
  EXPECT_TRUE(m.ParseFromString(payload));
  return m.values().filter();
}

TEST(LowRank, WeightGradientOfASmallBatchIsStoredAsFactorsBitExactly) {
  for (uint32_t rank : {1u, 7u, 20u, 60u}) {
    const uint32_t rows = 96, columns = 200;
    FullTensor t{3, Quantity::WeightGrad, 40, {rows, columns}, outer_product_sum(rows, columns, rank, rank), false};
    t.values[5] = -0.0f;                                      // a signed zero
    t.values[77] = std::numeric_limits<float>::denorm_min();  // a subnormal the prediction treats as zero
    t.values[rows * columns - 1] += 1.0f;                     // one element off the low-rank structure
    std::string payload;
    const FullTensorData back = round_trip(t, &payload);
    // rank + 1 (the element off the structure) against a bound of 0.4 x rows x columns / (rows + columns) = 25
    EXPECT_EQ(stored_filter(payload), rank < 25 ? proto::LOW_RANK_SPLIT : proto::SHUFFLE) << "rank " << rank;
    ASSERT_EQ(back.tensor.values.size(), t.values.size());
    EXPECT_EQ(std::memcmp(back.tensor.values.data(), t.values.data(), t.values.size() * 4), 0) << "rank " << rank;
    EXPECT_EQ(back.tensor.shape, t.shape);
    // The shuffled matrix on its own, for comparison: the factors and residual are much smaller before zstd.
    proto::PackedArray alone;
    pack_floats(t.values.data(), 1, uint32_t(t.values.size()), Precision::Float32, proto::SHUFFLE, nullptr, &alone);
    if (rank <= 7) {
      EXPECT_LT(payload.size(), alone.data().size() * 3 / 5) << "rank " << rank;
    }
  }
}

TEST(LowRank, ChosenOnlyWhenItPays) {
  std::mt19937 rng(4);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  const uint32_t rows = 64, columns = 80;
  std::vector<float> full_rank(size_t(rows) * columns);
  for (auto& v : full_rank) v = noise(rng);
  std::string data;
  EXPECT_FALSE(pack_low_rank(full_rank.data(), rows, columns, &data)) << "a full-rank matrix";
  std::vector<float> low = outer_product_sum(rows, columns, 4, 9);
  EXPECT_TRUE(pack_low_rank(low.data(), rows, columns, &data));
  low[100] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(pack_low_rank(low.data(), rows, columns, &data)) << "NaN arithmetic is not portable";
  std::vector<float> zeros(size_t(rows) * columns, 0.0f);
  EXPECT_FALSE(pack_low_rank(zeros.data(), rows, columns, &data));
  std::vector<float> thin = outer_product_sum(8, 300, 2, 1);
  EXPECT_FALSE(pack_low_rank(thin.data(), 8, 300, &data)) << "too few rows to gain";

  // Weights, and gradients coded against a base, stay as they were.
  const FullTensor weight{3, Quantity::Weight, 40, {rows, columns}, outer_product_sum(rows, columns, 4, 9), false};
  std::string payload;
  (void)round_trip(weight, &payload);
  EXPECT_EQ(stored_filter(payload), proto::SHUFFLE);
  // ... and so does a gradient when the writer is told not to try (WriterOptions::low_rank_gradients).
  FullTensor grad = weight;
  grad.quantity = Quantity::WeightGrad;
  ByteBuffer buffer;
  bool used_base = false;
  const EncodedPayload off = encode_full_tensor(grad, nullptr, Precision::Float32, &used_base, &buffer, false);
  EXPECT_EQ(stored_filter(std::string(reinterpret_cast<const char*>(off.data), off.size)), proto::SHUFFLE);
}

TEST(LowRank, DamagedArraysAreErrorsNotCrashes) {
  const uint32_t rows = 40, columns = 50;
  const std::vector<float> g = outer_product_sum(rows, columns, 3, 2);
  proto::PackedArray packed;
  packed.set_type(proto::FLOAT32);
  packed.set_filter(proto::LOW_RANK_SPLIT);
  packed.set_rows(1);
  packed.set_columns(rows * columns);
  std::string data;
  ASSERT_TRUE(pack_low_rank(g.data(), rows, columns, &data));
  packed.set_data(data);
  const std::vector<float> back = unpack_floats(packed);
  ASSERT_EQ(back.size(), g.size());
  EXPECT_EQ(std::memcmp(back.data(), g.data(), g.size() * 4), 0);

  size_t rejected = 0;
  for (size_t cut = 0; cut < data.size(); ++cut) {  // every truncation
    proto::PackedArray damaged = packed;
    damaged.set_data(data.substr(0, cut));
    try {
      (void)unpack_floats(damaged);
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  EXPECT_EQ(rejected, data.size());
  const auto with_word = [&](size_t offset, uint32_t word) {
    proto::PackedArray damaged = packed;
    std::string d = data;
    std::memcpy(d.data() + offset, &word, 4);
    damaged.set_data(d);
    return damaged;
  };
  EXPECT_THROW(unpack_floats(with_word(0, rows + 1)), FormatError) << "rows x columns is not the element count";
  EXPECT_THROW(unpack_floats(with_word(8, 0)), FormatError) << "rank 0";
  EXPECT_THROW(unpack_floats(with_word(8, 0xFFFFFFFFu)), FormatError) << "a rank above the matrix's";
  EXPECT_THROW(unpack_floats(with_word(8, 30)), FormatError) << "factors longer than the array";
  proto::PackedArray half = packed;
  half.set_type(proto::FLOAT16);
  EXPECT_THROW(unpack_floats(half), FormatError);
}

}  // namespace
}  // namespace trainscope::format
