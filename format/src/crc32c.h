// CRC-32C (Castagnoli), the checksum of every chunk and header. Uses the SSE4.2 instruction when the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace trainscope::format {

uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
// The same without the instruction (slicing by eight): used where the CPU lacks it, and by the tests as reference.
uint32_t crc32c_portable(const void* data, size_t size, uint32_t crc = 0);

}  // namespace trainscope::format
