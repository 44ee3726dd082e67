#!/usr/bin/env bash
# Builds the segment reader fuzzer with clang in build/fuzz and runs it for a bounded time (default 60 s; set
# TRAINSCOPE_FUZZ_SECONDS). Skipped, with a message, where clang++ is missing. Called by tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not found, the libFuzzer target is skipped"
  exit 0
fi
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
cmake -S tests/fuzz -B build/fuzz "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >build/fuzz-configure.log 2>&1 || { cat build/fuzz-configure.log; exit 1; }
cmake --build build/fuzz -j2 --target segment_reader_fuzzer make_fuzz_corpus
echo "fuzz: segment reader for ${TRAINSCOPE_FUZZ_SECONDS:-60} s"
tests/fuzz/run_fuzzer.sh build/fuzz/segment_reader_fuzzer build/fuzz/make_fuzz_corpus build/fuzz/work \
  "${TRAINSCOPE_FUZZ_SECONDS:-60}" >build/fuzz/fuzz.log 2>&1 || { tail -60 build/fuzz/fuzz.log; exit 1; }
grep -E "^(#[0-9]+\s+DONE|stat::number_of_executed_units)" build/fuzz/fuzz.log || true
