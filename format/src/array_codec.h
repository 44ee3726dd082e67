// Filters that make float arrays compress well, bit-exactly reversible: XOR against the previous row (or a base
// array), then byte shuffling (all first bytes, then all second bytes, ...). See FORMAT.md, "Float arrays".
#pragma once

#include <trainscope/format/types.h>

#include <cstdint>
#include <vector>

#include "trainscope.pb.h"

namespace trainscope::format {

// Packs rows x columns floats. With filter XOR_BASE_SHUFFLE, `base` (same size) is the array XORed against, after
// conversion to the stored precision.
void pack_floats(const float* values, uint32_t rows, uint32_t columns, Precision precision, proto::ArrayFilter filter,
                 const float* base, proto::PackedArray* out);
// Throws FormatError (message without file; the caller adds it) if the array is inconsistent.
std::vector<float> unpack_floats(const proto::PackedArray& array, const float* base = nullptr);

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
