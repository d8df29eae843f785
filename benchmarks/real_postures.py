"""Real people held still: skeletons our pose front end finds in real footage (vtest.avi's
pedestrians, the sample stills), each held for 3 s as a photo's skeleton would be, classified
the way the runtime classifies a track's window; and the same skeletons turned on their side
(rotated 70-110 degrees in the image: a body lying with the trunk near horizontal, as an
estimator would report it), which should read as down (lying or falling).

    python benchmarks/real_postures.py --frames 120 --out real_postures.json

There are no labelled photos of fallen people on these machines; a real upright skeleton
turned horizontal keeps the estimator's real noise and a real body's proportions, but not a
fallen body's limbs (they stay as they were standing), so it is a proxy, reported as such. The
upright originals measure the other side: how often a real upright person reads as down.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HOLD_S, FPS = 3.0, 10.0
DOWN = ("lying", "falling")


def real_skeletons(video: str, frames: int, stride: int, stills: list[str]) -> list[tuple[np.ndarray, tuple]]:
    """``(keypoints [17, 3], img_shape)`` of every person the default front end finds."""
    import cv2

    from posestream.engines.pose import make_pose_estimator

    estimator = make_pose_estimator("default")
    out = []
    cap = cv2.VideoCapture(video)
    for i in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        if i % stride:
            continue
        out.extend((p.keypoints.copy(), image.shape[:2]) for p in estimator(image) if p.keypoints[:, 2].sum() > 5)
    cap.release()
    for path in stills:
        image = cv2.imread(path)
        if image is not None:
            out.extend((p.keypoints.copy(), image.shape[:2]) for p in estimator(image) if p.keypoints[:, 2].sum() > 5)
    return out


def rotate(keypoints: np.ndarray, degrees: float) -> np.ndarray:
    """The skeleton turned by ``degrees`` about its hips' midpoint (image plane)."""
    kp = keypoints.copy()
    centre = kp[[11, 12], :2].mean(0)
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    kp[:, :2] = (kp[:, :2] - centre) @ rot.T + centre
    return kp


def classify_held(engine, batcher, skeletons: list[np.ndarray], img_shape, rng) -> np.ndarray:
    """Probabilities ``[N, C]`` of each skeleton held still for 3 s (small jitter), cut and
    classified exactly as a runtime track window."""
    import queue

    from posestream.realtime.batcher import WindowJob
    from posestream.realtime.windows import StreamTracks, sample_track_window

    n = int(HOLD_S * FPS)
    probs = []
    jobs = []
    for kp in skeletons:
        tracks = StreamTracks("photo", img_shape=img_shape)
        size = float(np.ptp(kp[kp[:, 2] > 0.3, :2], axis=0).max()) if (kp[:, 2] > 0.3).sum() > 1 else 50.0

        class _Track:  # the tracker's snapshot, as StreamTracks reads it
            state, time_since_update, track_id = "confirmed", 0, 1

        for f in range(n):
            t = _Track()
            jitter = kp.copy()
            jitter[:, :2] += rng.normal(0.0, 0.004 * size, (17, 2))
            t.keypoints, t.box = jitter, np.r_[jitter[:, :2].min(0), jitter[:, :2].max(0), 1.0].astype(np.float32)
            tracks.update([t], f, f / FPS)
        sample = sample_track_window(tracks.history(1), (n - 1) / FPS, HOLD_S + 0.1, batcher.clip_len, batcher.size)
        jobs.append(WindowJob("photo", 1, sample.keypoint, sample.score, 0.0, 0, queue.Queue()))
    for i in range(0, len(jobs), 8):
        probs.extend(r.probs for r in batcher.classify(jobs[i:i + 8]))
    return np.array(probs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="tests/.media/vtest.avi")
    parser.add_argument("--stills", nargs="*", default=["tests/.media/basketball1.png", "tests/.media/messi5.jpg"])
    parser.add_argument("--frames", type=int, default=120, help="vtest frames to read")
    parser.add_argument("--stride", type=int, default=4, help="every n-th frame")
    parser.add_argument("--model", help="action model (default: the shipped one)")
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if not Path(args.video).is_file():
        print(f"{args.video}: no such file (sh tests/get_media.sh)", file=sys.stderr)
        return 2

    from posestream.realtime.batcher import ActionBatcher
    from posestream.realtime.config import RunConfig
    from posestream.realtime.pipeline import load_action_engine

    engine = load_action_engine(RunConfig(model=args.model))
    batcher = ActionBatcher(engine)
    names = list(engine.class_names)
    down = [names.index(c) for c in DOWN]
    people = real_skeletons(args.video, args.frames, args.stride, [s for s in args.stills if Path(s).is_file()])
    rng = np.random.default_rng(0)
    results = {"people": len(people)}
    for what, angles in (("upright", [0.0]), ("turned_horizontal", [-110, -90, -70, 70, 90, 110])):
        top = []
        for kp, shape in people:
            angle = float(rng.choice(angles))
            # a horizontal body needs room: the frame gets the rotated extent
            p = classify_held(engine, batcher, [rotate(kp, angle)], shape, rng)[0]
            top.append(int(np.argmax(p)))
        top = np.array(top)
        counts = {names[i]: int((top == i).sum()) for i in np.unique(top)}
        results[what] = {"n": int(len(top)), "down": float(np.isin(top, down).mean()), "labels": counts}
        print(f"{what:18s} {len(top)} people: read as down (lying/falling) {np.isin(top, down).mean():.1%}  {counts}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
