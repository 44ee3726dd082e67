#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, trains the VAE example on Fashion-MNIST with a
# numerically unstable exp injected in layer enc.logvar at step 600, records it, describes the recording and
# finds the layer and step where the failure started.
#   examples/demo.sh [flags for the VAE example that override these, e.g. --fail dead --fail-step 300]
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh dev --target trainscope trainscope-example-vae

RUN=runs/vae-demo
rm -rf "$RUN"
mkdir -p runs
echo "== training the VAE with an injected failure, recording into $RUN"
build/dev/examples/vae/trainscope-example-vae --out "$RUN" --fail exp --fail-step 600 --steps 900 "$@"

echo
echo "== trainscope info $RUN"
build/dev/analysis/cli/trainscope info "$RUN"
echo
echo "== trainscope anomalies $RUN   (which layer, from which step)"
build/dev/analysis/cli/trainscope anomalies "$RUN" --max 3
echo
echo "The recording is in $RUN. Try:"
echo "  build/dev/analysis/cli/trainscope export $RUN --scalars | tail"
echo "  build/dev/analysis/cli/trainscope layers $RUN --step 600 --window 20"
echo "  build/dev/analysis/cli/trainscope export $RUN --layer enc.logvar --quantity activation --stat max --steps 550:610"
echo "  build/dev/analysis/cli/trainscope check $RUN"
