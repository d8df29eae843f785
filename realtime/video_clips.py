"""Skeleton datasets from videos: pose every frame, track the people, one PYSKL clip per track.

:func:`extract_clips` is what ``posestream pose VIDEO [VIDEO ...] --out clips.pkl`` runs. For
each video it reads every frame with OpenCV, runs the pose estimator on it (anything callable
as ``estimator(frame_bgr uint8 [H, W, 3]) -> list of PersonPose``, i.e. objects with ``.box``
``[5]`` and ``.keypoints`` ``[17, 3]``), tracks the people with a fresh tracker per video, and
turns each track into one clip of the PYSKL / MMAction2 format
(:mod:`posestream.train.data.clips`):

=================  ===========================================================================
``frame_dir``      ``<video stem>_track<id>`` (the stem gets ``_2``, ``_3``... when two videos
                   share it, so frame_dirs stay unique)
``keypoint``       float32 ``[1, T, 17, 2]`` (M = 1 person), T = the frames from the track's
                   first to its last detection; frames in between where the track was lost
                   hold zeros, as PYSKL stores a missing person
``keypoint_score`` float32 ``[1, T, 17]`` (zeros where lost)
``img_shape``,     ``(h, w)`` of the video
``original_shape``
``total_frames``   T
``label``          the ``label`` given (an int >= 0, as PYSKL needs); 0 when none is given
``video``,         extra fields (kept by the loaders, ignored by PYSKL): the video's path as
``start_frame``,   given, the index of the clip's first frame in it, the track id
``track_id``
=================  ===========================================================================

Tracks with fewer than ``min_frames`` detected frames are dropped, and so are tracks that
never got confirmed by the tracker. A detection whose keypoint scores are all 0 (a box the
pose model gave no skeleton for) counts as a missing frame. All clips go into one split, ``"all"`` by default.

The returned dict also has a ``"videos"`` entry, one summary per video (path, frames read, fps,
tracks seen, clips kept, overlay written); :func:`posestream.train.data.clips.save_dataset`
drops it and writes only ``split`` and ``annotations``.

``overlay=path.mp4`` also writes each video with the boxes, track ids and skeletons drawn
(OpenCV ``VideoWriter``, ``mp4v``), atomically: to a temporary file beside it, renamed when the
video is done. With several videos, each gets ``<overlay stem>_<video stem>.mp4`` beside
``overlay``.
"""
from __future__ import annotations

import colorsys
import functools
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from posestream.engines.draw import draw_skeleton
from posestream.realtime.tracker import CONFIRMED, LOST, ByteTracker, Track
from posestream.skeleton import NUM_KEYPOINTS

__all__ = [
    "VideoError",
    "NoClipsError",
    "extract_clips",
    "overlay_paths",
    "draw_tracks",
    "track_color",
    "DEFAULT_MIN_FRAMES",
]

#: Tracks detected in fewer frames than this are dropped (half a second at 30 fps).
DEFAULT_MIN_FRAMES = 15
#: Keypoints drawn on overlays need at least this score.
DRAW_KEYPOINT_THRESH = 0.3


class VideoError(ValueError):
    """A video cannot be read (or an overlay cannot be written); the message is one line
    that names the file."""


class NoClipsError(ValueError):
    """No track in any of the videos was long enough to make a clip."""


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ImportError("reading videos needs OpenCV: pip install 'opencv-python-headless<5'") from exc
    return cv2


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per track id (golden-ratio hue steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_tracks(frame: np.ndarray, tracks: Iterable[Track], *,
                keypoint_thresh: float = DRAW_KEYPOINT_THRESH) -> np.ndarray:
    """Draw boxes, track ids and COCO-17 skeletons on ``frame`` (BGR uint8, changed in place
    and returned). Lost tracks get a thin grey box at their predicted place; tentative ones a
    thin box in their colour."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    thick = max(1, round(min(h, w) / 240))
    for t in tracks:
        x1, y1, x2, y2 = (int(round(float(v))) for v in t.box[:4])
        if t.state == LOST:
            cv2.rectangle(frame, (x1, y1), (x2, y2), (128, 128, 128), 1)
            continue
        color = track_color(t.track_id)
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, thick if t.state == CONFIRMED else 1)
        cv2.putText(frame, f"#{t.track_id}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, color, thick, cv2.LINE_AA)
        if t.keypoints is not None:
            draw_skeleton(frame, t.keypoints, min_score=keypoint_thresh, thickness=thick, limb_color=color,
                          joint_color=(255, 255, 255), joint_radius=thick + 1)
    return frame


# --------------------------------------------------------------------------------------------
# Video in, video out
# --------------------------------------------------------------------------------------------


def _open_video(path: str):
    cv2 = _cv2()
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{path}: no such file")
    if p.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    cap = cv2.VideoCapture(os.fspath(p))
    if not cap.isOpened():
        cap.release()
        size = p.stat().st_size
        why = "empty file (0 bytes)" if size == 0 else "not a video OpenCV can read (unknown " \
                                                        "format, or a corrupt or truncated file)"
        raise VideoError(f"{path}: cannot open: {why}")
    return cap


class _OverlayWriter:
    """An mp4v VideoWriter into a temp file beside ``dest``, renamed over it on ``close()``."""

    def __init__(self, dest: Path, fps: float, size: tuple[int, int]):
        cv2 = _cv2()
        self.dest = dest
        self.size = size  # (w, h)
        # VideoWriter chooses the container by the extension, so the temp name keeps it.
        self.tmp = dest.parent / f".{dest.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{dest.suffix or '.mp4'}"
        self.writer = cv2.VideoWriter(os.fspath(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                      fps, size)
        if not self.writer.isOpened():
            self.writer.release()
            self._remove_tmp()
            raise VideoError(f"{dest}: cannot write the overlay video (mp4v; is the folder "
                             "writable and the name a .mp4?)")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = _cv2().resize(frame, self.size)
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        if not self.tmp.exists() or self.tmp.stat().st_size == 0:
            self._remove_tmp()
            raise VideoError(f"{self.dest}: the overlay video came out empty")
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        self.writer.release()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def overlay_paths(overlay: str | os.PathLike, videos: Sequence[str | os.PathLike]) -> list[Path]:
    """Where the overlay of each video goes: ``overlay`` itself for one video, else
    ``<overlay stem>_<video stem><suffix>`` beside it (``_2``, ``_3``... on repeated stems)."""
    overlay = Path(overlay)
    if len(videos) == 1:
        return [overlay]
    suffix = overlay.suffix or ".mp4"
    return [overlay.with_name(f"{overlay.stem}_{stem}{suffix}") for stem in _unique_stems(videos)]


def _unique_stems(videos: Sequence[str | os.PathLike]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for v in videos:
        stem = Path(v).stem or "video"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        stems.append(stem if n == 1 else f"{stem}_{n}")
    # a renamed stem may collide with a real one ("a_2" given twice and "a" twice): add more
    while len(set(stems)) != len(stems):
        taken: set[str] = set()
        for i, s in enumerate(stems):
            while s in taken:
                s += "_"
            taken.add(s)
            stems[i] = s
    return stems


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


class _TrackRecord:
    __slots__ = ("frames", "confirmed")

    def __init__(self) -> None:
        self.frames: dict[int, np.ndarray] = {}  # frame index -> keypoints [V, 3]
        self.confirmed = False


def _clean_keypoints(kp: Any, video: str, frame: int) -> np.ndarray:
    kp = np.asarray(kp, dtype=np.float32)
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ValueError(f"{video}: frame {frame}: the estimator gave keypoints of shape "
                         f"{kp.shape}, expected [{NUM_KEYPOINTS}, 3] (x, y, score)")
    bad = ~np.isfinite(kp).all(axis=1)
    if bad.any():  # a joint with a NaN/inf is a missing joint
        kp = kp.copy()
        kp[bad] = 0.0
    kp[:, 2] = np.clip(kp[:, 2], 0.0, 1.0)
    return kp


def _process_video(path: str, stem: str, estimator: Callable, tracker_factory: Callable,
                   label: int, min_frames: int, overlay: Path | None, progress: bool,
                   max_frames: int | None) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    cv2 = _cv2()
    cap = _open_video(path)
    writer: _OverlayWriter | None = None
    records: dict[int, _TrackRecord] = {}
    n_read = 0
    shape: tuple[int, int] | None = None
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fps_known = fps if np.isfinite(fps) and 0 < fps < 1000 else None
        total = count if count > 0 else None
        if max_frames is not None:
            total = max_frames if total is None else min(total, max_frames)
        tracker = tracker_factory(fps=fps_known)
        bar = tqdm(total=total, desc=Path(path).name, unit="frame", disable=not progress,
                   dynamic_ncols=True)
        with bar:
            while max_frames is None or n_read < max_frames:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                if shape is None:
                    shape = (int(frame.shape[0]), int(frame.shape[1]))
                    if overlay is not None:
                        writer = _OverlayWriter(overlay, fps_known or 30.0, (shape[1], shape[0]))
                index = n_read
                n_read += 1
                tracks = tracker.update(estimator(frame), frame_index=index)
                for t in tracks:
                    rec = records.get(t.track_id)
                    if rec is None:
                        rec = records[t.track_id] = _TrackRecord()
                    if t.state == CONFIRMED:
                        rec.confirmed = True
                    if t.keypoints is not None and t.time_since_update == 0:
                        kp = _clean_keypoints(t.keypoints, path, index)
                        if kp[:, 2].any():  # a box without a skeleton (all scores 0) is missing
                            rec.frames[index] = kp
                if writer is not None:
                    writer.write(draw_tracks(frame, tracks))
                bar.update(1)
        if n_read == 0:
            raise VideoError(f"{path}: no frames could be read (empty or corrupt video)")
        if writer is not None:
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        cap.release()

    assert shape is not None
    clips = []
    longest = 0
    for track_id in sorted(records):
        rec = records[track_id]
        if not rec.confirmed or not rec.frames:
            continue
        longest = max(longest, len(rec.frames))
        if len(rec.frames) < min_frames:
            continue
        frames = sorted(rec.frames)
        start, end = frames[0], frames[-1]
        t_len = end - start + 1
        v = rec.frames[start].shape[0]
        keypoint = np.zeros((1, t_len, v, 2), dtype=np.float32)
        score = np.zeros((1, t_len, v), dtype=np.float32)
        for f in frames:
            kp = rec.frames[f]
            if kp.shape[0] != v:
                raise ValueError(f"{path}: frame {f}: the estimator gave {kp.shape[0]} keypoints "
                                 f"after giving {v}")
            keypoint[0, f - start] = kp[:, :2]
            score[0, f - start] = kp[:, 2]
        clips.append({
            "frame_dir": f"{stem}_track{track_id}",
            "keypoint": keypoint,
            "keypoint_score": score,
            "img_shape": shape,
            "original_shape": shape,
            "total_frames": t_len,
            "label": label,
            "video": os.fspath(path),
            "start_frame": start,
            "track_id": track_id,
        })
    summary = {"path": os.fspath(path), "frames": n_read, "fps": fps_known,
               "img_shape": shape, "tracks": sum(r.confirmed for r in records.values()),
               "clips": len(clips), "longest_track": longest,
               "overlay": None if overlay is None else os.fspath(overlay)}
    return clips, summary


def extract_clips(videos: Sequence[str | os.PathLike] | str | os.PathLike, estimator: Callable, *,
                  label: int | None = None, min_frames: int = DEFAULT_MIN_FRAMES,
                  overlay: str | os.PathLike | None = None,
                  tracker_factory: Callable[..., Any] | None = None,
                  progress: bool = True, max_frames: int | None = None,
                  split: str = "all") -> dict:
    """Pose and track every video, and return a dataset dict for ``save_dataset``.

    ``estimator(frame_bgr)`` -> list of objects with ``.box`` ``[5]`` and ``.keypoints``
    ``[V, 3]``. ``tracker_factory(fps=...)`` makes one tracker per video (default: a
    :class:`~posestream.realtime.tracker.ByteTracker` with the score thresholds the estimator
    recommends in ``tracker_thresholds()``, when it has that method; ``fps`` is the video's,
    or None when the file does not say). ``label``: an int >= 0 given to every clip (default 0).
    ``min_frames``: tracks detected in fewer frames are dropped. ``max_frames``: read at most
    this many frames of each video. ``overlay``: see the module docstring.

    Raises :class:`VideoError` (one line naming the file) for a video that cannot be opened
    or has no frames, and :class:`NoClipsError` when no track anywhere is long enough.
    """
    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    videos = [os.fspath(v) for v in videos]
    if not videos:
        raise ValueError("no videos given")
    if label is None:
        label = 0
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or label < 0:
        raise ValueError(f"label must be an int >= 0 (PYSKL's class index), got {label!r}")
    label = int(label)
    if isinstance(min_frames, bool) or not isinstance(min_frames, (int, np.integer)) or min_frames < 1:
        raise ValueError(f"min_frames must be an int >= 1, got {min_frames!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
    # Fail on a missing file before spending minutes on the videos before it.
    for v in videos:
        if not Path(v).is_file():
            raise VideoError(f"{v}: no such file" if not Path(v).exists()
                             else f"{v}: is a directory, not a video file")
    overlays: list[Path | None] = (overlay_paths(overlay, videos) if overlay is not None
                                   else [None] * len(videos))

    if tracker_factory is None:
        thresholds = estimator.tracker_thresholds() if hasattr(estimator, "tracker_thresholds") else {}
        tracker_factory = functools.partial(ByteTracker, **thresholds)

    annotations: list[dict] = []
    summaries: list[dict] = []
    for path, stem, out in zip(videos, _unique_stems(videos), overlays):
        clips, summary = _process_video(path, stem, estimator, tracker_factory, label,
                                        int(min_frames), out, progress, max_frames)
        annotations.extend(clips)
        summaries.append(summary)
    if not annotations:
        longest = max(s["longest_track"] for s in summaries)
        names = ", ".join(videos[:3]) + (f" (and {len(videos) - 3} more)" if len(videos) > 3 else "")
        raise NoClipsError(f"{names}: no person track with at least {min_frames} detected frames "
                           f"(longest: {longest}); lower min_frames or check the videos")
    return {"split": {split: [c["frame_dir"] for c in annotations]},
            "annotations": annotations, "videos": summaries}
