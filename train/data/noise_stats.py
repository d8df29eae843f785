"""Statistics of skeleton tracks as a pose front end reports them: the same numbers for real
tracks (``benchmarks/front_end_errors.py`` on ``vtest.avi``) and for the generator's noisy
clips (:func:`posestream.train.data.synthetic.estimator_noise`), so the two can be compared
and the generator's noise model checked against what was measured
(``front_end_measured.json`` beside this file, ``tests/test_synthetic.py``).

Every figure is normalised by the person's size in the image, ``height``: the median over
the track's frames of the skeleton's vertical extent (top-most to bottom-most joint, pixels).

=====================  ======================================================================
``jitter``             per joint group, the second difference ``|x[t] - (x[t-1] + x[t+1])/2|``
                       (what is left after removing locally linear motion) in heights, over
                       frames whose neighbours are present: median and 90th percentile
``score``              per joint group: 10/50/90th percentiles and the share below 0.3
``joint_miss``         share of a present person's joints scored below 0.3
``gap``                share of a track's frames (first to last) where the person is missing
``swap``               per left/right pair group, the share of frames where the pair is at
                       least twice as close to its neighbours' frames crossed as straight
``limb_change``        median frame-to-frame relative change of the limb lengths
``cadence_hz``         the dominant frequency (0.4-3.5 Hz) of the ankles' left-right
                       difference, for a track of at least 32 frames
``ankle_speed``        median speed of the ankles relative to the mid-hip, heights/s
``speed``              median speed of the mid-hip, heights/s (walking vs standing)
``ankle_spread``       median distance between the ankles, in heights (how far apart the
                       legs are drawn: the stride as the skeleton shows it)
``knee_flexion``       the 90th percentile of the knees' flexion in the image, degrees
                       (0 = straight; how bent the swinging leg is drawn)
=====================  ======================================================================
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

#: Joint groups of COCO-17 the figures are reported by.
GROUPS = {
    "face": (0, 1, 2, 3, 4),
    "shoulders": (5, 6),
    "hips": (11, 12),
    "arms": (7, 8, 9, 10),
    "legs": (13, 14, 15, 16),
}
#: Left/right pairs checked for swaps, by group.
SWAP_PAIRS = {
    "shoulders": ((5, 6),),
    "hips": ((11, 12),),
    "arms": ((7, 8), (9, 10)),
    "legs": ((13, 14), (15, 16)),
}
LIMBS = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))
MIN_SCORE = 0.3
#: The front end's errors measured on real footage (``benchmarks/front_end_errors.py
#: --frames 795 --write-measured ...``: vtest.avi, the default front end).
MEASURED_FILE = Path(__file__).resolve().parent / "front_end_measured.json"
#: Person-height bins (pixels) of the size-dependent figures.
HEIGHT_BINS = (0.0, 60.0, 80.0, 120.0, math.inf)


def load_measured(path: str | Path | None = None) -> dict:
    """The measured figures (:data:`MEASURED_FILE` by default)."""
    return json.loads(Path(path or MEASURED_FILE).read_text())


def person_height(keypoint: np.ndarray, present: np.ndarray) -> float:
    """Median vertical extent of the skeleton ``[T, 17, 2]`` over the ``present`` frames."""
    if not present.any():
        return float("nan")
    y = keypoint[present, :, 1]
    return float(np.median(y.max(axis=1) - y.min(axis=1)))


def height_bin(height: float) -> str:
    for lo, hi in zip(HEIGHT_BINS[:-1], HEIGHT_BINS[1:]):
        if lo <= height < hi:
            return f"{lo:.0f}-{hi:.0f}px" if math.isfinite(hi) else f">={lo:.0f}px"
    return "nan"


def _second_difference(keypoint: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``[N, 17]`` distances ``|x[t] - (x[t-1] + x[t+1]) / 2|`` for each frame t whose
    neighbours are present too."""
    ok = present[1:-1] & present[:-2] & present[2:]
    d = keypoint[1:-1] - 0.5 * (keypoint[:-2] + keypoint[2:])
    return np.linalg.norm(d, axis=-1)[ok]


def swap_frames(keypoint: np.ndarray, present: np.ndarray, pairs: Sequence[tuple[int, int]],
                min_separation: float, ratio: float = 0.5) -> tuple[int, int]:
    """(frames where the pairs look swapped, frames checked): a frame t with both neighbours
    present whose pairs, summed, are at least 1 / ``ratio`` times closer to the neighbours'
    mean crossed than straight, where the neighbours' left and right joints lie at least
    ``min_separation`` pixels apart (a pair on top of itself cannot be told swapped)."""
    ok = present[1:-1] & present[:-2] & present[2:]
    ref = 0.5 * (keypoint[:-2] + keypoint[2:])
    cur = keypoint[1:-1]
    straight = crossed = sep = 0.0
    for left, right in pairs:
        straight = straight + np.linalg.norm(cur[:, left] - ref[:, left], axis=-1) + \
            np.linalg.norm(cur[:, right] - ref[:, right], axis=-1)
        crossed = crossed + np.linalg.norm(cur[:, left] - ref[:, right], axis=-1) + \
            np.linalg.norm(cur[:, right] - ref[:, left], axis=-1)
        sep = sep + np.linalg.norm(ref[:, left] - ref[:, right], axis=-1)
    checked = ok & (sep / len(pairs) >= min_separation)
    swapped = checked & (crossed < ratio * straight)
    return int(swapped.sum()), int(checked.sum())


def cadence(keypoint: np.ndarray, present: np.ndarray, fps: float, fmin: float = 0.4,
            fmax: float = 3.5) -> float:
    """The dominant frequency (Hz) of the left-right ankle difference along its main direction
    (one cycle = one stride: two steps), or NaN for tracks shorter than 32 frames. Missing
    frames are filled linearly."""
    if present.sum() < 32:
        return float("nan")
    idx = np.flatnonzero(present)
    lo, hi = idx[0], idx[-1] + 1
    diff = keypoint[lo:hi, 15] - keypoint[lo:hi, 16]
    pres = present[lo:hi]
    t = np.arange(hi - lo)
    diff = np.stack([np.interp(t, t[pres], diff[pres, k]) for k in range(2)], axis=-1)
    diff -= diff.mean(axis=0)
    _, _, vt = np.linalg.svd(diff, full_matrices=False)
    signal = diff @ vt[0]
    signal = signal - np.polyval(np.polyfit(t, signal, 1), t)
    n = 4 * len(signal)  # zero-padded for a finer frequency grid
    power = np.abs(np.fft.rfft(signal * np.hanning(len(signal)), n)) ** 2
    freq = np.fft.rfftfreq(n, 1.0 / fps)
    band = (freq >= fmin) & (freq <= fmax)
    if not band.any() or power[band].max() <= 0:
        return float("nan")
    return float(freq[band][np.argmax(power[band])])


def knee_flexion(keypoint: np.ndarray, side: str) -> np.ndarray:
    """``[T]`` flexion of one knee in the image, degrees (0: hip, knee and ankle in line)."""
    hip, knee, ankle = (11, 13, 15) if side == "left" else (12, 14, 16)
    u, v = keypoint[:, hip] - keypoint[:, knee], keypoint[:, ankle] - keypoint[:, knee]
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-9)
    return 180.0 - np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def trunk_convention(kp_a: np.ndarray, kp_b: np.ndarray) -> dict:
    """Where skeleton ``a`` puts the hips and shoulders against skeleton ``b`` (same person):
    the shift of the mid-hip and mid-shoulder along ``b``'s trunk (mid-hip -> mid-shoulder,
    in trunk lengths; positive: toward the head) and the hip and shoulder width ratios a / b."""
    hip_b, sh_b = 0.5 * (kp_b[11] + kp_b[12]), 0.5 * (kp_b[5] + kp_b[6])
    hip_a, sh_a = 0.5 * (kp_a[11] + kp_a[12]), 0.5 * (kp_a[5] + kp_a[6])
    trunk = sh_b - hip_b
    length = float(np.linalg.norm(trunk))
    up = trunk / max(length, 1e-6)
    return {"hip_up": float((hip_a - hip_b) @ up) / max(length, 1e-6),
            "shoulder_up": float((sh_a - sh_b) @ up) / max(length, 1e-6),
            "hip_width": float(np.linalg.norm(kp_a[11] - kp_a[12]) / max(np.linalg.norm(kp_b[11] - kp_b[12]), 1e-6)),
            "shoulder_width": float(np.linalg.norm(kp_a[5] - kp_a[6]) / max(np.linalg.norm(kp_b[5] - kp_b[6]), 1e-6)),
            "trunk_px": length}


def quantiles(values: Iterable[float], qs: Sequence[float]) -> list[float]:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(v, qs)]


def track_statistics(tracks: Sequence[dict], fps: float) -> dict:
    """The statistics (module docstring) of ``tracks``: dicts with ``keypoint [T, 17, 2]``,
    ``score [T, 17]`` (a frame with all scores 0 is a missing frame) and optionally
    ``present [T]``. Figures of each kind are pooled over all tracks' frames; ``tracks`` counts
    those used (at least 3 present frames)."""
    jit = {g: [] for g in GROUPS}
    scores = {g: [] for g in GROUPS}
    swaps = {g: [0, 0] for g in SWAP_PAIRS}
    miss = [0, 0]
    gaps = [0, 0]
    limb_change, cadences, ankle_speed, speed, heights = [], [], [], [], []
    spreads, flexions = [], []
    used = 0
    for tr in tracks:
        kp = np.asarray(tr["keypoint"], dtype=np.float64)
        sc = np.asarray(tr["score"], dtype=np.float64)
        present = np.asarray(tr["present"], dtype=bool) if "present" in tr else sc.max(axis=1) > 0
        if present.sum() < 3:
            continue
        used += 1
        height = person_height(kp, present)
        heights.append(height)
        idx = np.flatnonzero(present)
        gaps[0] += int((~present[idx[0]:idx[-1] + 1]).sum())
        gaps[1] += int(idx[-1] + 1 - idx[0])
        psc = sc[present]
        miss[0] += int((psc < MIN_SCORE).sum())
        miss[1] += psc.size
        d2 = _second_difference(kp, present) / height
        for g, joints in GROUPS.items():
            jit[g].append(d2[:, list(joints)].ravel())
            scores[g].append(psc[:, list(joints)].ravel())
        for g, pairs in SWAP_PAIRS.items():
            s, n = swap_frames(kp, present, pairs, min_separation=0.05 * height)
            swaps[g][0] += s
            swaps[g][1] += n
        both = present[1:] & present[:-1]
        lengths = np.stack([np.linalg.norm(kp[:, a] - kp[:, b], axis=-1) for a, b in LIMBS], axis=-1)
        rel = np.abs(np.diff(lengths, axis=0)) / (0.5 * (lengths[1:] + lengths[:-1]) + 1e-6)
        limb_change.append(rel[both].ravel())
        hip = 0.5 * (kp[:, 11] + kp[:, 12])
        step = np.linalg.norm(np.diff(hip, axis=0), axis=-1)[both] * fps / height
        speed.append(float(np.median(step)) if len(step) else float("nan"))
        ank = kp[:, [15, 16]] - hip[:, None]
        a_step = np.linalg.norm(np.diff(ank, axis=0), axis=-1)[both] * fps / height
        ankle_speed.append(a_step.ravel())
        cadences.append(cadence(kp, present, fps))
        pk = kp[present]
        spreads.append(np.linalg.norm(pk[:, 15] - pk[:, 16], axis=-1) / height)
        flexions.append(np.concatenate([knee_flexion(pk, side) for side in ("left", "right")]))

    def cat(parts):
        return np.concatenate(parts) if parts else np.zeros(0)

    return {
        "tracks": used,
        "height_px": quantiles(heights, (10, 50, 90)),
        "jitter": {g: dict(zip(("p50", "p90"), quantiles(cat(v), (50, 90)))) for g, v in jit.items()},
        "score": {g: dict(zip(("p10", "p50", "p90"), quantiles(cat(v), (10, 50, 90))),
                          below_0_3=float((cat(v) < MIN_SCORE).mean()) if len(cat(v)) else float("nan"))
                  for g, v in scores.items()},
        "joint_miss": miss[0] / miss[1] if miss[1] else float("nan"),
        "gap": gaps[0] / gaps[1] if gaps[1] else float("nan"),
        "swap": {g: (s / n if n else float("nan")) for g, (s, n) in swaps.items()},
        "limb_change": quantiles(cat(limb_change), (50,))[0],
        "cadence_hz": dict(zip(("p25", "p50", "p75"), quantiles(cadences, (25, 50, 75)))),
        "cadence_tracks": int(np.isfinite(np.asarray(cadences, dtype=float)).sum()) if cadences else 0,
        "ankle_speed": quantiles(cat(ankle_speed), (50,))[0],
        "speed": quantiles(speed, (50,))[0],
        "ankle_spread": quantiles(cat(spreads), (50,))[0],
        "knee_flexion": quantiles(cat(flexions), (90,))[0],
    }


def random_error(tracks: Sequence[dict]) -> dict:
    """The generator's per-frame random error, the counterpart of a flip test's distance / sqrt(2):
    ``keypoint - noiseless`` (``noiseless``: where the simulated estimator's convention puts
    the joints, ``[T, 17, 2]``) less its mean over the track (a constant offset cancels in a
    flip test too), in heights, per joint group (median and 90th percentile), joints scored
    >= 0.3."""
    parts = {g: [] for g in GROUPS}
    for tr in tracks:
        kp = np.asarray(tr["keypoint"], dtype=np.float64)
        sc = np.asarray(tr["score"], dtype=np.float64)
        present = sc.max(axis=1) > 0
        if present.sum() < 3:
            continue
        err = kp[present] - np.asarray(tr["noiseless"], dtype=np.float64)[present]
        err -= err.mean(axis=0, keepdims=True)
        d = np.linalg.norm(err, axis=-1) / person_height(kp, present)
        ok = sc[present] >= MIN_SCORE
        for g, joints in GROUPS.items():
            j = list(joints)
            parts[g].append(d[:, j][ok[:, j]])
    return {g: dict(zip(("p50", "p90"), quantiles(np.concatenate(v) if v else [], (50, 90))))
            for g, v in parts.items()}


def generator_tracks(action: str, count: int, seed: int, *, fps: float, img_shape: tuple[int, int],
                     heights: tuple[float, float], camera_kinds: Sequence[str] = ("elevated", "ceiling"),
                     duration: float = 6.0, score_style: str | None = None, max_tries: int = 40) -> list[dict]:
    """``count`` of the generator's noisy clips of ``action`` (one person, no occluder, no
    bystander) at a real video's rate and image size, from the given camera kinds, whose
    person height (:func:`person_height`) lies within ``heights`` px: ``keypoint``, ``score``,
    ``clean`` (the exact projection), ``noiseless`` (the estimator's convention applied) and
    ``height``. Fewer when ``max_tries`` x ``count``
    draws do not find them."""
    from posestream.train.data import synthetic as syn

    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for attempt in range(max_tries * count):
        if len(out) >= count:
            break
        kind = camera_kinds[attempt % len(camera_kinds)]
        clip = syn.generate_clip(action, rng, fps=fps, img_shape=img_shape, camera_kind=kind, duration=duration,
                                 occluder=None, score_style=score_style, debug=True)
        kp, sc = clip["keypoint"][0], clip["keypoint_score"][0]
        present = sc.max(axis=1) > 0
        if present.sum() < 10:
            continue
        height = person_height(kp.astype(np.float64), present)
        if heights[0] <= height <= heights[1]:
            out.append({"keypoint": kp, "score": sc, "clean": clip["debug"]["clean"][0],
                        "noiseless": clip["debug"]["noiseless"][0], "height": height, "camera": kind})
    return out
