#include "chunk_codec.h"

#include <algorithm>
#include <tuple>

#include "array_codec.h"
#include "metadata_proto.h"
#include "trainscope.pb.h"

namespace trainscope::format {
namespace {

template <typename Message>
Message parse(const std::string& payload, const char* what) {
  Message m;
  if (!m.ParseFromString(payload)) throw FormatError(std::string(what) + " payload does not parse");
  return m;
}

constexpr int kSummaryFields = kStatisticCount + 1;  // the statistics, then numel

double summary_field(const TensorSummary& s, int field) {
  return field < kStatisticCount ? s.get(Statistic(field)) : s.numel;
}
void set_summary_field(TensorSummary& s, int field, double v) {
  if (field < kStatisticCount)
    s.set(Statistic(field), v);
  else
    s.numel = v;
}

}  // namespace

size_t ScalarsData::byte_size() const {
  size_t n = steps.size() * 16;
  for (const Column& c : columns) n += c.name.size() + c.values.size() * 9;
  return n;
}

size_t NeuronStatsData::byte_size() const {
  size_t n = 0;
  for (const NeuronBlockData& b : blocks) n += b.values.size() * 4 + b.steps.size() * 8;
  return n;
}

std::string encode_metadata(const RunMetadata& metadata) {
  proto::RunMetadata m;
  to_proto(metadata, &m);
  return m.SerializeAsString();
}

RunMetadata decode_metadata(const std::string& payload) {
  return from_proto(parse<proto::RunMetadata>(payload, "metadata"));
}

std::string encode_scalars(const ScalarsData& data) {
  proto::ScalarsChunk m;
  m.mutable_steps()->Add(data.steps.begin(), data.steps.end());
  m.mutable_wall_time()->Add(data.wall_time.begin(), data.wall_time.end());
  for (const auto& c : data.columns) {
    auto* pc = m.add_columns();
    pc->set_name(c.name);
    pack_doubles(c.values.data(), uint32_t(c.values.size()), 1, proto::XOR_PREVIOUS_SHUFFLE, pc->mutable_values());
    if (std::find(c.present.begin(), c.present.end(), 0) != c.present.end())
      pc->set_present(std::string(c.present.begin(), c.present.end()));
  }
  return m.SerializeAsString();
}

ScalarsData decode_scalars(const std::string& payload) {
  const auto m = parse<proto::ScalarsChunk>(payload, "scalars");
  ScalarsData d;
  d.steps.assign(m.steps().begin(), m.steps().end());
  d.wall_time.assign(m.wall_time().begin(), m.wall_time().end());
  d.wall_time.resize(d.steps.size(), 0.0);
  for (const auto& pc : m.columns()) {
    ScalarsData::Column c;
    c.name = pc.name();
    c.values = unpack_doubles(pc.values());
    if (c.values.size() != d.steps.size()) throw FormatError("scalar column '" + c.name + "' has the wrong length");
    c.present.assign(pc.present().begin(), pc.present().end());
    if (c.present.empty()) c.present.assign(d.steps.size(), 1);
    if (c.present.size() != d.steps.size())
      throw FormatError("scalar column '" + c.name + "' presence has the wrong length");
    d.columns.push_back(std::move(c));
  }
  return d;
}

std::string encode_summaries(SummaryData data) {
  auto& r = data.records;
  std::stable_sort(r.begin(), r.end(), [](const SummaryRecord& a, const SummaryRecord& b) {
    return std::tie(a.layer_id, a.quantity, a.step) < std::tie(b.layer_id, b.quantity, b.step);
  });
  proto::LayerSummaryChunk m;
  std::vector<double> column(r.size());
  for (const SummaryRecord& rec : r) {
    m.add_layer_id(rec.layer_id);
    m.add_quantity(uint32_t(rec.quantity));
    m.add_step(rec.step);
    m.add_has_neuron_stats(rec.has_neuron_stats);
  }
  for (int f = 0; f < kSummaryFields; ++f) {
    for (size_t i = 0; i < r.size(); ++i) column[i] = summary_field(r[i].summary, f);
    pack_doubles(column.data(), uint32_t(r.size()), 1, proto::XOR_PREVIOUS_SHUFFLE, m.add_fields());
  }
  return m.SerializeAsString();
}

SummaryData decode_summaries(const std::string& payload) {
  const auto m = parse<proto::LayerSummaryChunk>(payload, "layer-summary");
  const int n = m.layer_id_size();
  if (m.quantity_size() != n || m.step_size() != n) throw FormatError("layer-summary columns differ in length");
  SummaryData d;
  d.records.resize(size_t(n));
  for (int i = 0; i < n; ++i) {
    if (m.quantity(i) >= uint32_t(kQuantityCount)) throw FormatError("layer-summary names an unknown quantity");
    d.records[size_t(i)] = {
        m.layer_id(i), Quantity(m.quantity(i)), m.step(i), {}, i < m.has_neuron_stats_size() && m.has_neuron_stats(i)};
  }
  for (int f = 0; f < std::min(m.fields_size(), kSummaryFields); ++f) {
    const std::vector<double> column = unpack_doubles(m.fields(f));
    if (column.size() != size_t(n)) throw FormatError("layer-summary field has the wrong length");
    for (int i = 0; i < n; ++i) set_summary_field(d.records[size_t(i)].summary, f, column[size_t(i)]);
  }
  return d;
}

std::string encode_neuron_stats(const NeuronStatsData& data, Precision precision) {
  proto::NeuronStatsChunk m;
  m.set_layer_id(data.layer_id);
  for (const NeuronBlockData& b : data.blocks) {
    auto* pb = m.add_blocks();
    pb->set_quantity(proto::Quantity(b.quantity));
    pb->set_statistic(proto::Statistic(b.statistic));
    pb->mutable_steps()->Add(b.steps.begin(), b.steps.end());
    // Counts are integers: a lossy precision would change them, so they stay float32.
    const bool exact = b.statistic == Statistic::NanCount || b.statistic == Statistic::InfCount;
    pack_floats(b.values.data(), uint32_t(b.steps.size()), b.neuron_count, exact ? Precision::Float32 : precision,
                proto::XOR_PREVIOUS_SHUFFLE, nullptr, pb->mutable_values());
  }
  return m.SerializeAsString();
}

NeuronStatsData decode_neuron_stats(const std::string& payload) {
  const auto m = parse<proto::NeuronStatsChunk>(payload, "neuron-stats");
  NeuronStatsData d;
  d.layer_id = m.layer_id();
  for (const auto& pb : m.blocks()) {
    NeuronBlockData b;
    if (pb.quantity() >= kQuantityCount || pb.statistic() >= kStatisticCount)
      throw FormatError("neuron-stats block names an unknown quantity or statistic");
    b.quantity = Quantity(pb.quantity());
    b.statistic = Statistic(pb.statistic());
    b.steps.assign(pb.steps().begin(), pb.steps().end());
    if (pb.values().rows() != b.steps.size()) throw FormatError("neuron-stats block rows differ from its steps");
    b.neuron_count = pb.values().columns();
    b.values = unpack_floats(pb.values());
    d.blocks.push_back(std::move(b));
  }
  return d;
}

std::string encode_full_tensor(const FullTensor& tensor, const FullTensor* base, Precision precision) {
  proto::FullTensorChunk m;
  m.set_layer_id(tensor.layer_id);
  m.set_quantity(proto::Quantity(tensor.quantity));
  m.set_step(tensor.step);
  m.mutable_shape()->Add(tensor.shape.begin(), tensor.shape.end());
  m.set_probe_batch(tensor.probe_batch);
  const bool delta = base && base->values.size() == tensor.values.size();
  m.set_base_step(delta ? base->step : -1);
  pack_floats(tensor.values.data(), 1, uint32_t(tensor.values.size()), precision,
              delta ? proto::XOR_BASE_SHUFFLE : proto::SHUFFLE, delta ? base->values.data() : nullptr,
              m.mutable_values());
  return m.SerializeAsString();
}

FullTensorData decode_full_tensor(const std::string& payload, const std::function<const FullTensor*(int64_t)>& base) {
  const auto m = parse<proto::FullTensorChunk>(payload, "full-tensor");
  FullTensorData d;
  if (m.quantity() >= kQuantityCount) throw FormatError("full-tensor names an unknown quantity");
  d.tensor.layer_id = m.layer_id();
  d.tensor.quantity = Quantity(m.quantity());
  d.tensor.step = m.step();
  d.tensor.shape.assign(m.shape().begin(), m.shape().end());
  d.tensor.probe_batch = m.probe_batch();
  d.base_step = m.values().filter() == proto::XOR_BASE_SHUFFLE ? m.base_step() : -1;
  const float* base_values = nullptr;
  if (d.base_step >= 0) {
    const FullTensor* b = base ? base(d.base_step) : nullptr;
    if (!b)
      throw FormatError("full tensor at step " + std::to_string(d.tensor.step) + " needs its base at step " +
                        std::to_string(d.base_step) + ", which is missing");
    if (b->values.size() != size_t(m.values().rows()) * m.values().columns())
      throw FormatError("full tensor base differs in size");
    base_values = b->values.data();
  }
  d.tensor.values = unpack_floats(m.values(), base_values);
  return d;
}

std::string encode_gap(const GapInfo& gap) {
  proto::GapChunk m;
  m.set_first_step(gap.first_step);
  m.set_last_step(gap.last_step);
  m.set_dropped_snapshots(gap.dropped_snapshots);
  m.set_reason(gap.reason);
  return m.SerializeAsString();
}

GapInfo decode_gap(const std::string& payload) {
  const auto m = parse<proto::GapChunk>(payload, "gap");
  return {m.first_step(), m.last_step(), m.dropped_snapshots(), m.reason()};
}

}  // namespace trainscope::format
