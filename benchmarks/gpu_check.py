"""One call checks the GPU: tests, kernel parity and bandwidth, engine latency, sustained streams.

    benchmarks/gpu_check.sh [--out gpu_report.json] [--budget-s 450] [--device 0] [--quick]
    python benchmarks/gpu_check.py ...          (the same; the .sh picks the repo's python)

Sections, each under its own time limit (the whole run stays under ``--budget-s``, default
450 s, so it finishes within 8 minutes on an H100 with start-up included); the JSON report is
rewritten after every section, so a run cut short still leaves what it measured:

1. ``tests``: ``pytest -m gpu`` on the test files that have GPU tests (tests/test_gpu.py, ...)
   in a subprocess; pass/fail/skip/error counts and the failures' first lines.
2. ``kernel``: the CUDA rasterizer against the CPU rasterizer (max abs difference on random
   and edge-case batches; fp32 must be within 1e-5, fp16 within 1e-3) and its speed at the
   serving geometry (N windows x 2 persons x 48 frames x 17 keypoints -> 17 x 48 x 56 x 56,
   joints and limbs, fp32 and fp16): volumes/s, achieved GB/s (output written + keypoints
   read) and that as a fraction of the device's peak memory bandwidth (from the device's
   memory clock and bus width, else a table of known GPUs); the CPU rasterizer for scale.
3. ``engines``: latency (median/p95/p99 ms per call, from the host, synchronized) at batch
   1, 8 and 32 for X3D-s (``x3d_s``) and SlowOnly (``slowonly``) at 17 x 48 x 56 x 56 for
   torch fp32 eager (TF32 off), torch-cuda fp16 with CUDA graphs, and TensorRT fp16 when
   ``tensorrt`` imports; weights are untrained (``build_model``): latency does not depend
   on them. Also the fp16-vs-fp32 logit difference on the same input.
4. ``streams``: how many 25-fps streams one GPU sustains in the realtime batcher
   (:class:`posestream.realtime.batcher.ActionBatcher`, max_batch 32, max_wait 20 ms, its
   default queue) with pre-extracted skeletons: each stream has 3 tracks, each track submits
   a 48-frame window every 8 frames (0.32 s), at random phases; windows come from the
   synthetic skeleton generator mapped onto the 56 x 56 grid. A load passes when no window is
   dropped or lost, no batch fails, the p95 window latency (capture of the window's last
   frame -> label) is below 250 ms, and the submitting thread kept to its schedule. N doubles
   until a load fails, then bisects. Two batchers: ``gpu-raster`` (the batcher with its
   rasterizer replaced by :func:`posestream.engines.action_gpu.gpu_batch_rasterizer`: the
   CUDA kernel writes into the engine's input tensor) and ``cpu-raster`` (the batcher as it
   is: numpy rasterizer, volumes copied up by the engine).

Exit status: 0 when every section ran and passed, 1 when something failed, 2 when there is no
usable CUDA device (the report then says why).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SECTION_LIMITS = {"tests": 150.0, "kernel": 40.0, "engines": 140.0, "streams": 110.0}
LATENCY_BUDGET_S = 0.25
FPS, STRIDE, CLIP_LEN, SIZE, TRACKS = 25.0, 8, 48, 56, 3


# ----------------------------------------------------------------------------------------------
# Making the package importable from a bare checkout


def ensure_importable() -> tuple[dict[str, str], Path]:
    """Import posestream from this checkout even where it is not installed: setup.py maps
    engines/, realtime/, train/ into the posestream namespace, so a bare checkout needs a small
    symlinked tree. Returns the environment and working directory for subprocesses (PYTHONPATH
    to that tree, run from it so that it wins over ./posestream; else the checkout itself)."""
    env = dict(os.environ)
    try:
        import posestream.engines.raster  # noqa: F401
        import posestream

        if Path(posestream.__file__).resolve().parent == ROOT / "posestream":
            return env, ROOT
    except ImportError:
        pass
    tree = Path(tempfile.mkdtemp(prefix="posestream-tree-")) / "posestream"
    tree.mkdir()
    for item in (ROOT / "posestream").iterdir():
        (tree / item.name).symlink_to(item)
    for name in ("engines", "realtime", "train"):
        (tree / name).symlink_to(ROOT / name)
    for mod in [m for m in sys.modules if m == "posestream" or m.startswith("posestream.")]:
        del sys.modules[mod]
    sys.path.insert(0, str(tree.parent))
    import posestream.engines.raster  # noqa: F401,F811

    env["PYTHONPATH"] = os.pathsep.join([str(tree.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env, tree.parent


# ----------------------------------------------------------------------------------------------
# Helpers


class Clock:
    """The run's deadline and each section's share of it."""

    def __init__(self, budget_s: float):
        self.start = time.monotonic()
        self.deadline = self.start + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section_deadline(self, limit_s: float) -> float:
        return min(time.monotonic() + limit_s, self.deadline)


def percentiles(values_s, scale=1e3) -> dict[str, float]:
    a = np.asarray(values_s, dtype=np.float64) * scale
    if a.size == 0:
        return {}
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3),
            "min": round(float(a.min()), 3), "n": int(a.size)}


def write_report(report: dict, path: Path) -> None:
    from posestream.files import atomic_write

    data = json.dumps(report, indent=1, default=str).encode()
    atomic_write(path, lambda f: f.write(data))


PEAK_BANDWIDTH_GBS = (  # name fragment -> GB/s (vendor figures), most specific first
    ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("GH200", 4000.0),
    ("B200", 8000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0),
    ("L40S", 864.0), ("L40", 864.0), ("L4", 300.0), ("A10G", 600.0), ("A10", 600.0), ("V100", 900.0),
    ("T4", 320.0), ("RTX 4090", 1008.0), ("RTX 3090", 936.0),
)


def peak_bandwidth(device: int, name: str) -> tuple[float | None, str]:
    """The device's peak memory bandwidth in GB/s and where the figure came from."""
    clock_khz = bus_bits = None
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(device)
        clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
        if not clock_khz or not bus_bits:
            # cudaDevAttrMemoryClockRate (36, kHz) and cudaDevAttrGlobalMemoryBusWidth (37, bits)
            clock_khz = cupy.cuda.runtime.deviceGetAttribute(36, device)
            bus_bits = cupy.cuda.runtime.deviceGetAttribute(37, device)
    except Exception:
        pass
    if clock_khz and bus_bits:
        return round(clock_khz * 1e3 * 2 * bus_bits / 8 / 1e9, 1), "memory clock x bus width x 2 (device attributes)"
    for fragment, gbs in PEAK_BANDWIDTH_GBS:
        if fragment.lower() in name.lower():
            return gbs, f"table ({fragment})"
    return None, "unknown GPU"


# ----------------------------------------------------------------------------------------------
# 1. tests


def section_tests(clock: Clock, env: dict[str, str], cwd: Path) -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))
    limit = max(10.0, clock.section_deadline(SECTION_LIMITS["tests"]) - time.monotonic())
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *[str(ROOT / f) for f in files], "-q",
               "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit2",
               "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini")]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
            rc, out = proc.returncode, proc.stdout + proc.stderr
            timed_out = False
        except subprocess.TimeoutExpired as exc:
            rc, timed_out = None, True
            out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        result = {"files": files, "command": " ".join(cmd), "returncode": rc, "timed_out": timed_out,
                  "seconds": round(time.monotonic() - started, 1)}
        counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        failures = []
        if junit.is_file():
            root = ET.parse(junit).getroot()
            suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
            for suite in suites:
                for key, attr in (("tests", "tests"), ("failed", "failures"), ("errors", "errors"), ("skipped", "skipped")):
                    counts[key] += int(suite.get(attr, 0))
                for case in suite.iter("testcase"):
                    for bad in list(case.findall("failure")) + list(case.findall("error")):
                        message = (bad.get("message") or bad.text or "").strip().splitlines()
                        failures.append(f"{case.get('classname')}::{case.get('name')}: {message[0][:300] if message else ''}")
            counts["passed"] = counts["tests"] - counts["failed"] - counts["errors"] - counts["skipped"]
        result.update(counts)
        result["failures"] = failures
        result["output_tail"] = out[-3000:]
        result["ok"] = (not timed_out and rc == 0 and counts["failed"] == 0 and counts["errors"] == 0
                        and counts["passed"] > 0)
    return result


# ----------------------------------------------------------------------------------------------
# 2. kernel


def serving_windows(rng, n, m=2, t=CLIP_LEN, v=17, size=SIZE):
    centre = rng.uniform(size * 0.3, size * 0.7, size=(n, m, 1, 1, 2))
    kp = (centre + rng.normal(0, size * 0.12, size=(n, m, t, v, 2))).astype(np.float32)
    sc = rng.uniform(0.2, 1.0, size=(n, m, t, v)).astype(np.float32)
    sc[rng.random(sc.shape) < 0.08] = 0
    return kp, sc


def section_kernel(clock: Clock, device: int, quick: bool) -> dict:
    import torch

    from posestream.engines.raster import Rasterizer, rasterize_batch
    from posestream.engines.raster_cuda import CudaRasterizer, gbytes_per_volume

    deadline = clock.section_deadline(SECTION_LIMITS["kernel"])
    rng = np.random.default_rng(0)
    name = torch.cuda.get_device_name(device)
    peak, peak_source = peak_bandwidth(device, name)
    result: dict = {"peak_bandwidth_gbs": peak, "peak_source": peak_source, "parity": [], "speed": []}

    # Parity: random serving windows, random clips around a small grid (off-grid points, low and
    # zero scores, NaN), several persons.
    cases = [("serving 8x2x48 @56", serving_windows(rng, 8), 56, 56)]
    scattered_kp = rng.uniform(-5, 29, size=(6, 4, 6, 17, 2)).astype(np.float32)
    scattered_sc = rng.uniform(0, 1, size=(6, 4, 6, 17)).astype(np.float32)
    scattered_sc[rng.random(scattered_sc.shape) < 0.1] = 0
    scattered_kp[rng.random(scattered_kp.shape) < 0.02] = np.nan
    scattered_kp[..., 1, :] = scattered_kp[..., 0, :] + rng.uniform(-1, 1, size=scattered_kp[..., 0, :].shape)
    cases.append(("scattered 6x4x6 @24", (scattered_kp, scattered_sc), 24, 24))
    worst = {"float32": 0.0, "float16": 0.0}
    for label, (kp, sc), h, w in cases:
        for limbs in (None, "pyskl_released"):
            with np.errstate(all="ignore"):
                ref = rasterize_batch(kp, sc, h, w, 0.6, limbs)
            for dtype in ("float32", "float16"):
                got = CudaRasterizer(h, w, 0.6, limbs, dtype=dtype, device=device)(kp, sc).float().cpu().numpy()
                diff = float(np.abs(got - ref).max())
                worst[dtype] = max(worst[dtype], diff)
                result["parity"].append({"case": label, "heatmap": "joints" if limbs is None else "limbs",
                                         "dtype": dtype, "max_abs_diff": diff})
    result["max_abs_diff"] = worst
    result["parity_ok"] = worst["float32"] <= 1e-5 and worst["float16"] <= 1e-3

    # Speed at the serving geometry, keypoints already on the GPU, into a preallocated tensor.
    batches = (32,) if quick else (32, 256)
    for n in batches:
        kp, sc = serving_windows(rng, n)
        packed = torch.from_numpy(np.concatenate([kp, sc[..., None]], -1)).cuda(device)
        for limbs in (None, "pyskl_released"):
            for dtype in ("float32", "float16"):
                if time.monotonic() > deadline:
                    result["speed"].append({"batch": n, "skipped": "time budget"})
                    continue
                raster = CudaRasterizer(SIZE, SIZE, 0.6, limbs, dtype=dtype, device=device)
                out = torch.empty(raster.output_shape(packed.shape), dtype=raster.torch_dtype, device=f"cuda:{device}")
                for _ in range(3):
                    raster(packed, out=out)
                torch.cuda.synchronize(device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                iters, elapsed_ms = 0, 0.0
                while iters < 200 and elapsed_ms < 400:
                    reps = 10
                    start.record()
                    for _ in range(reps):
                        raster(packed, out=out)
                    end.record()
                    end.synchronize()
                    elapsed_ms += start.elapsed_time(end)
                    iters += reps
                seconds = elapsed_ms / 1e3 / iters
                gb = n * gbytes_per_volume(out.shape[1], CLIP_LEN, SIZE, SIZE, persons=2, keypoints=17, dtype=dtype)
                entry = {"batch": n, "heatmap": "joints" if limbs is None else "limbs", "dtype": dtype,
                         "ms_per_launch": round(seconds * 1e3, 4), "volumes_per_s": round(n / seconds, 1),
                         "gbytes_per_launch": round(gb, 4), "achieved_gbs": round(gb / seconds, 1)}
                if peak:
                    entry["fraction_of_peak"] = round(gb / seconds / peak, 3)
                result["speed"].append(entry)
    # The CPU rasterizer on the same windows, for scale (one thread of numpy).
    kp, sc = serving_windows(rng, 32)
    cpu = Rasterizer(SIZE, SIZE, 0.6)
    cpu(kp, sc)
    t0, reps = time.perf_counter(), 0
    while reps < 5 and time.perf_counter() - t0 < 3:
        cpu(kp, sc)
        reps += 1
    cpu_s = (time.perf_counter() - t0) / max(reps, 1)
    result["cpu_rasterizer"] = {"batch": 32, "heatmap": "joints", "ms_per_batch": round(cpu_s * 1e3, 2),
                                "volumes_per_s": round(32 / cpu_s, 1)}
    result["ok"] = result["parity_ok"]
    return result


# ----------------------------------------------------------------------------------------------
# 3. engines


def time_calls(fn, device: int, deadline: float, max_iters: int = 200, min_iters: int = 10,
               max_s: float = 1.5) -> list[float]:
    import torch

    times: list[float] = []
    stop = min(deadline, time.monotonic() + max_s)
    while len(times) < max_iters and (len(times) < min_iters or time.monotonic() < stop):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def section_engines(clock: Clock, device: int, quick: bool) -> dict:
    import torch

    from posestream.engines.action_gpu import TorchCudaEngine, tensorrt_unavailable_reason
    from posestream.train.checkpoints import ModelCard
    from posestream.train.models import build_model

    deadline = clock.section_deadline(SECTION_LIMITS["engines"])
    trt_reason = tensorrt_unavailable_reason()
    result: dict = {"weights": "untrained (build_model); latency does not depend on the weights",
                    "input": [17, CLIP_LEN, SIZE, SIZE], "timing": "host wall clock per call, synchronized",
                    "tensorrt": "available" if trt_reason is None else f"skipped: {trt_reason}", "models": {}}
    archs = ("x3d_s",) if quick else ("x3d_s", "slowonly")
    batches = (1, 8) if quick else (1, 8, 32)
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=60).eval()
        card = ModelCard(arch=arch, num_classes=60, clip_len=CLIP_LEN, size=SIZE, source="gpu_check (untrained)")
        entry: dict = {"engines": {}}
        result["models"][arch] = entry
        makers = {
            "torch-fp32-eager": lambda: TorchCudaEngine(model, card, precision="fp32", cuda_graphs=False,
                                                        channels_last_3d=False, max_batch=32, device=device),
            "torch-cuda-fp16-graphs": lambda: TorchCudaEngine(model, card, precision="fp16", cuda_graphs=True,
                                                              max_batch=32, device=device),
        }
        if trt_reason is None:
            makers["tensorrt-fp16"] = lambda: _tensorrt_engine(model, card, device)
        x = torch.rand((32, 17, CLIP_LEN, SIZE, SIZE), device=f"cuda:{device}")
        logits = {}
        for label, make in makers.items():
            if time.monotonic() > deadline - 5:
                entry["engines"][label] = {"skipped": "time budget"}
                continue
            try:
                t0 = time.monotonic()
                engine = make()
                rows = {"build_s": round(time.monotonic() - t0, 1)}
                for b in batches:
                    if time.monotonic() > deadline - 2:
                        rows[f"batch{b}"] = {"skipped": "time budget"}
                        continue
                    buffer = engine.input_buffer(b)
                    buffer.copy_(x[:b])
                    for _ in range(3):   # warm-up (graph capture, cuDNN autotuning)
                        engine.predict_torch(buffer)
                    torch.cuda.synchronize(device)
                    times = time_calls(lambda e=engine, buf=buffer: e.predict_torch(buf), device, deadline,
                                       max_s=0.6 if quick else 1.5)
                    stats = percentiles(times)
                    stats["volumes_per_s"] = round(b / (stats["median"] / 1e3), 1) if stats else None
                    rows[f"batch{b}"] = stats
                    if b == batches[-1]:
                        logits[label] = engine.predict_torch(buffer).cpu().numpy()
                entry["engines"][label] = rows
                del engine
                torch.cuda.empty_cache()
            except Exception as exc:
                entry["engines"][label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        ref = logits.get("torch-fp32-eager")
        if ref is not None:
            scale = max(1.0, float(np.abs(ref).max()))
            for label, got in logits.items():
                if label != "torch-fp32-eager":
                    entry[f"{label}_vs_fp32"] = {"max_abs_diff": round(float(np.abs(got - ref).max()), 5),
                                                 "relative_to_logit_range": round(float(np.abs(got - ref).max()) / scale, 5),
                                                 "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}
    result["ok"] = all("error" not in e for m in result["models"].values() for e in m["engines"].values())
    return result


def _tensorrt_engine(model, card, device):
    from posestream.engines.action_gpu import TensorRTEngine
    from posestream.train.export import export_model

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-trt-"))
    onnx_path = tmp / f"{card.arch}.onnx"
    export_model(model, onnx_path, (17, CLIP_LEN, SIZE, SIZE), card=card, verify=False)
    return TensorRTEngine(onnx_path, precision="fp16", max_batch=32, device=device)


# ----------------------------------------------------------------------------------------------
# 4. streams


def window_pool(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """One-person 48-frame windows on the 56 x 56 grid from synthetic clips at 25 fps."""
    from posestream.engines.crop import window_to_grid
    from posestream.train.data.synthetic import ACTIONS, generate_clip

    rng = np.random.default_rng(seed)
    pool = []
    i = 0
    while len(pool) < count:
        clip = generate_clip(ACTIONS[i % len(ACTIONS)], rng, fps=FPS, duration=3.0)
        i += 1
        kp, sc = clip["keypoint"][:1], clip["keypoint_score"][:1]
        for start in range(0, kp.shape[1] - CLIP_LEN + 1, 9):
            k, s = window_to_grid(kp[:, start:start + CLIP_LEN], sc[:, start:start + CLIP_LEN], SIZE,
                                  img_shape=tuple(clip["img_shape"]))
            pool.append((np.ascontiguousarray(k), np.ascontiguousarray(s)))
    return pool[:count]


def stream_trial(make_batcher, pool, n_streams: int, duration_s: float, seed: int) -> dict:
    from posestream.realtime.batcher import WindowJob

    period = STRIDE / FPS
    rng = np.random.default_rng(seed)
    events = []
    for s in range(n_streams):
        for k in range(TRACKS):
            t = float(rng.uniform(0, period))
            j = 0
            while t < duration_s:
                events.append((t, s, k, j))
                t += period
                j += 1
    events.sort()
    reply: "queue.Queue" = queue.Queue()
    batcher = make_batcher()
    submitted = accepted = 0
    lags = []
    results = []
    with batcher:
        t0 = time.monotonic() + 0.05
        i = 0
        while i < len(events):
            now = time.monotonic()
            while i < len(events) and t0 + events[i][0] <= now:
                t, s, k, j = events[i]
                due = t0 + t
                kp, sc = pool[(s * TRACKS + k + j) % len(pool)]
                ok = batcher.submit(WindowJob(f"s{s}", k, kp, sc, due, j * STRIDE, reply))
                submitted += 1
                accepted += bool(ok)
                lags.append(time.monotonic() - due)
                i += 1
            if i < len(events):
                wait = t0 + events[i][0] - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 0.01))
        drain_until = time.monotonic() + 1.0
        while len(results) < accepted and time.monotonic() < drain_until:
            try:
                results.append(reply.get(timeout=max(0.001, drain_until - time.monotonic())))
            except queue.Empty:
                break
        stats = batcher.stats()
    latencies = [r.latency_s for r in results]
    lat = percentiles(latencies)
    lag = percentiles(lags)
    batch_sizes = [r.batch_size for r in results]
    dropped = submitted - accepted
    lost = accepted - len(results)
    keeps_up = bool(lag) and lag["p95"] < 50.0
    passed = (dropped == 0 and lost == 0 and stats["errors"] == 0 and bool(lat)
              and lat["p95"] < LATENCY_BUDGET_S * 1e3 and keeps_up)
    return {"streams": n_streams, "windows_per_s": round(submitted / duration_s, 1), "submitted": submitted,
            "dropped": dropped, "lost": lost, "errors": stats["errors"], "last_error": stats["last_error"],
            "latency_ms": lat, "submit_lag_ms": lag, "harness_kept_up": keeps_up,
            "mean_batch": round(float(np.mean(batch_sizes)), 2) if batch_sizes else None,
            "rasterize_ms_median": round(float(np.median([r.rasterize_s for r in results])) * 1e3, 3) if results else None,
            "classify_ms_median": round(float(np.median([r.classify_s for r in results])) * 1e3, 3) if results else None,
            "passed": passed}


def find_max_streams(make_batcher, pool, deadline: float, max_streams: int, trial_s: float, start: int = 4) -> dict:
    trials = []
    best, fail = 0, None
    n = start
    seed = 0

    def run(n):
        nonlocal seed
        seed += 1
        r = stream_trial(make_batcher, pool, n, trial_s, seed)
        trials.append(r)
        return r["passed"]

    budget_per_trial = trial_s + 2.0
    while n <= max_streams and time.monotonic() + budget_per_trial < deadline:
        if run(n):
            best = n
            n *= 2
        else:
            fail = n
            break
    if fail is not None:
        lo, hi = best, fail
        while hi - lo > max(1, lo // 8) and time.monotonic() + budget_per_trial < deadline:
            mid = (lo + hi) // 2
            if run(mid):
                lo = mid
            else:
                hi = mid
        best = lo
    limited = ("first failure at %d streams" % fail) if fail is not None else (
        "reached --max-streams" if n > max_streams else "time budget")
    last_fail = next((t for t in reversed(trials) if not t["passed"]), None)
    if last_fail is not None and not last_fail["harness_kept_up"]:
        limited += " (the submitting thread fell behind: the harness, not the GPU, may be the limit)"
    return {"max_streams": best, "windows_per_s_at_max": round(best * TRACKS * FPS / STRIDE, 1),
            "limited_by": limited, "trials": trials}


def section_streams(clock: Clock, device: int, quick: bool, max_streams: int) -> dict:
    import torch

    from posestream.engines.action_gpu import TorchCudaEngine, gpu_batch_rasterizer
    from posestream.realtime.batcher import ActionBatcher
    from posestream.train.checkpoints import ModelCard
    from posestream.train.models import build_model

    deadline = clock.section_deadline(SECTION_LIMITS["streams"])
    torch.manual_seed(0)
    card = ModelCard(arch="x3d_s", num_classes=60, clip_len=CLIP_LEN, size=SIZE, source="gpu_check (untrained)")
    engine = TorchCudaEngine(build_model("x3d_s", num_classes=60).eval(), card, precision="fp16", cuda_graphs=True,
                             max_batch=32, device=device)
    engine.prepare()   # capture every batch bucket before the clock runs
    pool = window_pool(48)
    result: dict = {"engine": "torch-cuda fp16 CUDA graphs, X3D-s (untrained), max_batch 32",
                    "setup": {"fps": FPS, "stride": STRIDE, "tracks_per_stream": TRACKS, "clip_len": CLIP_LEN,
                              "grid": SIZE, "persons_per_window": 1, "max_batch": 32, "max_wait_s": 0.02,
                              "queue_size": 64, "latency_budget_ms": LATENCY_BUDGET_S * 1e3,
                              "pass": "no window dropped or lost, no batch error, p95 latency < budget, "
                                      "submitting thread on schedule (p95 lag < 50 ms)"},
                    "batchers": {}}

    def gpu_batcher():
        batcher = ActionBatcher(engine, max_batch=32, max_wait_s=0.02)
        raster = gpu_batch_rasterizer(engine)   # the change the realtime batcher needs (see the report)
        if raster is None:
            raise RuntimeError("the CUDA rasterizer cannot run here")
        batcher.rasterizer = raster
        return batcher

    def cpu_batcher():
        return ActionBatcher(engine, max_batch=32, max_wait_s=0.02)

    trial_s = 2.0 if quick else 3.0
    plan = (("gpu-raster", gpu_batcher, 0.65), ("cpu-raster", cpu_batcher, 1.0))
    for label, make, share in plan:
        section_left = deadline - time.monotonic()
        if section_left < trial_s + 3:
            result["batchers"][label] = {"skipped": "time budget"}
            continue
        own_deadline = time.monotonic() + section_left * share
        try:
            result["batchers"][label] = find_max_streams(make, pool, own_deadline, max_streams, trial_s)
        except Exception as exc:
            result["batchers"][label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    gpu = result["batchers"].get("gpu-raster", {})
    result["ok"] = "error" not in gpu and gpu.get("max_streams", 0) > 0
    return result


# ----------------------------------------------------------------------------------------------


def summarize(report: dict) -> list[str]:
    lines = [f"GPU check on {report.get('gpu', {}).get('name', '?')} ({report.get('seconds', '?')} s)"]
    s = report["sections"]
    t = s.get("tests", {})
    if t:
        lines.append(f"  tests: {t.get('passed', 0)} passed, {t.get('failed', 0)} failed, {t.get('errors', 0)} errors, "
                     f"{t.get('skipped', 0)} skipped" + (" (timed out)" if t.get("timed_out") else ""))
        lines += [f"    FAIL {f}" for f in t.get("failures", [])[:10]]
    k = s.get("kernel", {})
    if k.get("max_abs_diff"):
        lines.append(f"  kernel parity: max |diff| fp32 {k['max_abs_diff']['float32']:.2e}, "
                     f"fp16 {k['max_abs_diff']['float16']:.2e} ({'ok' if k.get('parity_ok') else 'FAIL'})")
        for e in k.get("speed", []):
            if "volumes_per_s" in e:
                frac = f", {e['fraction_of_peak']:.0%} of {k['peak_bandwidth_gbs']:.0f} GB/s peak" if "fraction_of_peak" in e else ""
                lines.append(f"    raster {e['heatmap']:6s} {e['dtype']:7s} N={e['batch']:3d}: {e['volumes_per_s']:10.0f} volumes/s, "
                             f"{e['achieved_gbs']:7.0f} GB/s{frac}")
        if "cpu_rasterizer" in k:
            lines.append(f"    (CPU rasterizer: {k['cpu_rasterizer']['volumes_per_s']:.0f} volumes/s)")
    e = s.get("engines", {})
    for arch, m in e.get("models", {}).items():
        for label, rows in m.get("engines", {}).items():
            if "error" in rows or "skipped" in rows:
                lines.append(f"  {arch:8s} {label:24s} {rows.get('error') or rows.get('skipped')}")
                continue
            cells = [f"b{b[5:]} {r['median']:.2f}/{r['p95']:.2f}/{r['p99']:.2f}" for b, r in rows.items()
                     if b.startswith("batch") and "median" in r]
            lines.append(f"  {arch:8s} {label:24s} ms median/p95/p99: " + ", ".join(cells))
    st = s.get("streams", {})
    for label, r in st.get("batchers", {}).items():
        if "max_streams" in r:
            lines.append(f"  streams ({label}): {r['max_streams']} x 25 fps ({r['windows_per_s_at_max']} windows/s); "
                         f"{r['limited_by']}")
        else:
            lines.append(f"  streams ({label}): {r.get('error') or r.get('skipped')}")
    for name, sec in s.items():
        if "exception" in sec:
            lines.append(f"  {name}: EXCEPTION {sec['exception']}")
    lines.append("  overall: " + ("PASS" if report.get("ok") else "FAIL"))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_report.json", help="the JSON report (default gpu_report.json)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="time for the whole run (default 450)")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--max-streams", type=int, default=1024)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip (tests,kernel,engines,streams)")
    parser.add_argument("--quick", action="store_true", help="smaller sections (a smoke test of the check itself)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    clock = Clock(args.budget_s)
    env, cwd = ensure_importable()
    import torch

    report: dict = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
                    "torch_cuda": torch.version.cuda, "budget_s": args.budget_s, "quick": args.quick, "sections": {}}
    for mod in ("cupy", "tensorrt", "onnxruntime"):
        try:
            report[mod] = __import__(mod).__version__
        except Exception as exc:
            report[mod] = f"not available ({type(exc).__name__})"
    from posestream.engines.action_gpu import gpu_unavailable_reason
    from posestream.engines.raster_cuda import cuda_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason is not None:
        report.update(ok=False, no_gpu=reason, seconds=round(time.monotonic() - clock.start, 1))
        write_report(report, out)
        print(f"GPU check: no usable CUDA device ({reason}); report: {out}")
        return 2
    props = torch.cuda.get_device_properties(args.device)
    report["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                     "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count}
    report["cuda_rasterizer"] = cuda_unavailable_reason() or "available"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sections = (("tests", lambda: section_tests(clock, env, cwd)),
                ("kernel", lambda: section_kernel(clock, args.device, args.quick)),
                ("engines", lambda: section_engines(clock, args.device, args.quick)),
                ("streams", lambda: section_streams(clock, args.device, args.quick, args.max_streams)))
    for name, run in sections:
        if name in skip:
            report["sections"][name] = {"skipped": "--skip"}
            continue
        if name == "kernel" and report["cuda_rasterizer"] != "available":
            report["sections"][name] = {"skipped": f"CUDA rasterizer unavailable: {report['cuda_rasterizer']}", "ok": False}
            continue
        if clock.left() < 5:
            report["sections"][name] = {"skipped": "time budget"}
            continue
        started = time.monotonic()
        print(f"[{time.monotonic() - clock.start:5.0f} s] {name} ...", flush=True)
        try:
            report["sections"][name] = run()
        except Exception as exc:
            report["sections"][name] = {"ok": False, "exception": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                                        "traceback": traceback.format_exc()[-3000:]}
        report["sections"][name]["section_seconds"] = round(time.monotonic() - started, 1)
        report["seconds"] = round(time.monotonic() - clock.start, 1)
        write_report(report, out)
    report["seconds"] = round(time.monotonic() - clock.start, 1)
    report["ok"] = all(sec.get("ok", False) for name, sec in report["sections"].items() if name not in skip)
    write_report(report, out)
    print("\n".join(summarize(report)))
    print(f"report: {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
