#!/usr/bin/env bash
# Installs the Debian packages Trainscope needs (only the missing ones), then configures and builds a preset.
# Idempotent: a second run installs nothing and rebuilds only what changed.
#   tests/setup.sh [PRESET] [cmake --build args...]     PRESET defaults to "dev" (see CMakePresets.json)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libgloo-dev libopenblas0-pthread  # the recorder (Gloo for multi-process runs) and the examples
  libprotobuf-dev protobuf-compiler libzstd-dev  # the recording format
  libeigen3-dev                               # the analysis
  qt6-base-dev qt6-charts-dev libqt6opengl6-dev qt6-svg-dev fonts-dejavu-core  # the viewer
  libgtest-dev libgmock-dev libbenchmark-dev  # tests and benchmarks
  clang libclang-rt-14-dev                    # the fuzzer (libFuzzer) and sanitizers with clang
  zlib1g-dev dataset-fashion-mnist            # the examples' data
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PRESET="${1:-dev}"
shift || true
if [ ! -f "build/$PRESET/build.ninja" ]; then
  cmake --preset "$PRESET" >/dev/null
fi
cmake --build --preset "$PRESET" -j "$(nproc)" "$@"
