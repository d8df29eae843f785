#!/bin/sh
# Installs what tests/test_sources.py needs for its real RTSP server (tests/rtsp_server.py):
# GStreamer's RTSP server library with its introspection data, the Python bindings for Debian's
# own /usr/bin/python3, and the plugins for decoding vtest.avi and encoding/payloading H.264.
# Idempotent and quick when already installed: it checks the import first. Runs
# `apt-get update` only when the install fails without it. Needs apt-get (Debian/Ubuntu) and
# root, or sudo when not root.
set -eu

PY=/usr/bin/python3
packages="gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav"

can_import() {
    [ -x "$PY" ] && "$PY" -c "import gi; gi.require_version('GstRtspServer', '1.0'); gi.require_version('Gst', '1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay') and Gst.ElementFactory.find('decodebin')" >/dev/null 2>&1
}

if can_import; then
    echo "setup_rtsp: GstRtspServer and the needed GStreamer plugins are already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_rtsp: apt-get not found; install $packages by hand" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "setup_rtsp: not root and no sudo: cannot install $packages" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT INT TERM
apt_install() {
    # noninteractive: no debconf prompts on a CI runner
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages >>"$log" 2>&1
}

if ! apt_install; then
    # A fresh machine (or container) may have empty or stale package lists.
    echo "setup_rtsp: apt-get install failed; running apt-get update and retrying" >&2
    $sudo apt-get update >>"$log" 2>&1 || { cat "$log" >&2; echo "setup_rtsp: apt-get update failed" >&2; exit 1; }
    apt_install || { cat "$log" >&2; echo "setup_rtsp: apt-get install failed" >&2; exit 1; }
fi

if ! can_import; then
    cat "$log" >&2
    echo "setup_rtsp: installed $packages but $PY still cannot load GstRtspServer with x264enc, rtph264pay and decodebin" >&2
    exit 1
fi
echo "setup_rtsp: installed $packages"
