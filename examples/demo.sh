#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, trains the VAE example on Fashion-MNIST with a
# numerically unstable exp injected in layer enc.logvar at step 600, records it, describes the recording and
# finds the layer and step where the failure started; then opens the viewer (or, without a display, renders its
# four views to runs/vae-demo-*.png).
#   examples/demo.sh [flags for the VAE example that override these, e.g. --fail dead --fail-step 300]
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh dev --target trainscope trainscope-example-vae trainscope-viewer

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
VIEWER=build/dev/viewer/trainscope-viewer
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${TRAINSCOPE_DEMO_NO_WINDOW:-}" ]; then
  echo "== opening the viewer on $RUN (close its window to end the demo)"
  "$VIEWER" "$RUN"
else
  echo "== no display: the viewer renders its four views to pictures instead"
  for view in loss snapshot layer neuron; do
    "$VIEWER" "$RUN" --screenshot "runs/vae-demo-$view.png" --view "$view" --size 1400x900
    echo "  runs/vae-demo-$view.png"
  done
fi
echo
echo "The recording is in $RUN. Try:"
echo "  build/dev/analysis/cli/trainscope export $RUN --scalars | tail"
echo "  build/dev/analysis/cli/trainscope layers $RUN --step 600 --window 20"
echo "  build/dev/analysis/cli/trainscope export $RUN --layer enc.logvar --quantity activation --stat max --steps 550:610"
echo "  build/dev/analysis/cli/trainscope check $RUN"
echo "  $VIEWER $RUN        (the viewer; --screenshot OUT.png --view loss|snapshot|layer|neuron without a display)"
