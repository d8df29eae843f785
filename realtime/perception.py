"""When a stream runs its person detector: :class:`DetectionSchedule`, and the same perception
loop the stream workers run, for one thread and a list of frames (:func:`perceive`: the tests
and ``benchmarks/detect_schedule.py`` measure the schedule with it).

Once a person has BlazePose landmarks, the next frame's crop can come from them (MediaPipe's
pose pipeline: the landmark model follows a person, the detector runs only to find one), so a
front end that can track by landmarks (``estimator.tracks_landmarks``, :meth:`MoveNetBlazePose.track
<posestream.engines.pose.MoveNetBlazePose.track>`) needs the detector only

* every ``every``-th processed frame (it finds people who walked in; MMPose's RTMPose
  real-time demo runs its detector every 5th frame),
* when nobody is being tracked (an empty scene can only be watched by the detector),
* on the frame after a tracked person's landmarks were lost (presence below the threshold:
  the person left, was occluded, or the crop slid off them),
* on a frame captured more than ``max_gap_s`` after the previous processed one: a person
  walks out of last frame's crop in that time (on vtest.avi, tracking every 5th frame missed
  5 % of the people at 0.1 s between frames, 7.5 % at 0.4 s and ~20 % at 0.65 s), so a stream
  too slow for that detects every frame, as it did before.

On a detection frame the people carried from the previous frame whom no detection overlaps
are looked for in their landmark crops as well (:meth:`MoveNetBlazePose.refine
<posestream.engines.pose.MoveNetBlazePose.refine>`), so a detector that misses someone for a
frame does not cost that person's skeleton.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from posestream.engines.pose import sanitize_people

__all__ = ["DetectionSchedule", "PerceptionResult", "perceive", "DEFAULT_DETECT_EVERY", "DEFAULT_MAX_GAP_S"]

#: The detector runs at least every this many processed frames (see README, "Detection
#: schedule", for the measurement on vtest.avi this default comes from).
DEFAULT_DETECT_EVERY = 5
#: ... and on every frame that comes more than this many seconds after the previous one.
DEFAULT_MAX_GAP_S = 0.3


class DetectionSchedule:
    """Whether the next processed frame of a stream goes to the detector (module docstring).

    ``every``: run the detector at least every this many frames (1: on every frame, as a front
    end that cannot track by landmarks always does). Two threads use it, under the stream
    worker's hand-off lock: the detect thread asks :meth:`reason` and :meth:`dispatch` es each
    frame (so the period counts frames as they are handed on), the pose thread
    :meth:`record` s what a frame gave (people tracked, tracked people lost) once it is done.
    A frame dispatched to the detector settles a loss at once and leaves "is anybody tracked"
    open until its outcome is recorded: the detect thread, asking meanwhile, then waits for that
    outcome instead of running the detector twice in a row. ``reasons`` counts why the detector
    ran: ``period``, ``empty`` (nobody tracked), ``lost`` (a track's landmarks were lost),
    ``gap`` (the frame came more than ``max_gap_s`` after the previous one).
    """

    def __init__(self, every: int = DEFAULT_DETECT_EVERY, max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"detect_every must be an integer >= 1, got {every!r}")
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0 seconds, got {max_gap_s!r}")
        self.every = int(every)
        self.max_gap_s = float(max_gap_s)
        self._t_last: float | None = None  # capture time of the last dispatched frame
        self._since = self.every  # frames dispatched since the last detection: the first detects
        self._tracked: int | None = 0  # None: a detection's outcome is not recorded yet
        self._lost = 0
        self.frames = 0
        self.detections = 0
        self.reasons = {"period": 0, "empty": 0, "lost": 0, "gap": 0}

    def reason(self, t_capture: float | None = None) -> str | None:
        """Why the next frame (captured at ``t_capture``, seconds; None: not known yet) needs
        the detector (``"period"``, ``"empty"``, ``"lost"``, ``"gap"``), or None when its
        people can be tracked by their landmarks (or when a detection's outcome is still
        pending: ask again once it is recorded)."""
        if self._since + 1 >= self.every:
            return "period"
        if t_capture is not None and self._t_last is not None and t_capture - self._t_last > self.max_gap_s:
            return "gap"
        if self._tracked == 0:
            return "empty"
        if self._lost:
            return "lost"
        return None

    def due(self) -> bool:
        return self.reason() is not None

    def dispatch(self, reason: str | None, t_capture: float | None = None) -> None:
        """A frame (captured at ``t_capture``) was handed on: to the detector (``reason``:
        why) or, None, to tracking."""
        self.frames += 1
        if t_capture is not None:
            self._t_last = float(t_capture)
        if reason is None:
            self._since += 1
            return
        self.detections += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self._since = 0
        self._lost = 0
        self._tracked = None

    def record(self, tracked: int, lost: int = 0) -> None:
        """A frame is done: it ended with ``tracked`` people (who can be followed into the
        next frame) and lost ``lost`` tracked people."""
        self._tracked, self._lost = int(tracked), int(lost)

    def stats(self) -> dict[str, Any]:
        return {"every": self.every, "max_gap_s": self.max_gap_s, "frames": self.frames, "detector_calls": self.detections,
                "detector_per_frame": round(self.detections / self.frames, 4) if self.frames else None,
                "reasons": dict(self.reasons)}


@dataclass
class PerceptionResult:
    """What :func:`perceive` saw: per frame the people kept, whether the detector ran, the
    time the frame took (seconds), and the schedule's counts."""

    people: list[list] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    schedule: dict[str, Any] = field(default_factory=dict)

    @property
    def people_per_frame(self) -> float:
        return float(np.mean([len(p) for p in self.people])) if self.people else 0.0

    @property
    def detector_per_frame(self) -> float:
        return float(np.mean(self.detected)) if self.detected else 0.0


def perceive(estimator: Any, frames: Iterable[np.ndarray], every: int = DEFAULT_DETECT_EVERY, fps: float = 10.0,
             max_gap_s: float = DEFAULT_MAX_GAP_S) -> PerceptionResult:
    """The stream worker's perception (schedule, detect or track, refine with the carried
    people, sanitize) on ``frames``, processed ``fps`` a second (their capture times are
    ``i / fps``), in one thread. A front end without landmark tracking detects every frame
    whatever ``every`` says."""
    tracking = bool(getattr(estimator, "tracks_landmarks", False))
    schedule = DetectionSchedule(every if tracking else 1, max_gap_s)
    out = PerceptionResult()
    carried: Sequence[Any] = []
    for i, image in enumerate(frames):
        t0 = time.perf_counter()
        reason = schedule.reason(i / fps)
        schedule.dispatch(reason, i / fps)
        lost = 0
        if reason is not None:
            people = sanitize_people(estimator.detect(image), image.shape[:2])[0]
            people = (estimator.refine(image, people, carried=carried) if tracking
                      else estimator.refine(image, people))
        else:
            people = estimator.track(image, carried)
            lost = estimator.lost
        people = sanitize_people(people, image.shape[:2])[0]
        schedule.record(len(people), lost)
        carried = people
        out.people.append(people)
        out.detected.append(reason is not None)
        out.seconds.append(time.perf_counter() - t0)
    out.schedule = schedule.stats()
    return out
