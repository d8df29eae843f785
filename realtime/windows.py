"""Per-track skeleton histories and the windows cut from them for the action model.

The perception stage hands every processed frame's tracks to the stream's
:class:`StreamTracks`, which keeps one bounded ring buffer (:class:`TrackHistory`) per
confirmed track. Every ``stride`` frames the pipeline cuts a window of the last ``window_s``
seconds out of a history (:func:`sample_track_window`) or out of all of a stream's
histories at once (:func:`sample_scene_window`) and gets the skeletons the model is fed,
already on its ``size x size`` grid.

Training/serving parity. The model was validated on clips through

    UniformSampleFrames(clip_len, test_mode) -> PoseDecode -> PoseCompact(hw_ratio=1,
    allow_imgpad=True) -> Resize((size, size), keep_ratio=False) -> GeneratePoseTarget

and a window is treated as exactly such a clip: its frames are the processed frames of the
stream from the track's first to its last observed frame inside ``[now - window_s, now]``
(frames where the track was lost, or matched to a box without a skeleton, hold zeros, as
PYSKL stores a missing person and as :mod:`posestream.realtime.video_clips` writes the
clips it extracts), uniformly sampled to ``clip_len`` frames with the very function the
validation pipeline uses (:func:`posestream.engines.crop.uniform_sample_indices`), and mapped
onto the grid by :func:`posestream.engines.crop.window_to_grid` (the same box and scaling code
as ``PoseCompact`` and ``Resize``). The batcher then rasterizes them with the training
rasterizer. ``tests/test_windows.py`` checks the parity to 1e-6.

"Processed frames": a frame that the perception stage dropped (it fell behind) never reaches
:meth:`StreamTracks.update`, so it is not part of any window; only frames where the tracker ran
and the person was not found are zeros. (Filling dropped frames with zeros would blank every
other frame of a volume whenever the pose stage runs at half the camera's rate.)

Memory is bounded whatever the input does: every history holds at most ``capacity`` frames
(``history_s * max_fps``; at a higher rate it simply covers less time), histories unseen for
``keep_s`` seconds are dropped, and at most ``max_tracks`` histories are kept per stream.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from posestream.engines.crop import (WINDOW_FLOOR_FRAMES, WINDOW_MIN_FRAMES, WINDOW_MIN_SPAN_S, compact_box,
                                     uniform_sample_indices, window_is_enough, window_span, window_to_grid)
from posestream.realtime.tracker import CONFIRMED, LOST
from posestream.skeleton import NUM_KEYPOINTS

__all__ = [
    "TrackHistory",
    "StreamTracks",
    "WindowSample",
    "sample_track_window",
    "sample_scene_window",
    "WindowScheduler",
    "DEFAULT_HISTORY_S",
    "DEFAULT_MAX_FPS",
    "DEFAULT_KEEP_S",
]

#: Seconds of skeletons each history can hold (at ``max_fps``); longer than any window.
DEFAULT_HISTORY_S = 10.0
#: The frame rate the ring buffers are sized for.
DEFAULT_MAX_FPS = 30.0
#: A track not observed for this long is forgotten.
DEFAULT_KEEP_S = 2.0
#: Histories kept per stream at most (the least recently seen goes first).
DEFAULT_MAX_TRACKS = 64

# PYSKL's PoseCompact settings in the PoseC3D pipelines
PADDING = 0.25
THRESHOLD = 10
HW_RATIO = 1.0


def history_capacity(history_s: float = DEFAULT_HISTORY_S, max_fps: float = DEFAULT_MAX_FPS) -> int:
    """Frames a history needs to hold ``history_s`` seconds at ``max_fps``."""
    if not history_s > 0 or not max_fps > 0:
        raise ValueError(f"history_s and max_fps must be > 0, got {history_s}, {max_fps}")
    return int(math.ceil(history_s * max_fps)) + 1


class _Ring:
    """Slot bookkeeping of a ring buffer: where the next row goes and the slots of the rows
    held, oldest first. The data lives in the owner's preallocated arrays."""

    __slots__ = ("capacity", "count", "head")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.count, self.head = int(capacity), 0, 0

    def push(self) -> int:
        """The slot of a new row (overwriting the oldest when full)."""
        slot = self.head
        self.head = (self.head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)
        return slot

    def order(self) -> np.ndarray:
        """Slots of the rows held, oldest first."""
        start = self.head - self.count
        if start >= 0:  # not wrapped: one contiguous run
            return np.arange(start, self.head)
        return np.arange(start, self.head) % self.capacity

    def last(self) -> int:
        return (self.head - 1) % self.capacity


class TrackHistory:
    """The recent skeletons of one track: a ring buffer of ``capacity`` frames, preallocated.

    Each row is one processed frame while the track was alive: ``frame_index`` (int64),
    ``t_capture`` (float64, monotonic seconds), ``keypoints`` float32 ``[V, 3]`` (x, y, score
    in image pixels; all zeros when the track was not observed with a skeleton that frame),
    ``box`` float32 ``[5]`` (x1, y1, x2, y2, score; the tracker's predicted box when lost) and
    ``observed`` (bool). Frame indices must increase and capture times must not go back.
    ``img_shape`` ``(h, w)`` of the stream's frames is needed to map a window whose skeletons
    are too small to crop (below PoseCompact's 10-pixel threshold) onto the grid.
    """

    def __init__(self, capacity: int, num_keypoints: int = NUM_KEYPOINTS, *, stream: str = "",
                 track_id: Any = 0, img_shape: tuple[int, int] | None = None):
        self._ring = _Ring(capacity)
        self.stream, self.track_id, self.img_shape = stream, track_id, img_shape
        self.frame_index = np.zeros(capacity, dtype=np.int64)
        self.t_capture = np.zeros(capacity, dtype=np.float64)
        self.keypoints = np.zeros((capacity, num_keypoints, 3), dtype=np.float32)
        self.box = np.zeros((capacity, 5), dtype=np.float32)
        self.observed = np.zeros(capacity, dtype=bool)
        self.last_seen: float | None = None  #: t_capture of the last observed frame
        self._last_observed_slot: int | None = None
        self.num_observed_total = 0  #: observed frames ever appended (not only those held)

    # --- writing ------------------------------------------------------------------------------

    def append(self, frame_index: int, t_capture: float, keypoints: np.ndarray | None = None,
               box: np.ndarray | None = None) -> bool:
        """Add one frame; returns whether it counts as observed. ``keypoints`` None, or with
        every score 0, records the frame as missing (zeros). NaN/inf joints become missing
        joints (0, 0, 0) and scores are clipped to [0, 1], as the clip extractor does."""
        frame_index, t_capture = int(frame_index), float(t_capture)
        if len(self):
            last = self._ring.last()
            if frame_index <= self.frame_index[last]:
                raise ValueError(f"{self._name()}: frame_index must increase: got {frame_index} "
                                 f"after {int(self.frame_index[last])}")
            if t_capture < self.t_capture[last]:
                raise ValueError(f"{self._name()}: t_capture went back from {self.t_capture[last]} to {t_capture}")
        kp = None if keypoints is None else _clean_keypoints(keypoints, self.keypoints.shape[1:], self._name())
        observed = kp is not None and bool(kp[:, 2].any())
        slot = self._ring.push()
        if self._last_observed_slot == slot:  # about to be overwritten
            self._last_observed_slot = None
        self.frame_index[slot] = frame_index
        self.t_capture[slot] = t_capture
        self.keypoints[slot] = kp if observed else 0.0
        self.box[slot] = 0.0 if box is None else np.asarray(box, dtype=np.float32).reshape(5)
        self.observed[slot] = observed
        if observed:
            self.last_seen = t_capture
            self._last_observed_slot = slot
            self.num_observed_total += 1
        return observed

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._ring.count

    @property
    def capacity(self) -> int:
        return self._ring.capacity

    @property
    def span_s(self) -> float:
        """Seconds between the oldest and the newest frame held (0 with fewer than 2)."""
        if len(self) < 2:
            return 0.0
        ring = self._ring
        oldest = (ring.head - ring.count) % ring.capacity
        return float(self.t_capture[ring.last()] - self.t_capture[oldest])

    @property
    def last_frame(self) -> int | None:
        """Index of the newest frame held (observed or not)."""
        return int(self.frame_index[self._ring.last()]) if len(self) else None

    def order(self) -> np.ndarray:
        """Slots of the frames held, oldest first (index the arrays with it)."""
        return self._ring.order()

    def latest(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Copies of ``(keypoints [V, 3], box [5])`` of the newest observed frame still held."""
        slot = self._last_observed_slot
        if slot is None:
            return None
        return self.keypoints[slot].copy(), self.box[slot].copy()

    def frames_since(self, t_after: float, limit: int = 64) -> list[tuple[float, np.ndarray, np.ndarray, int]]:
        """Copies of the observed frames captured after ``t_after``, oldest first, as ``(t_capture,
        keypoints [V, 3], box [5], frame_index)`` (at most the ``limit`` newest): what the fall
        logic has not seen yet when a window goes out."""
        order = self._ring.order()
        start = int(np.searchsorted(self.t_capture[order], t_after, side="right"))
        slots = order[start:][self.observed[order[start:]]][-limit:]
        return [(float(self.t_capture[k]), self.keypoints[k].copy(), self.box[k].copy(), int(self.frame_index[k]))
                for k in slots]

    def window_slots(self, t_from: float, t_to: float) -> tuple[np.ndarray, int]:
        """The slots, oldest first, of the frames from the first to the last observed frame
        with ``t_from <= t_capture <= t_to`` (frames in between that were not observed
        included), and how many of them were observed. Empty when none was."""
        order = self._ring.order()
        lo, hi, observed = window_span(self.t_capture[order], self.observed[order], t_from, t_to)
        return order[lo:hi], observed

    def _name(self) -> str:
        return f"stream {self.stream!r} track {self.track_id}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(stream={self.stream!r}, track_id={self.track_id}, frames={len(self)}/"
                f"{self.capacity}, last_seen={self.last_seen})")


def _clean_keypoints(keypoints: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.shape != shape:
        raise ValueError(f"{name}: keypoints must be {list(shape)} (x, y, score), got {list(kp.shape)}")
    bad = ~np.isfinite(kp).all(axis=1)
    if bad.any() or kp[:, 2].min() < 0 or kp[:, 2].max() > 1:
        kp = kp.copy()
        kp[bad] = 0.0
        np.clip(kp[:, 2], 0.0, 1.0, out=kp[:, 2])
    return kp


class StreamTracks:
    """The track histories of one stream, fed by the tracker frame by frame.

    ``update`` appends every confirmed track the tracker matched this frame (a skeleton), and
    a missing frame (zeros) for each confirmed track it lost, or matched to a box without a
    skeleton (keypoints None or all scores 0). A history starts with the track's first
    observed confirmed frame (tentative frames are not kept: the tracker is not yet sure they
    are a person). Histories hold ``history_s`` seconds at ``max_fps``; one not observed for
    more than ``keep_s`` seconds is dropped, and beyond ``max_tracks`` the least recently seen
    one goes. Also keeps the stream's own timeline of processed frames, on which the scene
    windows line persons up.
    """

    def __init__(self, stream: str = "", *, history_s: float = DEFAULT_HISTORY_S, max_fps: float = DEFAULT_MAX_FPS,
                 keep_s: float = DEFAULT_KEEP_S, max_tracks: int = DEFAULT_MAX_TRACKS,
                 num_keypoints: int = NUM_KEYPOINTS, img_shape: tuple[int, int] | None = None):
        if not keep_s > 0:
            raise ValueError(f"keep_s must be > 0, got {keep_s}")
        if max_tracks < 1:
            raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
        self.stream = stream
        self.capacity = history_capacity(history_s, max_fps)
        self.keep_s, self.max_tracks, self.num_keypoints = float(keep_s), int(max_tracks), int(num_keypoints)
        self.img_shape = img_shape
        self._histories: dict[Any, TrackHistory] = {}
        self._timeline = _Ring(self.capacity)
        self.timeline_frame = np.zeros(self.capacity, dtype=np.int64)
        self.timeline_t = np.zeros(self.capacity, dtype=np.float64)
        self.dropped_total = 0

    def update(self, tracks: Iterable[Any], frame_index: int, t_capture: float,
               img_shape: tuple[int, int] | None = None) -> list[Any]:
        """Record one processed frame: ``tracks`` as :meth:`ByteTracker.update` returned them
        (:class:`~posestream.realtime.tracker.Track` snapshots). ``img_shape`` ``(h, w)``
        (e.g. ``Frame.shape``), when given, is remembered for the windows. Returns the ids of
        the histories dropped by this call (forget their labels and state machines)."""
        frame_index, t_capture = int(frame_index), float(t_capture)
        if self._timeline.count:
            last = self._timeline.last()
            if frame_index <= self.timeline_frame[last]:
                raise ValueError(f"stream {self.stream!r}: frame_index must increase: got {frame_index} "
                                 f"after {int(self.timeline_frame[last])}")
        if img_shape is not None:
            self.img_shape = (int(img_shape[0]), int(img_shape[1]))
        slot = self._timeline.push()
        self.timeline_frame[slot], self.timeline_t[slot] = frame_index, t_capture

        for track in tracks:
            if track.state not in (CONFIRMED, LOST):
                continue
            keypoints = track.keypoints if track.time_since_update == 0 else None
            history = self._histories.get(track.track_id)
            if history is None:
                if keypoints is None or not np.any(np.asarray(keypoints)[:, 2] > 0):
                    continue  # nothing seen of it yet: no history to start
                history = self._new_history(track.track_id)
            history.img_shape = self.img_shape
            history.append(frame_index, t_capture, keypoints, track.box)
        return self._drop_stale(t_capture)

    def _new_history(self, track_id: Any) -> TrackHistory:
        if len(self._histories) >= self.max_tracks:
            oldest = min(self._histories, key=lambda k: self._histories[k].last_seen or -math.inf)
            del self._histories[oldest]
            self.dropped_total += 1
        history = TrackHistory(self.capacity, self.num_keypoints, stream=self.stream, track_id=track_id,
                               img_shape=self.img_shape)
        self._histories[track_id] = history
        return history

    def _drop_stale(self, now: float) -> list[Any]:
        stale = [k for k, h in self._histories.items() if h.last_seen is None or now - h.last_seen > self.keep_s]
        for k in stale:
            del self._histories[k]
        self.dropped_total += len(stale)
        return stale

    def active_ids(self, since: float | None = None) -> list[Any]:
        """Ids of the histories held (observed at or after ``since``, when given), sorted."""
        return sorted(k for k, h in self._histories.items() if since is None or h.last_seen >= since)

    def history(self, track_id: Any) -> TrackHistory | None:
        return self._histories.get(track_id)

    def histories(self) -> list[TrackHistory]:
        return [self._histories[k] for k in sorted(self._histories)]

    def timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """``(frame_index, t_capture)`` of the processed frames held, oldest first (copies)."""
        order = self._timeline.order()
        return self.timeline_frame[order], self.timeline_t[order]

    def __len__(self) -> int:
        return len(self._histories)

    def __contains__(self, track_id: Any) -> bool:
        return track_id in self._histories


# ----------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True, eq=False)
class WindowSample:
    """One window, ready for the batcher.

    ``keypoint`` float32 ``[M, clip_len, V, 2]`` on the ``size x size`` grid and ``score``
    float32 ``[M, clip_len, V]`` (exactly the validation pipeline's keypoints after
    ``Resize``); ``track_ids``: whose skeletons, in person order; ``first_frame`` /
    ``last_frame``: the stream frame indices the window spans; ``t_last_capture``: capture
    time of its last frame (frame-to-label latency is measured from it); ``num_frames``: frames
    in the window before sampling, ``num_observed``: of those, frames with a skeleton (for a
    scene: frames with anyone's); ``img_shape``: the stream's ``(h, w)`` (None if never told).
    """

    stream: str
    track_ids: tuple
    keypoint: np.ndarray
    score: np.ndarray
    first_frame: int
    last_frame: int
    t_first_capture: float
    t_last_capture: float
    img_shape: tuple[int, int] | None
    size: int
    num_frames: int
    num_observed: int


def _to_grid(keypoints: np.ndarray, size: int, img_shape: tuple[int, int] | None):
    """``[M, T, V, 3]`` image-pixel skeletons -> grid keypoints and scores, or None when the
    skeletons are too small to crop and the image size (which the grid then spans) is unknown."""
    keypoint, score = keypoints[..., :2], keypoints[..., 2]
    if img_shape is None and compact_box(keypoint, PADDING, THRESHOLD, HW_RATIO) is None:
        return None
    return window_to_grid(keypoint, score, size, img_shape=img_shape, padding=PADDING, threshold=THRESHOLD,
                          hw_ratio=HW_RATIO)


def _check_window(window_s: float, clip_len: int, size: int) -> None:
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    if clip_len < 1 or size < 1:
        raise ValueError(f"clip_len and size must be >= 1, got {clip_len}, {size}")


def sample_track_window(history: TrackHistory, now: float, window_s: float, clip_len: int, size: int,
                        min_frames: int = WINDOW_MIN_FRAMES, floor_frames: int = WINDOW_FLOOR_FRAMES,
                        min_span_s: float = WINDOW_MIN_SPAN_S) -> WindowSample | None:
    """The window of one track: its frames in ``[now - window_s, now]`` (capture times), from
    its first to its last observed frame there, uniformly sampled to ``clip_len`` frames as the
    validation pipeline samples a clip, on the ``size x size`` grid. None when its observed
    frames are not enough (:func:`posestream.engines.crop.window_is_enough`: ``min_frames``,
    or at least ``floor_frames`` spanning ``min_span_s`` seconds; or the skeletons are too
    small to crop and the history has no ``img_shape``)."""
    _check_window(window_s, clip_len, size)
    slots, observed = history.window_slots(now - window_s, now)
    span = float(history.t_capture[slots[-1]] - history.t_capture[slots[0]]) if len(slots) else 0.0
    if not window_is_enough(observed, span, min_frames, floor_frames, min_span_s):
        return None
    picked = slots[uniform_sample_indices(len(slots), clip_len)]
    grid = _to_grid(history.keypoints[picked][None], size, history.img_shape)
    if grid is None:
        return None
    first, last = slots[0], slots[-1]
    return WindowSample(stream=history.stream, track_ids=(history.track_id,), keypoint=grid[0], score=grid[1],
                        first_frame=int(history.frame_index[first]), last_frame=int(history.frame_index[last]),
                        t_first_capture=float(history.t_capture[first]),
                        t_last_capture=float(history.t_capture[last]), img_shape=history.img_shape, size=int(size),
                        num_frames=len(slots), num_observed=observed)


def sample_scene_window(stream_tracks: StreamTracks, now: float, window_s: float, clip_len: int, size: int,
                        max_persons: int = 2, min_frames: int = WINDOW_MIN_FRAMES,
                        floor_frames: int = WINDOW_FLOOR_FRAMES,
                        min_span_s: float = WINDOW_MIN_SPAN_S) -> WindowSample | None:
    """The window of a whole scene (all persons in one volume, as PoseConv3D does for NTU):
    the tracks observed in ``[now - window_s, now]``, most observed first (then by id), at most
    ``max_persons``; frames = the stream's processed frames from the first to the last frame
    anyone of them was observed; a person's missing frames are zeros; one common box over all
    of them. None when the most observed person's frames are not enough (as for a track:
    :func:`posestream.engines.crop.window_is_enough`)."""
    _check_window(window_s, clip_len, size)
    if max_persons < 1:
        raise ValueError(f"max_persons must be >= 1, got {max_persons}")
    persons = []
    for history in stream_tracks.histories():
        slots, observed = history.window_slots(now - window_s, now)
        if observed:
            persons.append((observed, history, slots))
    persons.sort(key=lambda p: -p[0])  # stable: equal counts stay in id order
    persons = persons[:max_persons]
    if not persons:
        return None
    top_observed, top, top_slots = persons[0]
    if not window_is_enough(top_observed, float(top.t_capture[top_slots[-1]] - top.t_capture[top_slots[0]]),
                            min_frames, floor_frames, min_span_s):
        return None

    # The scene's frames: the stream's processed frames between the persons' first and last.
    first = min(int(h.frame_index[s[0]]) for _, h, s in persons)
    last = max(int(h.frame_index[s[-1]]) for _, h, s in persons)
    frames, times = stream_tracks.timeline()
    lo, hi = np.searchsorted(frames, first, side="left"), np.searchsorted(frames, last, side="right")
    frames, times = frames[lo:hi], times[lo:hi]
    if not len(frames):  # histories fed without this StreamTracks' update: no timeline
        return None
    sampled = frames[uniform_sample_indices(len(frames), clip_len)]

    v = stream_tracks.num_keypoints
    keypoints = np.zeros((len(persons), clip_len, v, 3), dtype=np.float32)
    seen = np.zeros(len(frames), dtype=bool)
    for m, (_, history, slots) in enumerate(persons):
        own = history.frame_index[slots]  # sorted frame indices of this person's rows
        seen |= np.isin(frames, own[history.observed[slots]], assume_unique=True)
        pos = np.minimum(np.searchsorted(own, sampled), len(own) - 1)
        hit = own[pos] == sampled
        keypoints[m, hit] = history.keypoints[slots[pos[hit]]]
    grid = _to_grid(keypoints, size, stream_tracks.img_shape)
    if grid is None:
        return None
    return WindowSample(stream=stream_tracks.stream, track_ids=tuple(h.track_id for _, h, _ in persons),
                        keypoint=grid[0], score=grid[1], first_frame=int(frames[0]), last_frame=int(frames[-1]),
                        t_first_capture=float(times[0]), t_last_capture=float(times[-1]),
                        img_shape=stream_tracks.img_shape, size=int(size), num_frames=len(frames),
                        num_observed=int(seen.sum()))


class WindowScheduler:
    """When each track of a stream gets a window, and the window: every ``stride`` processed
    frames of a track that is seen in the current frame (a track the tracker lost keeps its
    history for a while, but a window ending in an old skeleton says nothing new), or one
    window per stream in ``scene`` mode. Each window comes with the track's observed frames
    since its previous window (:meth:`TrackHistory.frames_since`), for the fall logic.

    The runtime's stream workers and :mod:`posestream.realtime.replay` both schedule with it,
    so an offline replay cuts exactly the windows a live run would.
    """

    def __init__(self, *, clip_len: int, size: int, window_s: float = 3.0, stride: int = 8,
                 min_frames: int = WINDOW_MIN_FRAMES, mode: str = "track", scene_persons: int = 2,
                 floor_frames: int = WINDOW_FLOOR_FRAMES, min_span_s: float = WINDOW_MIN_SPAN_S):
        if mode not in ("track", "scene"):
            raise ValueError(f"mode must be 'track' or 'scene', got {mode!r}")
        _check_window(window_s, clip_len, size)
        if stride < 1 or min_frames < 1:
            raise ValueError(f"stride and min_frames must be >= 1, got {stride}, {min_frames}")
        self.clip_len, self.size, self.window_s = int(clip_len), int(size), float(window_s)
        self.stride, self.min_frames, self.mode, self.scene_persons = int(stride), int(min_frames), mode, scene_persons
        if floor_frames < 1 or not min_span_s >= 0:
            raise ValueError(f"floor_frames must be >= 1 and min_span_s >= 0, got {floor_frames}, {min_span_s}")
        self.minimum = {"min_frames": self.min_frames, "floor_frames": int(floor_frames),
                        "min_span_s": float(min_span_s)}
        self._since_window: dict[Any, int] = {}
        self._last_sent: dict[Any, float] = {}  # per track: t_capture of its last window's newest frame

    def due(self, tracks: StreamTracks, now: float) -> list[tuple[Any, WindowSample, list]]:
        """The windows due at ``now`` (the capture time of the frame just added to ``tracks``):
        ``(key, sample, frames)`` each, ``key`` a track id or ``"scene"``."""
        active = set(tracks.active_ids())
        for key in list(self._since_window):
            if key != "scene" and key not in active:
                del self._since_window[key]
                self._last_sent.pop(key, None)
        seen = [k for k in sorted(active) if tracks.history(k).last_seen == now]
        keys = (["scene"] if seen else []) if self.mode == "scene" else seen
        out = []
        for key in keys:
            since = self._since_window.get(key, self.stride) + 1
            self._since_window[key] = since
            if since < self.stride:
                continue
            if key == "scene":
                sample = sample_scene_window(tracks, now, self.window_s, self.clip_len, self.size,
                                             max_persons=self.scene_persons, **self.minimum)
                frames: list = []
            else:
                history = tracks.history(key)
                sample = sample_track_window(history, now, self.window_s, self.clip_len, self.size, **self.minimum)
                frames = history.frames_since(self._last_sent.get(key, -math.inf)) if sample is not None else []
            if sample is None:
                continue
            self._since_window[key] = 0
            self._last_sent[key] = now
            out.append((key, sample, frames))
        return out
