"""Falls simulated with physics: the CMU humanoid of dm-control (``suite/humanoid_CMU.xml``:
31 bodies with human proportions and joint limits) as a ragdoll in MuJoCo.

Hand-written joint-angle animation knows few ways of ending up on the floor; a body that
loses its balance and falls under gravity finds endless ones. :func:`simulate_fall` starts
the humanoid standing (or walking at ``speed``), makes it lose its balance the way a
``scenario`` says (a push, a trip, a slip, a faint, buckling knees, a slump, a sideways
topple), and records its COCO-17 joints until it comes to rest. Its muscles are joint
springs (``tone``: stiffness and damping) pulling toward a random rest posture, so bodies
come to rest curled, spread, on the back, front or side, sitting or kneeling; some falls
end against furniture (a box standing in the way). :func:`retarget` moves the recorded
motion onto a subject of :mod:`.synthetic` (its bone lengths), :func:`down_kind` reads a
posture.

MuJoCo and dm-control are optional (``pip install "posestream[synth]"`` and ``pip install
--no-deps dm-control``; only dm-control's model file is used): :func:`available` says
whether they are installed, and the generator falls back to its hand-animated falls when
they are not.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: How a simulated fall begins (:func:`simulate_fall`).
SCENARIOS = ("trip", "slip", "push", "faint", "knees", "slump", "sideways")

#: Resting postures :func:`down_kind` tells apart.
DOWN_KINDS = ("upright", "sitting", "kneeling", "back", "front", "left", "right")

# COCO-17 joints from the humanoid's bodies (a body's origin is its joint with its parent).
_COCO_BODIES = {5: "lhumerus", 6: "rhumerus", 7: "lradius", 8: "rradius", 9: "lwrist", 10: "rwrist",
                11: "lfemur", 12: "rfemur", 13: "ltibia", 14: "rtibia", 15: "lfoot", 16: "rfoot"}
# The head's frame: x to the person's left, y up, z forward; its origin is at the top of the
# neck, the ears ~0.1 m above it.
_HEAD_CENTRE = np.array([0.0, 0.10, 0.0])
# A standing posture (the model's zero pose is a T-pose with the legs apart).
_STANDING = {"lfemurrz": -0.34, "rfemurrz": 0.34, "lhumerusrz": 1.4, "rhumerusrz": -1.4,
             "lhumerusrx": -0.5, "rhumerusrx": -0.5, "lradiusrx": 0.2, "rradiusrx": 0.2}
# Bodies whose contact with the floor is no impact (standing on them is what the feet do).
_FEET = ("lfoot", "ltoes", "rfoot", "rtoes")
_CMU_LEG = 0.81  # hip -> knee -> ankle of the model, metres

_OBSTACLES = ("table", "chair", "wall", "step")


def model_path() -> Path | None:
    """dm-control's ``suite/humanoid_CMU.xml``, found without importing dm-control (its
    own API does not work with every MuJoCo release; only the model file is used)."""
    spec = importlib.util.find_spec("dm_control")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "suite" / "humanoid_CMU.xml"
    return path if path.is_file() else None


def available() -> bool:
    """Whether MuJoCo and dm-control's humanoid model are installed."""
    return importlib.util.find_spec("mujoco") is not None and model_path() is not None


@dataclass(frozen=True)
class SimulatedFall:
    """A recorded fall: ``joints`` ``[T, 17, 3]`` COCO-17 in the world (metres, z up, floor
    z = 0) of the humanoid's own body at times ``t`` (seconds from the loss of balance);
    ``impact``: when something other than the feet first hit the floor; ``down``: the
    posture at the end (:func:`down_kind`); ``heading``: the rotation about z of the body at
    the start (0: facing -y); ``obstacle``: what stood in the way, if anything."""

    scenario: str
    t: np.ndarray
    joints: np.ndarray
    impact: float
    down: str
    heading: float
    obstacle: str | None


@lru_cache(maxsize=1)
def _base():
    import mujoco

    path = model_path()
    if path is None or importlib.util.find_spec("mujoco") is None:
        raise RuntimeError('physics falls need MuJoCo and dm-control: pip install "posestream[synth]" '
                           "&& pip install --no-deps dm-control==1.0.50")
    model = mujoco.MjModel.from_xml_path(str(path))
    return model, _names(model)


def _names(model):
    import mujoco

    bodies = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i): i for i in range(model.nbody)}
    joints = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, i): i for i in range(model.njnt)}
    return bodies, joints


def _with_obstacle(rng: np.random.Generator, kind: str, toward: float):
    """The model with a box of ``kind`` standing in the direction ``toward`` (rad about z,
    0 = +x) from the feet; compiled anew (MuJoCo sizes a geom's collision bounds at compile)."""
    import mujoco

    spec = mujoco.MjSpec.from_file(str(model_path()))
    if kind == "table":
        half, dist = [rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.5), rng.uniform(0.35, 0.4)], rng.uniform(0.55, 0.9)
    elif kind == "chair":
        half, dist = [0.22, 0.22, rng.uniform(0.2, 0.25)], rng.uniform(0.45, 0.75)
    elif kind == "wall":
        half, dist = [0.05, 1.5, 1.2], rng.uniform(0.35, 0.8)
    else:  # a step or a kerb at the feet
        half, dist = [0.1, 0.6, rng.uniform(0.04, 0.09)], rng.uniform(0.25, 0.35)
    geom = spec.worldbody.add_geom()
    geom.name = "obstacle"
    geom.type = mujoco.mjtGeom.mjGEOM_BOX
    geom.size = half
    geom.pos = [dist * math.cos(toward), dist * math.sin(toward), half[2]]
    geom.quat = [math.cos(toward / 2), 0.0, 0.0, math.sin(toward / 2)]
    model = spec.compile()
    return model, _names(model)


@dataclass
class _Plan:
    """What a scenario does to the body: its muscle tone, pushes, what is kept upright."""

    tone: float                    # multiplies the model's joint stiffness
    damping: float                 # multiplies its joint damping
    rest_spread: float             # how far the rest posture strays from standing (share of range)
    pushes: list                   # (body, force xyz in N, t0, t1)
    upright_gain: float = 0.0      # torque keeping the trunk vertical (buckling knees, slumps)
    upright_s: float = 0.0         # ... for this long
    knee_tone: float | None = None  # the knees' own tone (buckling)
    friction: float | None = None  # the floor's sliding friction for the first 0.4 s (a slip)
    speed: float = 0.0             # m/s forward at the start
    obstacle: str | None = None
    obstacle_toward: float = 0.0   # rad relative to the facing direction (0 = ahead)


def _plan(rng: np.random.Generator, scenario: str, speed: float | None) -> _Plan:
    u = rng.uniform
    ahead, back, side = 0.0, math.pi, (1 if rng.random() < 0.5 else -1) * math.pi / 2

    def horizontal(angle, magnitude):  # in the body frame: angle 0 = forward
        return [magnitude * math.cos(angle), magnitude * math.sin(angle), 0.0]

    if scenario == "push":
        angle = float(rng.choice([ahead, back, side])) + rng.normal(0, 0.3)
        p = _Plan(tone=u(0.2, 1.0), damping=u(0.5, 1.5), rest_spread=u(0.1, 0.4),
                  pushes=[("thorax", horizontal(angle, u(220, 480)), 0.0, u(0.1, 0.22))], obstacle_toward=angle)
    elif scenario == "trip":
        p = _Plan(tone=u(0.3, 1.0), damping=u(0.5, 1.5), rest_spread=u(0.1, 0.4), speed=speed or u(0.8, 1.6),
                  pushes=[("lfoot" if rng.random() < 0.5 else "rfoot", horizontal(back, u(150, 400)), 0.0, u(0.08, 0.15)),
                          ("thorax", horizontal(ahead, u(60, 160)), 0.0, u(0.1, 0.25))])
    elif scenario == "slip":
        p = _Plan(tone=u(0.3, 1.0), damping=u(0.5, 1.5), rest_spread=u(0.1, 0.4), friction=u(0.02, 0.1),
                  speed=speed or 0.0, obstacle_toward=back,
                  pushes=[("lfoot", horizontal(ahead, u(120, 300)), 0.0, u(0.08, 0.16)),
                          ("rfoot", horizontal(ahead + rng.normal(0, 0.3), u(80, 300)), 0.0, u(0.08, 0.16)),
                          ("thorax", horizontal(back, u(30, 100)), 0.0, 0.2)])
    elif scenario == "faint":
        angle = u(-math.pi, math.pi)
        p = _Plan(tone=u(0.02, 0.15), damping=u(0.3, 1.0), rest_spread=u(0.2, 0.6), knee_tone=0.0,
                  pushes=[("thorax", horizontal(angle, u(10, 60)), 0.0, 0.3)], obstacle_toward=angle)
    elif scenario == "knees":
        p = _Plan(tone=u(0.5, 1.5), damping=u(0.8, 2.0), rest_spread=u(0.05, 0.25), knee_tone=0.0,
                  upright_gain=u(150, 400), upright_s=u(1.0, 4.0),
                  pushes=[("thorax", horizontal(ahead, u(20, 60)), 0.0, 0.2),
                          ("ltibia", horizontal(ahead, u(60, 150)), 0.0, 0.15),
                          ("rtibia", horizontal(ahead, u(60, 150)), 0.0, 0.15)])
    elif scenario == "slump":
        p = _Plan(tone=u(0.2, 0.8), damping=u(0.8, 2.0), rest_spread=u(0.1, 0.4), knee_tone=0.0,
                  upright_gain=u(60, 250), upright_s=u(0.6, 2.0), obstacle_toward=back,
                  pushes=[("thorax", horizontal(back, u(15, 60)), 0.0, 0.25),
                          ("ltibia", horizontal(ahead, u(30, 90)), 0.0, 0.15),
                          ("rtibia", horizontal(ahead, u(30, 90)), 0.0, 0.15)])
    elif scenario == "sideways":
        p = _Plan(tone=u(0.2, 1.0), damping=u(0.5, 1.5), rest_spread=u(0.1, 0.4), obstacle_toward=side,
                  pushes=[("thorax", horizontal(side + rng.normal(0, 0.25), u(180, 400)), 0.0, u(0.1, 0.2)),
                          ("ltibia" if side > 0 else "rtibia", horizontal(ahead, u(40, 120)), 0.0, 0.15)])
    else:
        raise ValueError(f"unknown fall scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    p.speed = p.speed or (speed or 0.0)
    if rng.random() < {"push": 0.3, "faint": 0.25, "sideways": 0.3, "slump": 0.5, "trip": 0.2}.get(scenario, 0.0):
        p.obstacle = {"slump": "wall", "trip": "step"}.get(scenario) or str(rng.choice(_OBSTACLES[:3]))
        if scenario == "trip":
            p.obstacle_toward = 0.0
    return p


def _set_pose(model, data, joints: dict, pose: dict, heading: float) -> None:
    import mujoco

    data.qpos[:] = model.qpos0
    for name, value in pose.items():
        j = joints[name]
        lo, hi = model.jnt_range[j]
        data.qpos[model.jnt_qposadr[j]] = float(np.clip(value, lo, hi))
    # the zero pose's root quaternion turned about the world's z by the heading
    q_head = np.array([math.cos(heading / 2), 0.0, 0.0, math.sin(heading / 2)])
    quat = np.empty(4)
    mujoco.mju_mulQuat(quat, q_head, model.qpos0[3:7])
    data.qpos[3:7] = quat
    data.qvel[:] = 0.0
    mujoco.mj_forward(model, data)
    # stand on the floor: the lowest point of any geom just touches it
    data.qpos[2] += 0.002 - _lowest_point(model, data)
    mujoco.mj_forward(model, data)


def _lowest_point(model, data) -> float:
    low = np.inf
    for g in range(1, model.ngeom):
        if model.geom_bodyid[g] == 0:
            continue
        size, z_axis = model.geom_size[g], data.geom_xmat[g].reshape(3, 3)
        if model.geom_type[g] == 3:  # capsule: half-length along its z, then the radius
            reach = abs(z_axis[2, 2]) * size[1] + size[0]
        elif model.geom_type[g] == 6:  # box
            reach = float(np.abs(z_axis[2]) @ size)
        elif model.geom_type[g] == 4:  # ellipsoid, bounded by its largest radius
            reach = float(size.max())
        else:
            reach = float(size[0])
        low = min(low, float(data.geom_xpos[g, 2]) - reach)
    return low


def _coco(model, data, bodies: dict) -> np.ndarray:
    from posestream.train.data.synthetic import _FACE

    out = np.empty((17, 3))
    for k, name in _COCO_BODIES.items():
        out[k] = data.xpos[bodies[name]]
    head = bodies["head"]
    rot = data.xmat[head].reshape(3, 3)
    centre = data.xpos[head] + rot @ _HEAD_CENTRE
    # _FACE is in a head frame with x forward, y left, z up; the model's is x left, y up, z forward
    to_world = rot[:, [2, 0, 1]]
    out[0:5] = centre + _FACE @ to_world.T
    return out


def simulate_fall(rng: np.random.Generator | int, scenario: str, duration: float = 3.0, fps: float = 25.0,
                  speed: float | None = None, heading: float | None = None) -> SimulatedFall:
    """Simulate a fall of ``scenario`` for ``duration`` seconds, recorded at ``fps``
    (``round(duration * fps) + 1`` frames, the first at the loss of balance). ``speed``:
    forward walking speed at the start (m/s); ``heading``: the body's rotation about z
    (random when None). Deterministic for a seed. A simulation that goes unstable (MuJoCo
    warns, or the body ends up in the floor) or that does not bring the hips down (the body
    caught by the furniture) is drawn again with new parameters."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown fall scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    heading = float(rng.uniform(-math.pi, math.pi) if heading is None else heading)
    for _ in range(12):
        fall = _simulate_once(rng, scenario, duration, fps, speed, heading)
        if fall is not None:
            return fall
    raise RuntimeError(f"ragdoll: no {scenario} simulation in 12 attempts came down stably")


def _simulate_once(rng, scenario, duration, fps, speed, heading) -> SimulatedFall | None:
    import mujoco

    plan = _plan(rng, scenario, speed)
    base, (bodies, joints) = _base()
    if plan.obstacle is not None:
        model, (bodies, joints) = _with_obstacle(rng, plan.obstacle, heading - math.pi / 2 + plan.obstacle_toward)
    else:
        model = copy.copy(base)
    data = mujoco.MjData(model)
    model.opt.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    steps = max(1, math.ceil(1.0 / (fps * 0.002)))
    model.opt.timestep = 1.0 / (fps * steps)

    # the standing posture, a little varied
    pose = {name: value + rng.normal(0.0, 0.05) for name, value in _STANDING.items()}
    for side in "lr":
        pose[f"{side}femurrx"] = rng.normal(-0.05, 0.05)
        pose[f"{side}tibiarx"] = abs(rng.normal(0.05, 0.05)) + 0.02
    _set_pose(model, data, joints, pose, heading)
    standing_qpos = data.qpos.copy()

    # muscle tone: springs toward a rest posture between standing and somewhere in the joint ranges
    stiffness, damping = base.jnt_stiffness.copy(), base.dof_damping.copy()
    model.jnt_stiffness[:] = stiffness * plan.tone
    model.dof_damping[:] = damping * plan.damping
    spring = standing_qpos.copy()
    knees = {i for name, i in joints.items() if "tibia" in name}
    for j in range(1, model.njnt):
        lo, hi = model.jnt_range[j]
        adr = model.jnt_qposadr[j]
        target = rng.uniform(lo, hi)
        spring[adr] = (1 - plan.rest_spread) * standing_qpos[adr] + plan.rest_spread * target
        if plan.knee_tone is not None and j in knees:
            model.jnt_stiffness[j] = stiffness[j] * plan.knee_tone
    model.qpos_spring[:] = spring
    if plan.friction is not None:
        floor_friction = model.geom_friction[0].copy()
        model.geom_friction[0, 0] = plan.friction

    forward = np.array([math.sin(heading), -math.cos(heading), 0.0])  # facing -y at heading 0
    left = np.array([math.cos(heading), math.sin(heading), 0.0])
    if plan.speed:
        data.qvel[0:3] = plan.speed * forward
    pushes = [(bodies[b], f[0] * forward + f[1] * left, t0, t1) for b, f, t0, t1 in plan.pushes]
    feet = {bodies[n] for n in _FEET}
    upright = (bodies["root"], bodies["thorax"])

    n = int(round(duration * fps)) + 1
    out = np.empty((n, 17, 3))
    impact = None
    for i in range(n):
        if i:
            for _ in range(steps):
                now = data.time
                data.xfrc_applied[:] = 0.0
                for body, force, t0, t1 in pushes:
                    if t0 <= now < t1:
                        data.xfrc_applied[body, :3] = force
                if plan.upright_gain and now < plan.upright_s:
                    # torques turning the pelvis's and the thorax's up axes (their local y) back
                    # to vertical: the trunk stays up while the legs give way
                    for body in upright:
                        up = data.xmat[body].reshape(3, 3)[:, 1]
                        omega = data.cvel[body, :3]
                        data.xfrc_applied[body, 3:] += plan.upright_gain * (np.cross(up, [0.0, 0.0, 1.0]) - 0.1 * omega)
                if plan.friction is not None and now >= 0.4:
                    model.geom_friction[0] = floor_friction
                    plan.friction = None
                mujoco.mj_step(model, data)
            if impact is None:
                for c in data.contact[:data.ncon]:
                    g1, g2 = c.geom1, c.geom2
                    other = g2 if g1 == 0 else g1 if g2 == 0 else None
                    if other is not None and model.geom_bodyid[other] not in feet:
                        impact = float(data.time)
                        break
        if not np.isfinite(data.qpos).all():
            log.warning("ragdoll: an unstable %s simulation drawn again", scenario)
            return None
        out[i] = _coco(model, data, bodies)
    if data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number or out[..., 2].min() < -0.05:
        log.warning("ragdoll: an unstable %s simulation drawn again", scenario)
        return None
    t = np.arange(n) / fps
    hips = out[:, [11, 12], 2].mean(1)
    if hips[-1] > 0.45:  # caught by the furniture, or never lost its balance: no fall
        return None
    if impact is None:  # nothing but the feet touched: when the hips came halfway down
        below = np.flatnonzero(hips < 0.5 * hips[0])
        impact = float(t[below[0]]) if len(below) else float(t[-1])
    return SimulatedFall(scenario=scenario, t=t, joints=out, impact=impact, down=down_kind(out[-1]),
                         heading=heading, obstacle=plan.obstacle)


def down_kind(joints: np.ndarray) -> str:
    """The posture of COCO-17 ``joints`` ``[17, 3]`` (metres, z up, floor z = 0):
    ``upright`` (hips high), ``back``/``front``/``left``/``right`` (the trunk within 35
    degrees of horizontal; the side the body lies on), ``kneeling`` (trunk up, knees on the
    floor, hips above them) or ``sitting`` (trunk up, hips low)."""
    j = np.asarray(joints, dtype=np.float64)
    hips, shoulders = j[[11, 12]].mean(0), j[[5, 6]].mean(0)
    up = shoulders - hips
    length = float(np.linalg.norm(up)) or 1.0
    up = up / length
    if up[2] < math.sin(math.radians(35)):  # the trunk lies
        left = (j[5] + j[11]) - (j[6] + j[12])
        left -= (left @ up) * up
        left /= float(np.linalg.norm(left)) or 1.0
        facing = np.cross(left, up)  # the chest's direction
        if facing[2] > 0.5:
            return "back"
        if facing[2] < -0.5:
            return "front"
        return "left" if left[2] < 0 else "right"
    if hips[2] > 0.55:
        return "upright"
    knees = j[[13, 14], 2]
    if knees.max() < 0.15 and hips[2] > knees.max() + 0.15:
        return "kneeling"
    return "sitting"


def retarget(joints: np.ndarray, body, clearance: float | np.ndarray = 0.04) -> np.ndarray:
    """The simulated ``joints`` ``[T, 17, 3]`` moved onto ``body`` (a
    :class:`.synthetic.Body`): every bone keeps its direction and takes the subject's length,
    the path over the floor is scaled by leg length, and each frame rests on the floor with
    every joint at least ``clearance`` (metres, per joint or one for all) above it."""
    j = np.asarray(joints, dtype=np.float64)
    out = np.empty_like(j)

    def toward(a, b):
        v = j[:, b] - j[:, a]
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)

    root = j[:, [11, 12]].mean(1)
    root[:, :2] *= body.leg / _CMU_LEG
    across = toward(12, 11)
    out[:, 11] = root + 0.5 * body.hip_width * across
    out[:, 12] = root - 0.5 * body.hip_width * across
    src_shoulders = j[:, [5, 6]].mean(1)
    spine = src_shoulders - j[:, [11, 12]].mean(1)
    shoulders = root + body.spine * spine / np.maximum(np.linalg.norm(spine, axis=-1, keepdims=True), 1e-9)
    across = toward(6, 5)
    out[:, 5] = shoulders + 0.5 * body.shoulder_width * across
    out[:, 6] = shoulders - 0.5 * body.shoulder_width * across
    for a, b, length in ((5, 7, body.upper_arm), (6, 8, body.upper_arm), (7, 9, body.forearm), (8, 10, body.forearm),
                         (11, 13, body.thigh), (12, 14, body.thigh), (13, 15, body.shin), (14, 16, body.shin)):
        out[:, b] = out[:, a] + length * toward(a, b)
    src_head = j[:, [3, 4]].mean(1)
    neck = src_head - src_shoulders
    head = shoulders + body.neck * neck / np.maximum(np.linalg.norm(neck, axis=-1, keepdims=True), 1e-9)
    out[:, 0:5] = head[:, None] + (j[:, 0:5] - src_head[:, None]) * body.head
    lift = (np.broadcast_to(np.asarray(clearance, dtype=np.float64), (17,))[None] - out[..., 2]).max(axis=1)
    out[..., 2] += lift[:, None]
    return out
