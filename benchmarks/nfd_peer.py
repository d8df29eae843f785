"""The NFD peer (neura-fall-detection 0.1.0) on the same footage as ``posestream bench``.

    sh benchmarks/setup_nfd.sh                  # once: .venv-nfd with NFD and its run-time needs
    .venv-nfd/bin/python benchmarks/nfd_peer.py [--video tests/.media/vtest.avi] [--frames 0]
                                                [--threads 2] [--json nfd.json]

NFD's whole pipeline (its ``NFDModel.process``: MoveNet MultiPose Lightning in LiteRT, its
tracker, its temporal fall model in ONNX Runtime, its fall logic) on every frame of the video
in one thread, as fast as it goes (like ``posestream bench --pace fast``), each frame stamped
with its video time. Prints frames/s (frames / wall time), per-frame latency p50/p95, people
per frame, track ids and fall events. It imports nothing from posestream (NFD lives in its own
venv: it pins old versions of its dependencies, see FACTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(REPO / "tests" / ".media" / "vtest.avi"))
    ap.add_argument("--frames", type=int, default=0, help="frames to process (0: the whole video)")
    ap.add_argument("--threads", type=int, default=2, help="NFD's pose_threads (its default is 4; this machine has 2 cores)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        import cv2
        import numpy as np
        from neura_fall_detection import NFDModel
    except ImportError as exc:
        sys.exit(f"NFD is not importable here ({exc}): run `sh benchmarks/setup_nfd.sh`, then "
                 f"`.venv-nfd/bin/python {Path(__file__).relative_to(REPO)}`")
    if not Path(args.video).is_file():
        sys.exit(f"{args.video}: no such video (sh tests/get_media.sh fetches vtest.avi)")
    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        sys.exit(f"{args.video}: cannot open")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while args.frames <= 0 or len(frames) < args.frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        sys.exit(f"{args.video}: no frames")

    model = NFDModel(pose_threads=args.threads)
    model.process(frames[0], timestamp=0.0)  # warm-up: the first call initialises LiteRT
    model = NFDModel(pose_threads=args.threads)  # a fresh tracker for the measured pass
    latencies, people, ids, falls = [], [], set(), 0
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        result = model.process(frame, timestamp=i / fps)
        latencies.append((time.perf_counter() - t) * 1e3)
        people.append(len(result.people))
        ids.update(p.track_id for p in result.people)
        falls += len(result.new_fall_events)
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    report = {"peer": "neura-fall-detection 0.1.0", "cpu": cpu_name(), "cpus": os.cpu_count(),
              "video": args.video, "frames": len(frames), "threads": args.threads, "wall_s": round(wall, 2),
              "fps": round(len(frames) / wall, 2), "latency_ms_p50": round(statistics.median(latencies), 1),
              "latency_ms_p95": round(q[18], 1), "people_per_frame": round(float(np.mean(people)), 2),
              "track_ids": len(ids), "fall_events": falls}
    print(f"NFD on {Path(args.video).name}: {report['frames']} frames in {report['wall_s']} s = "
          f"{report['fps']} frames/s (latency p50 {report['latency_ms_p50']} ms, p95 {report['latency_ms_p95']} ms); "
          f"{report['people_per_frame']} people/frame, {report['track_ids']} track ids, "
          f"{report['fall_events']} fall events; {report['cpu']}, {args.threads} thread(s)")
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
