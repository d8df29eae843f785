"""Rasterizer speed: our vectorized rasterizer against a per-keypoint Python loop.

The loop draws one Gaussian (or one limb) of one person in one frame at a time, the way the
reference implementation (PYSKL's GeneratePoseTarget) does. Both run side by side in this one
process, interleaved repeat by repeat, on the same realistic skeletons (two people, COCO-17,
sized as after subjects-centred cropping), and their outputs are checked to agree first.

    python benchmarks/raster.py [--repeats 20] [--json out.json]

"our fresh" allocates a new volume per call (``rasterize`` / ``rasterize_batch``); "our reused"
is the serving path (``Rasterizer``), which keeps its buffer and clears only what it drew.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

from posestream.engines.raster import EPS, Rasterizer, rasterize, rasterize_batch
from posestream.skeleton import limb_layout
from posestream.train.data.sample import waving_and_walking_clip
from posestream.train.transforms import val_pipeline


def loop_rasterize(keypoints, scores, height, width, sigma=0.6, limbs=None):
    """One Gaussian at a time: for each frame, each keypoint (or limb), each person."""
    m, t, v, _ = keypoints.shape
    pairs = None if limbs is None else limb_layout(limbs).pairs
    k = v if pairs is None else len(pairs)
    volume = np.zeros((k, t, height, width), np.float32)
    for f in range(t):
        for c in range(k):
            plane = volume[c, f]
            for p in range(m):
                if pairs is None:
                    _loop_point(plane, keypoints[p, f, c], scores[p, f, c], sigma)
                else:
                    i, j = pairs[c]
                    _loop_segment(plane, keypoints[p, f, i], keypoints[p, f, j], scores[p, f, i], scores[p, f, j], sigma)
    return volume


def _loop_point(plane, center, score, sigma):
    if score < EPS:
        return
    h, w = plane.shape
    x0, x1 = max(int(center[0] - 3 * sigma), 0), min(int(center[0] + 3 * sigma) + 1, w)
    y0, y1 = max(int(center[1] - 3 * sigma), 0), min(int(center[1] + 3 * sigma) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    patch = np.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * sigma**2)) * score
    np.maximum(plane[y0:y1, x0:x1], patch, out=plane[y0:y1, x0:x1])


def _loop_segment(plane, a, b, score_a, score_b, sigma):
    score = min(score_a, score_b)
    if score < EPS:
        return
    length2 = float((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)
    if length2 < 1:
        _loop_point(plane, a, score_a, sigma)
        return
    h, w = plane.shape
    x0, x1 = max(int(min(a[0], b[0]) - 3 * sigma), 0), min(int(max(a[0], b[0]) + 3 * sigma) + 1, w)
    y0, y1 = max(int(min(a[1], b[1]) - 3 * sigma), 0), min(int(max(a[1], b[1]) + 3 * sigma) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    along = np.clip(((xs - a[0]) * (b[0] - a[0]) + (ys - a[1]) * (b[1] - a[1])) / length2, 0, 1)
    d2 = (xs - a[0] - along * (b[0] - a[0])) ** 2 + (ys - a[1] - along * (b[1] - a[1])) ** 2
    patch = np.exp(-d2 / (2 * sigma**2)) * score
    np.maximum(plane[y0:y1, x0:x1], patch, out=plane[y0:y1, x0:x1])


def grid_clips(count: int, size: int = 56, frames: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """``count`` two-person clips cropped and scaled to a size x size grid, as the model sees
    them (the validation pipeline's sampling and subjects-centred crop)."""
    pipeline = val_pipeline(clip_len=frames, size=size)
    kps, scores = [], []
    for seed in range(count):
        clip = pipeline(waving_and_walking_clip(num_frames=96, seed=seed))
        kps.append(clip["keypoint"])
        scores.append(clip["keypoint_score"])
    return np.stack(kps), np.stack(scores)


def time_interleaved(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so noise hits all alike."""
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    kp, sc = grid_clips(args.batch)
    rows = []
    for label, limbs in (("joints", None), ("limbs", "pyskl_released")):
        # One clip: 2 persons x 48 frames x 17 keypoints at 56 x 56.
        worst = float(np.abs(loop_rasterize(kp[0], sc[0], 56, 56, limbs=limbs)
                             - rasterize(kp[0], sc[0], 56, 56, limbs=limbs)).max())
        reused = Rasterizer(56, 56, limbs=limbs)
        one = time_interleaved({
            "loop": lambda: loop_rasterize(kp[0], sc[0], 56, 56, limbs=limbs),
            "fresh": lambda: rasterize(kp[0], sc[0], 56, 56, limbs=limbs),
            "reused": lambda: reused(kp[:1], sc[:1]),
        }, args.repeats)
        rows.append((f"{label}, 1 clip", one, worst))
        # A batch of clips, as the realtime batcher and the training loader see them.
        reused_batch = Rasterizer(56, 56, limbs=limbs)
        many = time_interleaved({
            "loop": lambda: [loop_rasterize(kp[i], sc[i], 56, 56, limbs=limbs) for i in range(len(kp))],
            "fresh": lambda: rasterize_batch(kp, sc, 56, 56, limbs=limbs),
            "reused": lambda: reused_batch(kp, sc),
        }, max(3, args.repeats // 4))
        rows.append((f"{label}, batch of {len(kp)}", {k: v / len(kp) for k, v in many.items()}, worst))

    print(f"rasterizer: 2 persons x 48 frames x 17 keypoints at 56 x 56, ms per volume (median), "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(f"{'case':<22}{'loop':>9}{'our fresh':>11}{'our reused':>12}{'x fresh':>9}{'x reused':>10}{'max |diff|':>12}")
    report = []
    for name, t, worst in rows:
        print(f"{name:<22}{t['loop'] * 1e3:9.2f}{t['fresh'] * 1e3:11.3f}{t['reused'] * 1e3:12.3f}"
              f"{t['loop'] / t['fresh']:9.1f}{t['loop'] / t['reused']:10.1f}{worst:12.1e}")
        report.append({"case": name, "ms_loop": t["loop"] * 1e3, "ms_fresh": t["fresh"] * 1e3,
                       "ms_reused": t["reused"] * 1e3, "speedup_fresh": t["loop"] / t["fresh"],
                       "speedup_reused": t["loop"] / t["reused"], "max_abs_diff": worst})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "numpy": np.__version__, "rows": report}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
