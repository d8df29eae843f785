"""Pose front ends: BGR frame -> people, each a box and a COCO-17 skeleton.

Every front end is a :class:`PoseEstimator`: ``estimator(frame_bgr)`` returns a list of
:class:`PersonPose` (box ``[5]`` = x1, y1, x2, y2, score and keypoints float32 ``[17, 3]`` =
x, y, score in image pixels, COCO order as :mod:`posestream.skeleton`), and
``estimator.timing`` holds the per-stage latency of the last call (:class:`PoseTiming`). The
two stages can also be called apart, for a pipeline that tracks boxes before it estimates
poses: ``people = estimator.detect(frame)`` then ``estimator.refine(frame, people)``.

===============  ===========================================================================
name             what runs (``make_pose_estimator(name, ...)``)
===============  ===========================================================================
default          :class:`MoveNetBlazePose`, MoveNet input long side 384 px
webcam           the same at long side 256 (a 640x480 frame -> 256x192): the fastest
surveillance     the same at long side 512 (768x576 -> 512x384): small, distant people
rtm              :class:`RtmTopDown`: your own RTMDet + RTMPose ONNX files (MMDeploy export)
mmpose           :class:`MMPoseTopDown`: MMPose's own inferencer, when ``mmpose`` is installed
===============  ===========================================================================

The default front end works offline from what pip installs: both networks ship as ONNX files
in ``posestream/engines/models/`` (converted once from Google's TFLite releases by
``benchmarks/pose_convert.py``; see ``models/MODEL_CARD.md``) and run in OpenVINO, or in ONNX
Runtime where OpenVINO is missing or fails (``backend=``: ``auto``, ``openvino``, ``onnx``; see
:mod:`posestream.engines.backend`).

:class:`MoveNetBlazePose` is top-down, as the PoseConv3D paper recommends (Sec. 3.1):

1. MoveNet MultiPose Lightning finds up to 6 people: boxes and 17 keypoints each. The frame is
   resized keeping its aspect ratio so that its long side is ``input_size`` and its short side
   the next multiple of 32 (the model's input size is dynamic), padding the rest with black.
   Overlapping detections of one person (MoveNet returns two on close-ups) are merged
   (:func:`dedup_people`: keypoint similarity, OKS, or near-identical boxes).
2. For each person, BlazePose GHUM full (MediaPipe's landmark model) runs on a 256x256 crop:
   a square around the box centre, side ``crop_scale`` x the box's longer side, rotated so
   that the hips-to-shoulders direction points up when MoveNet sees both (BlazePose was trained
   on upright, centred people, as MediaPipe's own ROI logic feeds it: this matters for people
   lying on the floor). Its 33 landmarks are refined with its heatmap (as MediaPipe does),
   mapped back to the frame and reduced to COCO-17 (:data:`BLAZEPOSE_TO_COCO`); a keypoint's
   score is ``min(sigmoid(visibility), sigmoid(presence))``.
3. A person MoveNet is sure of (score >= ``detection_threshold``) is always kept; when the
   landmark model's pose-presence score is below ``landmark_presence_threshold`` (MediaPipe's
   0.5) it keeps MoveNet's keypoints (``source == "movenet"``): a partly visible or tiny person
   still has a skeleton. A weaker MoveNet candidate (score >= ``candidate_threshold``) is kept
   only when the landmark model confirms a person in its crop. Small people seen from above
   (surveillance) often score 0.05-0.2 in MoveNet while the landmark model is sure of them.
4. The final skeletons are de-duplicated again (two boxes on one person give the same BlazePose
   skeleton).
5. Between detections a pipeline may follow people by their landmarks instead
   (:meth:`MoveNetBlazePose.track`, as MediaPipe's pose pipeline does): each person's next
   crop comes from BlazePose's two auxiliary points (:meth:`BlazePoseLandmarks.crop_matrix_from_aux`),
   moved on by the person's last motion; ``posestream.realtime.perception`` says when the
   detector must run.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from posestream.errors import first_line
from posestream.skeleton import NUM_KEYPOINTS

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
MOVENET_FILE = "movenet_multipose_lightning.onnx"
LANDMARK_FILE = "pose_landmark_full.onnx"

# BlazePose landmark index of each COCO-17 keypoint (MediaPipe's pose_landmark topology:
# 0 nose, 2/5 left/right eye, 7/8 ears, 11/12 shoulders, 13/14 elbows, 15/16 wrists,
# 23/24 hips, 25/26 knees, 27/28 ankles; "left" is the person's left, as in COCO).
BLAZEPOSE_TO_COCO = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28], dtype=np.int64)
BLAZEPOSE_INPUT = 256
BLAZEPOSE_LANDMARKS = 39  # 33 body landmarks + 6 auxiliary (ROI) points
# COCO keypoint sigmas (the OKS constants of the COCO keypoint benchmark).
COCO_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                        0.107, 0.107, 0.087, 0.087, 0.089, 0.089], dtype=np.float32)
# MMPose / MMDet (RTMPose, RTMDet) input normalisation.
RTMPOSE_MEAN_RGB = (123.675, 116.28, 103.53)
RTMPOSE_STD_RGB = (58.395, 57.12, 57.375)
RTMDET_MEAN_BGR = (103.53, 116.28, 123.675)
RTMDET_STD_BGR = (57.375, 57.12, 58.395)


class PoseError(ValueError):
    """A one-line, user-facing error about a pose model, its file or its input."""


@dataclass
class PersonPose:
    """One person in one frame.

    box: float32 ``[5]`` = x1, y1, x2, y2, score (image pixels; the detector's box and score).
    keypoints: float32 ``[17, 3]`` = x, y, score (image pixels, COCO-17 order).
    source: which model gave the keypoints: ``"blazepose"``, ``"movenet"``, ``"rtmpose"``,
    ``"mmpose"``, or ``"detector"`` (a box without keypoints: all scores 0).
    presence: the landmark model's pose-presence score (NaN when it did not run).
    landmarks: BlazePose's 33 landmarks ``[33, 4]`` = x, y, visibility, presence (image
    pixels, probabilities) when it ran, else None.
    aux: BlazePose's two auxiliary points ``[2, 2]`` (image pixels: the hips' middle and the
    body's full-extent point) when it ran, else None: the next frame's crop is made from them
    when this person is tracked by landmarks (:meth:`MoveNetBlazePose.track`).
    """

    box: np.ndarray
    keypoints: np.ndarray
    source: str
    presence: float = float("nan")
    landmarks: np.ndarray | None = None
    aux: np.ndarray | None = None
    #: how far ``aux`` moved since this person's previous processed frame (``[2]`` pixels),
    #: when known: the next crop is moved on by as much (people walk out of a still crop when
    #: frames are processed 0.3 s or more apart)
    aux_motion: np.ndarray | None = None

    def next_aux(self) -> np.ndarray | None:
        """Where ``aux`` is expected in the next processed frame (constant motion), or None."""
        if self.aux is None:
            return None
        return self.aux if self.aux_motion is None else self.aux + self.aux_motion[None, :]

    @property
    def score(self) -> float:
        return float(self.box[4])


@dataclass
class PoseTiming:
    """Latency of the last call, in milliseconds: the detector (pre-processing, network,
    decoding), each run of the per-person pose/landmark stage (one per candidate it ran on,
    which for the default front end may include weak candidates it then left out), and the
    whole call."""

    detector_ms: float = 0.0
    landmarks_ms: list[float] = field(default_factory=list)
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"detector_ms": self.detector_ms, "landmarks_ms": list(self.landmarks_ms),
                "total_ms": self.total_ms}


class PoseEstimator(abc.ABC):
    """The interface of every pose front end.

    ``timing`` describes the last ``__call__``; it is replaced (never mutated) by each call, so
    another thread (a metrics endpoint) may read it at any time. An estimator itself is not
    thread-safe: give each thread its own.
    """

    name: str = "pose"
    #: Whether :meth:`track` can follow people from their last skeletons without the detector
    #: (a pipeline then runs :meth:`detect` only on some frames: DetectionSchedule).
    tracks_landmarks: bool = False

    def __init__(self) -> None:
        self.timing = PoseTiming()
        self._stage_ms: list[float] = []  # per-person stage times of the last refine()

    def tracker_thresholds(self) -> dict[str, float]:
        """Score thresholds for a ByteTrack-style tracker fed by this front end (keyword
        arguments of ``posestream.realtime.tracker.ByteTracker``): its defaults suit detectors
        whose person scores are calibrated like YOLOX's, which is what an empty dict means."""
        return {}

    @abc.abstractmethod
    def detect(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        """People found in the frame (boxes; detector keypoints where the detector has them)."""

    @abc.abstractmethod
    def refine(self, frame_bgr: np.ndarray, people: Sequence[PersonPose]) -> list[PersonPose]:
        """Top-down pose for each of ``people`` (their boxes), in the same order."""

    def __call__(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        frame_bgr = check_frame(frame_bgr)
        t0 = time.perf_counter()
        people = self.detect(frame_bgr)
        t1 = time.perf_counter()
        self._stage_ms = []
        out = self.refine(frame_bgr, people)
        t2 = time.perf_counter()
        self.timing = PoseTiming((t1 - t0) * 1e3, list(self._stage_ms), (t2 - t0) * 1e3)
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name}


# ----------------------------------------------------------------------------------------------
# Small helpers (public where tests and other engines use them)


def check_frame(frame: np.ndarray) -> np.ndarray:
    """A frame must be a ``[H, W, 3]`` uint8 (BGR) array; anything else is a one-line PoseError."""
    if not isinstance(frame, np.ndarray):
        raise PoseError(f"frame must be a numpy array [H, W, 3] uint8 (BGR), got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise PoseError(f"frame must have shape [H, W, 3] (BGR), got {list(frame.shape)}")
    if frame.dtype != np.uint8:
        raise PoseError(f"frame must be uint8 (BGR), got dtype {frame.dtype}")
    return frame


#: A person's box must be at least this many pixels wide and tall (inside the frame) to be
#: kept: a smaller one (or a zero-size one) is no person the pose or action models can read,
#: and a zero-size box matches no track, so it would start a new one every frame.
MIN_BOX_SIDE = 1.0


def usable_box(box: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray | None:
    """``box`` ``[5]`` (x1, y1, x2, y2, score) clipped to the frame, or None when it is not
    finite or smaller than :data:`MIN_BOX_SIDE` (NaN fails every comparison, so each test is
    written to pass only for real numbers)."""
    box = np.asarray(box, np.float32).reshape(-1)
    if box.shape[0] != 5 or not np.isfinite(box).all():
        return None
    fh, fw = frame_hw
    out = np.array([np.clip(box[0], 0, fw), np.clip(box[1], 0, fh), np.clip(box[2], 0, fw),
                    np.clip(box[3], 0, fh), box[4]], np.float32)
    if not (out[2] - out[0] >= MIN_BOX_SIDE and out[3] - out[1] >= MIN_BOX_SIDE):
        return None
    return out


def clean_keypoints(keypoints: np.ndarray) -> tuple[np.ndarray, int]:
    """``[17, 3]`` keypoints with every joint that has a non-finite coordinate or score set to
    (0, 0, 0) (a joint nobody saw) and scores clipped to [0, 1]; and how many joints were
    cleared. Raises ValueError for any other shape."""
    kp = np.asarray(keypoints, np.float32)
    if kp.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must be [{NUM_KEYPOINTS}, 3], got {list(kp.shape)}")
    bad = ~np.isfinite(kp).all(axis=1)
    out = kp.copy()
    out[bad] = 0.0
    np.clip(out[:, 2], 0.0, 1.0, out=out[:, 2])
    return out, int(bad.sum())


def box_from_keypoints(keypoints: np.ndarray, score: float = 1.0, min_score: float = 0.0) -> np.ndarray | None:
    """The box ``[5]`` around the finite keypoints scoring above ``min_score`` (for front
    ends that give skeletons without a box), or None when no keypoint qualifies."""
    kp = np.asarray(keypoints, np.float32).reshape(-1, 3)
    seen = np.isfinite(kp).all(axis=1) & (kp[:, 2] > min_score)
    if not seen.any():
        return None
    xy = kp[seen, :2]
    return np.array([*xy.min(axis=0), *xy.max(axis=0), score], np.float32)


def sanitize_people(people: Sequence[PersonPose], frame_hw: tuple[int, int]) -> tuple[list[PersonPose], int, int]:
    """What a front end returned, made safe for the tracker and the windows: people with a
    non-finite, zero-size or malformed box (or keypoints not ``[17, 3]``) are left out, and
    non-finite joints are cleared. Returns ``(kept, people_dropped, joints_cleared)``."""
    kept, dropped, cleared = [], 0, 0
    for person in people:
        box = usable_box(person.box, frame_hw)
        try:
            keypoints, n = clean_keypoints(person.keypoints)
        except ValueError:
            box = None
        if box is None:
            dropped += 1
            continue
        cleared += n
        if n or box is not person.box:
            person = dataclasses.replace(person, box=box, keypoints=keypoints)
        kept.append(person)
    return kept, dropped, cleared


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes x1, y1, x2, y2 (extra columns ignored)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def keypoint_oks(a: np.ndarray, b: np.ndarray, area: float, min_score: float = 0.2,
                 min_shared: int = 3) -> float:
    """Object keypoint similarity of two ``[17, 3]`` poses (as MMPose's ``oks_nms``): the mean,
    over keypoints confident (score >= ``min_score``) in both, of
    ``exp(-d^2 / (2 * area * (2 sigma)^2))``. Fewer than ``min_shared`` shared keypoints: 0."""
    shared = (a[:, 2] >= min_score) & (b[:, 2] >= min_score)
    if shared.sum() < min_shared or area <= 0:
        return 0.0
    d2 = ((a[shared, :2] - b[shared, :2]) ** 2).sum(axis=1)
    var = (2 * COCO_SIGMAS[shared]) ** 2
    return float(np.exp(-d2 / (2 * area * var)).mean())


def dedup_people(people: Sequence[PersonPose], oks_threshold: float = 0.5,
                 iou_threshold: float = 0.8) -> list[PersonPose]:
    """Greedy non-maximum suppression of poses of the same person, best score first.

    A pose is dropped when an already kept one has similar keypoints (OKS >= ``oks_threshold``,
    area = the mean of the two box areas) or an almost identical box (IoU >= ``iou_threshold``).
    Two real people side by side have overlapping boxes but different keypoints, so box IoU
    alone is kept strict. Keeps the input order of the survivors' scores (best first).
    """
    order = sorted(range(len(people)), key=lambda i: -people[i].score)
    kept: list[PersonPose] = []
    for i in order:
        p = people[i]
        dup = False
        for q in kept:
            area = 0.5 * (_box_area(p.box) + _box_area(q.box))
            if box_iou(p.box, q.box) >= iou_threshold or keypoint_oks(p.keypoints, q.keypoints, area) >= oks_threshold:
                dup = True
                break
        if not dup:
            kept.append(p)
    return kept


def _box_area(b: np.ndarray) -> float:
    return float(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    m = np.asarray(m, dtype=np.float64)
    a = m[:, :2]
    ai = np.linalg.inv(a)
    return np.hstack([ai, -ai @ m[:, 2:3]])


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points [..., 2]`` mapped by the 2x3 matrix ``m``."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(m, dtype=np.float64)[:, :2].T + np.asarray(m, dtype=np.float64)[:, 2]


def crop_transform(center: Sequence[float], side: float, angle: float, size: int) -> np.ndarray:
    """The 2x3 matrix mapping image pixels to a ``size x size`` crop: the square of side ``side``
    centred on ``center``, rotated by ``angle`` radians (the image content turns by ``angle``;
    positive turns the x axis towards the y axis), so ``center`` lands on the crop centre."""
    s = size / float(side)
    c, sn = math.cos(angle), math.sin(angle)
    r = np.array([[c, -sn], [sn, c]]) * s
    t = np.array([size / 2.0, size / 2.0]) - r @ np.asarray(center, dtype=np.float64)
    return np.hstack([r, t[:, None]])


def upright_angle(keypoints: np.ndarray, min_score: float = 0.3) -> float | None:
    """The rotation (radians, for :func:`crop_transform`) that turns the hips->shoulders
    direction of a COCO-17 pose straight up, or None when no shoulder or no hip is confident."""
    kp = np.asarray(keypoints)
    sh = [i for i in (5, 6) if kp[i, 2] >= min_score]
    hp = [i for i in (11, 12) if kp[i, 2] >= min_score]
    if not sh or not hp:
        return None
    v = kp[sh, :2].mean(axis=0) - kp[hp, :2].mean(axis=0)
    if not np.isfinite(v).all() or np.hypot(*v) < 1e-6:
        return None
    phi = math.atan2(v[1], v[0])
    angle = -math.pi / 2 - phi
    return math.atan2(math.sin(angle), math.cos(angle))  # wrap to (-pi, pi]


def rotated_extent(w: float, h: float, angle: float) -> float:
    """The side of the smallest axis-aligned square (in the rotated frame) holding a w x h box
    rotated by ``angle``."""
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    return max(w * c + h * s, w * s + h * c)


def blazepose_to_coco(landmarks: np.ndarray) -> np.ndarray:
    """``[33 or 39, >= 3]`` BlazePose landmarks (x, y, score, ...) -> COCO-17 ``[17, 3]``."""
    lm = np.asarray(landmarks)
    return np.ascontiguousarray(lm[BLAZEPOSE_TO_COCO, :3], dtype=np.float32)


def refine_from_heatmap(xy_norm: np.ndarray, heatmap: np.ndarray, index: Sequence[int] | None = None,
                        kernel: int = 7, min_confidence: float = 0.5) -> np.ndarray:
    """MediaPipe's ``RefineLandmarksFromHeatmapCalculator``: each landmark (normalised x, y)
    becomes the sigmoid-weighted mean of heatmap cell indices in a ``kernel``-wide window around
    it, divided by the heatmap size, when the window's max confidence reaches ``min_confidence``.

    xy_norm: ``[N, 2]`` landmarks (only those listed in ``index`` are refined; default all).
    heatmap: ``[Hh, Wh, C]`` logits (channel ``i`` is landmark ``i``).
    """
    out = np.array(xy_norm, dtype=np.float32, copy=True)
    hh, hw, _ = heatmap.shape
    off = (kernel - 1) // 2
    for i in (range(len(out)) if index is None else index):
        col, row = int(out[i, 0] * hw), int(out[i, 1] * hh)
        if out[i, 0] < 0 or out[i, 1] < 0 or col >= hw or row >= hh:  # outside: keep as is
            continue
        r0, r1 = max(0, row - off), min(hh, row + off + 1)
        c0, c1 = max(0, col - off), min(hw, col + off + 1)
        conf = sigmoid(heatmap[r0:r1, c0:c1, i])
        total = float(conf.sum())
        if total <= 0 or float(conf.max()) < min_confidence:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1]
        out[i, 0] = float((cols * conf).sum()) / hw / total
        out[i, 1] = float((rows * conf).sum()) / hh / total
    return out


def movenet_input_shape(height: int, width: int, input_size: int | Sequence[int]) -> tuple[int, int]:
    """MoveNet's input (H, W) for a frame: ``input_size`` = (H, W) as given, or an int = the long
    side, the short side following the frame's aspect ratio rounded up to a multiple of 32."""
    if isinstance(input_size, (int, np.integer)):
        long_side = int(input_size)
        if long_side < 32 or long_side % 32:
            raise PoseError(f"MoveNet input size must be a multiple of 32, got {long_side}")
        if width >= height:
            return max(32, int(math.ceil(height * long_side / width / 32)) * 32), long_side
        return long_side, max(32, int(math.ceil(width * long_side / height / 32)) * 32)
    h, w = (int(v) for v in input_size)
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise PoseError(f"MoveNet input height and width must be multiples of 32, got {h}x{w}")
    return h, w


def ort_session(path: str | os.PathLike, threads: int = 1, what: str = "model"):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (no spinning: the pose
    models share the CPU with the action engine)."""
    return pose_session(path, threads, what, backend="onnx")


def pose_session(path: str | os.PathLike, threads: int = 1, what: str = "model", backend: str = "auto",
                 triton: dict[str, Any] | None = None):
    """A session for a pose network on ``backend`` (``auto``, ``openvino``, ``onnx``, ``triton``
    with ``triton={"url": ...}``): OpenVINO, or ONNX Runtime's as the fallback (see
    :func:`posestream.engines.backend.open_session`); each has ONNX Runtime's
    ``run(output_names, feeds)``."""
    from posestream.engines.backend import BackendError, open_session

    try:
        return open_session(path, threads, what, backend=backend, error=PoseError, triton=triton)
    except BackendError as exc:
        raise PoseError(str(exc)) from None


def default_model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/posestream/models`` (``~/.cache/posestream/models`` by default): model
    files derived at load time (the dynamic-batch landmark model)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "posestream" / "models"


def dynamic_batch_model(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ONNX file at ``path`` with a dynamic batch dimension: a copy, written once to
    ``cache_dir`` (default :func:`default_model_cache_dir`) and named by the source's SHA-256,
    whose graph inputs and outputs have dimension 0 ``"batch"`` instead of 1 and whose Reshape
    targets that start with a literal 1 start with -1. That is all the shipped BlazePose
    landmark graph (tf2onnx's conversion of a batch-1 TFLite model) hard-codes; any runtime can
    then load the copy by its path. ``path`` itself when its batch is already dynamic. Raises
    PoseError when the graph has a batch-1 constant this rewrite does not know (a Reshape target
    of another form), so that a wrong copy is never used."""
    import hashlib
    import tempfile

    import onnx
    from onnx import numpy_helper

    src = Path(path)
    data = src.read_bytes()
    model = onnx.load_from_string(data)
    graph = model.graph
    dims = [v.type.tensor_type.shape.dim for v in list(graph.input) + list(graph.output)]
    if all(d and not d[0].HasField("dim_value") for d in dims):
        return src
    target = Path(cache_dir) if cache_dir is not None else default_model_cache_dir()
    out = target / f"{src.stem}.batch.{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    if out.is_file():
        return out
    for d in dims:
        if d and d[0].HasField("dim_value"):
            if d[0].dim_value != 1:
                raise PoseError(f"{src}: batch dimension is {d[0].dim_value}, expected 1 or dynamic")
            d[0].dim_param = "batch"
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape_init = inits.get(node.input[1])
        if shape_init is None:
            raise PoseError(f"{src}: Reshape {node.name} has a computed shape; cannot make its batch dynamic")
        shape = numpy_helper.to_array(shape_init).copy()
        if shape.size and shape[0] == 1:
            if (shape == -1).any():
                raise PoseError(f"{src}: Reshape {node.name} target {shape.tolist()} has both 1 and -1")
            shape[0] = -1
            shape_init.CopyFrom(numpy_helper.from_array(shape, shape_init.name))
    del graph.value_info[:]  # intermediate shapes recorded with batch 1
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, suffix=".onnx.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, out)  # atomic: another process loading it never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def shipped_model(name: str) -> Path:
    """The path of a model file shipped in ``posestream/engines/models``."""
    path = MODELS_DIR / name
    if not path.is_file():
        raise PoseError(f"{path}: shipped pose model missing; the installation is incomplete "
                        "(reinstall posestream; its package data holds the .onnx files)")
    return path


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - a dependency
        raise PoseError("OpenCV is needed for the pose front end: pip install 'opencv-python-headless<5'") from None
    return cv2


# ----------------------------------------------------------------------------------------------
# MoveNet MultiPose (detector) and BlazePose landmarks


class MoveNetDetector:
    """MoveNet MultiPose Lightning (OpenVINO or ONNX Runtime, ``backend``): up to 6 people, boxes and 17 keypoints.

    Input ``[1, H, W, 3]`` uint8 RGB (H, W multiples of 32); output ``[1, 6, 56]`` = 17 x
    (y, x, score) normalised to the input, then ymin, xmin, ymax, xmax, score.
    """

    def __init__(self, path: str | os.PathLike | None = None, input_size: int | Sequence[int] = 384,
                 threads: int = 1, score_threshold: float = 0.2, dedup_oks: float = 0.5,
                 dedup_iou: float = 0.8, backend: str = "auto", triton: dict[str, Any] | None = None) -> None:
        movenet_input_shape(480, 640, input_size)  # validates
        self.path = Path(path) if path is not None else shipped_model(MOVENET_FILE)
        self.session = pose_session(self.path, threads, "MoveNet model", backend, triton)
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = input_size
        self.score_threshold = float(score_threshold)
        self.dedup_oks = float(dedup_oks)
        self.dedup_iou = float(dedup_iou)
        self._canvas: np.ndarray | None = None

    def preprocess(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """The network input ``[1, H, W, 3]`` uint8 RGB (frame resized to fit, padded with black
        at the bottom/right) and the resize factor."""
        cv2 = _cv2()
        h, w = frame_bgr.shape[:2]
        ih, iw = movenet_input_shape(h, w, self.input_size)
        s = min(ih / h, iw / w)
        nw, nh = min(iw, max(1, round(w * s))), min(ih, max(1, round(h * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(frame_bgr, (nw, nh), interpolation=interp)
        if self._canvas is None or self._canvas.shape != (1, ih, iw, 3):
            self._canvas = np.zeros((1, ih, iw, 3), np.uint8)
        else:
            self._canvas[:] = 0
        self._canvas[0, :nh, :nw] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        return self._canvas, s

    def decode(self, raw: np.ndarray, scale: float, input_hw: tuple[int, int],
               frame_hw: tuple[int, int]) -> list[PersonPose]:
        """``[6, 56]`` network output -> people above the score threshold, in image pixels."""
        ih, iw = input_hw
        fh, fw = frame_hw
        people = []
        for row in np.asarray(raw, dtype=np.float32).reshape(-1, 56):
            score = float(row[55])
            if not score >= self.score_threshold:
                continue
            kp = row[:51].reshape(17, 3)
            keypoints = np.empty((17, 3), np.float32)
            keypoints[:, 0] = kp[:, 1] * iw / scale
            keypoints[:, 1] = kp[:, 0] * ih / scale
            keypoints[:, 2] = kp[:, 2]
            y0, x0, y1, x1 = row[51:55]
            box = usable_box(np.array([x0 * iw / scale, y0 * ih / scale, x1 * iw / scale, y1 * ih / scale, score],
                                      np.float32), (fh, fw))
            if box is None:  # non-finite or zero-size
                continue
            people.append(PersonPose(box=box, keypoints=keypoints, source="movenet"))
        return dedup_people(people, self.dedup_oks, self.dedup_iou)

    def raw(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        x, s = self.preprocess(frame_bgr)
        out = self.session.run(None, {self.input_name: x})[0]
        return out[0], s, (x.shape[1], x.shape[2])

    def __call__(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        out, s, input_hw = self.raw(frame_bgr)
        return self.decode(out, s, input_hw, frame_bgr.shape[:2])


class BlazePoseLandmarks:
    """BlazePose GHUM full landmarks (MediaPipe ``pose_landmark_full``), OpenVINO or ONNX Runtime.

    Input ``[N, 256, 256, 3]`` float RGB in [0, 1]; outputs: ``[N, 195]`` = 39 x (x, y, z,
    visibility, presence) with x, y in input pixels and visibility/presence as logits, the
    pose-presence score ``[N, 1]`` (already a probability: MediaPipe thresholds it at 0.5 with
    no activation), a segmentation ``[N, 256, 256, 1]``, a heatmap ``[N, 64, 64, 39]`` (logits)
    and world landmarks ``[N, 117]``. The shipped file has a fixed batch of 1; with
    ``max_batch`` > 1 a dynamic-batch copy (:func:`dynamic_batch_model`) is loaded and
    :meth:`run_batch` runs up to ``max_batch`` crops per call (all people of a frame in one);
    with 1 (the default), or if that copy cannot be made, the file is loaded as it is and
    :meth:`run_batch` calls it once per crop. One crop per call is the default because it
    measured faster in ONNX Runtime on CPU (README, "Detection schedule and batched
    landmarks": 4 crops in one call took 87 ms of CPU, four calls 78 ms); a runtime or
    device where batches pay sets ``max_batch``.

    Besides the 33 body landmarks the model gives 6 auxiliary points; the first two (33: the
    hips' middle, 34: a point above the head at the body's full extent) are what MediaPipe
    turns into the next frame's crop (``pose_landmarks_to_roi``): :meth:`crop_matrix_from_aux`.
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 1, crop_scale: float = 1.25,
                 rotate: bool = True, refine: bool = True, backend: str = "auto", max_batch: int = 1,
                 triton: dict[str, Any] | None = None) -> None:
        self.path = Path(path) if path is not None else shipped_model(LANDMARK_FILE)
        load_path = self.path
        if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
            raise PoseError(f"landmark max_batch must be an integer >= 1, got {max_batch!r}")
        self.max_batch = 1
        if max_batch > 1:
            try:
                load_path = dynamic_batch_model(self.path)
                self.max_batch = int(max_batch)
            except (PoseError, OSError, ValueError) as exc:
                log.warning("%s: no dynamic-batch copy (%s); running one crop per call", self.path, first_line(exc))
        if triton is not None:  # the server knows the model by the shipped file's name, not the copy's
            from posestream.engines.triton_models import triton_model_name

            triton = {"model": triton_model_name(self.path), **triton}
        self.session = pose_session(load_path, threads, "BlazePose landmark model", backend, triton)
        self.load_path = load_path
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        shapes = [tuple(o.shape) for o in self.session.get_outputs()]
        self._landmarks_out = self._flag_out = self._heatmap_out = None
        for n, shp in zip(names, shapes):
            if shp[-1] == BLAZEPOSE_LANDMARKS * 5 and len(shp) == 2:
                self._landmarks_out = n
            elif len(shp) == 2 and shp[-1] == 1:
                self._flag_out = n
            elif len(shp) == 4 and shp[-1] == BLAZEPOSE_LANDMARKS:
                self._heatmap_out = n
        if self._landmarks_out is None or self._flag_out is None:
            raise PoseError(f"{self.path}: not a BlazePose landmark model (outputs {shapes})")
        self._outputs = [self._landmarks_out, self._flag_out] + ([self._heatmap_out] if self._heatmap_out else [])
        self.crop_scale = float(crop_scale)
        self.rotate = bool(rotate)
        self.refine_heatmap = bool(refine) and self._heatmap_out is not None

    def crop_matrix(self, person: PersonPose) -> np.ndarray:
        """Image -> 256x256 crop: square around the box centre, upright when possible."""
        x1, y1, x2, y2 = (float(v) for v in person.box[:4])
        angle = upright_angle(person.keypoints) if self.rotate else None
        angle = 0.0 if angle is None else angle
        side = self.crop_scale * max(rotated_extent(x2 - x1, y2 - y1, angle), 1.0)
        return crop_transform(((x1 + x2) / 2, (y1 + y2) / 2), side, angle, BLAZEPOSE_INPUT)

    def crop_matrix_from_aux(self, aux: np.ndarray, widen: float = 1.0) -> np.ndarray | None:
        """Image -> 256x256 crop for the next frame from this frame's auxiliary points ``[2, 2]``
        (image pixels; hips' middle, full-extent point), as MediaPipe's ``pose_landmarks_to_roi``:
        centred on the hips' middle, side ``2 * |p1 - p0|`` x ``crop_scale``, turned so that
        p0 -> p1 points up; ``widen`` times larger to search around there. None when the
        points are not finite or coincide."""
        aux = np.asarray(aux, np.float64)
        v = aux[1] - aux[0]
        dist = float(np.hypot(*v))
        if not np.isfinite(aux).all() or dist < 1.0:
            return None
        angle = 0.0
        if self.rotate:
            a = -math.pi / 2 - math.atan2(v[1], v[0])
            angle = math.atan2(math.sin(a), math.cos(a))
        return crop_transform(aux[0], widen * self.crop_scale * 2.0 * dist, angle, BLAZEPOSE_INPUT)

    def _crop(self, frame_bgr: np.ndarray, m: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        crop = cv2.warpAffine(frame_bgr, m.astype(np.float32), (BLAZEPOSE_INPUT, BLAZEPOSE_INPUT),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)

    def run_batch(self, frame_bgr: np.ndarray, matrices: Sequence[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Raw outputs for the crops given by ``matrices`` (``max_batch`` crops per network
        call): landmarks ``[N, 39, 5]``, presence ``[N]``, heatmaps ``[N, 64, 64, 39]`` (or None)."""
        n = len(matrices)
        if n == 0:
            return (np.zeros((0, BLAZEPOSE_LANDMARKS, 5), np.float32), np.zeros(0, np.float32),
                    None if self._heatmap_out is None else np.zeros((0, 64, 64, BLAZEPOSE_LANDMARKS), np.float32))
        x = np.stack([self._crop(frame_bgr, m) for m in matrices])
        step = self.max_batch
        runs = [self.session.run(self._outputs, {self.input_name: x[i:i + step]}) for i in range(0, n, step)]
        outs = runs[0] if len(runs) == 1 else [np.concatenate([r[k] for r in runs]) for k in range(len(self._outputs))]
        lm = np.asarray(outs[0]).reshape(n, BLAZEPOSE_LANDMARKS, 5)
        flags = np.asarray(outs[1], np.float32).reshape(n)
        heat = np.asarray(outs[2]) if len(outs) > 2 else None
        return lm, flags, heat

    def run(self, frame_bgr: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
        """Raw outputs for the crop given by ``m``: landmarks ``[39, 5]``, presence, heatmap."""
        lm, flags, heat = self.run_batch(frame_bgr, [m])
        return lm[0], float(flags[0]), None if heat is None else heat[0]

    def decode(self, lm: np.ndarray, flag: float, heat: np.ndarray | None, m: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """One crop's raw outputs -> (COCO-17 keypoints ``[17, 3]``, the 33 landmarks ``[33, 4]``,
        presence, the auxiliary points ``[2, 2]``), in image pixels."""
        xy = lm[:, :2] / BLAZEPOSE_INPUT
        if self.refine_heatmap and heat is not None:
            xy = refine_from_heatmap(xy, heat, index=BLAZEPOSE_TO_COCO)
        xy_img = apply_affine(invert_affine(m), xy * BLAZEPOSE_INPUT)
        vis, pres = sigmoid(lm[:, 3]), sigmoid(lm[:, 4])
        landmarks = np.empty((33, 4), np.float32)
        landmarks[:, :2] = xy_img[:33]
        landmarks[:, 2] = vis[:33]
        landmarks[:, 3] = pres[:33]
        score = np.minimum(vis, pres)
        keypoints = np.empty((NUM_KEYPOINTS, 3), np.float32)
        keypoints[:, :2] = xy_img[BLAZEPOSE_TO_COCO]
        keypoints[:, 2] = score[BLAZEPOSE_TO_COCO]
        return keypoints, landmarks, float(flag), xy_img[33:35].astype(np.float32)

    def __call__(self, frame_bgr: np.ndarray, person: PersonPose) -> tuple[np.ndarray, np.ndarray, float]:
        """-> (COCO-17 keypoints ``[17, 3]``, all 33 landmarks ``[33, 4]``, presence score),
        in image pixels."""
        m = self.crop_matrix(person)
        lm, flag, heat = self.run(frame_bgr, m)
        keypoints, landmarks, flag, _ = self.decode(lm, flag, heat, m)
        return keypoints, landmarks, flag


#: A carried person (:meth:`MoveNetBlazePose.refine`) whose box overlaps a detection this much
#: is that detection: it is not looked for a second time.
CARRY_IOU = 0.3


class MoveNetBlazePose(PoseEstimator):
    """The default front end: MoveNet MultiPose finds people, BlazePose refines each skeleton
    (see the module docstring). All arguments have working defaults.

    input_size: MoveNet's input long side (int, multiple of 32) or a fixed (H, W).
    threads: intra-op threads of each network (OpenVINO's INFERENCE_NUM_THREADS, ONNX Runtime's
        intra_op_num_threads).
    backend: where both networks run: ``auto`` (OpenVINO when installed, else ONNX Runtime),
        ``openvino``, ``onnx`` (see :mod:`posestream.engines.backend`) or ``triton`` (on the
        Triton server ``triton={"url": "grpc://HOST:PORT", ...}``, :mod:`posestream.engines.triton`).
    detection_threshold: a MoveNet person score from which a person is kept whatever the
        landmark model says (small, distant people seen from above score ~0.15-0.5).
    candidate_threshold, confirm_presence: a weaker MoveNet detection (score in
        [candidate_threshold, detection_threshold)) is kept only when the landmark model is
        sure there is a person in its crop (presence >= confirm_presence). On vtest.avi this
        recovers real people MoveNet scores 0.05-0.2 while the background candidates it
        returns (scores ~0-0.06) have presence ~0.
    landmark_presence_threshold: below it a (confident) person keeps MoveNet's keypoints.
    crop_scale, rotate, refine_heatmap: BlazePose crop margin, upright rotation, MediaPipe's
        heatmap refinement.
    use_landmarks: False gives MoveNet's keypoints only (the fastest skeletons; no weak
        candidates are confirmed).
    landmark_batch: at most this many people per landmark-model call (> 1: a dynamic-batch
        copy of its file, :func:`dynamic_batch_model`; 6 = all people of a frame in one call);
        1, the default, calls it once per person (measured faster in ONNX Runtime on CPU).
    search_widen: a tracked person not found in the crop made from their last landmarks is
        searched for in one this many times larger (then in a crop centred on what it found)
        before counting as lost.
    max_people: at most this many candidates (best detector scores) get landmarks; the others
        keep MoveNet's keypoints (confident ones) or are dropped (weak ones). None: all (MoveNet
        returns at most 6).
    dedup_oks, dedup_iou: thresholds of :func:`dedup_people`, applied to MoveNet's poses and
        again to the final skeletons (a crop holding two people may make BlazePose lock on the
        neighbour: that person then falls back to MoveNet's keypoints, or, if weak, is dropped).
    """

    name = "movenet+blazepose"

    def __init__(self, input_size: int | Sequence[int] = 384, threads: int = 1, detection_threshold: float = 0.2,
                 candidate_threshold: float = 0.05, confirm_presence: float = 0.5,
                 landmark_presence_threshold: float = 0.5, crop_scale: float = 1.25, rotate: bool = True,
                 refine_heatmap: bool = True, use_landmarks: bool = True, max_people: int | None = None,
                 dedup_oks: float = 0.5, dedup_iou: float = 0.8, movenet_path: str | os.PathLike | None = None,
                 landmark_path: str | os.PathLike | None = None, backend: str = "auto", landmark_batch: int = 1,
                 search_widen: float = 1.5, triton: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not 0 <= candidate_threshold <= detection_threshold:
            raise PoseError(f"need 0 <= candidate_threshold ({candidate_threshold}) <= detection_threshold "
                            f"({detection_threshold})")
        floor = candidate_threshold if use_landmarks else detection_threshold
        self.detector = MoveNetDetector(movenet_path, input_size=input_size, threads=threads,
                                        score_threshold=floor, dedup_oks=dedup_oks, dedup_iou=dedup_iou,
                                        backend=backend, triton=triton)
        self.landmarks = (BlazePoseLandmarks(landmark_path, threads=threads, crop_scale=crop_scale, rotate=rotate,
                                             refine=refine_heatmap, backend=backend, max_batch=landmark_batch,
                                             triton=triton)
                          if use_landmarks else None)
        self.detection_threshold = float(detection_threshold)
        self.confirm_presence = float(confirm_presence)
        self.landmark_presence_threshold = float(landmark_presence_threshold)
        self.max_people = max_people
        self.dedup_oks = float(dedup_oks)
        self.threads = threads
        self.tracks_landmarks = self.landmarks is not None
        self.search_widen = float(search_widen)
        self.lost = 0  # people the last track() call lost

    def detect(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        """MoveNet's candidates, best first (MoveNet keypoints). With landmarks on, this includes
        weak candidates that :meth:`refine` keeps only when BlazePose confirms them."""
        return self.detector(check_frame(frame_bgr))

    def tracker_thresholds(self) -> dict[str, float]:
        """MoveNet's person scores run far lower than YOLOX-style ones (0.13-0.36 for the
        people of vtest.avi): a person this front end keeps is a high-score detection, and a
        weak candidate it keeps (confirmed by the landmark model) is a low-score one."""
        return {"high_thresh": self.detection_threshold, "low_thresh": self.detector.score_threshold,
                "new_track_thresh": self.detection_threshold}

    def refine(self, frame_bgr: np.ndarray, people: Sequence[PersonPose],
               carried: Sequence[PersonPose] = ()) -> list[PersonPose]:
        """BlazePose skeletons for ``people`` (from :meth:`detect`), best detector score first;
        unconfirmed weak candidates and duplicates are left out. The landmark model takes up
        to ``landmark_batch`` of them per call. ``carried``: the people of the previous processed frame
        (this method's or :meth:`track`'s output); one whom no detection overlaps (box IoU <
        :data:`CARRY_IOU`) is looked for again in the crop made from its last landmarks, and
        kept when the landmark model still sees a person there: a detector that misses someone
        for a frame then does not cost that person's skeleton."""
        self._stage_ms = []
        order = sorted(range(len(people)), key=lambda i: -people[i].score)
        limit = len(order) if self.max_people is None else max(0, int(self.max_people))
        jobs: list[tuple[PersonPose, np.ndarray, bool]] = []  # (person, crop matrix, carried?)
        kept: list[PersonPose] = []
        fallbacks_only: list[PersonPose] = []
        for rank, i in enumerate(order):
            person = people[i]
            if self.landmarks is None or rank >= limit:
                fallbacks_only.append(person)
            else:
                jobs.append((person, self.landmarks.crop_matrix(person), False))
        if self.landmarks is not None:
            for person in carried:
                if len(jobs) >= limit:
                    break
                m = None if person.aux is None else self.landmarks.crop_matrix_from_aux(person.next_aux())
                if m is not None and all(box_iou(person.box, d.box) < CARRY_IOU for d in people):
                    jobs.append((person, m, True))
        results = self._landmark_batch(frame_bgr, [(p, m) for p, m, _ in jobs])
        for (person, _, was_carried), (candidate, presence) in zip(jobs, results):
            if was_carried:  # a person the detector missed: kept on the landmark model's word only
                if presence >= self.landmark_presence_threshold and not self._duplicate(candidate, kept):
                    kept.append(candidate)
                continue
            confident = person.score >= self.detection_threshold
            fallback = PersonPose(person.box.copy(), person.keypoints.copy(), "movenet", presence,
                                  candidate.landmarks)
            if presence >= self.landmark_presence_threshold and (confident or presence >= self.confirm_presence):
                if not self._duplicate(candidate, kept):
                    kept.append(candidate)
                    continue
            if confident and not self._duplicate(fallback, kept):
                kept.append(fallback)  # the landmark model saw nobody here (or somebody already kept)
        for person in fallbacks_only:
            fallback = PersonPose(person.box.copy(), person.keypoints.copy(), "movenet")
            if person.score >= self.detection_threshold and not self._duplicate(fallback, kept):
                kept.append(fallback)
        self._match_motion(kept, carried)
        return kept

    def track(self, frame_bgr: np.ndarray, carried: Sequence[PersonPose]) -> list[PersonPose]:
        """Landmark tracking without the detector (MediaPipe's pose pipeline between
        detections): each of ``carried`` (the previous processed frame's people) with BlazePose
        landmarks is looked for in the crop made from its auxiliary points (moved on by its
        last motion).
        A person the landmark model still sees (presence >= ``landmark_presence_threshold``)
        is kept, with its box around the new landmarks and its carried detector score; the
        others are lost, and :attr:`lost` says how many (a pipeline then runs the detector on
        the next frame). People without landmarks (MoveNet fallbacks) cannot be tracked this
        way and count as lost too."""
        if not self.tracks_landmarks:
            raise PoseError("landmark tracking needs the landmark model (use_landmarks=True)")
        self._stage_ms = []
        jobs = []
        lost = 0
        for person in carried:
            m = None if person.aux is None else self.landmarks.crop_matrix_from_aux(person.next_aux())
            if m is None:
                lost += 1
            else:
                jobs.append((person, m))
        kept: list[PersonPose] = []
        missing = []
        threshold = self.landmark_presence_threshold
        for (person, _), (candidate, presence) in zip(jobs, self._landmark_batch(frame_bgr, jobs)):
            if presence >= threshold and not self._duplicate(candidate, kept):
                kept.append(candidate)
            elif presence < threshold:
                missing.append(person)
            else:
                lost += 1  # it slid onto somebody already kept
        # Not in its crop: search a wider one around it (a person who walked out of the crop
        # between two frames processed far apart), then centre the crop on what was found.
        wide = [(p, m) for p in missing
                if (m := self.landmarks.crop_matrix_from_aux(p.next_aux(), self.search_widen)) is not None]
        found = [(p, c.aux) for (p, _), (c, presence) in zip(wide, self._landmark_batch(frame_bgr, wide))
                 if presence >= threshold]
        centred = [(p, m) for p, aux in found if (m := self.landmarks.crop_matrix_from_aux(aux)) is not None]
        recovered = 0
        for candidate, presence in self._landmark_batch(frame_bgr, centred):
            if presence >= threshold and not self._duplicate(candidate, kept):
                kept.append(candidate)
                recovered += 1
        self.lost = lost + len(missing) - recovered
        return kept

    @staticmethod
    def _match_motion(kept: Sequence[PersonPose], carried: Sequence[PersonPose]) -> None:
        """Set ``aux_motion`` of the people of a detection frame from who they were in the
        previous frame: pairs of (this frame's, the previous frame's) hips' middles, nearest
        first, one to one, nearer than a body length (twice the hips-to-extent distance; a
        person walking across vtest.avi moves about half of one in 0.4 s)."""
        new = [p for p in kept if p.aux is not None and p.aux_motion is None]
        old = [q for q in carried if q.aux is not None]
        if not new or not old:
            return
        d = np.array([[float(np.hypot(*(p.aux[0] - q.aux[0]))) for q in old] for p in new])
        reach = np.array([2.0 * float(np.hypot(*(p.aux[1] - p.aux[0]))) for p in new])
        taken_new, taken_old = set(), set()
        for flat in np.argsort(d, axis=None):
            i, j = divmod(int(flat), len(old))
            if i in taken_new or j in taken_old or d[i, j] >= reach[i]:
                continue
            taken_new.add(i)
            taken_old.add(j)
            new[i].aux_motion = (new[i].aux[0] - old[j].aux[0]).astype(np.float32)

    def _landmark_batch(self, frame_bgr: np.ndarray, jobs: Sequence[tuple[PersonPose, np.ndarray]]
                        ) -> list[tuple[PersonPose, float]]:
        """The landmark model on the crops of ``jobs`` ((person, crop matrix)), up to
        ``landmark_batch`` per call ->
        per job a ``"blazepose"`` person (box: the detector's for a detection, the new
        landmarks' for a carried person; the person's score) and the presence. Each person's
        entry in ``timing.landmarks_ms`` is the calls' time shared evenly."""
        if not jobs:
            return []
        t = time.perf_counter()
        lm, flags, heat = self.landmarks.run_batch(frame_bgr, [m for _, m in jobs])
        out = []
        fh, fw = frame_bgr.shape[:2]
        for j, (person, m) in enumerate(jobs):
            keypoints, landmarks, presence, aux = self.landmarks.decode(lm[j], flags[j], None if heat is None
                                                                        else heat[j], m)
            box = person.box.copy()
            if person.source == "blazepose":  # carried: the box follows the landmarks
                around = usable_box(np.array([*landmarks[:, :2].min(axis=0), *landmarks[:, :2].max(axis=0),
                                              person.score], np.float32), (fh, fw))
                if around is not None:
                    box = around
                else:
                    presence = 0.0  # its landmarks left the frame
            motion = (aux[0] - person.aux[0]).astype(np.float32) if person.aux is not None else None
            out.append((PersonPose(box, keypoints, "blazepose", presence, landmarks, aux, motion), presence))
        share = (time.perf_counter() - t) * 1e3 / len(jobs)
        self._stage_ms.extend([share] * len(jobs))
        return out

    def warmup(self, max_batch: int = 6) -> None:
        """One landmark call at every batch size up to ``max_batch`` (MoveNet returns at most 6
        people): ONNX Runtime plans memory per input shape, and the first call at a new batch
        size is several times slower than the next ones; a live stream should not pay that on
        the frame where the sixth person walks in."""
        if self.landmarks is None:
            return
        frame = np.zeros((BLAZEPOSE_INPUT, BLAZEPOSE_INPUT, 3), np.uint8)
        m = crop_transform((BLAZEPOSE_INPUT / 2, BLAZEPOSE_INPUT / 2), BLAZEPOSE_INPUT, 0.0, BLAZEPOSE_INPUT)
        for n in range(1, min(max_batch, self.landmarks.max_batch) + 1):
            self.landmarks.run_batch(frame, [m] * n)

    def _duplicate(self, person: PersonPose, kept: Sequence[PersonPose]) -> bool:
        for q in kept:
            area = 0.5 * (_box_area(person.box) + _box_area(q.box))
            if keypoint_oks(person.keypoints, q.keypoints, area) >= self.dedup_oks:
                return True
        return False

    def info(self) -> dict[str, Any]:
        triton = self.triton_stats()
        return {"name": self.name, "input_size": self.detector.input_size, "threads": self.threads,
                "detection_threshold": self.detection_threshold, "candidate_threshold": self.detector.score_threshold,
                "confirm_presence": self.confirm_presence,
                "landmark_presence_threshold": self.landmark_presence_threshold,
                "models": [str(self.detector.path)] + ([str(self.landmarks.path)] if self.landmarks else []),
                "backends": self.backends(), **({"triton": triton} if triton else {})}

    def backends(self) -> dict[str, str]:
        """What runs each network: ``"openvino"``, ``"onnxruntime"`` or ``"triton"``."""
        from posestream.engines.backend import session_backend

        out = {"detector": session_backend(self.detector.session)}
        if self.landmarks is not None:
            out["landmarks"] = session_backend(self.landmarks.session)
        return out

    def triton_stats(self) -> dict[str, dict[str, Any]]:
        """Each network on a Triton server: its calls there and locally, retries, fall-backs."""
        sessions = {"detector": self.detector.session,
                    "landmarks": self.landmarks.session if self.landmarks is not None else None}
        return {k: s.stats() for k, s in sessions.items() if getattr(s, "backend", None) == "triton"}


# ----------------------------------------------------------------------------------------------
# Bring your own: RTMDet + RTMPose ONNX (MMDeploy), or MMPose itself


def bbox_xyxy_to_cs(box: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """MMPose's ``bbox_xyxy2cs``: box x1, y1, x2, y2 -> centre (x, y), scale (w, h) x padding."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box)[:4])
    return (np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float64),
            np.array([(x2 - x1) * padding, (y2 - y1) * padding], np.float64))


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """MMPose's ``TopdownAffine._fix_aspect_ratio``: grow w or h so that w / h == aspect_ratio."""
    w, h = (float(v) for v in scale)
    if w > h * aspect_ratio:
        return np.array([w, w / aspect_ratio], np.float64)
    return np.array([h * aspect_ratio, h], np.float64)


def get_warp_matrix(center: Sequence[float], scale: Sequence[float], rot: float,
                    output_size: Sequence[int]) -> np.ndarray:
    """MMPose's ``get_warp_matrix`` (no shift, not inverted): the 2x3 matrix that maps the box of
    width ``scale[0]`` centred on ``center``, rotated by ``rot`` degrees, onto an image of
    ``output_size`` = (w, h). Closed form of MMPose's three-point construction: a similarity
    with factor ``w / scale[0]`` that turns the box's rotated axes back to the image axes."""
    cx, cy = (float(v) for v in center)
    out_w, out_h = (float(v) for v in output_size)
    s = out_w / float(scale[0])
    r = math.radians(rot)
    c, sn = math.cos(r), math.sin(r)
    # MMPose rotates the source direction by +rot ([[c, -s], [s, c]]); the map undoes it.
    a = np.array([[c, sn], [-sn, c]]) * s
    t = np.array([out_w / 2, out_h / 2]) - a @ np.array([cx, cy])
    return np.hstack([a, t[:, None]])


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """MMPose's SimCC decoding (``get_simcc_maximum``): per keypoint the argmax of each 1-D
    distribution, divided by ``split_ratio``, and the score min(max_x, max_y); keypoints with a
    score <= 0 get location -1.

    simcc_x ``[K, Wx]`` or ``[N, K, Wx]``, simcc_y ``[..., Wy]`` -> locations ``[..., K, 2]``
    (input pixels), scores ``[..., K]``.
    """
    sx, sy = np.asarray(simcc_x, np.float32), np.asarray(simcc_y, np.float32)
    x_locs = sx.argmax(axis=-1)
    y_locs = sy.argmax(axis=-1)
    locs = np.stack([x_locs, y_locs], axis=-1).astype(np.float32)
    vals = np.minimum(sx.max(axis=-1), sy.max(axis=-1))
    locs[vals <= 0] = -1
    locs = np.where(locs >= 0, locs / split_ratio, locs)
    return locs, vals


class RtmTopDown(PoseEstimator):
    """Your own RTMDet (person) + RTMPose ONNX files, as MMDeploy exports them ("end2end").

    RTMDet: input ``[1, 3, H, W]`` float BGR normalised with mean (103.53, 116.28, 123.675),
    std (57.375, 57.12, 58.395) (MMDet's RTMDet data preprocessor, bgr_to_rgb False), the
    frame resized keeping its aspect ratio into H x W and padded with 114 at the bottom/right;
    outputs ``dets [1, N, 5]`` (x1, y1, x2, y2, score in input pixels, after NMS) and
    ``labels [1, N]``; people are label ``person_label`` (0 in COCO) with score >=
    ``det_threshold``. H, W come from the model when static, else ``det_input_size``.

    RTMPose: input ``[1, 3, h, w]`` (256 x 192 for body models) float RGB normalised with
    mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375); the crop is MMPose's top-down
    affine: box centre, box size x ``bbox_padding`` (1.25) grown to the input's aspect ratio;
    outputs ``simcc_x [1, K, w * r]``, ``simcc_y [1, K, h * r]`` with split ratio r = 2.0,
    decoded by argmax (:func:`decode_simcc`) and mapped back to the frame. Scores are the raw
    SimCC maxima (about 0-1; clipped to [0, 1]). K must be 17 (COCO body).
    """

    name = "rtm"

    def __init__(self, det_onnx: str | os.PathLike, pose_onnx: str | os.PathLike, threads: int = 1,
                 det_threshold: float = 0.5, person_label: int = 0, det_input_size: Sequence[int] = (640, 640),
                 bbox_padding: float = 1.25, split_ratio: float = 2.0, max_people: int | None = None) -> None:
        super().__init__()
        self.det = ort_session(det_onnx, threads, "RTMDet model")
        self.pose = ort_session(pose_onnx, threads, "RTMPose model")
        self.det_path, self.pose_path = Path(det_onnx), Path(pose_onnx)
        di = self.det.get_inputs()[0]
        self.det_input = di.name
        self.det_hw = _static_hw(di.shape) or (int(det_input_size[0]), int(det_input_size[1]))
        det_outs = [o.name for o in self.det.get_outputs()]
        if len(det_outs) < 2:
            raise PoseError(f"{det_onnx}: expected RTMDet end2end outputs dets [1, N, 5] and labels [1, N], "
                            f"got {det_outs}")
        self.det_outputs = (("dets", "labels") if {"dets", "labels"} <= set(det_outs) else tuple(det_outs[:2]))
        pi = self.pose.get_inputs()[0]
        self.pose_input = pi.name
        hw = _static_hw(pi.shape)
        if hw is None:
            raise PoseError(f"{pose_onnx}: RTMPose input must have a static [1, 3, h, w] shape, got {pi.shape}")
        self.pose_hw = hw
        pose_outs = [o.name for o in self.pose.get_outputs()]
        self.pose_outputs = (("simcc_x", "simcc_y") if {"simcc_x", "simcc_y"} <= set(pose_outs)
                             else tuple(pose_outs[:2]))
        self.det_threshold = float(det_threshold)
        self.person_label = int(person_label)
        self.bbox_padding = float(bbox_padding)
        self.split_ratio = float(split_ratio)
        self.max_people = max_people
        self.threads = threads

    # -- detector
    def det_preprocess(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        cv2 = _cv2()
        h, w = frame_bgr.shape[:2]
        ih, iw = self.det_hw
        s = min(ih / h, iw / w)
        nw, nh = min(iw, max(1, int(w * s + 0.5))), min(ih, max(1, int(h * s + 0.5)))
        canvas = np.full((ih, iw, 3), 114, np.uint8)
        canvas[:nh, :nw] = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = (canvas.astype(np.float32) - np.array(RTMDET_MEAN_BGR, np.float32)) / np.array(RTMDET_STD_BGR, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), s

    def detect(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        frame_bgr = check_frame(frame_bgr)
        x, s = self.det_preprocess(frame_bgr)
        dets, labels = self.det.run(list(self.det_outputs), {self.det_input: x})
        dets = np.asarray(dets, np.float32).reshape(-1, 5)
        labels = np.asarray(labels).reshape(-1)
        fh, fw = frame_bgr.shape[:2]
        people = []
        for d, lab in zip(dets, labels):
            if int(lab) != self.person_label or not d[4] >= self.det_threshold:
                continue
            box = usable_box(np.array([d[0] / s, d[1] / s, d[2] / s, d[3] / s, d[4]], np.float32), (fh, fw))
            if box is None:  # non-finite or zero-size
                continue
            people.append(PersonPose(box, np.zeros((NUM_KEYPOINTS, 3), np.float32), "detector"))
        people.sort(key=lambda p: -p.score)
        return people if self.max_people is None else people[: int(self.max_people)]

    # -- pose
    def pose_preprocess(self, frame_bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (network input ``[1, 3, h, w]``, the 2x3 image->input matrix)."""
        cv2 = _cv2()
        h, w = self.pose_hw
        center, scale = bbox_xyxy_to_cs(box, self.bbox_padding)
        scale = fix_aspect_ratio(scale, w / h)
        m = get_warp_matrix(center, scale, 0.0, (w, h))
        crop = cv2.warpAffine(frame_bgr, m.astype(np.float32), (w, h), flags=cv2.INTER_LINEAR)
        rgb = crop[:, :, ::-1].astype(np.float32)
        x = (rgb - np.array(RTMPOSE_MEAN_RGB, np.float32)) / np.array(RTMPOSE_STD_RGB, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), m

    def refine(self, frame_bgr: np.ndarray, people: Sequence[PersonPose]) -> list[PersonPose]:
        self._stage_ms = []
        out = []
        for person in people:
            t = time.perf_counter()
            x, m = self.pose_preprocess(frame_bgr, person.box)
            sx, sy = self.pose.run(list(self.pose_outputs), {self.pose_input: x})
            locs, vals = decode_simcc(np.asarray(sx)[0], np.asarray(sy)[0], self.split_ratio)
            if locs.shape[0] != NUM_KEYPOINTS:
                raise PoseError(f"{self.pose_path}: RTMPose gives {locs.shape[0]} keypoints, need COCO-17")
            kp = np.empty((NUM_KEYPOINTS, 3), np.float32)
            kp[:, :2] = apply_affine(invert_affine(m), locs)
            kp[:, 2] = np.clip(vals, 0, 1)
            kp[vals <= 0, 2] = 0
            out.append(PersonPose(person.box.copy(), kp, "rtmpose"))
            self._stage_ms.append((time.perf_counter() - t) * 1e3)
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "det": str(self.det_path), "pose": str(self.pose_path),
                "det_input_hw": list(self.det_hw), "pose_input_hw": list(self.pose_hw), "threads": self.threads}


def _static_hw(shape: Sequence[Any]) -> tuple[int, int] | None:
    if len(shape) != 4:
        return None
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    return None


def mmpose_people(preds: Sequence[Mapping[str, Any]], frame_hw: tuple[int, int]) -> list[PersonPose]:
    """MMPoseInferencer predictions (dicts with ``keypoints``, ``keypoint_scores``, ``bbox``,
    ``bbox_score``) -> people. A prediction without a usable ``bbox`` (bottom-up models, some
    inferencer versions) gets the box around its keypoints; one with neither is left out (a
    zero-size box would start a new track every frame)."""
    people = []
    for p in preds:
        kp = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        xy = np.asarray(p["keypoints"], np.float32).reshape(-1, 2)[:NUM_KEYPOINTS]
        sc = np.asarray(p.get("keypoint_scores", np.ones(len(xy))), np.float32).reshape(-1)[:NUM_KEYPOINTS]
        kp[: len(xy), :2] = xy
        kp[: len(sc), 2] = np.clip(sc, 0, 1)
        score = float(np.asarray(p.get("bbox_score", 1.0)).reshape(-1)[0])
        box = None
        if p.get("bbox") is not None:
            bbox = np.asarray(p["bbox"], np.float32).reshape(-1)[:4]
            if bbox.shape[0] == 4:
                box = usable_box(np.array([*bbox, score], np.float32), frame_hw)
        if box is None:
            around = box_from_keypoints(kp, score)
            box = None if around is None else usable_box(around, frame_hw)
        if box is None:
            continue
        people.append(PersonPose(box, kp, "mmpose"))
    return people


class MMPoseTopDown(PoseEstimator):
    """MMPose's own ``MMPoseInferencer`` (top-down: its person detector, then ``pose2d``), when
    ``mmpose`` (and its mmcv/mmdet) is installed. Note that MMPose downloads its weights on first
    use unless ``pose2d_weights`` / ``det_weights`` point to local files."""

    name = "mmpose"

    def __init__(self, pose2d: str = "human", pose2d_weights: str | None = None, det_model: str | None = None,
                 det_weights: str | None = None, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__()
        try:
            from mmpose.apis import MMPoseInferencer
        except ImportError as exc:
            raise PoseError("the mmpose front end needs MMPose: pip install -U openmim && mim install mmengine "
                            f"'mmcv>=2' 'mmdet>=3' mmpose ({first_line(exc)}); or export RTMDet/RTMPose to ONNX "
                            "with MMDeploy and use the rtm front end") from None
        self.inferencer = MMPoseInferencer(pose2d=pose2d, pose2d_weights=pose2d_weights, det_model=det_model,
                                           det_weights=det_weights, device=device, **kwargs)

    def _run(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        result = next(self.inferencer(frame_bgr, return_vis=False))
        preds = result["predictions"][0] if result.get("predictions") else []
        return mmpose_people(preds, frame_bgr.shape[:2])

    def detect(self, frame_bgr: np.ndarray) -> list[PersonPose]:
        return self._run(check_frame(frame_bgr))

    def refine(self, frame_bgr: np.ndarray, people: Sequence[PersonPose]) -> list[PersonPose]:
        # MMPose's inferencer runs both stages in one call (in detect); nothing is left to do.
        self._stage_ms = [0.0] * len(people)
        return list(people)


# ----------------------------------------------------------------------------------------------
# Drawing


SOURCE_COLORS = {"blazepose": (60, 220, 60), "movenet": (0, 170, 255), "rtmpose": (255, 160, 40),
                 "mmpose": (255, 160, 40), "detector": (200, 200, 200)}


def draw_people(frame_bgr: np.ndarray, people: Sequence[PersonPose], min_score: float = 0.3,
                thickness: int = 2) -> np.ndarray:
    """A copy of the frame with each person's box (colour by keypoint source: green BlazePose,
    orange MoveNet fallback), score and skeleton (limbs whose two keypoints reach ``min_score``;
    the person's left side in cyan, right side in magenta)."""
    from posestream.engines.draw import draw_skeleton

    cv2 = _cv2()
    img = np.ascontiguousarray(frame_bgr).copy()
    for p in people:
        color = SOURCE_COLORS.get(p.source, (255, 255, 255))
        x1, y1, x2, y2 = (int(round(float(v))) for v in p.box[:4])
        cv2.rectangle(img, (x1, y1), (x2, y2), color, 1)
        label = f"{p.score:.2f} {p.source[:2]}"
        if np.isfinite(p.presence):
            label += f" p{p.presence:.2f}"
        cv2.putText(img, label, (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
        draw_skeleton(img, p.keypoints, min_score=min_score, thickness=thickness)
    return img


# ----------------------------------------------------------------------------------------------
# Presets

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"input_size": 384},
    "webcam": {"input_size": 256},
    "surveillance": {"input_size": 512},
}
FRONT_ENDS = ("default", "webcam", "surveillance", "rtm", "mmpose")


def make_pose_estimator(name: str = "default", **kwargs: Any) -> PoseEstimator:
    """A front end by name (see the module docstring). Keyword arguments go to the class and
    override the preset: e.g. ``make_pose_estimator("webcam", threads=2)``,
    ``make_pose_estimator("rtm", det_onnx="rtmdet.onnx", pose_onnx="rtmpose.onnx")``."""
    key = str(name).strip().lower()
    if key in PRESETS:
        return MoveNetBlazePose(**{**PRESETS[key], **kwargs})
    if key == "rtm":
        if "det_onnx" not in kwargs or "pose_onnx" not in kwargs:
            raise PoseError("the rtm front end needs det_onnx= (RTMDet) and pose_onnx= (RTMPose) ONNX files")
        return RtmTopDown(**kwargs)
    if key == "mmpose":
        return MMPoseTopDown(**kwargs)
    raise PoseError(f"unknown pose front end {name!r}; choose one of {', '.join(FRONT_ENDS)}")


__all__ = [
    "PoseError", "PersonPose", "PoseTiming", "PoseEstimator", "MoveNetDetector", "BlazePoseLandmarks",
    "MoveNetBlazePose", "RtmTopDown", "MMPoseTopDown", "make_pose_estimator", "PRESETS", "FRONT_ENDS",
    "BLAZEPOSE_TO_COCO", "blazepose_to_coco", "dedup_people", "keypoint_oks", "box_iou", "decode_simcc",
    "get_warp_matrix", "bbox_xyxy_to_cs", "fix_aspect_ratio", "crop_transform", "upright_angle",
    "refine_from_heatmap", "movenet_input_shape", "check_frame", "draw_people", "pose_session", "ort_session",
    "MIN_BOX_SIDE", "usable_box", "clean_keypoints", "box_from_keypoints", "sanitize_people", "mmpose_people",
]
