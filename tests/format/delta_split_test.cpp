// DELTA_SPLIT (format 1.2): full tensors coded as the integer difference from their previous snapshot, cut per
// element at a place set by the base's exponent. Bit-exact for every float, safe on damaged data; and the payloads
// the writer writes by hand (full tensors, neuron statistics) are the bytes protobuf would write.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "array_codec.h"
#include "chunk_codec.h"
#include "test_support.h"
#include "trainscope.pb.h"

namespace trainscope::format {
namespace {

using testing::bits;
using testing::from_bits;

// A base and a value that drifted from it, with every awkward case mixed in: specials, signs that flip, zero bases,
// subnormals, jumps that need an escape.
void drifting_pair(size_t n, uint32_t seed, std::vector<float>* base, std::vector<float>* value) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> init(0.0f, 0.05f), step(0.0f, 1e-4f);
  base->resize(n);
  value->resize(n);
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            from_bits(0x7FA00001u),  // a signalling NaN with a payload
                            std::numeric_limits<float>::denorm_min(),
                            -3.0e-39f,
                            3.4e38f,
                            1e-30f};
  for (size_t i = 0; i < n; ++i) {
    (*base)[i] = init(rng);
    (*value)[i] = (*base)[i] + step(rng);
    if (i % 37 == 5) (*value)[i] = -(*base)[i];  // sign flip: an escape
    if (i % 41 == 7) (*base)[i] = specials[(i / 41) % 10];
    if (i % 43 == 9) (*value)[i] = specials[(i / 43) % 10];
    if (i % 47 == 11) (*base)[i] = (*value)[i] = 0.0f;  // a zero that stays zero
  }
}

std::vector<float> decode(const proto::PackedArray& packed, const std::vector<float>& base) {
  return unpack_floats(packed, base.data());
}

TEST(DeltaSplit, RoundTripIsBitExactForEverySizeAndSplit) {
  for (size_t n : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(255), size_t(256), size_t(257), size_t(4099)}) {
    std::vector<float> base, value;
    drifting_pair(n, uint32_t(n) + 1, &base, &value);
    const DeltaPlan plan = plan_float32_delta(value.data(), base.data(), n);
    if (n == 0) {  // nothing to gain: an empty tensor is stored on its own
      EXPECT_FALSE(plan.against_base);
      continue;
    }
    for (uint8_t split : {uint8_t(0), uint8_t(100), plan.split, uint8_t(200), uint8_t(255)}) {
      proto::PackedArray packed;
      pack_delta_split(value.data(), base.data(), 1, uint32_t(n), split, &packed);
      EXPECT_EQ(packed.filter(), proto::DELTA_SPLIT);
      const std::vector<float> back = decode(packed, base);
      ASSERT_EQ(back.size(), n);
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(bits(back[i]), bits(value[i])) << "n " << n << " split " << int(split) << " i " << i;
    }
  }
}

TEST(DeltaSplit, PicksTheBaseOnlyForDriftingTensors) {
  std::vector<float> base, value;
  drifting_pair(20000, 3, &base, &value);
  const DeltaPlan drifting = plan_float32_delta(value.data(), base.data(), value.size());
  EXPECT_TRUE(drifting.against_base);
  // The chosen split beats a split far off: the packed array is smaller.
  proto::PackedArray chosen, off;
  pack_delta_split(value.data(), base.data(), 1, uint32_t(value.size()), drifting.split, &chosen);
  pack_delta_split(value.data(), base.data(), 1, uint32_t(value.size()), uint8_t(drifting.split + 12), &off);
  EXPECT_LT(chosen.data().size(), off.data().size());
  EXPECT_LT(chosen.data().size(), value.size() * 3);  // well under the 4 bytes of a float

  // A gradient is no drift of the previous one: stored on its own.
  std::mt19937 rng(9);
  std::normal_distribution<float> noise(0.0f, 1e-3f);
  std::vector<float> previous(20000), current(20000);
  for (size_t i = 0; i < previous.size(); ++i) previous[i] = noise(rng), current[i] = noise(rng);
  EXPECT_FALSE(plan_float32_delta(current.data(), previous.data(), current.size()).against_base);
}

TEST(DeltaSplit, DamagedArraysAreErrorsNotCrashes) {
  std::vector<float> base, value;
  drifting_pair(600, 5, &base, &value);
  proto::PackedArray packed;
  pack_delta_split(value.data(), base.data(), 1, uint32_t(value.size()), 140, &packed);
  const std::string good = packed.data();
  size_t rejected = 0;
  for (size_t cut = 0; cut < good.size(); ++cut) {  // every truncation
    proto::PackedArray damaged = packed;
    damaged.set_data(good.substr(0, cut));
    try {
      (void)decode(damaged, base);
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  EXPECT_EQ(rejected, good.size());  // the low bits' length is exact: no truncation decodes
  proto::PackedArray longer = packed;
  longer.set_data(good + std::string(1, '\0'));
  EXPECT_THROW(decode(longer, base), FormatError);
  proto::PackedArray escaped = packed;  // a high part turned into an escape wants 4 more bytes
  std::string with_escape = good;
  with_escape[1] = char(255);
  escaped.set_data(with_escape);
  EXPECT_THROW(decode(escaped, base), FormatError);
  EXPECT_THROW(unpack_floats(packed, nullptr), FormatError);  // the base is missing
  proto::PackedArray half = packed;
  half.set_type(proto::FLOAT16);  // only float32 is coded this way
  EXPECT_THROW(decode(half, base), FormatError);
  proto::PackedArray future = packed;  // a filter this reader does not know fails, it is not misread
  future.set_filter(proto::ArrayFilter(6));
  EXPECT_THROW(decode(future, base), FormatError);
}

// The writer serializes full-tensor chunks by hand; protobuf must find the same bytes it would write.
TEST(DeltaSplit, HandWrittenFullTensorPayloadIsProtobufs) {
  std::vector<float> base_values, values;
  drifting_pair(3000, 11, &base_values, &values);
  const FullTensor base{7, Quantity::Weight, 0, {30, 100}, base_values, false};
  for (int64_t step : {int64_t(0), int64_t(1), int64_t(123456789), int64_t(-5)})
    for (bool probe : {false, true})
      for (bool with_base : {false, true}) {
        const FullTensor t{7, Quantity::Weight, step, {30, 100}, values, probe};
        bool used_base = false;
        const std::string ours = encode_full_tensor(t, with_base ? &base : nullptr, Precision::Float32, &used_base);
        EXPECT_EQ(used_base, with_base);
        proto::FullTensorChunk m;
        m.set_layer_id(t.layer_id);
        m.set_quantity(proto::WEIGHT);
        m.set_step(t.step);
        m.add_shape(30);
        m.add_shape(100);
        m.set_probe_batch(probe);
        m.set_base_step(with_base ? base.step : -1);
        if (with_base) {
          const DeltaPlan plan = plan_float32_delta(values.data(), base_values.data(), values.size());
          pack_delta_split(values.data(), base_values.data(), 1, uint32_t(values.size()), plan.split,
                           m.mutable_values());
        } else {
          pack_floats(values.data(), 1, uint32_t(values.size()), Precision::Float32, proto::SHUFFLE, nullptr,
                      m.mutable_values());
        }
        EXPECT_EQ(ours, m.SerializeAsString()) << "step " << step << " probe " << probe << " base " << with_base;
        const FullTensorData d = decode_full_tensor(ours, [&](int64_t s) { return s == base.step ? &base : nullptr; });
        EXPECT_EQ(d.base_step, with_base ? 0 : -1);
        ASSERT_EQ(d.tensor.values.size(), values.size());
        EXPECT_EQ(std::memcmp(d.tensor.values.data(), values.data(), values.size() * 4), 0);
      }
  // An empty tensor and a many-dimensional one.
  const FullTensor empty{1, Quantity::Bias, 3, {0}, {}, false};
  proto::FullTensorChunk m;
  ASSERT_TRUE(m.ParseFromString(encode_full_tensor(empty, nullptr, Precision::Float32)));
  EXPECT_EQ(m.values().columns(), 0u);
  const FullTensor deep{1, Quantity::Activation, 3, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2}, {1.0f, 2.0f}, false};
  ASSERT_TRUE(m.ParseFromString(encode_full_tensor(deep, nullptr, Precision::Float32)));
  EXPECT_EQ(m.shape_size(), 13);
}

// The writer's neuron-stats payloads are written by hand too.
TEST(DeltaSplit, HandWrittenNeuronStatsPayloadIsProtobufs) {
  NeuronStatsData data;
  data.layer_id = 3;
  data.blocks.push_back({Quantity::Activation, Statistic::Mean, 4, {0, 10, 200}, {}});
  data.blocks.push_back({Quantity::WeightGrad, Statistic::NanCount, 4, {10, 200000}, {}});
  data.blocks.push_back({Quantity::Bias, Statistic::Max, 2, {}, {}});  // no rows
  for (auto& b : data.blocks)
    for (size_t i = 0; i < b.steps.size() * b.neuron_count; ++i) b.values.push_back(std::sin(float(i)) * 3.0f);
  for (Precision precision : {Precision::Float32, Precision::BFloat16, Precision::Float16})
    for (uint32_t layer : {0u, 3u}) {
      data.layer_id = layer;
      proto::NeuronStatsChunk m;
      m.set_layer_id(layer);
      for (const NeuronBlockData& b : data.blocks) {
        auto* pb = m.add_blocks();
        pb->set_quantity(proto::Quantity(b.quantity));
        pb->set_statistic(proto::Statistic(b.statistic));
        pb->mutable_steps()->Add(b.steps.begin(), b.steps.end());
        const bool exact = b.statistic == Statistic::NanCount;
        pack_floats(b.values.data(), uint32_t(b.steps.size()), b.neuron_count, exact ? Precision::Float32 : precision,
                    proto::XOR_PREVIOUS_SHUFFLE, nullptr, pb->mutable_values());
      }
      EXPECT_EQ(encode_neuron_stats(data, precision), m.SerializeAsString())
          << "precision " << int(precision) << " layer " << layer;
    }
}

}  // namespace
}  // namespace trainscope::format
