"""What ``posestream run`` and ``posestream demo`` do around a :class:`Runtime`: pick the
sources, install the Ctrl-C handling, wait, shut down in order and print a summary."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from posestream.realtime.config import RunConfig

log = logging.getLogger(__name__)

__all__ = ["find_sample_video", "find_camera", "run_realtime", "SAMPLE_VIDEO_PLACES"]

#: Where ``demo`` looks for the sample video when there is no webcam: Debian's ``opencv-doc``
#: package ships ``vtest.avi`` (pedestrians filmed from above, 795 frames at 10 fps);
#: ``sh tests/get_media.sh`` unpacks it into ``tests/.media`` without installing the package.
SAMPLE_VIDEO_PLACES = (
    "tests/.media/vtest.avi",
    "/usr/share/doc/opencv-doc/examples/data/vtest.avi",
)


def find_sample_video() -> Path | None:
    """The sample video: ``$POSESTREAM_SAMPLE_VIDEO``, else the first of
    :data:`SAMPLE_VIDEO_PLACES` that exists (relative ones from the current directory, then from
    the source checkout this package was installed from)."""
    env = os.environ.get("POSESTREAM_SAMPLE_VIDEO")
    if env:
        return Path(env) if Path(env).is_file() else None
    checkout = Path(__file__).resolve().parent.parent
    for place in SAMPLE_VIDEO_PLACES:
        for candidate in (Path(place), checkout / place):
            if candidate.is_file():
                return candidate
    return None


def find_camera() -> str | None:
    """A webcam that gives a frame (``/dev/video*`` in order), or None."""
    devices = sorted(Path("/dev").glob("video[0-9]*"))
    if not devices:
        return None
    import cv2

    for dev in devices:
        cap = cv2.VideoCapture(str(dev))
        try:
            if cap.isOpened() and cap.read()[0]:
                return str(dev)
        finally:
            cap.release()
    return None


def run_realtime(sources: Sequence[Any], config: RunConfig, *, duration_s: float | None = None,
                 quiet: bool = False) -> dict[str, Any]:
    """Run until every source ends, ``duration_s`` passes, or Ctrl-C / SIGTERM; then shut down
    in order (a second Ctrl-C during shutdown exits at once). Returns the final status."""
    from posestream.realtime.pipeline import Runtime

    runtime = Runtime(sources, config)
    stop = threading.Event()
    interrupted = {"count": 0}

    def on_signal(signum, _frame):
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            print("posestream: second interrupt, exiting without a clean shutdown", file=sys.stderr)
            os._exit(130)
        print("posestream: stopping (Ctrl-C again to force)", file=sys.stderr)
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    t0 = time.monotonic()
    window = None
    try:
        runtime.start()
        if runtime.server is not None and not quiet:
            url = runtime.server.url.rstrip("/")
            print(f"status: {url}/status  preview: {url}/  metrics: {url}/metrics", file=sys.stderr)
        window = _Window(runtime) if config.show else None
        while not stop.is_set():
            if runtime.wait(timeout=0.04 if window and window.enabled else 0.25):
                break
            if window is not None and window.enabled and window.show() == "quit":
                break
            if duration_s is not None and time.monotonic() - t0 >= duration_s:
                break
    finally:
        runtime.stop()
        if window is not None:
            window.close()
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    status = runtime.status()
    status["interrupted"] = interrupted["count"] > 0
    status["wall_s"] = round(time.monotonic() - t0, 2)
    status["not_finished"] = runtime.not_finished  # threads or sinks stop() left running
    status["video_out"] = getattr(runtime, "video_paths", None)
    status["events"] = runtime.recent_events()  # the newest EVENT_HISTORY; status counts them all
    status["labels"] = runtime.label_summary()
    status["shown_labels"] = runtime.shown_label_counts()
    return status


class _Window:
    """``--show``: the annotated frames of every stream in OpenCV windows, drawn from the main
    thread (GUI toolkits want that). The frames come from the runtime's preview store (JPEGs the
    pose threads encode at most 10 times a second). ``q`` or Esc closes the run. An OpenCV build
    without GUI support (opencv-python-headless, the default here) gives one notice and the run
    goes on without a window."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.enabled = True
        self._shown: dict[str, bytes] = {}

    def show(self) -> str | None:
        import cv2

        try:
            return self._show()
        except cv2.error:
            self.enabled = False
            print("posestream: --show needs an OpenCV build with GUI support (this one is headless: "
                  "pip install 'opencv-python<5' instead of opencv-python-headless); going on without a "
                  "window (--http HOST:PORT serves a preview to a browser)", file=sys.stderr)
            return None

    def _show(self) -> str | None:
        import cv2
        import numpy as np

        store = self.runtime.preview
        for stream in store.streams():
            data = store.get(stream)
            if data is None or data is self._shown.get(stream):
                continue
            self._shown[stream] = data
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            cv2.imshow(f"posestream {stream}", image)
        key = cv2.waitKey(1) & 0xFF
        return "quit" if key in (ord("q"), 27) else None

    def close(self) -> None:
        if self.enabled:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:
                pass
