"""Pose front-end latency and people found, on real footage (OpenCV's vtest.avi).

    sh tests/get_media.sh
    python benchmarks/pose.py [--presets default webcam surveillance] [--threads 1 2]
                              [--frames 60] [--overlay out.png] [--json out.json]

For each preset and thread count: per-frame latency (median / p95, ms) of the detector
(MoveNet: resize, network, decoding, de-duplication), of the landmark stage per person
(crop, BlazePose, decoding) and of the whole call, over ``--frames`` frames spread evenly
over the video (after 3 warm-up calls); then the people found at frames 0/100/300/600 against
the counts a person sees there (3/7/6/6; MoveNet returns at most 6 people), and how many got
BlazePose keypoints vs MoveNet's (fallback).

``--overlay out.png`` writes, per preset, ``out-<preset>.png``: the four frames and the two
still images (messi5.jpg, basketball1.png) with boxes and skeletons (green box: BlazePose
keypoints; orange: MoveNet fallback; cyan/magenta: the person's left/right limbs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import sys
from pathlib import Path

import numpy as np

from posestream.engines.pose import draw_people, make_pose_estimator

REPO = Path(__file__).resolve().parents[1]
KNOWN_COUNTS = {0: 3, 100: 7, 300: 6, 600: 6}


def read_frames(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        sys.exit(f"{path}: cannot open")
    wanted = set(indices)
    frames = {}
    i = 0
    while len(frames) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            frames[i] = frame
        i += 1
    cap.release()
    return frames


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def tile(images: list[np.ndarray], height: int = 432) -> np.ndarray:
    import cv2

    scaled = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height)) for im in images]
    rows, row = [], []
    for im in scaled:
        row.append(im)
        if len(row) == 3:
            rows.append(row)
            row = []
    if row:
        rows.append(row)
    width = max(sum(im.shape[1] for im in r) for r in rows)
    canvas = np.zeros((height * len(rows), width, 3), np.uint8)
    for r, images_row in enumerate(rows):
        x = 0
        for im in images_row:
            canvas[r * height:(r + 1) * height, x:x + im.shape[1]] = im
            x += im.shape[1]
    return canvas


def track_timing(video: Path, count: int) -> dict:
    """The tracker's own latency on real detections: the default front end on ``count``
    consecutive frames, then ``ByteTracker.update`` timed frame by frame."""
    from posestream.realtime.tracker import ByteTracker

    est = make_pose_estimator("default")
    frames = read_frames(video, list(range(count)))
    detections = [est(frames[i]) for i in range(count)]
    tracker = ByteTracker(fps=10.0, **est.tracker_thresholds())
    times, ids = [], set()
    for i, people in enumerate(detections):
        start = time.perf_counter()
        tracks = tracker.update(people, frame_index=i)
        times.append((time.perf_counter() - start) * 1e3)
        ids.update(t.track_id for t in tracks if t.state == "confirmed")
    row = {"frames": count, "tracker_ms": [pct(times, 50), pct(times, 95)],
           "people_per_frame": statistics.mean(len(d) for d in detections), "confirmed_ids": len(ids)}
    print(f"tracker on frames 0-{count - 1}: p50 {row['tracker_ms'][0]:.2f} ms, p95 {row['tracker_ms'][1]:.2f} ms "
          f"per frame ({row['people_per_frame']:.1f} people a frame, {len(ids)} confirmed track ids)")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", default=str(REPO / "tests" / ".media"))
    ap.add_argument("--presets", nargs="+", default=["default", "webcam", "surveillance"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--frames", type=int, default=60, help="timed frames, spread over the video")
    ap.add_argument("--overlay", help="write <stem>-<preset>.png overlays")
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--track-frames", type=int, default=100,
                    help="consecutive frames from the start for the tracker timing (0: skip)")
    args = ap.parse_args()

    import cv2

    media = Path(args.media)
    video = media / "vtest.avi"
    if not video.is_file():
        sys.exit(f"{video} is missing: run tests/get_media.sh")
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 795
    cap.release()
    timed_idx = sorted(set(np.linspace(0, total - 1, args.frames).round().astype(int).tolist()))
    frames = read_frames(video, sorted(set(timed_idx) | set(KNOWN_COUNTS)))
    stills = {name: cv2.imread(str(media / name)) for name in ("messi5.jpg", "basketball1.png")}

    print(f"# pose front ends on {video.name} ({frames[0].shape[1]}x{frames[0].shape[0]}), "
          f"{len(timed_idx)} timed frames; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}")
    results = []
    header = ("| preset | MoveNet input | threads | detector p50 / p95 ms | landmarks per person p50 / p95 ms "
              "| frame total p50 / p95 ms | people / frame | found at 0/100/300/600 (3/7/6/6) | BlazePose / fallback |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for preset in args.presets:
        for threads in args.threads:
            est = make_pose_estimator(preset, threads=threads)
            for i in timed_idx[:3]:
                est(frames[i])
            det, lm, tot, people = [], [], [], []
            sources = {"blazepose": 0, "movenet": 0}
            for i in timed_idx:
                out = est(frames[i])
                det.append(est.timing.detector_ms)
                lm.extend(est.timing.landmarks_ms)
                tot.append(est.timing.total_ms)
                people.append(len(out))
                for p in out:
                    sources[p.source] = sources.get(p.source, 0) + 1
            found = {i: len(est(frames[i])) for i in KNOWN_COUNTS}
            h, w = frames[0].shape[:2]
            x, _ = est.detector.preprocess(frames[0])
            size = f"{x.shape[2]}x{x.shape[1]}"
            row = {"preset": preset, "input": size, "threads": threads,
                   "detector_ms": [pct(det, 50), pct(det, 95)], "landmarks_ms": [pct(lm, 50), pct(lm, 95)],
                   "total_ms": [pct(tot, 50), pct(tot, 95)], "people_per_frame": statistics.mean(people),
                   "found": found, "sources": sources}
            results.append(row)
            print(f"| {preset} | {size} | {threads} | {row['detector_ms'][0]:.1f} / {row['detector_ms'][1]:.1f} "
                  f"| {row['landmarks_ms'][0]:.1f} / {row['landmarks_ms'][1]:.1f} "
                  f"| {row['total_ms'][0]:.1f} / {row['total_ms'][1]:.1f} | {row['people_per_frame']:.2f} "
                  f"| {'/'.join(str(found[i]) for i in KNOWN_COUNTS)} "
                  f"| {sources.get('blazepose', 0)} / {sources.get('movenet', 0)} |", flush=True)
            if args.overlay and threads == args.threads[0]:
                images = [draw_people(frames[i], est(frames[i])) for i in KNOWN_COUNTS]
                for i, im in zip(KNOWN_COUNTS, images):
                    cv2.putText(im, f"vtest #{i}: {found[i]} found, {KNOWN_COUNTS[i]} there", (8, 20),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
                images += [draw_people(im, est(im)) for im in stills.values() if im is not None]
                stem = Path(args.overlay)
                dest = stem.with_name(f"{stem.stem}-{preset}{stem.suffix or '.png'}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(dest), tile(images))
                print(f"  overlay: {dest}", flush=True)
    tracking = track_timing(video, args.track_frames) if args.track_frames else None
    if args.json:
        Path(args.json).write_text(json.dumps({"video": str(video), "timed_frames": timed_idx, "results": results,
                                               "tracking": tracking},
                                              indent=2))


if __name__ == "__main__":
    main()
