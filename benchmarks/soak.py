"""Soak test: the realtime pipeline at full speed for a while; is resident memory flat?

    python benchmarks/soak.py --seconds 600 --streams 2

runs ``--streams`` copies of the sample video (vtest.avi), looped, read as fast as the
pipeline takes frames, and samples this process's resident memory every ``--every`` seconds.
It prints the samples and the growth over the second half of the run (after the engines,
arenas and caches have warmed up), in MiB and MiB per minute, and writes them as JSON.
``tests/test_soak.py`` runs a short version.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from posestream.realtime.bench import machine_info, rss_mb
from posestream.realtime.config import RunConfig


def soak(video: str, seconds: float, streams: int = 1, every: float = 2.0, config: RunConfig | None = None,
         progress: bool = True) -> dict:
    from posestream.realtime.pipeline import Runtime
    from posestream.realtime.sources import SourceSpec, parse_source

    base = parse_source(video)
    sources = [SourceSpec(base.kind, base.uri, f"s{i}") for i in range(streams)]
    config = RunConfig(**{**(config or RunConfig()).__dict__, "pace": "fast", "loop": True, "events_out": None,
                          "video_out": None, "http": None, "max_frames": None}).validate()
    samples = []
    runtime = Runtime(sources, config).start()
    t0 = time.monotonic()
    try:
        while (elapsed := time.monotonic() - t0) < seconds:
            frames = sum(w.counts["frames_processed"] for w in runtime.workers)
            samples.append({"t_s": round(elapsed, 1), "rss_mb": round(rss_mb(), 1), "frames": frames})
            if progress:
                print(f"{elapsed:7.1f} s  rss {samples[-1]['rss_mb']:8.1f} MiB  frames {frames}", flush=True)
            time.sleep(every)
    finally:
        runtime.stop()
    half = [s for s in samples if s["t_s"] >= seconds / 2] or samples[-1:]
    growth = half[-1]["rss_mb"] - half[0]["rss_mb"]
    span_min = max((half[-1]["t_s"] - half[0]["t_s"]) / 60, 1e-9)
    return {"machine": machine_info(), "video": video, "streams": streams, "seconds": seconds,
            "frames": samples[-1]["frames"] if samples else 0, "samples": samples,
            "second_half_growth_mb": round(growth, 1),
            "second_half_growth_mb_per_min": round(growth / span_min, 2),
            "max_rss_mb": max(s["rss_mb"] for s in samples) if samples else 0.0}


def main(argv=None) -> int:
    from posestream.realtime.app import find_sample_video

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", help="video to loop (default: the sample video vtest.avi)")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--every", type=float, default=5.0, help="seconds between memory samples")
    p.add_argument("--json", default="soak.json")
    args = p.parse_args(argv)
    video = args.video or find_sample_video()
    if video is None:
        print("soak: no sample video; run `sh tests/get_media.sh` or pass --video", file=sys.stderr)
        return 2
    report = soak(str(video), args.seconds, args.streams, args.every)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"{report['frames']} frames in {args.seconds:.0f} s; resident memory over the second half: "
          f"{report['second_half_growth_mb']:+.1f} MiB ({report['second_half_growth_mb_per_min']:+.2f} MiB/min), "
          f"max {report['max_rss_mb']:.0f} MiB; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
