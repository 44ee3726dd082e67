#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "array_codec.h"
#include "crc32c.h"
#include "test_support.h"

namespace trainscope::format {
namespace {

using testing::bits;

std::vector<float> special_values() {
  return {0.0f,
          -0.0f,
          1.0f,
          -2.5f,
          1e-30f,
          3.4e38f,
          std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity(),
          std::numeric_limits<float>::quiet_NaN(),
          std::numeric_limits<float>::denorm_min(),
          65504.0f,
          1e-7f};
}

TEST(ArrayCodec, Float32RoundTripIsBitExactForEveryFilter) {
  std::vector<float> v = special_values();
  for (int r = 1; r < 4; ++r)
    for (float x : special_values()) v.push_back(x * float(r) + 0.125f * float(r));
  const uint32_t columns = uint32_t(special_values().size());
  const uint32_t rows = uint32_t(v.size() / columns);
  for (auto filter : {proto::NONE, proto::SHUFFLE, proto::XOR_PREVIOUS_SHUFFLE}) {
    proto::PackedArray packed;
    pack_floats(v.data(), rows, columns, Precision::Float32, filter, nullptr, &packed);
    const std::vector<float> back = unpack_floats(packed);
    ASSERT_EQ(back.size(), v.size());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(bits(back[i]), bits(v[i])) << "filter " << filter << " i " << i;
  }
}

TEST(ArrayCodec, XorAgainstBaseRoundTrips) {
  std::vector<float> base = special_values(), value = special_values();
  for (float& x : value) x = x * 1.001f;
  proto::PackedArray packed;
  pack_floats(value.data(), 1, uint32_t(value.size()), Precision::Float32, proto::XOR_BASE_SHUFFLE, base.data(),
              &packed);
  const auto back = unpack_floats(packed, base.data());
  for (size_t i = 0; i < value.size(); ++i) EXPECT_EQ(bits(back[i]), bits(value[i]));
  EXPECT_THROW(unpack_floats(packed, nullptr), FormatError);
}

TEST(ArrayCodec, XorPreviousMakesSmoothRowsSmall) {
  // Rows that change little from one to the next must compress to mostly-zero high bytes.
  const uint32_t rows = 32, columns = 256;
  std::vector<float> v(rows * columns);
  for (uint32_t r = 0; r < rows; ++r)
    for (uint32_t c = 0; c < columns; ++c) v[r * columns + c] = 1.0f + 0.001f * float(c) + 1e-6f * float(r);
  proto::PackedArray packed;
  pack_floats(v.data(), rows, columns, Precision::Float32, proto::XOR_PREVIOUS_SHUFFLE, nullptr, &packed);
  // The top byte plane of rows 1.. is all zero: sign and exponent do not change.
  const std::string& d = packed.data();
  const size_t n = v.size();
  size_t zeros = 0;
  for (size_t i = columns; i < n; ++i) zeros += d[3 * n + i] == 0;
  EXPECT_EQ(zeros, n - columns);
}

TEST(ArrayCodec, HalfPrecisionKeepsSpecialsAndRounds) {
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
  EXPECT_TRUE(std::isinf(half_to_float(float_to_half(std::numeric_limits<float>::infinity()))));
  EXPECT_TRUE(std::isinf(half_to_float(float_to_half(1e6f))));  // overflow saturates to Inf
  EXPECT_EQ(half_to_float(float_to_half(1.0f)), 1.0f);
  EXPECT_EQ(half_to_float(float_to_half(-2.5f)), -2.5f);
  EXPECT_EQ(half_to_float(float_to_half(65504.0f)), 65504.0f);
  EXPECT_NEAR(half_to_float(float_to_half(0.1f)), 0.1f, 1e-4f);
  EXPECT_EQ(half_to_float(float_to_half(5.960464477539063e-08f)), 5.960464477539063e-08f);  // smallest subnormal
  EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(std::nanf("")))));
  EXPECT_EQ(bfloat16_to_float(float_to_bfloat16(1.0f)), 1.0f);
  EXPECT_NEAR(bfloat16_to_float(float_to_bfloat16(3.14159f)), 3.14159f, 0.02f);
  // Every half value survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), h) << h;
  }
}

TEST(ArrayCodec, InconsistentArrayIsRejected) {
  proto::PackedArray packed;
  std::vector<float> v(10, 1.0f);
  pack_floats(v.data(), 2, 5, Precision::Float32, proto::SHUFFLE, nullptr, &packed);
  packed.set_columns(6);
  EXPECT_THROW(unpack_floats(packed), FormatError);
}

TEST(Crc32c, MatchesKnownValues) {
  // Test vectors from RFC 3720 (iSCSI), appendix B.4.
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), increasing(32);
  for (int i = 0; i < 32; ++i) increasing[size_t(i)] = uint8_t(i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(increasing.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  // Incremental use gives the same result.
  EXPECT_EQ(crc32c(increasing.data() + 10, 22, crc32c(increasing.data(), 10)), 0x46DD794Eu);
}

// Long inputs take the three-chain path; it must agree with the table-driven reference on every length around its
// block boundaries (3 x 8 KB), at any alignment, and continuing from any CRC.
TEST(Crc32c, LongInputsAgreeWithTheReference) {
  std::mt19937 rng(11);
  std::vector<uint8_t> data(200000 + 7);
  for (auto& b : data) b = uint8_t(rng());
  const size_t block = 3 * 8192;
  for (size_t n : {block - 1, block, block + 1, block + 9, 2 * block - 3, 2 * block, 5 * block + 4095, size_t(200000)})
    for (size_t offset : {0, 1, 7}) {
      SCOPED_TRACE("length " + std::to_string(n) + ", offset " + std::to_string(offset));
      const uint8_t* p = data.data() + offset;
      EXPECT_EQ(crc32c(p, n), crc32c_portable(p, n));
      EXPECT_EQ(crc32c(p, n, 0x12345678u), crc32c_portable(p, n, 0x12345678u));
      EXPECT_EQ(crc32c(p + n / 3, n - n / 3, crc32c(p, n / 3)), crc32c(p, n));
    }
  // A flipped bit anywhere in a long input changes the CRC.
  const uint32_t clean = crc32c(data.data(), data.size());
  for (size_t at : {size_t(0), size_t(8191), size_t(8192), size_t(16384 + 5), data.size() - 1}) {
    data[at] ^= 0x10;
    EXPECT_NE(crc32c(data.data(), data.size()), clean) << "bit flipped at " << at;
    data[at] ^= 0x10;
  }
}

}  // namespace
}  // namespace trainscope::format
