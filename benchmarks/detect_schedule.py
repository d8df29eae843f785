"""How often the person detector must run: people found per frame, detector calls per frame and
time per frame for each detection period, on real footage (OpenCV's vtest.avi).

    sh tests/get_media.sh
    python benchmarks/detect_schedule.py [--every 1 2 3 5 8] [--frames 100] [--step 1 4]
                                         [--preset default] [--json out.json]
    python benchmarks/detect_schedule.py --batch-sizes 1 2 4 6 [--threads 1]

For each ``--step`` (1: every frame of the 10 fps video, as a stream that keeps up; 4: every
4th, as a stream processing 2.5 frames/s) the same ``--frames`` frames go through
:func:`posestream.realtime.perception.perceive` once per ``--every`` (1 = the detector on
every frame: the baseline). Reported per run: people per frame (and its difference from the
baseline), the share of frames that ran the detector and why, and the median time per frame.

``--batch-sizes 1 2 4 6`` instead measures the landmark model's cost per frame of N people:
N crops in one call of the dynamic-batch copy against N calls of the shipped batch-1 file,
CPU time of this process (less sensitive to other jobs than wall time) and wall time, median
of ``--repeats`` interleaved rounds, at ``--threads`` intra-op threads.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from posestream.engines.pose import make_pose_estimator
from posestream.realtime.perception import perceive

REPO = Path(__file__).resolve().parents[1]


def read_frames(path: Path, count: int, step: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        sys.exit(f"{path}: cannot open")
    frames, i = [], 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def batch_cost(args: argparse.Namespace) -> int:
    import time

    from posestream.engines.pose import BlazePoseLandmarks

    batched = BlazePoseLandmarks(threads=args.threads, max_batch=max(args.batch_sizes))
    single = BlazePoseLandmarks(threads=args.threads)
    rng = np.random.default_rng(0)
    print(f"CPU: {platform.processor() or platform.machine()}; {args.threads} thread(s); ms, median of {args.repeats}")
    print("| people | one call: CPU / wall | one call per person: CPU / wall |")
    print("|---:|---:|---:|")
    rows = []
    for n in args.batch_sizes:
        x = rng.random((n, 256, 256, 3), dtype=np.float32)
        runs = {"batched": (batched, [x]), "single": (single, [x[i:i + 1] for i in range(n)])}
        cost: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        for rep in range(args.repeats + 1):
            for name, (lm, inputs) in runs.items():
                c, w = time.process_time(), time.perf_counter()
                for xi in inputs:
                    lm.session.run(lm._outputs, {lm.input_name: xi})
                if rep:  # the first round plans memory for the shape: left out
                    cost[name].append(((time.process_time() - c) * 1e3, (time.perf_counter() - w) * 1e3))
        med = {k: np.median(np.array(v), axis=0) for k, v in cost.items()}
        rows.append({"people": n, **{f"{k}_cpu_ms": round(float(v[0]), 1) for k, v in med.items()},
                     **{f"{k}_wall_ms": round(float(v[1]), 1) for k, v in med.items()}})
        print(f"| {n} | {med['batched'][0]:.1f} / {med['batched'][1]:.1f} | {med['single'][0]:.1f} / "
              f"{med['single'][1]:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": platform.processor(), "threads": args.threads, "rows": rows},
                                              indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(REPO / "tests" / ".media" / "vtest.avi"))
    ap.add_argument("--every", type=int, nargs="+", default=[1, 2, 3, 5, 8])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--step", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-gap-s", type=float, default=float("inf"),
                    help="detect every frame when frames come further apart (default: never; the runtime's is 0.3)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    if args.batch_sizes:
        return batch_cost(args)
    rows = []
    print(f"CPU: {platform.processor() or platform.machine()}; preset {args.preset}, {args.frames} frames")
    print("| step | every | people/frame | vs every=1 | detector/frame | reasons | ms/frame p50 |")
    print("|---:|---:|---:|---:|---:|---|---:|")
    for step in args.step:
        frames = read_frames(Path(args.video), args.frames, step)
        base = None
        for every in args.every:
            est = make_pose_estimator(args.preset, threads=args.threads)
            fps = 10.0 / step  # the video's own 10 fps, every step-th frame processed
            perceive(est, frames[:2], every, fps=fps)  # warm-up (first calls plan memory)
            run = perceive(est, frames, every, fps=fps, max_gap_s=args.max_gap_s)
            ppf = run.people_per_frame
            if every == 1:
                base = ppf
            row = {"step": step, "every": every, "frames": len(frames), "people_per_frame": round(ppf, 3),
                   "vs_every_1": None if base is None else round(ppf - base, 3),
                   "detector_per_frame": round(run.detector_per_frame, 3), "reasons": run.schedule["reasons"],
                   "ms_per_frame_p50": round(1e3 * float(np.median(run.seconds)), 1)}
            rows.append(row)
            print(f"| {step} | {every} | {ppf:.2f} | {'' if base is None else f'{ppf - base:+.2f}'} "
                  f"| {row['detector_per_frame']:.2f} | {row['reasons']} | {row['ms_per_frame_p50']:.0f} |",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": platform.processor(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
