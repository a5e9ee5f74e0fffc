#!/usr/bin/env bash
# Takes a screenshot of the real app in a real X window (Xvfb + Qt's xcb plugin) running its demo:
# a sample photo part-noised and the shipped digits model sampling.
#   scripts/screenshot.sh [OUT.png] [forward|training|sampling] [DELAY_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshot.png}"
tab="${2:-sampling}"
delay="${3:-8000}"
settings="$(mktemp --suffix=.ini)"
trap 'rm -f "$settings"' EXIT
QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" \
  python3 -m diffusion_studio --settings "$settings" --demo --tab "$tab" --screenshot "$out" --delay "$delay"
