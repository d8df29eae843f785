"""Evidence write time per event: real vtest.avi frames through a real EvidenceRecorder.

    python benchmarks/evidence.py [--events 5] [--pre-s 5] [--post-s 5] [--json out.json]
    python benchmarks/evidence.py --pipeline 150     # the same inside a real run (see below)

Frames are fed as the pose thread feeds them (each JPEG-encoded into the pre-event ring, the
cost the pipeline pays per frame), one event every ``pre_s + post_s + 1`` seconds of video so
that every clip is complete; the writer thread then writes a snapshot, an H.264 clip
(libx264 through PyAV, one thread) and the SQLite row per event. Reported: the writer's time
per event (``write_s``: snapshot + decode the ring's JPEGs + encode + fsync + rename), the
clip size, and the per-frame ``add_frame`` cost. The feed runs as fast as the CPU allows, so
the writer shares the CPU with it (as it shares it with the pipeline in a run).

``--pipeline N``: instead, N frames of the video through the whole pipeline (``Runtime``,
pace fast, the shipped models) with an event rule on ``walking`` (vtest's pedestrians walk),
and the recorder's own write times of the events it raised.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posestream.realtime.bench import machine_info  # noqa: E402
from posestream.realtime.evidence import EvidenceRecorder  # noqa: E402
from posestream.realtime.frames import Frame  # noqa: E402

VTEST = Path(__file__).resolve().parent.parent / "tests" / ".media" / "vtest.avi"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--pre-s", type=float, default=5.0)
    ap.add_argument("--post-s", type=float, default=5.0)
    ap.add_argument("--video", default=str(VTEST))
    ap.add_argument("--json", help="also write the report here")
    ap.add_argument("--pipeline", type=int, metavar="FRAMES", help="measure inside a real run of this many frames")
    args = ap.parse_args()
    if args.pipeline:
        return pipeline(args)
    cap = cv2.VideoCapture(args.video)
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    period = int(round((args.pre_s + args.post_s + 1) * fps))
    needed = period * args.events + int(args.pre_s * fps) + 1
    frames = []
    while len(frames) < needed:
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the video (795 frames)
            continue
        frames.append(image)
    cap.release()
    with tempfile.TemporaryDirectory() as tmp:
        recorder = EvidenceRecorder(Path(tmp) / "ev", pre_s=args.pre_s, post_s=args.post_s, retention_days=None,
                                    retention_gb=None)
        add_ms = []
        t0 = time.monotonic()
        raised = 0
        for i, image in enumerate(frames):
            frame = Frame("cam", i, t0 + i / fps, time.time(), image, pts=i / fps)
            t = time.perf_counter()
            recorder.add_frame("cam", frame, image)
            add_ms.append((time.perf_counter() - t) * 1000)
            if raised < args.events and i >= int(args.pre_s * fps) and (i - int(args.pre_s * fps)) % period == 0:
                raised += 1
                recorder.on_event({"kind": "fall", "stream": "cam", "track_id": 1, "label": "falling",
                                   "score": 0.9, "frame_index": i, "start_ts": time.time(), "end_ts": time.time()})
        assert recorder.close(600)
        stats = recorder.stats()
        store = recorder.store
        page = store.list_events(limit=500)["events"]
    writes = sorted(e["evidence"]["write_s"] for e in page)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    report = {
        "cpu": machine_info()["cpu"], "load_1min": float(load), "video": Path(args.video).name, "fps": fps, "pre_s": args.pre_s, "post_s": args.post_s,
        "events": len(page), "complete": stats["complete"],
        "clip_frames": sorted({e["evidence"]["clip_frames"] for e in page}),
        "write_s": {"p50": round(writes[len(writes) // 2], 3), "max": round(writes[-1], 3),
                    "mean": round(float(np.mean(writes)), 3)},
        "mb_per_event": round(float(np.mean([e["evidence"]["bytes"] for e in page])) / 1e6, 2),
        "add_frame_ms": {"p50": round(float(np.percentile(add_ms, 50)), 2),
                         "p95": round(float(np.percentile(add_ms, 95)), 2)},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def pipeline(args) -> int:
    from posestream.realtime.config import RunConfig
    from posestream.realtime.pipeline import Runtime
    from posestream.realtime.sources import parse_source

    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(pace="fast", max_frames=args.pipeline, events_out=None, evidence=str(Path(tmp) / "ev"),
                           evidence_pre_s=args.pre_s, evidence_post_s=args.post_s,
                           action_events=[{"label": "walking", "min_score": 0.0, "min_duration_s": 0.0}])
        runtime = Runtime([parse_source(args.video)], config).start()
        runtime.wait()
        runtime.stop()
        stats = runtime.sinks["evidence"].stats()
        page = runtime.evidence.store.list_events(limit=500)["events"]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    report = {"cpu": machine_info()["cpu"], "load_1min": float(load), "mode": "pipeline", "frames": args.pipeline,
              "pre_s": args.pre_s, "post_s": args.post_s, "events": len(page),
              "complete": stats["complete"], "partial": stats["partial"],
              "clip_frames": sorted(e["evidence"]["clip_frames"] for e in page), "write_time": stats["write_time"],
              "mb_per_event": round(float(np.mean([e["evidence"]["bytes"] for e in page])) / 1e6, 2) if page else None}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
