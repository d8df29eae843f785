"""Evidence of events: a snapshot and a short clip of each, kept in an SQLite store.

Whoever watches a fall alarm needs to see, in seconds, what happened. With ``--evidence DIR``
every event gets

- a row in ``DIR/events.db`` (SQLite, WAL journal), written as soon as the event is raised,
  so the alarm survives a restart even if its clip never gets written;
- ``DIR/media/<id>.jpg``: the annotated frame the event was raised on;
- ``DIR/media/<id>.mp4``: the annotated frames from ``pre_s`` before to ``post_s`` after it,
  H.264 (libx264 through PyAV) in MP4 with the index (``moov``) at the front, so a browser
  plays it from ``/api/events/<id>/clip.mp4`` while it downloads.

File names come from the integer id alone, never from a stream name or label. Every file is
written under a hidden temporary name in ``media/``, fsynced and renamed; its row is updated
only after the rename. A crash or SIGKILL therefore leaves at most a temporary file (removed
when the next run opens the store) and rows whose evidence is ``pending`` (marked
``interrupted`` then, keeping any of their files that were finished): never a half-written file
under a final name.

Threads and what each owns:

- the pose thread of each stream calls :meth:`EvidenceRecorder.add_frame` with every annotated
  frame: it JPEG-encodes the frame into the stream's pre-event ring and appends it to the
  stream's pending clips (those still collecting their ``post_s``);
- the events thread calls :meth:`EvidenceRecorder.on_event`: it queues the row's insert and
  leaves the event in the stream's inbox, which the pose thread picks up at its next frame
  (each stream's state is behind its own lock, held for list operations only);
- one writer thread (a :class:`~posestream.realtime.sinks._QueuedSink`) owns the SQLite write
  connection, the encoder and the files; it also enforces the retention limits, and writes
  the clips of a stream whose frames stopped (a camera down) once ``stall_s`` has passed;
- the status server's request threads read (and ``ack``) through connections of their own.

Memory is bounded: a stream's ring holds at most ``(pre_s + late_s) * max_fps + 1`` JPEGs
(``late_s`` covers the time an event takes to be raised after its frame) and at most
``ring_bytes``; at most :data:`MAX_PENDING_PER_STREAM` clips per stream collect frames at once
(each at most ``(pre_s + late_s + post_s) * max_fps + 1`` JPEGs, shared with the ring, not
copied); the writer's queue holds at most ``queue_size`` jobs. At 10 fps, 5 s + 5 s and
800 px JPEGs (about 50-80 KB for 768x576 footage) a stream's ring is about 5 MB.
What does not fit is dropped and counted (``stats()``, ``posestream_sink_dropped_total``,
a rate-limited warning), and the event's row says why (``evidence = 'dropped'``).

Shutdown (:meth:`EvidenceRecorder.close`, called by ``Runtime.stop`` after the stream threads
ended): pending clips are written with the frames they have (``evidence = 'partial'``), the
queue is drained, the connection closed.
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import json
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from posestream.errors import first_line
from posestream.realtime.metrics import Metrics
from posestream.realtime.sinks import SinkError, _QueuedSink, _RateLimitedWarning, _fsync_dir, _unlink, \
    encode_jpeg, jsonable

log = logging.getLogger(__name__)

__all__ = ["EventStore", "EvidenceRecorder", "write_h264_mp4", "DEFAULT_EVIDENCE_DIR", "EVIDENCE_STATES"]

#: ``posestream run``'s default ``--evidence`` folder (``$XDG_DATA_HOME`` when set).
DEFAULT_EVIDENCE_DIR = "~/.local/share/posestream/evidence"
#: What an event's ``evidence`` column says.
EVIDENCE_STATES = {
    "pending": "the row is written; the clip is still collecting frames or queued",
    "complete": "snapshot and a clip covering pre_s .. post_s",
    "partial": "snapshot and a clip cut short (the stream ended or the run stopped)",
    "dropped": "no evidence: a bound was hit (queue full, too many clips at once)",
    "no_frames": "no evidence: the stream had no annotated frame for it",
    "failed": "no evidence: writing it failed (the reason is in the log)",
    "interrupted": "the run was killed before the evidence was written (files it had finished are kept)",
}
#: Clips that may collect their post-event frames at once, per stream.
MAX_PENDING_PER_STREAM = 16
#: Events waiting in a stream's inbox for its pose thread.
MAX_INBOX_PER_STREAM = 64
#: Rows the writer remembers while their clip is coming (a clip whose job was dropped, and
#: whose 'dropped' marker could not be queued either, would otherwise be remembered forever).
MAX_UNRESOLVED = 4096
#: How often the writer thread enforces retention while idle.
RETENTION_EVERY_S = 60.0
#: Reading the events of the JSON API: at most this many a page.
MAX_PAGE = 500
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ts REAL NOT NULL,          -- when the row was written (epoch s)
    stream TEXT NOT NULL,
    kind TEXT,
    label TEXT,
    track_id TEXT,
    score REAL,
    start_ts REAL,
    end_ts REAL,
    frame_index INTEGER,
    event_json TEXT NOT NULL,          -- the event as the JSON-lines sinks got it
    evidence TEXT NOT NULL DEFAULT 'pending',
    snapshot TEXT,                     -- relative to the evidence folder
    clip TEXT,
    clip_frames INTEGER,
    clip_s REAL,
    bytes INTEGER NOT NULL DEFAULT 0,  -- snapshot + clip
    write_s REAL,                      -- seconds the writer spent on this event's files
    acked_ts REAL
);
CREATE INDEX IF NOT EXISTS events_created ON events (created_ts);
"""


def _epoch() -> float:
    return time.time()


# ----------------------------------------------------------------------------------------------
# The clip encoder
# ----------------------------------------------------------------------------------------------


def write_h264_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], times_s: Iterable[float], *,
                   crf: int = 26, preset: str = "veryfast", threads: int = 1) -> int:
    """Encode BGR frames as H.264 (libx264, yuv420p, so every browser decodes it) into an MP4
    at ``path`` with the ``moov`` index at the front (``+faststart``). ``times_s`` are the
    frames' times in seconds (any origin); the clip keeps their real spacing (millisecond
    timestamps), so frames dropped upstream do not speed it up. The frame size is the first
    frame's rounded down to even numbers; later frames of another size are resized to it.
    Returns the number of frames written. The file is written in place: callers write to a
    temporary name and rename (see :class:`EvidenceRecorder`)."""
    import av
    import cv2

    container = av.open(os.fspath(path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream = None
        t0 = last_pts = None
        n = 0
        for image, t in zip(frames, times_s):
            if stream is None:
                h, w = image.shape[:2]
                size = (w - w % 2, h - h % 2)
                stream = container.add_stream("libx264", rate=10, options={"preset": preset, "crf": str(crf)})
                stream.width, stream.height = size
                stream.pix_fmt = "yuv420p"
                stream.codec_context.time_base = Fraction(1, 1000)
                stream.time_base = Fraction(1, 1000)
                stream.codec_context.thread_count = threads
                t0 = float(t)
            if (image.shape[1], image.shape[0]) != size:
                if image.shape[1] in (size[0], size[0] + 1) and image.shape[0] in (size[1], size[1] + 1):
                    image = image[:size[1], :size[0]]  # the odd row / column: crop, not resample
                else:
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            pts = int(round((float(t) - t0) * 1000))
            if last_pts is not None and pts <= last_pts:
                pts = last_pts + 1  # MP4 needs strictly increasing timestamps
            last_pts = pts
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            frame.pts = pts
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)
    finally:
        container.close()  # writes the index (and, with faststart, moves it to the front)
    return n


# ----------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------


def _tmp_name(final: Path) -> Path:
    """The hidden temporary name a file is written under before it is renamed to ``final``."""
    return final.parent / f".{final.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{final.suffix}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EventStore:
    """Events and their evidence files under one folder: ``events.db`` (SQLite, WAL) and
    ``media/``.

    Opening it creates the folder if needed, takes an exclusive lock on ``DIR/.lock`` (two
    runs on one folder would remove each other's temporary files: the second gets a one-line
    error), removes temporary files a killed run left in ``media/`` and marks the rows it left
    ``pending`` as ``interrupted``. Each thread gets its own connection (:meth:`connect`);
    the writer thread owns the only one that inserts.
    """

    def __init__(self, folder: str | os.PathLike, *, lock: bool = True):
        self.folder = Path(os.path.expanduser(os.fspath(folder)))
        where = f"evidence folder {self.folder}"
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{where}: exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.media = self.folder / "media"
            self.media.mkdir(exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{where}: cannot create it: {exc.strerror or first_line(exc)}") from None
        if not os.access(self.folder, os.W_OK) or not os.access(self.media, os.W_OK):
            raise SinkError(f"{where}: is not writable")
        self.db_path = self.folder / "events.db"
        self._lock_fd: int | None = None
        if lock:
            self._take_lock(where)
        try:
            with self.connect() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise SinkError(f"{where}: events.db has schema version {version}; this posestream "
                                    f"reads version {SCHEMA_VERSION}")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.recovered = self._recover(db) if lock else {"tmp_removed": 0, "interrupted": 0}
        except sqlite3.DatabaseError as exc:
            self.close()
            raise SinkError(f"{where}: events.db is not a usable SQLite database: {first_line(exc)}") from None

    def _take_lock(self, where: str) -> None:
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SinkError(f"{where}: is in use by another posestream run (it holds {self.folder / '.lock'})") \
                from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the folder's lock (the connections are each closed by their users)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def connect(self) -> sqlite3.Connection:
        """A new connection (WAL; ``synchronous=NORMAL``: a commit survives a crash of the
        process, and an OS crash loses at most the last commits, never consistency)."""
        db = sqlite3.connect(self.db_path, timeout=5.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def _recover(self, db: sqlite3.Connection) -> dict[str, int]:
        removed = 0
        for p in self.media.glob(".*.tmp*"):
            _unlink(p)
            removed += 1
        # A file under a final name is whole (renamed only after its fsync), but the run may have
        # been killed before its row said so: keep it, so the carer still sees the snapshot.
        interrupted = 0
        for (event_id,) in db.execute("SELECT id FROM events WHERE evidence = 'pending'").fetchall():
            found_files = {ext: self.media / f"{event_id}.{ext}" for ext in ("jpg", "mp4")}
            found_files = {ext: p for ext, p in found_files.items() if p.is_file()}
            db.execute("UPDATE events SET evidence = 'interrupted', snapshot = ?, clip = ?, bytes = ? WHERE id = ?",
                       (f"media/{event_id}.jpg" if "jpg" in found_files else None,
                        f"media/{event_id}.mp4" if "mp4" in found_files else None,
                        sum(p.stat().st_size for p in found_files.values()), event_id))
            interrupted += 1
        found = {"tmp_removed": removed, "interrupted": interrupted}
        if removed or interrupted:
            log.warning("evidence %s: a previous run ended without finishing: %d temporary file(s) removed, "
                        "%d event(s) marked interrupted", self.folder, removed, interrupted)
        return found

    # -- writes (the writer thread's connection) ------------------------------------------------

    @staticmethod
    def insert(db: sqlite3.Connection, event: Mapping[str, Any]) -> int:
        e = jsonable(event)
        track = e.get("track_id")
        cur = db.execute(
            "INSERT INTO events (created_ts, stream, kind, label, track_id, score, start_ts, end_ts, frame_index, "
            "event_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_epoch(), str(e.get("stream", "")), e.get("kind"), e.get("label"),
             None if track is None else str(track), _num(e.get("score")), _num(e.get("start_ts")),
             _num(e.get("end_ts")), _int(e.get("frame_index")),
             json.dumps(e, ensure_ascii=False, allow_nan=False)))
        return int(cur.lastrowid)

    @staticmethod
    def set_evidence(db: sqlite3.Connection, event_id: int, state: str, *, snapshot: str | None = None,
                     clip: str | None = None, clip_frames: int | None = None, clip_s: float | None = None,
                     nbytes: int = 0, write_s: float | None = None) -> None:
        assert state in EVIDENCE_STATES, state
        db.execute("UPDATE events SET evidence = ?, snapshot = ?, clip = ?, clip_frames = ?, clip_s = ?, bytes = ?, "
                   "write_s = ? WHERE id = ?", (state, snapshot, clip, clip_frames, clip_s, nbytes, write_s, event_id))

    def enforce_retention(self, db: sqlite3.Connection, max_days: float | None, max_bytes: int | None) -> int:
        """Delete the events (rows and files) older than ``max_days``, then the oldest ones
        until their files take at most ``max_bytes``; returns how many were deleted. Pending
        events (their clip is still coming) are kept."""
        doomed: list[sqlite3.Row] = []
        if max_days is not None:
            doomed += db.execute("SELECT id, snapshot, clip, bytes FROM events WHERE created_ts < ? "
                                 "AND evidence != 'pending' ORDER BY id", (_epoch() - max_days * 86400,)).fetchall()
        if max_bytes is not None:
            gone = {r["id"] for r in doomed}
            total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM events").fetchone()[0]
            total -= sum(r["bytes"] for r in doomed)
            if total > max_bytes:
                for r in db.execute("SELECT id, snapshot, clip, bytes FROM events WHERE evidence != 'pending' "
                                    "AND bytes > 0 ORDER BY id"):
                    if total <= max_bytes:
                        break
                    if r["id"] in gone:
                        continue
                    doomed.append(r)
                    total -= r["bytes"]
        for r in doomed:
            # the files first: a crash in between leaves a row without files (shown as such),
            # never a file no row knows about
            for rel in (r["snapshot"], r["clip"]):
                if rel:
                    _unlink(self.folder / rel)
            db.execute("DELETE FROM events WHERE id = ?", (r["id"],))
        if doomed:
            _fsync_dir(self.media)
        return len(doomed)

    # -- reads (any thread, its own connection) -------------------------------------------------

    def list_events(self, *, limit: int = 50, before: int | None = None, stream: str | None = None) -> dict:
        """Newest first: at most ``limit`` events with an id below ``before`` (keyset paging:
        new events never shift a page), of ``stream`` if given."""
        where, args = [], []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if stream is not None:
            where.append("stream = ?")
            args.append(stream)
        sql_where = f" WHERE {' AND '.join(where)}" if where else ""
        db = self.connect()
        try:
            rows = db.execute(f"SELECT * FROM events{sql_where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
            total = db.execute("SELECT COUNT(*) FROM events" + (" WHERE stream = ?" if stream is not None else ""),
                               (stream,) if stream is not None else ()).fetchone()[0]
        finally:
            db.close()
        events = [self.public(r) for r in rows]
        next_before = events[-1]["id"] if len(events) == limit else None
        return {"events": events, "total": total, "next_before": next_before}

    def get(self, event_id: int) -> dict | None:
        db = self.connect()
        try:
            row = db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        finally:
            db.close()
        return None if row is None else self.public(row)

    def ack(self, event_id: int) -> dict | None:
        """Mark the event acknowledged (the first ack's time is kept); None if there is none."""
        db = self.connect()
        try:
            db.execute("UPDATE events SET acked_ts = COALESCE(acked_ts, ?) WHERE id = ?", (_epoch(), event_id))
            row = db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        finally:
            db.close()
        return None if row is None else self.public(row)

    def media_file(self, event_id: int, kind: str) -> Path | None:
        """The event's snapshot (``kind="snapshot"``) or clip file, only if it exists inside
        ``media/`` (whatever the row says)."""
        column = {"snapshot": "snapshot", "clip": "clip"}[kind]
        db = self.connect()
        try:
            row = db.execute(f"SELECT {column} FROM events WHERE id = ?", (event_id,)).fetchone()
        finally:
            db.close()
        if row is None or not row[0]:
            return None
        path = (self.folder / row[0]).resolve()
        if not path.is_relative_to(self.media.resolve()) or not path.is_file():
            return None
        return path

    @staticmethod
    def public(row: sqlite3.Row) -> dict:
        """A row as the JSON API shows it: the event as raised, plus id, evidence and ack."""
        event = json.loads(row["event_json"])
        i = row["id"]
        return {**event, "id": i, "created_ts": row["created_ts"],
                "acked": row["acked_ts"] is not None, "acked_ts": row["acked_ts"],
                "evidence": {"state": row["evidence"],
                             "snapshot": f"/api/events/{i}/snapshot.jpg" if row["snapshot"] else None,
                             "clip": f"/api/events/{i}/clip.mp4" if row["clip"] else None,
                             "clip_frames": row["clip_frames"], "clip_s": row["clip_s"], "bytes": row["bytes"],
                             "write_s": row["write_s"]}}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


# ----------------------------------------------------------------------------------------------
# Per-stream frames
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Shot:
    index: int       #: the frame's index in its stream
    t: float         #: stream time, seconds (monotone; see _StreamState.stream_time)
    jpeg: bytes


@dataclasses.dataclass
class _Capture:
    """One event's clip while it collects frames (owned by its stream's lock)."""

    key: int                 #: the recorder's number for the event (the row id is the writer's)
    snapshot: _Shot
    frames: list             #: _Shot s, in order
    end_t: float             #: stream time the clip ends at
    deadline: float          #: monotonic time after which it is written with what it has


class _StreamState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ring: collections.deque[_Shot] = collections.deque()
        self.ring_bytes = 0
        self.inbox: collections.deque[tuple[int, Mapping, float]] = collections.deque()  # key, event, monotonic
        self.pending: list[_Capture] = []
        self.last_t: float | None = None         # stream time of the newest frame seen
        self.last_encoded_t = -math.inf
        self.pts_offset = 0.0
        self.last_pts: float | None = None

    def stream_time(self, frame: Any) -> float:
        """The frame's time in its stream: the source's pts (video files: 5 s are 5 s of the
        video at any pace) made monotone across loops, else its wall-clock time."""
        pts = getattr(frame, "pts", None)
        if pts is None:
            return float(frame.t_wall)
        pts = float(pts)
        if self.last_pts is not None and pts + self.pts_offset < self.last_pts:
            self.pts_offset = self.last_pts - pts + 0.001  # the file looped
        self.last_pts = pts + self.pts_offset
        return self.last_pts


# ----------------------------------------------------------------------------------------------
# The recorder
# ----------------------------------------------------------------------------------------------


class EvidenceRecorder(_QueuedSink):
    """Snapshots and clips of events into an :class:`EventStore` (see the module docstring).

    ``folder``: the evidence folder. ``pre_s`` / ``post_s``: clip seconds before and after
    the event's frame. ``max_fps``: frames a second kept (more are skipped, not encoded).
    ``max_width`` / ``quality``: the JPEGs kept in memory, and so the clip's size.
    ``retention_days`` / ``retention_gb``: limits enforced at start, after each event and
    every :data:`RETENTION_EVERY_S` (None: no limit).
    """

    def __init__(self, folder: str | os.PathLike, *, pre_s: float = 5.0, post_s: float = 5.0,
                 late_s: float = 3.0, max_fps: float = 10.0, max_width: int | None = 800, quality: int = 75,
                 ring_bytes: int = 32 * 2**20, retention_days: float | None = 30.0,
                 retention_gb: float | None = 10.0, queue_size: int = 32, stall_s: float | None = None,
                 metrics: Metrics | None = None, name: str = "evidence"):
        for label, v in (("pre_s", pre_s), ("post_s", post_s), ("late_s", late_s)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise SinkError(f"evidence: {label} must be a number >= 0, got {v!r}")
        if not (isinstance(max_fps, (int, float)) and max_fps > 0):
            raise SinkError(f"evidence: max_fps must be > 0, got {max_fps!r}")
        for label, v in (("retention_days", retention_days), ("retention_gb", retention_gb)):
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise SinkError(f"evidence: {label} must be > 0 (or None for no limit), got {v!r}")
        self.store = EventStore(folder)
        self.folder = self.store.folder
        self.pre_s, self.post_s, self.late_s = float(pre_s), float(post_s), float(late_s)
        self.max_fps = float(max_fps)
        self.max_width, self.quality = max_width, int(quality)
        self.ring_bytes = int(ring_bytes)
        self.ring_frames = int(math.ceil((self.pre_s + self.late_s) * self.max_fps)) + 1
        self.retention_days = retention_days
        # A clip still waiting for its post_s this long after its event is written with what it
        # has ('partial'): the stream's frames stopped (a camera down). Generous, because on a
        # slow machine a video file at pace fast advances its time slower than the clock.
        self.stall_s = 3 * self.post_s + 10.0 if stall_s is None else float(stall_s)
        self._next_stall_check = 0.0
        self.retention_bytes = None if retention_gb is None else int(retention_gb * 1e9)
        self._streams: dict[str, _StreamState] = {}
        self._streams_lock = threading.Lock()
        self._next_key = 0
        self._key_lock = threading.Lock()
        super().__init__("evidence", name, queue_size, metrics)
        # counts: written by the thread that holds the stream's lock or by the writer thread,
        # under _count_lock (read by stats() from any thread)
        self._count_lock = threading.Lock()
        self._counts = {"events": 0, "complete": 0, "partial": 0, "no_frames": 0, "failed": 0,
                        "evidence_dropped": 0, "frames_encoded": 0, "frames_skipped": 0, "encode_failed": 0,
                        "retention_deleted": 0}
        self._write_times: collections.deque[float] = collections.deque(maxlen=256)
        self._warn_bound = _RateLimitedWarning()
        # the writer thread's own
        self._db: sqlite3.Connection | None = None
        self._ids: dict[int, int] = {}   # recorder key -> row id, until the clip is written
        self._next_retention = 0.0
        self._start()

    # -- the pose threads ------------------------------------------------------------------------

    def _state(self, stream: str) -> _StreamState:
        with self._streams_lock:
            st = self._streams.get(stream)
            if st is None:
                st = self._streams[stream] = _StreamState()
            return st

    def add_frame(self, stream: str, frame: Any, annotated: np.ndarray) -> None:
        """One annotated frame of ``stream`` (``frame``: its :class:`~posestream.realtime.frames.Frame`,
        for the index and time). Called by the stream's pose thread; never blocks on I/O."""
        st = self._state(stream)
        t = st.stream_time(frame)
        st.last_t = t
        shot = None
        if t - st.last_encoded_t >= 1.0 / self.max_fps - 1e-6:
            try:
                shot = _Shot(int(frame.index), t, encode_jpeg(annotated, self.quality, self.max_width))
                st.last_encoded_t = t
                self._bump("frames_encoded")
            except Exception as exc:  # a bad frame costs its place in the clip, not the pipeline
                self._bump("encode_failed")
                self._warn_failure("evidence of %s: encoding a frame failed: %s", stream, first_line(exc))
        else:
            self._bump("frames_skipped")
        done: list[_Capture] = []
        with st.lock:
            if shot is not None:
                st.ring.append(shot)
                st.ring_bytes += len(shot.jpeg)
                while st.ring and (len(st.ring) > self.ring_frames or st.ring_bytes > self.ring_bytes
                                   or st.ring[0].t < t - self.pre_s - self.late_s):
                    st.ring_bytes -= len(st.ring.popleft().jpeg)
                for cap in st.pending:
                    if shot.t <= cap.end_t:
                        cap.frames.append(shot)
            while st.inbox:
                key, event, _ = st.inbox.popleft()
                self._begin(st, key, event, done)
            keep = []
            for cap in st.pending:
                (done if t >= cap.end_t else keep).append(cap)
            st.pending = keep
        for cap in done:
            self._queue_clip(cap, "complete")

    def _begin(self, st: _StreamState, key: int, event: Mapping, done: list) -> None:
        """Start the clip of an event from the ring (the stream's lock is held)."""
        if not st.ring:
            self._offer_job(("no_frames", key, None))
            return
        index = event.get("frame_index")
        anchor = st.ring[-1]
        if isinstance(index, int):
            for shot in reversed(st.ring):  # the event's frame, else the newest before it
                anchor = shot
                if shot.index <= index:
                    break
        cap = _Capture(key, anchor, [s for s in st.ring if anchor.t - self.pre_s <= s.t <= anchor.t + self.post_s],
                       anchor.t + self.post_s, time.monotonic() + self.stall_s)
        if st.last_t is not None and st.last_t >= cap.end_t:
            done.append(cap)
        elif len(st.pending) >= MAX_PENDING_PER_STREAM:
            self._bound_hit(key, f"{MAX_PENDING_PER_STREAM} clips of this stream already collect frames")
        else:
            st.pending.append(cap)

    # -- the events thread ----------------------------------------------------------------------

    def on_event(self, event: Mapping[str, Any]) -> bool:
        """An event sink: queue its row, and its clip for the stream's next frame. Never blocks."""
        with self._key_lock:
            key = self._next_key
            self._next_key += 1
        self._bump("events")
        if not self._offer_job(("insert", key, dict(event))):
            return False
        st = self._state(str(event.get("stream", "")))
        with st.lock:
            if len(st.inbox) >= MAX_INBOX_PER_STREAM:
                self._bound_hit(key, "the stream's event inbox is full (its frames stopped?)")
            else:
                st.inbox.append((key, event, time.monotonic()))
        return True

    # -- queueing ---------------------------------------------------------------------------

    def _offer_job(self, job: tuple) -> bool:
        return self._offer(job)

    def _bound_hit(self, key: int, why: str) -> None:
        self._bump("evidence_dropped")
        if self._dropped_metric is not None:
            self._dropped_metric.inc()
        self._warn_bound("evidence: an event's clip was dropped: %s", why)
        self._offer_job(("dropped", key, None))

    def _queue_clip(self, cap: _Capture, state: str) -> None:
        if not self._offer_job(("clip", cap.key, (cap, state))):  # counted as a queue drop by _offer
            self._bump("evidence_dropped")
            # the row stays 'pending' until the next start marks it interrupted, unless this
            # marker gets through (it is small; the queue may have room again by then)
            self._offer(("dropped", cap.key, None))

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write every clip still collecting frames with what it has ('partial'), then drain
        the queue and close. Call it after the stream threads ended (``Runtime.stop`` does)."""
        if not self.closed:
            with self._streams_lock:
                states = list(self._streams.values())
            for st in states:
                with st.lock:
                    while st.inbox:
                        key, event, _ = st.inbox.popleft()
                        done: list[_Capture] = []
                        self._begin(st, key, event, done)
                        st.pending.extend(done)
                    pending, st.pending = st.pending, []
                # past the queue's bound on purpose: these are few (MAX_PENDING_PER_STREAM per
                # stream) and dropping them would lose the newest alarms of the run
                for cap in pending:
                    complete = st.last_t is not None and st.last_t >= cap.end_t
                    self._items.append(("clip", cap.key, (cap, "complete" if complete else "partial")))
        ok = self._close(timeout)
        self.store.close()
        return ok

    # -- the writer thread ------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self.store.connect()
        return self._db

    def _handle(self, job: tuple) -> None:
        what, key, payload = job
        db = self._conn()
        if what == "insert":
            self._ids[key] = self.store.insert(db, payload)
            while len(self._ids) > MAX_UNRESOLVED:  # their clip job was lost: the row stays pending
                self._ids.pop(next(iter(self._ids)))
            return
        event_id = self._ids.pop(key, None)
        if event_id is None:  # its insert was dropped: the event is only in the JSON sinks
            return
        if what in ("dropped", "no_frames"):
            self.store.set_evidence(db, event_id, what)
            if what == "no_frames":
                self._bump("no_frames")
            return
        cap, state = payload
        t0 = time.perf_counter()
        try:
            snapshot, clip, nbytes = self._write_files(event_id, cap)
        except Exception as exc:
            self.store.set_evidence(db, event_id, "failed")
            self._bump("failed")
            self._warn_failure("evidence: writing the files of event %d failed: %s", event_id, first_line(exc))
            return
        write_s = time.perf_counter() - t0
        frames = cap.frames
        clip_s = round(frames[-1].t - frames[0].t + 1.0 / self.max_fps, 3) if frames else 0.0
        self.store.set_evidence(db, event_id, state, snapshot=snapshot, clip=clip, clip_frames=len(frames),
                                clip_s=clip_s, nbytes=nbytes, write_s=round(write_s, 4))
        with self._count_lock:
            self._counts[state] += 1
            self._write_times.append(write_s)
        self._retention(force=True)  # new files: check the size limit now (one SUM query)

    def _write_files(self, event_id: int, cap: _Capture) -> tuple[str, str | None, int]:
        import cv2

        snap = self.store.media / f"{event_id}.jpg"
        self._write_atomic(snap, lambda tmp: tmp.write_bytes(cap.snapshot.jpeg))
        nbytes = len(cap.snapshot.jpeg)
        clip_rel = None
        if cap.frames:
            clip = self.store.media / f"{event_id}.mp4"
            images = (cv2.imdecode(np.frombuffer(s.jpeg, np.uint8), cv2.IMREAD_COLOR) for s in cap.frames)
            self._write_atomic(clip, lambda tmp: write_h264_mp4(tmp, images, [s.t for s in cap.frames]))
            nbytes += clip.stat().st_size
            clip_rel = f"media/{clip.name}"
        _fsync_dir(self.store.media)
        return f"media/{snap.name}", clip_rel, nbytes

    @staticmethod
    def _write_atomic(final: Path, write) -> None:
        tmp = _tmp_name(final)
        try:
            write(tmp)
            _fsync_file(tmp)
            os.replace(tmp, final)
        except BaseException:
            _unlink(tmp)
            raise

    def _retention(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_retention:
            return
        self._next_retention = now + RETENTION_EVERY_S
        deleted = self.store.enforce_retention(self._conn(), self.retention_days, self.retention_bytes)
        if deleted:
            self._bump("retention_deleted", deleted)
            log.info("evidence %s: retention deleted %d event(s) (limits: %s days, %s bytes)", self.folder,
                     deleted, self.retention_days, self.retention_bytes)

    def _idle(self) -> None:
        self._retention()
        now = time.monotonic()
        if now >= self._next_stall_check:
            self._next_stall_check = now + 0.5
            self._write_stalled(now)

    def _write_stalled(self, now: float) -> None:
        """Clips (and events in an inbox) of streams whose frames stopped: written as 'partial'
        once past their deadline (writer thread; each stream's lock held for list work only)."""
        with self._streams_lock:
            states = list(self._streams.values())
        for st in states:
            stalled: list[_Capture] = []
            with st.lock:
                while st.inbox and now - st.inbox[0][2] >= self.stall_s:
                    key, event, _ = st.inbox.popleft()
                    done: list[_Capture] = []
                    self._begin(st, key, event, done)
                    stalled.extend(done)
                keep = []
                for cap in st.pending:
                    (stalled if now >= cap.deadline else keep).append(cap)
                st.pending = keep
            for cap in stalled:
                self._queue_clip(cap, "partial")

    def _finish(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _on_unexpected_error(self) -> None:
        self._bump("failed")

    # -- reporting ----------------------------------------------------------------------------

    def _bump(self, what: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[what] += n

    def stats(self) -> dict[str, Any]:
        with self._count_lock:
            counts = dict(self._counts)
            times = sorted(self._write_times)
        write = None
        if times:
            write = {"n": len(times), "p50_s": round(times[len(times) // 2], 4),
                     "max_s": round(times[-1], 4), "mean_s": round(sum(times) / len(times), 4)}
        return {"folder": os.fspath(self.folder), **counts, "dropped": self.dropped, "queued": self._qsize(),
                "write_time": write}


def default_evidence_dir() -> str:
    """``$XDG_DATA_HOME/posestream/evidence``, else :data:`DEFAULT_EVIDENCE_DIR`."""
    base = os.environ.get("XDG_DATA_HOME")
    return os.path.join(base, "posestream", "evidence") if base else os.path.expanduser(DEFAULT_EVIDENCE_DIR)

