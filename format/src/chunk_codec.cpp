#include "chunk_codec.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

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

// The protobuf wire format read straight from a decompressed payload, for the chunk types that carry large float
// arrays: their `data` bytes are decoded where they lie (PackedArrayView) instead of being copied into a message's
// strings first. As protobuf's own parser does: unknown fields are skipped, the last value of a singular field
// wins, a message field given twice is merged, repeated numbers may come packed or not.
class WireReader {
 public:
  WireReader(const uint8_t* begin, const uint8_t* end, const char* what) : p_(begin), end_(end), what_(what) {}
  WireReader(const std::string& payload, const char* what)
      : WireReader(reinterpret_cast<const uint8_t*>(payload.data()),
                   reinterpret_cast<const uint8_t*>(payload.data()) + payload.size(), what) {}

  bool at_end() const { return p_ == end_; }
  // The next field's number; its wire type in `wire_type`.
  uint32_t field(uint32_t* wire_type) {
    const uint64_t tag = varint();
    *wire_type = uint32_t(tag & 7);
    if (tag >> 3 == 0 || tag >> 3 > 0x1FFFFFFFu) fail();
    return uint32_t(tag >> 3);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) fail();
      const uint8_t b = *p_++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail();
  }
  // A length-delimited field's bytes, as a reader of their own.
  WireReader sub() {
    const uint64_t n = varint();
    if (n > uint64_t(end_ - p_)) fail();
    const uint8_t* begin = p_;
    p_ += n;
    return WireReader(begin, p_, what_);
  }
  const uint8_t* begin() const { return p_; }
  const uint8_t* end() const { return end_; }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0: (void)varint(); return;
      case 1: advance(8); return;
      case 2: (void)sub(); return;
      case 5: advance(4); return;
      default: fail();  // groups (3, 4) are not proto3; 6 and 7 do not exist
    }
  }
  // A repeated number field, packed (wire type 2) or one element (wire type 0); other wire types are skipped.
  // `Wire` is the field's type in the schema when it differs from the element stored (bool into uint8_t).
  template <typename T, typename Wire = T>
  void repeated(uint32_t wire_type, std::vector<T>* out) {
    if (wire_type == 0) {
      out->push_back(T(Wire(varint())));
    } else if (wire_type == 2) {
      packed_varints<T, Wire>(sub(), out);
    } else {
      skip(wire_type);
    }
  }
  // A singular number field: the last one wins; a field of another wire type is unknown, hence skipped.
  template <typename T>
  void single(uint32_t wire_type, T* out) {
    if (wire_type == 0)
      *out = T(varint());
    else
      skip(wire_type);
  }
  [[noreturn]] void fail() const { throw FormatError(std::string(what_) + " payload does not parse"); }

 private:
  // A packed run of varints, the bulk of a layer-summary chunk: counted first (one element per byte without the
  // continuation bit), then decoded without a bounds check per byte, which the last byte ending a varint makes safe.
  template <typename T, typename Wire>
  static void packed_varints(WireReader packed, std::vector<T>* out) {
    const uint8_t* p = packed.p_;
    const uint8_t* const end = packed.end_;
    if (p == end) return;
    if (end[-1] & 0x80) packed.fail();  // the last varint runs past the field
    size_t count = 0;
    for (const uint8_t* q = p; q < end; ++q) count += (*q & 0x80) == 0;
    size_t n = out->size();
    out->resize(n + count);
    T* dst = out->data() + n;
    if (count == size_t(end - p)) {  // one byte each (quantities, flags): no varint to assemble
      for (size_t k = 0; k < count; ++k) dst[k] = T(Wire(p[k]));
      return;
    }
    while (p < end) {
      uint64_t v = *p++;
      if ((v & 0x80) && !(*p & 0x80)) {  // two bytes: layer ids and steps mostly
        v = (v & 0x7F) | uint64_t(*p++) << 7;
      } else if (v & 0x80) {
        v &= 0x7F;
        for (unsigned shift = 7;; shift += 7) {
          if (shift >= 70) packed.fail();  // more than ten bytes
          const uint8_t b = *p++;
          if (shift < 64) v |= uint64_t(b & 0x7F) << shift;
          if (!(b & 0x80)) break;
        }
      }
      *dst++ = T(Wire(v));
    }
  }

  void advance(size_t n) {
    if (n > size_t(end_ - p_)) fail();
    p_ += n;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  const char* what_;
};

// Merges one PackedArray message into `out`.
void read_packed_array(WireReader r, PackedArrayView* out) {
  while (!r.at_end()) {
    uint32_t wire_type;
    switch (r.field(&wire_type)) {
      case 1: r.single(wire_type, &out->type); break;
      case 2: r.single(wire_type, &out->filter); break;
      case 3: r.single(wire_type, &out->rows); break;
      case 4: r.single(wire_type, &out->columns); break;
      case 5:
        if (wire_type == 2) {
          const WireReader data = r.sub();
          out->data = data.begin();
          out->size = size_t(data.end() - data.begin());
        } else {
          r.skip(wire_type);
        }
        break;
      default: r.skip(wire_type);
    }
  }
}

// A message field: merged from its every occurrence.
void read_message(WireReader& r, uint32_t wire_type, PackedArrayView* out) {
  if (wire_type == 2)
    read_packed_array(r.sub(), out);
  else
    r.skip(wire_type);
}

bool valid_quantity(int64_t q) {
  return q >= 0 && q < kQuantityCount;
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
  return encode_summaries_in_place(&data);
}

std::string encode_summaries_in_place(SummaryData* data) {
  auto& r = data->records;
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

void decode_summary_columns(const std::string& payload, SummaryColumnData* out) {
  SummaryColumnData& c = *out;
  WireReader r(payload, "layer-summary");
  std::vector<uint32_t> quantity;
  std::vector<PackedArrayView> fields;
  c.layer_id.clear();
  c.step.clear();
  c.has_neuron_stats.clear();
  while (!r.at_end()) {
    uint32_t wire_type;
    switch (r.field(&wire_type)) {
      case 1: r.repeated(wire_type, &c.layer_id); break;
      case 2: r.repeated(wire_type, &quantity); break;
      case 3: r.repeated(wire_type, &c.step); break;
      case 4:
        if (wire_type == 2) {
          fields.emplace_back();
          read_packed_array(r.sub(), &fields.back());
        } else {
          r.skip(wire_type);
        }
        break;
      case 5: r.repeated<uint8_t, bool>(wire_type, &c.has_neuron_stats); break;
      default: r.skip(wire_type);
    }
  }
  const size_t n = c.layer_id.size();
  if (quantity.size() != n || c.step.size() != n) throw FormatError("layer-summary columns differ in length");
  c.quantity.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (quantity[i] >= uint32_t(kQuantityCount)) throw FormatError("layer-summary names an unknown quantity");
    c.quantity[i] = Quantity(quantity[i]);
  }
  c.has_neuron_stats.resize(n, 0);  // written for every record; missing ones mean no
  for (size_t f = 0; f < size_t(kSummaryFields); ++f) {
    if (f >= fields.size()) {  // an older writer's chunk without this field: zero, as in TensorSummary
      c.field[f].assign(n, 0.0);
      continue;
    }
    if (fields[f].count() != n) throw FormatError("layer-summary field has the wrong length");
    c.field[f].resize(n);
    unpack_doubles_into(fields[f], c.field[f].data());
  }
}

SummaryData decode_summaries(const std::string& payload) {
  SummaryColumnData c;
  decode_summary_columns(payload, &c);
  SummaryData d;
  d.records.resize(c.size());
  for (size_t i = 0; i < c.size(); ++i) {
    SummaryRecord& r = d.records[i];
    r = {c.layer_id[i], c.quantity[i], c.step[i], {}, c.has_neuron_stats[i] != 0};
    for (int f = 0; f < kSummaryFields; ++f) set_summary_field(r.summary, f, c.field[f][i]);
  }
  return d;
}

namespace {

// Protobuf's wire format written by hand: the full-tensor chunk's array is packed straight into the payload buffer,
// where protobuf would copy it twice (into the message, then into the serialized string). Fields in number order,
// zero values left out, as protobuf writes them; tests check the bytes are the same.
struct WireWriter {
  uint8_t* p;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      *p++ = uint8_t(v | 0x80);
      v >>= 7;
    }
    *p++ = uint8_t(v);
  }
  void tag(uint32_t field, uint32_t wire_type) { varint(uint64_t(field) << 3 | wire_type); }
  void number(uint32_t field, uint64_t v) {
    if (v == 0) return;
    tag(field, 0);
    varint(v);
  }
};

size_t varint_size(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

}  // namespace

EncodedPayload encode_neuron_stats(const NeuronStatsData& data, Precision precision, ByteBuffer* buffer) {
  // Sizes first (every length is known before the bytes: float arrays keep their size), then one pass of writing.
  struct Block {
    size_t steps_bytes = 0, array_bytes = 0, bytes = 0, data_bytes = 0;
    uint64_t type = proto::FLOAT32;
    bool converted = false;  // to a 16-bit precision, by pack_floats into `lossy`
    proto::PackedArray lossy;
  };
  std::vector<Block> blocks(data.blocks.size());
  size_t total = data.layer_id ? 1 + varint_size(data.layer_id) : 0;
  for (size_t i = 0; i < data.blocks.size(); ++i) {
    const NeuronBlockData& b = data.blocks[i];
    Block& e = blocks[i];
    // Counts are integers: a lossy precision would change them, so they stay float32.
    const bool exact = b.statistic == Statistic::NanCount || b.statistic == Statistic::InfCount;
    const size_t rows = b.steps.size(), count = rows * b.neuron_count;
    e.data_bytes = count * 4;
    if (precision != Precision::Float32 && !exact) {
      pack_floats(b.values.data(), uint32_t(rows), b.neuron_count, precision, proto::XOR_PREVIOUS_SHUFFLE, nullptr,
                  &e.lossy);
      e.converted = true;
      e.data_bytes = e.lossy.data().size();
      e.type = uint64_t(e.lossy.type());
    }
    for (int64_t step : b.steps) e.steps_bytes += varint_size(uint64_t(step));
    e.array_bytes = (e.type ? 1 + varint_size(e.type) : 0) + 2 + (rows ? 1 + varint_size(rows) : 0) +
                    (b.neuron_count ? 1 + varint_size(b.neuron_count) : 0) +
                    (e.data_bytes ? 1 + varint_size(e.data_bytes) + e.data_bytes : 0);
    e.bytes = (b.quantity != Quantity(0) ? 1 + varint_size(uint64_t(b.quantity)) : 0) +
              (b.statistic != Statistic(0) ? 1 + varint_size(uint64_t(b.statistic)) : 0) +
              (rows ? 1 + varint_size(e.steps_bytes) + e.steps_bytes : 0) + 1 + varint_size(e.array_bytes) +
              e.array_bytes;
    total += 1 + varint_size(e.bytes) + e.bytes;
  }
  uint8_t* const out = buffer->reserve(total);
  WireWriter w{out};
  w.number(1, data.layer_id);
  for (size_t i = 0; i < data.blocks.size(); ++i) {
    const NeuronBlockData& b = data.blocks[i];
    const Block& e = blocks[i];
    const size_t rows = b.steps.size();
    w.tag(2, 2);
    w.varint(e.bytes);
    w.number(1, uint64_t(b.quantity));
    w.number(2, uint64_t(b.statistic));
    if (rows) {
      w.tag(3, 2);
      w.varint(e.steps_bytes);
      for (int64_t step : b.steps) w.varint(uint64_t(step));
    }
    w.tag(4, 2);
    w.varint(e.array_bytes);
    w.number(1, e.type);
    w.number(2, proto::XOR_PREVIOUS_SHUFFLE);
    w.number(3, rows);
    w.number(4, b.neuron_count);
    if (e.data_bytes) {
      w.tag(5, 2);
      w.varint(e.data_bytes);
      if (e.converted)
        std::memcpy(w.p, e.lossy.data().data(), e.data_bytes);
      else
        pack_float32_into(b.values.data(), uint32_t(rows), b.neuron_count, proto::XOR_PREVIOUS_SHUFFLE, nullptr, w.p);
      w.p += e.data_bytes;
    }
  }
  return {out, size_t(w.p - out)};
}

std::string encode_neuron_stats(const NeuronStatsData& data, Precision precision) {
  ByteBuffer buffer;
  const EncodedPayload payload = encode_neuron_stats(data, precision, &buffer);
  return std::string(reinterpret_cast<const char*>(payload.data), payload.size);
}

NeuronStatsData decode_neuron_stats(const std::string& payload) {
  struct Block {
    int64_t quantity = 0, statistic = 0;
    std::vector<int64_t> steps;
    PackedArrayView values;
  };
  WireReader r(payload, "neuron-stats");
  NeuronStatsData d;
  std::vector<Block> blocks;
  while (!r.at_end()) {
    uint32_t wire_type;
    const uint32_t field = r.field(&wire_type);
    if (field == 1) {
      r.single(wire_type, &d.layer_id);
    } else if (field == 2 && wire_type == 2) {
      Block& b = blocks.emplace_back();
      for (WireReader block = r.sub(); !block.at_end();) {
        uint32_t block_wire_type;
        switch (block.field(&block_wire_type)) {
          case 1: block.single(block_wire_type, &b.quantity); break;
          case 2: block.single(block_wire_type, &b.statistic); break;
          case 3: block.repeated(block_wire_type, &b.steps); break;
          case 4: read_message(block, block_wire_type, &b.values); break;
          default: block.skip(block_wire_type);
        }
      }
    } else {
      r.skip(wire_type);
    }
  }
  d.blocks.reserve(blocks.size());
  for (Block& pb : blocks) {
    // Enums are int32 on the wire: a negative one arrives as a large varint.
    const auto quantity = int32_t(pb.quantity), statistic = int32_t(pb.statistic);
    if (!valid_quantity(quantity) || statistic < 0 || statistic >= kStatisticCount)
      throw FormatError("neuron-stats block names an unknown quantity or statistic");
    if (pb.values.rows != pb.steps.size()) throw FormatError("neuron-stats block rows differ from its steps");
    NeuronBlockData& b = d.blocks.emplace_back();
    b.quantity = Quantity(quantity);
    b.statistic = Statistic(statistic);
    b.steps = std::move(pb.steps);
    b.neuron_count = pb.values.columns;
    b.values = unpack_floats(pb.values);
  }
  return d;
}

EncodedPayload encode_full_tensor(const FullTensor& tensor, const FullTensor* base, Precision precision,
                                  bool* used_base, ByteBuffer* buffer, bool try_low_rank) {
  const uint32_t count = uint32_t(tensor.values.size());
  bool delta = base && base->values.size() == tensor.values.size();
  proto::ArrayFilter filter = delta ? proto::XOR_BASE_SHUFFLE : proto::SHUFFLE;
  uint8_t split = 0;
  if (delta && precision == Precision::Float32) {
    // Against the base only when the tensor drifted from it (weights); a gradient or an activation is stored alone.
    const DeltaPlan plan = plan_float32_delta(tensor.values.data(), base->values.data(), count);
    delta = plan.against_base;
    filter = delta ? proto::DELTA_SPLIT : proto::SHUFFLE;
    split = plan.split;
  }
  // A weight gradient stored on its own may be of low rank: a Linear layer's is one outer product per sample.
  std::string low_rank;
  if (try_low_rank && !delta && precision == Precision::Float32 && tensor.quantity == Quantity::WeightGrad &&
      tensor.shape.size() >= 2 && tensor.shape[0] > 0 && count % uint64_t(tensor.shape[0]) == 0 &&
      pack_low_rank(tensor.values.data(), uint32_t(tensor.shape[0]), uint32_t(count / uint64_t(tensor.shape[0])),
                    &low_rank))
    filter = proto::LOW_RANK_SPLIT;
  // The array's bytes go at `prefix`, room enough for every field before them; the fields are then written to end
  // right where the array begins.
  const size_t prefix = 96 + 11 * tensor.shape.size();
  const size_t bound =
      precision == Precision::Float32 ? std::max(float32_data_bound(count), low_rank.size()) : size_t(count) * 2;
  uint8_t* out = buffer->reserve(prefix + bound + 32);
  uint8_t* data = out + prefix;
  size_t data_size = 0;
  proto::ElementType type = proto::FLOAT32;
  if (filter == proto::LOW_RANK_SPLIT) {
    data_size = low_rank.size();
    std::memcpy(data, low_rank.data(), data_size);
  } else if (precision != Precision::Float32) {
    proto::PackedArray packed;
    pack_floats(tensor.values.data(), 1, count, precision, filter, delta ? base->values.data() : nullptr, &packed);
    data_size = packed.data().size();
    std::memcpy(data, packed.data().data(), data_size);
    type = packed.type();
  } else if (filter == proto::DELTA_SPLIT) {
    data_size = pack_delta_split_into(tensor.values.data(), base->values.data(), count, split, data);
  } else {
    data_size = pack_float32_into(tensor.values.data(), 1, count, filter, nullptr, data);
  }

  WireWriter w{out};  // the fields before the array, written at the start and moved up against it below
  w.number(1, tensor.layer_id);
  w.number(2, uint64_t(tensor.quantity));
  w.number(3, uint64_t(tensor.step));
  if (!tensor.shape.empty()) {
    size_t shape_bytes = 0;
    for (int64_t d : tensor.shape) shape_bytes += varint_size(uint64_t(d));
    w.tag(4, 2);
    w.varint(shape_bytes);
    for (int64_t d : tensor.shape) w.varint(uint64_t(d));
  }
  const size_t array_fields = (type ? 1 + varint_size(type) : 0) + (filter ? 1 + varint_size(filter) : 0) + 1 +
                              varint_size(1) + (count ? 1 + varint_size(count) : 0);
  const size_t data_field = data_size ? 1 + varint_size(data_size) + data_size : 0;
  w.tag(5, 2);
  w.varint(array_fields + data_field);
  w.number(1, uint64_t(type));
  w.number(2, uint64_t(filter));
  w.number(3, 1);
  w.number(4, count);
  if (data_size) {
    w.tag(5, 2);
    w.varint(data_size);
  }
  const size_t head_size = size_t(w.p - out);
  uint8_t* begin = data - head_size;
  std::memmove(begin, out, head_size);
  WireWriter tail{data + data_size};
  tail.number(6, uint64_t(delta ? base->step : -1));
  if (tensor.probe_batch) tail.number(7, 1);
  if (used_base) *used_base = delta;
  return {begin, size_t(tail.p - begin)};
}

std::string encode_full_tensor(const FullTensor& tensor, const FullTensor* base, Precision precision, bool* used_base) {
  ByteBuffer buffer;
  const EncodedPayload payload = encode_full_tensor(tensor, base, precision, used_base, &buffer);
  return std::string(reinterpret_cast<const char*>(payload.data), payload.size);
}

FullTensorData decode_full_tensor(const std::string& payload, const std::function<const FullTensor*(int64_t)>& base) {
  WireReader r(payload, "full-tensor");
  FullTensorData d;
  int64_t quantity = 0, base_step = 0;
  PackedArrayView values;
  while (!r.at_end()) {
    uint32_t wire_type;
    switch (r.field(&wire_type)) {
      case 1: r.single(wire_type, &d.tensor.layer_id); break;
      case 2: r.single(wire_type, &quantity); break;
      case 3: r.single(wire_type, &d.tensor.step); break;
      case 4: r.repeated(wire_type, &d.tensor.shape); break;
      case 5: read_message(r, wire_type, &values); break;
      case 6: r.single(wire_type, &base_step); break;
      case 7: r.single(wire_type, &d.tensor.probe_batch); break;
      default: r.skip(wire_type);
    }
  }
  if (!valid_quantity(int32_t(quantity))) throw FormatError("full-tensor names an unknown quantity");
  d.tensor.quantity = Quantity(int32_t(quantity));
  d.base_step = values.filter == proto::XOR_BASE_SHUFFLE || values.filter == proto::DELTA_SPLIT ? base_step : -1;
  const float* base_values = nullptr;
  if (d.base_step >= 0) {
    const FullTensor* b = base ? base(d.base_step) : nullptr;
    if (!b)
      throw FormatError("full tensor at step " + std::to_string(d.tensor.step) + " needs its base at step " +
                        std::to_string(d.base_step) + ", which is missing");
    if (b->values.size() != values.count()) throw FormatError("full tensor base differs in size");
    base_values = b->values.data();
  }
  d.tensor.values = unpack_floats(values, base_values);
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
