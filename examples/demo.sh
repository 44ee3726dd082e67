#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, trains the VAE example on Fashion-MNIST with a
# failure injected in one layer, records it, and describes the recording.
#   examples/demo.sh [extra flags for the VAE example, e.g. --fail unstable-log --steps 1500]
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh dev --target trainscope trainscope-example-vae

RUN=runs/vae-demo
rm -rf "$RUN"
mkdir -p runs
echo "== training the VAE with an injected failure, recording into $RUN"
build/dev/examples/vae/trainscope-example-vae --out "$RUN" --fail exploding-lr "$@"

echo
echo "== trainscope info $RUN"
build/dev/analysis/cli/trainscope info "$RUN"
echo
echo "== trainscope check $RUN"
build/dev/analysis/cli/trainscope check "$RUN" || true
echo
echo "The recording is in $RUN. Try:"
echo "  build/dev/analysis/cli/trainscope export $RUN --scalars | tail"
echo "  build/dev/analysis/cli/trainscope export $RUN --layers"
