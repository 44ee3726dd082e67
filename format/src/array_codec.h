// Filters that make float arrays compress well, bit-exactly reversible: XOR against the previous row (or a base
// array), then byte shuffling (all first bytes, then all second bytes, ...). See FORMAT.md, "Float arrays".
#pragma once

#include <trainscope/format/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainscope.pb.h"

namespace trainscope::format {

// Packs rows x columns floats. With filter XOR_BASE_SHUFFLE, `base` (same size) is the array XORed against, after
// conversion to the stored precision.
void pack_floats(const float* values, uint32_t rows, uint32_t columns, Precision precision, proto::ArrayFilter filter,
                 const float* base, proto::PackedArray* out);
// Throws FormatError (message without file; the caller adds it) if the array is inconsistent.
std::vector<float> unpack_floats(const proto::PackedArray& array, const float* base = nullptr);

// How a float32 array with a base (its previous snapshot) is best stored, judged from a sample of its elements:
// against the base with DELTA_SPLIT and this split parameter, or on its own (SHUFFLE) when the two are unrelated
// (a gradient is not its previous snapshot plus a little).
struct DeltaPlan {
  bool against_base = false;
  uint8_t split = 0;
};
DeltaPlan plan_float32_delta(const float* values, const float* base, size_t count);
// DELTA_SPLIT of rows x columns float32 values against `base` with a split parameter from plan_float32_delta().
void pack_delta_split(const float* values, const float* base, uint32_t rows, uint32_t columns, uint8_t split,
                      proto::PackedArray* out);

// The same two as `data` bytes alone, written to `dst`, which holds float32_data_bound(rows x columns) bytes; they
// return the bytes written. For the writer's hot path: no message, no zero-filled string.
size_t float32_data_bound(size_t count);
size_t pack_float32_into(const float* values, uint32_t rows, uint32_t columns, proto::ArrayFilter filter,
                         const float* base, uint8_t* dst);
size_t pack_delta_split_into(const float* values, const float* base, size_t count, uint8_t split, uint8_t* dst);

// LOW_RANK_SPLIT of a rows x columns float32 matrix of low rank (a Linear layer's weight gradient over a batch
// smaller than the layer is a sum of one outer product per sample): the `data` bytes and true; false when the
// matrix is not of a rank low enough for it to pay (or holds NaN or Inf), `data` then unspecified.
bool pack_low_rank(const float* values, uint32_t rows, uint32_t columns, std::string* data);

// Bytes whose capacity is kept from use to use and never zero-filled: the writer's scratch.
class ByteBuffer {
 public:
  uint8_t* reserve(size_t size) {
    if (size > capacity_) {
      data_.reset(new uint8_t[size]);
      capacity_ = size;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t capacity_ = 0;
};

void pack_doubles(const double* values, uint32_t rows, uint32_t columns, proto::ArrayFilter filter,
                  proto::PackedArray* out);
std::vector<double> unpack_doubles(const proto::PackedArray& array);

// A PackedArray whose `data` stays where it is, inside a decompressed chunk payload: decoding reads it in place
// instead of copying it out first. Enum fields are kept as the integers on the wire (a newer writer may add values).
struct PackedArrayView {
  int32_t type = proto::FLOAT32;
  int32_t filter = proto::NONE;
  uint32_t rows = 0, columns = 0;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t count() const { return size_t(rows) * columns; }
};
PackedArrayView view_of(const proto::PackedArray& array);

// Decodes into `out`, which holds count() elements. Throws FormatError as unpack_floats does.
void unpack_floats_into(const PackedArrayView& array, const float* base, float* out);
std::vector<float> unpack_floats(const PackedArrayView& array, const float* base = nullptr);
void unpack_doubles_into(const PackedArrayView& array, double* out);
std::vector<double> unpack_doubles(const PackedArrayView& array);

// IEEE binary16 and bfloat16 conversions, round to nearest even, NaN and Inf kept.
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bfloat16(float f);
float bfloat16_to_float(uint16_t h);

}  // namespace trainscope::format
