"""Where the realtime path's output goes: video files, event logs, webhooks, a status server.

Every sink that does I/O runs it on its own thread behind a bounded queue, so a slow disk, a
reader that stopped reading stdout or a webhook that takes seconds to answer never stalls the
pipeline: :meth:`VideoSink.write`, :meth:`EventLog.emit` and :meth:`WebhookSink.emit` never
block; when the queue is full they return False, and the item is counted as dropped (in the
sink's ``stats()``, in ``posestream_sink_dropped_total{sink=...}`` when a
:class:`~posestream.realtime.metrics.Metrics` is given, and in a rate-limited warning).
Shutdown is explicit: ``close()`` stops taking items, lets the thread drain what is queued and
joins it.

=====================  ======================================================================
:class:`VideoSink`     annotated frames -> a video file, complete and playable at its path
                       once ``close()`` returns (written beside it, renamed at the end)
:class:`EventLog`      events -> JSON lines, appended to a file or written to stdout
:class:`WebhookSink`   events -> one JSON POST each, bounded retries with backoff
:class:`PreviewStore`  the latest JPEG of each stream, encoded at most ``max_fps`` a second
:class:`StatusServer`  ``/`` (the dashboard), ``/status`` (JSON), ``/metrics`` (Prometheus),
                       ``/api/latency`` (the latency chart's history), ``/preview/<stream>.mjpg``
                       (MJPEG) and ``/preview/<stream>.jpg``; with an event store, the
                       events API (``/api/events``...)
=====================  ======================================================================

A frame handed to :meth:`VideoSink.write` is not copied: the sink owns it from then on, so the
caller must not draw on it afterwards. Events are serialized at once, so the caller keeps its
dict.
"""
from __future__ import annotations

import base64
import hmac
import html
import http.client
import importlib.resources
import ipaddress
import collections
import json
import logging
import math
import os
import secrets
import socket
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from posestream.errors import first_line
from posestream.realtime.frames import to_bgr_uint8
from posestream.realtime.metrics import STAGE_LATENCY, LatencyHistory, Metrics

__all__ = [
    "SinkError",
    "VideoSink",
    "EventLog",
    "WebhookSink",
    "PreviewStore",
    "StatusServer",
    "jsonable",
    "event_json",
    "encode_jpeg",
    "VIDEO_EXTENSIONS",
]

log = logging.getLogger(__name__)

#: Containers VideoSink writes (OpenCV picks the container by the extension).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")
#: A warning about drops (or failures) of one sink at most this often; the counts are exact.
WARN_EVERY_S = 10.0
SINK_DROPPED = "posestream_sink_dropped_total"
SINK_DROPPED_HELP = "items a sink dropped (queue full, closed, or abandoned at shutdown)"



class SinkError(ValueError):
    """A sink cannot be set up as asked (bad path, extension, URL, bind address); the
    message is one line."""


def _cv2():
    import cv2

    return cv2


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays made Python numbers and lists, tuples and sets
    made lists, non-finite floats made None (JSON has no NaN), datetimes ISO strings and
    anything else unknown its ``str()``."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):  # np.float32, np.int64, np.bool_ ...
        return jsonable(obj.item())
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def event_json(event: Mapping[str, Any]) -> str:
    """One event as one line of JSON (keys in the order given)."""
    return json.dumps(jsonable(event), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------------------------
# The shared writer thread
# --------------------------------------------------------------------------------------------


class _RateLimitedWarning:
    """Logs the first occurrence at once, then at most every ``every_s`` seconds (counts are
    kept elsewhere, exactly; this only keeps a flood of drops out of the log)."""

    def __init__(self, every_s: float = WARN_EVERY_S, logger: logging.Logger | None = None):
        self._every_s = every_s
        self._log = logger or log  # the module that warns: a sink defined elsewhere passes its own
        self._lock = threading.Lock()
        self._last: float | None = None

    def __call__(self, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self._every_s:
                return
            self._last = now
        self._log.warning(msg, *args)


class _QueuedSink:
    """A bounded queue drained by one thread that calls ``_handle(item)`` for each item and
    ``_finish()`` once at the end (both on that thread, which owns the sink's I/O state).

    The producer side takes no lock: ``_offer`` is one ``deque.append`` (atomic in CPython)
    and ``close()`` sets a flag and waits on an Event. A Ctrl-C (KeyboardInterrupt) landing in
    the middle of ``write()`` in a script's main thread can therefore never leave a lock held
    that ``close()`` in its ``finally`` would then wait on forever (with ``queue.Queue`` that
    happened, rarely, under load). The consumer polls every few milliseconds when idle."""

    _IDLE_POLL_S = 0.005

    def __init__(self, kind: str, name: str, queue_size: int, metrics: Metrics | None):
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise SinkError(f"{kind} sink {name}: queue_size must be an int >= 1, got {queue_size!r}")
        self.kind = kind
        self.name = name
        self._items: collections.deque = collections.deque()
        self._maxsize = queue_size
        self._closed = False
        # Guards _dropped only (several producer threads may count at once); close() never
        # takes it.
        self._lock = threading.Lock()
        self._dropped = 0
        self._dropped_metric = (metrics.counter(SINK_DROPPED, SINK_DROPPED_HELP, sink=name)
                                if metrics is not None else None)
        self._warn_drop = _RateLimitedWarning()
        self._warn_failure = _RateLimitedWarning()
        self._thread = threading.Thread(target=self._run, name=f"posestream-{kind}-sink", daemon=True)
        # Set by the thread as its very last step. close() waits on this rather than on
        # Thread.join: a Ctrl-C that interrupts join() makes Python 3.11 mark the still-running
        # thread as stopped, and a second join() would then return at once.
        self._finished = threading.Event()

    def _start(self) -> None:
        """Called by the subclass at the end of its __init__, once its own state exists."""
        self._thread.start()

    # -- producer side ---------------------------------------------------------------------

    def _offer(self, item: Any) -> bool:
        if self._closed:
            self._count_drop("sink closed")
            return False
        # Several producers may each pass this check at once: the queue can exceed its bound
        # by at most the number of producer threads.
        if len(self._items) >= self._maxsize:
            self._count_drop("queue full")
            return False
        self._items.append(item)
        return True

    def _count_drop(self, why: str) -> None:
        with self._lock:
            self._dropped += 1
            total = self._dropped
        if self._dropped_metric is not None:
            self._dropped_metric.inc()
        self._warn_drop("%s sink %s: dropped an item (%s); %d dropped so far", self.kind, self.name, why, total)

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def finished(self) -> bool:
        """Whether the sink's thread has run to its end (after close(): drained and finished)."""
        return self._finished.is_set()

    def _qsize(self) -> int:
        return len(self._items)

    def _close(self, timeout: float | None) -> bool:
        """Stop taking items, let the thread drain the queue and finish; True when it did
        within ``timeout`` (None: wait for it)."""
        self._closed = True
        if not self._finished.wait(timeout):
            log.error("%s sink %s: its thread did not finish within %.1f s", self.kind, self.name, timeout)
            return False
        self._thread.join(1.0)  # past its last step: returns at once
        return True

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._items.popleft()
                except IndexError:
                    if self._closed:
                        if not self._items:  # a producer may have appended just before closing
                            return
                        continue
                    self._idle()
                    time.sleep(self._IDLE_POLL_S)
                    continue
                try:
                    self._handle(item)
                except Exception:  # a bad item must not end the thread (and stall close())
                    self._on_unexpected_error()
                    log.exception("%s sink %s: handling an item failed", self.kind, self.name)
        finally:
            try:
                self._finish()
            except Exception:
                log.exception("%s sink %s: finishing failed", self.kind, self.name)
            finally:
                self._finished.set()

    def _handle(self, item: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def _idle(self) -> None:
        """Called on the thread whenever the queue is empty (every few ms): for housekeeping
        that must happen without items too; keep it cheap."""

    def _on_unexpected_error(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> Any:  # pragma: no cover - overridden
        return self._close(timeout)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


class VideoSink(_QueuedSink):
    """Frames -> a video file at ``path``, written by a thread.

    The frame size is the first frame's (rounded down to even numbers, which MPEG-4 needs);
    later frames of another size are resized to it. The video goes to a hidden temporary
    file beside ``path`` (same extension, so OpenCV picks the same container) and is renamed
    over ``path`` by ``close()`` once the writer is released, so a file at ``path`` is always
    complete and playable, also after Ctrl-C as long as ``close()`` runs (call it in a
    ``finally``). A sink that got no frame writes no file. ``abort()`` removes the temporary
    file instead.

    ``write(frame)`` takes a BGR uint8 ``[H, W, 3]`` array (grey ``[H, W]`` and BGRA are
    converted) and never blocks.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, queue_size: int = 32, fourcc: str = "mp4v",
                 metrics: Metrics | None = None, name: str | None = None):
        cv2 = _cv2()
        self.path = Path(path)
        where = f"{self.path}"
        if self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise SinkError(f"{where}: unsupported video extension {self.path.suffix or '(none)'!r}; "
                            f"use one of {', '.join(VIDEO_EXTENSIONS)}")
        folder = self.path.parent
        if not folder.is_dir():
            raise SinkError(f"{where}: the folder {folder} does not exist" if not folder.exists()
                            else f"{where}: {folder} is not a folder")
        if self.path.is_dir():
            raise SinkError(f"{where}: is a folder, not a video file name")
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            raise SinkError(f"{where}: fps must be a number, got {fps!r}") from None
        if not (math.isfinite(fps) and fps > 0):
            raise SinkError(f"{where}: fps must be > 0, got {fps!r}")
        if not isinstance(fourcc, str) or len(fourcc) != 4:
            raise SinkError(f"{where}: fourcc must be 4 characters such as 'mp4v', got {fourcc!r}")
        self.fps = fps
        self.fourcc = fourcc
        self._tmp = folder / f".{self.path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{self.path.suffix}"
        self._probe(cv2)
        super().__init__("video", name or self.path.name, queue_size, metrics)
        # Owned by the writer thread (read by stats(): an int read is atomic, at most stale).
        self._writer = None
        self._size: tuple[int, int] | None = None  # (w, h)
        self._frames_written = 0
        self._frames_failed = 0
        self._resize_logged = False
        self._broken: str | None = None
        self._result: Path | None = None
        self._abort = threading.Event()
        self._start()

    def _probe(self, cv2) -> None:
        """Open (and remove) a tiny writer with this fourcc and container now, so that a codec
        OpenCV lacks is a clear error here, not a silent failure on the writer thread."""
        try:
            writer = cv2.VideoWriter(os.fspath(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (64, 64))
            ok = writer.isOpened()
            writer.release()
        finally:
            _unlink(self._tmp)
        if not ok:
            raise SinkError(f"{self.path}: OpenCV cannot write {self.fourcc!r} video into a "
                            f"{self.path.suffix} file (is the folder writable? try fourcc 'mp4v')")

    def write(self, frame_bgr: np.ndarray) -> bool:
        """Queue one frame; False (and counted as dropped) when the queue is full or the
        sink is closed. Never blocks."""
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim not in (2, 3) or frame_bgr.size == 0:
            raise ValueError(f"{self.path}: a frame must be an image array [H, W, 3], got "
                             f"{type(frame_bgr).__name__} {getattr(frame_bgr, 'shape', '')}")
        return self._offer(frame_bgr)

    def close(self, timeout: float | None = None) -> Path | None:
        """Write what is queued, release the writer, rename the file to ``path``; returns
        ``path``, or None when no frame was written (or the thread did not finish in time).

        A second Ctrl-C while it waits does not leave a broken file: it waits once more for
        the writer (a few queued frames) and then lets the KeyboardInterrupt through."""
        try:
            self._close(timeout)
        except KeyboardInterrupt:
            log.warning("%s: finishing the video file before stopping (%d frames queued)", self.path,
                        self._qsize())
            self._close(timeout)
            raise
        return self._result

    def abort(self, timeout: float | None = None) -> None:
        """Stop without a file: queued frames are discarded and the temporary file removed."""
        self._abort.set()
        self._close(timeout)

    def stats(self) -> dict[str, Any]:
        return {"path": os.fspath(self.path), "frames_written": self._frames_written,
                "frames_dropped": self.dropped, "frames_failed": self._frames_failed,
                "queued": self._qsize(), "size": self._size, "closed": self.closed}

    # -- the writer thread ---------------------------------------------------------------

    def _handle(self, frame: np.ndarray) -> None:
        if self._abort.is_set():
            return
        if self._broken is not None:
            self._frames_failed += 1
            return
        frame = to_bgr_uint8(frame)
        if self._writer is None:
            self._open(frame)
            if self._writer is None:
                self._frames_failed += 1
                return
        w, h = self._size
        if frame.shape[1] != w or frame.shape[0] != h:
            if frame.shape[1] in (w, w + 1) and frame.shape[0] in (h, h + 1):
                frame = frame[:h, :w]  # the odd row / column dropped for MPEG-4: crop, not resample
            else:
                if not self._resize_logged:
                    self._resize_logged = True
                    log.warning("%s: a %dx%d frame after %dx%d ones: resizing (logged once)", self.path,
                                frame.shape[1], frame.shape[0], w, h)
                frame = _cv2().resize(frame, (w, h), interpolation=_cv2().INTER_AREA)
        self._writer.write(np.ascontiguousarray(frame))
        self._frames_written += 1

    def _open(self, frame: np.ndarray) -> None:
        cv2 = _cv2()
        h, w = frame.shape[:2]
        size = (w - w % 2, h - h % 2)
        if size[0] < 2 or size[1] < 2:
            self._broken = f"frame of {w}x{h} pixels is too small"
        else:
            writer = cv2.VideoWriter(os.fspath(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
            if writer.isOpened():
                self._writer, self._size = writer, size
                return
            writer.release()
            _unlink(self._tmp)
            self._broken = f"OpenCV could not open a {size[0]}x{size[1]} {self.fourcc} writer"
        log.error("%s: cannot write the video: %s; later frames are counted as failed", self.path, self._broken)

    def _on_unexpected_error(self) -> None:
        self._frames_failed += 1

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: only now is the file playable
            self._writer = None
        if self._abort.is_set():
            _unlink(self._tmp)
            log.info("%s: aborted, %d frames discarded", self.path, self._frames_written)
            return
        if self._frames_written == 0:
            _unlink(self._tmp)
            log.warning("%s: no frame was written, so no video file", self.path)
            return
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        self._result = self.path
        log.info("%s: %d frames written (%d dropped, %d failed)", self.path, self._frames_written,
                 self.dropped, self._frames_failed)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


class EventLog(_QueuedSink):
    """Events -> JSON lines: appended to the file ``path``, or written to stdout when
    ``path`` is None or ``"-"``. A thread writes them (stdout blocks when piped to a slow
    reader); each line is flushed, so ``tail -f`` sees it at once. ``emit`` serializes the
    event on the caller's thread (a snapshot; later changes to the dict do not show)."""

    def __init__(self, path: str | os.PathLike | None = None, *, queue_size: int = 1000,
                 metrics: Metrics | None = None, name: str | None = None):
        if path is None or os.fspath(path) == "-":
            self.path = None
            self._out = sys.stdout  # the one at construction: a later redirect does not move the log
            self._owns_out = False
        else:
            self.path = Path(path)
            if not self.path.parent.is_dir():
                raise SinkError(f"{self.path}: the folder {self.path.parent} does not exist")
            try:
                self._out = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                raise SinkError(f"{self.path}: cannot open the event log: {exc.strerror or first_line(exc)}") from None
            self._owns_out = True
        super().__init__("event-log", name or ("stdout" if self.path is None else self.path.name), queue_size, metrics)
        self._lines_written = 0  # owned by the writer thread
        self._failed = 0
        self._start()

    def emit(self, event: Mapping[str, Any]) -> bool:
        """Queue one event; False (and counted as dropped) when the queue is full or the log
        is closed. Never blocks."""
        return self._offer(event_json(event))

    def close(self, timeout: float | None = 5.0) -> bool:
        """Write what is queued, flush, close the file (not stdout); True when done in time
        (a stdout nobody reads can block the writer forever: then False after ``timeout``)."""
        return self._close(timeout)

    def stats(self) -> dict[str, Any]:
        return {"path": None if self.path is None else os.fspath(self.path), "lines_written": self._lines_written,
                "dropped": self.dropped, "failed": self._failed, "queued": self._qsize()}

    def _handle(self, line: str) -> None:
        try:
            self._out.write(line + "\n")
            self._out.flush()
            self._lines_written += 1
        except (OSError, ValueError) as exc:  # a full disk, a closed pipe, a closed stdout
            self._failed += 1
            self._warn_failure("event log %s: writing an event failed (%s); %d failed so far", self.name,
                               first_line(exc), self._failed)

    def _finish(self) -> None:
        try:
            self._out.flush()
        except (OSError, ValueError):
            pass
        if self._owns_out:
            self._out.close()


# --------------------------------------------------------------------------------------------
# Webhook
# --------------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib turns a redirected POST into a GET without the body; a webhook must not be
    silently emptied, so a redirect is a failure that names the new location."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class WebhookSink(_QueuedSink):
    """Events -> one HTTP POST each (``Content-Type: application/json``), from a thread.

    Credentials in the URL (``https://user:password@host/...``) are sent as HTTP basic auth.
    A connection error, a timeout or a 5xx answer is retried up to ``retries`` times, after
    ``backoff_s``, 2 x ``backoff_s``, 4 x ``backoff_s``... ; a 4xx (or a redirect) is not
    retried. Every event ends up in exactly one of ``sent``, ``failed`` (given up on) or
    ``dropped`` (queue full, or still queued when ``close`` ran out of time); ``retried``
    counts the extra attempts. ``timeout_s`` bounds each socket operation of an attempt.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, retries: int = 3, backoff_s: float = 0.5,
                 queue_size: int = 100, headers: Mapping[str, str] | None = None,
                 metrics: Metrics | None = None, name: str | None = None):
        self.url = _check_webhook_url(url)
        # Webhook URLs often hold a secret (Slack's, a ?key=): logs and stats show only this.
        self.where = _redacted_url(url)
        if not (timeout_s > 0):
            raise SinkError(f"webhook {self.where}: timeout_s must be > 0, got {timeout_s!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise SinkError(f"webhook {self.where}: retries must be an int >= 0, got {retries!r}")
        if not (backoff_s >= 0):
            raise SinkError(f"webhook {self.where}: backoff_s must be >= 0, got {backoff_s!r}")
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), retries, float(backoff_s)
        from posestream import __version__

        self._headers = {"Content-Type": "application/json", "User-Agent": f"posestream/{__version__}",
                         **dict(headers or {})}
        self.url, basic = _split_credentials(self.url)
        if basic is not None and not any(k.lower() == "authorization" for k in self._headers):
            self._headers["Authorization"] = basic
        self._opener = urllib.request.build_opener(_NoRedirect)
        super().__init__("webhook", name or "webhook", queue_size, metrics)
        self._count_lock = threading.Lock()  # the counts are read by stats() on other threads
        self._counts = {"sent": 0, "failed": 0, "retried": 0}
        self._last_error: str | None = None
        # close() sets the deadline, then the event; the thread reads both (the event orders them).
        self._closing = threading.Event()
        self._deadline = math.inf
        self._start()

    def emit(self, event: Mapping[str, Any]) -> bool:
        """Queue one event; False (and counted as dropped) when the queue is full or the sink
        is closed. Never blocks."""
        return self._offer(event_json(event).encode("utf-8"))

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued for up to ``timeout`` seconds; then stop after the attempt
        in flight (backoff waits are cut short) and count what is left as dropped. True when
        the thread finished in time."""
        self._deadline = time.monotonic() + max(0.0, timeout)
        self._closing.set()
        # the attempt in flight may take up to a connect and a read timeout past the deadline
        return self._close(timeout + 2 * self.timeout_s + 1.0)

    def stats(self) -> dict[str, Any]:
        with self._count_lock:
            return {"url": self.where, **self._counts, "dropped": self.dropped, "queued": self._qsize(),
                    "last_error": self._last_error}

    # -- the sender thread -----------------------------------------------------------------

    def _out_of_time(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._deadline

    def _handle(self, body: bytes) -> None:
        if self._out_of_time():
            self._count_drop("not sent before close() ran out of time")
            return
        attempts = self.retries + 1
        why = ""
        for attempt in range(attempts):
            if attempt > 0:
                if not self._wait(self.backoff_s * 2 ** (attempt - 1)):
                    why += " (close() ran out of time before the next retry)"
                    break
                self._bump("retried")
            ok, retry, why = self._post(body)
            if ok:
                self._bump("sent")
                return
            if not retry:
                break
            if self._out_of_time():
                why += " (close() ran out of time)"
                break
        else:
            why += f" after {attempts} attempts"
        failed = self._bump("failed", why)
        self._warn_failure("webhook %s: an event was not delivered: %s; %d failed so far", self.where, why, failed)

    def _post(self, body: bytes) -> tuple[bool, bool, str]:
        """One attempt: (delivered, worth retrying, what went wrong)."""
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(64 * 1024)  # read the (small) answer so the server sees a clean close
                return True, False, ""
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                return False, False, f"HTTP {exc.code} redirect to {exc.headers.get('Location')} (use that URL)"
            return False, exc.code >= 500, f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:  # refused, DNS, TLS: the reason says which
            return False, True, first_line(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets mid-answer
            return False, True, f"{type(exc).__name__}: {first_line(exc)}"

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` seconds, cut short by close()'s deadline; False when cut."""
        end = time.monotonic() + delay
        while True:
            now = time.monotonic()
            if now >= end:
                return True
            if self._closing.is_set():
                if now >= self._deadline:
                    return False
                time.sleep(min(end, self._deadline) - now)
            else:
                self._closing.wait(end - now)  # wakes early when close() starts

    def _bump(self, what: str, error: str | None = None) -> int:
        with self._count_lock:
            self._counts[what] += 1
            if error is not None:
                self._last_error = error
            return self._counts[what]

    def _on_unexpected_error(self) -> None:
        self._bump("failed", "unexpected error (see the log)")


def _split_credentials(url: str) -> tuple[str, str | None]:
    """``http://user:pw@host/x`` -> (``http://host/x``, ``"Basic ..."``): urllib sends no
    credentials from the URL itself."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def _redacted_url(url: str) -> str:
    """``scheme://host:port/…``: no credentials, path or query."""
    parts = urllib.parse.urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" + ("/…" if parts.path not in ("", "/") or parts.query else "/")


def _check_webhook_url(url: str) -> str:
    if not isinstance(url, str):
        raise SinkError(f"webhook URL must be a string, got {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError on a port that is not a number or out of range
    except ValueError as exc:
        raise SinkError(f"webhook URL {url!r}: {first_line(exc)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkError(f"webhook URL {url!r}: must be http:// or https:// with a host, "
                        "e.g. http://127.0.0.1:9000/events")
    return url


# --------------------------------------------------------------------------------------------
# Previews
# --------------------------------------------------------------------------------------------


def encode_jpeg(frame_bgr: np.ndarray, quality: int, max_width: int | None = None) -> bytes:
    """The frame as JPEG bytes, scaled down (INTER_AREA) to ``max_width`` pixels first when
    wider. Raises on a frame :func:`to_bgr_uint8` cannot convert or a failed encode."""
    cv2 = _cv2()
    image = to_bgr_uint8(frame_bgr)
    h, w = image.shape[:2]
    if max_width is not None and w > max_width:
        size = (max_width, max(1, round(h * max_width / w)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cv2.imencode returned False")
    return buf.tobytes()


class PreviewStore:
    """The latest JPEG of each stream, for the status server's previews (its ``get`` is the
    server's ``preview_fn``).

    ``update(stream, frame)`` is called with every annotated frame, on the pipeline's thread;
    it encodes at most ``max_fps`` frames a second per stream (about 1-3 ms each at 640 px)
    and returns at once otherwise. Frames wider than ``max_width`` are scaled down first.
    """

    def __init__(self, max_fps: float = 10.0, *, quality: int = 70, max_width: int | None = 640):
        if not (max_fps > 0):
            raise ValueError(f"max_fps must be > 0, got {max_fps!r}")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality!r}")
        if max_width is not None and max_width < 16:
            raise ValueError(f"max_width must be >= 16 or None, got {max_width!r}")
        self.min_interval_s = 1.0 / float(max_fps)
        self.quality = int(quality)
        self.max_width = max_width
        self._lock = threading.Lock()
        self._jpegs: dict[str, bytes] = {}
        self._next_due: dict[str, float] = {}
        self._counts = {"encoded": 0, "skipped": 0, "failed": 0}
        self._warn_failure = _RateLimitedWarning()

    def update(self, stream: str, frame_bgr: np.ndarray) -> bool:
        """Encode ``frame_bgr`` as the stream's preview unless one was encoded less than
        ``1 / max_fps`` s ago; True when encoded."""
        now = time.monotonic()
        with self._lock:  # reserve the slot first, so two threads never both encode
            if now < self._next_due.get(stream, -math.inf):
                self._counts["skipped"] += 1
                return False
            self._next_due[stream] = now + self.min_interval_s
        try:
            data = encode_jpeg(frame_bgr, self.quality, self.max_width)
        except Exception as exc:  # a bad frame costs its preview, not the pipeline
            with self._lock:
                self._counts["failed"] += 1
            self._warn_failure("preview of %s: encoding a frame failed: %s", stream, first_line(exc))
            return False
        with self._lock:
            self._jpegs[stream] = data
            self._counts["encoded"] += 1
        return True

    def get(self, stream: str) -> bytes | None:
        """The stream's latest JPEG (a new bytes object each time it changes), or None."""
        with self._lock:
            return self._jpegs.get(stream)

    def streams(self) -> list[str]:
        with self._lock:
            return list(self._jpegs)

    def remove(self, stream: str) -> None:
        with self._lock:
            self._jpegs.pop(stream, None)
            self._next_due.pop(stream, None)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# --------------------------------------------------------------------------------------------
# Status server
# --------------------------------------------------------------------------------------------

#: How often an MJPEG stream looks for a new preview.
MJPEG_POLL_S = 0.1
#: An unchanged preview is sent again this often, so a client that went away is noticed.
MJPEG_RESEND_S = 5.0
#: A client that neither sends its request nor reads for this long is disconnected.
CLIENT_TIMEOUT_S = 10.0


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


#: Events per page of ``GET /api/events`` at most.
MAX_EVENTS_PAGE = 500


#: The dashboard's files (``realtime/static/``, package data) by extension.
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
#: The dashboard page may load and connect to its own server only: no inline script, no other
#: origin, so even a name that slipped past the escaping could not run as script.
DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
                 "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: Where the dashboard page puts the token query (``?token=...``) of its own links.
_TOKEN_QUERY_MARK = "__TOKEN_QUERY__"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """``{file name: (bytes, content type)}`` of the dashboard's files, read once per process. A
    request is looked up by name in this table; a path from a URL is never joined to a folder."""
    global _STATIC
    if _STATIC is None:
        folder = importlib.resources.files("posestream.realtime") / "static"
        table = {}
        for entry in folder.iterdir():
            ctype = STATIC_TYPES.get(Path(entry.name).suffix)
            if ctype is not None and entry.is_file():
                table[entry.name] = (entry.read_bytes(), ctype)
        if "index.html" not in table:
            raise SinkError(f"status server: the dashboard's files are missing from {folder} (a broken install?)")
        _STATIC = table
    return _STATIC


_STATIC: dict[str, tuple[bytes, str]] | None = None


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=A-B`` / ``bytes=A-`` / ``bytes=-N`` -> (first, last) within ``size``; None for
    no header, several ranges or one that does not fit (the whole file is sent then)."""
    if not header or not header.startswith("bytes=") or "," in header or size == 0:
        return None
    first, sep, last = header[6:].strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 else None
        a = int(first)
        b = size - 1 if last == "" else min(int(last), size - 1)
    except ValueError:
        return None
    return (a, b) if 0 <= a <= b else None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client streaming MJPEG must not keep the process alive
    owner: "StatusServer"

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can take seconds
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request, client_address) -> None:
        # the default prints a traceback to stderr; a failed request must not kill the server
        self.owner._count("errors")
        log.exception("status server: a request from %s failed", client_address[0])


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = CLIENT_TIMEOUT_S
    server_version = "posestream"

    def log_message(self, fmt: str, *args) -> None:  # the default writes every request to stderr
        log.debug("status server: %s " + fmt, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        # read (a bounded part of) the body, so that closing the connection with unread bytes
        # does not reset it under the client before it reads the answer
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(length)
        self._serve("POST")

    def _serve(self, method: str) -> None:
        app = self.server.owner
        app._count("requests")
        self._headers_sent = False
        try:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            # one rule for every method and path: with a token, nothing without it
            if not app._authorized(self.headers.get("Authorization"), query.get("token", [None])[0]):
                app._count("unauthorized")
                self._send(401, "text/plain; charset=utf-8", b"401 unauthorized: send Authorization: Bearer "
                           b"<token> or ?token=<token>\n", {"WWW-Authenticate": 'Bearer realm="posestream"'})
                return
            path = urllib.parse.unquote(url.path)
            if path == "/api/events" or path.startswith("/api/events/"):
                self._events_api(app, method, path, query)
            elif method == "GET":
                self._route(app, path, query)
            else:
                self._send(405, "text/plain; charset=utf-8", b"405 method not allowed\n", {"Allow": "GET"})
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.debug("status server: %s went away", self.client_address[0])
        except Exception:
            app._count("errors")
            log.exception("status server: %s %s failed", method, self.path)
            if not self._headers_sent:
                try:
                    self._send(500, "text/plain; charset=utf-8", b"500 internal error (see the server log)\n")
                except OSError:
                    pass

    def _route(self, app: "StatusServer", path: str, query: dict) -> None:
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", app._dashboard_html(query.get("token", [None])[0]),
                       {"Content-Security-Policy": DASHBOARD_CSP, "X-Content-Type-Options": "nosniff",
                        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        elif path.startswith("/static/"):
            found = _static_files().get(path[len("/static/"):])
            if found is None or path == "/static/index.html":  # the page itself only at / (with its token)
                self._not_found()
            else:
                self._send(200, found[1], found[0], {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
        elif path == "/previews":
            self._send(200, "text/html; charset=utf-8", app._index_html(query.get("token", [None])[0]))
        elif path == "/api/latency":
            if app.latency_history is None:
                return self._json(404, {"error": "no latency history on this server"})
            self._json(200, app.latency_history.snapshot(stream=query.get("stream", [None])[0]))
        elif path == "/status":
            body = json.dumps(jsonable(app.status_fn()), ensure_ascii=False, allow_nan=False, indent=1)
            self._send(200, "application/json", body.encode("utf-8"))
        elif path == "/metrics":
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", app.metrics.render_prometheus().encode("utf-8"))
        elif path.startswith("/preview/") and path.endswith(".jpg"):
            jpeg = app._preview(path[len("/preview/"):-len(".jpg")])
            if jpeg is None:
                self._not_found()
            else:
                self._send(200, "image/jpeg", jpeg, {"Cache-Control": "no-store"})
        elif path.startswith("/preview/") and path.endswith(".mjpg"):
            self._mjpeg(app, path[len("/preview/"):-len(".mjpg")])
        else:
            self._not_found()

    # The events API (with --evidence). Ids are digits only and files are looked up by id in
    # the store, which serves only files inside its media folder: a path in the URL is never
    # joined to a folder. Everything but the media is JSON, so a stream named <script> stays text.

    def _events_api(self, app: "StatusServer", method: str, path: str, query: dict) -> None:
        store = app.events
        if store is None:
            return self._json(404, {"error": "no event store: start the run with --evidence DIR"})
        parts = path.split("/")[3:]  # "", "api", "events", ...
        if not parts:
            if method != "GET":
                return self._json(405, {"error": "GET /api/events"}, {"Allow": "GET"})
            try:
                limit = int(query.get("limit", ["50"])[0])
                before = query.get("before", [None])[0]
                before = None if before is None else int(before)
            except ValueError:
                return self._json(400, {"error": "limit and before must be integers"})
            if not 1 <= limit <= MAX_EVENTS_PAGE:
                return self._json(400, {"error": f"limit must be in 1..{MAX_EVENTS_PAGE}"})
            page = store.list_events(limit=limit, before=before, stream=query.get("stream", [None])[0])
            return self._json(200, page)
        event_id = int(parts[0]) if len(parts) <= 2 and parts[0].isascii() and parts[0].isdigit() \
            and len(parts[0]) < 19 else None
        if event_id is None:
            return self._json(404, {"error": "no such event (ids are integers: /api/events/<id>)"})
        what = parts[1] if len(parts) == 2 else ""
        allowed = "POST" if what == "ack" else "GET"
        if what not in ("", "ack", "snapshot.jpg", "clip.mp4"):
            return self._json(404, {"error": "no such resource (snapshot.jpg, clip.mp4, ack)"})
        if method != allowed:
            return self._json(405, {"error": f"use {allowed}"}, {"Allow": allowed})
        if what == "":
            event = store.get(event_id)
        elif what == "ack":
            event = store.ack(event_id)
        else:
            media = store.media_file(event_id, "snapshot" if what == "snapshot.jpg" else "clip")
            if media is None:
                return self._json(404, {"error": f"event {event_id} has no {what}"})
            return self._send_file(media, "image/jpeg" if what == "snapshot.jpg" else "video/mp4")
        if event is None:
            return self._json(404, {"error": f"no event {event_id}"})
        self._json(200, event)

    def _json(self, code: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(jsonable(body), ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(code, "application/json; charset=utf-8", data,
                   {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", **(headers or {})})

    def _send_file(self, path: Path, ctype: str) -> None:
        """A whole evidence file (a few MB at most); ``Range`` requests get 206, which some
        browsers need to seek in (or even play) an MP4."""
        data = path.read_bytes()
        headers = {"X-Content-Type-Options": "nosniff", "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
        wanted = _byte_range(self.headers.get("Range"), len(data))
        if wanted is None:
            return self._send(200, ctype, data, headers)
        start, end = wanted
        self._send(206, ctype, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})

    def _mjpeg(self, app: "StatusServer", stream: str) -> None:
        jpeg = app._preview(stream)
        if jpeg is None:
            self._not_found()
            return
        if not app._mjpeg_client(+1):
            self._send(503, "text/plain; charset=utf-8", b"503 too many preview clients\n", {"Retry-After": "5"})
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self._headers_sent = True
            last, last_sent = None, -math.inf
            while not app._stopping.is_set():
                now = time.monotonic()
                if jpeg is not None and (jpeg is not last or now - last_sent >= MJPEG_RESEND_S):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    self.wfile.flush()
                    last, last_sent = jpeg, now
                app._stopping.wait(MJPEG_POLL_S)
                jpeg = app._preview(stream)
            self.wfile.write(b"--frame--\r\n")  # the server is closing: end the multipart body properly
            self.wfile.flush()
        finally:
            app._mjpeg_client(-1)

    def _not_found(self) -> None:
        self._send(404, "text/plain; charset=utf-8", b"404 not found\n")

    def _send(self, code: int, ctype: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._headers_sent = True
        self.wfile.write(body)


class StatusServer:
    """The run's HTTP endpoint: ``/`` (the operator's dashboard: ``realtime/static/``, its
    scripts and styles at ``/static/<name>``), ``/previews`` (a plain HTML list of the previews,
    no script needed), ``/status`` (``status_fn()`` as JSON), ``/metrics`` (Prometheus text
    0.0.4), ``/api/latency?stream=NAME`` (per-interval p50/p95 of ``latency_metric`` over the
    last ``latency_keep_s`` seconds, sampled every ``latency_interval_s``: the dashboard's chart),
    ``/preview/<stream>.mjpg`` (an MJPEG stream of ``preview_fn(stream)``) and
    ``/preview/<stream>.jpg`` (one JPEG).

    It binds at construction (``port=0`` picks a free port; ``.port`` is the real one) and
    serves from ``start()`` until ``close()``, one daemon thread per request. Binding to an
    address other than loopback needs a ``token``; with a token every request needs
    ``Authorization: Bearer <token>`` or ``?token=<token>``, else 401.

    The stream list of ``/previews`` comes from ``status_fn()["streams"]``: a dict keyed by
    stream name, or a list of names or of dicts with a ``"name"`` or ``"stream"`` key.

    With ``events`` (a :class:`posestream.realtime.evidence.EventStore`), the events API:
    ``GET /api/events?limit=50&before=ID&stream=NAME`` (newest first; ``next_before`` pages
    on), ``GET /api/events/<id>``, ``GET /api/events/<id>/snapshot.jpg``, ``GET
    /api/events/<id>/clip.mp4`` (``Range`` requests answered) and ``POST
    /api/events/<id>/ack``; the same token rule applies.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None,
                 status_fn: Callable[[], dict], metrics: Metrics,
                 preview_fn: Callable[[str], bytes | None] | None = None, max_preview_clients: int = 8,
                 events: Any = None, latency_metric: str | None = STAGE_LATENCY,
                 latency_interval_s: float = 2.0, latency_keep_s: float = 600.0):
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):  # "[::1]" as written in a URL
            host = host[1:-1]
        if token is not None and not token:
            raise SinkError("status server: the token must not be empty")
        if not _is_loopback(host) and token is None:
            raise SinkError(f"status server: binding to {host or 'all interfaces'} (not loopback) needs a token "
                            "(--token), else anyone on the network can watch the previews")
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise SinkError(f"status server: port must be 0..65535, got {port!r}")
        self.host = host
        self.status_fn = status_fn
        self.metrics = metrics
        self.preview_fn = preview_fn
        # an EventStore (posestream.realtime.evidence): serves /api/events; None: 404 there
        self.events = events
        self.max_preview_clients = max_preview_clients
        # the latency chart's points, sampled from `metrics` while the server runs
        self.latency_history = (None if latency_metric is None else
                                LatencyHistory(metrics, latency_metric, interval_s=latency_interval_s,
                                               keep_s=latency_keep_s))
        _static_files()  # a broken install is an error now, not a 500 at the first page view
        self._token = None if token is None else token.encode("utf-8")
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "unauthorized": 0, "errors": 0, "preview_clients": 0}
        server_cls = _HTTPServer6 if ":" in host else _HTTPServer
        self._server = server_cls((host, port), _Handler, bind_and_activate=False)
        self._server.owner = self
        try:
            self._server.server_bind()
            self._server.server_activate()
        except OSError as exc:
            self._server.server_close()
            raise OSError(exc.errno, f"status server: cannot listen on {host}:{port}: "
                                     f"{exc.strerror or first_line(exc)}") from None
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else (self.host or "0.0.0.0")
        return f"http://{host}:{self.port}/"

    def start(self) -> "StatusServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="posestream-status-server", daemon=True)
            self._thread.start()
            if self.latency_history is not None:
                self.latency_history.start()
        return self

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop serving: MJPEG streams end within ~0.1 s, the listening socket is closed. True
        when the serving thread ended within ``timeout`` (else it is logged, and :attr:`alive`)."""
        self._stopping.set()
        done = True
        if self.latency_history is not None:
            done = self.latency_history.close(timeout)
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever to return (only if it runs)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("status server: its thread did not finish within %s s", timeout)
                done = False
            else:
                self._thread = None
        self._server.server_close()
        return done

    @property
    def alive(self) -> bool:
        """Whether the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "StatusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- used by the handler threads ---------------------------------------------------------

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def _authorized(self, header: str | None, query_token: str | None) -> bool:
        if self._token is None:
            return True
        offered = []
        if header and header[:7].lower() == "bearer ":
            offered.append(header[7:].strip())
        if query_token is not None:
            offered.append(query_token)
        # constant-time compare, so the token cannot be guessed a character at a time
        return any(hmac.compare_digest(t.encode("utf-8"), self._token) for t in offered)

    def _preview(self, stream: str) -> bytes | None:
        if self.preview_fn is None or not stream:
            return None
        return self.preview_fn(stream)

    def _mjpeg_client(self, delta: int) -> bool:
        with self._lock:
            if delta > 0 and self._counts["preview_clients"] >= self.max_preview_clients:
                return False
            self._counts["preview_clients"] += delta
            return True

    def _dashboard_html(self, query_token: str | None) -> bytes:
        """The dashboard page; its own links (script, style, the no-script page) carry the
        token when it came in the query (a browser sends no header for them)."""
        page = _static_files()["index.html"][0].decode("utf-8")
        suffix = "?token=" + urllib.parse.quote(query_token, safe="") if query_token else ""
        return page.replace(_TOKEN_QUERY_MARK, html.escape(suffix)).encode("utf-8")

    def _index_html(self, query_token: str | None) -> bytes:
        """``/previews``: the plain list of previews (no script needed)."""
        try:
            names = _stream_names(self.status_fn())
        except Exception:
            self._count("errors")
            log.exception("status server: status_fn failed while drawing the index page")
            names = []
        # the page's own links carry the token when it came in the query (a browser has no header)
        suffix = "?token=" + urllib.parse.quote(query_token, safe="") if query_token else ""
        rows = []
        for name in names:
            q = urllib.parse.quote(name, safe="")
            e = html.escape(name)
            rows.append(f'<li><b>{e}</b> <a href="/preview/{q}.mjpg{suffix}">live</a> '
                        f'<a href="/preview/{q}.jpg{suffix}">snapshot</a><br>'
                        f'<img src="/preview/{q}.mjpg{suffix}" alt="{e}" style="max-width:640px"></li>')
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>posestream</title></head><body>"
                "<h1>posestream</h1>"
                f'<p><a href="/status{suffix}">status</a> &middot; <a href="/metrics{suffix}">metrics</a></p>'
                f"<ul>{''.join(rows) or '<li>no streams</li>'}</ul></body></html>")
        return page.encode("utf-8")


def _stream_names(status: Any) -> list[str]:
    streams = status.get("streams") if isinstance(status, Mapping) else None
    if isinstance(streams, Mapping):
        return [str(k) for k in streams]
    names = []
    for s in streams or ():
        if isinstance(s, Mapping):
            s = s.get("name", s.get("stream"))
        if s is not None:
            names.append(str(s))
    return names
