#include <gtest/gtest.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>

#include <cmath>
#include <cstring>
#include <thread>

#include "test_support.h"

namespace trainscope::format {
namespace {

using testing::small_model_metadata;
using testing::synthetic_snapshot;
using testing::TempDir;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

void write_run(const std::filesystem::path& dir, int steps, uint32_t neurons, WriterOptions options = {},
               int neuron_interval = 1) {
  const RunMetadata m = small_model_metadata(neurons);
  RunWriter w(dir, m, options);
  for (int s = 0; s < steps; ++s) ASSERT_TRUE(w.append(synthetic_snapshot(s, neurons, m, s % neuron_interval == 0)));
  w.close();
  EXPECT_TRUE(w.status().error.empty()) << w.status().error;
}

TEST(WriterReader, RoundTripsEverything) {
  TempDir dir;
  const uint32_t neurons = 24;
  write_run(dir.path(), 50, neurons, {}, 5);
  RunReader r(dir.path());
  EXPECT_TRUE(r.complete());
  EXPECT_TRUE(r.problems().empty());
  const RunMetadata expected = small_model_metadata(neurons);
  const RunMetadata& m = r.metadata();
  EXPECT_EQ(m.header.model_name, "TestMLP");
  EXPECT_EQ(m.header.config.at("lr"), "0.001");
  EXPECT_EQ(m.header.format_major, 1u);
  EXPECT_GT(m.header.created_unix_ms, 0);
  ASSERT_EQ(m.layers.size(), expected.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    EXPECT_EQ(m.layers[i].name, expected.layers[i].name);
    EXPECT_EQ(m.layers[i].parent_id, expected.layers[i].parent_id);
    EXPECT_EQ(m.layers[i].kind, expected.layers[i].kind);
    EXPECT_EQ(m.layers[i].neuron_count, expected.layers[i].neuron_count);
    EXPECT_EQ(m.layers[i].parameters.size(), expected.layers[i].parameters.size());
  }
  ASSERT_EQ(m.edges.size(), 2u);
  EXPECT_EQ(m.edges[1].from_layer, 3u);
  EXPECT_EQ(m.edges[1].to_layer, 4u);

  auto scalars = r.read_scalars();
  ASSERT_EQ(scalars.size(), 2u);
  EXPECT_EQ(scalars[0].name, "loss");
  ASSERT_EQ(scalars[0].steps.size(), 50u);
  for (int s = 0; s < 50; ++s) {
    EXPECT_EQ(scalars[0].steps[size_t(s)], s);
    EXPECT_EQ(scalars[0].values[size_t(s)], synthetic_snapshot(s, neurons, expected).scalars[0].second);
  }
  EXPECT_EQ(r.snapshot_steps(), (std::vector<int64_t>{0, 5, 10, 15, 20, 25, 30, 35, 40, 45}));
  EXPECT_EQ(r.first_step(), 0);
  EXPECT_EQ(r.last_step(), 49);

  auto summaries = r.read_summaries(2, Quantity::Weight);
  ASSERT_EQ(summaries.size(), 50u);  // summaries every step, neurons every 5
  EXPECT_DOUBLE_EQ(summaries[7].summary.mean, 0.1 * 2 + 0.001 * 7);

  auto series = r.read_neuron_series(2, Quantity::ActivationGrad, Statistic::Max, 10, 30);
  ASSERT_TRUE(series);
  EXPECT_EQ(series->neuron_count, neurons);
  EXPECT_EQ(series->steps, (std::vector<int64_t>{10, 15, 20, 25, 30}));
  for (size_t row = 0; row < series->steps.size(); ++row) {
    const Snapshot s = synthetic_snapshot(series->steps[row], neurons, expected);
    const LayerQuantityRecord& rec = s.layers[1];  // layer 2, activation grad
    ASSERT_EQ(rec.layer_id, 2u);
    ASSERT_EQ(rec.quantity, Quantity::ActivationGrad);
    for (uint32_t n = 0; n < neurons; ++n)
      EXPECT_EQ(bits(series->values[row * neurons + n]), bits(rec.neuron_row(Statistic::Max)[n]));
  }
  EXPECT_FALSE(r.read_neuron_series(2, Quantity::BiasGrad, Statistic::Max));

  const Snapshot snap = r.read_snapshot(20);
  EXPECT_EQ(snap.scalars.size(), 2u);
  const Snapshot truth = synthetic_snapshot(20, neurons, expected);
  ASSERT_EQ(snap.layers.size(), truth.layers.size());
  for (const auto& rec : snap.layers) {
    auto t = std::find_if(truth.layers.begin(), truth.layers.end(), [&](const LayerQuantityRecord& x) {
      return x.layer_id == rec.layer_id && x.quantity == rec.quantity;
    });
    ASSERT_NE(t, truth.layers.end());
    EXPECT_EQ(rec.neuron_stats, kAllStatistics);
    EXPECT_EQ(rec.neuron_values, t->neuron_values);
    EXPECT_DOUBLE_EQ(rec.summary.mean, t->summary.mean);
  }
  EXPECT_THROW(r.read_snapshot(1000), FormatError);
}

TEST(WriterReader, LayerGeometryRoundTripsAndStaysAbsentWhereNotGiven) {
  TempDir dir;
  RunMetadata m = small_model_metadata(4);
  LayerGeometry conv;
  conv.kernel_size = {3, 5};
  conv.stride = {2, 1};
  conv.padding = {1, 2};
  conv.dilation = {1, 2};
  conv.groups = 4;
  conv.transposed = true;
  conv.output_padding = {1, 0};
  LayerGeometry pool;
  pool.kernel_size = pool.stride = {2, 2};
  pool.padding = {0, 0};
  pool.dilation = {1, 1};
  pool.ceil_mode = true;
  m.layers[2].geometry = conv;
  m.layers[3].geometry = pool;
  {
    RunWriter w(dir.path(), m);
    w.close();
  }
  RunReader r(dir.path());
  ASSERT_EQ(r.metadata().layers.size(), m.layers.size());
  ASSERT_TRUE(r.metadata().layers[2].geometry.has_value());
  EXPECT_EQ(*r.metadata().layers[2].geometry, conv);
  ASSERT_TRUE(r.metadata().layers[3].geometry.has_value());
  EXPECT_EQ(*r.metadata().layers[3].geometry, pool);
  EXPECT_FALSE(r.metadata().layers[4].geometry.has_value());
  EXPECT_GE(r.metadata().header.format_minor, 1u);  // geometry came with format 1.1
}

TEST(WriterReader, NanAndInfAreStoredAsTheyAre) {
  TempDir dir;
  RunMetadata m = small_model_metadata(4);
  {
    RunWriter w(dir.path(), m);
    Snapshot s = synthetic_snapshot(3, 4, m);
    s.scalars[0].second = std::nan("");
    s.layers[0].neuron_values[1] = std::numeric_limits<float>::infinity();
    s.layers[0].neuron_values[2] = -std::numeric_limits<float>::infinity();
    s.layers[0].neuron_values[3] = std::nanf("");
    s.layers[0].summary.nan_count = 17;
    w.append(s);
  }
  RunReader r(dir.path());
  auto scalars = r.read_scalars();
  EXPECT_TRUE(std::isnan(scalars[0].values[0]));
  auto series = r.read_neuron_series(2, Quantity::Activation, Statistic::Mean);
  ASSERT_TRUE(series);
  EXPECT_EQ(series->values[1], std::numeric_limits<float>::infinity());
  EXPECT_EQ(series->values[2], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(series->values[3]));
  EXPECT_EQ(r.read_summaries(2, Quantity::Activation)[0].summary.nan_count, 17);
}

TEST(WriterReader, SegmentsRollOverAndEachIsClosed) {
  TempDir dir;
  WriterOptions options;
  options.segment_bytes = 16 << 10;
  options.chunk_bytes = 4 << 10;
  write_run(dir.path(), 300, 64, options);
  RunReader r(dir.path());
  EXPECT_GT(r.segment_files().size(), 3u);
  EXPECT_TRUE(r.complete());
  EXPECT_TRUE(r.problems().empty());
  auto series = r.read_neuron_series(4, Quantity::Weight, Statistic::Mean);
  ASSERT_TRUE(series);
  EXPECT_EQ(series->steps.size(), 300u);
  for (size_t i = 0; i < series->steps.size(); ++i) EXPECT_EQ(series->steps[i], int64_t(i));
  EXPECT_EQ(r.read_scalars()[0].steps.size(), 300u);
  // Every segment starts with the metadata, so each one is self-describing.
  for (size_t sidx = 0; sidx < r.segment_files().size(); ++sidx) {
    auto first =
        std::find_if(r.chunks().begin(), r.chunks().end(), [&](const ChunkInfo& c) { return c.segment == sidx; });
    ASSERT_NE(first, r.chunks().end());
    EXPECT_EQ(first->type, 1);
  }
}

TEST(WriterReader, ReadingOneLayerDecompressesOnlyItsChunks) {
  TempDir dir;
  // 100 layers, each its own chunks.
  RunMetadata m;
  m.header.model_name = "wide";
  for (uint32_t i = 0; i < 100; ++i)
    m.layers.push_back({i, "l" + std::to_string(i), std::nullopt, "Linear", 32, {}, {}, true});
  {
    RunWriter w(dir.path(), m);
    for (int s = 0; s < 40; ++s) {
      Snapshot snap;
      snap.step = s;
      for (uint32_t l = 0; l < 100; ++l) {
        LayerQuantityRecord rec;
        rec.layer_id = l;
        rec.neuron_stats = statistic_bit(Statistic::Mean) | statistic_bit(Statistic::Max);
        rec.neuron_count = 32;
        for (int k = 0; k < 64; ++k) rec.neuron_values.push_back(float(std::sin(s * 0.1 + k + l)));
        snap.layers.push_back(rec);
      }
      w.append(std::move(snap));
    }
  }
  RunReader r(dir.path());
  uint64_t layer_raw = 0, all_raw = 0;
  for (const ChunkInfo& c : r.chunks()) {
    if (c.type != 4) continue;
    all_raw += c.raw_size;
    if (c.layer_id == 42) layer_raw += c.raw_size;
  }
  ASSERT_GT(layer_raw, 0u);
  const uint64_t at_open = r.cache_stats().raw_bytes_decompressed;  // the metadata chunk
  auto series = r.read_neuron_series(42, Quantity::Activation, Statistic::Max);
  ASSERT_TRUE(series);
  EXPECT_EQ(series->steps.size(), 40u);
  EXPECT_EQ(r.cache_stats().raw_bytes_decompressed - at_open, layer_raw);
  EXPECT_LT(layer_raw * 50, all_raw);
  // A second read hits the cache.
  r.read_neuron_series(42, Quantity::Activation, Statistic::Mean);
  EXPECT_EQ(r.cache_stats().raw_bytes_decompressed - at_open, layer_raw);
  EXPECT_GT(r.cache_stats().hits, 0u);
}

// The writer keeps each layer's buffers from chunk to chunk: a layer that changes size, or a quantity that stops,
// must not leak rows into the next chunk.
TEST(WriterReader, NeuronChunksAfterAResizeHoldExactlyTheirRows) {
  TempDir dir;
  RunMetadata m = small_model_metadata(8);
  WriterOptions options;
  options.chunk_bytes = 4 << 10;  // many chunks per layer
  auto record = [](int64_t step, uint32_t neurons, Quantity q) {
    LayerQuantityRecord r;
    r.layer_id = 2;
    r.quantity = q;
    r.neuron_stats = statistic_bit(Statistic::Mean);
    r.neuron_count = neurons;
    for (uint32_t n = 0; n < neurons; ++n) r.neuron_values.push_back(float(step * 1000 + n));
    return r;
  };
  {
    RunWriter w(dir.path(), m, options);
    for (int64_t s = 0; s < 120; ++s) {
      Snapshot snap;
      snap.step = s;
      snap.layers.push_back(record(s, s < 60 ? 8 : 12, Quantity::Activation));
      if (s < 30) snap.layers.push_back(record(s, 8, Quantity::Weight));
      ASSERT_TRUE(w.append(std::move(snap)));
    }
  }
  RunReader r(dir.path());
  for (const ChunkInfo& c : r.chunks()) {
    if (c.type != 4) continue;
    EXPECT_TRUE(c.last_step < 60 || c.first_step >= 60) << "a chunk mixes the two sizes";
  }
  struct Expected {
    Quantity q;
    int64_t first, last;
    uint32_t neurons;
  };
  for (const Expected& e : {Expected{Quantity::Activation, 0, 59, 8}, Expected{Quantity::Activation, 60, 119, 12},
                            Expected{Quantity::Weight, 0, 29, 8}}) {
    auto series = r.read_neuron_series(2, e.q, Statistic::Mean, e.first, 200);
    ASSERT_TRUE(series);
    EXPECT_EQ(series->neuron_count, e.neurons);
    ASSERT_EQ(series->steps.size(), size_t(e.last - e.first + 1));
    for (size_t i = 0; i < series->steps.size(); ++i) {
      ASSERT_EQ(series->steps[i], e.first + int64_t(i));
      for (uint32_t n = 0; n < e.neurons; ++n)
        ASSERT_EQ(series->values[i * e.neurons + n], float(series->steps[i] * 1000 + n));
    }
  }
}

// The writer keeps the snapshots' own rows until a chunk is encoded: every statistic of every record, across
// chunk boundaries, a resize in the middle of a snapshot and a quantity that stops, must come back exactly.
TEST(WriterReader, EveryStatisticOfEveryRecordComesBackExactly) {
  TempDir dir;
  RunMetadata m = small_model_metadata(8);
  WriterOptions options;
  options.chunk_bytes = 6 << 10;
  auto value = [](int64_t step, Quantity q, unsigned stat, uint32_t n) {
    return float(step * 10000 + int64_t(q) * 1000 + stat * 100 + n);
  };
  auto neurons_at = [](Quantity q, int64_t step) -> uint32_t { return q == Quantity::Weight && step >= 25 ? 12 : 8; };
  const Quantity quantities[] = {Quantity::Activation, Quantity::Weight, Quantity::WeightGrad};
  {
    RunWriter w(dir.path(), m, options);
    for (int64_t s = 0; s < 70; ++s) {
      Snapshot snap;
      snap.step = s;
      for (Quantity q : quantities) {
        if (q == Quantity::WeightGrad && s >= 50) continue;
        LayerQuantityRecord r;
        r.layer_id = 2;
        r.quantity = q;
        r.neuron_stats = kAllStatistics;
        r.neuron_count = neurons_at(q, s);
        for (unsigned stat = 0; stat < unsigned(kStatisticCount); ++stat)
          for (uint32_t n = 0; n < r.neuron_count; ++n) r.neuron_values.push_back(value(s, q, stat, n));
        snap.layers.push_back(std::move(r));
      }
      ASSERT_TRUE(w.append(std::move(snap)));
    }
  }
  RunReader r(dir.path());
  for (Quantity q : quantities)
    for (Statistic stat : all_statistics()) {
      const int64_t last = q == Quantity::WeightGrad ? 49 : 69;
      // After the resize: the chunk the resize closed reaches step 25 through the other quantities.
      const int64_t first = q == Quantity::Weight ? 26 : 0;
      auto series = r.read_neuron_series(2, q, stat, first, 200);
      ASSERT_TRUE(series);
      const uint32_t neurons = neurons_at(q, first);
      ASSERT_EQ(series->neuron_count, neurons);
      ASSERT_EQ(series->steps.size(), size_t(last - first + 1));
      for (size_t i = 0; i < series->steps.size(); ++i) {
        ASSERT_EQ(series->steps[i], first + int64_t(i));
        for (uint32_t n = 0; n < neurons; ++n)
          ASSERT_EQ(series->values[i * neurons + n], value(series->steps[i], q, unsigned(stat), n));
      }
    }
  auto early = r.read_neuron_series(2, Quantity::Weight, Statistic::Max, 0, 24);
  ASSERT_TRUE(early);
  ASSERT_EQ(early->neuron_count, 8u);
  ASSERT_EQ(early->steps.size(), 25u);
  for (size_t i = 0; i < 25; ++i)
    for (uint32_t n = 0; n < 8; ++n)
      ASSERT_EQ(early->values[i * 8 + n], value(int64_t(i), Quantity::Weight, unsigned(Statistic::Max), n));
}

TEST(WriterReader, ChunksCompressedInPiecesReadBackExactlyAndStaySmall) {
  // The writer yields its core between 16 KB pieces of each chunk; one zstd frame still, and about as small.
  TempDir pieces("pieces"), whole("whole");
  WriterOptions options;
  options.chunk_bytes = 256 << 10;
  options.yield_slice = std::chrono::microseconds(1);  // every piece yields
  uint64_t yields = 0, pieces_bytes = 0, whole_bytes = 0;
  {
    const RunMetadata m = small_model_metadata(512);
    RunWriter w(pieces.path(), m, options);
    for (int s = 0; s < 60; ++s) ASSERT_TRUE(w.append(synthetic_snapshot(s, 512, m)));
    w.close();
    EXPECT_TRUE(w.status().error.empty()) << w.status().error;
    yields = w.status().core_yields;
    pieces_bytes = w.status().stored_bytes;
  }
  options.yield_slice = std::chrono::microseconds(0);
  {
    const RunMetadata m = small_model_metadata(512);
    RunWriter w(whole.path(), m, options);
    for (int s = 0; s < 60; ++s) ASSERT_TRUE(w.append(synthetic_snapshot(s, 512, m)));
    w.close();
    EXPECT_EQ(w.status().core_yields, 0u);
    whole_bytes = w.status().stored_bytes;
  }
  EXPECT_GT(yields, 20u) << "chunks of 256 KB and more should have been compressed in several pieces";
  EXPECT_LT(double(pieces_bytes), 1.03 * double(whole_bytes)) << pieces_bytes << " vs " << whole_bytes;
  std::printf("stored: in pieces %llu bytes, in one call %llu bytes; %llu yields\n", (unsigned long long)pieces_bytes,
              (unsigned long long)whole_bytes, (unsigned long long)yields);
  RunReader a(pieces.path()), b(whole.path());
  EXPECT_TRUE(a.problems().empty());
  for (uint32_t layer : {2u, 3u, 4u})
    for (Quantity q : {Quantity::Activation, Quantity::Weight, Quantity::WeightGrad})
      for (Statistic stat : {Statistic::Mean, Statistic::Max, Statistic::NanCount}) {
        auto x = a.read_neuron_series(layer, q, stat), y = b.read_neuron_series(layer, q, stat);
        ASSERT_EQ(bool(x), bool(y));
        if (!x) continue;
        ASSERT_EQ(x->steps, y->steps);
        ASSERT_EQ(x->values.size(), y->values.size());
        for (size_t i = 0; i < x->values.size(); ++i) ASSERT_EQ(bits(x->values[i]), bits(y->values[i])) << i;
      }
}

TEST(WriterReader, NeuronStatisticsChunksHaveTheirOwnCompressionLevel) {
  // statistics_zstd_level applies to the per-neuron statistics chunks alone: with it at a very fast zstd level those
  // grow, every other chunk stays byte for byte the same size, and all values read back exactly.
  TempDir strong("strong"), fast("fast");
  WriterOptions options;
  options.flush_interval = std::chrono::hours(1);  // chunks cut by size alone: the same chunks in both runs
  options.statistics_zstd_level = 6;
  write_run(strong.path(), 80, 256, options);
  options.statistics_zstd_level = -50;
  write_run(fast.path(), 80, 256, options);
  RunReader a(strong.path()), b(fast.path());
  ASSERT_EQ(a.chunks().size(), b.chunks().size());
  uint64_t stats_a = 0, stats_b = 0;
  size_t other_chunks = 0;
  for (size_t i = 0; i < a.chunks().size(); ++i) {
    const ChunkInfo &x = a.chunks()[i], &y = b.chunks()[i];
    ASSERT_EQ(x.type, y.type) << i;
    ASSERT_EQ(x.raw_size, y.raw_size) << i;
    if (x.type == 4) {  // NeuronStats
      stats_a += x.stored_size;
      stats_b += y.stored_size;
    } else if (x.type != 1) {  // metadata holds the wall-clock creation time: its compressed size may differ by a byte
      EXPECT_EQ(x.stored_size, y.stored_size) << "chunk " << i << " of type " << x.type;
      ++other_chunks;
    }
  }
  EXPECT_GT(other_chunks, 0u);
  EXPECT_GT(double(stats_b), 1.2 * double(stats_a)) << stats_b << " vs " << stats_a;
  size_t series = 0;
  for (uint32_t layer : {2u, 3u, 4u})
    for (Quantity q : {Quantity::Activation, Quantity::WeightGrad}) {
      auto x = a.read_neuron_series(layer, q, Statistic::Std), y = b.read_neuron_series(layer, q, Statistic::Std);
      ASSERT_EQ(bool(x), bool(y));
      if (!x) continue;
      ++series;
      ASSERT_EQ(x->values.size(), y->values.size());
      for (size_t i = 0; i < x->values.size(); ++i) ASSERT_EQ(bits(x->values[i]), bits(y->values[i])) << i;
    }
  EXPECT_GE(series, 3u);
}

TEST(WriterReader, CacheStaysWithinItsBound) {
  TempDir dir;
  WriterOptions options;
  options.chunk_bytes = 8 << 10;
  write_run(dir.path(), 200, 64, options);
  ReaderOptions ro;
  ro.cache_bytes = 64 << 10;
  RunReader r(dir.path(), ro);
  for (uint32_t layer : {2u, 3u, 4u})
    for (Quantity q : {Quantity::Activation, Quantity::Weight}) {
      auto s = r.read_neuron_series(layer, q, Statistic::Std);
      ASSERT_TRUE(s);
      EXPECT_EQ(s->steps.size(), 200u);
      EXPECT_LE(r.cache_stats().bytes_held, ro.cache_bytes);
    }
  EXPECT_GT(r.cache_stats().raw_bytes_decompressed, ro.cache_bytes);  // it really had to evict
}

TEST(WriterReader, FullTensorsWithKeyframesAndDeltasAreBitExact) {
  TempDir dir;
  RunMetadata m = small_model_metadata(8);
  WriterOptions options;
  options.keyframe_interval = 4;
  options.segment_bytes = 200 << 10;  // roll-over in the middle restarts the chain
  const size_t count = 8 * 1024;
  {
    RunWriter w(dir.path(), m, options);
    for (int s = 0; s < 30; ++s) {
      FullTensor t{2, Quantity::Weight, s * 10, {8, 1024}, testing::drifting_weights(count, s * 10), false};
      if (s == 13) t.values[5] = std::nanf("");
      ASSERT_TRUE(w.append(t));
    }
    FullTensor probe{3, Quantity::Activation, 100, {2, 4}, {1, 2, 3, 4, 5, 6, 7, 8}, true};
    w.append(probe);
  }
  RunReader r(dir.path());
  EXPECT_GT(r.segment_files().size(), 1u);
  const auto steps = r.full_tensor_steps(2, Quantity::Weight);
  ASSERT_EQ(steps.size(), 30u);
  size_t keyframes = 0;
  for (const ChunkInfo& c : r.chunks())
    if (c.type == 5 && c.layer_id == 2) keyframes += (c.aux >> 9) & 1;
  EXPECT_LT(keyframes, 15u);
  EXPECT_GE(keyframes, 8u);
  for (int s = 29; s >= 0; --s) {  // backwards: every read needs its base chain
    auto t = r.read_full_tensor(2, Quantity::Weight, s * 10);
    ASSERT_TRUE(t) << s;
    EXPECT_EQ(t->shape, (std::vector<int64_t>{8, 1024}));
    auto expected = testing::drifting_weights(count, s * 10);
    if (s == 13) expected[5] = std::nanf("");
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(bits(t->values[i]), bits(expected[i])) << "step " << s * 10;
  }
  auto probe = r.read_full_tensor(3, Quantity::Activation, 100, true);
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->values[7], 8.0f);
  EXPECT_FALSE(r.read_full_tensor(3, Quantity::Activation, 100, false));
}

TEST(WriterReader, LossyPrecisionIsCloseAndKeepsCountsExact) {
  TempDir dir;
  RunMetadata m = small_model_metadata(16);
  WriterOptions options;
  options.precision = Precision::BFloat16;
  {
    RunWriter w(dir.path(), m, options);
    Snapshot s = synthetic_snapshot(1, 16, m);
    s.layers[0].neuron_values[6 * 16 + 3] = 12345.0f;  // a NaN count per neuron must stay exact
    w.append(s);
  }
  RunReader r(dir.path());
  auto mean = r.read_neuron_series(2, Quantity::Activation, Statistic::Mean);
  auto nans = r.read_neuron_series(2, Quantity::Activation, Statistic::NanCount);
  ASSERT_TRUE(mean && nans);
  const auto truth = synthetic_snapshot(1, 16, m);
  for (uint32_t n = 0; n < 16; ++n) EXPECT_NEAR(mean->values[n], truth.layers[0].neuron_row(Statistic::Mean)[n], 0.02);
  EXPECT_EQ(nans->values[3], 12345.0f);
}

TEST(WriterReader, LatestMetadataWins) {
  TempDir dir;
  RunMetadata m = small_model_metadata(4);
  {
    RunWriter w(dir.path(), m);
    w.append(synthetic_snapshot(0, 4, m));
    m.edges.push_back({4, 2, true});
    m.layers[2].output_shape = {4};
    w.set_metadata(m);
    w.append(synthetic_snapshot(1, 4, m));
  }
  RunReader r(dir.path());
  ASSERT_EQ(r.metadata().edges.size(), 3u);
  EXPECT_TRUE(r.metadata().edges[2].recurrent);
}

TEST(WriterReader, FullQueueDropsAndRecordsTheGap) {
  TempDir dir;
  RunMetadata m = small_model_metadata(256);
  WriterOptions options;
  options.queue_bytes = 1;  // room for one item at a time
  options.queue_policy = QueuePolicy::DropAndRecord;
  uint64_t dropped = 0;
  {
    RunWriter w(dir.path(), m, options);
    for (int s = 0; s < 200; ++s) dropped += w.append(synthetic_snapshot(s, 256, m)) ? 0 : 1;
    w.close();
    EXPECT_EQ(w.status().snapshots_dropped, dropped);
    EXPECT_EQ(w.status().snapshots_written + dropped, 200u);
  }
  ASSERT_GT(dropped, 0u) << "the writer kept up with a one-item queue; the test did not exercise dropping";
  RunReader r(dir.path());
  uint64_t recorded_gap = 0;
  for (const GapInfo& g : r.gaps()) {
    recorded_gap += g.dropped_snapshots;
    EXPECT_LE(g.first_step, g.last_step);
  }
  EXPECT_EQ(recorded_gap, dropped);
  EXPECT_EQ(r.read_scalars()[0].steps.size(), 200u - dropped);
}

TEST(WriterReader, BlockingQueueLosesNothing) {
  TempDir dir;
  RunMetadata m = small_model_metadata(256);
  WriterOptions options;
  options.queue_bytes = 1;
  options.queue_policy = QueuePolicy::Block;
  {
    RunWriter w(dir.path(), m, options);
    for (int s = 0; s < 100; ++s) ASSERT_TRUE(w.append(synthetic_snapshot(s, 256, m)));
  }
  RunReader r(dir.path());
  EXPECT_EQ(r.read_scalars()[0].steps.size(), 100u);
  EXPECT_TRUE(r.gaps().empty());
}

TEST(WriterReader, LiveRunIsReadableAndRefreshPicksUpNewData) {
  TempDir dir;
  RunMetadata m = small_model_metadata(8);
  RunWriter w(dir.path(), m);
  for (int s = 0; s < 10; ++s) w.append(synthetic_snapshot(s, 8, m));
  w.flush();
  RunReader r(dir.path());
  EXPECT_FALSE(r.complete());
  EXPECT_EQ(r.read_scalars()[0].steps.size(), 10u);
  for (int s = 10; s < 25; ++s) w.append(synthetic_snapshot(s, 8, m));
  w.flush();
  EXPECT_TRUE(r.refresh());
  EXPECT_EQ(r.read_scalars()[0].steps.size(), 25u);
  w.close();
  r.refresh();
  EXPECT_TRUE(r.complete());
  EXPECT_EQ(r.last_step(), 24);
}

TEST(WriterReader, FlushIntervalBoundsWhatAKillWouldLose) {
  TempDir dir;
  RunMetadata m = small_model_metadata(8);
  WriterOptions options;
  options.flush_interval = std::chrono::milliseconds(100);
  RunWriter w(dir.path(), m, options);
  w.append(synthetic_snapshot(0, 8, m));
  // No flush() call: the background thread must write the buffered step on its own.
  bool seen = false;
  for (int i = 0; i < 50 && !seen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    RunReader r(dir.path());
    seen = !r.read_scalars().empty();
  }
  EXPECT_TRUE(seen);
}

TEST(WriterReader, RequestedFlushWritesWhatIsStillQueued) {
  TempDir dir;
  RunMetadata m = small_model_metadata(8);
  WriterOptions options;
  options.flush_interval = std::chrono::seconds(60);  // only the request can write the data in time
  RunWriter w(dir.path(), m, options);
  for (int s = 0; s < 50; ++s) w.append(synthetic_snapshot(s, 8, m));
  w.request_flush();  // no wait: the 50 snapshots may all still be queued
  bool all = false;
  for (int i = 0; i < 100 && !all; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    RunReader r(dir.path());
    all = !r.read_scalars().empty() && r.read_scalars()[0].steps.size() == 50;
  }
  EXPECT_TRUE(all);
}

// Hand-overs a millisecond apart: the background thread keeps looking for work itself, so hardly any of them has
// to wake it, and every snapshot is still taken (processed within a poll period, not at the next flush).
TEST(WriterReader, SteadyHandOversNeedNoWakeUpAndAreAllTaken) {
  const auto hand_over = [](const std::filesystem::path& dir, std::chrono::microseconds poll_period) {
    RunMetadata m = small_model_metadata(64);
    WriterOptions options;
    options.poll_period = poll_period;
    options.flush_interval = std::chrono::seconds(60);
    RunWriter w(dir, m, options);
    constexpr int kSteps = 60;
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_TRUE(w.append(synthetic_snapshot(s, 64, m)));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // Taken without a flush: the last one within a few poll periods.
    for (int i = 0; i < 200 && w.status().snapshots_written < uint64_t(kSteps); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(w.status().snapshots_written, uint64_t(kSteps));
    return w.status().wakeups;
  };
  TempDir polled, woken;
  const uint64_t polled_wakeups = hand_over(polled.path(), std::chrono::microseconds(1000));
  const uint64_t woken_wakeups = hand_over(woken.path(), std::chrono::microseconds(0));
  EXPECT_EQ(woken_wakeups, 60u) << "without polling every hand-over wakes the thread";
  EXPECT_LT(polled_wakeups, 20u) << "polling: only hand-overs after a pause of more than 5 ms wake it";
}

TEST(WriterReader, UnwritableOrUsedDirectoryIsAClearError) {
  TempDir dir;
  testing::write_file(dir / "file", {1, 2, 3});
  try {
    RunWriter w(dir / "file" / "run", small_model_metadata());
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "file" / "run").string()), std::string::npos) << e.what();
  }
  { RunWriter w(dir / "used", small_model_metadata()); }
  EXPECT_THROW(RunWriter(dir / "used", small_model_metadata()), FormatError);
}

TEST(WriterReader, MultiRankDirectoryOpensRankZero) {
  TempDir dir;
  for (uint32_t rank : {0u, 1u}) {
    RunMetadata m = small_model_metadata(4);
    m.header.rank = rank;
    m.header.world_size = 2;
    RunWriter w(dir / ("rank-" + std::to_string(rank)), m);
    w.append(synthetic_snapshot(rank, 4, m));
  }
  const auto ranks = rank_directories(dir.path());
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_EQ(RunReader(ranks[1]).metadata().header.rank, 1u);
  RunReader r(dir.path());
  EXPECT_EQ(r.metadata().header.rank, 0u);
  EXPECT_EQ(r.metadata().header.world_size, 2u);
}

}  // namespace
}  // namespace trainscope::format
