"""Event logic: from a stream of per-window class probabilities (and the latest skeletons) to
labels that do not flicker and to events worth telling someone about.

- :class:`LabelSmoother`: per track, an exponential moving average of the class
  probabilities over successive windows, and a displayed label with hysteresis.
- :class:`FallStateMachine`: per track, UPRIGHT -> FALLING -> DOWN -> (confirmed fall, one
  event) -> COOLDOWN -> RECOVERED, from the model's probabilities and the body's geometry.
- :class:`ActionEventRule`: an event when a configured label holds for long enough.
- :class:`EventLogic`: one per stream, owning all of the above for every track.
- :class:`Event`: the data contract, one JSON object per line.

Time: every ``t`` given to these classes is in seconds on one clock per stream (the runtime
passes the wall-clock time of the window's last captured frame); events carry it converted by
``to_epoch`` (identity by default) to epoch seconds and ISO 8601.

The fall rule (why it is shaped this way)
-----------------------------------------
A fall is a *transition*: an upright person goes down fast and stays down. Neither half alone
is a fall: lying in bed, or on the floor on purpose, is "down" without the fast descent, and
sitting down, squatting or picking something up is a fast descent without ending down. So:

1. **Onset** (UPRIGHT -> FALLING) needs the descent: the model's ``falling`` probability
   ``>= fall_threshold``, *or* the geometry of one: the hips' height above the body's lowest
   point falling by ``hip_drop`` of the person's upright height within ``drop_window_s``,
   while the body axis turns past ``horizontal_deg`` from vertical, from a body that looked
   upright within ``drop_window_s`` (someone lying and moving can "drop" their hips too).
   The geometric onset is ignored while the model says the descent is a benign one
   (``sitting_down``, ``sitting``, ``squatting``, ``picking_up``, ``standing_up`` above
   ``benign_threshold`` and above falling + lying): a camera on the ceiling can make someone
   sitting down look like that. After a fall that came to nothing, the next onset waits
   until the onset evidence has cleared once (a model stuck on "falling" for someone seated
   does not loop).
2. **Down** (FALLING -> DOWN) needs the end state within ``falling_timeout_s``: ``lying``
   probability ``>= lying_threshold``, or the body axis past ``horizontal_deg``, or the box
   wider than tall (``aspect >= down_aspect``), the geometric cues again unless the model
   says "benign". A FALLING that does not get there times out with no event (a stumble,
   a sit).
3. **Confirmation**: DOWN that lasts ``down_s`` without the person getting up (upright
   geometry for ``up_cancel_s``) or the model calling it benign is a fall. A fall the
   geometry alone started must also be corroborated by the model once it has classified a
   window since the onset (falling probability ``>= corroborate_threshold`` at some point:
   steep camera angles can make a walker's hips "drop" and axis "tilt"); with no model
   output at all, geometry decides by itself. A confirmed fall raises exactly one
   :class:`Event` (kind ``"fall"``), then COOLDOWN: however long the person stays down, no
   second fall event. Upright again for ``recover_s`` -> RECOVERED; ``cooldown_s`` after the
   event -> UPRIGHT. A new fall confirmed while the cooldown still runs is logged, not raised.
4. **The fallen state** (kind ``"fallen"``): still down ``fallen_s`` (20 s) after a fall was
   confirmed, without having been up for ``recover_s`` in between: the person is not getting
   up, what a carer most needs to know (OmniFall's taxonomy keeps the fall and the fallen
   state apart). One per fall.

Geometry a wrong label cannot veto (:meth:`FallStateMachine._strongly_down`): the trunk within
20 degrees of horizontal (or further, head down) with the hips low or the box well below the
person's own standing height, or the hips at the body's lowest point in a box at most 60 % of
that height. Real fallen people are often read as
``sitting`` by a model trained on synthetic data; this keeps such a model from cancelling a
fall (or keeping it from being confirmed) with "benign" when the body plainly lies on the floor.

Call rate: the runtime classifies a track every ``stride`` processed frames (at 3 to 30
processed frames a second) and hands the event logic every frame's posture since the
previous window with it (:meth:`EventLogic.on_result`), so the geometry is followed frame by
frame however rarely the model speaks; ``tests/test_events.py`` plays falls at that rate.

So ``lying`` probability alone never starts anything (DOWN is only reachable from FALLING),
and a person first seen already lying (who fell out of view) raises nothing either: the rule
prefers a missed alarm in that corner case to an alarm for everyone resting on a sofa.
Falling probabilities are the *smoothed* ones (``EventLogic`` feeds the smoother's output),
so one stray window does not start a fall. Every transition is logged at DEBUG with its reason.
"""
from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np

from posestream.actions import GROUPS

log = logging.getLogger(__name__)

__all__ = [
    "UPRIGHT",
    "FALLING",
    "DOWN",
    "COOLDOWN",
    "RECOVERED",
    "Event",
    "label_change",
    "Smoothed",
    "LabelSmoother",
    "BodyGeometry",
    "body_geometry",
    "FallStateMachine",
    "ActionEventRule",
    "WindowOutcome",
    "EventLogic",
]

#: Fall state machine states (plain strings: they print and compare simply).
UPRIGHT, FALLING, DOWN, COOLDOWN, RECOVERED = "upright", "falling", "down", "cooldown", "recovered"

# COCO-17 joints the geometry reads
_SHOULDERS, _HIPS, _ANKLES = (5, 6), (11, 12), (15, 16)


def _identity(t: float) -> float:
    return t


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")


def _jsonable(value: Any) -> Any:
    """Plain JSON values from numpy scalars/arrays, tuples and nested dicts."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Event:
    """Something worth telling: a confirmed fall, or an action that lasted.

    ``start`` / ``end``: epoch seconds (the fall's onset and its confirmation; an action's
    episode start and the moment it qualified); ``frame_index``: the stream frame the event was
    decided on; ``kind``: ``"fall"`` or ``"action"``; ``details``: free, JSON-able.
    """

    stream: str
    track_id: Any
    label: str
    score: float | None
    start: float
    end: float
    frame_index: int | None
    kind: str = "action"
    details: dict = field(default_factory=dict)

    @property
    def start_iso(self) -> str:
        return _iso(self.start)

    @property
    def end_iso(self) -> str:
        return _iso(self.end)

    def to_dict(self) -> dict[str, Any]:
        """The data contract: a JSON-able dict with stream, track_id, label, score, start/end
        (ISO 8601, UTC) and start_ts/end_ts (epoch seconds), frame_index, kind, details."""
        return {
            "kind": self.kind,
            "stream": self.stream,
            "track_id": _jsonable(self.track_id),
            "label": self.label,
            "score": None if self.score is None else round(float(self.score), 4),
            "start": self.start_iso,
            "end": self.end_iso,
            "start_ts": round(float(self.start), 3),
            "end_ts": round(float(self.end), 3),
            "frame_index": None if self.frame_index is None else int(self.frame_index),
            "details": _jsonable(self.details),
        }

    def to_json(self) -> str:
        """One line of JSON (no newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def label_change(stream: str, track_id: Any, label: str | None, score: float | None, t: float,
                 frame_index: int | None) -> dict[str, Any]:
    """The data contract of a label change: a track's (or scene's) displayed label became
    ``label`` (None: no label any more, the model is not sure) with smoothed ``score``, decided on
    the stream frame ``frame_index`` whose capture was at epoch ``t``."""
    return {
        "stream": stream,
        "track_id": _jsonable(track_id),
        "label": label,
        "score": None if label is None or score is None else round(float(score), 4),
        "time": _iso(t),
        "ts": round(float(t), 3),
        "frame_index": None if frame_index is None else int(frame_index),
    }


# ----------------------------------------------------------------------------------------------
# Label smoothing


class Smoothed(NamedTuple):
    """What :meth:`LabelSmoother.update` says: the displayed ``label`` index (None: unknown)
    and the smoothed probabilities ``probs`` ``[C]``."""

    label: int | None
    probs: np.ndarray

    @property
    def score(self) -> float:
        """The smoothed probability of the label (of the top class when there is none)."""
        return float(self.probs[self.label if self.label is not None else int(np.argmax(self.probs))])


class LabelSmoother:
    """Per track: ``smoothed = alpha * probs + (1 - alpha) * smoothed`` over successive
    windows (the first window is taken as is), and a displayed label with hysteresis.

    The label changes only when another class's smoothed probability exceeds the current
    label's by ``margin``; it becomes None ("unknown") when the current label's probability
    falls below ``min_score``. From None, the top class is taken once it reaches ``min_score``.
    """

    def __init__(self, alpha: float = 0.6, margin: float = 0.1, min_score: float = 0.3):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if margin < 0 or not 0 <= min_score <= 1:
            raise ValueError(f"margin must be >= 0 and min_score in [0, 1], got {margin}, {min_score}")
        self.alpha, self.margin, self.min_score = float(alpha), float(margin), float(min_score)
        self._state: dict[Any, tuple[np.ndarray, int | None]] = {}
        self.rejected = 0  #: windows whose probabilities were not finite (ignored)

    def update(self, track_id: Any, probs: np.ndarray) -> Smoothed:
        """Fold one window's ``probs`` ``[C]`` into the track's average. Probabilities that are
        not finite (or empty) are refused and counted in :attr:`rejected`: one NaN in a moving
        average stays there for good. The track's state is then left as it was, and what
        comes back is that state (no label and zeros for a track without one)."""
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        previous = self._state.get(track_id)
        if probs.size == 0 or not np.isfinite(probs).all():
            self.rejected += 1
            if previous is not None and previous[0].shape == probs.shape:
                return Smoothed(previous[1], previous[0].copy())
            return Smoothed(None, np.zeros(probs.shape, np.float64))
        if previous is None or previous[0].shape != probs.shape:  # new track (or a new model)
            smoothed, label = probs.copy(), None
        else:
            smoothed = self.alpha * probs + (1 - self.alpha) * previous[0]
            label = previous[1]
        if label is not None and smoothed[label] < self.min_score:
            label = None
        best = int(np.argmax(smoothed))
        if label is None:
            label = best if smoothed[best] >= self.min_score else None
        elif best != label and smoothed[best] >= smoothed[label] + self.margin:
            label = best
        self._state[track_id] = (smoothed, label)
        return Smoothed(label, smoothed.copy())

    def label(self, track_id: Any) -> int | None:
        state = self._state.get(track_id)
        return None if state is None else state[1]

    def forget(self, track_id: Any) -> None:
        self._state.pop(track_id, None)

    def __len__(self) -> int:
        return len(self._state)


# ----------------------------------------------------------------------------------------------
# Body geometry


@dataclass(frozen=True)
class BodyGeometry:
    """What one skeleton says about posture (image pixels, y down).

    ``axis_deg``: the body axis' angle from vertical, 0 = upright, 90 = horizontal, 180 =
    head down (hip midpoint -> shoulder midpoint; ankle midpoint -> hip midpoint when the
    shoulders are not seen); ``hip_y``: the hip midpoint's y; ``top``/``bottom``/``width``/
    ``height``: the box (the tracker's when given, else the visible keypoints' extent); any
    may be None when the joints it needs are not visible.
    """

    axis_deg: float | None
    hip_y: float | None
    top: float | None
    bottom: float | None
    width: float | None
    height: float | None

    @property
    def aspect(self) -> float | None:
        """Box width / height (> 1: wider than tall)."""
        if self.width is None or not self.height:
            return None
        return self.width / self.height


def _midpoint(kp: np.ndarray, joints: tuple[int, int], min_score: float) -> np.ndarray | None:
    seen = kp[list(joints), 2] >= min_score
    if not seen.any():
        return None
    return kp[list(joints), :2][seen].mean(axis=0)


def _angle_from_vertical(lower: np.ndarray, upper: np.ndarray) -> float | None:
    dx, dy = upper - lower
    if dx == 0 and dy == 0:
        return None
    return math.degrees(math.atan2(abs(dx), -dy))  # image y grows downward


def body_geometry(keypoints: np.ndarray | None, box: np.ndarray | None = None,
                  min_score: float = 0.3) -> BodyGeometry | None:
    """The posture cues of one skeleton ``[17, 3]`` (and its box ``[5]``); None without either."""
    if keypoints is None and box is None:
        return None
    axis = hip_y = None
    kp = None if keypoints is None else np.asarray(keypoints, dtype=np.float64)
    if kp is not None and (kp.shape[0] <= max(_ANKLES) or not np.isfinite(kp).all()):
        kp = None
    if kp is not None:
        shoulders = _midpoint(kp, _SHOULDERS, min_score)
        hips = _midpoint(kp, _HIPS, min_score)
        if hips is not None:
            hip_y = float(hips[1])
            if shoulders is not None:
                axis = _angle_from_vertical(hips, shoulders)
            else:
                ankles = _midpoint(kp, _ANKLES, min_score)
                if ankles is not None:
                    axis = _angle_from_vertical(ankles, hips)
    top = bottom = width = height = None
    b = None if box is None else np.asarray(box, dtype=np.float64).reshape(-1)
    if b is not None and b[2] > b[0] and b[3] > b[1]:
        top, bottom, width, height = float(b[1]), float(b[3]), float(b[2] - b[0]), float(b[3] - b[1])
    elif kp is not None:
        seen = kp[:, 2] >= min_score
        if seen.sum() >= 2:
            xy = kp[seen, :2]
            (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
            top, bottom, width, height = float(y0), float(y1), float(x1 - x0), float(y1 - y0)
    if height is not None and height <= 0:
        top = bottom = width = height = None
    return BodyGeometry(axis, hip_y, top, bottom, width, height)


# ----------------------------------------------------------------------------------------------
# Fall state machine


@dataclass
class _Cues:
    """Everything one update knows, in the machine's terms (None: not known)."""

    p_fall: float | None = None
    p_lying: float | None = None
    p_benign: float | None = None
    p_upright: float | None = None
    axis_deg: float | None = None
    hip_drop: float | None = None     # fall of hip_height within drop_window_s
    hip_height: float | None = None   # hips above the box bottom / upright height
    height_ratio: float | None = None  # box height / upright height
    aspect: float | None = None

    def describe(self) -> str:
        parts = [f"{k}={v:.2f}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts) or "no cues"


class FallStateMachine:
    """One track's fall detector (see the module docstring for the rule and why).

    ``update(t, probs, keypoints, box)`` once per classified window (``probs``: smoothed class
    probabilities by name) and, if wanted, once per frame with ``probs=None`` for the
    geometry; the latest probabilities stay in force for ``probs_ttl_s``. Returns the fall
    :class:`Event` on the update that confirms one, else None.

    Thresholds (defaults):

    - ``fall_threshold`` (0.5): smoothed falling probability that starts a fall;
    - ``lying_threshold`` (0.5): lying probability that counts as down;
    - ``benign_threshold`` (0.6): sitting/squatting/picking-up probability that vetoes the
      geometric cues;
    - ``upright_threshold`` (0.5): standing/walking/... probability taken as "up" when there
      is no skeleton to judge by;
    - ``corroborate_threshold`` (0.3): a fall started by the geometry alone is confirmed only
      if the model, once it has classified a window since the onset, gave falling at least
      this probability (a ceiling camera can make walking look like a drop);
    - ``hip_drop`` (0.25) within ``drop_window_s`` (1 s): how far the hips' height above the
      body's lowest point may fall, as a fraction of the person's upright height (the tallest
      box of the last ``ref_window_s`` = 5 s while upright), before it counts (with
      ``horizontal_deg``, and the body upright within ``drop_window_s``) as a geometric onset;
    - ``horizontal_deg`` (60): body axis this far from vertical is "horizontal";
      ``upright_deg`` (30): this close is "upright";
    - ``down_aspect`` (1.0): box width / height from which the body counts as down;
    - ``upright_hip`` (0.25): upright also needs the hips this high above the box bottom
      (relative to the upright height; sitting on the floor is not "up again");
    - ``falling_timeout_s`` (3): FALLING without reaching DOWN goes back, no event;
    - ``down_s`` (2): DOWN this long confirms the fall; ``up_cancel_s`` (1): upright this long
      in DOWN cancels it;
    - ``cooldown_s`` (30): no second fall event for this track within this time;
    - ``recover_s`` (3): upright this long after a fall -> RECOVERED;
    - ``probs_ttl_s`` (3): how long a window's probabilities stay valid;
    - ``strong_axis_deg`` (70) and ``floor_hip`` (0.12): geometry no label vetoes (see the
      module docstring): the axis this far from vertical with the hips within twice
      ``floor_hip`` (of the standing height) of the body's lowest point or the box at most
      0.65 of the standing height, or the hips within ``floor_hip`` of the lowest point in a
      box at most 0.6 of the standing height;
    - ``fallen_s`` (20): still down this long after a confirmed fall -> a ``fallen`` event;
    - ``min_keypoint_score`` (0.3): joints below it are not used;
    - ``fall_labels``, ``lying_labels``, ``benign_labels``, ``upright_labels``: which class
      names count as what (their probabilities are summed); the defaults are the names of the
      shipped synthetic models (:data:`posestream.train.data.synthetic.ACTIONS`), set them
      for a model trained on other classes.
    """

    def __init__(self, stream: str = "", track_id: Any = 0, *, fall_threshold: float = 0.5,
                 lying_threshold: float = 0.5, benign_threshold: float = 0.6, upright_threshold: float = 0.5,
                 corroborate_threshold: float = 0.3,
                 hip_drop: float = 0.25, drop_window_s: float = 1.0, ref_window_s: float = 5.0,
                 horizontal_deg: float = 60.0, upright_deg: float = 30.0, down_aspect: float = 1.0,
                 upright_hip: float = 0.25, falling_timeout_s: float = 3.0, down_s: float = 2.0,
                 up_cancel_s: float = 1.0, cooldown_s: float = 30.0, recover_s: float = 3.0,
                 probs_ttl_s: float = 3.0, min_keypoint_score: float = 0.3,
                 fall_labels: Sequence[str] = GROUPS["fall"], lying_labels: Sequence[str] = GROUPS["down"],
                 benign_labels: Sequence[str] = GROUPS["benign"], upright_labels: Sequence[str] = GROUPS["upright"],
                 strong_axis_deg: float = 70.0, floor_hip: float = 0.12, fallen_s: float = 20.0,
                 to_epoch: Callable[[float], float] | None = None):
        for name, value in (("drop_window_s", drop_window_s), ("ref_window_s", ref_window_s),
                            ("down_aspect", down_aspect)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (("falling_timeout_s", falling_timeout_s), ("down_s", down_s),
                            ("up_cancel_s", up_cancel_s), ("cooldown_s", cooldown_s), ("recover_s", recover_s),
                            ("probs_ttl_s", probs_ttl_s), ("fallen_s", fallen_s), ("floor_hip", floor_hip)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 <= upright_deg < horizontal_deg <= 180:
            raise ValueError(f"need 0 <= upright_deg < horizontal_deg <= 180, got {upright_deg}, {horizontal_deg}")
        self.stream, self.track_id = stream, track_id
        self.fall_threshold, self.lying_threshold = fall_threshold, lying_threshold
        self.benign_threshold, self.upright_threshold = benign_threshold, upright_threshold
        self.corroborate_threshold = corroborate_threshold
        self.hip_drop, self.drop_window_s, self.ref_window_s = hip_drop, drop_window_s, ref_window_s
        self.horizontal_deg, self.upright_deg = horizontal_deg, upright_deg
        self.down_aspect, self.upright_hip = down_aspect, upright_hip
        self.falling_timeout_s, self.down_s, self.up_cancel_s = falling_timeout_s, down_s, up_cancel_s
        self.cooldown_s, self.recover_s, self.probs_ttl_s = cooldown_s, recover_s, probs_ttl_s
        self.min_keypoint_score = min_keypoint_score
        self.strong_axis_deg, self.floor_hip, self.fallen_s = strong_axis_deg, floor_hip, fallen_s
        self.labels = {"fall": tuple(fall_labels), "lying": tuple(lying_labels),
                       "benign": tuple(benign_labels), "upright": tuple(upright_labels)}
        self.to_epoch = to_epoch or _identity

        self._state = UPRIGHT
        self._since = None             # when the current state was entered
        self._probs: dict[str, float] | None = None
        self._t_probs = -math.inf
        self._hips: deque[tuple[float, float]] = deque()     # (t, hip level), the last drop_window_s
        self._heights: deque[tuple[float, float]] = deque()  # (t, box height) while upright
        self._up_since: float | None = None                  # upright evidence began (DOWN/COOLDOWN)
        self._episode: dict[str, Any] = {}
        self._last_event_t: float | None = None
        self._frame_index: int | None = None
        self._t_now = -math.inf
        self._t_upright = -math.inf   # when the skeleton last looked upright
        self._armed = True            # a new onset may start (see _step)
        self._strong_since: float | None = None  # strong geometric "down" held since (DOWN)
        self._fallen_armed: float | None = None  # a confirmed fall's time, until its fallen event
        self.events_emitted = 0

    @property
    def state(self) -> str:
        return self._state

    @property
    def in_cooldown(self) -> bool:
        return self._last_event_t is not None and self._t_now - self._last_event_t < self.cooldown_s

    # --- inputs -------------------------------------------------------------------------------

    def update(self, t: float, probs: Mapping[str, float] | None = None, keypoints: np.ndarray | None = None,
               box: np.ndarray | None = None, frame_index: int | None = None) -> Event | None:
        t = float(t)
        self._t_now = t
        if frame_index is not None:
            self._frame_index = int(frame_index)
        if self._since is None:
            self._since = t
        if probs is not None:
            self._probs, self._t_probs = dict(probs), t
        cues = self._cues(t, body_geometry(keypoints, box, self.min_keypoint_score))
        return self._step(t, cues)

    def _prob(self, kind: str, t: float) -> float | None:
        if self._probs is None or t - self._t_probs > self.probs_ttl_s:
            return None
        return float(sum(self._probs.get(name, 0.0) for name in self.labels[kind]))

    def _cues(self, t: float, geometry: BodyGeometry | None) -> _Cues:
        cues = _Cues(p_fall=self._prob("fall", t), p_lying=self._prob("lying", t),
                     p_benign=self._prob("benign", t), p_upright=self._prob("upright", t))
        if geometry is None:
            return cues
        cues.axis_deg, cues.aspect = geometry.axis_deg, geometry.aspect
        if self._upright_posture(cues):
            self._t_upright = t
        # The upright height is the tallest box of the last ref_window_s while upright; it is
        # frozen while the person is down (their box shrinks, the reference must not).
        if geometry.height is not None and self._state in (UPRIGHT, RECOVERED):
            self._heights.append((t, geometry.height))
            while self._heights and t - self._heights[0][0] > self.ref_window_s:
                self._heights.popleft()
        reference = max((h for _, h in self._heights), default=None)
        if geometry.hip_y is None or not reference:
            return cues
        # The hips' height above the body's lowest point, not their image y: someone walking
        # toward a high camera moves down the image as a whole, a falling body's hips come
        # down to its feet (to the floor).
        if geometry.height is not None:
            cues.height_ratio = geometry.height / reference
        if geometry.bottom is not None:
            cues.hip_height = (geometry.bottom - geometry.hip_y) / reference
            level = cues.hip_height
        else:
            level = -geometry.hip_y / reference
        self._hips.append((t, level))
        while t - self._hips[0][0] > self.drop_window_s:
            self._hips.popleft()
        cues.hip_drop = max(h for _, h in self._hips) - level
        return cues

    # --- predicates ---------------------------------------------------------------------------

    def _benign(self, c: _Cues) -> bool:
        """The model explains a descent as something harmless (sitting down, squatting...)."""
        if c.p_benign is None:
            return False
        return c.p_benign >= self.benign_threshold and c.p_benign > (c.p_fall or 0) + (c.p_lying or 0)

    def _horizontal(self, c: _Cues) -> bool:
        return c.axis_deg is not None and c.axis_deg >= self.horizontal_deg

    def _strongly_down(self, c: _Cues) -> str | None:
        """Geometry no model label explains away: the trunk near horizontal with the hips low,
        or the hips at the body's lowest point in a box much lower than the person's standing
        height (lying across or along the view, sitting slumped on the floor). A model that
        reads a fallen person as "sitting" (real fallen people often are) cannot veto it."""
        low_hips = c.hip_height is not None and c.hip_height <= 2.0 * self.floor_hip
        low_box = c.height_ratio is not None and c.height_ratio <= 0.65
        if (c.axis_deg is not None and c.axis_deg >= self.strong_axis_deg
                and (low_hips or low_box or (c.hip_height is None and c.height_ratio is None))):
            return f"body axis {c.axis_deg:.0f} deg, low ({c.describe()})"
        if (c.hip_height is not None and c.hip_height <= self.floor_hip and c.height_ratio is not None
                and c.height_ratio <= 0.6):
            return (f"hips at the floor ({c.hip_height:.2f} of the standing height above the lowest point), "
                    f"{c.height_ratio:.2f} of the standing height tall")
        return None

    def _onset(self, c: _Cues) -> tuple[str, str] | None:
        """``(trigger, reason)`` of a fall's start, trigger "model" or "geometry"; None."""
        if c.p_fall is not None and c.p_fall >= self.fall_threshold:
            return "model", f"falling probability {c.p_fall:.2f} >= {self.fall_threshold}"
        # A geometric fall starts from a body seen upright moments ago: someone lying and
        # moving (rolling over, a restless sleeper) can make the same hip "drop".
        upright_lately = self._t_now - self._t_upright <= self.drop_window_s
        if (c.hip_drop is not None and c.hip_drop >= self.hip_drop and upright_lately
                and (self._strongly_down(c) or (self._horizontal(c) and not self._benign(c)))):
            axis = "?" if c.axis_deg is None else f"{c.axis_deg:.0f}"
            return "geometry", (f"hips dropped {c.hip_drop:.2f} of the upright height within "
                                f"{self.drop_window_s:g} s, body axis {axis} deg")
        return None

    def _down(self, c: _Cues) -> str | None:
        if c.p_lying is not None and c.p_lying >= self.lying_threshold:
            return f"lying probability {c.p_lying:.2f}"
        strong = self._strongly_down(c)
        if strong is not None:
            return strong
        if self._benign(c):
            return None
        if self._horizontal(c):
            return f"body axis {c.axis_deg:.0f} deg from vertical"
        if c.aspect is not None and c.aspect >= self.down_aspect:
            return f"box wider than tall ({c.aspect:.2f})"
        return None

    def _upright_posture(self, c: _Cues) -> bool:
        """The skeleton looks upright: axis near vertical, box not wide, hips not on the floor."""
        return (c.axis_deg is not None and c.axis_deg <= self.upright_deg
                and (c.aspect is None or c.aspect < self.down_aspect)
                and (c.hip_height is None or c.hip_height >= self.upright_hip))

    def _upright(self, c: _Cues) -> str | None:
        """Up again: by the skeleton when there is one, else by the model."""
        if c.axis_deg is not None:
            if self._upright_posture(c) and not (c.p_lying is not None and c.p_lying >= self.lying_threshold):
                return f"body axis {c.axis_deg:.0f} deg"
            return None
        if c.p_upright is not None and c.p_upright >= self.upright_threshold and self._down(c) is None:
            return f"upright probability {c.p_upright:.2f}"
        return None

    # --- transitions --------------------------------------------------------------------------

    def _go(self, t: float, state: str, reason: str) -> None:
        log.debug("stream %s track %s: %s -> %s at t=%.3f (%s)", self.stream, self.track_id, self._state, state,
                  t, reason)
        if self._state in (FALLING, DOWN) and state in (UPRIGHT, RECOVERED):
            self._armed = False  # a fall that came to nothing
        self._state, self._since, self._up_since, self._strong_since = state, t, None, None

    def _idle(self) -> str:
        """Where a track goes when nothing is happening: UPRIGHT, or RECOVERED in cooldown."""
        return RECOVERED if self.in_cooldown else UPRIGHT

    def _up_for(self, t: float, c: _Cues) -> float:
        """Seconds of uninterrupted upright evidence up to t (0 when not upright now)."""
        if self._upright(c) is None:
            self._up_since = None
            return 0.0
        if self._up_since is None:
            self._up_since = t
        return t - self._up_since

    def _step(self, t: float, c: _Cues) -> Event | None:
        state = self._state
        if state == RECOVERED and not self.in_cooldown:
            self._go(t, UPRIGHT, f"cooldown of {self.cooldown_s:g} s over")
            state = UPRIGHT
        if state in (UPRIGHT, RECOVERED):
            onset = self._onset(c)
            if onset is None or not self._armed:
                # after a fall that came to nothing, wait for its evidence to clear first: a
                # model that keeps saying "falling" to someone seated must not loop
                self._armed = onset is None
                return None
            trigger, reason = onset
            self._episode = {"t_onset": t, "frame_onset": self._frame_index, "onset": reason,
                             "peak": c.p_fall, "trigger": trigger}
            self._go(t, FALLING, reason)
            state = FALLING  # the same update may already show the person down
        if state == FALLING:
            self._note_peak(c)
            if self._benign(c) and self._strongly_down(c) is None:
                self._go(t, self._idle(), f"the model calls it benign (p={c.p_benign:.2f}): {c.describe()}")
                return None
            reason = self._down(c)
            if reason is not None:
                self._episode["t_down"] = t
                self._episode["down"] = reason
                self._go(t, DOWN, reason)
                state = DOWN
            elif t - self._since > self.falling_timeout_s:
                self._go(t, self._idle(), f"not down within {self.falling_timeout_s:g} s: {c.describe()}")
                return None
            else:
                return None
        if state == DOWN:
            self._note_peak(c)
            strong = self._strongly_down(c)
            if strong is None:
                self._strong_since = None
            elif self._strong_since is None:
                self._strong_since = t
            if self._benign(c) and strong is None:
                self._go(t, self._idle(), f"the model calls it benign (p={c.p_benign:.2f}): {c.describe()}")
                return None
            if self._up_for(t, c) >= self.up_cancel_s:
                self._go(t, self._idle(), f"up again for {self.up_cancel_s:g} s before confirmation: {c.describe()}")
                return None
            if t - self._since >= self.down_s and self._up_since is None:
                if not self._corroborated():
                    self._go(t, self._idle(), f"down for {self.down_s:g} s, but the model never saw a fall "
                                              f"(falling peak {self._episode.get('model_peak', 0):.2f}): "
                                              f"a geometric false alarm")
                    return None
                return self._confirm(t, c)
            return None
        if state == COOLDOWN:
            if self._up_for(t, c) >= self.recover_s:
                self._fallen_armed = None  # up again: not fallen
                self._go(t, RECOVERED, f"upright for {self.recover_s:g} s: {c.describe()}")
            elif (self._fallen_armed is not None and self._up_since is None
                  and t - self._fallen_armed >= self.fallen_s):
                return self._fallen(t, c)
        return None

    def _note_peak(self, c: _Cues) -> None:
        for p in (c.p_fall, c.p_lying if self._state == DOWN else None):
            if p is not None and (self._episode.get("peak") is None or p > self._episode["peak"]):
                self._episode["peak"] = p
        if self._t_probs > self._episode["t_onset"]:  # a window classified since the onset
            self._episode["model_peak"] = max(self._episode.get("model_peak", 0.0), c.p_fall or 0.0)

    def _corroborated(self) -> bool:
        """A fall the geometry started needs the model's agreement, when the model has
        spoken since: a falling probability of ``corroborate_threshold`` at some point (lying
        alone is no fall) — or geometry no label explains away (:meth:`_strongly_down`) for
        the whole of ``down_s``: the model may misread a real fallen person. Without fresh
        windows (no model, none classified yet) geometry decides."""
        episode = self._episode
        if episode["trigger"] != "geometry" or "model_peak" not in episode:
            return True
        if self._strong_since is not None and self._t_now - self._strong_since >= self.down_s:
            episode["corroboration"] = "geometry held"
            return True
        return episode["model_peak"] >= self.corroborate_threshold

    def _fallen(self, t: float, c: _Cues) -> Event:
        """The fallen state: ``fallen_s`` after a fall event the person is still down (not up
        again for ``recover_s``): what a carer most needs to know. One event per fall."""
        fell, self._fallen_armed = self._fallen_armed, None
        self.events_emitted += 1
        episode = self._episode
        log.debug("stream %s track %s: still down %.1f s after the fall: fallen", self.stream, self.track_id, t - fell)
        return Event(stream=self.stream, track_id=self.track_id, label="fallen", score=episode.get("peak"),
                     start=self.to_epoch(fell), end=self.to_epoch(t), frame_index=self._frame_index,
                     kind="fallen", details={"down_for_s": round(t - episode.get("t_down", fell), 3),
                                             "since_fall_s": round(t - fell, 3),
                                             "onset_frame": episode.get("frame_onset")})

    def _confirm(self, t: float, c: _Cues) -> Event | None:
        episode = self._episode
        down_for = t - episode["t_down"]
        if self.in_cooldown:
            self._go(t, COOLDOWN, f"down for {down_for:.1f} s, but a fall was raised "
                                  f"{t - self._last_event_t:.1f} s ago (cooldown {self.cooldown_s:g} s): no event")
            self._fallen_armed = t  # staying down after it is still worth a fallen-state event
            return None
        self._go(t, COOLDOWN, f"down for {down_for:.1f} s >= {self.down_s:g} s: fall confirmed")
        self._last_event_t = t
        self._fallen_armed = t
        self.events_emitted += 1
        details = {"trigger": episode["trigger"], "onset": episode["onset"], "down": episode["down"],
                   "onset_frame": episode["frame_onset"], "down_for_s": round(down_for, 3),
                   "fall_to_confirm_s": round(t - episode["t_onset"], 3)}
        if c.axis_deg is not None:
            details["axis_deg"] = round(c.axis_deg, 1)
        return Event(stream=self.stream, track_id=self.track_id, label="fall", score=episode.get("peak"),
                     start=self.to_epoch(episode["t_onset"]), end=self.to_epoch(t), frame_index=self._frame_index,
                     kind="fall", details=details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(stream={self.stream!r}, track_id={self.track_id}, state={self._state})"


# ----------------------------------------------------------------------------------------------
# Other actions


class ActionEventRule:
    """An event when ``label`` stays a track's (smoothed, displayed) label with score
    ``>= min_score`` for ``min_duration_s``: one event per episode (the label held without a
    break), and none within ``cooldown_s`` of the previous one for the same track."""

    def __init__(self, label: str, min_score: float = 0.6, min_duration_s: float = 1.0, cooldown_s: float = 30.0):
        if not label:
            raise ValueError("an action event rule needs a label")
        if min_duration_s < 0 or cooldown_s < 0:
            raise ValueError(f"min_duration_s and cooldown_s must be >= 0, got {min_duration_s}, {cooldown_s}")
        self.label, self.min_score = str(label), float(min_score)
        self.min_duration_s, self.cooldown_s = float(min_duration_s), float(cooldown_s)
        self._episodes: dict[Any, dict[str, Any]] = {}   # track -> running episode
        self._last_event: dict[Any, float] = {}          # track -> time of its last event

    def update(self, track_id: Any, t: float, label: str | None, score: float, *, stream: str = "",
               frame_index: int | None = None, to_epoch: Callable[[float], float] = _identity) -> Event | None:
        t = float(t)
        if label != self.label or score < self.min_score:
            self._episodes.pop(track_id, None)
            return None
        episode = self._episodes.setdefault(track_id, {"start": t, "peak": score, "emitted": False})
        episode["peak"] = max(episode["peak"], score)
        if episode["emitted"] or t - episode["start"] < self.min_duration_s:
            return None
        last = self._last_event.get(track_id)
        if last is not None and t - last < self.cooldown_s:
            return None  # the episode goes on; it may still qualify once the cooldown is over
        episode["emitted"] = True
        self._last_event[track_id] = t
        log.debug("stream %s track %s: action event %s (held %.1f s, peak %.2f)", stream, track_id, self.label,
                  t - episode["start"], episode["peak"])
        return Event(stream=stream, track_id=track_id, label=self.label, score=float(episode["peak"]),
                     start=to_epoch(episode["start"]), end=to_epoch(t), frame_index=frame_index, kind="action",
                     details={"held_s": round(t - episode["start"], 3)})

    def forget(self, track_id: Any) -> None:
        self._episodes.pop(track_id, None)
        self._last_event.pop(track_id, None)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(label={self.label!r}, min_score={self.min_score}, "
                f"min_duration_s={self.min_duration_s}, cooldown_s={self.cooldown_s})")


# ----------------------------------------------------------------------------------------------
# Per stream


class WindowOutcome(NamedTuple):
    """What :meth:`EventLogic.on_window` returns: the events raised, and the displayed label
    ``(name, smoothed score)`` or None when it is unknown."""

    events: list[Event]
    label: tuple[str, float] | None


class EventLogic:
    """One stream's event logic: a :class:`LabelSmoother`, a :class:`FallStateMachine` per
    track (created on first sight, with the ``fall`` keyword arguments) and the action event
    rules (:class:`ActionEventRule` objects or their keyword-argument dicts).

    ``class_names`` name the model's outputs (a call may override them). ``to_epoch`` turns the
    caller's ``t`` into epoch seconds for the events (identity: ``t`` already is).
    ``detect_falls=False`` leaves the fall state machines out. Not thread-safe: one thread
    (the runtime's events thread) makes every call, ``forget`` included.
    """

    def __init__(self, stream: str, class_names: Sequence[str] | None = None, *, smooth_alpha: float = 0.6,
                 smooth_margin: float = 0.1, min_score: float = 0.3, fall: Mapping[str, Any] | None = None,
                 action_rules: Iterable[ActionEventRule | Mapping[str, Any]] = (),
                 to_epoch: Callable[[float], float] | None = None, detect_falls: bool = True):
        self.stream = stream
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.smoother = LabelSmoother(smooth_alpha, smooth_margin, min_score)
        self.fall_settings = dict(fall or {})
        FallStateMachine(**self.fall_settings)  # fail now, naming the bad setting, not at the first track
        self.rules = [r if isinstance(r, ActionEventRule) else ActionEventRule(**r) for r in action_rules]
        self.to_epoch = to_epoch or _identity
        self.detect_falls = detect_falls
        self._falls: dict[Any, FallStateMachine] = {}

    def fall_machine(self, track_id: Any) -> FallStateMachine:
        machine = self._falls.get(track_id)
        if machine is None:
            machine = self._falls[track_id] = FallStateMachine(self.stream, track_id, to_epoch=self.to_epoch,
                                                               **self.fall_settings)
        return machine

    def on_window(self, track_id: Any, t: float, probs: np.ndarray, class_names: Sequence[str] | None = None,
                  keypoints: np.ndarray | None = None, box: np.ndarray | None = None,
                  frame_index: int | None = None) -> WindowOutcome:
        """One classified window of ``track_id`` (``probs`` ``[C]``, softmaxed) whose last frame
        was at ``t``; ``keypoints`` ``[17, 3]`` / ``box`` ``[5]``: the track's latest skeleton."""
        names = list(class_names) if class_names is not None else self.class_names
        smoothed = self.smoother.update(track_id, probs)
        if names is None:
            names = [str(i) for i in range(len(smoothed.probs))]
        if len(names) != len(smoothed.probs):
            raise ValueError(f"stream {self.stream!r}: {len(smoothed.probs)} probabilities for {len(names)} class names")
        label = None if smoothed.label is None else (names[smoothed.label], smoothed.score)
        events: list[Event] = []
        if self.detect_falls:
            # a window the smoother refused says nothing about the action: geometry only
            finite = np.isfinite(np.asarray(probs, dtype=np.float64)).all()
            by_name = dict(zip(names, smoothed.probs.tolist())) if finite and len(smoothed.probs) else None
            event = self.fall_machine(track_id).update(t, by_name, keypoints, box, frame_index)
            if event is not None:
                events.append(event)
        for rule in self.rules:
            event = rule.update(track_id, t, None if label is None else label[0], 0.0 if label is None else label[1],
                                stream=self.stream, frame_index=frame_index, to_epoch=self.to_epoch)
            if event is not None:
                events.append(event)
        return WindowOutcome(events, label)

    def on_result(self, key: Any, t: float, t_last_capture: float, probs: np.ndarray, frames: Sequence | None,
                  frame_index: int | None = None) -> WindowOutcome:
        """One classified window as the runtime delivers it: ``t`` the time (events' clock) of
        its newest frame, captured at ``t_last_capture`` (the capture clock), ``frames`` the
        track's ``(t_capture, keypoints, box, frame_index)`` since its previous window (None or
        empty for a scene window). The fall logic sees each of those frames' postures, moved
        onto the events' clock, then the window's probabilities with the newest skeleton."""
        frames = list(frames or [])
        events = self.on_frames(key, [(t - (t_last_capture - tc), kp, box, index) for tc, kp, box, index in frames[:-1]])
        keypoints, box = (frames[-1][1], frames[-1][2]) if frames else (None, None)
        outcome = self.on_window(key, t, probs, keypoints=keypoints, box=box, frame_index=frame_index)
        return WindowOutcome(events + outcome.events, outcome.label)

    def on_frame(self, track_id: Any, t: float, keypoints: np.ndarray | None, box: np.ndarray | None = None,
                 frame_index: int | None = None) -> list[Event]:
        """A geometry-only update of the track's fall state machine (one processed frame)."""
        if not self.detect_falls:
            return []
        event = self.fall_machine(track_id).update(t, None, keypoints, box, frame_index)
        return [] if event is None else [event]

    def on_frames(self, track_id: Any, frames: Iterable[tuple[float, np.ndarray | None, np.ndarray | None, int | None]]
                  ) -> list[Event]:
        """Geometry-only updates for the track's frames since its previous window, ``(t,
        keypoints, box, frame_index)`` each, oldest first: the runtime hands them over with
        each window (:class:`~posestream.realtime.windows.TrackHistory.frames_since`), so the
        fall logic sees every processed frame's posture however rarely windows are
        classified (every ``stride`` frames, at 3 to 30 processed frames a second)."""
        events: list[Event] = []
        for t, keypoints, box, frame_index in frames:
            events.extend(self.on_frame(track_id, t, keypoints, box, frame_index))
        return events

    def forget(self, track_id: Any) -> None:
        """Drop everything about a track (the tracker gave it up)."""
        self.smoother.forget(track_id)
        self._falls.pop(track_id, None)
        for rule in self.rules:
            rule.forget(track_id)

    def state(self, track_id: Any) -> str | None:
        machine = self._falls.get(track_id)
        return None if machine is None else machine.state
