// The read path's fast decoding: SIMD unshuffling and row XOR at every length and width, the wire-format reader
// that decodes arrays where they lie in the payload (against protobuf's own parser, on every wire form protobuf
// accepts), the reader's no-copy tensor API, and summary chunks read ahead on a second thread.
#include <gtest/gtest.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "array_codec.h"
#include "chunk_codec.h"
#include "segment.h"
#include "test_support.h"
#include "trainscope.pb.h"

namespace trainscope::format {
namespace {

using testing::bits;

// Values with every byte position in use: random bit patterns (NaN payloads and subnormals included) mixed with
// smooth rows, so that both the SIMD body and the scalar tail see all planes non-zero.
std::vector<float> test_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = rng();
    std::memcpy(&v[i], &u, 4);
    if (i % 3 == 0) v[i] = 1.0f + 1e-3f * float(i);
  }
  return v;
}

// Row counts and column counts around the vector widths (16 elements per SIMD step) and the special row widths.
const uint32_t kRows[] = {1, 2, 3, 7, 37};
const uint32_t kColumns[] = {1, 2, 3, 4, 5, 8, 15, 16, 17, 33, 64};

TEST(ReadPath, Float32DecodesBitExactlyAtEveryShape) {
  for (uint32_t rows : kRows)
    for (uint32_t columns : kColumns) {
      const size_t n = size_t(rows) * columns;
      const std::vector<float> v = test_floats(n, rows * 100 + columns), base = test_floats(n, 7);
      for (auto filter : {proto::NONE, proto::SHUFFLE, proto::XOR_PREVIOUS_SHUFFLE, proto::XOR_BASE_SHUFFLE}) {
        proto::PackedArray packed;
        pack_floats(v.data(), rows, columns, Precision::Float32, filter, base.data(), &packed);
        const std::vector<float> back = unpack_floats(view_of(packed), base.data());
        ASSERT_EQ(back.size(), n);
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(bits(back[i]), bits(v[i])) << rows << "x" << columns << " filter " << filter << " i " << i;
        std::vector<float> into(n, -1.0f);
        unpack_floats_into(view_of(packed), base.data(), into.data());
        ASSERT_EQ(std::memcmp(into.data(), v.data(), n * 4), 0) << rows << "x" << columns << " filter " << filter;
      }
    }
}

TEST(ReadPath, Float64DecodesBitExactlyAtEveryShape) {
  for (uint32_t rows : kRows)
    for (uint32_t columns : kColumns) {
      const size_t n = size_t(rows) * columns;
      std::mt19937_64 rng(rows * 1000 + columns);
      std::vector<double> v(n);
      for (size_t i = 0; i < n; ++i) {
        const uint64_t u = rng();
        std::memcpy(&v[i], &u, 8);
        if (i % 4 == 1) v[i] = std::numeric_limits<double>::quiet_NaN();
      }
      for (auto filter : {proto::NONE, proto::SHUFFLE, proto::XOR_PREVIOUS_SHUFFLE}) {
        proto::PackedArray packed;
        pack_doubles(v.data(), rows, columns, filter, &packed);
        const std::vector<double> back = unpack_doubles(view_of(packed));
        ASSERT_EQ(back.size(), n);
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(bits(back[i]), bits(v[i])) << rows << "x" << columns << " filter " << filter << " i " << i;
      }
    }
}

TEST(ReadPath, SixteenBitDecodesToTheRoundedValuesAtEveryShape) {
  for (Precision p : {Precision::Float16, Precision::BFloat16})
    for (uint32_t rows : kRows)
      for (uint32_t columns : kColumns) {
        const size_t n = size_t(rows) * columns;
        std::vector<float> v(n), base(n);
        for (size_t i = 0; i < n; ++i) {
          v[i] = std::sin(0.37f * float(i)) * 100.0f + float(i % 5);
          base[i] = v[i] * 0.999f;
        }
        const auto rounded = [&](float x) {
          return p == Precision::Float16 ? half_to_float(float_to_half(x)) : bfloat16_to_float(float_to_bfloat16(x));
        };
        for (auto filter : {proto::NONE, proto::SHUFFLE, proto::XOR_PREVIOUS_SHUFFLE, proto::XOR_BASE_SHUFFLE}) {
          proto::PackedArray packed;
          pack_floats(v.data(), rows, columns, p, filter, base.data(), &packed);
          const std::vector<float> back = unpack_floats(view_of(packed), base.data());
          ASSERT_EQ(back.size(), n);
          for (size_t i = 0; i < n; ++i)
            ASSERT_EQ(bits(back[i]), bits(rounded(v[i]))) << rows << "x" << columns << " filter " << filter;
        }
      }
}

TEST(ReadPath, ForgedArraysAreRejectedBeforeAnyAllocation) {
  const uint8_t data[16] = {};
  PackedArrayView v;
  v.data = data;
  v.size = sizeof data;
  v.rows = 0xFFFFFFFFu, v.columns = 0xFFFFFFFFu;  // rows x columns x 4 does not even fit in 64 bits
  for (int32_t type : {int32_t(proto::FLOAT32), int32_t(proto::FLOAT64), int32_t(proto::FLOAT16)}) {
    v.type = type;
    EXPECT_THROW(unpack_floats(v), FormatError) << type;
    EXPECT_THROW(unpack_doubles(v), FormatError) << type;
  }
  v.rows = 1, v.columns = 4, v.type = proto::FLOAT32;
  v.filter = 9;
  EXPECT_THROW(unpack_floats(v), FormatError);
  v.filter = proto::XOR_BASE_SHUFFLE;
  EXPECT_THROW(unpack_floats(v), FormatError);  // no base given
  v.filter = proto::SHUFFLE;
  v.type = 7;
  EXPECT_THROW(unpack_floats(v), FormatError);
}

// Hand-made protobuf wire bytes, for the forms protobuf accepts but never writes itself.
struct Wire {
  std::string bytes;
  Wire& varint(uint64_t v) {
    do {
      bytes.push_back(char((v & 0x7F) | (v > 0x7F ? 0x80 : 0)));
      v >>= 7;
    } while (v);
    return *this;
  }
  Wire& tag(uint32_t field, uint32_t wire_type) { return varint(uint64_t(field) << 3 | wire_type); }
  Wire& number(uint32_t field, uint64_t v) { return tag(field, 0).varint(v); }
  Wire& message(uint32_t field, const std::string& body) {
    tag(field, 2).varint(body.size());
    bytes += body;
    return *this;
  }
  Wire& fixed64(uint32_t field, uint64_t v) {
    tag(field, 1);
    for (int i = 0; i < 8; ++i) bytes.push_back(char(v >> (8 * i)));
    return *this;
  }
  Wire& fixed32(uint32_t field, uint32_t v) {
    tag(field, 5);
    for (int i = 0; i < 4; ++i) bytes.push_back(char(v >> (8 * i)));
    return *this;
  }
  Wire& unknown_fields() {  // one of each wire type, under field numbers no message uses
    number(90, 12345);
    fixed64(91, 0x0102030405060708ull);
    message(92, "anything");
    fixed32(93, 77);
    return *this;
  }
};

std::string packed_array_body(const proto::PackedArray& a) {
  return a.SerializeAsString();
}

NeuronStatsData stats_sample() {
  NeuronStatsData d;
  d.layer_id = 4;
  for (auto s : {Statistic::Mean, Statistic::NanCount}) {
    NeuronBlockData b{Quantity::WeightGrad, s, 3, {10, 20, 30, 40, 50}, {}};
    b.values = test_floats(15, uint32_t(s));
    d.blocks.push_back(b);
  }
  return d;
}

void expect_same(const NeuronStatsData& a, const NeuronStatsData& b) {
  EXPECT_EQ(a.layer_id, b.layer_id);
  ASSERT_EQ(a.blocks.size(), b.blocks.size());
  for (size_t i = 0; i < a.blocks.size(); ++i) {
    EXPECT_EQ(a.blocks[i].quantity, b.blocks[i].quantity);
    EXPECT_EQ(a.blocks[i].statistic, b.blocks[i].statistic);
    EXPECT_EQ(a.blocks[i].neuron_count, b.blocks[i].neuron_count);
    EXPECT_EQ(a.blocks[i].steps, b.blocks[i].steps);
    ASSERT_EQ(a.blocks[i].values.size(), b.blocks[i].values.size());
    EXPECT_EQ(std::memcmp(a.blocks[i].values.data(), b.blocks[i].values.data(), a.blocks[i].values.size() * 4), 0);
  }
}

TEST(ReadPath, NeuronStatsDecodeEveryWireFormProtobufAccepts) {
  const NeuronStatsData original = stats_sample();
  const std::string canonical = encode_neuron_stats(original, Precision::Float32);
  expect_same(decode_neuron_stats(canonical), original);

  // The same chunk written the ways protobuf also reads: unknown fields of every wire type everywhere, steps
  // unpacked, the values message split in two (merged), layer_id given twice (the last wins).
  proto::NeuronStatsChunk m;
  ASSERT_TRUE(m.ParseFromString(canonical));
  Wire chunk;
  chunk.number(1, 99).unknown_fields();
  for (const auto& b : m.blocks()) {
    Wire block;
    block.unknown_fields().number(1, uint64_t(b.quantity())).number(2, uint64_t(b.statistic()));
    for (int64_t s : b.steps()) block.number(3, uint64_t(s));
    proto::PackedArray first = b.values(), second;
    first.clear_data();
    first.clear_columns();
    second.set_columns(b.values().columns());
    second.set_data(b.values().data());
    block.message(4, packed_array_body(first)).unknown_fields().message(4, packed_array_body(second));
    chunk.message(2, block.bytes);
  }
  chunk.number(1, original.layer_id).unknown_fields();
  ASSERT_TRUE(proto::NeuronStatsChunk().ParseFromString(chunk.bytes));  // protobuf agrees it is valid
  expect_same(decode_neuron_stats(chunk.bytes), original);
}

TEST(ReadPath, SummariesAndFullTensorsDecodeUnusualWireForms) {
  SummaryData summaries;
  for (int i = 0; i < 21; ++i) {
    SummaryRecord r{uint32_t(i % 3), Quantity(i % 6), int64_t(i), {}, i % 2 == 0};
    r.summary.mean = 0.5 * i, r.summary.norm = std::sqrt(double(i)), r.summary.numel = 64;
    r.summary.nan_count = i == 7 ? 3 : 0;
    summaries.records.push_back(r);
  }
  proto::LayerSummaryChunk m;
  ASSERT_TRUE(m.ParseFromString(encode_summaries(summaries)));
  Wire w;  // every repeated number unpacked, unknown fields between them
  for (int i = 0; i < m.layer_id_size(); ++i)
    w.number(1, m.layer_id(i)).number(2, m.quantity(i)).number(3, uint64_t(m.step(i))).unknown_fields();
  for (const auto& f : m.fields()) w.message(4, packed_array_body(f));
  for (bool b : m.has_neuron_stats()) w.number(5, b ? 7 : 0);  // any non-zero varint is true
  const SummaryData back = decode_summaries(w.bytes);
  const SummaryData canonical = decode_summaries(m.SerializeAsString());
  ASSERT_EQ(back.records.size(), canonical.records.size());
  for (size_t i = 0; i < back.records.size(); ++i) {
    EXPECT_EQ(back.records[i].layer_id, canonical.records[i].layer_id);
    EXPECT_EQ(back.records[i].step, canonical.records[i].step);
    EXPECT_EQ(back.records[i].has_neuron_stats, canonical.records[i].has_neuron_stats);
    for (Statistic s : all_statistics())
      EXPECT_EQ(bits(back.records[i].summary.get(s)), bits(canonical.records[i].summary.get(s)));
    EXPECT_EQ(back.records[i].summary.numel, canonical.records[i].summary.numel);
  }

  FullTensor t{5, Quantity::Bias, 70, {3, 5}, test_floats(15, 3), true};
  proto::FullTensorChunk ft;
  ASSERT_TRUE(ft.ParseFromString(encode_full_tensor(t, nullptr, Precision::Float32)));
  Wire tw;
  tw.unknown_fields().number(1, t.layer_id).number(2, uint64_t(t.quantity)).number(3, uint64_t(t.step));
  tw.number(4, 3).number(4, 5).message(5, packed_array_body(ft.values())).number(6, uint64_t(-1)).number(7, 1);
  const FullTensorData d = decode_full_tensor(tw.bytes, nullptr);
  EXPECT_EQ(d.tensor.layer_id, t.layer_id);
  EXPECT_EQ(d.tensor.quantity, t.quantity);
  EXPECT_EQ(d.tensor.step, t.step);
  EXPECT_EQ(d.tensor.shape, t.shape);
  EXPECT_TRUE(d.tensor.probe_batch);
  EXPECT_EQ(d.base_step, -1);
  ASSERT_EQ(d.tensor.values.size(), t.values.size());
  EXPECT_EQ(std::memcmp(d.tensor.values.data(), t.values.data(), t.values.size() * 4), 0);
}

TEST(ReadPath, DamagedPayloadsAreFormatErrors) {
  const std::string payload = encode_neuron_stats(stats_sample(), Precision::Float32);
  // Every prefix: a cut inside a field fails to parse, a cut between fields leaves an inconsistent block; either
  // way a FormatError (or, at field boundaries, fewer blocks), never anything else.
  for (size_t n = 0; n < payload.size(); ++n) {
    try {
      (void)decode_neuron_stats(payload.substr(0, n));
    } catch (const FormatError&) {
    }
  }
  Wire group;
  group.tag(2, 3);  // a group: not proto3
  EXPECT_THROW(decode_neuron_stats(group.bytes), FormatError);
  Wire field_zero;
  field_zero.number(0, 1);
  EXPECT_THROW(decode_neuron_stats(field_zero.bytes), FormatError);
  Wire overlong;
  overlong.tag(1, 0);
  for (int i = 0; i < 11; ++i) overlong.bytes.push_back(char(0x80));
  EXPECT_THROW(decode_neuron_stats(overlong.bytes), FormatError);
  Wire too_long;
  too_long.tag(2, 2).varint(1000);  // longer than what follows
  EXPECT_THROW(decode_neuron_stats(too_long.bytes), FormatError);
  Wire negative;  // an enum of -1 is a ten-byte varint; it must not pass as a quantity
  negative.message(2, Wire().number(1, uint64_t(-1)).bytes);
  EXPECT_THROW(decode_neuron_stats(negative.bytes), FormatError);
  // Packed varints: one running past its field, one longer than ten bytes.
  Wire cut_packed;
  cut_packed.message(1, std::string("\x05\x80", 2));
  EXPECT_THROW(decode_summaries(cut_packed.bytes), FormatError);
  Wire long_packed;
  long_packed.message(1, std::string(11, char(0x80)) + std::string(1, char(1)));
  EXPECT_THROW(decode_summaries(long_packed.bytes), FormatError);
  Wire negative_tensor;
  negative_tensor.number(2, uint64_t(-3));
  EXPECT_THROW(decode_full_tensor(negative_tensor.bytes, nullptr), FormatError);
}

TEST(ReadPath, FullTensorViewSharesTheCacheAndOutlivesIt) {
  testing::TempDir dir;
  const RunMetadata m = testing::small_model_metadata(8);
  WriterOptions options;
  options.keyframe_interval = 6;
  const size_t count = 4 * 1024;
  {
    RunWriter w(dir.path(), m, options);
    for (int s = 0; s < 14; ++s)
      ASSERT_TRUE(w.append(FullTensor{2, Quantity::Weight, s, {4, 1024}, testing::drifting_weights(count, s), false}));
  }
  RunReader r(dir.path());
  // Cold cache, a delta deep in its chain: its bases are decoded while its own payload is being read.
  const auto t = r.full_tensor(2, Quantity::Weight, 10);
  ASSERT_TRUE(t);
  const std::vector<float> expected = testing::drifting_weights(count, 10);
  ASSERT_EQ(t->values.size(), count);
  EXPECT_EQ(std::memcmp(t->values.data(), expected.data(), count * 4), 0);
  EXPECT_EQ(r.full_tensor(2, Quantity::Weight, 10), t);  // the cached tensor itself, not a copy
  r.clear_cache();
  EXPECT_EQ(std::memcmp(t->values.data(), expected.data(), count * 4), 0);  // still the caller's
  const auto copy = r.read_full_tensor(2, Quantity::Weight, 10);
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->values, t->values);
  for (int s = 13; s >= 0; --s) {
    const auto each = r.full_tensor(2, Quantity::Weight, s);
    ASSERT_TRUE(each) << s;
    const std::vector<float> want = testing::drifting_weights(count, s);
    EXPECT_EQ(std::memcmp(each->values.data(), want.data(), count * 4), 0) << s;
  }
  EXPECT_FALSE(r.full_tensor(2, Quantity::Weight, 14));
  EXPECT_FALSE(r.full_tensor(3, Quantity::Weight, 10));
}

// `steps` snapshots of a 4-layer model (per-neuron statistics every 10th) in chunks of about `chunk_bytes`.
void write_small_run(const std::filesystem::path& dir, size_t chunk_bytes, int steps) {
  const RunMetadata m = testing::small_model_metadata(4);
  WriterOptions options;
  options.chunk_bytes = chunk_bytes;
  RunWriter w(dir, m, options);
  for (int s = 0; s < steps; ++s) ASSERT_TRUE(w.append(testing::synthetic_snapshot(s, 4, m, s % 10 == 0)));
}

TEST(ReadPath, SummaryChunksAsColumnsHoldWhatTheRecordsHold) {
  testing::TempDir dir;
  write_small_run(dir.path(), 16 << 10, 300);  // several layer-summary chunks
  for (bool cached : {false, true}) {
    RunReader r(dir.path());
    std::vector<int64_t> steps;
    const std::vector<LayerQuantityRecord> records = r.read_all_summaries(INT64_MIN, INT64_MAX, &steps);
    if (!cached) r.clear_cache();  // columns decoded from the file, else transposed from the cached records
    const uint64_t read_before = r.cache_stats().stored_bytes_read;
    size_t i = 0, chunks = 0, flagged = 0;
    int64_t previous_last = INT64_MIN;
    r.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const SummaryColumns& c) {
      ++chunks;
      EXPECT_GT(c.first_step, previous_last);
      previous_last = c.last_step;
      for (size_t k = 0; k < c.size; ++k, ++i) {
        ASSERT_LT(i, records.size());
        EXPECT_EQ(c.step[k], steps[i]);
        EXPECT_GE(c.step[k], c.first_step);
        EXPECT_LE(c.step[k], c.last_step);
        EXPECT_EQ(c.layer_id[k], records[i].layer_id);
        EXPECT_EQ(c.quantity[k], records[i].quantity);
        const TensorSummary got = c.summary(k), want = records[i].summary;
        for (Statistic st : all_statistics()) EXPECT_EQ(bits(got.get(st)), bits(want.get(st)));
        EXPECT_EQ(bits(got.numel), bits(want.numel));
        flagged += c.has_neuron_stats[k];
      }
    });
    EXPECT_EQ(i, records.size());
    EXPECT_GT(chunks, 2u);
    EXPECT_EQ(flagged, 30u * 9);  // every 10th step, three quantities of three leaf layers
    // Decoded without the cache: read from the file again, and nothing kept.
    EXPECT_EQ(r.cache_stats().stored_bytes_read > read_before, !cached);
  }
}

// One pass of for_each_summary_chunk as plain data: every chunk's step range and records, and the reader's
// problems and read counters afterwards.
struct SummaryPass {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<std::tuple<uint32_t, Quantity, int64_t, uint8_t>> keys;
  std::vector<uint64_t> values;  // every field's bits, record after record
  std::vector<std::string> problems;
  uint64_t stored_read = 0, raw_decompressed = 0;
};

void add_chunk(const SummaryColumns& c, SummaryPass* pass) {
  pass->ranges.emplace_back(c.first_step, c.last_step);
  for (size_t k = 0; k < c.size; ++k) {
    pass->keys.emplace_back(c.layer_id[k], c.quantity[k], c.step[k], c.has_neuron_stats[k]);
    for (int f = 0; f <= kStatisticCount; ++f) pass->values.push_back(bits(c.field[f][k]));
  }
}

void finish_pass(const RunReader& r, const CacheStats& before, SummaryPass* pass) {
  for (const Problem& p : r.problems()) pass->problems.push_back(p.message);
  pass->stored_read = r.cache_stats().stored_bytes_read - before.stored_bytes_read;
  pass->raw_decompressed = r.cache_stats().raw_bytes_decompressed - before.raw_bytes_decompressed;
}

void expect_same_pass(const SummaryPass& got, const SummaryPass& want, const std::string& what) {
  EXPECT_EQ(got.ranges, want.ranges) << what;
  EXPECT_EQ(got.keys, want.keys) << what;
  EXPECT_EQ(got.values, want.values) << what;
  EXPECT_EQ(got.problems, want.problems) << what;
  EXPECT_EQ(got.stored_read, want.stored_read) << what;
  EXPECT_EQ(got.raw_decompressed, want.raw_decompressed) << what;
}

TEST(ReadPath, SummaryChunksReadAheadEqualTheOnesReadInTurn) {
  testing::TempDir dir;
  write_small_run(dir.path(), 4 << 10, 400);  // many layer-summary chunks
  // Two damaged summary chunks: one whose checksum fails (found by the read-ahead thread), and one in a second
  // segment whose payload is cut short although its checksum holds (found by the decoding on the calling thread).
  const std::filesystem::path segment = dir.path() / "segment-000000.tss";
  std::vector<ChunkInfo> summaries;
  {
    const RunReader written(dir.path());
    for (const ChunkInfo& c : written.chunks())
      if (c.type == uint16_t(ChunkType::LayerSummary)) summaries.push_back(c);
  }
  ASSERT_GT(summaries.size(), 8u);
  {
    std::vector<uint8_t> bytes = testing::read_file(segment);
    bytes[summaries[3].offset + kChunkHeaderSize + summaries[3].stored_size / 2] ^= 0x40;
    testing::write_file(segment, bytes);
    SegmentFileWriter more(dir.path() / segment_file_name(1), 1, 3, 3);
    ChunkHeader h;
    h.type = uint16_t(ChunkType::LayerSummary);
    h.first_step = h.last_step = 1000;
    more.write_chunk(h, std::string("\x0a\x10", 2));  // a packed column cut short
    more.close();
  }

  const auto pass = [&](bool read_ahead, const std::function<void(RunReader&)>& warm,
                        const std::function<void(RunReader&, const SummaryColumns&)>& during) {
    ReaderOptions o;
    o.read_ahead = read_ahead;
    RunReader r(dir.path(), o);
    warm(r);
    const CacheStats before = r.cache_stats();
    SummaryPass out;
    r.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const SummaryColumns& c) {
      add_chunk(c, &out);
      during(r, c);
    });
    finish_pass(r, before, &out);
    return out;
  };
  const auto nothing = [](RunReader&) {};
  const auto quiet = [](RunReader&, const SummaryColumns&) {};
  const SummaryPass in_turn = pass(false, nothing, quiet);
  EXPECT_EQ(in_turn.ranges.size(), summaries.size() - 1) << "the damaged chunks are skipped";
  ASSERT_EQ(in_turn.problems.size(), 2u);
  EXPECT_NE(in_turn.problems[0].find("checksum"), std::string::npos) << in_turn.problems[0];
  EXPECT_NE(in_turn.problems[0].find(std::to_string(summaries[3].offset)), std::string::npos) << in_turn.problems[0];
  EXPECT_NE(in_turn.problems[1].find(segment_file_name(1)), std::string::npos) << in_turn.problems[1];
  expect_same_pass(pass(true, nothing, quiet), in_turn, "read ahead");

  // Some chunks in the cache (those of step 100's snapshot): those come from the cache, the others from the
  // read-ahead, in file order all the same; nothing is read twice.
  const auto warm = [](RunReader& r) { (void)r.read_snapshot(100); };
  const SummaryPass warm_in_turn = pass(false, warm, quiet);
  EXPECT_LT(warm_in_turn.stored_read, in_turn.stored_read);
  expect_same_pass(pass(true, warm, quiet), warm_in_turn, "read ahead, partly cached");

  // The visitor calls the reader meanwhile (the read-ahead works on descriptors of its own).
  const auto busy = [](RunReader& r, const SummaryColumns&) {
    (void)r.read_scalars(0, 10);
    (void)r.refresh();
    r.clear_cache();
  };
  SummaryPass busy_ahead = pass(true, nothing, busy);
  busy_ahead.stored_read = in_turn.stored_read, busy_ahead.raw_decompressed = in_turn.raw_decompressed;
  expect_same_pass(busy_ahead, in_turn, "read ahead, the visitor reading too");

  // A visitor that throws stops the pass (and the read-ahead thread); the reader goes on working.
  ReaderOptions o;
  RunReader r(dir.path(), o);
  size_t visited = 0;
  EXPECT_THROW(r.for_each_summary_chunk(INT64_MIN, INT64_MAX,
                                        [&](const SummaryColumns&) {
                                          if (++visited == 2) throw std::runtime_error("stop");
                                        }),
               std::runtime_error);
  EXPECT_EQ(visited, 2u);
  SummaryPass again;
  const CacheStats before = r.cache_stats();
  r.for_each_summary_chunk(INT64_MIN, INT64_MAX, [&](const SummaryColumns& c) { add_chunk(c, &again); });
  finish_pass(r, before, &again);
  again.stored_read = in_turn.stored_read, again.raw_decompressed = in_turn.raw_decompressed;
  expect_same_pass(again, in_turn, "after a visitor threw");
}

}  // namespace
}  // namespace trainscope::format
