// TRAINSCOPE_SIMD_CLONES: a function compiled three times on x86-64 (x86-64-v3, AVX2 alone and the baseline), the
// best one the CPU runs chosen when the library loads, as LibTorch's own kernels choose at run time. For the
// libraries' element loops (the recorder's statistics kernels, the analysis's chunk scans); off under
// AddressSanitizer, which does not take target clones. x86-64-v3 adds FMA to AVX2: the statistics kernel's square
// and sum become one instruction (a 256x784 weight matrix in cache: 28 -> 23 us).
#pragma once

#if defined(__x86_64__) && defined(__has_attribute) && !defined(__SANITIZE_ADDRESS__)
#if __has_attribute(target_clones)
#define TRAINSCOPE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "avx2", "default")))
#endif
#endif
#ifndef TRAINSCOPE_SIMD_CLONES
#define TRAINSCOPE_SIMD_CLONES
#endif
