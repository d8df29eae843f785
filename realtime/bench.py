"""``posestream bench``: per-stage latency and throughput of the whole realtime pipeline.

For each stream count (1, 2, 4 by default) it runs a :class:`~posestream.realtime.pipeline.Runtime`
on that many copies of one video. By default each copy plays at its own frame rate, as a camera
delivers frames (``pace="realtime"``): the pipeline takes the newest frame whenever it is free
and the frames it could not take are dropped and counted, so the latencies are those a live
feed sees. With ``pace="fast"`` every frame is read as soon as the pipeline takes the previous
one (nothing dropped): frames per second is then the most the machine sustains, but frames wait
behind each other in the stages, which inflates the latencies. It reports:

- per-stage latency, pooled over all streams (median / p95 / p99 ms): ``read`` (frame waiting
  in the reader's slot), ``detect``, ``pose`` (landmarks for every person), ``track``,
  ``window`` (sampling windows), ``rasterize`` and ``classify`` (per batch), ``frame`` (capture
  -> frame done, i.e. end to end per frame) and ``frame_to_label`` (capture of a window's last
  frame -> its label out of the events stage: the decision latency);
- processed frames per second per stream and in total, windows classified (in total and per
  stream: a stream whose people get no label shows 0), batch sizes;
- people per processed frame and the person detector's calls per processed frame (the detector
  runs on every ``detect_every``-th frame, or when a track is lost: the frames in between are
  tracked by landmarks), per stream;
- resident memory at the start and end of each run, the machine and the settings.

The table goes to stdout, everything to a JSON file.
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from posestream.files import atomic_write
from posestream.realtime.config import RunConfig

__all__ = ["run_bench", "machine_info", "rss_mb", "format_table", "describe_backends"]

STAGES = ("read", "detect", "pose", "track", "window", "rasterize", "classify", "frame", "frame_to_label")


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    for mod in ("numpy", "onnxruntime", "torch", "cv2"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    from posestream.engines.backend import openvino_module

    openvino = openvino_module()  # not a plain import: that one sends OpenVINO's telemetry
    if openvino is not None:
        info["openvino"] = openvino.__version__
    return info


class _RssSampler:
    """Samples this process's resident memory every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.monotonic(), rss_mb()))

    def __enter__(self) -> "_RssSampler":
        self.samples.append((time.monotonic(), rss_mb()))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), rss_mb()))


def _stage_summary(metrics, stream: str = "all") -> dict[str, dict]:
    from posestream.realtime.pipeline import STAGE_HELP, STAGE_LATENCY

    out = {}
    for stage in STAGES:
        stats = metrics.latency(STAGE_LATENCY, STAGE_HELP, stream=stream, stage=stage)
        out[stage] = stats.summary()
    return out


def run_once(video: str, streams: int, config: RunConfig, *, engine=None, progress: bool = True) -> dict[str, Any]:
    """One pipeline run on ``streams`` copies of ``video``; returns its measurements."""
    from posestream.realtime.metrics import Metrics
    from posestream.realtime.pipeline import Runtime
    from posestream.realtime.sources import SourceSpec, parse_source

    base = parse_source(video)
    sources = [SourceSpec(base.kind, base.uri, f"s{i}") for i in range(streams)]
    metrics = Metrics()
    runtime = Runtime(sources, config, engine=engine, metrics=metrics)
    # The rasterize/classify stages run per batch in the batcher; pool them under "all" too.
    with _RssSampler() as rss:
        t0 = time.monotonic()
        runtime.start()
        try:
            last = -1.0
            while not runtime.wait(timeout=1.0):
                if progress:
                    done = sum(w.counts["frames_processed"] for w in runtime.workers)
                    if time.monotonic() - last > 5:
                        last = time.monotonic()
                        print(f"  {streams} stream(s): {done} frames processed", flush=True)
        finally:
            t_end = time.monotonic()
            runtime.stop()
    wall = t_end - t0
    per_stream = {w.name: w.counts["frames_processed"] for w in runtime.workers}
    dropped = {w.name: r.stats()["frames_dropped"]
               for w, r in zip(runtime.workers, runtime.readers)}
    stages = _stage_summary(metrics)
    for stage in ("rasterize", "classify"):  # the batcher records them per stream: pool them here
        values = [metrics.latency("posestream_stage_latency_seconds", "", stream=s.name, stage=stage).summary()
                  for s in sources]
        stages[stage] = _pool(values)
    batch = runtime.batcher.stats()
    classified = {w.name: 0 for w in runtime.workers}
    for name, counts in runtime.shown_label_counts().items():
        classified[name] = sum(counts.values())
    people = {w.name: round(w.counts["people_seen"] / max(1, w.counts["frames_processed"]), 2)
              for w in runtime.workers}
    detector = {w.name: round(w.counts["detector_calls"] / max(1, w.counts["frames_processed"]), 3)
                for w in runtime.workers}
    return {
        "streams": streams,
        "pose": runtime.status()["pose"],
        "wall_s": round(wall, 2),
        "frames": per_stream,
        "fps_per_stream": {k: round(v / wall, 2) for k, v in per_stream.items()},
        "fps_total": round(sum(per_stream.values()) / wall, 2),
        "frames_dropped": dropped,
        "stages_ms": stages,
        "windows": batch["windows"],
        "windows_per_stream": classified,
        "people_per_frame": people,
        "detector_per_frame": detector,
        "detection": {w.name: w.schedule.stats() for w in runtime.workers},  # why the detector ran
        "batches": batch["batches"],
        "mean_batch": round(batch["windows"] / batch["batches"], 2) if batch["batches"] else 0.0,
        "windows_dropped": batch["dropped_full"],
        "events": runtime.recent_events(),
        "rss_mb": {"start": round(rss.samples[0][1], 1), "end": round(rss.samples[-1][1], 1),
                   "max": round(max(v for _, v in rss.samples), 1)},
    }


def _pool(summaries: Sequence[dict]) -> dict:
    """Combine per-stream summaries of one stage (count-weighted mean; the max of the
    percentiles, which is an upper bound of the pooled percentile)."""
    summaries = [s for s in summaries if s.get("count")]
    if not summaries:
        return {"count": 0}
    count = sum(s["count"] for s in summaries)
    out = {"count": count, "mean_ms": sum(s["mean_ms"] * s["count"] for s in summaries) / count}
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        out[key] = max(s[key] for s in summaries)
    return out


def format_table(report: dict) -> str:
    """The report as a text table: one column per stream count."""
    runs = report["runs"]

    def row(name: str, cells) -> str:
        return f"{name:<18}" + "".join(f"{c:>26}" for c in cells)

    lines = [describe_backends(report), row("stage (ms)", [f"{r['streams']} stream(s) p50/p95/p99" for r in runs])]
    for stage in STAGES:
        cells = []
        for r in runs:
            s = r["stages_ms"].get(stage, {})
            cells.append("-" if not s.get("count") else f"{s['p50_ms']:.1f}/{s['p95_ms']:.1f}/{s['p99_ms']:.1f}")
        lines.append(row(stage, cells))
    lines.append(row("fps per stream", [f"{min(r['fps_per_stream'].values()):.2f}" for r in runs]))
    lines.append(row("fps total", [f"{r['fps_total']:.2f}" for r in runs]))
    lines.append(row("frames read/dropped", [f"{sum(r['frames'].values()) + sum(r['frames_dropped'].values())}/"
                                             f"{sum(r['frames_dropped'].values())}" for r in runs]))
    lines.append(row("windows (mean batch)", [f"{r['windows']} ({r['mean_batch']})" for r in runs]))
    lines.append(row("windows per stream", [" ".join(str(v) for v in r["windows_per_stream"].values())
                                            for r in runs]))
    lines.append(row("people per frame", [f"{sum(r['people_per_frame'].values()) / len(r['people_per_frame']):.2f}"
                                          for r in runs]))
    lines.append(row("detector per frame",
                     [f"{sum(r['detector_per_frame'].values()) / len(r['detector_per_frame']):.2f}" for r in runs]))
    lines.append(row("rss MiB start/end", [f"{r['rss_mb']['start']}/{r['rss_mb']['end']}" for r in runs]))
    return "\n".join(lines)


def describe_backends(report: dict) -> str:
    """One line: what runs the action model and each pose network (OpenVINO or ONNX Runtime)."""
    engine = report.get("engine", {})
    parts = [f"action: {engine.get('engine')} ({engine.get('backend', engine.get('device'))}, "
             f"{engine.get('precision')}, {engine.get('threads')} thread(s))"]
    pose = next((r.get("pose") for r in report.get("runs", []) if r.get("pose")), None) or {}
    for network, backend in (pose.get("backends") or {}).items():
        parts.append(f"{network}: {backend}")
    return "runs on: " + "; ".join(parts)


def run_bench(video: str, streams: Sequence[int] = (1, 2, 4), frames: int = 150,
              config: RunConfig | None = None, json_out: str | os.PathLike | None = None,
              progress: bool = True, extra: dict | None = None, pace: str = "realtime") -> dict[str, Any]:
    """Run the pipeline for each stream count in ``streams`` on ``frames`` frames of ``video``
    per stream; print the table and write the JSON report (atomically) when ``json_out``."""
    from posestream.realtime.pipeline import load_action_engine

    # replace() ignores None values, so the sinks are switched off by building a new config
    config = RunConfig(**{**(config or RunConfig()).__dict__, "pace": pace, "loop": True, "max_frames": frames,
                          "events_out": None, "video_out": None, "http": None, "show": False}).validate()
    engine = load_action_engine(config)
    runs = []
    for n in streams:
        runs.append(run_once(video, int(n), config, engine=engine, progress=progress))
    report = {**(extra or {}), "machine": machine_info(), "video": os.fspath(video), "frames_per_stream": frames,
              "settings": {k: v for k, v in config.__dict__.items()}, "engine": engine.info(), "runs": runs}
    if json_out is not None:
        atomic_write(json_out, lambda f: f.write(json.dumps(report, indent=2, default=str).encode()))
    return report
