"""The action classes of posestream's shipped models: what each one means, how they group for
the fall logic, and which label a window of time gets. One place for all of it: the
synthetic generator labels its clips and its served windows with :func:`window_label`, the
runtime's fall logic reads :data:`GROUPS`, and the model card lists :data:`DEFINITIONS`.

Definitions (one person; "floor" includes a bed or any surface the person lies on):

================  ===========================================================================
class             what it is, and what tells it apart from its neighbours
================  ===========================================================================
standing          upright on the feet, not travelling (weight shifts, turning on the spot,
                  gestures below the shoulders allowed); vs walking: no stepping progression.
walking           upright, travelling by steps with always one foot on the ground (0.3-2 m/s,
                  shuffling to brisk); vs running: no flight phase, a lower step rate.
running           travelling with flight phases (both feet off the ground in every stride),
                  jogging to sprinting: step rate above ~2.6 steps/s and long strides.
sitting_down      the transition from standing to sitting on a support (chair, bench, bed
                  edge, low stool, sofa) by flexing hips and knees under control; ends with
                  the hips on the support and the trunk upright or leaning back; vs squatting:
                  the hips stop on a support at seat height and stay there, the thighs end
                  near horizontal and the trunk comes back up; vs falling: controlled speed.
standing_up       the reverse: from sitting on a support to standing.
sitting           sitting on a support (or on the floor, cross-legged, on purpose), trunk
                  upright, leaning back or forward; vs lying: trunk within ~45 degrees of
                  vertical.
falling           an uncontrolled descent from upright (standing or walking) to the floor in
                  well under 1.5 s: tripping, slipping, fainting, being pushed, the legs
                  giving way; the label of a window that holds most of that descent.
lying             the body down on the floor with the trunk near horizontal (on the back,
                  front or a side, curled, knees up, propped on an elbow), still or moving,
                  however the person got there; the state after a fall.
picking_up        bending or squatting down until a hand reaches the floor (or near it) and
                  coming back up, within a few seconds; vs squatting: the hand goes to the
                  floor and the person rises again rather than staying down.
squatting         going down onto the feet with the knees deeply bent and staying there (or
                  repeated squats), no support under the hips, hands free (on the knees,
                  forward, clasped); vs sitting_down: no seat, the hips end at or below knee
                  height, the trunk leans forward.
jumping           both feet leave the ground by a push from the legs (single, repeated, forward
                  jumps, jumping jacks); the landing included.
waving            one or both arms raised above the shoulder and moving side to side (greeting,
                  calling for help), standing.
================  ===========================================================================

Windows: the runtime classifies the last ``window_s`` seconds of a track, so a window may hold
parts of several of these. :func:`window_label` decides, from a clip's timeline (who did what
when), the label a window gets — or None when the window is too mixed to say, which training
leaves out rather than teach a guess.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ACTIONS", "DEFINITIONS", "GROUPS", "EVENT_ACTIONS", "Segment", "window_label", "group_of"]

#: The class names of the shipped models, in label order.
ACTIONS: tuple[str, ...] = (
    "standing",
    "walking",
    "running",
    "sitting_down",
    "standing_up",
    "sitting",
    "falling",
    "lying",
    "picking_up",
    "squatting",
    "jumping",
    "waving",
)

#: One line per class (the table above), for model cards and ``posestream synth --list``.
DEFINITIONS: dict[str, str] = {
    "standing": "upright on the feet, not travelling",
    "walking": "upright, travelling by steps, always a foot on the ground",
    "running": "travelling with flight phases, high step rate",
    "sitting_down": "standing -> sitting on a support, under control",
    "standing_up": "sitting on a support -> standing",
    "sitting": "sitting on a support or on the floor on purpose, trunk up",
    "falling": "an uncontrolled descent from upright to the floor",
    "lying": "down on the floor with the trunk near horizontal (after a fall or not)",
    "picking_up": "bending or squatting until a hand reaches the floor, then back up",
    "squatting": "down on the feet, knees deeply bent, staying there; no seat",
    "jumping": "both feet leave the ground by a push of the legs",
    "waving": "an arm raised above the shoulder moving side to side",
}

#: How the fall logic reads the classes: ``fall`` (the descent), ``down`` (on the floor),
#: ``benign`` (a descent or a low posture that is not a fall), ``upright``.
GROUPS: dict[str, tuple[str, ...]] = {
    "fall": ("falling",),
    "down": ("lying",),
    "benign": ("sitting", "sitting_down", "squatting", "picking_up", "standing_up"),
    "upright": ("standing", "walking", "running", "waving", "jumping"),
}

#: Transitions: a window is labelled with one of these only when it holds most of it.
EVENT_ACTIONS: tuple[str, ...] = ("falling", "sitting_down", "standing_up", "picking_up", "jumping")

#: An event is the window's label when at least this fraction of it lies in the window ...
EVENT_COVERAGE = 0.6
#: ... and no other label is given while more than this fraction of an event is in it.
EVENT_AMBIGUOUS = 0.25
#: A state is the label when it fills at least this fraction of the window (events aside).
STATE_SHARE = 0.6


def group_of(label: str) -> str | None:
    """The :data:`GROUPS` key a class belongs to (None for a name of another label set)."""
    for group, names in GROUPS.items():
        if label in names:
            return group
    return None


@dataclass(frozen=True)
class Segment:
    """What one person does from ``start`` to ``end`` (seconds): an action name of
    :data:`ACTIONS`, or None for something no class describes (e.g. kneeling)."""

    label: str | None
    start: float
    end: float

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 0.0)

    def overlap(self, t0: float, t1: float) -> float:
        return max(0.0, min(self.end, t1) - max(self.start, t0))


def window_label(timeline: Sequence[Segment], t0: float, t1: float) -> str | None:
    """The label of the window ``[t0, t1]`` of a person whose ``timeline`` (segments in time
    order, covering the clip) is given, or None when the window is ambiguous.

    1. An event (:data:`EVENT_ACTIONS`) with at least :data:`EVENT_COVERAGE` of its duration
       inside the window is the label (the most covered one; ``falling`` wins ties).
    2. Otherwise, if any event has more than :data:`EVENT_AMBIGUOUS` of itself inside, the
       window is ambiguous (part of a fall is neither "falling" nor what came before).
    3. Otherwise the state (any other segment) covering the largest share of the window is
       the label if that share is at least :data:`STATE_SHARE`; else ambiguous. A segment
       with label None ("nothing we name") can win, and then the window is None too.
    """
    if not t1 > t0:
        raise ValueError(f"empty window [{t0}, {t1}]")
    best_event, best_cov = None, 0.0
    partial = False
    states: dict[str | None, float] = {}
    for seg in timeline:
        inside = seg.overlap(t0, t1)
        if inside <= 0:
            continue
        if seg.label in EVENT_ACTIONS:
            cov = inside / seg.duration if seg.duration > 0 else 1.0
            if cov >= EVENT_COVERAGE and (cov > best_cov or (cov == best_cov and seg.label == "falling")):
                best_event, best_cov = seg.label, cov
            elif cov > EVENT_AMBIGUOUS:
                partial = True
        else:
            states[seg.label] = states.get(seg.label, 0.0) + inside
    if best_event is not None:
        return best_event
    if partial or not states:
        return None
    label, share = max(states.items(), key=lambda kv: kv[1])
    return label if share >= STATE_SHARE * (t1 - t0) else None
