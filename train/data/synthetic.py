"""Synthetic labelled skeleton clips: a 3D articulated human, parametrised everyday actions and
falls, a pinhole camera, and the noise of a top-down 2D pose estimator.

This is the training data of the shipped default models (fall detection / everyday actions on
webcams and ceiling-mounted surveillance cameras), so that posestream works with no download.

Pipeline of one clip (:func:`generate_clip`)
--------------------------------------------
1. **Subject** (:func:`sample_subject`): body proportions (stature 1.48-1.98 m, every segment
   length, shoulder/hip widths, head size, each varied on top of anthropometric ratios) and a
   motion *style* (tempo, walking speed and cadence, arm swing, stoop, sway, fidgeting,
   dominant hand, rest posture). The train/val split of :func:`generate_dataset` is by subject.
2. **Motion**: every action is a function of time built from random parameters (speed,
   amplitude, timing, direction, onset within the clip, variant), never a replayed template.
   It drives ~30 joint-angle channels (trunk flexion/lateral bend/twist, neck, head; shoulder
   flexion/abduction/rotation and elbow per arm; hip flexion/abduction/rotation and knee per
   leg) and the root (heading ``yaw``, whole-body ``pitch``/``roll``/``spin``, airborne
   ``lift``, and a floor ``anchor``).
3. **Forward kinematics** of a kinematic chain (mid-hip root -> spine -> shoulder line ->
   neck -> head with nose/eyes/ears; shoulders -> elbows -> wrists; hips -> knees -> ankles)
   gives COCO-17 joints in 3D. World frame: metres, z up, floor at z = 0. The body is placed
   on the floor by a contact rule: the lowest joint of the trunk, head and legs rests on the
   floor (ankles 4 % of stature above it, the nose 1 cm; hands and elbows rest on the floor
   rather than prop the body up), and horizontally the supporting foot is locked to the
   floor (no foot skating: walking speed comes from the stride; the body pivots over its
   feet when it falls), or for lying the pelvis follows a floor anchor.
4. **Camera** (:func:`sample_camera`): pinhole with mild radial distortion; kinds ``level``
   (webcam/tripod at 0.6-1.9 m), ``elevated`` (wall mount, 15-35 degrees down) and
   ``ceiling`` (2.4-4.5 m high, 30-70 degrees down); any azimuth around the person; distance
   from the person's size in the image; horizontal FOV 50-110 degrees; image sizes 640x480,
   768x576, 1280x720, 1920x1080, 640x360; the person anywhere in the frame, sometimes cut by
   its border.
5. **Estimator noise** (:func:`estimator_noise`), see below, then PYSKL arrays.

Actions (:data:`ACTIONS`; ``variant`` names in :data:`VARIANTS`)
---------------------------------------------------------------
``standing``      idle: sway, weight shifts, looking around, arm postures (arms down, hands
                  clasped, on hips, crossed, behind, in pockets, phone), small turns with steps.
``walking``       gait cycle (hip/knee/arm phase relations, cadence 0.7-1.2 Hz, speed
                  0.5-1.7 m/s from the subject) on a straight or curved path, starting,
                  stopping or turning around within the clip.
``running``       the gait with running kinematics (cadence 1.3-1.6 Hz, 2-4.5 m/s, flexed
                  elbows, forward lean, flight phases).
``sitting_down``  standing -> seated in 0.9-2.0 s: forward lean, hip/knee flexion, arms
                  reaching back for the seat or not, optional turn first; chair height varies.
``standing_up``   seated -> standing in 0.9-2.2 s: lean forward, push on thighs/armrests or
                  swing arms, then extend.
``sitting``       seated idle (upright, leaning back or forward), hands on lap/armrests/phone.
``falling``       standing or walking, then at a random onset a 0.45-1.0 s collapse: the body
                  axis rotates to horizontal with an accelerating (pendulum-like) profile,
                  knees buckle, hips drop to the floor, arms brace or flail, a small rebound,
                  then lying (still or moving) to the end of the clip. Directions ``forward``
                  (trip), ``backward`` (slip: sits back first), ``left``/``right`` (sideways),
                  ``collapse`` (faint: knees fold first, then tips over); variant
                  ``"<direction>-from-<standing|walking>"``; from walking the momentum carries on.
``lying``         on the back, front or either side, limbs in resting configurations, still or
                  moving, sometimes rolling over.
``picking_up``    bend down (stoop, squat or half-squat style), one or both hands reach to the
                  floor, hold, come back up, maybe holding the object.
``squatting``     squat down and hold, or repeated squats (1.4-3 s period), arms forward,
                  clasped or on knees.
``jumping``       countermovement, take-off, flight (0.25-0.5 s, height from g), landing:
                  single, repeated, forward jump or jumping jacks.
``waving``        one arm (forearm swinging side to side), overhead, or both arms overhead
                  (help signal) at 1-3 Hz, mostly facing the camera.

Noise model (a top-down estimator such as HRNet on detector boxes)
-----------------------------------------------------------------
Scores start at a per-person quality (0.78-0.95) plus per-joint offsets (face and shoulders
more confident, wrists and ankles less), drifting and jittering over time, and drop for:
self-occlusion (the far side of the body from the camera; the face seen from behind), small
persons, horizontal (lying) bodies, joints outside the image (score 0.02-0.3, coordinates
kept outside), and missed joints (runs of 1-4 frames with score 0.05-0.35 whose coordinates
jump away or onto a confusable joint, e.g. the other wrist). Coordinate jitter is temporally
correlated and its standard deviation, relative to the person's size, is
``sigma0 + sigma1 * (1 - score) ** 1.5`` (so it grows as scores drop) plus a floor in pixels,
and a shared per-frame box jitter. Left/right pairs (whole body, legs, arms or ankles) swap,
mostly for one frame, more often for small people and for lying bodies. Track
gaps: frames where a person is missing (undetected, more often the smaller, mostly outside the
frame, or behind the camera) hold zeros in both ``keypoint`` and ``keypoint_score``, as
PYSKL's pickles store missing persons. The amplitudes, swap and gap rates by person size, the
hip/shoulder convention and the ``confident`` score style's shares come from the default front
end's errors measured on real footage (``benchmarks/front_end_errors.py`` on vtest.avi,
``train/data/front_end_measured.json``; the comments at ``_SWAP_RATE_70PX`` say which figure
sets which parameter), and ``tests/test_synthetic.py`` checks the generator against them. Half
the walking and running clips report the knees and ankles closer together than they are, as
that front end draws real walkers' legs (``FRONT_END_LEG_SWING``). Optional
bystanders (a second person, ``M = 2``) stand, walk or sit elsewhere in the scene.

Dataset format
--------------
Each clip is a PYSKL annotation dict (``keypoint [M, T, 17, 2]`` float32 image pixels,
``keypoint_score [M, T, 17]`` float32, ``img_shape``/``original_shape`` ``(h, w)``,
``total_frames``, ``label``, ``frame_dir``) with these extra fields, all plain Python values:
``class_names`` (the ordered class-name tuple that ``label`` indexes), ``action``,
``variant``, ``subject`` (e.g. ``"S0012"``), ``fps``, ``action_frames`` (first and last frame
of the labelled event: the fall from onset to impact, a transition, or the whole clip for
ongoing actions), ``camera`` (``kind``, ``height`` m, ``pitch_deg`` below the horizon,
``hfov_deg``, ``focal`` px, ``k1``, ``distance`` m) and ``actor`` (the person index doing
the labelled action: always 0; a bystander is index 1). Clips last 1.5-6 s (at least
1.6-2.2 s for actions with a transition, so it fits) at 10-30 fps. :func:`generate_dataset` also returns ``class_names`` at the top level (dropped by
``save_dataset``, which keeps only ``split`` and ``annotations``).

Everything is deterministic for a seed: the same seed gives byte-identical arrays (on the
same numpy build).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from posestream.actions import ACTIONS as _ACTIONS
from posestream.actions import Segment
from posestream.skeleton import NUM_KEYPOINTS

__all__ = [
    "ACTIONS",
    "VARIANTS",
    "Body",
    "Style",
    "Subject",
    "Camera",
    "Motion",
    "sample_subject",
    "sample_camera",
    "look_at",
    "forward_kinematics",
    "world_joints",
    "estimator_noise",
    "generate_clip",
    "generate_dataset",
]

#: The class names, in label order (defined, with what tells them apart, in
#: :mod:`posestream.actions`).
ACTIONS: tuple[str, ...] = _ACTIONS

#: Body families (:func:`sample_subject`): children 1.0-1.45 m with a child's proportions,
#: adults 1.48-1.98 m, and large adults (broad, heavy-set).
BODY_FAMILIES = ("child", "adult", "large")
#: Motion-style families: slow shuffling walkers (short steps, feet low, little arm swing),
#: typical, brisk.
STYLE_FAMILIES = ("shuffle", "typical", "brisk")

_FALL_DIRECTIONS = ("forward", "backward", "left", "right", "collapse")
#: Fall families (``generate_clip(..., fall_families=...)``): ``kinematic`` (the hand-animated
#: falls and lying postures) and each physics scenario of :mod:`posestream.train.data.ragdoll`.
_PHYSICS_FALLS = ("trip", "slip", "push", "faint", "knees", "slump", "sideways")
FALL_FAMILIES = ("kinematic",) + _PHYSICS_FALLS
#: How often a fall or a lying clip is simulated (when MuJoCo is installed and a physics
#: family is allowed) rather than hand-animated.
PHYSICS_SHARE = 0.65

#: Variants each action draws from (``generate_clip(..., variant=...)`` picks one).
VARIANTS: dict[str, tuple[str, ...]] = {
    "standing": ("arms_down", "hands_front", "hands_on_hips", "arms_crossed", "hands_behind",
                 "pockets", "phone"),
    "walking": ("straight", "curve", "start", "stop", "turn"),
    "running": ("straight", "curve", "start", "stop"),
    "sitting_down": ("chair", "low_seat", "reach_back", "turn_and_sit"),
    "standing_up": ("push_thighs", "armrests", "arm_swing"),
    "sitting": ("upright", "leaning_back", "leaning_forward", "phone"),
    # "<direction>-from-<before>" (hand-animated) and "<scenario>-from-<before>" (physics)
    "falling": tuple(f"{d}-from-{p}" for p in ("standing", "walking") for d in _FALL_DIRECTIONS + _PHYSICS_FALLS),
    # "fallen-<scenario>": the resting posture of a simulated fall of that scenario
    # "lie_down": lying down on purpose (down to the floor, a moment sitting, reclining)
    "lying": ("back", "front", "left", "right", "rolling", "lie_down") + tuple(f"fallen-{sc}" for sc in _PHYSICS_FALLS),
    "picking_up": ("stoop", "squat", "half"),
    "squatting": ("hold", "reps"),
    "jumping": ("single", "repeated", "forward", "jacks"),
    "waving": ("one_arm", "overhead", "both_arms"),
}

_TAU = 2.0 * math.pi
_HALF_PI = 0.5 * math.pi

# COCO-17 indices used below.
_NOSE, _LEYE, _REYE, _LEAR, _REAR = 0, 1, 2, 3, 4
_LSHO, _RSHO, _LELB, _RELB, _LWRI, _RWRI = 5, 6, 7, 8, 9, 10
_LHIP, _RHIP, _LKNE, _RKNE, _LANK, _RANK = 11, 12, 13, 14, 15, 16

_FPS_CHOICES = np.array([10, 12, 15, 20, 24, 25, 30], dtype=np.float64)
_FPS_WEIGHTS = np.array([0.1, 0.05, 0.2, 0.1, 0.1, 0.2, 0.25])
_IMAGE_SHAPES = ((480, 640), (576, 768), (720, 1280), (1080, 1920), (360, 640))
_IMAGE_WEIGHTS = np.array([0.3, 0.12, 0.28, 0.22, 0.08])
_MIN_DURATION = {"sitting_down": 2.2, "standing_up": 2.2, "picking_up": 2.2, "falling": 1.8,
                 "lying": 1.5, "squatting": 1.8, "jumping": 1.6}


# ============================================================================================
# Small maths
# ============================================================================================


def _rot(axis: int, angle) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` about x (0), y (1) or z (2) by ``angle`` (radians)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    r = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[..., axis, axis] = 1.0
    r[..., i, i] = c
    r[..., j, j] = c
    r[..., i, j] = -s
    r[..., j, i] = s
    return r


def _smooth(x) -> np.ndarray:
    """Smoothstep of x clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ramp(t: np.ndarray, t0: float, dur: float) -> np.ndarray:
    """0 before t0, smoothly 1 after t0 + dur."""
    return _smooth((t - t0) / max(dur, 1e-6))


def _pulse(t: np.ndarray, t0: float, up: float, hold: float, down: float) -> np.ndarray:
    """Smooth rise over ``up`` from t0, ``hold``, smooth fall over ``down``."""
    return _ramp(t, t0, up) * (1.0 - _ramp(t, t0 + up + hold, down))


def _hump(t: np.ndarray, t0: float, dur: float, power: float = 2.0) -> np.ndarray:
    """sin(pi u) ** power for u = (t - t0) / dur in [0, 1], 0 outside: a bump peaking mid-way."""
    u = np.clip((t - t0) / max(dur, 1e-6), 0.0, 1.0)
    return np.sin(np.pi * u) ** power


def _wiggle(rng: np.random.Generator, t: np.ndarray, amp: float, fmin: float = 0.1,
            fmax: float = 0.6, n: int = 3) -> np.ndarray:
    """Smooth random motion: a sum of ``n`` sinusoids of random frequency and phase; its
    typical magnitude is ``amp``."""
    f = rng.uniform(fmin, fmax, n)
    ph = rng.uniform(0.0, _TAU, n)
    a = rng.uniform(0.4, 1.0, n)
    w = (a[:, None] * np.sin(_TAU * f[:, None] * t[None, :] + ph[:, None])).sum(0)
    return (amp * 1.4 / math.sqrt(float((a * a).sum()))) * w


def _cumint(x: np.ndarray, dt: float) -> np.ndarray:
    """Running integral of x (starting at 0), same length."""
    out = np.empty_like(x, dtype=np.float64)
    out[0] = 0.0
    np.cumsum(0.5 * (x[1:] + x[:-1]) * dt, out=out[1:])
    return out


def _choice(rng: np.random.Generator, items: Sequence, p: Sequence[float] | None = None):
    if p is not None:
        p = np.asarray(p, dtype=np.float64)
        p = p / p.sum()
    return items[int(rng.choice(len(items), p=p))]


# ============================================================================================
# Subjects: body proportions and motion style
# ============================================================================================


@dataclass(frozen=True)
class Body:
    """Segment lengths in metres (joint centre to joint centre); ``girth`` scales the body's
    thickness (how far its joint centres stay above the floor when it lies on them)."""

    height: float
    spine: float        # mid-hip -> mid-shoulder
    neck: float         # mid-shoulder -> head centre (between the ears)
    head: float         # head size factor (1 = 1.75 m adult)
    shoulder_width: float
    hip_width: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    ankle_height: float  # ankle joint above the floor when standing
    girth: float = 1.0

    @property
    def leg(self) -> float:
        return self.thigh + self.shin


@dataclass(frozen=True)
class Style:
    """How a subject moves; shared by all of its clips."""

    tempo: float        # > 1: slower transitions (durations are multiplied by it)
    walk_speed: float   # m/s
    cadence: float      # gait cycles per second when walking
    arm_swing: float    # rad, walking shoulder swing amplitude
    stoop: float        # rad, resting forward lean of the trunk
    sway: float         # rad, idle lateral sway
    fidget: float       # multiplier of idle random motion
    dominant: int       # +1 left-handed, -1 right-handed
    knee_soft: float    # rad, resting knee flexion
    elbow_rest: float   # rad, resting elbow flexion
    arm_abd: float      # rad, resting arm abduction
    stance: float       # rad, resting hip abduction (stance width)
    head_pitch: float   # rad, resting neck flexion


@dataclass(frozen=True)
class Subject:
    id: str
    body: Body
    style: Style
    body_family: str = "adult"
    style_family: str = "typical"


def sample_subject(rng: np.random.Generator | int | None = None, subject_id: str = "S0000", *,
                   body_family: str | None = None, style_family: str | None = None) -> Subject:
    """A random person of a body family (:data:`BODY_FAMILIES`; default drawn: 15 % children,
    70 % adults, 15 % large adults) with a motion style of a style family
    (:data:`STYLE_FAMILIES`; default drawn: 20 % shuffling, 60 % typical, 20 % brisk).

    Adults: stature N(1.70, 0.09) m clipped to [1.48, 1.98], segment ratios (Drillis &
    Contini) each varied by ~4 %, widths by ~7-8 %. Children: 1.0-1.45 m, a larger head and
    shorter legs for their stature. Large adults: shoulders and hips 15-40 % wider, a thicker
    body. The style traits (tempo, speed, cadence, arm swing, stoop, ...) follow an "age" draw
    within the style family."""
    rng = np.random.default_rng(rng)
    if body_family is None:
        body_family = _choice(rng, BODY_FAMILIES, (0.15, 0.7, 0.15))
    if style_family is None:
        style_family = _choice(rng, STYLE_FAMILIES, (0.2, 0.6, 0.2))
    if body_family not in BODY_FAMILIES:
        raise ValueError(f"unknown body family {body_family!r}; known: {', '.join(BODY_FAMILIES)}")
    if style_family not in STYLE_FAMILIES:
        raise ValueError(f"unknown style family {style_family!r}; known: {', '.join(STYLE_FAMILIES)}")
    child = body_family == "child"
    if child:
        h = float(rng.uniform(1.0, 1.45))
    else:
        h = float(np.clip(rng.normal(1.72 if body_family == "large" else 1.70, 0.09), 1.48, 1.98))
    # a child's head is a larger part of its stature, its legs a smaller one
    youth = float(np.clip((1.5 - h) / 0.5, 0.0, 1.0)) if child else 0.0
    wide = float(rng.uniform(1.15, 1.4)) if body_family == "large" else 1.0

    def seg(ratio: float, spread: float = 0.04) -> float:
        return float(ratio * h * math.exp(rng.normal(0.0, spread)))

    leg = 1.0 - 0.07 * youth
    body = Body(
        height=h,
        spine=seg(0.288 * (1.0 + 0.05 * youth)),
        neck=seg(0.112, 0.05),
        head=float((h / 1.75) ** 0.3 * (1.0 + 0.12 * youth) * math.exp(rng.normal(0.0, 0.05))),
        shoulder_width=seg(0.215 * wide, 0.07),
        hip_width=seg(0.125 * (1.0 + 1.2 * (wide - 1.0)), 0.08),
        upper_arm=seg(0.186),
        forearm=seg(0.146),
        thigh=seg(0.245 * leg),
        shin=seg(0.246 * leg),
        ankle_height=float(0.039 * h),
        girth=float(wide * (1.0 + 0.2 * (wide - 1.0))),
    )
    age = rng.random()  # 0 young and brisk .. 1 old and slow, shapes several style traits
    if style_family == "shuffle":  # frail or tired: slow, short low steps, little arm swing
        tempo = rng.uniform(1.25, 1.7)
        walk_speed, cadence = rng.uniform(0.3, 0.75), rng.uniform(0.7, 0.9)
        arm_swing, stoop = rng.uniform(0.02, 0.12), rng.uniform(0.1, 0.45)
    elif style_family == "brisk":
        tempo = rng.uniform(0.65, 0.9)
        walk_speed, cadence = rng.uniform(1.45, 2.0), rng.uniform(0.98, 1.15)
        arm_swing, stoop = rng.uniform(0.3, 0.6), rng.uniform(-0.02, 0.08)
    else:
        tempo = 0.8 + 0.45 * age + rng.normal(0.0, 0.08)
        walk_speed = 1.45 - 0.6 * age + rng.normal(0.0, 0.12)
        # real pedestrians as our front end reports them (vtest.avi at its 10 fps, 42 walking
        # tracks, benchmarks/front_end_errors.py): stride frequency 0.99 / 1.09 / 1.24 Hz
        # (25/50/75 %); centred a little higher and wider than before (0.98 -/+ 0.04), still
        # below running's 1.3 Hz floor
        cadence = 1.03 - 0.12 * age + rng.normal(0.0, 0.06)
        arm_swing = rng.normal(0.32, 0.08) - 0.1 * age
        stoop = 0.03 + 0.22 * age ** 2 + rng.normal(0.0, 0.04)
    if child:  # short legs: quicker steps for the same speed
        cadence *= 1.0 + 0.35 * youth
        walk_speed *= 1.0 - 0.25 * youth
        tempo *= 0.9
        stoop *= 0.3
    style = Style(
        tempo=float(np.clip(tempo, 0.6, 1.8)),
        walk_speed=float(np.clip(walk_speed, 0.25, 2.1)),
        cadence=float(np.clip(cadence, 0.65, 1.45)),
        arm_swing=float(np.clip(arm_swing, 0.02, 0.65)),
        stoop=float(np.clip(stoop, -0.02, 0.5)),
        sway=float(rng.uniform(0.005, 0.035)),
        fidget=float(rng.uniform(0.4, 1.5) * (1.4 if child else 1.0)),
        dominant=1 if rng.random() < 0.12 else -1,
        knee_soft=float(rng.uniform(0.0, 0.12) + 0.08 * age + (0.12 if style_family == "shuffle" else 0.0)),
        elbow_rest=float(rng.uniform(0.08, 0.4)),
        arm_abd=float(rng.uniform(0.06, 0.22) + 0.08 * (wide - 1.0)),
        stance=float(rng.uniform(0.0, 0.09) + 0.1 * (wide - 1.0)),
        head_pitch=float(rng.uniform(-0.05, 0.25)),
    )
    return Subject(id=str(subject_id), body=body, style=style, body_family=body_family,
                   style_family=style_family)


# ============================================================================================
# Motion: joint-angle channels over time
# ============================================================================================

#: Joint-angle channels (radians). ``_l``/``_r`` = the person's left/right.
CHANNELS = (
    "trunk_flex", "trunk_lat", "trunk_twist", "neck_flex", "head_yaw", "head_lat",
    "sh_flex_l", "sh_abd_l", "sh_rot_l", "elbow_l", "sh_flex_r", "sh_abd_r", "sh_rot_r", "elbow_r",
    "hip_flex_l", "hip_abd_l", "hip_rot_l", "knee_l", "hip_flex_r", "hip_abd_r", "hip_rot_r", "knee_r",
)
#: Root channels: heading, whole-body pitch (+ falls forward), roll (+ tilts to its left),
#: spin (about the body's long axis), airborne lift (m).
ROOT_CHANNELS = ("yaw", "pitch", "roll", "spin", "lift")


class Motion:
    """Channels (``CHANNELS`` + ``ROOT_CHANNELS``) as float arrays ``[T]`` (missing = 0), the
    floor ``anchor`` ``[T, 2]`` (world x, y) and ``anchor_w``: which body point the anchor
    holds, 0 = the mid-ankle point, 1 = the pelvis (mid-hip)."""

    __slots__ = ("t", "ch", "anchor", "anchor_w")

    def __init__(self, t: np.ndarray, anchor=(0.0, 0.0), anchor_w: float = 0.0):
        self.t = t
        self.ch: dict[str, np.ndarray] = {}
        a = np.asarray(anchor, dtype=np.float64)
        self.anchor = np.broadcast_to(a, (len(t), 2)).copy()
        self.anchor_w = float(anchor_w)

    def __getitem__(self, name: str) -> np.ndarray:
        v = self.ch.get(name)
        if v is None:
            v = self.ch[name] = np.zeros(len(self.t))
        return v

    def __setitem__(self, name: str, value) -> None:
        self.ch[name] = np.broadcast_to(np.asarray(value, dtype=np.float64), self.t.shape).copy()

    def add(self, name: str, value) -> None:
        self[name] = self[name] + value

    def lr(self, name: str, left, right) -> None:
        """Set ``name_l`` and ``name_r``."""
        self[f"{name}_l"] = left
        self[f"{name}_r"] = right

    def add_lr(self, name: str, left, right) -> None:
        self.add(f"{name}_l", left)
        self.add(f"{name}_r", right)

    def copy(self) -> "Motion":
        m = Motion(self.t, self.anchor, self.anchor_w)
        m.ch = {k: v.copy() for k, v in self.ch.items()}
        return m


def _blend(a: Motion, b: Motion, w, channels: Sequence[str] | None = None) -> Motion:
    """``(1 - w) * a + w * b`` for every channel (or only ``channels``, the rest from a);
    anchor and anchor_w come from ``a``."""
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), a.t.shape)
    out = a.copy()
    names = set(a.ch) | set(b.ch) if channels is None else set(channels)
    for k in sorted(names):
        out.ch[k] = (1.0 - w) * a[k] + w * b[k]
    return out


# ============================================================================================
# Forward kinematics
# ============================================================================================

# Face points relative to the head centre, in a 1.75 m adult's head frame (x forward, y left).
_FACE = np.array([
    [0.100, 0.000, -0.030],   # nose
    [0.080, 0.032, 0.010],    # left eye
    [0.080, -0.032, 0.010],   # right eye
    [0.000, 0.075, 0.000],    # left ear
    [0.000, -0.075, 0.000],   # right ear
])
# Distance of each joint centre from the floor when it is the lowest point (the body's
# thickness around it); face points lie on the skin.
_CLEARANCE_RATIO = np.array([0.006, 0.03, 0.03, 0.035, 0.035, 0.045, 0.045, 0.03, 0.03, 0.025,
                             0.025, 0.05, 0.05, 0.04, 0.04, 0.039, 0.039])


_ARMS = np.array([_LELB, _RELB, _LWRI, _RWRI])
_CARRY = np.array([j for j in range(NUM_KEYPOINTS) if j not in _ARMS])


def forward_kinematics(body: Body, m: Motion) -> np.ndarray:
    """COCO-17 joints ``[T, 17, 3]`` in the body frame: origin at the mid-hip, x forward,
    y to the person's left, z up, before the root rotation (yaw/pitch/roll/spin)."""
    t_len = len(m.t)
    out = np.empty((t_len, NUM_KEYPOINTS, 3))
    r_tr = _rot(2, m["trunk_twist"]) @ _rot(1, m["trunk_flex"]) @ _rot(0, -m["trunk_lat"])
    sh_mid = r_tr[:, :, 2] * body.spine
    r_hd = r_tr @ _rot(2, m["head_yaw"]) @ _rot(1, m["neck_flex"]) @ _rot(0, -m["head_lat"])
    head_c = sh_mid + r_hd[:, :, 2] * body.neck
    out[:, 0:5] = head_c[:, None, :] + np.einsum("tij,vj->tvi", r_hd, _FACE * body.head)
    for sgn, side, sho, elb, wri, hip, kne, ank in ((1.0, "l", _LSHO, _LELB, _LWRI, _LHIP, _LKNE, _LANK),
                                                    (-1.0, "r", _RSHO, _RELB, _RWRI, _RHIP, _RKNE, _RANK)):
        s = sh_mid + r_tr[:, :, 1] * (sgn * 0.5 * body.shoulder_width)
        r_ua = (r_tr @ _rot(1, -m[f"sh_flex_{side}"]) @ _rot(0, sgn * m[f"sh_abd_{side}"])
                @ _rot(2, sgn * m[f"sh_rot_{side}"]))
        e = s - r_ua[:, :, 2] * body.upper_arm
        r_fa = r_ua @ _rot(1, -m[f"elbow_{side}"])
        out[:, sho], out[:, elb], out[:, wri] = s, e, e - r_fa[:, :, 2] * body.forearm
        hp = np.array([0.0, sgn * 0.5 * body.hip_width, 0.0])
        r_th = (_rot(1, -m[f"hip_flex_{side}"]) @ _rot(0, sgn * m[f"hip_abd_{side}"])
                @ _rot(2, sgn * m[f"hip_rot_{side}"]))
        k = hp - r_th[:, :, 2] * body.thigh
        r_sh = r_th @ _rot(1, m[f"knee_{side}"])
        out[:, hip], out[:, kne], out[:, ank] = hp, k, k - r_sh[:, :, 2] * body.shin
    return out


def _root_rotation(m: Motion) -> np.ndarray:
    return _rot(2, m["yaw"]) @ _rot(1, m["pitch"]) @ _rot(0, -m["roll"]) @ _rot(2, m["spin"])


def world_joints(body: Body, m: Motion) -> np.ndarray:
    """COCO-17 joints ``[T, 17, 3]`` in the world (metres, z up, floor z = 0): forward
    kinematics, root rotation, the lowest joint resting on the floor (plus ``lift``), and
    horizontally either the supporting foot locked to the floor (``anchor_w`` 0: the body
    starts with its feet at ``anchor[0]`` and moves only by stepping, pivoting or, in
    flight, along the anchor path) or the pelvis following ``anchor`` (``anchor_w`` 1)."""
    local = forward_kinematics(body, m)
    rel = np.einsum("tij,tvj->tvi", _root_rotation(m), local)
    clearance = _CLEARANCE_RATIO * body.height * body.girth
    root = np.empty((len(m.t), 3))
    lift = m["lift"]
    if m.anchor_w >= 0.5:  # the pelvis follows the anchor path
        root[:, :2] = m.anchor
    else:
        # Feet locked to the floor: the supporting (lower) foot does not slide, so the body
        # moves by the opposite of its velocity relative to the pelvis; in flight (lift > 0)
        # the body follows the anchor path instead.
        al, ar = rel[:, _LANK], rel[:, _RANK]
        wl = 1.0 / (1.0 + np.exp(np.clip((al[:, 2] - ar[:, 2]) / 0.015, -50.0, 50.0)))
        support0 = wl[0] * al[0, :2] + (1.0 - wl[0]) * ar[0, :2]
        wm = 0.5 * (wl[1:] + wl[:-1])[:, None]
        v_lock = -(wm * np.diff(al[:, :2], axis=0) + (1.0 - wm) * np.diff(ar[:, :2], axis=0))
        contact = np.clip(1.0 - lift / 0.02, 0.0, 1.0)
        cm = np.minimum(contact[1:], contact[:-1])[:, None]
        vel = cm * v_lock + (1.0 - cm) * np.diff(m.anchor, axis=0)
        root[0, :2] = m.anchor[0] - support0
        root[1:, :2] = root[0, :2] + np.cumsum(vel, axis=0)
    # the trunk, head and legs carry the body; hands and elbows that would go through the
    # floor rest on it instead (a bent wrist, a folding arm) rather than propping the body up
    root[:, 2] = (clearance[None, _CARRY] - rel[:, _CARRY, 2]).max(axis=1) + lift
    out = rel + root[:, None, :]
    out[:, _ARMS, 2] = np.maximum(out[:, _ARMS, 2], clearance[_ARMS])
    return out


# ============================================================================================
# Building blocks of actions
# ============================================================================================

_ARM_POSTURES = {
    # (shoulder flexion, abduction, rotation (+ external), elbow) per arm
    "arms_down": None,  # from the subject's style
    "hands_front": (0.35, 0.12, -0.7, 1.35),
    "hands_on_hips": (-0.15, 0.65, -1.1, 1.7),
    "arms_crossed": (0.35, 0.1, -1.25, 2.05),
    "hands_behind": (-0.35, 0.1, -1.35, 1.25),
    "pockets": (-0.05, 0.22, -0.4, 0.55),
}


def _arm_posture(m: Motion, s: Subject, rng: np.random.Generator, posture: str) -> None:
    st = s.style
    for side in ("l", "r"):
        if posture == "phone" and (side == "l") == (st.dominant > 0):
            vals = (rng.uniform(0.3, 0.6), rng.uniform(0.05, 0.2), rng.uniform(-0.5, -0.2),
                    rng.uniform(1.9, 2.3))
        elif _ARM_POSTURES.get(posture) is None:
            vals = (rng.uniform(-0.05, 0.12), st.arm_abd, rng.uniform(-0.3, 0.1), st.elbow_rest)
        else:
            vals = tuple(v + rng.normal(0.0, 0.08) for v in _ARM_POSTURES[posture])
        for name, v in zip(("sh_flex", "sh_abd", "sh_rot", "elbow"), vals):
            m[f"{name}_{side}"] = v
    if posture == "phone":
        m["neck_flex"] = rng.uniform(0.45, 0.7)


def _standing(t: np.ndarray, s: Subject, rng: np.random.Generator, yaw, anchor,
              arms: str = "arms_down", idle_legs: bool = True) -> Motion:
    """Standing idle: sway, breathing, looking around, weight shifts, an arm posture."""
    st = s.style
    fid = st.fidget
    m = Motion(t, anchor)
    m["yaw"] = np.asarray(yaw, dtype=np.float64) + _wiggle(rng, t, 0.03 * fid, 0.03, 0.2)
    m["trunk_flex"] = st.stoop + _wiggle(rng, t, 0.025 * fid, 0.1, 0.4)
    m["trunk_lat"] = st.sway * np.sin(_TAU * rng.uniform(0.15, 0.45) * t + rng.uniform(0, _TAU)) \
        + _wiggle(rng, t, 0.01 * fid)
    m["trunk_twist"] = _wiggle(rng, t, 0.04 * fid, 0.05, 0.3)
    m["neck_flex"] = st.head_pitch + _wiggle(rng, t, 0.07 * fid, 0.05, 0.4)
    m["head_yaw"] = _wiggle(rng, t, 0.3 * fid, 0.05, 0.35)
    m["head_lat"] = _wiggle(rng, t, 0.04 * fid, 0.05, 0.3)
    _arm_posture(m, s, rng, arms)
    if arms == "phone":
        m["neck_flex"] = m["neck_flex"] + _wiggle(rng, t, 0.03)
    for side in ("l", "r"):
        for name, amp in (("sh_flex", 0.04), ("sh_abd", 0.03), ("elbow", 0.06)):
            m.add(f"{name}_{side}", _wiggle(rng, t, amp * fid, 0.05, 0.4))
    m.lr("hip_abd", st.stance, st.stance)
    m.lr("knee", st.knee_soft, st.knee_soft)
    m.lr("hip_flex", 0.3 * st.knee_soft, 0.3 * st.knee_soft)
    m.lr("hip_rot", rng.uniform(-0.1, 0.25), rng.uniform(-0.1, 0.25))
    if idle_legs:
        # weight on one leg, the other relaxed; shifts now and then
        shift = np.tanh(3.0 * np.sin(_TAU * rng.uniform(0.03, 0.12) * t + rng.uniform(0, _TAU)))
        rest = rng.uniform(0.0, 0.25) * fid
        m.add_lr("knee", rest * np.clip(shift, 0, 1), rest * np.clip(-shift, 0, 1))
        m.add_lr("hip_flex", 0.4 * rest * np.clip(shift, 0, 1), 0.4 * rest * np.clip(-shift, 0, 1))
        m.add("trunk_lat", 0.02 * shift)
    # occasional talking/scratching gesture, below the shoulder
    if idle_legs and arms not in ("phone", "arms_crossed") and rng.random() < 0.35 * min(fid, 1.0):
        side = "l" if rng.random() < 0.5 else "r"
        g0 = rng.uniform(0.0, max(t[-1] - 1.0, 0.01))
        g = _pulse(t, g0, 0.3, rng.uniform(0.2, 1.5), 0.35)
        m.add(f"elbow_{side}", g * rng.uniform(0.5, 1.3))
        m.add(f"sh_flex_{side}", g * rng.uniform(0.2, 0.6))
    return m


def _steps(m: Motion, t: np.ndarray, t0: float, dur: float, rng: np.random.Generator) -> None:
    """Small alternating steps (for turning on the spot) between t0 and t0 + dur."""
    n = max(1, int(round(dur / 0.45)))
    first = 0 if rng.random() < 0.5 else 1
    for k in range(n):
        side = "lr"[(k + first) % 2]
        b = _hump(t, t0 + k * dur / n, dur / n)
        m.add(f"hip_flex_{side}", 0.25 * b)
        m.add(f"knee_{side}", 0.5 * b)


def _gait(t: np.ndarray, s: Subject, rng: np.random.Generator, *, run: bool, yaw0: float,
          anchor0=(0.0, 0.0), profile=None, turn=None, arms: str = "arms_down") -> tuple[Motion, float]:
    """Walking or running. ``profile [T]`` in [0, 1] scales speed, phase rate and amplitude
    (0 = standing); ``turn [T]`` is the turn rate in rad/s. Returns the motion and the speed."""
    st, body = s.style, s.body
    dt = float(t[1] - t[0]) if len(t) > 1 else 0.04
    prof = np.ones_like(t) if profile is None else np.asarray(profile, dtype=np.float64)
    if run:  # clearly faster than any walk: >= 1.3 strides (2.6 steps) a second, >= 2 m/s
        freq = max(st.cadence * rng.uniform(1.35, 1.6), rng.uniform(1.3, 1.45))
        speed = float(np.clip(rng.uniform(2.3, 4.2) * math.sqrt(max(st.walk_speed, 0.8) / 1.25), 2.0, 5.0))
    else:
        freq = st.cadence * rng.uniform(0.93, 1.07)
        speed = st.walk_speed * rng.uniform(0.85, 1.15)
    stride = speed / freq
    amp = math.asin(min(0.85, stride / (4.0 * body.leg)))
    if run:  # the flight phases cover part of the stride
        amp = 0.75 * math.asin(min(0.6, stride / (4.0 * body.leg)))
    phase = rng.uniform(0, _TAU) + _TAU * freq * _cumint(prof, dt)
    turn_rate = np.zeros_like(t) if turn is None else np.asarray(turn, dtype=np.float64)
    yaw = yaw0 + _cumint(turn_rate * prof, dt)
    vel = speed * prof
    anchor = np.asarray(anchor0, dtype=np.float64) + np.stack(
        [_cumint(vel * np.cos(yaw), dt), _cumint(vel * np.sin(yaw), dt)], axis=-1)
    m = _standing(t, s, rng, yaw, anchor, arms=arms, idle_legs=False)
    swing = 0.0 if arms in ("phone", "hands_front", "arms_crossed", "pockets") else 1.0
    if run:
        h0, k_st, k_sw, lean = 0.3, rng.uniform(0.3, 0.45), rng.uniform(1.4, 1.9), rng.uniform(0.1, 0.25)
        arm_amp, elbow = rng.uniform(0.45, 0.75), rng.uniform(1.2, 1.7)
    else:
        h0, k_st, k_sw, lean = 0.12, rng.uniform(0.05, 0.15), rng.uniform(0.8, 1.05), rng.uniform(0.0, 0.08)
        if s.style_family == "shuffle":  # the feet stay low: little knee flexion in swing
            h0, k_sw = 0.06, rng.uniform(0.3, 0.6)
        arm_amp, elbow = st.arm_swing * rng.uniform(0.8, 1.2), rng.uniform(0.0, 0.3)
    for side, off in (("l", 0.0), ("r", math.pi)):
        ph = phase + off
        m.add(f"hip_flex_{side}", prof * (h0 + amp * np.sin(ph)))
        knee = k_st * np.clip(np.sin(ph - _HALF_PI - 0.3), 0, None) + \
            k_sw * np.clip(np.cos(ph + 0.45), 0, None) ** 2
        m.add(f"knee_{side}", prof * (knee + (0.15 if run else 0.02)))
        m.add(f"sh_flex_{side}", prof * swing * (-arm_amp * np.sin(ph) + (0.15 if run else 0.05)))
        m.add(f"elbow_{side}", prof * swing * (elbow + 0.25 * arm_amp * (1 - np.sin(ph))))
        m.add(f"sh_abd_{side}", prof * (0.05 if run else 0.0))
    m.add("trunk_flex", prof * lean)
    m.add("trunk_twist", prof * (0.1 if run else 0.06) * amp * np.sin(phase))
    m.add("trunk_lat", prof * 0.03 * np.sin(phase))
    if run:
        m["lift"] = prof * rng.uniform(0.03, 0.09) * np.clip((np.sin(phase) ** 2 - 0.35) / 0.65, 0, None)
    return m, speed


def _seated(t: np.ndarray, s: Subject, rng: np.random.Generator, yaw, anchor, variant: str = "upright",
            seat: str = "chair") -> Motion:
    """Sitting on a seat; ``seat`` ``chair``/``low_seat`` sets the hip/knee angles."""
    st = s.style
    m = _standing(t, s, rng, yaw, anchor, arms="arms_down", idle_legs=False)
    low = seat == "low_seat"
    hip = rng.uniform(1.55, 1.95) if low else rng.uniform(1.3, 1.65)
    for side in ("l", "r"):
        knee = (rng.uniform(1.7, 2.2) if low else rng.uniform(1.2, 1.8))
        if rng.random() < 0.2:  # one leg stretched out
            knee = rng.uniform(0.5, 1.0)
        m[f"hip_flex_{side}"] = hip + rng.normal(0, 0.06) + _wiggle(rng, t, 0.02)
        m[f"knee_{side}"] = knee + _wiggle(rng, t, 0.05 * st.fidget, 0.05, 0.3)
        m[f"hip_abd_{side}"] = rng.uniform(0.0, 0.3)
    lean = {"upright": rng.uniform(-0.05, 0.15), "leaning_back": rng.uniform(-0.3, -0.12),
            "leaning_forward": rng.uniform(0.25, 0.55), "phone": rng.uniform(0.1, 0.4)}[variant]
    m["trunk_flex"] = lean + 0.5 * st.stoop + _wiggle(rng, t, 0.03 * st.fidget, 0.05, 0.3)
    hands = _choice(rng, ("lap", "armrests", "gesture", "crossed"), (0.45, 0.2, 0.2, 0.15))
    if variant == "phone":
        hands = "phone"
    for side in ("l", "r"):
        if hands == "lap" or (hands == "phone" and (side == "l") != (st.dominant > 0)):
            vals = (rng.uniform(0.3, 0.7) + 0.5 * lean, rng.uniform(0.05, 0.2), rng.uniform(-0.5, -0.1),
                    rng.uniform(0.8, 1.3))
        elif hands == "armrests":
            vals = (rng.uniform(-0.1, 0.2), rng.uniform(0.25, 0.4), rng.uniform(-0.2, 0.2), rng.uniform(1.3, 1.7))
        elif hands == "crossed":
            vals = (rng.uniform(0.25, 0.45), 0.1, -1.25, rng.uniform(1.9, 2.2))
        elif hands == "phone":
            vals = (rng.uniform(0.4, 0.7), 0.1, -0.3, rng.uniform(1.8, 2.2))
        else:  # gesture: moving hands while talking
            vals = (rng.uniform(0.3, 0.6) + _wiggle(rng, t, 0.25, 0.2, 0.9), rng.uniform(0.1, 0.3),
                    -0.3, rng.uniform(1.0, 1.6) + _wiggle(rng, t, 0.35, 0.2, 1.0))
        for name, v in zip(("sh_flex", "sh_abd", "sh_rot", "elbow"), vals):
            m[f"{name}_{side}"] = v
        m.add(f"elbow_{side}", _wiggle(rng, t, 0.05 * st.fidget))
    if variant == "phone":
        m["neck_flex"] = rng.uniform(0.45, 0.75) + _wiggle(rng, t, 0.04)
    return m


def _lying_limbs(t: np.ndarray, s: Subject, rng: np.random.Generator, down: str,
                 activity: float | None = None) -> Motion:
    """Joint channels of a person lying with ``down`` (back/front/left/right) on the floor,
    limbs in resting configurations that keep them in the floor plane, plus slow movement."""
    m = Motion(t)
    act = rng.uniform(0.01, 0.2) if activity is None else activity
    m["trunk_flex"] = rng.uniform(-0.05, 0.05) + (0.1 if down == "back" else 0.0)
    m["trunk_lat"] = rng.normal(0.0, 0.12)
    m["trunk_twist"] = rng.normal(0.0, 0.12)
    ext = _HALF_PI  # external rotation keeps the elbow bending in the frontal plane
    if down == "back":
        m["neck_flex"] = rng.uniform(-0.15, 0.45)
        m["head_yaw"] = rng.normal(0.0, 0.5)
        for side in ("l", "r"):
            kind = _choice(rng, ("along", "out", "overhead", "chest"), (0.35, 0.3, 0.15, 0.2))
            vals = {"along": (0.0, rng.uniform(0.1, 0.5), ext, rng.uniform(0.0, 0.6)),
                    "out": (0.0, rng.uniform(0.7, 1.6), ext, rng.uniform(0.0, 0.9)),
                    "overhead": (0.0, rng.uniform(2.1, 2.9), ext, rng.uniform(0.0, 1.0)),
                    "chest": (rng.uniform(0.5, 0.9), 0.2, -0.9, rng.uniform(1.6, 2.1))}[kind]
            for name, v in zip(("sh_flex", "sh_abd", "sh_rot", "elbow"), vals):
                m[f"{name}_{side}"] = v
            if rng.random() < 0.35:
                hip = rng.uniform(0.4, 0.9)
                m[f"hip_flex_{side}"], m[f"knee_{side}"] = hip, 2.0 * hip * rng.uniform(0.9, 1.1)
            else:
                m[f"hip_flex_{side}"], m[f"knee_{side}"] = rng.uniform(0.0, 0.1), rng.uniform(0.0, 0.2)
            m[f"hip_abd_{side}"] = rng.uniform(0.0, 0.3)
    elif down == "front":
        m["neck_flex"] = rng.uniform(-0.35, 0.0)
        m["head_yaw"] = rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.3)
        for side in ("l", "r"):
            kind = _choice(rng, ("along", "by_head", "out"), (0.3, 0.45, 0.25))
            vals = {"along": (0.0, rng.uniform(0.1, 0.4), ext, rng.uniform(0.0, 0.4)),
                    "by_head": (0.0, rng.uniform(1.6, 2.6), ext, rng.uniform(0.6, 1.8)),
                    "out": (0.0, rng.uniform(0.8, 1.5), ext, rng.uniform(0.2, 1.0))}[kind]
            for name, v in zip(("sh_flex", "sh_abd", "sh_rot", "elbow"), vals):
                m[f"{name}_{side}"] = v
            m[f"hip_flex_{side}"] = rng.uniform(-0.1, 0.0)
            m[f"knee_{side}"] = rng.uniform(0.0, 0.35)
            m[f"hip_abd_{side}"] = rng.uniform(0.0, 0.3)
    else:  # on a side: limbs forward (the sagittal plane lies on the floor)
        lower, upper = ("l", "r") if down == "left" else ("r", "l")
        # the waist sags: the spine bends so that both the (wider) shoulder and the hip rest
        # on the floor
        sag = math.atan2(0.5 * (s.body.shoulder_width - s.body.hip_width), s.body.spine)
        m["trunk_lat"] = (-1.0 if down == "left" else 1.0) * (sag + rng.uniform(0.0, 0.1))
        m["neck_flex"] = rng.uniform(0.0, 0.4)
        if rng.random() < 0.4:  # lower arm under the head
            m[f"sh_flex_{lower}"], m[f"elbow_{lower}"] = rng.uniform(2.3, 2.9), rng.uniform(0.4, 1.5)
        else:
            m[f"sh_flex_{lower}"], m[f"elbow_{lower}"] = rng.uniform(1.0, 1.6), rng.uniform(0.2, 1.0)
        m[f"sh_flex_{upper}"], m[f"elbow_{upper}"] = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.5)
        m.lr("sh_abd", 0.05, 0.05)
        m[f"hip_flex_{lower}"], m[f"knee_{lower}"] = rng.uniform(0.1, 0.8), rng.uniform(0.2, 1.2)
        m[f"hip_flex_{upper}"], m[f"knee_{upper}"] = rng.uniform(0.3, 1.3), rng.uniform(0.4, 1.7)
    # slow movement: distress, trying to get up, shifting
    for name in CHANNELS:
        scale = 0.4 if name.startswith(("trunk", "neck", "head")) else 1.0
        m.add(name, _wiggle(rng, t, act * scale, 0.08, 0.7))
    if rng.random() < 0.4 * act / 0.2:  # one bigger limb movement
        side = "lr"[int(rng.integers(2))]
        g = _pulse(t, rng.uniform(0, max(t[-1] - 1.2, 0.01)), 0.4, rng.uniform(0.1, 0.8), 0.5)
        if rng.random() < 0.5:
            m.add(f"elbow_{side}", 0.6 * g)
            m.add(f"sh_abd_{side}", 0.4 * g)
        else:
            m.add(f"knee_{side}", 0.6 * g)
            m.add(f"hip_flex_{side}", 0.3 * g)
    _floor_limits(m, down)
    return m


def _floor_limits(m: Motion, down: str) -> None:
    """Keep a lying body's segments out of the floor: movements toward the floor are cut
    (a flexed trunk lifts the chest off the floor on the back, pushes it into it on the front)."""
    def clip(name: str, lo=None, hi=None):
        m[name] = np.clip(m[name], lo, hi)

    if down == "back":
        clip("trunk_flex", 0.0, None)
        for sd in "lr":
            clip(f"hip_flex_{sd}", 0.0, None)
            m[f"knee_{sd}"] = np.clip(m[f"knee_{sd}"], 0.0, 2.1 * m[f"hip_flex_{sd}"] + 0.1)
            if np.all(m[f"sh_rot_{sd}"] > 1.0):  # arm resting in the floor plane
                clip(f"sh_flex_{sd}", 0.0, None)
    elif down == "front":
        clip("trunk_flex", None, 0.0)
        for sd in "lr":
            clip(f"hip_flex_{sd}", None, 0.0)
            clip(f"knee_{sd}", 0.0, 0.6)
            clip(f"sh_flex_{sd}", None, 0.05)
    else:
        lower, upper = ("l", "r") if down == "left" else ("r", "l")
        clip("trunk_lat", *((None, 0.0) if down == "left" else (0.0, None)))
        clip(f"sh_abd_{lower}", None, 0.05)
        clip(f"hip_abd_{lower}", None, 0.0)
        clip(f"sh_abd_{upper}", -0.1, None)
        clip(f"hip_abd_{upper}", 0.0, None)


_LYING_SPIN = {"back": 0.0, "front": math.pi, "left": _HALF_PI, "right": -_HALF_PI}


# ============================================================================================
# Actions: each returns (motion, variant, (event start s, event end s), hints)
# ============================================================================================

ActionResult = tuple[Motion, str, tuple[float, float], dict]


def _pick_variant(action: str, rng: np.random.Generator, variant: str | None,
                  p: Sequence[float] | None = None) -> str:
    if variant is not None:
        if variant not in VARIANTS[action]:
            raise ValueError(f"unknown variant {variant!r} of {action!r}; known: {', '.join(VARIANTS[action])}")
        return variant
    return _choice(rng, VARIANTS[action], p)


def _act_standing(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("standing", rng, variant, (0.3, 0.15, 0.1, 0.12, 0.08, 0.1, 0.15))
    yaw = rng.uniform(-math.pi, math.pi)
    turn = np.zeros_like(t)
    if rng.random() < 0.3 and t[-1] > 2.0:
        t0, d = rng.uniform(0, t[-1] - 1.5), rng.uniform(0.8, 1.5)
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.6) * _ramp(t, t0, d)
    m = _standing(t, s, rng, yaw + turn, (0.0, 0.0), arms=variant)
    if np.any(turn != 0):
        _steps(m, t, t0, d, rng)
    return m, variant, (0.0, float(t[-1])), {}


def _act_walking(t, s, rng, variant, run: bool = False) -> ActionResult:
    action = "running" if run else "walking"
    variant = _pick_variant(action, rng, variant, (0.4, 0.25, 0.15, 0.1, 0.1)[:len(VARIANTS[action])])
    end = float(t[-1])
    prof = np.ones_like(t)
    turn = np.zeros_like(t)
    span = (0.0, end)
    if variant == "curve":
        turn = turn + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.6 if not run else 0.35)
    elif variant == "start":
        t0 = rng.uniform(0.1, 0.4) * end
        prof = _ramp(t, t0, rng.uniform(0.4, 0.8))
        span = (t0, end)
    elif variant == "stop":
        t1 = rng.uniform(0.55, 0.8) * end
        prof = 1.0 - _ramp(t, t1, rng.uniform(0.4, 0.8))
        span = (0.0, t1)
    elif variant == "turn":  # turn around: slow down, pivot, walk back
        t0, d = rng.uniform(0.25, 0.55) * end, rng.uniform(0.7, 1.2)
        prof = 1.0 - 0.7 * _hump(t, t0 - 0.2, d + 0.4)
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(2.5, 3.3) / d * _hump(t, t0, d, 1.0) * (math.pi / 2)
    arms = "arms_down" if run or rng.random() < 0.8 else _choice(rng, ("phone", "hands_front", "pockets"))
    m, _ = _gait(t, s, rng, run=run, yaw0=rng.uniform(-math.pi, math.pi), profile=prof, turn=turn, arms=arms)
    return m, variant, span, {}


def _act_running(t, s, rng, variant) -> ActionResult:
    return _act_walking(t, s, rng, variant, run=True)


def _act_sitting_down(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("sitting_down", rng, variant, (0.4, 0.2, 0.2, 0.2))
    st, end = s.style, float(t[-1])
    dur = float(np.clip(rng.uniform(0.9, 1.6) * st.tempo, 0.8, 2.0))
    turn_d = rng.uniform(0.8, 1.2) if variant == "turn_and_sit" else 0.0
    need = dur + turn_d
    t0 = turn_d + rng.uniform(0.1, max(0.15, end - need - 0.4))
    yaw = rng.uniform(-math.pi, math.pi)
    yaw_arr = yaw + np.zeros_like(t)
    if turn_d:
        yaw_arr = yaw_arr + rng.choice([-1.0, 1.0]) * rng.uniform(2.4, 3.4) * _ramp(t, t0 - turn_d, turn_d)
    stand = _standing(t, s, rng, yaw_arr, (0.0, 0.0), arms=_choice(rng, ("arms_down", "hands_front", "phone"),
                                                                  (0.8, 0.1, 0.1)))
    if turn_d:
        _steps(stand, t, t0 - turn_d, turn_d, rng)
    seat = "low_seat" if variant == "low_seat" else "chair"
    sit = _seated(t, s, rng, yaw_arr, (0.0, 0.0), _choice(rng, ("upright", "leaning_back")), seat=seat)
    u = (t - t0) / dur
    w_legs = _smooth((u - 0.05) / 0.9)
    w_rest = _smooth((u - 0.3) / 0.7)
    legs = [f"{n}_{sd}" for n in ("hip_flex", "hip_abd", "hip_rot", "knee") for sd in "lr"]
    m = _blend(stand, sit, w_rest)
    m = _blend(m, _blend(stand, sit, w_legs, legs), 1.0, legs)
    m.add("trunk_flex", rng.uniform(0.35, 0.75) * _hump(t, t0, dur * 0.95, 1.5))
    m.add("neck_flex", -0.2 * _hump(t, t0, dur))
    if variant == "reach_back" or rng.random() < 0.25:
        reach = _hump(t, t0 + 0.3 * dur, 0.6 * dur)
        for side in ("l", "r"):
            m.add(f"sh_flex_{side}", -rng.uniform(0.3, 0.6) * reach)
            m.add(f"sh_abd_{side}", rng.uniform(0.1, 0.3) * reach)
    return m, variant, (t0 - turn_d, t0 + dur), {}


def _act_standing_up(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("standing_up", rng, variant, (0.45, 0.25, 0.3))
    st, end = s.style, float(t[-1])
    dur = float(np.clip(rng.uniform(1.0, 1.7) * st.tempo, 0.9, 2.2))
    t0 = rng.uniform(0.1, max(0.15, end - dur - 0.4))
    yaw = rng.uniform(-math.pi, math.pi)
    sit = _seated(t, s, rng, yaw, (0.0, 0.0), _choice(rng, ("upright", "leaning_back", "leaning_forward")))
    stand = _standing(t, s, rng, yaw, (0.0, 0.0), arms="arms_down")
    u = (t - t0) / dur
    w_legs = _smooth((u - 0.3) / 0.65)
    w_rest = _smooth((u - 0.15) / 0.85)
    legs = [f"{n}_{sd}" for n in ("hip_flex", "hip_abd", "hip_rot", "knee") for sd in "lr"]
    m = _blend(sit, stand, w_rest)
    m = _blend(m, _blend(sit, stand, w_legs, legs), 1.0, legs)
    lean = rng.uniform(0.55, 0.95)
    m.add("trunk_flex", lean * _hump(t, t0, 0.8 * dur, 1.2))
    m.add("neck_flex", -0.25 * _hump(t, t0, 0.8 * dur))
    push = _hump(t, t0, 0.7 * dur)
    for side in ("l", "r"):
        if variant == "push_thighs":
            m.add(f"sh_flex_{side}", 0.35 * push)
            m.add(f"elbow_{side}", 0.3 * push)
        elif variant == "armrests":
            m.add(f"sh_flex_{side}", -0.35 * push)
            m.add(f"sh_abd_{side}", 0.3 * push)
            m.add(f"elbow_{side}", 0.6 * push)
        else:
            m.add(f"sh_flex_{side}", rng.uniform(0.7, 1.3) * _hump(t, t0 + 0.1 * dur, 0.7 * dur))
    return m, variant, (t0, t0 + dur), {}


def _act_sitting(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("sitting", rng, variant, (0.35, 0.25, 0.2, 0.2))
    m = _seated(t, s, rng, rng.uniform(-math.pi, math.pi), (0.0, 0.0), variant,
                seat="low_seat" if rng.random() < 0.25 else "chair")
    return m, variant, (0.0, float(t[-1])), {}


def _physics_allowed(families: Sequence[str] | None) -> tuple[str, ...]:
    """The physics scenarios a clip may use (none when MuJoCo/dm-control are missing)."""
    from posestream.train.data import ragdoll

    allowed = tuple(sc for sc in _PHYSICS_FALLS if families is None or sc in families)
    return allowed if allowed and ragdoll.available() else ()


def _use_physics(rng: np.random.Generator, variant: str | None, families: Sequence[str] | None,
                 prefix: str = "") -> str | None:
    """The physics scenario of this clip, or None for a hand-animated one."""
    if variant is not None:
        name = variant[len(prefix):].split("-from-")[0] if variant.startswith(prefix) else None
        return name if name in _PHYSICS_FALLS else None
    allowed = _physics_allowed(families)
    kinematic_ok = families is None or "kinematic" in families
    if not allowed:
        if not kinematic_ok:
            raise ValueError("fall_families allows only physics scenarios, but MuJoCo/dm-control are not installed "
                             '(pip install "posestream[synth]")')
        return None
    if kinematic_ok and rng.random() >= PHYSICS_SHARE:
        return None
    return allowed[int(rng.integers(len(allowed)))]


def _align_fall(fall_world: np.ndarray, pre_world: np.ndarray, i0: int, blend: int) -> np.ndarray:
    """The clip's world joints: the hand-animated ``pre_world`` up to frame ``i0``, then the
    simulated fall (its frame 0 at ``i0``, moved so that its feet start where the pre-fall
    body's feet are), cross-faded over ``blend`` frames (a stumbling step)."""
    out = pre_world.copy()
    n = min(len(fall_world), len(out) - i0)
    fall = fall_world[:n].copy()
    shift = pre_world[i0, [_LANK, _RANK], :2].mean(0) - fall[0, [_LANK, _RANK], :2].mean(0)
    fall[..., :2] += shift
    w = np.clip((np.arange(n) + 1) / max(blend, 1), 0.0, 1.0)[:, None, None]
    out[i0:i0 + n] = (1 - w) * pre_world[i0:i0 + n] + w * fall
    return out


def _act_falling(t, s, rng, variant, fall_families=None) -> ActionResult:
    scenario = _use_physics(rng, variant, fall_families)
    if scenario is not None:
        return _act_falling_physics(t, s, rng, scenario, None if variant is None else variant.split("-from-")[1])
    if variant is None:
        pre = "walking" if rng.random() < 0.4 else "standing"
        p = (0.5, 0.2, 0.1, 0.1, 0.1) if pre == "walking" else (0.28, 0.28, 0.14, 0.14, 0.16)
        direction = _choice(rng, _FALL_DIRECTIONS, p)
        variant = f"{direction}-from-{pre}"
    else:
        _pick_variant("falling", rng, variant)
        direction, pre = variant.split("-from-")
    end = float(t[-1])
    collapse = direction == "collapse"
    dur = rng.uniform(0.7, 1.0) if collapse else rng.uniform(0.45, 0.95)
    dur = float(min(dur, max(0.45, end - 0.75)))
    settle = rng.uniform(0.3, 0.7)
    t0 = rng.uniform(min(0.25, 0.3 * end), max(min(0.25, 0.3 * end) + 1e-3, end - dur - 0.45))
    yaw0 = rng.uniform(-math.pi, math.pi)
    if pre == "walking":
        prof = 1.0 - _ramp(t, t0 - 0.05, rng.uniform(0.2, 0.4))
        pre_m, _ = _gait(t, s, rng, run=False, yaw0=yaw0, profile=prof)
    else:
        pre_m = _standing(t, s, rng, yaw0, (0.0, 0.0),
                          arms=_choice(rng, ("arms_down", "hands_front", "phone", "pockets"), (0.7, 0.1, 0.1, 0.1)))
    down = {"forward": "front", "backward": "back", "left": "left", "right": "right"}.get(direction)
    if collapse:
        down = _choice(rng, ("front", "back", "left", "right"), (0.3, 0.3, 0.2, 0.2))
    post = _lying_limbs(t, s, rng, down)
    # joints: from the pre-fall pose to the lying pose, starting mid-fall
    w_joint = _ramp(t, t0 + 0.45 * dur, 0.55 * dur + settle)
    m = _blend(pre_m, post, w_joint, CHANNELS)
    tau = np.clip((t - t0) / dur, 0.0, 1.0)
    if collapse:
        g = np.clip((tau - 0.35) / 0.65, 0.0, 1.0) ** rng.uniform(1.4, 2.0)
    else:
        g = tau ** rng.uniform(1.8, 2.6)  # accelerating, like a toppling body
    pitch_f, roll_f = {"front": (_HALF_PI + rng.normal(0, 0.06), rng.normal(0, 0.15)),
                       "back": (-_HALF_PI + rng.normal(0, 0.06), rng.normal(0, 0.15)),
                       "left": (rng.normal(0, 0.2), _HALF_PI + rng.normal(0, 0.08)),
                       "right": (rng.normal(0, 0.2), -_HALF_PI + rng.normal(0, 0.08))}[down]
    t_land = t0 + dur
    after = np.clip(t - t_land, 0.0, None)
    bounce = (t > t_land) * np.exp(-after / 0.12) * np.sin(_TAU * after / 0.3) * rng.uniform(0.03, 0.08)
    m["pitch"] = pre_m["pitch"] * (1 - g) + pitch_f * g - np.sign(pitch_f) * bounce * (abs(pitch_f) > 1)
    m["roll"] = pre_m["roll"] * (1 - g) + roll_f * g - np.sign(roll_f) * bounce * (abs(roll_f) > 1)
    m["yaw"] = pre_m["yaw"] + rng.normal(0.0, 0.3) * g
    # fall gestures over the descent
    early = _hump(t, t0 - 0.05, dur + 0.1, 1.0)
    late = _hump(t, t0 + 0.3 * dur, 0.7 * dur + 0.5 * settle, 1.0)
    fall_side = {"left": "l", "right": "r"}.get(direction)
    for side in ("l", "r"):
        if collapse:
            fold = _pulse(t, t0, 0.4 * dur, 0.2 * dur, 0.4 * dur + settle)
            m.add(f"knee_{side}", rng.uniform(1.5, 2.1) * fold)
            m.add(f"hip_flex_{side}", rng.uniform(1.0, 1.6) * fold)
            m.add(f"sh_abd_{side}", rng.uniform(0.0, 0.4) * early)
        elif direction == "forward":
            m.add(f"knee_{side}", rng.uniform(0.3, 0.9) * early)
            m.add(f"hip_flex_{side}", rng.uniform(0.2, 0.6) * early)
            m.add(f"sh_flex_{side}", rng.uniform(1.0, 1.6) * late)  # brace with the arms
            m.add(f"elbow_{side}", -m[f"elbow_{side}"] * 0.7 * late)
        elif direction == "backward":
            m.add(f"knee_{side}", rng.uniform(0.6, 1.3) * early)
            m.add(f"hip_flex_{side}", rng.uniform(0.6, 1.2) * early)
            m.add(f"sh_abd_{side}", rng.uniform(0.6, 1.3) * early)
            m.add(f"sh_flex_{side}", rng.uniform(-0.4, 0.8) * early)
        else:
            near = side == fall_side
            m.add(f"knee_{side}", (rng.uniform(0.4, 1.0) if near else rng.uniform(0.1, 0.4)) * early)
            m.add(f"hip_flex_{side}", rng.uniform(0.1, 0.5) * early)
            if near:
                m.add(f"sh_abd_{side}", rng.uniform(0.7, 1.3) * early)
            else:
                m.add(f"sh_flex_{side}", rng.uniform(0.4, 1.2) * early)
    if direction == "forward":
        m.add("trunk_flex", rng.uniform(0.2, 0.5) * early)
        m.add("neck_flex", -0.4 * early)
    elif direction == "backward":
        m.add("trunk_flex", rng.uniform(0.2, 0.5) * early)
        m.add("neck_flex", 0.45 * early)
    elif collapse:
        m.add("trunk_flex", rng.uniform(0.3, 0.7) * _pulse(t, t0, 0.4 * dur, 0.2 * dur, 0.4 * dur + settle))
        m.add("neck_flex", 0.5 * early)
    else:
        m.add("trunk_lat", (1 if fall_side == "r" else -1) * rng.uniform(0.1, 0.3) * early)
    return m, variant, (t0, t_land), {"landing": t_land, "pre": pre, "down": down}


def _act_falling_physics(t, s, rng, scenario: str, pre: str | None) -> ActionResult:
    """A standing or walking person, then a simulated fall (:mod:`.ragdoll`) from onset t0."""
    from posestream.train.data import ragdoll

    pre = pre or ("walking" if rng.random() < (0.7 if scenario == "trip" else 0.35) else "standing")
    end = float(t[-1])
    fps = 1.0 / float(t[1] - t[0])
    t0 = rng.uniform(min(0.25, 0.3 * end), max(min(0.25, 0.3 * end) + 1e-3, end - 1.3))
    i0 = int(min(len(t) - 2, math.ceil(t0 * fps)))
    yaw0 = rng.uniform(-math.pi, math.pi)
    if pre == "walking":
        prof = 1.0 - _ramp(t, t[i0] + 0.1, rng.uniform(0.2, 0.4))
        pre_m, speed = _gait(t, s, rng, run=False, yaw0=yaw0, profile=prof)
        speed *= float(prof[i0])
    else:
        pre_m = _standing(t, s, rng, yaw0, (0.0, 0.0),
                          arms=_choice(rng, ("arms_down", "hands_front", "phone", "pockets"), (0.7, 0.1, 0.1, 0.1)))
        speed = 0.0
    heading = float(pre_m["yaw"][i0]) + _HALF_PI  # the model faces -y at heading 0, ours +x at yaw 0
    sim = ragdoll.simulate_fall(rng, scenario, duration=end - t[i0] + 1.0 / fps, fps=fps,
                                speed=speed if scenario == "trip" or speed > 0 else None, heading=heading)
    fall = ragdoll.retarget(sim.joints, s.body, clearance=_CLEARANCE_RATIO * s.body.height * s.body.girth)
    world = _align_fall(fall, world_joints(s.body, pre_m), i0, blend=max(1, int(round(0.2 * fps))))
    t_land = float(min(t[i0] + sim.impact, end))
    return pre_m, f"{scenario}-from-{pre}", (float(t[i0]), t_land), {
        "landing": t_land, "pre": pre, "down": sim.down, "world": world, "obstacle": sim.obstacle}


def _act_lying(t, s, rng, variant, fall_families=None) -> ActionResult:
    scenario = _use_physics(rng, variant, fall_families, prefix="fallen-")
    if scenario is not None:
        result = _act_lying_physics(t, s, rng, scenario, tries=12 if variant is not None else 3)
        if result is not None:
            return result
        if variant is not None or (fall_families is not None and "kinematic" not in fall_families):
            raise ValueError(f"no lying posture came out of {scenario!r} simulations")
        variant = None
    variant = _pick_variant("lying", rng, variant, (0.3, 0.17, 0.13, 0.13, 0.12, 0.15) + (0.0,) * len(_PHYSICS_FALLS))
    if variant == "lie_down":
        return _act_lie_down(t, s, rng)
    end = float(t[-1])
    m = Motion(t, (0.0, 0.0), anchor_w=1.0)
    if variant == "rolling":
        a = _choice(rng, ("back", "left", "right", "front"))
        b = {"back": _choice(rng, ("left", "right")), "front": _choice(rng, ("left", "right")),
             "left": _choice(rng, ("back", "front")), "right": _choice(rng, ("back", "front"))}[a]
        t0, d = rng.uniform(0.15, 0.5) * end, rng.uniform(0.8, 1.5)
        w = _ramp(t, t0, d)
        limbs = _blend(_lying_limbs(t, s, rng, a), _lying_limbs(t, s, rng, b), w)
        spin_a = _LYING_SPIN[a]
        delta = (_LYING_SPIN[b] - spin_a + math.pi) % _TAU - math.pi
        spin = spin_a + delta * w
        span = (t0, t0 + d)
    else:
        limbs = _lying_limbs(t, s, rng, variant)
        spin = _LYING_SPIN[variant] + rng.normal(0.0, 0.1) + np.zeros_like(t)
        span = (0.0, end)
    for k, v in limbs.ch.items():
        m[k] = v
    m["pitch"] = -_HALF_PI + rng.normal(0.0, 0.04) + _wiggle(rng, t, 0.02)
    m["spin"] = spin + _wiggle(rng, t, 0.03)
    m["roll"] = _wiggle(rng, t, 0.02)
    m["yaw"] = rng.uniform(-math.pi, math.pi) + np.zeros_like(t)
    return m, variant, span, {}


def _act_lie_down(t, s, rng) -> ActionResult:
    """Lying down on purpose: from standing down to sitting on the floor (through a squat,
    1.2-2.5 s), a moment sitting, then reclining onto the back (1.2-2.8 s) and lying: slow
    enough at every step that it is no fall. The descent and the recline are named by no
    class (the timeline leaves them unlabelled); the sitting and the lying are."""
    st, end = s.style, float(t[-1])
    sit_d = float(np.clip(rng.uniform(1.2, 2.2) * st.tempo, 1.2, 2.5))
    pause, rec_d = rng.uniform(0.3, 1.5), rng.uniform(1.2, 2.8)
    t0 = rng.uniform(0.1, 0.6)
    need = t0 + sit_d + pause + rec_d
    if need > 0.65 * end:  # keep a third of the clip lying: squeeze the phases
        k = 0.65 * end / need
        t0, sit_d, pause, rec_d = t0 * k, sit_d * k, pause * k, rec_d * k
    t1 = t0 + sit_d + pause
    yaw = rng.uniform(-math.pi, math.pi)
    stand = _standing(t, s, rng, yaw, (0.0, 0.0), arms="arms_down", idle_legs=False)
    floor = stand.copy()
    hip, knee = rng.uniform(1.35, 1.6), rng.uniform(0.2, 1.1)
    for side in ("l", "r"):
        floor[f"hip_flex_{side}"] = hip + rng.normal(0.0, 0.05)
        floor[f"knee_{side}"] = knee + rng.normal(0.0, 0.15)
        floor[f"hip_abd_{side}"] = rng.uniform(0.0, 0.3)
        floor[f"sh_flex_{side}"] = rng.uniform(-0.6, 0.2)  # hands back on the floor, or on the lap
        floor[f"elbow_{side}"] = rng.uniform(0.1, 0.8)
    floor["trunk_flex"] = rng.uniform(-0.1, 0.25)
    m = _blend(stand, floor, _ramp(t, t0, sit_d))
    through = _hump(t, t0, sit_d)  # down through a squat
    m.add_lr("knee", 1.3 * through, 1.3 * through)
    m.add_lr("hip_flex", 0.35 * through, 0.35 * through)
    m.add("trunk_flex", 0.4 * through)
    recline = _ramp(t, t1, rec_d)
    m["pitch"] = -_HALF_PI * recline  # onto the back, the legs staying on the floor
    for side in ("l", "r"):
        m[f"hip_flex_{side}"] = m[f"hip_flex_{side}"] * (1.0 - recline)
    lie = _lying_limbs(t, s, rng, "back")
    m = _blend(m, lie, _ramp(t, t1 + 0.5 * rec_d, 0.5 * rec_d + 0.4), CHANNELS)
    timeline = [Segment("standing", 0.0, t0), Segment(None, t0, t0 + sit_d), Segment("sitting", t0 + sit_d, t1),
                Segment(None, t1, t1 + 0.8 * rec_d), Segment("lying", t1 + 0.8 * rec_d, end)]
    return m, "lie_down", (t1, end), {"timeline": timeline}


def _act_lying_physics(t, s, rng, scenario: str, tries: int = 3) -> ActionResult | None:
    """Lying as a simulated fall of ``scenario`` left the body, from 1-2 s after the impact
    (still settling, or moving a little: the low tone keeps pulling toward a random posture).
    None when ``tries`` simulations in a row left the body sitting or kneeling, not lying."""
    from posestream.train.data import ragdoll

    end = float(t[-1])
    fps = 1.0 / float(t[1] - t[0])
    for _ in range(tries):
        sim = ragdoll.simulate_fall(rng, scenario, duration=end + 3.2, fps=fps)
        start = int(round((sim.impact + rng.uniform(1.0, 2.0)) * fps))
        if start + len(t) > len(sim.t):
            start = len(sim.t) - len(t)
        joints = sim.joints[start:start + len(t)]
        down = ragdoll.down_kind(joints[len(t) // 2])
        if down in ("back", "front", "left", "right"):
            break
    else:
        return None
    world = ragdoll.retarget(joints, s.body, clearance=_CLEARANCE_RATIO * s.body.height * s.body.girth)
    world[..., :2] -= world[0, [_LHIP, _RHIP], :2].mean(0)
    m = Motion(t, (0.0, 0.0), anchor_w=1.0)
    m["yaw"] = np.full(len(t), sim.heading - _HALF_PI)
    return m, f"fallen-{scenario}", (0.0, end), {"down": down, "world": world, "obstacle": sim.obstacle}


def _act_picking_up(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("picking_up", rng, variant, (0.45, 0.3, 0.25))
    st, end = s.style, float(t[-1])
    down, hold, up = (float(np.clip(rng.uniform(0.5, 1.1) * st.tempo, 0.45, 1.3)), rng.uniform(0.15, 0.9),
                      float(np.clip(rng.uniform(0.5, 1.1) * st.tempo, 0.45, 1.3)))
    total = down + hold + up
    if total > end - 0.2:
        k = (end - 0.2) / total
        down, hold, up, total = down * k, hold * k, up * k, end - 0.2
    t0 = rng.uniform(0.05, max(0.1, end - total - 0.1))
    m = _standing(t, s, rng, rng.uniform(-math.pi, math.pi), (0.0, 0.0),
                  arms=_choice(rng, ("arms_down", "hands_front", "pockets"), (0.8, 0.1, 0.1)))
    e = _pulse(t, t0, down, hold, up)
    if variant == "stoop":
        trunk, hip, knee = rng.uniform(1.1, 1.55), rng.uniform(0.05, 0.3), rng.uniform(0.1, 0.45)
    elif variant == "squat":
        trunk, hip, knee = rng.uniform(0.4, 0.85), rng.uniform(1.3, 1.8), rng.uniform(1.5, 2.2)
    else:
        trunk, hip, knee = rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.9), rng.uniform(0.8, 1.3)
    asym = rng.normal(0.0, 0.15)
    m.add("trunk_flex", (trunk - m["trunk_flex"]) * e)
    m.add_lr("hip_flex", (hip + asym) * e, (hip - asym) * e)
    m.add_lr("knee", (knee + 2 * asym) * e, (knee - 2 * asym) * e)
    m.add_lr("hip_abd", (0.25 if variant == "squat" else 0.05) * e, (0.25 if variant == "squat" else 0.05) * e)
    m.add("neck_flex", rng.uniform(-0.3, 0.2) * e)
    both = rng.random() < 0.4
    reach_side = "l" if s.style.dominant > 0 else "r"
    for side in ("l", "r"):
        if both or side == reach_side:
            target = trunk + rng.uniform(0.0, 0.45)
            m.add(f"sh_flex_{side}", (target - m[f"sh_flex_{side}"]) * e)
            m.add(f"elbow_{side}", (0.1 - m[f"elbow_{side}"]) * e)
            m.add(f"sh_abd_{side}", (0.15 - m[f"sh_abd_{side}"]) * e)
            if rng.random() < 0.5:  # carry the object afterwards
                after = _ramp(t, t0 + down + hold + 0.5 * up, 0.5 * up)
                m.add(f"elbow_{side}", rng.uniform(0.8, 1.5) * after)
                m.add(f"sh_flex_{side}", rng.uniform(0.1, 0.4) * after)
        else:
            m.add(f"sh_flex_{side}", rng.uniform(0.0, 0.6) * trunk * e)
    return m, variant, (t0, t0 + total), {}


def _act_squatting(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("squatting", rng, variant, (0.5, 0.5))
    st, end = s.style, float(t[-1])
    m = _standing(t, s, rng, rng.uniform(-math.pi, math.pi), (0.0, 0.0), arms="arms_down", idle_legs=False)
    depth = rng.uniform(0.55, 1.0)
    if variant == "hold":
        down = float(np.clip(rng.uniform(0.6, 1.2) * st.tempo, 0.5, 1.5))
        t0 = rng.uniform(0.05, max(0.1, 0.5 * end - down))
        e = _ramp(t, t0, down)
        span = (t0, end)
        if rng.random() < 0.3 and end - t0 - down > 1.5:
            t_up = rng.uniform(t0 + down + 0.5, end - 0.8)
            e = e * (1.0 - _ramp(t, t_up, down))
            span = (t0, t_up + 0.5 * down)  # standing again after that
        e = e * (1.0 + _wiggle(rng, t, 0.04))
    else:
        period = float(np.clip(rng.uniform(1.4, 2.6) * st.tempo, 1.3, 3.0))
        t0 = rng.uniform(0.0, max(0.05, min(0.8, end - period)))
        e = 0.5 - 0.5 * np.cos(_TAU * np.clip(t - t0, 0.0, None) / period)
        e = e * (1.0 + _wiggle(rng, t, 0.08, 0.1, 0.4))
        span = (t0, end)
    hip, knee, trunk = rng.uniform(1.5, 2.05) * depth, rng.uniform(1.9, 2.45) * depth, rng.uniform(0.25, 0.8)
    m.add_lr("hip_flex", hip * e, hip * e)
    m.add_lr("knee", knee * e, knee * e)
    abd = rng.uniform(0.15, 0.5)
    m.add_lr("hip_abd", abd * e, abd * e)
    m.add_lr("hip_rot", 0.2 * e, 0.2 * e)
    m.add("trunk_flex", trunk * e)
    m.add("neck_flex", -0.5 * trunk * e)
    arms = _choice(rng, ("forward", "clasped", "knees"))
    for side in ("l", "r"):
        if arms == "forward":
            m.add(f"sh_flex_{side}", rng.uniform(0.8, 1.5) * e)
            m.add(f"elbow_{side}", -0.8 * m[f"elbow_{side}"] * e)
        elif arms == "clasped":
            m.add(f"sh_flex_{side}", 0.6 * e)
            m.add(f"sh_rot_{side}", -0.9 * e)
            m.add(f"elbow_{side}", 1.6 * e)
        else:
            m.add(f"sh_flex_{side}", (0.5 + trunk) * e)
            m.add(f"elbow_{side}", 0.3 * e)
    return m, variant, span, {}


def _act_jumping(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("jumping", rng, variant, (0.35, 0.3, 0.15, 0.2))
    end = float(t[-1])
    yaw = rng.uniform(-math.pi, math.pi)
    m = _standing(t, s, rng, yaw, (0.0, 0.0), arms="arms_down", idle_legs=False)
    g_acc = 9.81
    crouch = np.zeros_like(t)
    arms_up = np.zeros_like(t)
    arms_back = np.zeros_like(t)
    lift = np.zeros_like(t)
    spread = np.zeros_like(t)
    tuck = np.zeros_like(t)
    forward = np.zeros_like(t)
    repeated = variant in ("repeated", "jacks")
    cm, push = (rng.uniform(0.1, 0.18), rng.uniform(0.1, 0.16)) if repeated else \
        (rng.uniform(0.25, 0.45), rng.uniform(0.15, 0.25))
    flight = rng.uniform(0.25, 0.38) if repeated else rng.uniform(0.3, 0.5)
    land = rng.uniform(0.12, 0.2) if repeated else rng.uniform(0.25, 0.4)
    depth = rng.uniform(0.35, 0.6) if repeated else rng.uniform(0.7, 1.0)
    cycle = cm + push + flight + land
    n = 1 if variant in ("single", "forward") else max(1, int((end - 0.3) // cycle))
    n = int(min(n, rng.integers(2, 7))) if repeated else 1
    t0 = rng.uniform(0.1, max(0.15, end - n * cycle - 0.2))
    dist = rng.uniform(0.4, 1.1) if variant == "forward" else 0.0
    for k in range(n):
        s0 = t0 + k * cycle
        tf = s0 + cm + push
        crouch += _pulse(t, s0, cm, 0.0, push) + 0.8 * _pulse(t, tf + flight, land * 0.4, 0.0, land * 0.6)
        u = np.clip((t - tf) / flight, 0.0, 1.0)
        h = g_acc * flight ** 2 / 8.0
        lift += ((t > tf) & (t < tf + flight)) * 4.0 * h * u * (1.0 - u)
        arms_back += _pulse(t, s0, cm, 0.0, push * 0.6)
        arms_up += _pulse(t, s0 + cm, push, flight * 0.3, flight * 0.7 + land)
        tuck += _hump(t, tf, flight)
        if variant == "jacks":  # open on odd jumps, closed on even ones
            spread += (1.0 if k % 2 == 0 else -1.0) * _ramp(t, tf, flight)
        forward += dist * _ramp(t, tf, flight)
    if variant == "jacks":
        spread = np.clip(spread, 0.0, 1.0)
        m.add_lr("hip_abd", 0.35 * spread, 0.35 * spread)
        m.add_lr("sh_abd", 2.5 * spread, 2.5 * spread)
        arms_up = arms_up * 0.0
        arms_back = arms_back * 0.0
    m.add_lr("knee", rng.uniform(1.0, 1.5) * depth * crouch + rng.uniform(0.2, 0.6) * tuck,
             rng.uniform(1.0, 1.5) * depth * crouch + rng.uniform(0.2, 0.6) * tuck)
    m.add_lr("hip_flex", rng.uniform(0.7, 1.1) * depth * crouch + 0.2 * tuck,
             rng.uniform(0.7, 1.1) * depth * crouch + 0.2 * tuck)
    m.add("trunk_flex", rng.uniform(0.3, 0.6) * depth * crouch)
    up = rng.uniform(1.2, 2.6) * (1.0 if variant != "repeated" else 0.4)
    back = rng.uniform(0.4, 0.8, 2)
    m.add_lr("sh_flex", up * arms_up - back[0] * arms_back, up * arms_up - back[1] * arms_back)
    m["lift"] = lift
    direction = np.array([math.cos(yaw), math.sin(yaw)])
    m.anchor = m.anchor + forward[:, None] * direction[None, :]
    return m, variant, (t0, t0 + n * cycle), {}


def _act_waving(t, s, rng, variant) -> ActionResult:
    variant = _pick_variant("waving", rng, variant, (0.5, 0.25, 0.25))
    end = float(t[-1])
    m = _standing(t, s, rng, rng.uniform(-math.pi, math.pi), (0.0, 0.0),
                  arms=_choice(rng, ("arms_down", "pockets", "hands_on_hips"), (0.8, 0.1, 0.1)))
    freq = rng.uniform(1.2, 3.0) if variant == "one_arm" else rng.uniform(0.8, 2.0)
    raise_d = rng.uniform(0.25, 0.55)
    t0 = rng.uniform(0.0, max(0.05, min(0.4 * end, end - 1.2)))
    t1 = end + 1.0
    if rng.random() < 0.35 and end - t0 > 2.5:
        t1 = rng.uniform(t0 + 1.8, end - 0.3)
    e = _ramp(t, t0, raise_d) * (1.0 - _ramp(t, t1, raise_d))
    osc = np.sin(_TAU * freq * np.clip(t - t0, 0.0, None) + rng.uniform(0, _TAU))
    sides = ("l", "r") if variant == "both_arms" else (("l",) if s.style.dominant > 0 else ("r",))
    if variant == "one_arm" and rng.random() < 0.15:
        sides = (("r",) if sides == ("l",) else ("l",))
    for i, side in enumerate(sides):
        o = osc if i == 0 else -osc
        if variant == "one_arm":
            target = {"sh_flex": rng.uniform(0.0, 0.6), "sh_abd": rng.uniform(1.1, 1.7),
                      "sh_rot": _HALF_PI + rng.normal(0, 0.15), "elbow": rng.uniform(1.0, 1.6)}
            amp_e, amp_a = rng.uniform(0.25, 0.55), rng.uniform(0.0, 0.12)
            wave = {"elbow": amp_e * o, "sh_abd": amp_a * o}
        else:
            target = {"sh_flex": rng.uniform(-0.1, 0.4), "sh_abd": rng.uniform(2.2, 2.8),
                      "sh_rot": rng.uniform(0.0, 1.0), "elbow": rng.uniform(0.1, 0.5)}
            wave = {"sh_abd": rng.uniform(0.2, 0.45) * o, "elbow": rng.uniform(0.0, 0.3) * o}
        for name, v in target.items():
            cur = m[f"{name}_{side}"]
            m[f"{name}_{side}"] = cur + (v + wave.get(name, 0.0) - cur) * e
    m.add("head_yaw", -m["head_yaw"] * 0.7 * e)  # looks at whom they wave to
    return m, variant, (t0, min(t1, end)), {"face_camera": 0.75}


# What a person does before and after the labelled span of each action (None: the action
# itself), for the clip's timeline.
_BEFORE_AFTER = {
    "standing": (None, None), "sitting": (None, None), "lying": (None, None),
    "walking": ("standing", "standing"), "running": ("standing", "standing"),
    "sitting_down": ("standing", "sitting"), "standing_up": ("sitting", "standing"),
    "picking_up": ("standing", "standing"), "squatting": ("standing", "standing"),
    "jumping": ("standing", "standing"), "waving": ("standing", "standing"),
}


def clip_timeline(action: str, span: tuple[float, float], end: float, hints: dict | None = None) -> list[Segment]:
    """Who does what when in a clip of ``action`` whose labelled event spans ``span`` (seconds)
    and which ends at ``end``: the action's segment, and what comes before and after it (a
    fall starts from standing or walking and ends lying, or with a label-less segment when the
    body came to rest sitting or kneeling on the floor). The labels of served windows come
    from it (:func:`posestream.actions.window_label`)."""
    hints = hints or {}
    if "timeline" in hints:  # the action spelled out its own (lying down on purpose)
        return list(hints["timeline"])
    s0, s1 = max(0.0, float(span[0])), min(float(end), float(span[1]))
    if action == "falling":
        before, after = hints.get("pre", "standing"), ("lying" if hints.get("down") in ("back", "front", "left", "right")
                                                         else None)
    else:
        before, after = _BEFORE_AFTER[action]
    segments = []
    if s0 > 0 and before is not None:
        segments.append(Segment(before, 0.0, s0))
    segments.append(Segment(action, s0 if before is not None else 0.0, s1 if after is not None or action == "falling"
                            else float(end)))
    if s1 < end and (after is not None or action == "falling"):
        segments.append(Segment(after, s1, float(end)))
    return segments


_BUILDERS: dict[str, Callable[..., ActionResult]] = {
    "standing": _act_standing,
    "walking": _act_walking,
    "running": _act_running,
    "sitting_down": _act_sitting_down,
    "standing_up": _act_standing_up,
    "sitting": _act_sitting,
    "falling": _act_falling,
    "lying": _act_lying,
    "picking_up": _act_picking_up,
    "squatting": _act_squatting,
    "jumping": _act_jumping,
    "waving": _act_waving,
}
assert tuple(_BUILDERS) == ACTIONS


# ============================================================================================
# Camera
# ============================================================================================


@dataclass(frozen=True)
class Camera:
    """A pinhole camera. ``rotation`` maps world to camera coordinates (x right, y down,
    z forward); ``k1`` is radial distortion (negative = barrel)."""

    position: np.ndarray
    rotation: np.ndarray
    focal: float
    center: tuple[float, float]
    img_shape: tuple[int, int]
    k1: float = 0.0
    kind: str = "level"

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points ``[..., 3]`` -> (pixels ``[..., 2]``, depth ``[...]``). Points behind
        the camera get a depth <= 0 and meaningless pixels."""
        pc = self.to_camera(points)
        depth = pc[..., 2]
        z = np.maximum(depth, 1e-3)
        xy = pc[..., :2] / z[..., None]
        if self.k1:
            r2 = np.minimum((xy * xy).sum(-1), 2.0)
            xy = xy * (1.0 + self.k1 * r2)[..., None]
        uv = xy * self.focal + np.asarray(self.center)
        return uv, depth

    @property
    def height(self) -> float:
        return float(self.position[2])

    @property
    def pitch_deg(self) -> float:
        """Angle of the optical axis below the horizon, degrees."""
        return float(math.degrees(math.asin(np.clip(-self.rotation[2, 2], -1.0, 1.0))))

    @property
    def hfov_deg(self) -> float:
        return float(math.degrees(2 * math.atan(0.5 * self.img_shape[1] / self.focal)))

    def describe(self) -> dict:
        return {"kind": self.kind, "height": round(self.height, 3), "pitch_deg": round(self.pitch_deg, 2),
                "hfov_deg": round(self.hfov_deg, 2), "focal": round(float(self.focal), 2),
                "k1": round(float(self.k1), 4)}


def look_at(position, target, roll: float = 0.0) -> np.ndarray:
    """World -> camera rotation of a camera at ``position`` looking at ``target`` with a
    level horizon (then rolled by ``roll`` radians)."""
    position = np.asarray(position, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - position
    fwd = fwd / np.linalg.norm(fwd)
    up = np.array([0.0, 0.0, 1.0])
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-6:  # looking straight down/up
        right = np.array([0.0, -1.0, 0.0])
    right = right / np.linalg.norm(right)
    down = np.cross(fwd, right)
    r = np.stack([right, down, fwd])
    if roll:
        r = _rot(2, roll) @ r
    return r


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


#: Camera families: ``level`` (webcam/tripod 0.6-1.9 m high, about horizontal), ``elevated``
#: (wall mount 2.2-3.5 m, 15-35 degrees down), ``ceiling`` (2.4-4.5 m, 30-70 degrees down),
#: ``floor`` (0.05-0.5 m: a camera on a shelf low down, a robot, a phone on the floor, looking
#: level or slightly up) and ``corner`` (a ceiling-corner surveillance camera, 2.3-3.2 m, 35-60
#: degrees down, a wide 90-125 degree lens with strong barrel distortion).
CAMERA_KINDS = ("level", "elevated", "ceiling", "floor", "corner")
_CAMERA_WEIGHTS = (0.34, 0.17, 0.25, 0.09, 0.15)


def sample_camera(rng: np.random.Generator, target, person_height: float = 1.7, *, kind: str | None = None,
                  img_shape: tuple[int, int] | None = None, azimuth: float | None = None,
                  image_pos: tuple[float, float] | None = None) -> Camera:
    """A random camera looking at ``target`` (world point, usually the person's centre).

    ``kind``: one of :data:`CAMERA_KINDS` (default drawn). Lenses: 50-80 degrees horizontal
    field of view level, 65-110 from above, 90-125 in a corner, and one camera in six a
    telephoto (18-40 degrees) far away; the roll is small (1.5 degrees) for most and up to 15
    degrees (rarely 30) for a third. The person is 40 px to 110 % of the image height tall
    (log-uniform; 20-90 % for three in four), anywhere in the frame and sometimes partly
    outside it. ``azimuth``
    (radians, world) is the direction from the target to the camera; ``image_pos`` (fractions
    of width/height) is where the target lands in the image.
    """
    target = np.asarray(target, dtype=np.float64)
    kind = kind or _choice(rng, CAMERA_KINDS, _CAMERA_WEIGHTS)
    if kind not in CAMERA_KINDS:
        raise ValueError(f"unknown camera kind {kind!r}; known: {', '.join(CAMERA_KINDS)}")
    h, w = img_shape or _IMAGE_SHAPES[int(rng.choice(len(_IMAGE_SHAPES), p=_IMAGE_WEIGHTS))]
    tele = kind in ("level", "elevated", "ceiling") and rng.random() < 1 / 6
    if tele:
        hfov_deg = rng.uniform(18.0, 40.0)
    elif kind in ("level", "floor"):
        hfov_deg = rng.uniform(50.0, 80.0) if kind == "level" else rng.uniform(55.0, 95.0)
    elif kind == "corner":
        hfov_deg = rng.uniform(90.0, 125.0)
    else:
        hfov_deg = rng.uniform(65.0, 110.0)
    hfov = math.radians(hfov_deg)
    focal = 0.5 * w / math.tan(0.5 * hfov)
    az = rng.uniform(-math.pi, math.pi) if azimuth is None else azimuth
    # person height in the image, as a fraction of the image height: 40 px to 110 % for one
    # person in four, 20-90 % for the others
    low = math.log(min(40.0 / h, 0.5)) if rng.random() < 0.25 else math.log(0.2)
    size = math.exp(rng.uniform(low, math.log(1.1 if low < math.log(0.2) else 0.9)))
    if kind in ("level", "floor"):
        dist = max(focal * person_height / (size * h), 0.6)
        cam_h = rng.uniform(0.6, 1.9) if kind == "level" else rng.uniform(0.05, 0.5)
        horiz = math.sqrt(max(dist ** 2 - (cam_h - target[2]) ** 2, 0.25))
        look = target.copy()
        if kind == "floor":  # looking level or a little up, not at the person's centre
            look[2] = cam_h + horiz * math.tan(math.radians(rng.uniform(-5.0, 20.0)))
    else:
        if kind == "corner":
            pitch, cam_h = math.radians(rng.uniform(35.0, 60.0)), rng.uniform(2.3, 3.2)
        elif kind == "elevated":
            pitch, cam_h = math.radians(rng.uniform(15.0, 35.0)), rng.uniform(2.2, 3.5)
        else:
            pitch, cam_h = math.radians(rng.uniform(30.0, 70.0)), rng.uniform(2.4, 4.5)
        if tele:  # far away and high up, zoomed in
            cam_h *= rng.uniform(1.5, 3.0)
        horiz = max(cam_h - target[2], 0.3) / math.tan(pitch)
        dist = math.hypot(horiz, cam_h - target[2])
        if kind != "corner" and not tele and dist * size * h < focal * person_height * 0.5:  # far: zoom in
            focal = min(focal * 1.8, 0.5 * w / math.tan(math.radians(22.0)))
        look = target
    position = np.array([target[0] + horiz * math.cos(az), target[1] + horiz * math.sin(az), cam_h])
    u = rng.random()
    roll_deg = rng.normal(0.0, 1.5) if u < 0.67 else (rng.uniform(-15.0, 15.0) if u < 0.97 else
                                                      rng.choice([-1.0, 1.0]) * rng.uniform(20.0, 30.0))
    rot = look_at(position, look, roll=math.radians(roll_deg))
    if image_pos is None:
        image_pos = (float(np.clip(rng.normal(0.5, 0.2), -0.15, 1.15)),
                     float(np.clip(rng.normal(0.5, 0.15), -0.05, 1.05)))
    if kind == "floor":
        image_pos = (image_pos[0], 0.5)
    ray = np.array([(image_pos[0] - 0.5) * w / focal, (image_pos[1] - 0.5) * h / focal, 1.0])
    rot = _rotation_between(np.array([0.0, 0.0, 1.0]), ray / np.linalg.norm(ray)) @ rot
    if kind == "corner":
        k1 = rng.uniform(-0.3, -0.12)
    else:
        k1 = rng.uniform(-0.12, 0.0) if hfov > math.radians(85) else rng.uniform(-0.04, 0.02)
    return Camera(position=position, rotation=rot, focal=float(focal), center=(0.5 * w, 0.5 * h),
                  img_shape=(int(h), int(w)), k1=float(k1), kind=kind)


def _floor_point(cam: Camera, u: float, v: float, max_dist: float = 20.0) -> np.ndarray | None:
    """Where the pixel ray (u, v) meets the floor, or None (distortion ignored)."""
    ray_c = np.array([(u - cam.center[0]) / cam.focal, (v - cam.center[1]) / cam.focal, 1.0])
    ray = cam.rotation.T @ ray_c
    if ray[2] >= -1e-3:
        return None
    s = -cam.position[2] / ray[2]
    p = cam.position + s * ray
    if np.linalg.norm(p[:2] - cam.position[:2]) > max_dist:
        return None
    return p


# ============================================================================================
# Estimator noise
# ============================================================================================

_SCORE_OFFSET = np.array([0.04, 0.03, 0.03, -0.03, -0.03, 0.03, 0.03, -0.02, -0.02, -0.07, -0.07,
                          -0.02, -0.02, -0.04, -0.04, -0.07, -0.07])
# A missed joint is often reported on a confusable one.
_CONFUSED_WITH = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
_SWAP_GROUPS = {
    "all": ((1, 3, 5, 7, 9, 11, 13, 15), (2, 4, 6, 8, 10, 12, 14, 16)),
    "upper": ((1, 3, 5, 7, 9), (2, 4, 6, 8, 10)),
    "legs": ((13, 15), (14, 16)),
    "arms": ((7, 9), (8, 10)),
    "ankles": ((15,), (16,)),
    "wrists": ((9,), (10,)),
}

# The default front end's errors measured on real footage set the noise model's parameters
# below: ``benchmarks/front_end_errors.py`` on all of vtest.avi (795 frames, 44 tracks, people
# 54-81 px tall (10-90 %), every 5th frame also mirrored), figures in
# ``train/data/front_end_measured.json`` (``tests/test_synthetic.py`` checks the generator
# against them). Sizes there are the skeleton's vertical extent in pixels; the generator applies
# them to the person's larger image extent (the same for upright people).
#
# Per-frame probability of a left/right swap event, by group, for a person 70 px tall (the
# measured swap rates of all 44 tracks (mostly 54-81 px): shoulders 2.0 %, hips 1.1 %, arms
# 1.6 %, legs 3.5 % of frames. A whole-body swap shows in all four: its rate is about the hips';
# the shoulders' and arms' excess is the upper body alone, the legs' excess legs or ankles.
# The rates are what the benchmark's swap detector, run on the generator, finds at the
# measured level: it misses some two-frame swaps.)
_SWAP_RATE_70PX = {"all": 0.012, "upper": 0.008, "legs": 0.019, "arms": 0.0, "ankles": 0.006, "wrists": 0.002}
# ... falling with size: the legs' rate is 6.0 % at 54 px, 3.3 % at 70, 1.3 % at 95 and none in
# the few tracks above 120 px (an exponential with a 28 px scale fits all three); the flip test
# (mirrored frame against the frame) agrees: 5.7 % / 2.8 % / 1.0 % / 0 crossed pairs.
_SWAP_SIZE_SCALE_PX = 28.0
# Track gaps (the person not found in a frame inside the track): 14.6 % of the frames at
# < 60 px, 8.5 % at 60-80, 5.5 % at 80-120, 1.8 % above: 8.5 % at 70 px (0.097 is the rate
# whose overlapping runs leave 8.5 % of the frames empty), falling with a 40 px scale.
_GAP_70PX, _GAP_SIZE_SCALE_PX = 0.097, 40.0
# Coordinate noise: the flip test's median distance / sqrt(2) (the random part of one
# estimate) is 0.010 (face) - 0.015 (arms) of the person's height at ~70 px, about 0.7-1 px;
# the still people's frame-to-frame second differences are 0.9-1.3 % of their height. Half
# the noise of the earlier model (0.02 at these sizes), with a floor in pixels (the measured
# second differences are ~1.2-1.3 px on the face whether people are 55, 70 or 95 px tall).
_JITTER_FLOOR_PX = 0.2
_SIGMA0 = (0.001, 0.003)     # of the person's size, for a sure joint
_SIGMA1 = (0.02, 0.04)       # more, times (1 - score) ** 1.5, for an unsure one
_BOX_JITTER = 0.002          # the shared per-frame shift (the detector box moving), of the size
_SCALE_JITTER = 0.005        # the shared per-frame scale change


# Real walkers' legs, as our front end reports them, are drawn much closer together than the
# generator's gait puts them: on vtest.avi (42 walking tracks, people 54-81 px tall) the
# ankles are 0.16 body heights apart (median) and the knees bend 33 degrees (90th
# percentile), against 0.34 and 73 for the earlier generator's walkers at the same sizes and
# camera heights (0.39 and 110 running), for about the same travel per gait cycle (0.64
# against 0.61 heights): the front end draws about half of the legs' excursion. BlazePose and
# MoveNet agree (MoveNet draws the ankles even closer, 0.08), and it is no small-size effect:
# the same people shrunk to 0.6 x keep 0.97 of their ankle spread (benchmarks/
# front_end_errors.py, "Shrunk"). So for half the gaits (walking and running alike, so that it
# is no cue between them) the reported knees and ankles are pulled toward their left/right
# midpoint, keeping 25-60 % of their separation, and each knee toward its hip-ankle line by
# as much (generate_clip draws it; estimator_noise's ``leg_swing``), the 3D motion untouched
# (its feet stay planted).
FRONT_END_LEG_SWING = (0.25, 0.6)
FRONT_END_LEG_SWING_SHARE = 0.5
_KNEES_ANKLES = ((_LKNE, _RKNE), (_LANK, _RANK))


def _size_rate(size: np.ndarray, at_70px: float, scale_px: float, lo: float = 0.05, hi: float = 3.0) -> np.ndarray:
    """A per-frame rate measured at 70 px, for people of ``size`` px, falling exponentially
    with size (``scale_px``); the factor kept within [lo, hi]."""
    return at_70px * np.clip(np.exp(-(np.asarray(size, dtype=np.float64) - 70.0) / scale_px), lo, hi)


_UPPER = np.array([1, 3, 5, 7, 9])
_LOWER = np.array([11, 13, 15])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], rho: float = 0.6) -> np.ndarray:
    """Unit-variance Gaussian noise correlated along axis 0 (a short moving average)."""
    n = rng.standard_normal((shape[0] + 2,) + shape[1:])
    k = np.array([rho * rho, rho, 1.0])
    out = k[0] * n[:-2] + k[1] * n[1:-1] + k[2] * n[2:]
    return out / math.sqrt(float((k * k).sum()))


def _runs(rng: np.random.Generator, shape: tuple[int, int], rate: float, max_len: int = 4) -> np.ndarray:
    """Boolean ``[T, V]``: events starting with probability ``rate`` per frame, lasting 1..max_len."""
    start = rng.random(shape) < rate
    out = start.copy()
    length = rng.integers(1, max_len + 1, size=shape)
    for k in range(1, max_len):
        out[k:] |= start[:-k] & (length[:-k] > k)
    return out


#: How a front end's scores look (:func:`estimator_noise`): ``estimator`` (scores as a top-down
#: heatmap estimator's, e.g. HRNet: dropping smoothly with occlusion, size and lying),
#: ``confident`` (as posestream's own BlazePose front end reports them on real footage: the
#: face, shoulders and hips 0.95-1 nearly always, the limbs either sure or, when occluded,
#: low: bimodal; measured on vtest.avi, see front_end_measured.json), ``flat`` (1 for every joint
#: in the image: annotation-like) and ``low`` (an unsure estimator: 0.3-0.7).
SCORE_STYLES = ("estimator", "confident", "flat", "low")
_SCORE_STYLE_WEIGHTS = (0.35, 0.42, 0.1, 0.13)
_TORSO_AND_FACE = np.array([0, 1, 2, 3, 4, 5, 6, 11, 12])
_LEGS = np.array([_LKNE, _RKNE, _LANK, _RANK])
# The confident style's thresholds for the arms and legs (of the underlying score), chosen so
# that, for people the size of vtest.avi's, the arms and legs score below 0.3 as often as the
# real front end's do there (front_end_measured.json -> score: arms 25 %, legs 1.4 %).
_CONFIDENT_ARM_THRESHOLD = (0.62, 0.74)
_CONFIDENT_LEG_THRESHOLD = (0.3, 0.42)
#: What hides part of a person (:func:`estimator_noise`): a ``table`` (or a sofa back, a bed
#: end) in front of the lower body, or a ``side`` occluder (a door frame, another person).
OCCLUDERS = ("table", "side")


def _occlusion_mask(rng: np.random.Generator, uv: np.ndarray, kind: str) -> np.ndarray:
    """Boolean ``[T, V]``: which joints an occluder of ``kind`` hides. A table hides what lies
    below an image row between the hips and the knees (of the person's median frame); a side
    occluder hides what lies beyond an image column that cuts 20-50 % of the body's width."""
    y = np.median(uv[..., 1], axis=0)
    x = np.median(uv[..., 0], axis=0)
    if kind == "table":
        hip_y, knee_y = y[[_LHIP, _RHIP]].mean(), y[[_LKNE, _RKNE]].mean()
        edge = hip_y + rng.uniform(-0.2, 0.8) * (knee_y - hip_y)
        return uv[..., 1] > edge
    x0, x1 = x.min(), x.max()
    cut = rng.uniform(0.2, 0.5) * (x1 - x0)
    if rng.random() < 0.5:
        return uv[..., 0] < x0 + cut
    return uv[..., 0] > x1 - cut


#: Where BlazePose (the default front end) puts the hips and shoulders against MoveNet, a
#: COCO-trained estimator, on the same people (``benchmarks/front_end_errors.py`` on vtest.avi,
#: 44 tracks: the per-track medians' median and spread, ``front_end_measured.json`` ->
#: ``blazepose_vs_movenet.convention_per_track``): mid-hip shifted along the trunk by -4.6 % of
#: its length (toward the feet; per-track IQR -7.4..-1.5 %), hip width x 1.02 (IQR 0.90-1.11),
#: mid-shoulder -0.4 % (IQR -2.8..+1.4 %), shoulder width x 1.11 (IQR 1.02-1.25). (mean,
#: standard deviation = IQR / 1.35) of each. (The earlier model had BlazePose's hips 0-12 %
#: higher and up to 25 % wider: the measurement says lower and as wide.)
BLAZEPOSE_CONVENTION = {"hip_up": (-0.046, 0.044), "hip_width": (1.02, 0.15),
                        "shoulder_up": (-0.004, 0.031), "shoulder_width": (1.11, 0.17)}


def _joint_convention(rng: np.random.Generator, uv: np.ndarray) -> np.ndarray:
    """Image joints ``[T, V, 2]`` with one clip-wide systematic offset of the hips and the
    shoulders along the trunk (in trunk lengths) and of their widths, drawn from the measured
    BlazePose-vs-MoveNet offsets (:data:`BLAZEPOSE_CONVENTION`) for half the clips; the other
    half keep the joint centres as they are (a COCO-trained estimator's convention)."""
    if rng.random() < 0.5:
        return uv.copy()
    out = uv.copy()
    hips, shoulders = uv[:, [_LHIP, _RHIP]].mean(1), uv[:, [_LSHO, _RSHO]].mean(1)
    trunk = shoulders - hips  # [T, 2]
    draw = {k: rng.normal(mean, sd) for k, (mean, sd) in BLAZEPOSE_CONVENTION.items()}
    hip_up = float(np.clip(draw["hip_up"], -0.15, 0.1))
    sh_up = float(np.clip(draw["shoulder_up"], -0.1, 0.1))
    hip_wide = float(np.clip(draw["hip_width"], 0.7, 1.4))
    sh_wide = float(np.clip(draw["shoulder_width"], 0.75, 1.5))
    for (left, right), along, wide in (((_LHIP, _RHIP), hip_up, hip_wide), ((_LSHO, _RSHO), sh_up, sh_wide)):
        mid = uv[:, [left, right]].mean(1)
        half = uv[:, left] - mid
        out[:, left] = mid + trunk * along + half * wide
        out[:, right] = mid + trunk * along - half * wide
    return out


def estimator_noise(rng: np.random.Generator, joints: np.ndarray, cam: Camera,
                    quality: float | None = None, *, score_style: str | None = None,
                    occluder: str | None = None, jitter: float = 1.0,
                    leg_swing: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """What a top-down pose estimator reports for one person.

    ``joints``: world joints ``[T, 17, 3]``. ``score_style``: one of :data:`SCORE_STYLES`
    (default drawn). ``occluder``: None or one of :data:`OCCLUDERS` (hidden joints get low
    scores and an estimator's guess for a position). Returns ``keypoint [T, 17, 2]`` (float32
    pixels), ``keypoint_score [T, 17]`` (float32, zeros in frames where the person is missing)
    and a dict of intermediate arrays (``clean`` projection, ``noiseless``: where this
    estimator's convention puts the joints before any noise, ``present`` frames, ``sigma``
    jitter, ``hidden`` joints). ``jitter`` scales the coordinate jitter (0.15 for a person
    held still, photo-like). ``leg_swing`` < 1 reports the knees and the ankles that much
    closer to their left/right midpoint (how the front end draws a gait's legs:
    :data:`FRONT_END_LEG_SWING`).
    """
    h, w = cam.img_shape
    t_len, v_len = joints.shape[:2]
    uv, depth = cam.project(joints)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (depth > 0.2)
    score_style = score_style or _choice(rng, SCORE_STYLES, _SCORE_STYLE_WEIGHTS)
    if score_style not in SCORE_STYLES:
        raise ValueError(f"unknown score style {score_style!r}; known: {', '.join(SCORE_STYLES)}")
    if occluder is not None and occluder not in OCCLUDERS:
        raise ValueError(f"unknown occluder {occluder!r}; known: {', '.join(OCCLUDERS)}")
    hidden = _occlusion_mask(rng, uv, occluder) if occluder else np.zeros((t_len, v_len), dtype=bool)
    ext = uv.max(axis=1) - uv.min(axis=1)
    size = np.clip(ext.max(axis=-1), 8.0, None)  # person size in pixels [T]

    to_cam = cam.position[None, None, :] - joints
    to_cam /= np.linalg.norm(to_cam, axis=-1, keepdims=True) + 1e-9
    q = rng.uniform(0.82, 0.96) if quality is None else quality
    score = q + _SCORE_OFFSET[None, :] + 0.03 * _smooth_noise(rng, (t_len, 1), 0.9)
    # self-occlusion: the far side of the body
    occ = rng.uniform(0.15, 0.4)
    lat_up = joints[:, _LSHO] - joints[:, _RSHO]
    lat_lo = joints[:, _LHIP] - joints[:, _RHIP]
    lat_up /= np.linalg.norm(lat_up, axis=-1, keepdims=True) + 1e-9
    lat_lo /= np.linalg.norm(lat_lo, axis=-1, keepdims=True) + 1e-9
    face_left = np.zeros((t_len, v_len))
    face_left[:, _UPPER] = (lat_up[:, None, :] * to_cam[:, _UPPER]).sum(-1)
    face_left[:, _UPPER + 1] = -(lat_up[:, None, :] * to_cam[:, _UPPER + 1]).sum(-1)
    face_left[:, _LOWER] = (lat_lo[:, None, :] * to_cam[:, _LOWER]).sum(-1)
    face_left[:, _LOWER + 1] = -(lat_lo[:, None, :] * to_cam[:, _LOWER + 1]).sum(-1)
    weight = np.ones(v_len)
    weight[[7, 8, 9, 10]] = 1.25
    weight[[1, 2]] = 0.7
    score -= occ * weight * np.clip(-face_left, 0.0, 1.0)
    # the face seen from behind
    head_fwd = joints[:, _NOSE] - 0.5 * (joints[:, _LEAR] + joints[:, _REAR])
    head_fwd /= np.linalg.norm(head_fwd, axis=-1, keepdims=True) + 1e-9
    facing = (head_fwd * to_cam[:, _NOSE]).sum(-1)
    score[:, :3] -= rng.uniform(0.25, 0.45) * np.clip(-facing, 0.0, 1.0)[:, None]
    # lying bodies and small persons are harder
    axis = 0.5 * (joints[:, _LSHO] + joints[:, _RSHO] - joints[:, _LHIP] - joints[:, _RHIP])
    horiz = 1.0 - np.abs(axis[:, 2]) / (np.linalg.norm(axis, axis=-1) + 1e-9)
    score -= (0.12 * horiz + 0.3 * np.clip((60.0 - size) / 60.0, 0.0, 1.0))[:, None]
    score += rng.uniform(0.02, 0.05) * _smooth_noise(rng, (t_len, v_len), 0.5)
    # missed joints
    miss = _runs(rng, (t_len, v_len), rng.uniform(0.002, 0.02) * (1.0 + 2.0 * horiz.mean()))
    score = np.where(miss, rng.uniform(0.05, 0.35, (t_len, v_len)), score)
    # out of the frame
    near_edge = ((uv[..., 0] < 0.02 * w) | (uv[..., 0] > 0.98 * w) | (uv[..., 1] < 0.02 * h) | (uv[..., 1] > 0.98 * h))
    score = score - 0.1 * near_edge
    score = np.where(hidden, rng.uniform(0.02, 0.35, (t_len, v_len)), score)
    score = np.where(inside, score, rng.uniform(0.02, 0.3, (t_len, v_len)))
    score = np.clip(score, 0.01, 1.0)  # a present person's joints all have a score > 0

    # where an estimator puts the hips and shoulders is a convention of its training data:
    # BlazePose's hips sit lower than a COCO-trained estimator's (BLAZEPOSE_CONVENTION)
    kp = _joint_convention(rng, uv)
    if leg_swing < 1.0:  # the legs drawn closer together and straighter (FRONT_END_LEG_SWING)
        for left, right in _KNEES_ANKLES:
            mid = 0.5 * (kp[:, left] + kp[:, right])
            kp[:, left], kp[:, right] = mid + leg_swing * (kp[:, left] - mid), mid + leg_swing * (kp[:, right] - mid)
        for hip, knee, ankle in ((_LHIP, _LKNE, _LANK), (_RHIP, _RKNE, _RANK)):
            axis = kp[:, ankle] - kp[:, hip]
            along = ((kp[:, knee] - kp[:, hip]) * axis).sum(-1, keepdims=True) / ((axis * axis).sum(-1, keepdims=True) + 1e-9)
            on_line = kp[:, hip] + along * axis
            kp[:, knee] = on_line + leg_swing * (kp[:, knee] - on_line)
    noiseless = kp.copy()
    # coordinates: correlated jitter growing as the score drops, box jitter, misses (the
    # parameters' sources: the comments at _JITTER_FLOOR_PX)
    sigma0, sigma1 = rng.uniform(*_SIGMA0), rng.uniform(*_SIGMA1)
    sigma = jitter * (_JITTER_FLOOR_PX + size[:, None] * (sigma0 + sigma1 * (1.0 - score) ** 1.5))
    kp = kp + _smooth_noise(rng, (t_len, v_len, 2), rng.uniform(0.2, 0.7)) * sigma[..., None]
    kp += (_smooth_noise(rng, (t_len, 1, 2), 0.8) * _BOX_JITTER * size[:, None, None])
    center = uv.mean(axis=1, keepdims=True)
    kp += (kp - center) * (_SCALE_JITTER * _smooth_noise(rng, (t_len, 1, 1), 0.8))
    if hidden.any():  # an estimator's guess for what it cannot see: near, or far off
        guess = rng.standard_normal((1, v_len, 2)) * rng.uniform(0.03, 0.25) * size[:, None, None]
        kp = np.where(hidden[..., None], kp + guess + _smooth_noise(rng, (t_len, v_len, 2), 0.7)
                      * 0.03 * size[:, None, None], kp)
    if miss.any():
        snap = rng.random((t_len, v_len)) < 0.4
        away = rng.standard_normal((1, v_len, 2)) * rng.uniform(0.05, 0.25) * size[:, None, None]
        moved = np.where(snap[..., None], kp[:, _CONFUSED_WITH], kp + away)
        kp = np.where(miss[..., None], moved, kp)
    # left/right swaps, mostly for one frame: the measured rates at 70 px, more for smaller
    # people and for lying bodies (an assumption: nobody lies in the footage). Not more in
    # side views, as the earlier model had it: the footage, people of every orientation, shows
    # no such dependence to set it, and swaps of pairs that overlap in the image are the ones
    # no measurement can see
    view = 1.0 + 3.0 * horiz
    swapped = np.zeros(t_len, dtype=bool)
    for name, at_70px in _SWAP_RATE_70PX.items():
        if at_70px <= 0:
            continue
        rate = _size_rate(size, at_70px, _SWAP_SIZE_SCALE_PX) * view
        left, right = (list(side) for side in _SWAP_GROUPS[name])
        for ti in np.flatnonzero(rng.random(t_len) < rate):
            span = slice(ti, min(t_len, ti + (1 if rng.random() < 0.8 else 2)))
            kp[span, left + right] = kp[span, right + left]
            score[span, left + right] = score[span, right + left] * 0.9
            swapped[span] = True
    if rng.random() < 0.3:  # estimators that keep keypoints inside the (padded) image
        kp[..., 0] = np.clip(kp[..., 0], -0.02 * w, 1.02 * w - 1)
        kp[..., 1] = np.clip(kp[..., 1], -0.02 * h, 1.02 * h - 1)

    # track gaps: undetected or mostly outside the frame or behind the camera
    present = (inside.mean(axis=1) >= 0.35) & (size >= 16.0) & (depth.min(axis=1) > 0.2)
    # missed in a frame: the measured gap share for the person's size (_GAP_70PX), in runs of
    # 1-4 frames (2.5 on average)
    gap_rate = _size_rate(float(np.median(size)), _GAP_70PX, _GAP_SIZE_SCALE_PX) / 2.5
    present &= ~_runs(rng, (t_len, 1), float(gap_rate), 4)[:, 0]
    lost = _runs(rng, (t_len, 1), 0.01 * horiz.mean() * (cam.kind == "level"), 5)[:, 0]
    present &= ~lost
    # the front end's score style, once the coordinates (which the estimator's own confidence
    # shaped) are made
    if score_style == "confident":  # BlazePose-like: sure of the trunk, bimodal on the limbs
        # a joint is unsure below a threshold of the underlying score, by group: where the
        # measured shares below 0.3 (arms 25 %, legs 1.4 %, face and trunk 0.1 %) come out
        threshold = np.full(v_len, rng.uniform(0.5, 0.65))
        threshold[list(_ARMS)] = rng.uniform(*_CONFIDENT_ARM_THRESHOLD)
        threshold[list(_LEGS)] = rng.uniform(*_CONFIDENT_LEG_THRESHOLD)
        sure = 1.0 / (1.0 + np.exp(-(score - threshold) / 0.05))
        sure[:, _TORSO_AND_FACE] = np.maximum(sure[:, _TORSO_AND_FACE], 0.985)
        confident = np.clip(sure * (0.995 + 0.006 * _smooth_noise(rng, (t_len, v_len), 0.6)), 0.01, 1.0)
        score = np.where(inside & ~hidden, confident, score)
    elif score_style == "flat":
        score = np.where(inside & ~hidden, 1.0, np.minimum(score, 0.3))
    elif score_style == "low":
        score = np.clip(score * rng.uniform(0.45, 0.75), 0.01, 1.0)
    kp = np.where(present[:, None, None], kp, 0.0)
    score = np.where(present[:, None], score, 0.0)
    info = {"clean": uv, "noiseless": noiseless, "present": present, "sigma": sigma, "inside": inside, "swapped": swapped,
            "missed": miss, "hidden": hidden, "score_style": score_style}
    return kp.astype(np.float32), score.astype(np.float32), info


# ============================================================================================
# Clips and datasets
# ============================================================================================


def _resolve_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is None:
        return ACTIONS
    classes = tuple(classes)
    unknown = [c for c in classes if c not in ACTIONS]
    if unknown:
        raise ValueError(f"unknown action(s) {', '.join(map(repr, unknown))}; known: {', '.join(ACTIONS)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {classes}")
    if not classes:
        raise ValueError("classes is empty")
    return classes


def _visible_fraction(cam: Camera, joints: np.ndarray) -> tuple[float, float]:
    uv, depth = cam.project(joints)
    h, w = cam.img_shape
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (depth > 0.3)
    frames = inside.mean(axis=1) >= 0.6
    return float(frames.mean()), float(depth.min())


def _bystander(t: np.ndarray, rng: np.random.Generator, cam: Camera, actor: np.ndarray) -> np.ndarray | None:
    """World joints of a bystander standing, walking or sitting elsewhere in view."""
    s = sample_subject(rng, "bystander")
    h, w = cam.img_shape
    actor_xy = actor[:, :, :2].reshape(-1, 2)
    for _ in range(6):
        p = _floor_point(cam, rng.uniform(0.1, 0.9) * w, rng.uniform(0.55, 0.98) * h)
        if p is None:
            continue
        if np.min(np.linalg.norm(actor_xy - p[:2], axis=-1)) < 0.8:
            continue
        break
    else:
        return None
    what = _choice(rng, ("standing", "walking", "sitting"), (0.4, 0.45, 0.15))
    yaw = rng.uniform(-math.pi, math.pi)
    if what == "walking":
        m, speed = _gait(t, s, rng, run=False, yaw0=yaw)
        shift = p[:2] - m.anchor[len(t) // 2]
        m.anchor = m.anchor + shift
    elif what == "sitting":
        m = _seated(t, s, rng, yaw, p[:2], _choice(rng, ("upright", "leaning_back", "phone")))
    else:
        m = _standing(t, s, rng, yaw, p[:2], arms=_choice(rng, VARIANTS["standing"]))
    return world_joints(s.body, m)


def generate_clip(action: str | int, rng: np.random.Generator | int | None = None, *,
                  subject: Subject | None = None, classes: Sequence[str] | None = None,
                  variant: str | None = None, fps: float | None = None, duration: float | None = None,
                  img_shape: tuple[int, int] | None = None, camera_kind: str | None = None,
                  bystander: bool | float = False, noise: bool = True, frame_dir: str | None = None,
                  debug: bool = False, camera_kinds: Sequence[str] | None = None,
                  fall_families: Sequence[str] | None = None, occluder: str | float | None = 0.12,
                  score_style: str | None = None, still: float = 0.08) -> dict:
    """One labelled clip in the PYSKL annotation format (see the module docstring).

    ``action``: a class name or an index into ``classes`` (default :data:`ACTIONS`);
    ``label`` is its index in ``classes``. ``rng``: a Generator or a seed. ``subject``:
    whose body and style (default: a new random one). ``variant``: one of
    ``VARIANTS[action]`` (default random). ``fps`` (default 10-30), ``duration`` (seconds,
    default 1.5-6), ``img_shape`` ``(h, w)`` and ``camera_kind`` (one of
    :data:`CAMERA_KINDS`) fix those draws; ``camera_kinds`` limits the kinds drawn from.
    ``fall_families`` limits how falls and lying are made (:data:`FALL_FAMILIES`: hand-animated
    or a physics scenario). ``occluder``: one of :data:`OCCLUDERS`, None, or the probability of
    one (a table 3 times in 4). ``score_style``: one of :data:`SCORE_STYLES` (default drawn).
    ``still``: the probability that a person in a posture (standing, sitting, lying,
    squatting) is held perfectly still with little jitter, as a photo's skeleton repeated.
    ``bystander``: True, False, or the probability of a second person.
    ``noise=False`` gives the exact projection with visibility-only scores. ``debug=True``
    adds ``clip["debug"]``: world joints ``[M, T, 17, 3]``, the clean projection, the
    estimator's noiseless joints (its hip/shoulder convention applied), present frames,
    jitter sigma and the camera's parameters (numpy arrays; not for saving).

    Besides the PYSKL fields the clip carries its ``timeline`` (``(label, start_s, end_s)``
    tuples: what the actor does when, :func:`clip_timeline`) and its ``families`` (the body,
    style, camera and fall family it was drawn from), for served windows and held-out
    evaluation.
    """
    classes = _resolve_classes(classes)
    if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
        if not 0 <= int(action) < len(classes):
            raise ValueError(f"action index {action} out of range for {len(classes)} classes")
        action = classes[int(action)]
    if action not in classes:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(classes)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    subject = subject or sample_subject(rng, "S----")

    fps = float(fps or _FPS_CHOICES[int(rng.choice(len(_FPS_CHOICES), p=_FPS_WEIGHTS))])
    lo = _MIN_DURATION.get(action, 1.5)
    duration = float(duration or rng.uniform(lo, 6.0))
    t_len = max(8, int(round(duration * fps)))
    t = np.arange(t_len) / fps

    extra = {"fall_families": fall_families} if action in ("falling", "lying") else {}
    motion, variant, span, hints = _BUILDERS[action](t, subject, rng, variant, **extra)
    actor = hints["world"] if "world" in hints else world_joints(subject.body, motion)
    held_still = action in ("standing", "sitting", "lying", "squatting") and rng.random() < still
    if held_still:
        # one instant of the posture, held for the whole clip (its timeline is that posture)
        frozen = min(t_len - 1, int(round(0.5 * (span[0] + span[1]) * fps))) if action == "squatting" else t_len // 2
        actor = np.repeat(actor[frozen][None], t_len, axis=0)
        span = (0.0, float(t[-1]))
    if camera_kind is None:
        kinds = tuple(camera_kinds) if camera_kinds is not None else CAMERA_KINDS
        unknown = [k for k in kinds if k not in CAMERA_KINDS]
        if unknown or not kinds:
            raise ValueError(f"camera_kinds must be some of {', '.join(CAMERA_KINDS)}, got {kinds}")
        camera_kind = _choice(rng, kinds, [_CAMERA_WEIGHTS[CAMERA_KINDS.index(k)] for k in kinds])

    # camera: aimed at the action, retried until the actor is mostly in view
    target = actor.reshape(-1, 3).mean(axis=0)
    mid_yaw = float(motion["yaw"][t_len // 2])
    partly_out = rng.random() < 0.15  # people cut by the image border
    best = None
    for attempt in range(8):
        az = None
        if rng.random() < hints.get("face_camera", 0.0):
            az = mid_yaw + rng.uniform(-1.0, 1.0)
        cam = sample_camera(rng, target, subject.body.height, kind=camera_kind, img_shape=img_shape, azimuth=az)
        frac, min_depth = _visible_fraction(cam, actor)
        need = 0.6 if action in ("walking", "running") or partly_out else 0.85
        if min_depth > 0.5 and frac >= need:
            best = cam
            break
        if best is None or frac > best[1]:
            best = (cam, frac)
    else:
        best = best[0]
    cam = best

    people = [actor]
    p_by = float(bystander) if not isinstance(bystander, bool) else (1.0 if bystander else 0.0)
    if p_by > 0 and rng.random() < p_by:
        other = _bystander(t, rng, cam, actor)
        if other is not None:
            people.append(other)

    m_len = len(people)
    keypoint = np.zeros((m_len, t_len, NUM_KEYPOINTS, 2), dtype=np.float32)
    score = np.zeros((m_len, t_len, NUM_KEYPOINTS), dtype=np.float32)
    dbg = {"joints3d": np.stack(people).astype(np.float32), "clean": [], "noiseless": [], "present": [], "sigma": []}
    if occluder is None or isinstance(occluder, str):
        occlusion = occluder
    else:
        occlusion = ("table" if rng.random() < 0.75 else "side") if rng.random() < float(occluder) else None
    gait = action in ("walking", "running") and rng.random() < FRONT_END_LEG_SWING_SHARE
    leg_swing = float(rng.uniform(*FRONT_END_LEG_SWING)) if gait else 1.0
    for i, joints in enumerate(people):
        if noise:
            kp, sc, info = estimator_noise(rng, joints, cam, score_style=score_style,
                                           occluder=occlusion if i == 0 else None,
                                           jitter=0.15 if held_still and i == 0 else 1.0,
                                           leg_swing=leg_swing if i == 0 else 1.0)
        else:
            uv, depth = cam.project(joints)
            h, w = cam.img_shape
            inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (depth > 0.2)
            kp, sc = uv.astype(np.float32), np.where(inside, 1.0, 0.1).astype(np.float32)
            info = {"clean": uv, "noiseless": uv, "present": np.ones(t_len, dtype=bool),
                    "sigma": np.zeros((t_len, NUM_KEYPOINTS))}
        keypoint[i], score[i] = kp, sc
        for k in ("clean", "noiseless", "present", "sigma"):
            dbg[k].append(info[k])

    h, w = cam.img_shape
    cam_info = cam.describe()
    cam_info["distance"] = round(float(np.linalg.norm(cam.position - target)), 3)
    first = int(np.clip(math.floor(span[0] * fps), 0, t_len - 1))
    last = int(np.clip(math.ceil(span[1] * fps), first, t_len - 1))
    clip = {
        "frame_dir": frame_dir or f"synthetic_{action}",
        "label": int(classes.index(action)),
        "img_shape": (int(h), int(w)),
        "original_shape": (int(h), int(w)),
        "total_frames": int(t_len),
        "keypoint": keypoint,
        "keypoint_score": score,
        "class_names": classes,
        "action": action,
        "variant": variant,
        "subject": subject.id,
        "fps": fps,
        "action_frames": (first, last),
        "camera": cam_info,
        "actor": 0,
        "timeline": tuple((seg.label, round(seg.start, 4), round(seg.end, 4))
                          for seg in clip_timeline(action, span, float(t[-1]), hints)),
        "families": {"body": subject.body_family, "style": subject.style_family, "camera": cam.kind,
                     "fall": (variant.split("-from-")[0] if action == "falling" and "world" in hints else
                              variant[len("fallen-"):] if action == "lying" and "world" in hints else
                              "kinematic" if action in ("falling", "lying") else None),
                     "occluder": occlusion, "still": held_still},
    }
    if debug:
        clip["debug"] = {
            "joints3d": dbg["joints3d"],
            "clean": np.stack(dbg["clean"]).astype(np.float32),
            "noiseless": np.stack(dbg["noiseless"]).astype(np.float32),
            "present": np.stack(dbg["present"]),
            "sigma": np.stack(dbg["sigma"]).astype(np.float32),
            "camera_position": cam.position.copy(),
            "camera_rotation": cam.rotation.copy(),
            "focal": cam.focal,
            "k1": cam.k1,
            "span_seconds": span,
            "hints": hints,
        }
    return clip


def generate_dataset(num_clips: int, classes: Sequence[str] | None = None, seed: int = 0,
                     val_fraction: float = 0.2, bystander_prob: float = 0.25, progress: bool = True,
                     num_subjects: int | None = None, extra_train_clips: int = 0) -> dict:
    """A synthetic dataset dict ready for ``save_dataset``: ``split`` (``train``/``val`` lists
    of frame_dir), ``annotations`` (the clips) and ``class_names`` (a top-level copy of the
    class tuple, which ``save_dataset`` drops; each clip carries it too).

    Classes are balanced (clip i has class ``i % len(classes)``). Clips are grouped into
    subjects (body + motion style), by default ``max(ceil(num_clips / len(classes)),
    min(num_clips, 10))`` of them, so that in a large dataset each subject performs every
    class once; ``val_fraction`` of the subjects (at least one when it is > 0 and there are
    two subjects with clips) go to ``val``, and their clips never appear in ``train``. Clip
    ``i`` depends only on ``seed``, ``i`` and its subject, so the same arguments give
    byte-identical arrays.

    ``extra_train_clips`` adds that many clips to ``train`` only, performed by further, new
    subjects (each performing every class in turn), after the ``num_clips`` clips: more training
    data with the ``val`` split exactly that of the same arguments without it. Extra clip ``j``
    draws from clip ``num_clips + j``'s random stream, so it too depends only on the arguments.
    """
    classes = _resolve_classes(classes)
    if not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
        raise ValueError(f"num_clips must be a positive int, got {num_clips!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    k = len(classes)
    if num_subjects is not None and (not isinstance(num_subjects, (int, np.integer)) or num_subjects < 1):
        raise ValueError(f"num_subjects must be a positive int, got {num_subjects!r}")
    if not isinstance(extra_train_clips, (int, np.integer)) or extra_train_clips < 0:
        raise ValueError(f"extra_train_clips must be an int >= 0, got {extra_train_clips!r}")
    n_subj = int(num_subjects) if num_subjects else max(math.ceil(num_clips / k), min(num_clips, 10))
    blocks = math.ceil(num_clips / k)
    # each subject performs whole blocks of one clip per class; with fewer blocks than
    # subjects the clips are dealt out to the subjects in turn instead
    subject_of = [(i // k) % n_subj if blocks >= n_subj else i % n_subj for i in range(num_clips)]
    used = sorted(set(subject_of))
    n_val = 0 if val_fraction == 0 or len(used) < 2 else \
        min(len(used) - 1, max(1, int(round(len(used) * val_fraction))))
    order = np.random.default_rng([seed, 0]).permutation(len(used))
    val_subjects = {used[int(i)] for i in order[:n_val]}
    # the extra clips' subjects come after the n_subj of the main clips: none of them is in val
    n_extra_subj = math.ceil(extra_train_clips / k)
    subject_of += [n_subj + j // k for j in range(extra_train_clips)]
    subjects = [sample_subject(np.random.default_rng([seed, 1, i]), f"S{i:04d}") for i in range(n_subj + n_extra_subj)]

    iterator = range(num_clips + extra_train_clips)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="synthetic clips", unit="clip")
    annotations, train, val = [], [], []
    for i in iterator:
        action = classes[i % k]
        si = subject_of[i]
        rng = np.random.default_rng([seed, 2, i])
        clip = generate_clip(action, rng, subject=subjects[si], classes=classes, bystander=bystander_prob,
                             frame_dir=f"synth{seed}_{i:06d}_{subjects[si].id}_{action}")
        annotations.append(clip)
        (val if si in val_subjects else train).append(clip["frame_dir"])
    return {"split": {"train": train, "val": val}, "annotations": annotations, "class_names": classes}
