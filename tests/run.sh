#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test through ctest (unit, integration, CLI,
# install/consumer, benchmark smoke runs), then the fuzzer for a bounded time.
#   tests/run.sh            everything
#   tests/run.sh -L format  only the tests labelled "format" (any ctest arguments are passed on)
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh dev
ctest --preset dev -j "$(nproc)" --timeout 900 "$@"

if [ $# -eq 0 ] && [ -x tests/fuzz/run.sh ]; then
  tests/fuzz/run.sh
fi
