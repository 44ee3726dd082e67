#!/usr/bin/env bash
# check_install.sh BUILD_DIR CONSUMER_SOURCE WORK_DIR COMPONENT
# Installs BUILD_DIR into WORK_DIR/prefix, builds the consumer project against it and runs it.
set -euo pipefail
build="$1" consumer="$2" work="$3" component="$4"
rm -rf "$work/prefix" "$work/recording"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/trainscope"
test -f "$work/prefix/include/trainscope/format/run_reader.h"
test -f "$work/prefix/lib/cmake/Trainscope/TrainscopeConfig.cmake"
cmake -S "$consumer" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DTRAINSCOPE_COMPONENT="$component" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer" "$work/recording"
# The installed CLI reads what the consumer recorded.
"$work/prefix/bin/trainscope" info "$work/recording" | grep -q "Steps:"
echo "install + find_package($component) OK"
