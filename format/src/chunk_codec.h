// In-memory forms of chunk payloads and their encoding to and from the protobuf messages of trainscope.proto.
// Shared by the writer (encode), the reader (decode) and trim (both).
#pragma once

#include <trainscope/format/metadata.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "array_codec.h"

namespace trainscope::format {

// A payload encoded into a caller's ByteBuffer (the writer's hot path: protobuf's message and string copies and
// zero-filled buffers avoided); the same bytes protobuf would write.
struct EncodedPayload {
  const uint8_t* data;
  size_t size;
};

struct ScalarsData {
  std::vector<int64_t> steps;
  std::vector<double> wall_time;
  struct Column {
    std::string name;
    std::vector<double> values;    // one per step
    std::vector<uint8_t> present;  // one per step; all 1 when empty
  };
  std::vector<Column> columns;
  size_t byte_size() const;
};

struct SummaryRecord {
  uint32_t layer_id;
  Quantity quantity;
  int64_t step;
  TensorSummary summary;
  bool has_neuron_stats = false;
};
struct SummaryData {
  std::vector<SummaryRecord> records;  // sorted by (layer, quantity, step) when encoded
};

struct NeuronBlockData {
  Quantity quantity;
  Statistic statistic;
  uint32_t neuron_count = 0;
  std::vector<int64_t> steps;
  std::vector<float> values;  // rows = steps
};
struct NeuronStatsData {
  uint32_t layer_id = 0;
  std::vector<NeuronBlockData> blocks;
  size_t byte_size() const;
};

struct FullTensorData {
  FullTensor tensor;
  int64_t base_step = -1;  // the snapshot of the same tensor it is XORed against; -1 for a keyframe
};

std::string encode_metadata(const RunMetadata& metadata);
RunMetadata decode_metadata(const std::string& payload);

std::string encode_scalars(const ScalarsData& data);
ScalarsData decode_scalars(const std::string& payload);

std::string encode_summaries(SummaryData data);
// The same, sorting the caller's records in place (the writer keeps their memory for the next chunk).
std::string encode_summaries_in_place(SummaryData* data);
SummaryData decode_summaries(const std::string& payload);
// The same as columns, into vectors reused from call to call (they keep their capacity).
struct SummaryColumnData {
  std::vector<uint32_t> layer_id;
  std::vector<Quantity> quantity;
  std::vector<int64_t> step;
  std::vector<uint8_t> has_neuron_stats;
  std::vector<double> field[kStatisticCount + 1];
  size_t size() const { return layer_id.size(); }
};
void decode_summary_columns(const std::string& payload, SummaryColumnData* out);

std::string encode_neuron_stats(const NeuronStatsData& data, Precision precision);
EncodedPayload encode_neuron_stats(const NeuronStatsData& data, Precision precision, ByteBuffer* buffer);
NeuronStatsData decode_neuron_stats(const std::string& payload);

// `base` is the previous snapshot of the same tensor, or nullptr for a keyframe. The tensor is coded against it
// only when that is smaller; `used_base` says whether it was (if not, the chunk is a keyframe).
std::string encode_full_tensor(const FullTensor& tensor, const FullTensor* base, Precision precision,
                               bool* used_base = nullptr);
// The same into `buffer` (reused from call to call: no allocation once it is large enough); the payload lies at
// the returned place inside it.
// A weight gradient stored on its own is tried as LOW_RANK_SPLIT when `try_low_rank`.
EncodedPayload encode_full_tensor(const FullTensor& tensor, const FullTensor* base, Precision precision,
                                  bool* used_base, ByteBuffer* buffer, bool try_low_rank = true);
// `base(step)` returns the decoded tensor a delta-coded chunk refers to (nullptr if unavailable: FormatError).
FullTensorData decode_full_tensor(const std::string& payload, const std::function<const FullTensor*(int64_t)>& base);

std::string encode_gap(const GapInfo& gap);
GapInfo decode_gap(const std::string& payload);

}  // namespace trainscope::format
