// Damaged recordings: truncated, bit-flipped, of a newer version. Nothing may crash; every intact chunk stays
// readable; every problem names the file and the offset.
#include <gtest/gtest.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>

#include <cstring>

#include "crc32c.h"
#include "segment.h"
#include "test_support.h"

namespace trainscope::format {
namespace {

using testing::read_file;
using testing::TempDir;
using testing::write_file;

struct Fixture {
  TempDir dir{"corrupt"};
  std::filesystem::path segment;
  std::vector<uint8_t> bytes;
  std::vector<ChunkInfo> chunks;

  explicit Fixture(int steps = 60) {
    const RunMetadata m = testing::small_model_metadata(16);
    WriterOptions options;
    options.chunk_bytes = 4 << 10;
    {
      RunWriter w(dir / "run", m, options);
      for (int s = 0; s < steps; ++s) w.append(testing::synthetic_snapshot(s, 16, m));
    }
    segment = dir / "run" / "segment-000000.tss";
    bytes = read_file(segment);
    chunks = RunReader(dir / "run").chunks();
  }
  std::filesystem::path run() const { return dir / "run"; }
};

bool mentions(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

TEST(Corruption, TruncatedAnywhereKeepsEveryCompleteChunk) {
  Fixture f;
  ASSERT_GT(f.chunks.size(), 10u);
  // Cut at every chunk boundary, and inside headers and payloads.
  std::vector<size_t> cuts;
  for (const ChunkInfo& c : f.chunks) {
    cuts.push_back(c.offset);
    cuts.push_back(c.offset + 20);
    cuts.push_back(c.offset + kChunkHeaderSize + c.stored_size / 2);
  }
  cuts.push_back(f.bytes.size() - 1);
  for (size_t cut : cuts) {
    write_file(f.segment, {f.bytes.begin(), f.bytes.begin() + ptrdiff_t(cut)});
    size_t complete = 0;
    for (const ChunkInfo& c : f.chunks) complete += c.offset + kChunkHeaderSize + c.stored_size <= cut;
    if (complete == 0) {
      EXPECT_THROW(RunReader(f.run()), FormatError);  // not even the metadata survived
      continue;
    }
    RunReader r(f.run());
    EXPECT_FALSE(r.complete());
    EXPECT_EQ(r.chunks().size(), complete) << "cut at " << cut;
    EXPECT_TRUE(r.verify().size() == r.problems().size()) << "every indexed chunk must verify";
    bool torn_or_missing = false;
    for (const Problem& p : r.problems()) {
      EXPECT_TRUE(mentions(p.message, f.segment.string())) << p.message;
      torn_or_missing |= p.kind == Problem::Kind::TornTail || p.kind == Problem::Kind::MissingFooter;
    }
    EXPECT_TRUE(torn_or_missing);
    bool exact_torn = false;
    for (const Problem& p : r.problems())
      if (p.kind == Problem::Kind::TornTail)
        exact_torn |= p.offset < cut && mentions(p.message, std::to_string(p.offset));
    const bool at_boundary = std::any_of(f.chunks.begin(), f.chunks.end(), [&](const ChunkInfo& c) {
      return c.offset + kChunkHeaderSize + c.stored_size == cut;
    });
    if (!at_boundary && cut < f.chunks.back().offset + kChunkHeaderSize + f.chunks.back().stored_size) {
      EXPECT_TRUE(exact_torn) << "cut at " << cut;
    }
    (void)r.read_scalars();
    (void)r.read_neuron_series(2, Quantity::Activation, Statistic::Mean);
  }
}

TEST(Corruption, FlippedPayloadBitIsReportedAndReadingContinues) {
  Fixture f;
  // Damage a neuron-stats chunk of layer 2 in the middle.
  const ChunkInfo* victim = nullptr;
  for (const ChunkInfo& c : f.chunks)
    if (c.type == 4 && c.layer_id == 2 && c.first_step > 10) {
      victim = &c;
      break;
    }
  ASSERT_NE(victim, nullptr);
  auto damaged = f.bytes;
  damaged[victim->offset + kChunkHeaderSize + victim->stored_size / 2] ^= 0x10;
  write_file(f.segment, damaged);

  RunReader r(f.run());
  EXPECT_TRUE(r.complete());  // the footer is intact
  const auto problems = r.verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].offset, victim->offset);
  EXPECT_TRUE(mentions(problems[0].message, f.segment.string()));
  EXPECT_TRUE(mentions(problems[0].message, "offset " + std::to_string(victim->offset)));
  EXPECT_TRUE(mentions(problems[0].message, "checksum"));

  auto series = r.read_neuron_series(2, Quantity::Activation, Statistic::Mean);
  ASSERT_TRUE(series);
  EXPECT_EQ(series->steps.size(), 60u - (victim->last_step - victim->first_step + 1));
  EXPECT_EQ(r.problems().size(), 1u);
  auto other = r.read_neuron_series(3, Quantity::Activation, Statistic::Mean);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->steps.size(), 60u);
}

TEST(Corruption, FlippedHeaderBitIsSkippedByResync) {
  Fixture f;
  const ChunkInfo& victim = f.chunks[f.chunks.size() / 2];
  auto damaged = f.bytes;
  // Without the footer the reader must scan, meet the damaged header and resynchronise.
  damaged.resize(f.chunks.back().offset + kChunkHeaderSize + f.chunks.back().stored_size);
  damaged[victim.offset + 17] ^= 0x01;
  write_file(f.segment, damaged);
  RunReader r(f.run());
  EXPECT_EQ(r.chunks().size(), f.chunks.size() - 1);
  bool reported = false;
  for (const Problem& p : r.problems())
    if (p.kind == Problem::Kind::CorruptChunk) {
      reported = true;
      EXPECT_EQ(p.offset, victim.offset);
      EXPECT_TRUE(
          mentions(p.message, "next chunk at offset " + std::to_string(f.chunks[f.chunks.size() / 2 + 1].offset)))
          << p.message;
    }
  EXPECT_TRUE(reported);
}

TEST(Corruption, DamagedFooterFallsBackToScanning) {
  Fixture f;
  auto damaged = f.bytes;
  damaged[damaged.size() - 10] ^= 0xFF;  // inside the trailer's offset field
  write_file(f.segment, damaged);
  RunReader r(f.run());
  EXPECT_EQ(r.chunks().size(), f.chunks.size());
  bool bad_footer = false;
  for (const Problem& p : r.problems()) bad_footer |= p.kind == Problem::Kind::BadFooter;
  EXPECT_TRUE(bad_footer);
}

TEST(Corruption, EveryByteFlippedNeverCrashes) {
  Fixture f(8);
  for (size_t i = 0; i < f.bytes.size(); i += 7) {
    auto damaged = f.bytes;
    damaged[i] ^= 0x5A;
    write_file(f.segment, damaged);
    try {
      RunReader r(f.run());
      (void)r.verify();
      (void)r.read_scalars();
      (void)r.read_neuron_series(2, Quantity::Weight, Statistic::Norm);
      (void)r.snapshot_steps();
    } catch (const FormatError& e) {
      EXPECT_TRUE(mentions(e.what(), f.run().string())) << e.what();
    }
  }
}

TEST(Corruption, NewerMajorVersionIsRefusedClearly) {
  Fixture f(3);
  auto newer = f.bytes;
  newer[8] = 2;  // version 2.0
  newer[10] = 0;
  const uint32_t crc = crc32c(newer.data(), 28);
  std::memcpy(&newer[28], &crc, 4);
  write_file(f.segment, newer);
  try {
    RunReader r(f.run());
    FAIL() << "a newer major version must be refused";
  } catch (const FormatError& e) {
    EXPECT_TRUE(mentions(e.what(), f.segment.string())) << e.what();
    EXPECT_TRUE(mentions(e.what(), "2.0")) << e.what();
    EXPECT_TRUE(mentions(e.what(), "newer")) << e.what();
  }
  // A newer minor version of the same major stays readable.
  auto minor = f.bytes;
  minor[10] = 7;
  const uint32_t crc2 = crc32c(minor.data(), 28);
  std::memcpy(&minor[28], &crc2, 4);
  write_file(f.segment, minor);
  EXPECT_NO_THROW(RunReader r(f.run()));
}

TEST(Corruption, NotARecordingIsAClearError) {
  TempDir dir;
  EXPECT_THROW(RunReader(dir / "missing"), FormatError);
  EXPECT_THROW(RunReader(dir.path()), FormatError);  // empty directory
  write_file(dir / "segment-000000.tss", {'h', 'e', 'l', 'l', 'o'});
  try {
    RunReader r(dir.path());
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_TRUE(mentions(e.what(), "segment-000000.tss")) << e.what();
  }
  std::vector<uint8_t> junk(100, 'x');
  write_file(dir / "segment-000000.tss", junk);
  try {
    RunReader r(dir.path());
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_TRUE(mentions(e.what(), "bad magic")) << e.what();
  }
}

}  // namespace
}  // namespace trainscope::format
