// TRAINSCOPE_SIMD_CLONES: a function compiled twice on x86-64 (AVX2 and the baseline), the better one chosen when
// the library loads, as LibTorch's own kernels choose at run time. For the libraries' element loops (the
// recorder's statistics kernels, the analysis's chunk scans); off under AddressSanitizer, which does not take
// target clones.
#pragma once

#if defined(__x86_64__) && defined(__has_attribute) && !defined(__SANITIZE_ADDRESS__)
#if __has_attribute(target_clones)
#define TRAINSCOPE_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef TRAINSCOPE_SIMD_CLONES
#define TRAINSCOPE_SIMD_CLONES
#endif
