#include "array_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace trainscope::format {
namespace {

template <typename Word>
void xor_rows_forward(Word* words, uint32_t rows, uint32_t columns) {
  // Backwards so that each row is XORed with the original previous row.
  for (uint32_t r = rows; r-- > 1;) {
    Word* row = words + size_t(r) * columns;
    const Word* prev = row - columns;
    for (uint32_t c = 0; c < columns; ++c) row[c] ^= prev[c];
  }
}

template <typename Word>
void shuffle_bytes(const Word* words, size_t count, std::string* out) {
  constexpr size_t kSize = sizeof(Word);
  out->resize(count * kSize);
  auto* dst = reinterpret_cast<uint8_t*>(out->data());
  auto* src = reinterpret_cast<const uint8_t*>(words);
  for (size_t i = 0; i < count; ++i)
    for (size_t b = 0; b < kSize; ++b) dst[b * count + i] = src[i * kSize + b];
}

template <typename Word>
void encode_words(std::vector<Word>& words, const std::vector<Word>* base, uint32_t rows, uint32_t columns,
                  proto::ArrayFilter filter, proto::PackedArray* out) {
  if (filter == proto::XOR_PREVIOUS_SHUFFLE) xor_rows_forward(words.data(), rows, columns);
  if (filter == proto::XOR_BASE_SHUFFLE)
    for (size_t i = 0; i < words.size(); ++i) words[i] ^= (*base)[i];
  if (filter == proto::NONE) {
    out->mutable_data()->assign(reinterpret_cast<const char*>(words.data()), words.size() * sizeof(Word));
  } else {
    shuffle_bytes(words.data(), words.size(), out->mutable_data());
  }
  out->set_filter(filter);
  out->set_rows(rows);
  out->set_columns(columns);
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<uint16_t> to_16bit(const float* values, size_t n, Precision precision) {
  std::vector<uint16_t> out(n);
  if (precision == Precision::Float16)
    for (size_t i = 0; i < n; ++i) out[i] = float_to_half(values[i]);
  else
    for (size_t i = 0; i < n; ++i) out[i] = float_to_bfloat16(values[i]);
  return out;
}

uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void store32(uint8_t* p, uint32_t v) {
  std::memcpy(p, &v, 4);
}

// Byte shuffle of 32-bit words [begin, end) into four planes of `count` bytes at `planes`, each word first XORed
// with other[i - lag] when `other` is given. The hot path of writing: one pass, no intermediate copy.
void shuffle32(const uint8_t* src, const uint8_t* other, size_t lag, size_t begin, size_t end, size_t count,
               uint8_t* planes) {
  size_t i = begin;
#if defined(__SSE2__)
  // 16 words at a time: three rounds of byte unpacking turn 4 x (4 words) into 4 x (16 bytes of one plane).
  for (; i + 16 <= end; i += 16) {
    __m128i w[4];
    for (int k = 0; k < 4; ++k) {
      w[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 4 * (i + 4 * size_t(k))));
      if (other)
        w[k] = _mm_xor_si128(w[k],
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(other + 4 * (i + 4 * size_t(k) - lag))));
    }
    const __m128i t0 = _mm_unpacklo_epi8(w[0], w[1]), t1 = _mm_unpackhi_epi8(w[0], w[1]);
    const __m128i t2 = _mm_unpacklo_epi8(w[2], w[3]), t3 = _mm_unpackhi_epi8(w[2], w[3]);
    const __m128i u0 = _mm_unpacklo_epi8(t0, t1), u1 = _mm_unpackhi_epi8(t0, t1);
    const __m128i u2 = _mm_unpacklo_epi8(t2, t3), u3 = _mm_unpackhi_epi8(t2, t3);
    const __m128i v0 = _mm_unpacklo_epi8(u0, u1), v1 = _mm_unpackhi_epi8(u0, u1);
    const __m128i v2 = _mm_unpacklo_epi8(u2, u3), v3 = _mm_unpackhi_epi8(u2, u3);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(planes + i), _mm_unpacklo_epi64(v0, v2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(planes + count + i), _mm_unpackhi_epi64(v0, v2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(planes + 2 * count + i), _mm_unpacklo_epi64(v1, v3));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(planes + 3 * count + i), _mm_unpackhi_epi64(v1, v3));
  }
#endif
  for (; i < end; ++i) {
    uint32_t word = load32(src + 4 * i);
    if (other) word ^= load32(other + 4 * (i - lag));
    for (size_t b = 0; b < 4; ++b) planes[b * count + i] = uint8_t(word >> (8 * b));
  }
}

// The inverse: four planes of `count` bytes back into words, each XORed with base[i] when `base` is given.
void unshuffle32(const uint8_t* planes, size_t count, const uint8_t* base, uint8_t* dst) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= count; i += 16) {
    const __m128i p0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + i));
    const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + count + i));
    const __m128i p2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + 2 * count + i));
    const __m128i p3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + 3 * count + i));
    const __m128i x0 = _mm_unpacklo_epi8(p0, p1), x1 = _mm_unpackhi_epi8(p0, p1);
    const __m128i y0 = _mm_unpacklo_epi8(p2, p3), y1 = _mm_unpackhi_epi8(p2, p3);
    __m128i w[4] = {_mm_unpacklo_epi16(x0, y0), _mm_unpackhi_epi16(x0, y0), _mm_unpacklo_epi16(x1, y1),
                    _mm_unpackhi_epi16(x1, y1)};
    for (int k = 0; k < 4; ++k) {
      if (base)
        w[k] = _mm_xor_si128(w[k], _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 4 * (i + 4 * size_t(k)))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * (i + 4 * size_t(k))), w[k]);
    }
  }
#endif
  for (; i < count; ++i) {
    uint32_t word = uint32_t(planes[i]) | uint32_t(planes[count + i]) << 8 | uint32_t(planes[2 * count + i]) << 16 |
                    uint32_t(planes[3 * count + i]) << 24;
    if (base) word ^= load32(base + 4 * i);
    store32(dst + 4 * i, word);
  }
}

void store64(uint8_t* p, uint64_t v) {
  std::memcpy(p, &v, 8);
}
uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Two planes of `count` bytes back into 16-bit words.
void unshuffle16(const uint8_t* planes, size_t count, uint8_t* dst) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= count; i += 16) {
    const __m128i p0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + i));
    const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + count + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i), _mm_unpacklo_epi8(p0, p1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i + 16), _mm_unpackhi_epi8(p0, p1));
  }
#endif
  for (; i < count; ++i) {
    dst[2 * i] = planes[i];
    dst[2 * i + 1] = planes[count + i];
  }
}

#if defined(__SSE2__)
// Words i .. i + 15 of eight byte planes of `count` bytes: bytes side by side in pairs, then in fours, then all
// eight. pairs[j] holds words i + 2j and i + 2j + 1.
inline void gather_16_words(const uint8_t* planes, size_t count, size_t i, __m128i pairs[8]) {
  __m128i p[8];
  for (size_t b = 0; b < 8; ++b) p[b] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + b * count + i));
  const __m128i a0 = _mm_unpacklo_epi8(p[0], p[1]), a1 = _mm_unpackhi_epi8(p[0], p[1]);
  const __m128i b0 = _mm_unpacklo_epi8(p[2], p[3]), b1 = _mm_unpackhi_epi8(p[2], p[3]);
  const __m128i c0 = _mm_unpacklo_epi8(p[4], p[5]), c1 = _mm_unpackhi_epi8(p[4], p[5]);
  const __m128i d0 = _mm_unpacklo_epi8(p[6], p[7]), d1 = _mm_unpackhi_epi8(p[6], p[7]);
  const __m128i low[4] = {_mm_unpacklo_epi16(a0, b0), _mm_unpackhi_epi16(a0, b0), _mm_unpacklo_epi16(a1, b1),
                          _mm_unpackhi_epi16(a1, b1)};
  const __m128i high[4] = {_mm_unpacklo_epi16(c0, d0), _mm_unpackhi_epi16(c0, d0), _mm_unpacklo_epi16(c1, d1),
                           _mm_unpackhi_epi16(c1, d1)};
  for (size_t k = 0; k < 4; ++k) {
    pairs[2 * k] = _mm_unpacklo_epi32(low[k], high[k]);
    pairs[2 * k + 1] = _mm_unpackhi_epi32(low[k], high[k]);
  }
}
#endif

// Word i of eight byte planes of `count` bytes, a byte at a time (the tails of the loops below).
inline uint64_t word_at(const uint8_t* planes, size_t count, size_t i) {
  uint64_t word = 0;
  for (size_t b = 0; b < 8; ++b) word |= uint64_t(planes[b * count + i]) << (8 * b);
  return word;
}

// Eight planes of `count` bytes back into 64-bit words: scalars and layer summaries are doubles, and a byte at a
// time they cost more than decompressing them.
void unshuffle64(const uint8_t* planes, size_t count, uint8_t* dst) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= count; i += 16) {
    __m128i pairs[8];
    gather_16_words(planes, count, i, pairs);
    for (size_t j = 0; j < 8; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8 * (i + 2 * j)), pairs[j]);
  }
#endif
  for (; i < count; ++i) store64(dst + 8 * i, word_at(planes, count, i));
}

// unshuffle64 of a single column XORed with the previous row (a scalar's or a summary field's values): the words
// come back as a running XOR, kept in a register instead of a second pass over the output.
void unshuffle64_running_xor(const uint8_t* planes, size_t count, uint8_t* dst) {
  size_t i = 0;
  uint64_t running = 0;
#if defined(__SSE2__)
  __m128i carry = _mm_setzero_si128();  // the running XOR in both halves
  for (; i + 16 <= count; i += 16) {
    __m128i pairs[8];
    gather_16_words(planes, count, i, pairs);
    for (size_t j = 0; j < 8; ++j) {
      __m128i pair = _mm_xor_si128(pairs[j], _mm_slli_si128(pairs[j], 8));  // [a, a ^ b]
      pair = _mm_xor_si128(pair, carry);
      carry = _mm_unpackhi_epi64(pair, pair);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8 * (i + 2 * j)), pair);
    }
  }
  if (i > 0) running = load64(dst + 8 * (i - 1));
#endif
  for (; i < count; ++i) {
    running ^= word_at(planes, count, i);
    store64(dst + 8 * i, running);
  }
}

// Undoes XOR_PREVIOUS in place: every row of `row_bytes` XORed with the row before it, already restored.
void xor_previous_rows(uint8_t* bytes, size_t total, size_t row_bytes) {
  if (row_bytes == 0 || total <= row_bytes) return;
  size_t i = row_bytes;
  if (row_bytes == 8 || row_bytes == 4) {
    // One element per row (a scalar's or a summary field's column): a running XOR kept in a register.
    uint64_t running = row_bytes == 8 ? load64(bytes) : load32(bytes);
    for (; i + row_bytes <= total; i += row_bytes) {
      if (row_bytes == 8) {
        running ^= load64(bytes + i);
        store64(bytes + i, running);
      } else {
        running ^= load32(bytes + i);
        store32(bytes + i, uint32_t(running));
      }
    }
    return;
  }
#if defined(__SSE2__)
  // Rows of at least 16 bytes: a vector never reads bytes it has not restored yet.
  if (row_bytes >= 16)
    for (; i + 16 <= total; i += 16) {
      const __m128i previous = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + i - row_bytes));
      const __m128i current = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + i));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes + i), _mm_xor_si128(current, previous));
    }
#endif
  for (; i < total; ++i) bytes[i] ^= bytes[i - row_bytes];
}

// DELTA_SPLIT: each element's residual is the zigzagged int32 difference of its bits and its base's bits, small when
// the value moved little. A step of a given size is more ulps of a smaller number, so the residual's expected length
// grows as the base's exponent shrinks: each residual is cut k = split - exponent(base) bits from the bottom
// (clamped to 0..24; 0 for a zero or subnormal base). The k low bits, close to random, go to a packed bit stream; the
// high part, a few small numbers that zstd's entropy coder squeezes, to a byte stream, where 255 says that the
// residual follows whole in the escape stream (an element that changed sign or moved far).
constexpr uint32_t kSplitMaxLowBits = 24;
// The element loops shift by a different amount per element and vectorise their independent passes: they are
// compiled a second time for AVX2 and BMI2 (one micro-op per variable shift instead of three), chosen at run time.
#if defined(__x86_64__) && defined(__GNUC__)
#define TRAINSCOPE_AVX2_BMI2 1
#define TRAINSCOPE_INLINE_BODY inline __attribute__((always_inline))
bool has_avx2_bmi2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
  return has;
}
#else
#define TRAINSCOPE_INLINE_BODY inline
#endif
constexpr uint32_t kSplitEscape = 255;

uint32_t zigzag(uint32_t delta) {
  return (delta << 1) ^ uint32_t(int32_t(delta) >> 31);
}
uint32_t unzigzag(uint32_t z) {
  return (z >> 1) ^ (0u - (z & 1));
}
uint32_t split_low_bits(uint32_t split, uint32_t base_bits) {
  const uint32_t exponent = (base_bits >> 23) & 0xFF;
  const int k = std::clamp(int(split) - int(exponent), 0, int(kSplitMaxLowBits));
  return exponent == 0 ? 0 : uint32_t(k);
}
// split_low_bits() for each exponent of the base: one load in the element loops instead of a clamp and a branch.
struct LowBitsTable {
  uint8_t bits[256];
  explicit LowBitsTable(uint32_t split) {
    for (uint32_t e = 0; e < 256; ++e) bits[e] = uint8_t(split_low_bits(split, e << 23));
  }
  uint32_t operator()(uint32_t base_bits) const { return bits[(base_bits >> 23) & 0xFF]; }
};

// Entropy in bits per symbol of a histogram of `total` symbols.
double entropy_bits(const uint32_t* histogram, size_t symbols, size_t total) {
  double bits = 0;
  for (size_t s = 0; s < symbols; ++s)
    if (histogram[s]) bits -= double(histogram[s]) * std::log2(double(histogram[s]) / double(total));
  return total ? bits / double(total) : 0;
}

// Layout: split (1 byte), high parts (count bytes), low bits (LSB first, padded to a byte), escapes (4 bytes each).
TRAINSCOPE_INLINE_BODY void decode_delta_split_body(const PackedArrayView& a, const uint8_t* base, uint8_t* dst) {
  const size_t count = a.count();
  if (a.size < 1 + count) throw FormatError("DELTA_SPLIT array of " + std::to_string(count) + " elements is too short");
  const uint32_t split = a.data[0];
  const uint8_t* high = a.data + 1;
  const size_t escapes = size_t(std::count(high, high + count, uint8_t(kSplitEscape)));
  if ((a.size - 1 - count) / 4 < escapes)
    throw FormatError("DELTA_SPLIT array lacks " + std::to_string(escapes) + " escaped residuals");
  const uint8_t* low = high + count;
  const size_t low_bytes = a.size - 1 - count - 4 * escapes;
  const uint8_t* escaped = low + low_bytes;
  // Blocks in three passes: the cuts (vectorised), the low bits two elements per step (at most 48 bits, inside one
  // 8-byte window), the values (vectorised); escaped elements are put right afterwards.
  constexpr size_t kBlock = 256;
  uint32_t cuts[kBlock + 1], low_values[kBlock + 1];
  uint64_t position = 0;  // in bits
  for (size_t start = 0; start < count; start += kBlock) {
    const size_t n = std::min(kBlock, count - start);
    const uint8_t* h = high + start;
    const uint8_t* b = base + 4 * start;
    const bool escapes_here = std::memchr(h, int(kSplitEscape), n) != nullptr;
    for (size_t j = 0; j < n; ++j) cuts[j] = h[j] == kSplitEscape ? 0 : split_low_bits(split, load32(b + 4 * j));
    cuts[n] = 0;
    // Each pair moves at most 6 bytes on: when the block's every window lies inside the low bits, no bounds checks.
    const bool inside = (position >> 3) + 3 * n + 8 <= low_bytes;
    for (size_t j = 0; j < n; j += 2) {
      const size_t byte = size_t(position >> 3);
      uint64_t window = 0;
      if (inside || byte + 8 <= low_bytes)
        window = load64(low + byte);
      else
        for (size_t q = byte; q < low_bytes; ++q) window |= uint64_t(low[q]) << (8 * (q - byte));
      window >>= position & 7;
      const uint32_t k0 = cuts[j], k1 = cuts[j + 1];
      low_values[j] = uint32_t(window) & ((1u << k0) - 1);
      low_values[j + 1] = uint32_t(window >> k0) & ((1u << k1) - 1);
      position += k0 + k1;
    }
    uint8_t* out = dst + 4 * start;
    for (size_t j = 0; j < n; ++j)
      store32(out + 4 * j, load32(b + 4 * j) + unzigzag(uint32_t(h[j]) << cuts[j] | low_values[j]));
    if (escapes_here)
      for (size_t j = 0; j < n; ++j)
        if (h[j] == kSplitEscape) {
          store32(out + 4 * j, load32(b + 4 * j) + unzigzag(load32(escaped)));
          escaped += 4;
        }
  }
  if ((position + 7) / 8 != low_bytes)
    throw FormatError("DELTA_SPLIT array holds " + std::to_string(low_bytes) +
                      " bytes of low bits, its residuals need " + std::to_string((position + 7) / 8));
}

#ifdef TRAINSCOPE_AVX2_BMI2
__attribute__((target("avx2,bmi2"))) void decode_delta_split_avx2(const PackedArrayView& a, const uint8_t* base,
                                                                  uint8_t* dst) {
  decode_delta_split_body(a, base, dst);
}
#endif

void decode_delta_split(const PackedArrayView& a, const uint8_t* base, uint8_t* dst) {
#ifdef TRAINSCOPE_AVX2_BMI2
  if (has_avx2_bmi2()) return decode_delta_split_avx2(a, base, dst);
#endif
  decode_delta_split_body(a, base, dst);
}

// Declared here, defined with the low-rank coder below.
void predict_low_rank(const uint8_t* basis, const uint8_t* coefficients, size_t rows, size_t columns, size_t rank,
                      uint8_t* out);

// LOW_RANK_SPLIT: a matrix G (rows x columns) predicted as B V, B = `rank` of its own columns (stored), V their
// coefficients (rank x columns float32, stored), the residual against the prediction coded as DELTA_SPLIT. A Linear
// layer's weight gradient is a sum of one outer product per sample of the batch: of rank at most the batch size.
constexpr size_t kLowRankHeader = 12;  // rows, columns, rank: uint32 each
constexpr uint32_t kLowRankMaxRank = 1024;

// The prediction, the same bit for bit wherever it runs: every product of two floats is exact in double, each sum
// is taken in the same order (k = 0, 1, ...; vectorised across j only), subnormal inputs count as zero and a result
// that is not a normal float becomes zero, so neither flush-to-zero modes nor fused multiply-adds change it.
TRAINSCOPE_INLINE_BODY void predict_low_rank_body(const uint8_t* basis, const uint8_t* coefficients, size_t rows,
                                                  size_t columns, size_t rank, uint8_t* out) {
  std::vector<double> v(rank * columns), sum(columns);
  const auto to_double = [](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return (bits & 0x7F800000u) ? double(f) : 0.0;  // a subnormal (or zero) input is zero
  };
  for (size_t i = 0; i < rank * columns; ++i) v[i] = to_double(load32(coefficients + 4 * i));
  for (size_t i = 0; i < rows; ++i) {
    std::fill(sum.begin(), sum.end(), 0.0);
    for (size_t k = 0; k < rank; ++k) {
      const double b = to_double(load32(basis + 4 * (i * rank + k)));
      const double* vk = v.data() + k * columns;
      for (size_t j = 0; j < columns; ++j) sum[j] += b * vk[j];
    }
    for (size_t j = 0; j < columns; ++j) {
      const double p = sum[j];
      const bool normal = std::fabs(p) >= 0x1p-126 && std::fabs(p) < 0x1p128;
      const float f = normal ? float(p) : 0.0f;
      std::memcpy(out + 4 * (i * columns + j), &f, 4);
    }
  }
}

#ifdef TRAINSCOPE_AVX2_BMI2
__attribute__((target("avx2,bmi2"))) void predict_low_rank_avx2(const uint8_t* basis, const uint8_t* coefficients,
                                                                size_t rows, size_t columns, size_t rank,
                                                                uint8_t* out) {
  predict_low_rank_body(basis, coefficients, rows, columns, rank, out);
}
#endif

void predict_low_rank(const uint8_t* basis, const uint8_t* coefficients, size_t rows, size_t columns, size_t rank,
                      uint8_t* out) {
#ifdef TRAINSCOPE_AVX2_BMI2
  if (has_avx2_bmi2()) return predict_low_rank_avx2(basis, coefficients, rows, columns, rank, out);
#endif
  predict_low_rank_body(basis, coefficients, rows, columns, rank, out);
}

struct LowRankLayout {
  uint32_t rows = 0, columns = 0, rank = 0;
  const uint8_t* coefficients = nullptr;  // rank x columns float32, shuffled
  const uint8_t* basis = nullptr;         // rows x rank float32, shuffled
  PackedArrayView residual;               // DELTA_SPLIT of rows x columns against the prediction
};

LowRankLayout low_rank_layout(const PackedArrayView& a) {
  LowRankLayout l;
  if (a.size < kLowRankHeader) throw FormatError("LOW_RANK_SPLIT array holds no header");
  l.rows = load32(a.data), l.columns = load32(a.data + 4), l.rank = load32(a.data + 8);
  if (uint64_t(l.rows) * l.columns != a.count() || l.rank == 0 || l.rank > std::min(l.rows, l.columns) ||
      l.rank > kLowRankMaxRank)
    throw FormatError("LOW_RANK_SPLIT array of " + std::to_string(a.count()) + " elements names a " +
                      std::to_string(l.rows) + "x" + std::to_string(l.columns) + " matrix of rank " +
                      std::to_string(l.rank));
  const uint64_t factors = 4 * uint64_t(l.rank) * (uint64_t(l.columns) + l.rows);
  if (a.size - kLowRankHeader < factors + 1 + a.count())
    throw FormatError("LOW_RANK_SPLIT array of " + std::to_string(a.size) + " bytes is too short for its factors");
  l.coefficients = a.data + kLowRankHeader;
  l.basis = l.coefficients + 4 * size_t(l.rank) * l.columns;
  l.residual.type = proto::FLOAT32;
  l.residual.filter = proto::DELTA_SPLIT;
  l.residual.rows = 1;
  l.residual.columns = uint32_t(a.count());
  l.residual.data = l.basis + 4 * size_t(l.rank) * l.rows;
  l.residual.size = a.size - kLowRankHeader - size_t(factors);
  return l;
}

void decode_low_rank(const PackedArrayView& a, uint8_t* dst) {
  const LowRankLayout l = low_rank_layout(a);
  std::vector<uint8_t> coefficients(4 * size_t(l.rank) * l.columns), basis(4 * size_t(l.rank) * l.rows),
      prediction(4 * a.count());
  unshuffle32(l.coefficients, size_t(l.rank) * l.columns, nullptr, coefficients.data());
  unshuffle32(l.basis, size_t(l.rank) * l.rows, nullptr, basis.data());
  predict_low_rank(basis.data(), coefficients.data(), l.rows, l.columns, l.rank, prediction.data());
  decode_delta_split(l.residual, prediction.data(), dst);
}

// Bytes per element of an ElementType, 0 for one this reader does not know.
size_t element_width(int32_t type) {
  switch (type) {
    case proto::FLOAT32: return 4;
    case proto::FLOAT64: return 8;
    case proto::FLOAT16:
    case proto::BFLOAT16: return 2;
    default: return 0;
  }
}

void check_array(const PackedArrayView& a, size_t width) {
  if (a.filter == proto::DELTA_SPLIT || a.filter == proto::LOW_RANK_SPLIT) {  // at least a byte per element
    if (a.size <= a.count() || width != 4)
      throw FormatError(std::string(a.filter == proto::DELTA_SPLIT ? "DELTA_SPLIT" : "LOW_RANK_SPLIT") + " array of " +
                        std::to_string(a.rows) + "x" + std::to_string(a.columns) + " " + std::to_string(width * 8) +
                        "-bit elements holds " + std::to_string(a.size) + " bytes");
    return;
  }
  // Division, not multiplication: rows x columns x width may not fit in 64 bits for a forged array.
  if (a.size % width != 0 || a.size / width != a.count())
    throw FormatError("array of " + std::to_string(a.rows) + "x" + std::to_string(a.columns) + " elements holds " +
                      std::to_string(a.size) + " bytes");
  if (a.filter != proto::NONE && a.filter != proto::SHUFFLE && a.filter != proto::XOR_PREVIOUS_SHUFFLE &&
      a.filter != proto::XOR_BASE_SHUFFLE && a.filter != proto::DELTA_SPLIT)
    throw FormatError("unknown array filter " + std::to_string(a.filter));
}

// Reverses the filter into count() elements of `width` bytes at `dst`, the element bits unchanged. `base` (same
// width and count) is XORed in for XOR_BASE_SHUFFLE; `has_base` says the caller gave one.
void decode_elements(const PackedArrayView& a, size_t width, bool has_base, const uint8_t* base, uint8_t* dst) {
  if ((a.filter == proto::XOR_BASE_SHUFFLE || a.filter == proto::DELTA_SPLIT) && !has_base)
    throw FormatError("array coded against a base that is missing or differs in size");
  if (a.filter == proto::DELTA_SPLIT) {
    if (width != 4) throw FormatError("DELTA_SPLIT array of " + std::to_string(width * 8) + "-bit elements");
    return decode_delta_split(a, base, dst);
  }
  if (a.filter == proto::LOW_RANK_SPLIT) {
    if (width != 4) throw FormatError("LOW_RANK_SPLIT array of " + std::to_string(width * 8) + "-bit elements");
    return decode_low_rank(a, dst);
  }
  const size_t count = a.count();
  if (count == 0) return;
  if (a.filter == proto::NONE) {
    std::memcpy(dst, a.data, count * width);
    return;
  }
  const bool xor_base = a.filter == proto::XOR_BASE_SHUFFLE;
  if (width == 4) {
    unshuffle32(a.data, count, xor_base ? base : nullptr, dst);  // the base XOR rides along
  } else {
    if (width == 8 && a.filter == proto::XOR_PREVIOUS_SHUFFLE && a.columns == 1) {
      unshuffle64_running_xor(a.data, count, dst);
      return;
    }
    if (width == 2) unshuffle16(a.data, count, dst);
    if (width == 8) unshuffle64(a.data, count, dst);
    if (xor_base)
      for (size_t i = 0; i < count * width; ++i) dst[i] ^= base[i];
  }
  if (a.filter == proto::XOR_PREVIOUS_SHUFFLE) xor_previous_rows(dst, count * width, size_t(a.columns) * width);
}

}  // namespace

size_t pack_float32_into(const float* values, uint32_t rows, uint32_t columns, proto::ArrayFilter filter,
                         const float* base, uint8_t* dst) {
  const size_t n = size_t(rows) * columns;
  const auto* src = reinterpret_cast<const uint8_t*>(values);
  switch (filter) {
    case proto::NONE:
      if (n) std::memcpy(dst, src, n * 4);
      return n * 4;
    case proto::SHUFFLE: shuffle32(src, nullptr, 0, 0, n, n, dst); return n * 4;
    case proto::XOR_BASE_SHUFFLE: shuffle32(src, reinterpret_cast<const uint8_t*>(base), 0, 0, n, n, dst); return n * 4;
    case proto::XOR_PREVIOUS_SHUFFLE: {
      const size_t first_row = std::min<size_t>(columns, n);
      shuffle32(src, nullptr, 0, 0, first_row, n, dst);
      shuffle32(src, src, columns, first_row, n, n, dst);
      return n * 4;
    }
    case proto::DELTA_SPLIT:
      return pack_delta_split_into(values, base, n, plan_float32_delta(values, base, n).split, dst);
    default: throw FormatError("unknown array filter " + std::to_string(int(filter)));
  }
}

namespace {

void pack_float32(const float* values, uint32_t rows, uint32_t columns, proto::ArrayFilter filter, const float* base,
                  proto::PackedArray* out) {
  std::string* data = out->mutable_data();
  const size_t count = size_t(rows) * columns;
  data->resize(filter == proto::DELTA_SPLIT ? float32_data_bound(count) : 4 * count);
  data->resize(pack_float32_into(values, rows, columns, filter, base, reinterpret_cast<uint8_t*>(data->data())));
  out->set_type(proto::FLOAT32);
  out->set_filter(filter);
  out->set_rows(rows);
  out->set_columns(columns);
}

}  // namespace

uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exponent = (x >> 23) & 0xFFu;
  uint32_t mantissa = x & 0x7FFFFFu;
  if (exponent == 0xFF) return uint16_t(sign | 0x7C00u | (mantissa ? 0x200u | (mantissa >> 13) : 0));  // Inf, NaN
  int e = int(exponent) - 127 + 15;
  if (e >= 31) return uint16_t(sign | 0x7C00u);  // overflow to Inf
  if (e <= 0) {                                  // subnormal half, or zero
    if (e < -10) return uint16_t(sign);
    mantissa |= 0x800000u;
    const int shift = 14 - e;
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = (uint32_t(e) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) ++half;  // may carry into the exponent: still correct
  return uint16_t(sign | half);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_float(sign);
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while (!(mantissa & 0x400u));
    return bits_float(sign | (uint32_t(127 - 15 - e) << 23) | ((mantissa & 0x3FFu) << 13));
  }
  return bits_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

uint16_t float_to_bfloat16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFFu)) return uint16_t((x >> 16) | 0x40u);  // keep NaN a NaN
  const uint32_t rounding = 0x7FFFu + ((x >> 16) & 1u);
  return uint16_t((x + rounding) >> 16);
}

float bfloat16_to_float(uint16_t h) {
  return bits_float(uint32_t(h) << 16);
}

void pack_floats(const float* values, uint32_t rows, uint32_t columns, Precision precision, proto::ArrayFilter filter,
                 const float* base, proto::PackedArray* out) {
  const size_t n = size_t(rows) * columns;
  if (precision == Precision::Float32) return pack_float32(values, rows, columns, filter, base, out);
  std::vector<uint16_t> words = to_16bit(values, n, precision);
  std::vector<uint16_t> base_words;
  if (filter == proto::XOR_BASE_SHUFFLE) base_words = to_16bit(base, n, precision);
  out->set_type(precision == Precision::Float16 ? proto::FLOAT16 : proto::BFLOAT16);
  encode_words(words, &base_words, rows, columns, filter, out);
}

DeltaPlan plan_float32_delta(const float* values, const float* base, size_t count) {
  if (count == 0) return {};
  // A few thousand elements spread over the array tell the residuals' sizes well enough.
  const size_t stride = std::max<size_t>(1, count / 2048);
  const size_t samples = (count + stride - 1) / stride;
  std::vector<uint32_t> residual(samples), base_bits(samples);
  uint32_t top[256] = {}, second[256] = {};
  size_t zeros = 0;
  double length_plus_exponent = 0;
  const auto* v = reinterpret_cast<const uint8_t*>(values);
  const auto* b = reinterpret_cast<const uint8_t*>(base);
  for (size_t j = 0; j < samples; ++j) {
    const uint32_t x = load32(v + 4 * j * stride), y = load32(b + 4 * j * stride);
    residual[j] = zigzag(x - y);
    base_bits[j] = y;
    ++top[x >> 24];
    ++second[(x >> 16) & 0xFF];
    zeros += (x & 0x7FFFFFFF) == 0;
    length_plus_exponent += double(32 - (residual[j] ? __builtin_clz(residual[j]) : 32)) + double((y >> 23) & 0xFF);
  }
  // On its own (SHUFFLE): the two upper bytes as zstd's entropy coder sees them, the two lower ones random but for
  // zeros.
  const double alone = entropy_bits(top, 256, samples) + entropy_bits(second, 256, samples) +
                       16.0 * double(samples - zeros) / double(samples);
  // Against the base: the low bits as they are, the high parts' entropy, 32 more bits per escape. The best split
  // leaves a few bits above the cut of a typical residual.
  const int guess = int(length_plus_exponent / double(samples));
  DeltaPlan plan;
  double best = 1e300;
  for (int split = std::max(0, guess - 7); split <= std::min(255, guess); ++split) {
    uint32_t high[256] = {};
    double low_bits = 0;
    for (size_t j = 0; j < samples; ++j) {
      const uint32_t k = split_low_bits(uint32_t(split), base_bits[j]);
      const uint32_t h = residual[j] >> k;
      if (h >= kSplitEscape) {
        ++high[kSplitEscape];
        low_bits += 32;
      } else {
        ++high[h];
        low_bits += k;
      }
    }
    const double bits = low_bits / double(samples) + entropy_bits(high, 256, samples);
    if (bits < best) best = bits, plan.split = uint8_t(split);
  }
  plan.against_base = best < 0.97 * alone;
  return plan;
}

size_t float32_data_bound(size_t count) {
  return 5 * count + 16;  // DELTA_SPLIT's worst case: every element escaped
}

namespace {

TRAINSCOPE_INLINE_BODY size_t pack_delta_split_body(const float* values, const float* base, size_t count, uint8_t split,
                                                    uint8_t* dst) {
  dst[0] = split;
  uint8_t* high = dst + 1;
  uint8_t* low = high + count;
  const auto* v = reinterpret_cast<const uint8_t*>(values);
  const auto* b = reinterpret_cast<const uint8_t*>(base);
  // Blocks of elements in two passes: the first, free of dependencies between elements, vectorises (residual, cut,
  // high part, low bits); the second appends the low bits two elements at a time with a branch-free bit writer,
  // whose pending bits (fewer than 8 between steps) are stored 8 bytes at a time, the output advancing by whole
  // bytes; the bound's spare bytes take the overhang.
  constexpr size_t kBlock = 256;
  uint32_t low_values[kBlock], low_counts[kBlock];
  uint64_t pending = 0;
  uint32_t pending_bits = 0;
  uint32_t escapes = 0;
  for (size_t start = 0; start < count; start += kBlock) {
    const size_t n = std::min(kBlock, count - start);
    for (size_t j = 0; j < n; ++j) {
      const size_t i = start + j;
      const uint32_t y = load32(b + 4 * i);
      const uint32_t z = zigzag(load32(v + 4 * i) - y);
      const uint32_t k = split_low_bits(split, y);
      const uint32_t h = z >> k;
      const bool escaped = h >= kSplitEscape;  // its residual is written whole after the loop
      escapes += escaped;
      high[i] = uint8_t(escaped ? kSplitEscape : h);
      low_values[j] = escaped ? 0 : z & ((1u << k) - 1);
      low_counts[j] = escaped ? 0 : k;
    }
    if (n & 1) low_values[n] = low_counts[n] = 0;
    for (size_t j = 0; j < n; j += 2) {
      pending |= (uint64_t(low_values[j]) | uint64_t(low_values[j + 1]) << low_counts[j]) << pending_bits;
      pending_bits += low_counts[j] + low_counts[j + 1];
      store64(low, pending);
      low += pending_bits >> 3;
      pending >>= pending_bits & ~7u;
      pending_bits &= 7;
    }
  }
  if (pending_bits) *low++ = uint8_t(pending);
  if (escapes)
    for (size_t i = 0; i < count; ++i)
      if (high[i] == kSplitEscape) {
        store32(low, zigzag(load32(v + 4 * i) - load32(b + 4 * i)));
        low += 4;
      }
  return size_t(low - dst);
}

#ifdef TRAINSCOPE_AVX2_BMI2
__attribute__((target("avx2,bmi2"))) size_t pack_delta_split_avx2(const float* values, const float* base, size_t count,
                                                                  uint8_t split, uint8_t* dst) {
  return pack_delta_split_body(values, base, count, split, dst);
}
#endif

}  // namespace

size_t pack_delta_split_into(const float* values, const float* base, size_t count, uint8_t split, uint8_t* dst) {
#ifdef TRAINSCOPE_AVX2_BMI2
  if (has_avx2_bmi2()) return pack_delta_split_avx2(values, base, count, split, dst);
#endif
  return pack_delta_split_body(values, base, count, split, dst);
}

void pack_delta_split(const float* values, const float* base, uint32_t rows, uint32_t columns, uint8_t split,
                      proto::PackedArray* out) {
  const size_t count = size_t(rows) * columns;
  std::string* data = out->mutable_data();
  data->resize(float32_data_bound(count));
  data->resize(pack_delta_split_into(values, base, count, split, reinterpret_cast<uint8_t*>(data->data())));
  out->set_type(proto::FLOAT32);
  out->set_filter(proto::DELTA_SPLIT);
  out->set_rows(rows);
  out->set_columns(columns);
}

namespace {

// The estimated bits per element of `values` stored on their own (SHUFFLE), from a sample: the two upper bytes as
// zstd's entropy coder sees them, the two lower ones random but for zeros.
double bits_alone(const float* values, size_t count) {
  const size_t stride = std::max<size_t>(1, count / 2048);
  const size_t samples = (count + stride - 1) / stride;
  uint32_t top[256] = {}, second[256] = {};
  size_t zeros = 0;
  for (size_t j = 0; j < samples; ++j) {
    const uint32_t x = load32(reinterpret_cast<const uint8_t*>(values + j * stride));
    ++top[x >> 24];
    ++second[(x >> 16) & 0xFF];
    zeros += (x & 0x7FFFFFFF) == 0;
  }
  return entropy_bits(top, 256, samples) + entropy_bits(second, 256, samples) +
         16.0 * double(samples - zeros) / double(samples);
}

// Dot product and update of the Gram-Schmidt loop, four lanes at a time (vector extensions: AVX2 in its clone).
typedef double Double4 __attribute__((vector_size(32)));
TRAINSCOPE_INLINE_BODY double dot(const double* a, const double* b, size_t n) {
  Double4 sum = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    Double4 x, y;
    std::memcpy(&x, a + i, sizeof x);
    std::memcpy(&y, b + i, sizeof y);
    sum += x * y;
  }
  double s = (sum[0] + sum[1]) + (sum[2] + sum[3]);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Modified Gram-Schmidt with column pivoting on a column-major matrix: picks up to `max_rank` columns whose span
// holds every column up to rounding (`basis`), and each column's coordinates in that orthonormal basis (`d`, one
// row of `columns` per step). False if `max_rank` columns do not suffice.
TRAINSCOPE_INLINE_BODY bool orthogonalise_body(double* residual, double* norm2, size_t rows, size_t columns,
                                               size_t max_rank, double largest, std::vector<uint32_t>* basis,
                                               std::vector<double>* d) {
  std::vector<char> chosen(columns, 0);
  std::vector<double> q(rows);
  for (;;) {
    size_t pivot = 0;
    double best = -1;
    for (size_t j = 0; j < columns; ++j)
      if (!chosen[j] && norm2[j] > best) best = norm2[j], pivot = j;
    if (best <= 1e-10 * largest) return true;  // the rest is rounding
    if (basis->size() == max_rank) return false;
    const double length = std::sqrt(dot(residual + pivot * rows, residual + pivot * rows, rows));
    for (size_t i = 0; i < rows; ++i) q[i] = residual[pivot * rows + i] / length;
    const size_t k = basis->size();
    basis->push_back(uint32_t(pivot));
    chosen[pivot] = 1;
    d->resize((k + 1) * columns, 0.0);
    for (size_t j = 0; j < columns; ++j) {
      if (chosen[j] && j != pivot) continue;  // an earlier pivot: its residual is rounding
      double* r = residual + j * rows;
      const double projection = dot(q.data(), r, rows);
      (*d)[k * columns + j] = projection;
      for (size_t i = 0; i < rows; ++i) r[i] -= projection * q[i];
      norm2[j] = std::max(0.0, norm2[j] - projection * projection);
    }
  }
}

#ifdef TRAINSCOPE_AVX2_BMI2
__attribute__((target("avx2,fma"))) bool orthogonalise_avx2(double* residual, double* norm2, size_t rows,
                                                            size_t columns, size_t max_rank, double largest,
                                                            std::vector<uint32_t>* basis, std::vector<double>* d) {
  return orthogonalise_body(residual, norm2, rows, columns, max_rank, largest, basis, d);
}
#endif

bool orthogonalise(double* residual, double* norm2, size_t rows, size_t columns, size_t max_rank, double largest,
                   std::vector<uint32_t>* basis, std::vector<double>* d) {
#ifdef TRAINSCOPE_AVX2_BMI2
  if (has_avx2_bmi2() && __builtin_cpu_supports("fma"))
    return orthogonalise_avx2(residual, norm2, rows, columns, max_rank, largest, basis, d);
#endif
  return orthogonalise_body(residual, norm2, rows, columns, max_rank, largest, basis, d);
}

float coefficient_float(double v) {
  const bool normal = std::fabs(v) >= 0x1p-126 && std::fabs(v) < 0x1p127;
  return normal ? float(v) : 0.0f;
}

}  // namespace

bool pack_low_rank(const float* values, uint32_t rows, uint32_t columns, std::string* data) {
  const size_t n = size_t(rows) * columns;
  if (rows < 16 || columns < 16) return false;
  const size_t max_rank = std::min<size_t>(kLowRankMaxRank, size_t(0.4 * double(n) / double(rows + columns)));
  if (max_rank == 0) return false;
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(values[i])) return false;  // NaN arithmetic differs between processors: keep it out
  // The columns, column-major in double: `rank` of them span every column up to float32 rounding.
  std::vector<double> residual(n), norm2(columns);
  for (size_t i = 0; i < rows; ++i)
    for (size_t j = 0; j < columns; ++j) residual[j * rows + i] = values[i * columns + j];
  double largest = 0;
  for (size_t j = 0; j < columns; ++j)
    largest = std::max(largest, norm2[j] = dot(&residual[j * rows], &residual[j * rows], rows));
  if (largest == 0) return false;  // all zeros: SHUFFLE does it
  std::vector<uint32_t> basis;
  std::vector<double> d;  // rank x columns: each column's coordinates in the orthonormal basis
  if (!orthogonalise(residual.data(), norm2.data(), rows, columns, max_rank, largest, &basis, &d)) return false;
  const size_t rank = basis.size();
  if (rank == 0) return false;
  // G = Q D and B = Q U with U[a][k] = D[a][basis[k]] (upper triangular), so G = B V with V = U^-1 D.
  std::vector<float> coefficients(rank * columns);
  std::vector<double> v(rank);
  for (size_t j = 0; j < columns; ++j) {
    for (size_t a = rank; a-- > 0;) {
      double x = d[a * columns + j];
      for (size_t b = a + 1; b < rank; ++b) x -= d[a * columns + basis[b]] * v[b];
      v[a] = x / d[a * columns + basis[a]];
    }
    for (size_t a = 0; a < rank; ++a) coefficients[a * columns + j] = coefficient_float(v[a]);
  }
  for (size_t k = 0; k < rank; ++k)  // a basis column is itself
    for (size_t a = 0; a < rank; ++a) coefficients[a * columns + basis[k]] = a == k ? 1.0f : 0.0f;
  std::vector<float> basis_values(rows * rank), prediction(n);
  for (size_t i = 0; i < rows; ++i)
    for (size_t k = 0; k < rank; ++k) basis_values[i * rank + k] = values[i * columns + basis[k]];
  predict_low_rank(reinterpret_cast<const uint8_t*>(basis_values.data()),
                   reinterpret_cast<const uint8_t*>(coefficients.data()), rows, columns, rank,
                   reinterpret_cast<uint8_t*>(prediction.data()));

  const size_t factors = 4 * rank * (columns + rows);
  data->resize(kLowRankHeader + factors + float32_data_bound(n));
  auto* out = reinterpret_cast<uint8_t*>(data->data());
  store32(out, rows);
  store32(out + 4, columns);
  store32(out + 8, uint32_t(rank));
  uint8_t* p = out + kLowRankHeader;
  shuffle32(reinterpret_cast<const uint8_t*>(coefficients.data()), nullptr, 0, 0, rank * columns, rank * columns, p);
  p += 4 * rank * columns;
  shuffle32(reinterpret_cast<const uint8_t*>(basis_values.data()), nullptr, 0, 0, rank * rows, rank * rows, p);
  p += 4 * rank * rows;
  const uint8_t split = plan_float32_delta(values, prediction.data(), n).split;
  p += pack_delta_split_into(values, prediction.data(), n, split, p);
  data->resize(size_t(p - out));
  // Worth it when the factors (compressed little: they are noise) and the residual beat the matrix on its own.
  const double low_rank_bytes = double(factors) / 1.1 + double(size_t(p - out) - factors);
  return low_rank_bytes < 0.9 * bits_alone(values, n) / 8.0 * double(n);
}

PackedArrayView view_of(const proto::PackedArray& array) {
  PackedArrayView v;
  v.type = array.type();
  v.filter = array.filter();
  v.rows = array.rows();
  v.columns = array.columns();
  v.data = reinterpret_cast<const uint8_t*>(array.data().data());
  v.size = array.data().size();
  return v;
}

void unpack_floats_into(const PackedArrayView& array, const float* base, float* out) {
  const size_t n = array.count();
  switch (array.type) {
    case proto::FLOAT32:
      check_array(array, 4);
      decode_elements(array, 4, base != nullptr, reinterpret_cast<const uint8_t*>(base),
                      reinterpret_cast<uint8_t*>(out));
      return;
    case proto::FLOAT16:
    case proto::BFLOAT16: {
      check_array(array, 2);
      const Precision p = array.type == proto::FLOAT16 ? Precision::Float16 : Precision::BFloat16;
      std::vector<uint16_t> base_words;
      if (base && array.filter == proto::XOR_BASE_SHUFFLE) base_words = to_16bit(base, n, p);
      std::vector<uint16_t> words(n);
      decode_elements(array, 2, base != nullptr, reinterpret_cast<const uint8_t*>(base_words.data()),
                      reinterpret_cast<uint8_t*>(words.data()));
      if (p == Precision::Float16)
        for (size_t i = 0; i < n; ++i) out[i] = half_to_float(words[i]);
      else
        for (size_t i = 0; i < n; ++i) out[i] = bfloat16_to_float(words[i]);
      return;
    }
    case proto::FLOAT64: {
      check_array(array, 8);
      std::vector<double> d(n);
      decode_elements(array, 8, false, nullptr, reinterpret_cast<uint8_t*>(d.data()));
      for (size_t i = 0; i < n; ++i) out[i] = float(d[i]);
      return;
    }
    default: throw FormatError("unknown element type " + std::to_string(array.type));
  }
}

std::vector<float> unpack_floats(const PackedArrayView& array, const float* base) {
  const size_t width = element_width(array.type);
  if (width == 0) throw FormatError("unknown element type " + std::to_string(array.type));
  check_array(array, width);  // before allocating: a forged row count must not allocate more than the payload holds
  std::vector<float> out(array.count());
  unpack_floats_into(array, base, out.data());
  return out;
}

std::vector<float> unpack_floats(const proto::PackedArray& array, const float* base) {
  return unpack_floats(view_of(array), base);
}

void pack_doubles(const double* values, uint32_t rows, uint32_t columns, proto::ArrayFilter filter,
                  proto::PackedArray* out) {
  const size_t n = size_t(rows) * columns;
  std::vector<uint64_t> words(n);
  if (n) std::memcpy(words.data(), values, n * 8);
  out->set_type(proto::FLOAT64);
  encode_words<uint64_t>(words, nullptr, rows, columns, filter, out);
}

void unpack_doubles_into(const PackedArrayView& array, double* out) {
  if (array.type != proto::FLOAT64) {
    const std::vector<float> f = unpack_floats(array);
    std::copy(f.begin(), f.end(), out);
    return;
  }
  check_array(array, 8);
  decode_elements(array, 8, false, nullptr, reinterpret_cast<uint8_t*>(out));
}

std::vector<double> unpack_doubles(const PackedArrayView& array) {
  if (array.type != proto::FLOAT64) {
    const std::vector<float> f = unpack_floats(array);
    return std::vector<double>(f.begin(), f.end());
  }
  check_array(array, 8);
  std::vector<double> out(array.count());
  decode_elements(array, 8, false, nullptr, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

std::vector<double> unpack_doubles(const proto::PackedArray& array) {
  return unpack_doubles(view_of(array));
}

}  // namespace trainscope::format
