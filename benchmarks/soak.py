"""Soak test: the realtime pipeline at full speed for a while; do memory, files and threads stay flat?

    python benchmarks/soak.py --seconds 3600 --streams 1

runs ``--streams`` copies of the sample video (vtest.avi), looped, read as fast as the
pipeline takes frames, and samples this process's resident memory (``/proc/self/statm``),
open file descriptors (``/proc/self/fd``) and threads (``/proc/self/status``: native ones,
ONNX Runtime's pools included) every ``--every`` seconds. Over the second half of the run
(after the engines, arenas and caches have warmed up) it reports how much each grew: first
sample to last, and the least-squares slope per minute. It prints a progress line every
``--progress-every`` seconds, a summary a README can quote, and writes everything as JSON
(``--json``). ``tests/test_soak.py`` runs a 40 s version.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from posestream.realtime.bench import machine_info, rss_mb
from posestream.realtime.config import RunConfig

RESOURCES = ("rss_mb", "fds", "threads")


def open_fds() -> int:
    """Open file descriptors of this process (Linux; -1 elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
    except OSError:
        return -1


def native_threads() -> int:
    """Threads of this process as the kernel counts them (Linux; -1 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def fd_targets() -> set[str]:
    """What this process's descriptors point at (files, sockets, pipes)."""
    out = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                out.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass  # listdir's own descriptor, closed by now
    except OSError:
        pass
    return out


def _resources() -> dict:
    return {"rss_mb": round(rss_mb(), 1), "fds": open_fds(), "threads": native_threads(),
            "python_threads": threading.active_count()}


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def growth(samples: list[dict], seconds: float) -> dict[str, dict[str, float]]:
    """Per resource, over the samples of the second half: ``first``, ``last``, ``min``,
    ``max``, ``growth`` (last - first) and ``per_min`` (least-squares slope)."""
    half = [s for s in samples if s["t_s"] >= seconds / 2] or samples[-1:]
    out = {}
    for key in RESOURCES:
        values = [s[key] for s in half]
        out[key] = {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
                    "growth": round(values[-1] - values[0], 1),
                    "per_min": round(_slope_per_min([(s["t_s"], s[key]) for s in half]), 3)}
    return out


def soak(video: str, seconds: float, streams: int = 1, every: float = 2.0, config: RunConfig | None = None,
         progress: bool = True, progress_every: float = 30.0) -> dict:
    from posestream.realtime.pipeline import Runtime
    from posestream.realtime.sources import SourceSpec, parse_source

    base = parse_source(video)
    sources = [SourceSpec(base.kind, base.uri, f"s{i}") for i in range(streams)]
    config = RunConfig(**{**(config or RunConfig()).__dict__, "pace": "fast", "loop": True, "events_out": None,
                          "video_out": None, "http": None, "max_frames": None}).validate()
    samples: list[dict] = []
    before, fds_before = _resources(), fd_targets()
    runtime = Runtime(sources, config).start()
    t0 = time.monotonic()
    next_progress = 0.0
    try:
        while (elapsed := time.monotonic() - t0) < seconds:
            frames = sum(w.counts["frames_processed"] for w in runtime.workers)
            samples.append({"t_s": round(elapsed, 1), "rss_mb": round(rss_mb(), 1), "fds": open_fds(),
                            "threads": native_threads(), "frames": frames})
            if progress and elapsed >= next_progress:
                s = samples[-1]
                left = max(0.0, seconds - elapsed)
                print(f"[{elapsed:7.0f} / {seconds:.0f} s, {left / 60:5.1f} min left]  rss {s['rss_mb']:7.1f} MiB  "
                      f"fds {s['fds']:4d}  threads {s['threads']:3d}  frames {frames} "
                      f"({frames / elapsed if elapsed > 0 else 0.0:.1f}/s)", flush=True)
                next_progress = elapsed + progress_every
            time.sleep(every)
        status = runtime.status()
    finally:
        not_finished = runtime.stop()
    after = _resources()
    # what stayed open past stop(): libraries' process-wide state (ONNX Runtime, OpenCV), or a leak
    new_fds = sorted(fd_targets() - fds_before)
    frames = samples[-1]["frames"] if samples else 0
    stages = {}
    for stream in status["streams"]:
        for name, st in stream["stages"].items():
            agg = stages.setdefault(name, {"failures": 0, "restarts": 0})
            agg["failures"] += st["failures"]
            agg["restarts"] += st["restarts"]
    return {"machine": machine_info(), "video": video, "streams": streams, "seconds": seconds, "every_s": every,
            "frames": frames, "fps": round(frames / samples[-1]["t_s"], 2) if samples and samples[-1]["t_s"] else 0.0,
            "samples": samples, "second_half": growth(samples, seconds) if samples else {},
            "before_start": before, "after_stop": after, "fds_opened_and_kept": new_fds,
            "not_finished": not_finished,
            "windows": status["batcher"]["windows"], "windows_dropped": status["batcher"]["dropped_full"],
            "frames_dropped": sum(s["source"]["frames_dropped"] for s in status["streams"]),
            "stage_failures": stages, "health": [s["health"] for s in status["streams"]],
            "events": status["events"], "events_kept": status["events_kept"],
            # kept for older readers of soak.json
            "second_half_growth_mb": growth(samples, seconds)["rss_mb"]["growth"] if samples else 0.0,
            "max_rss_mb": max(s["rss_mb"] for s in samples) if samples else 0.0}


def summary(report: dict) -> str:
    """The figures, in lines a README can quote."""
    h = report["second_half"]
    lines = [f"soak: {report['streams']} stream(s) of {Path(report['video']).name}, looped at full speed, "
             f"{report['seconds']:.0f} s: {report['frames']} frames ({report['fps']:.1f}/s), "
             f"{report['windows']} windows classified"]
    n_half = sum(1 for s in report["samples"] if s["t_s"] >= report["seconds"] / 2)
    lines.append(f"  over the second half ({n_half} samples, every {report['every_s']:g} s):")
    lines.append(f"    resident memory {h['rss_mb']['first']:.0f} -> {h['rss_mb']['last']:.0f} MiB "
                 f"({h['rss_mb']['growth']:+.1f} MiB, slope {h['rss_mb']['per_min']:+.2f} MiB/min; "
                 f"range {h['rss_mb']['min']:.0f}-{h['rss_mb']['max']:.0f})")
    lines.append(f"    open file descriptors {h['fds']['first']} -> {h['fds']['last']} ({h['fds']['growth']:+.0f}; "
                 f"range {h['fds']['min']}-{h['fds']['max']})")
    lines.append(f"    threads {h['threads']['first']} -> {h['threads']['last']} ({h['threads']['growth']:+.0f}; "
                 f"range {h['threads']['min']}-{h['threads']['max']})")
    b, a = report["before_start"], report["after_stop"]
    lines.append(f"  before start / after stop: fds {b['fds']} / {a['fds']} (kept: "
                 f"{', '.join(report['fds_opened_and_kept']) or 'none'}), threads {b['threads']} / {a['threads']} "
                 f"(Python's {b['python_threads']} / {a['python_threads']}); "
                 f"stop() left running: {', '.join(report['not_finished']) or 'nothing'}")
    failures = {k: v for k, v in report["stage_failures"].items() if v["failures"] or v["restarts"]}
    lines.append(f"  stage failures: {failures or 'none'}; health at the end: {', '.join(report['health'])}; "
                 f"frames dropped by the readers {report['frames_dropped']}, windows dropped {report['windows_dropped']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from posestream.realtime.app import find_sample_video

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", help="video to loop (default: the sample video vtest.avi)")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--json", default="soak.json")
    args = p.parse_args(argv)
    if not args.seconds > 0 or not args.every > 0:
        p.error("--seconds and --every must be > 0")
    video = args.video or find_sample_video()
    if video is None:
        print("soak: no sample video; run `sh tests/get_media.sh` or pass --video", file=sys.stderr)
        return 2
    report = soak(str(video), args.seconds, args.streams, args.every, progress_every=args.progress_every)
    from posestream.files import atomic_write

    atomic_write(args.json, lambda f: f.write(json.dumps(report, indent=2).encode("utf-8")))
    print(summary(report))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
