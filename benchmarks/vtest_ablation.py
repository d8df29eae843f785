"""Which part of real skeletons makes the action model read vtest.avi's walkers as running:
the front end's skeletons of every frame (10 fps) replayed through the runtime's decision path
(posestream.realtime.replay: tracker, windows, classify) as they were, then with one thing
changed at a time (leg scores made sure, legs or arms hidden, trunk or all joints smoothed in
time along each track). Prints the share of windows whose top-1 is running and walking/standing.

    python benchmarks/vtest_ablation.py [--model x3d_s_synthetic.onnx] [--cache-dir /tmp/vtest_front_end]

On stage 5 (2026-12-04, Intel Xeon): as reported 17.0% running of 476 windows, leg scores made
sure 16.9%, legs hidden 11.8%, arms hidden 21.4%, trunk smoothed over 3 frames 17.0%, all joints
smoothed over 5 frames 19.6%: the legs as the front end draws them carry about a third of the
running reads; score style and trunk jitter none.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from front_end_errors import run_front_end  # noqa: E402

LEGS, ARMS, TRUNK = [13, 14, 15, 16], [7, 8, 9, 10], [5, 6, 11, 12]
VARIANTS = ("as_reported", "legs_sure", "legs_hidden", "arms_hidden", "trunk_smoothed", "all_smoothed")


def changed(variant: str, kp: np.ndarray, track: dict[int, np.ndarray] | None, index: int) -> np.ndarray:
    """One person's ``[V, 3]`` (x, y, score) with ``variant`` applied; ``track``: that person's
    keypoints by frame index (for the temporal variants)."""
    kp = kp.astype(np.float64).copy()
    if variant == "legs_sure":
        kp[LEGS, 2] = np.maximum(kp[LEGS, 2], 0.95)
    elif variant == "legs_hidden":
        kp[LEGS, 2] = 0.0
    elif variant == "arms_hidden":
        kp[ARMS, 2] = 0.0
    elif variant in ("trunk_smoothed", "all_smoothed") and track is not None:
        joints = TRUNK if variant == "trunk_smoothed" else list(range(kp.shape[0]))
        reach = 1 if variant == "trunk_smoothed" else 2
        near = [track[j][joints, :2] for j in range(index - reach, index + reach + 1) if j in track]
        kp[joints, :2] = np.mean(near, axis=0)
    return kp


def replay_variant(run: dict, variant: str, engine) -> dict[str, int]:
    from posestream.realtime.replay import people_from_keypoints, replay

    tracks: dict[int, dict[int, np.ndarray]] = {}
    for i, rec in enumerate(run["frames"]):
        for p in rec:
            if "track" in p:
                tracks.setdefault(p["track"], {})[i] = p["keypoints"]
    frames = []
    for i, rec in enumerate(run["frames"]):
        kps = [changed(variant, p["keypoints"], tracks.get(p.get("track")), i) for p in rec]
        people = people_from_keypoints(np.array([k[:, :2] for k in kps]), np.array([k[:, 2] for k in kps])) \
            if kps else []
        frames.append((i, i / run["fps"], people))
    out = replay(frames, tuple(run["img_shape"]), engine, fps_hint=run["fps"])
    counts: dict[str, int] = {}
    for label in out.labels:
        name = engine.class_names[label[4]]
        counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv=None) -> int:
    from posestream.engines.action import make_engine
    from posestream.realtime.pipeline import default_action_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(ROOT / "tests" / ".media" / "vtest.avi"))
    ap.add_argument("--model", help="action model (default: the shipped one)")
    ap.add_argument("--cache-dir", help="keep the front end's skeletons here between runs")
    args = ap.parse_args(argv)
    run = run_front_end(Path(args.video), 795, 0, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    engine = make_engine("auto", args.model or default_action_model())
    for variant in VARIANTS:
        counts = replay_variant(run, variant, engine)
        n = max(1, sum(counts.values()))
        calm = counts.get("walking", 0) + counts.get("standing", 0)
        print(f"{variant:15s} {n} windows: running {counts.get('running', 0) / n:.1%}, walking/standing "
              f"{calm / n:.1%}  {dict(sorted(counts.items(), key=lambda kv: -kv[1]))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
