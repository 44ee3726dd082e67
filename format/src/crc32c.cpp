#include "crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace trainscope::format {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected Castagnoli polynomial

struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};

}  // namespace

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  static const Tables tables;
  const auto& t = tables.t;
  crc = ~crc;
  while (n >= 8) {  // slicing-by-8
    uint64_t word;
    std::memcpy(&word, p, 8);
    word ^= crc;
    crc = t[7][word & 0xFF] ^ t[6][(word >> 8) & 0xFF] ^ t[5][(word >> 16) & 0xFF] ^ t[4][(word >> 24) & 0xFF] ^
          t[3][(word >> 32) & 0xFF] ^ t[2][(word >> 40) & 0xFF] ^ t[1][(word >> 48) & 0xFF] ^ t[0][word >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return ~crc;
}

namespace {

#if defined(__x86_64__)
// The crc32 instruction has a latency of three cycles and a throughput of one, so one dependent chain runs at a third
// of the speed the CPU allows. Long inputs go as three chains over adjacent blocks of kStride bytes, joined with the
// linear map "run kStride (or 2 * kStride) zero bytes through the CRC", tabulated once. On one CPU core this is what
// trim spends most of its own time on: every copied chunk is verified.
constexpr size_t kStride = 8192;

__attribute__((target("sse4.2"))) uint64_t crc_chain(uint64_t c, const uint8_t* p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
  }
  for (; n; --n) c = __builtin_ia32_crc32qi(uint32_t(c), *p++);
  return c;
}

// A linear map on CRC states as four byte tables: shift(c) = t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ ...
struct ZeroShift {
  std::array<std::array<uint32_t, 256>, 4> t{};
  explicit ZeroShift(size_t zero_bytes) {
    static const std::array<uint8_t, kStride * 2> zeros{};
    std::array<uint32_t, 32> basis{};
    for (int bit = 0; bit < 32; ++bit)
      basis[size_t(bit)] = uint32_t(crc_chain(uint64_t(1) << bit, zeros.data(), zero_bytes));
    for (int k = 0; k < 4; ++k)
      for (uint32_t b = 0; b < 256; ++b) {
        uint32_t v = 0;
        for (int i = 0; i < 8; ++i)
          if (b & (1u << i)) v ^= basis[size_t(8 * k + i)];
        t[size_t(k)][b] = v;
      }
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t c = ~crc;
  if (n >= 3 * kStride) {
    static const ZeroShift one(kStride), two(2 * kStride);
    do {
      uint64_t a = c, b = 0, d = 0;
      for (size_t i = 0; i < kStride; i += 8) {
        uint64_t wa, wb, wd;
        std::memcpy(&wa, p + i, 8);
        std::memcpy(&wb, p + kStride + i, 8);
        std::memcpy(&wd, p + 2 * kStride + i, 8);
        a = __builtin_ia32_crc32di(a, wa);
        b = __builtin_ia32_crc32di(b, wb);
        d = __builtin_ia32_crc32di(d, wd);
      }
      // The state after all three blocks: a moved past two blocks of zeros, b past one, d as it is (the CRC is
      // linear in the state and the data).
      c = two(uint32_t(a)) ^ one(uint32_t(b)) ^ uint32_t(d);
      p += 3 * kStride;
      n -= 3 * kStride;
    } while (n >= 3 * kStride);
  }
  return ~uint32_t(crc_chain(c, p, n));
}

bool cpu_has_sse42() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & bit_SSE4_2) != 0;
}
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  auto* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
  static const bool hardware = cpu_has_sse42();
  if (hardware) return crc32c_sse42(p, size, crc);
#endif
  return crc32c_portable(p, size, crc);
}

}  // namespace trainscope::format
