#!/usr/bin/python3
"""A real RTSP server for tests: serves one video file, looped, at rtsp://127.0.0.1:PORT/test.

Run it with Debian's own interpreter, not the project's venv: it needs python3-gi and
GStreamer's RTSP server library (tests/setup_rtsp.sh installs both)::

    /usr/bin/python3 tests/rtsp_server.py --video tests/.media/vtest.avi --port 8554

It prints "READY" on stdout once the port is listening and then serves until killed (SIGTERM
and SIGINT end it cleanly; tests also SIGKILL it to simulate a crashed camera).
"""
import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# Decode whatever the file holds and re-encode as low-latency H.264; a key frame every 10
# frames lets a client that (re)connects mid-stream start decoding within ~1 s.
LAUNCH = (
    '( multifilesrc location="{video}" loop=true ! decodebin ! videoconvert ! '
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="video file to serve (looped)")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--mount", default="/test", help="path of the stream (default /test)")
    args = parser.parse_args()
    if not os.path.isfile(args.video):
        print(f"rtsp_server: {args.video}: no such file", file=sys.stderr)
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH.format(video=os.path.abspath(args.video).replace('"', '\\"')))
    # One pipeline for all clients: a reconnecting client joins the running stream instead of
    # waiting for a new encoder to start.
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
