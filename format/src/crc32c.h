// CRC-32C (Castagnoli), the checksum of every chunk and header. Uses the SSE4.2 instruction when the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace trainscope::format {

uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace trainscope::format
