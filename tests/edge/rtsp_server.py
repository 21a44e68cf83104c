"""A local RTSP server for the live-camera tests: serves one video file on loopback.

Run with a Python that has GStreamer's introspection bindings (Debian: ``python3-gi``,
``gir1.2-gst-rtsp-server-1.0``, ``gstreamer1.0-rtsp``, ``gstreamer1.0-plugins-good`` and
``-ugly``; ``scripts/test_assets.sh`` installs them)::

    /usr/bin/python3 tests/edge/rtsp_server.py PORT VIDEO.avi

serves ``rtsp://127.0.0.1:PORT/clip`` (H.264, zero-latency) and prints ``ready`` once it
listens. Every client gets the file from its start; it is not a GridWatch module (the tests
start and kill it).
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, video = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{video}" ! avidemux ! decodebin ! videoconvert ! '
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! "
        "rtph264pay name=pay0 pt=96 )")
    server.get_mount_points().add_factory("/clip", factory)
    if server.attach(None) == 0:
        sys.stderr.write(f"rtsp_server: cannot listen on 127.0.0.1:{port}\n")
        sys.exit(1)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
