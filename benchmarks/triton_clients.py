"""1, 2 and 4 client processes against one Triton server (``posestream serve``), beside the
same processes with local engines, in one run on one machine.

    sh scripts/setup_serve.sh                       # once: .venv-serve (Python 3.13, PyTriton)
    python benchmarks/triton_clients.py [--clients 1 2 4] [--frames 150] [--pace fast] [--json triton.json]

Each client is a ``posestream bench --streams 1`` process on vtest.avi (the surveillance
preset: the default front end, every person), all of one row started at once; ``triton`` rows
run all three networks on the server (``--engine triton --pose-backend triton``), ``local``
rows on the process's own OpenVINO. Printed per row: processed frames/s of all clients
together, the slowest client's, frame -> label p95 (the worst client), the clients' CPU time
per processed frame (user + system, start-up included: what an edge box spends per frame with
the networks local or on the server), and, for ``triton``
rows, the batches Triton formed per model (requests per execution, and the largest batch,
from Triton's own statistics). Then the network hop: per network, the median ms of a call on
the server against the same call on a local session, one process, one call at a time (the
time a request spends in gRPC, the server's queue and its Python backend, beyond the
compute). On one small machine the server and the clients share the cores, so the
throughput rows say what the hop and the batching cost here, not what a separate GPU server
gives (the README's sizing note works that out from ``benchmarks/gpu_check.sh``'s figures).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from posestream.realtime.bench import machine_info  # noqa: E402
from triton_server import DEFAULT_MODELS, SERVE_PYTHON, Server  # noqa: E402

VTEST = ROOT / "tests" / ".media" / "vtest.avi"


def run_clients(n: int, frames: int, pace: str, url: str | None, out_dir: Path, landmark_batch: int = 1) -> list[dict]:
    """``n`` bench processes at once; their JSON reports."""
    procs, paths = [], []
    for i in range(n):
        path = out_dir / f"{'triton' if url else 'local'}_{n}_{i}.json"
        cmd = [sys.executable, "-m", "posestream", "bench", "--video", str(VTEST), "--streams", "1", "--frames",
               str(frames), "--pace", pace, "--landmark-batch", str(landmark_batch), "--json", str(path)]
        if url:
            cmd += ["--engine", "triton", "--pose-backend", "triton", "--triton-url", url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        paths.append(path)
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"a client failed ({p.returncode}): {err[-1500:]}")
    return [json.loads(p.read_text()) for p in paths]


def batch_figures(before: dict, after: dict) -> dict[str, dict]:
    """Per model: requests, executions, requests per execution, the largest batch (in
    volumes/frames: Triton's batch_stats are by batch size)."""
    out = {}
    for model in DEFAULT_MODELS:
        a, b = after.get(model, {}), before.get(model, {})
        requests = int(a.get("inference_stats", {}).get("success", {}).get("count", 0)) - \
            int(b.get("inference_stats", {}).get("success", {}).get("count", 0))
        executions = int(a.get("execution_count", 0)) - int(b.get("execution_count", 0))
        old = {int(s["batch_size"]): int(s["compute_infer"]["count"]) for s in b.get("batch_stats", [])}
        sizes = {int(s["batch_size"]): int(s["compute_infer"]["count"]) - old.get(int(s["batch_size"]), 0)
                 for s in a.get("batch_stats", [])}
        sizes = {k: v for k, v in sizes.items() if v > 0}
        out[model] = {"requests": requests, "executions": executions,
                      "requests_per_execution": round(requests / executions, 2) if executions else 0.0,
                      "batch_sizes": dict(sorted(sizes.items())), "largest_batch": max(sizes, default=0)}
    return out


def hop_latency(url: str, repeats: int = 30) -> dict[str, dict]:
    """Median ms per call, server vs local, for each network on its real input."""
    import cv2

    from posestream.engines.action import OpenVinoEngine, TritonEngine
    from posestream.engines.backend import open_session
    from posestream.engines.pose import LANDMARK_FILE, MOVENET_FILE, MoveNetDetector, shipped_model
    from posestream.realtime.pipeline import default_action_model

    cap = cv2.VideoCapture(str(VTEST))
    ok, frame = cap.read()
    cap.release()
    assert ok, VTEST
    detector = MoveNetDetector(threads=1, backend="openvino")
    net_input, _ = detector.preprocess(frame)
    crop = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    rng = np.random.default_rng(1)
    cases = []
    for name, path, feed_name, array in (
            ("movenet_multipose_lightning", shipped_model(MOVENET_FILE), None, net_input),
            ("pose_landmark_full", shipped_model(LANDMARK_FILE), None, crop)):
        local = open_session(path, 1, name, backend="openvino")
        remote = open_session(path, 1, name, backend="triton", triton={"url": url})
        feed = {local.get_inputs()[0].name: array}
        cases.append((name, lambda s=local, f=feed: s.run(None, f), lambda s=remote, f=feed: s.run(None, f)))
    action_local = OpenVinoEngine(default_action_model(), threads=1)
    action_remote = TritonEngine(default_action_model(), {"url": url}, threads=1)
    for batch in (1, 4):
        v = rng.random((batch, *action_local.input_shape), dtype=np.float32)
        cases.append((f"x3d_s_synthetic batch {batch}", lambda v=v: action_local.predict(v),
                      lambda v=v: action_remote.predict(v)))
    out = {}
    for name, local_call, remote_call in cases:
        times = {"local": [], "triton": []}
        for _ in range(3):
            local_call(), remote_call()
        for _ in range(repeats):  # interleaved: the machine's noise falls on both alike
            for key, call in (("local", local_call), ("triton", remote_call)):
                t0 = time.perf_counter()
                call()
                times[key].append(1000 * (time.perf_counter() - t0))
        lo, hi = statistics.median(times["local"]), statistics.median(times["triton"])
        out[name] = {"local_ms": round(lo, 2), "triton_ms": round(hi, 2), "hop_ms": round(hi - lo, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--frames", type=int, default=150, help="frames per client")
    ap.add_argument("--pace", choices=["fast", "realtime"], default="fast")
    ap.add_argument("--max-batch", type=int, default=8, help="the server's max batch")
    ap.add_argument("--max-queue-delay-us", type=int, default=2000, help="the server's batching delay")
    ap.add_argument("--no-hop", action="store_true", help="skip the per-network hop measurement")
    ap.add_argument("--landmark-batch", type=int, default=1,
                    help="the clients' --landmark-batch (6: all people of a frame in one call, one hop a frame)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if not SERVE_PYTHON.is_file():
        raise SystemExit(f"{SERVE_PYTHON} missing: run sh scripts/setup_serve.sh first")
    if not VTEST.is_file():
        raise SystemExit(f"{VTEST} missing: run sh tests/get_media.sh first")
    machine = machine_info()
    print(f"machine: {machine.get('cpu')}, {machine.get('cpus', os.cpu_count())} cores")
    server = Server("--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.max_queue_delay_us)).start()
    rows = []
    try:
        hop = hop_latency(server.url) if not args.no_hop else {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.clients:
                for mode in ("local", "triton"):
                    before = server.statistics()
                    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children: the clients
                    t0 = time.monotonic()
                    reports = run_clients(n, args.frames, args.pace, server.url if mode == "triton" else None,
                                          Path(tmp), args.landmark_batch)
                    wall = time.monotonic() - t0
                    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
                    runs = [r["runs"][0] for r in reports]
                    frames_done = sum(sum(r["frames"].values()) for r in runs)
                    row = {"clients": n, "mode": mode, "wall_s": round(wall, 1),
                           "fps_total": round(sum(r["fps_total"] for r in runs), 2),
                           "fps_slowest": round(min(r["fps_total"] for r in runs), 2),
                           "frame_to_label_p95_ms": max((r["stages_ms"].get("frame_to_label", {}).get("p95_ms") or 0)
                                                        for r in runs),
                           "windows": sum(r["windows"] for r in runs),
                           # the edge side's cost: the clients' CPU time (start-up included) per frame
                           "client_cpu_ms_per_frame": round(1000 * cpu_s / max(frames_done, 1), 1),
                           "rss_mb_end": [r["rss_mb"]["end"] for r in runs]}
                    if mode == "triton":
                        row["batches"] = batch_figures(before, server.statistics())
                    rows.append(row)
                    print(f"{n} client(s) {mode:>6}: {row['fps_total']:6.2f} frames/s total, slowest "
                          f"{row['fps_slowest']:5.2f}, frame->label p95 {row['frame_to_label_p95_ms']:.0f} ms, "
                          f"{row['windows']} windows, clients' CPU {row['client_cpu_ms_per_frame']:.0f} ms a frame"
                          + ("".join(f"; {m.split('_')[0]} {b['requests_per_execution']} req/exec (max batch "
                                     f"{b['largest_batch']})" for m, b in row["batches"].items())
                             if mode == "triton" else ""), flush=True)
    finally:
        server.stop()
    for n in args.clients:
        local = next(r for r in rows if r["clients"] == n and r["mode"] == "local")
        remote = next(r for r in rows if r["clients"] == n and r["mode"] == "triton")
        print(f"{n} client(s): triton / local frames/s = {remote['fps_total'] / max(local['fps_total'], 1e-9):.2f}")
    print("network hop (median ms per call, one call at a time):")
    for name, h in hop.items():
        print(f"  {name:<30} local {h['local_ms']:7.2f}  triton {h['triton_ms']:7.2f}  hop {h['hop_ms']:+7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows, "hop": hop},
                                              indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
