"""Where frames come from: cameras, video files, RTSP/HTTP streams and image folders.

One :class:`FrameReader` thread per source reads frames and leaves the newest one in a
one-frame slot (:class:`LatestFrameSlot`); the perception stage takes from the slot. The slot
never queues: when the consumer is slower than the source, a newer frame replaces the untaken
one and the reader counts a dropped frame, so memory and latency stay bounded whatever the
input rate.

Live sources (camera, RTSP, HTTP) are reopened with capped exponential backoff when opening or
reading fails; files and image folders end (or loop) at their end. Everything that goes wrong
is counted in :meth:`FrameReader.stats` and logged on the ``posestream.realtime.sources``
logger.

The reader thread is the only one that ever calls ``read()`` on a capture: FFmpeg can block
there for seconds on a frozen network stream, and consumers must never wait on that.
"""
from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from posestream.realtime.frames import Frame, FrameError, to_bgr_uint8

__all__ = [
    "IMAGE_EXTENSIONS",
    "FrameReader",
    "LatestFrameSlot",
    "SourceError",
    "SourceSpec",
    "parse_source",
    "probe_source",
]

log = logging.getLogger("posestream.realtime.sources")

KINDS = ("camera", "file", "rtsp", "http", "images")
LIVE_KINDS = frozenset({"camera", "rtsp", "http"})
HEALTH_STATES = ("connecting", "live", "retrying", "ended", "failed")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
URL_SCHEMES = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http"}
SUPPORTED = ("a video file, an image folder, a camera index or /dev/videoN, "
             "rtsp://, rtsps://, http:// or https://")

# A file whose container states no usable frame rate is paced at this rate.
DEFAULT_FILE_FPS = 25.0
# This many unusable frames in a row end a file (or make a live source reconnect): a stream
# that only yields garbage is broken, not unlucky.
MAX_CONSECUTIVE_BAD_FRAMES = 25
# FFmpeg probes a network stream for 5 s by default before the first frame comes out, and the
# frames it buffered meanwhile then arrive stale. Half a second is enough to find an H.264 or
# MJPEG stream's parameters (measured against the test server: open in 0.7 s instead of 2.9 s).
NETWORK_ANALYZE_DURATION_US = 500_000
# How often the reader logs a summary of the frames it dropped.
DROP_LOG_INTERVAL_S = 5.0
# A file reader that falls this far behind its own clock (slow decoding, a paused process)
# restarts its clock instead of bursting frames to catch up.
MAX_PACING_LAG_S = 1.0

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CAMERA_PATH_RE = re.compile(r"^/dev/video(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

# OpenCV's FFmpeg backend reads its options from the OPENCV_FFMPEG_CAPTURE_OPTIONS environment
# variable, which is process-global; whoever sets it holds this lock until the open returns.
_FFMPEG_OPTIONS_LOCK = threading.Lock()
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class SourceError(ValueError):
    """A source that cannot be used; the message is one line that names the source."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open and what to call it.

    kind: ``"camera"``, ``"file"``, ``"rtsp"``, ``"http"`` or ``"images"``.
    uri: what to open: the file or folder path, the URL, the device path, or ``str(index)``
        for a camera index.
    name: the stream's name (letters, digits, ``_ . -``).
    """

    kind: str
    uri: str
    name: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}: use one of {', '.join(KINDS)}")

    @property
    def live(self) -> bool:
        """True for sources that run in real time by themselves (camera, RTSP, HTTP)."""
        return self.kind in LIVE_KINDS

    @property
    def display(self) -> str:
        """How logs and errors name the source: ``camera 0``, or the uri with a URL's
        password masked."""
        return f"camera {self.uri}" if self.kind == "camera" else redact(self.uri)


def redact(uri: str) -> str:
    """``uri`` with the password of ``user:password@host`` replaced by ``***``."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def _sanitize(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
    return name or "stream"


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(path: Path):
    # frame2.jpg before frame10.jpg, as a person numbering frames means it
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files in ``folder`` (not its subfolders), in natural name order."""
    return sorted((p for p in Path(folder).iterdir() if _is_image_file(p)), key=_natural_key)


def parse_source(text: str, name: str | None = None) -> SourceSpec:
    """Turn what the user typed into a :class:`SourceSpec`, or raise a one-line SourceError.

    ``"0"`` or ``/dev/videoN``: a camera. ``rtsp://``/``rtsps://``: RTSP. ``http://``/
    ``https://``: anything FFmpeg reads over HTTP (MJPEG, HLS, a file). An existing folder: the
    images in it. An existing file: a video file (whether OpenCV can decode it is found out
    when it is opened; :func:`probe_source` checks it up front).
    """
    text = str(text).strip()
    if not text:
        raise SourceError(f"empty source: give {SUPPORTED}")
    spec = _parse(text)
    if name is not None:
        if not _NAME_RE.match(name):
            raise SourceError(f"{redact(text)}: bad stream name {name!r} "
                              "(use letters, digits, '_', '.', '-')")
        spec = SourceSpec(spec.kind, spec.uri, name)
    return spec


def _parse(text: str) -> SourceSpec:
    if text.isdigit():
        return SourceSpec("camera", str(int(text)), f"cam{int(text)}")
    if _CAMERA_PATH_RE.match(text):
        # not checked for existence: a camera may be plugged in later, and the reader retries
        return SourceSpec("camera", text, Path(text).name)
    scheme = _SCHEME_RE.match(text)
    if scheme:
        return _parse_url(text, scheme.group(1).lower())
    path = Path(text)
    if path.is_dir():
        if not any(_is_image_file(p) for p in path.iterdir()):
            raise SourceError(f"{text}: folder has no {'/'.join(IMAGE_EXTENSIONS)} images")
        return SourceSpec("images", text, _sanitize(path.resolve().name))
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise SourceError(f"{text}: cannot be read (permission denied)")
        return SourceSpec("file", text, _sanitize(path.stem))
    if path.exists():
        raise SourceError(f"{text}: not a regular file or folder")
    raise SourceError(f"{text}: no such file")


def _parse_url(text: str, scheme: str) -> SourceSpec:
    shown = redact(text)
    kind = URL_SCHEMES.get(scheme)
    if kind is None:
        raise SourceError(f"{shown}: unsupported scheme {scheme!r}, use {SUPPORTED}")
    parts = urllib.parse.urlsplit(text)
    if not parts.hostname:
        raise SourceError(f"{shown}: malformed URL (no host)")
    try:
        port = parts.port  # raises for a non-numeric or out-of-range port
    except ValueError:
        raise SourceError(
            f"{shown}: malformed URL (port is not a number from 0 to 65535)") from None
    if any(c.isspace() for c in text):
        raise SourceError(f"{shown}: malformed URL (contains whitespace)")
    pieces = [parts.hostname]
    if port is not None:
        pieces.append(str(port))
    path = parts.path.strip("/")
    if path:
        pieces.append(path)
    return SourceSpec(kind, text, _sanitize("_".join(pieces)))


# --------------------------------------------------------------------------------------------
# Opening captures


def _usable_frame(image) -> np.ndarray | None:
    """The frame as BGR uint8 (grey, BGRA and 16-bit frames converted), or None when it is
    not an image at all (a failed decode, zero-size): the caller counts it as bad."""
    if image is None:
        return None
    try:
        return to_bgr_uint8(image)
    except FrameError:
        return None


def _sane_fps(fps: float) -> float | None:
    # containers report 0, NaN, or absurd values (e.g. 90000) when they do not know
    return float(fps) if fps and np.isfinite(fps) and 0 < fps <= 1000 else None


def _open_ffmpeg(url: str, options: str | None, params: list[int]) -> cv2.VideoCapture:
    """Open ``url`` with OpenCV's FFmpeg backend with ``options`` (FFmpeg's ``key;value|...``
    syntax) added to whatever the user set in the environment."""
    with _FFMPEG_OPTIONS_LOCK:
        before = os.environ.get(_FFMPEG_OPTIONS_ENV)
        if options is not None:
            # later keys win in FFmpeg's dictionary, so ours override the user's
            os.environ[_FFMPEG_OPTIONS_ENV] = f"{before}|{options}" if before else options
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if before is None:
                os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
            else:
                os.environ[_FFMPEG_OPTIONS_ENV] = before


class VideoCaptureSource:
    """A cv2.VideoCapture opened for one file, camera or network source."""

    def __init__(self, spec: SourceSpec, *, rtsp_transport: str = "tcp",
                 open_timeout_s: float = 3.0, read_timeout_s: float = 2.0):
        self.spec = spec
        if spec.kind == "camera":
            cap = (cv2.VideoCapture(int(spec.uri)) if spec.uri.isdigit()
                   else cv2.VideoCapture(spec.uri, cv2.CAP_V4L2))
        elif spec.kind == "file":
            cap = _open_ffmpeg(spec.uri, None, [])
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
            options = f"analyzeduration;{NETWORK_ANALYZE_DURATION_US}"
            if spec.kind == "rtsp":
                options = f"rtsp_transport;{rtsp_transport}|{options}"
            cap = _open_ffmpeg(spec.uri, options, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError({
                "file": f"{spec.uri}: cannot be decoded as video (OpenCV cannot open it)",
                "camera": (f"{spec.display}: cannot be opened "
                           "(no such device, busy, or no permission)"),
            }.get(spec.kind, f"{spec.display}: cannot connect, or no video stream found"))
        self._cap = cap
        self.nominal_fps = _sane_fps(cap.get(cv2.CAP_PROP_FPS)) if spec.kind == "file" else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if spec.kind == "file" and count and count > 0 else None

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self._cap.read()

    def release(self) -> None:
        self._cap.release()


class ImageFolderSource:
    """The images of a folder, one frame per file, as if they were a video."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        try:
            self.files = list_images(spec.uri)
        except OSError as exc:
            raise SourceError(f"{spec.uri}: cannot list folder ({exc.strerror or exc})") from None
        if not self.files:
            raise SourceError(f"{spec.uri}: folder has no {'/'.join(IMAGE_EXTENSIONS)} images")
        self.frame_count = len(self.files)
        self._next = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        """``(False, None)`` after the last file; ``(True, None)`` for a file that does not
        decode (the caller counts it as a bad frame)."""
        if self._next >= len(self.files):
            return False, None
        path = self.files[self._next]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("%s: cannot decode image %s", self.spec.name, path.name)
        return True, image

    def release(self) -> None:
        self.files = []


def probe_source(spec: SourceSpec) -> dict:
    """Check at start that a file or image folder gives a frame, and say what it holds.

    Returns ``{"fps", "frame_count", "width", "height"}`` for files (fps and frame_count are
    None when the container does not say) and image folders (fps None: the reader's
    image_fps decides); ``{}`` for cameras and network sources, which are not opened here
    because that can block for seconds (the reader reports and retries their failures).
    Raises a one-line SourceError naming the source when it cannot be used.
    """
    if spec.kind == "file":
        source = VideoCaptureSource(spec)
        try:
            ok, image = source.read()
        finally:
            source.release()
        if not ok or _usable_frame(image) is None:
            raise SourceError(f"{spec.uri}: cannot be decoded as video (OpenCV read no frame)")
        return {"fps": source.nominal_fps, "frame_count": source.frame_count,
                "width": int(image.shape[1]), "height": int(image.shape[0])}
    if spec.kind == "images":
        source = ImageFolderSource(spec)
        for path in source.files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return {"fps": None, "frame_count": len(source.files),
                        "width": int(image.shape[1]), "height": int(image.shape[0])}
        raise SourceError(f"{spec.uri}: none of its {len(source.files)} images can be decoded")
    return {}


# --------------------------------------------------------------------------------------------
# The slot between a reader and its consumer


class LatestFrameSlot:
    """Holds at most one frame: the newest one the reader made that no consumer took yet.

    Shared by exactly one reader (``put``, ``wait_taken``) and its consumers (``take``);
    ``close`` wakes everybody waiting and refuses further frames.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> tuple[bool, Frame | None]:
        """Leave ``frame`` for the consumer. Returns ``(accepted, replaced)``: ``accepted``
        is False once the slot is closed; ``replaced`` is the untaken frame it overwrote."""
        with self._cond:
            if self._closed:
                return False, None
            replaced, self._frame = self._frame, frame
            self._cond.notify_all()
            return True, replaced

    def take(self, timeout: float | None = None) -> Frame | None:
        """The waiting frame, waiting up to ``timeout`` seconds (None: until a frame comes or
        the slot closes); None when there is none."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frame is None and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._frame = self._frame, None
            self._cond.notify_all()  # a reader in wait_taken may go on
            return frame

    def wait_taken(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the slot is empty; True when it is (or closed)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._frame is None or self._closed, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed


# --------------------------------------------------------------------------------------------
# The reader thread


class _SourceGone(Exception):
    """The reader stops reading: the source ended, failed, or stop() was called."""


class FrameReader:
    """Reads one source on its own thread into a :class:`LatestFrameSlot`.

    pace: ``"realtime"`` plays files and image folders at their own rate (like a camera: a
        slow consumer makes the reader drop frames); ``"fast"`` (benchmarks) reads the next
        frame of a file or folder as soon as the previous one was taken (no drops). Live
        sources (camera, RTSP, HTTP) are never paced and always keep only the newest frame:
        holding frames back would only fill FFmpeg's buffers with stale ones.
    loop: start a file or folder again at its end (pts keeps increasing).
    rtsp_transport: ``"tcp"`` or ``"udp"``.
    open_timeout_s, read_timeout_s: FFmpeg's timeouts for network sources (a frozen server
        makes ``read()`` block a few times read_timeout_s, as FFmpeg retries).
    backoff_initial_s, backoff_max_s: a live source that fails is reopened after
        backoff_initial_s, doubling up to backoff_max_s; a frame read resets it.
    max_retries: how many reopen attempts in a row (without a frame in between) before the
        source counts as failed; None retries forever.
    max_frames: end after this many frames.
    image_fps: the rate of an image folder (its frames' pts are i / image_fps).

    Frames that are grey, BGRA or 16-bit are converted to BGR uint8 (counted as
    ``frames_converted``); only frames that are no image at all (a failed decode, zero-size)
    count as bad.

    Counters (``frames_read``, ``frames_dropped``, ``bad_frames``, ``frames_converted``,
    ``reconnects``, ``open_failures``) and ``last_error`` are written by the reader thread only, ``health``
    also by :meth:`stop` (to "ended"); :meth:`stats` reads a consistent snapshot under a lock.
    """

    def __init__(self, spec: SourceSpec, *, pace: str = "realtime", loop: bool = False,
                 rtsp_transport: str = "tcp", open_timeout_s: float = 3.0,
                 read_timeout_s: float = 2.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 8.0, max_retries: int | None = None,
                 max_frames: int | None = None, image_fps: float = 10.0):
        if pace not in ("realtime", "fast"):
            raise ValueError(f"pace must be 'realtime' or 'fast', not {pace!r}")
        if rtsp_transport not in ("tcp", "udp"):
            raise ValueError(f"rtsp_transport must be 'tcp' or 'udp', not {rtsp_transport!r}")
        if not image_fps > 0:
            raise ValueError(f"image_fps must be > 0, not {image_fps!r}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, not {max_frames!r}")
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, not {max_retries!r}")
        self.spec = spec
        self.pace = pace
        self.loop = loop
        self.rtsp_transport = rtsp_transport
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_retries = max_retries
        self.max_frames = max_frames
        self.image_fps = float(image_fps)

        self.ended = threading.Event()
        self._stop = threading.Event()
        self._slot = LatestFrameSlot()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters below for stats()
        self._health = "connecting"
        self._last_error: str | None = None
        self._frames_read = 0
        self._frames_dropped = 0
        self._bad_frames = 0
        self._frames_converted = 0  # grey, BGRA or 16-bit frames made BGR uint8
        self._reconnects = 0
        self._open_failures = 0
        self._nominal_fps: float | None = self._known_rate()
        self._size: tuple[int, int] | None = None  # (width, height) of the last frame
        self._recent = collections.deque(maxlen=30)  # t_capture of recent frames, for fps
        # owned by the reader thread alone
        self._capture = None
        self._drops_unlogged = 0
        self._last_drop_log = time.monotonic()

    def _known_rate(self) -> float | None:
        """The source's own frame rate when it can be known before start(): the pipeline
        sizes its tracker and video writer from ``stats()["nominal_fps"]`` before frames
        flow. A file is opened (not decoded) for it; the reader reports a bad file later."""
        if self.spec.kind == "images":
            return self.image_fps
        if self.spec.kind == "file":
            try:
                capture = VideoCaptureSource(self.spec)
            except SourceError:
                return None
            capture.release()
            return capture.nominal_fps
        return None

    # --- public API -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> FrameReader:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: reader already started")
        self._thread = threading.Thread(target=self._run, name=f"posestream-reader-{self.name}",
                                        daemon=True)  # a read stuck in FFmpeg must not block exit
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the reader to stop; returns at once. The thread exits as soon as its current
        open or read returns (at once for files; up to the timeouts for network sources) and
        releases the capture. A frame not yet taken can still be taken."""
        if not self.ended.is_set():
            log.info("%s: stop requested", self.name)
        self._stop.set()
        self._slot.close()
        with self._lock:
            if self._health != "failed":
                self._health = "ended"
        self.ended.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader thread to exit; True when it has (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> FrameReader:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        bound = self.open_timeout_s + 3 * self.read_timeout_s + 1.0
        if not self.join(bound):
            log.warning("%s: reader thread still blocked in its source after %.1f s; left behind",
                        self.name, bound)

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` seconds for one (None:
        until one comes or the source ends). None on timeout, or when the source has ended
        and nothing is left (then ``ended`` is set)."""
        return self._slot.take(timeout)

    @property
    def health(self) -> str:
        with self._lock:
            return self._health

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def frames_read(self) -> int:
        with self._lock:
            return self._frames_read

    @property
    def frames_dropped(self) -> int:
        with self._lock:
            return self._frames_dropped

    @property
    def bad_frames(self) -> int:
        with self._lock:
            return self._bad_frames

    @property
    def reconnects(self) -> int:
        with self._lock:
            return self._reconnects

    @property
    def open_failures(self) -> int:
        with self._lock:
            return self._open_failures

    def stats(self) -> dict:
        with self._lock:
            recent = list(self._recent)
            fps = None
            if len(recent) >= 2 and recent[-1] > recent[0]:
                fps = (len(recent) - 1) / (recent[-1] - recent[0])
                # a source that stopped delivering has no rate now, whatever it had before
                if time.monotonic() - recent[-1] > max(2.0, 3.0 / fps):
                    fps = 0.0
            return {
                "name": self.spec.name, "kind": self.spec.kind, "uri": redact(self.spec.uri),
                "health": self._health, "last_error": self._last_error,
                "frames_read": self._frames_read, "frames_dropped": self._frames_dropped,
                "bad_frames": self._bad_frames, "frames_converted": self._frames_converted,
                "reconnects": self._reconnects,
                "open_failures": self._open_failures, "fps": fps,
                "nominal_fps": self._nominal_fps,
                "width": self._size[0] if self._size else None,
                "height": self._size[1] if self._size else None,
            }

    # --- the reader thread ------------------------------------------------------------------

    def _run(self) -> None:
        log.info("%s: reading %s (%s, pace=%s, loop=%s)", self.name, self.spec.display,
                 self.spec.kind, self.pace, self.loop)
        try:
            if self.spec.live:
                self._read_live()
            else:
                self._read_recorded()
        except _SourceGone:
            pass
        except Exception as exc:  # an unexpected OpenCV or OS error: report it, never die silently
            log.exception("%s: reader crashed", self.name)
            message = f"{self.spec.display}: reader crashed: {type(exc).__name__}: {exc}"
            self._fail(message.splitlines()[0])
        finally:
            self._release()
            self._log_drops(force=True)
            with self._lock:
                if self._health != "failed":
                    self._health = "ended"
            self._slot.close()
            self.ended.set()
            log.info("%s: reader stopped (%s)", self.name, self.health)

    def _set_health(self, health: str) -> None:
        with self._lock:
            if self._stop.is_set() or self._health == health:
                return  # stop() already decided the final state
            before, self._health = self._health, health
        log.info("%s: %s -> %s", self.name, before, health)

    def _fail(self, error: str) -> None:
        with self._lock:
            self._health, self._last_error = "failed", error
        log.error("%s", error)

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _open(self):
        """Open the source into ``self._capture`` (raises SourceError)."""
        self._release()
        if self.spec.kind == "images":
            capture = ImageFolderSource(self.spec)
            nominal = self.image_fps
        else:
            capture = VideoCaptureSource(self.spec, rtsp_transport=self.rtsp_transport,
                                         open_timeout_s=self.open_timeout_s,
                                         read_timeout_s=self.read_timeout_s)
            nominal = capture.nominal_fps
        self._capture = capture
        with self._lock:
            self._nominal_fps = nominal
        return capture

    def _publish(self, image: np.ndarray, t_capture: float, t_wall: float,
                 pts: float | None, t_stream: float | None = None) -> None:
        """Put one good frame in the slot and count it; raises _SourceGone when the reader is
        done (stopped, or max_frames reached)."""
        with self._lock:
            index = self._frames_read
            self._frames_read += 1
            self._recent.append(t_capture)
            self._size = (int(image.shape[1]), int(image.shape[0]))
        accepted, replaced = self._slot.put(Frame(self.name, index, t_capture, t_wall, image, pts, t_stream))
        if not accepted:
            raise _SourceGone
        if replaced is not None:
            with self._lock:
                self._frames_dropped += 1
            self._drops_unlogged += 1
            log.debug("%s: dropped frame %d (consumer had not taken it)", self.name, replaced.index)
            self._log_drops()
        if self.max_frames is not None and index + 1 >= self.max_frames:
            log.info("%s: read max_frames=%d", self.name, self.max_frames)
            raise _SourceGone

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._drops_unlogged and (force or now - self._last_drop_log >= DROP_LOG_INTERVAL_S):
            log.info("%s: dropped %d frames in the last %.1f s (the consumer is slower than the "
                     "source; %d dropped in all)", self.name, self._drops_unlogged,
                     now - self._last_drop_log, self.frames_dropped)
            self._drops_unlogged = 0
            self._last_drop_log = now

    def _convert(self, image) -> np.ndarray | None:
        """A read frame as BGR uint8, counting the ones that needed converting (None: bad)."""
        usable = _usable_frame(image)
        if usable is not None and usable is not image:
            with self._lock:
                self._frames_converted += 1
        return usable

    def _count_bad_frame(self, consecutive: int) -> None:
        with self._lock:
            self._bad_frames += 1
        log.warning("%s: skipped an unusable frame (%d in a row)", self.name, consecutive)

    # files and image folders

    def _read_recorded(self) -> None:
        try:
            capture = self._open()
        except SourceError as exc:
            self._fail(str(exc))
            return
        fps = self.image_fps if self.spec.kind == "images" else capture.nominal_fps
        if fps is None:
            log.warning("%s: %s states no frame rate; assuming %.0f fps",
                        self.name, self.spec.uri, DEFAULT_FILE_FPS)
            fps = DEFAULT_FILE_FPS
        position = 0  # frames into the source, across loops and bad frames: gives pts
        clock_start: float | None = None  # monotonic time of pts 0, for realtime pacing
        frames_this_pass, bad_in_a_row = 0, 0
        while not self._stop.is_set():
            pts = position / fps
            if self.pace == "fast":
                while not self._slot.wait_taken(0.1):
                    if self._stop.is_set():
                        return
            elif clock_start is not None:
                lag = time.monotonic() - (clock_start + pts)
                if lag > MAX_PACING_LAG_S:
                    log.info("%s: %.1f s behind the file's clock; restarting the clock",
                             self.name, lag)
                    clock_start += lag
                elif lag < 0 and self._stop.wait(-lag):
                    return
            ok, image = capture.read()
            t_capture, t_wall = time.monotonic(), time.time()
            if clock_start is None:
                clock_start = t_capture - pts
            if not ok:  # end of the file or folder
                if frames_this_pass == 0 and bad_in_a_row == 0:
                    self._fail(
                        f"{self.spec.uri}: cannot be decoded as video (OpenCV read no frame)")
                    return
                log.info("%s: end of %s after %d frames", self.name, self.spec.uri, position)
                if not self.loop:
                    return
                try:
                    capture = self._open()
                except SourceError as exc:
                    self._fail(str(exc))
                    return
                frames_this_pass = 0
                continue
            position += 1
            image = self._convert(image)
            if image is None:
                bad_in_a_row += 1
                self._count_bad_frame(bad_in_a_row)
                if bad_in_a_row >= MAX_CONSECUTIVE_BAD_FRAMES:
                    with self._lock:
                        self._last_error = (f"{self.spec.uri}: {bad_in_a_row} unusable frames in a "
                                            "row; giving up")
                    log.error("%s", self._last_error)
                    return
                continue
            bad_in_a_row = 0
            frames_this_pass += 1
            self._set_health("live")
            # at pace fast the file's own clock (see Frame.t_stream): motion keeps its speed
            self._publish(image, t_capture, t_wall, pts,
                          clock_start + pts if self.pace == "fast" else None)

    # cameras and network streams

    def _read_live(self) -> None:
        delay = self.backoff_initial_s
        retries = 0  # reopen attempts since the last good frame
        failed_at: float | None = None  # when the source last stopped working (or never did)
        while not self._stop.is_set():
            try:
                capture = self._open()
            except SourceError as exc:
                with self._lock:
                    self._open_failures += 1
                    self._last_error = str(exc)
                log.warning("%s (open failure %d)", exc, self.open_failures)
                if failed_at is None:
                    failed_at = time.monotonic()
            else:
                if failed_at is not None:
                    with self._lock:
                        self._reconnects += 1
                    log.info("%s: reconnected after %.1f s (reconnect %d)", self.name,
                             time.monotonic() - failed_at, self.reconnects)
                    failed_at = None
                if self._read_until_failure(capture):
                    retries, delay = 0, self.backoff_initial_s
                self._release()
                if self._stop.is_set():
                    return
                failed_at = time.monotonic()
            if self.max_retries is not None and retries >= self.max_retries:
                self._fail(f"{self.last_error} (gave up after {retries} retries)")
                return
            retries += 1
            self._set_health("retrying")
            log.info("%s: retry %d in %.1f s", self.name, retries, delay)
            if self._stop.wait(delay):
                return
            delay = min(2 * delay, self.backoff_max_s)

    def _read_until_failure(self, capture) -> bool:
        """Read frames until reading fails; True when at least one good frame came."""
        got_frame, bad_in_a_row = False, 0
        while not self._stop.is_set():
            ok, image = capture.read()
            t_capture, t_wall = time.monotonic(), time.time()
            if not ok:
                error = f"{self.spec.display}: read failed (stream ended, broke or timed out)"
                break
            image = self._convert(image)
            if image is None:
                bad_in_a_row += 1
                self._count_bad_frame(bad_in_a_row)
                if bad_in_a_row >= MAX_CONSECUTIVE_BAD_FRAMES:
                    error = f"{self.spec.display}: {bad_in_a_row} unusable frames in a row"
                    break
                continue
            bad_in_a_row, got_frame = 0, True
            self._set_health("live")
            self._publish(image, t_capture, t_wall, None)
        else:
            return got_frame
        with self._lock:
            self._last_error = error
        log.warning("%s; reconnecting", error)
        return got_frame
