"""Action engine latency (torch eager, torch channels-last-3d, ONNX Runtime fp32 and int8) and
the int8 accuracy cost, on this machine's CPU.

    python benchmarks/action.py [--variants x3d_s,x3d,slowonly,c3d_s] [--batches 1,4]
                                [--threads 2] [--repeats N] [--no-accuracy] [--train-steps 160]
                                [--json out.json]

Latency: per variant, a throwaway model (random weights, 60 classes) at the paper's input,
17 x 48 x 56 x 56, exported to ONNX (verified against torch) and quantized to int8
(calibrated on real heatmap volumes rendered by our pipeline from sample skeleton clips).
The four engines run side by side in this one process on the same real volumes, interleaved
call by call (the order rotating every repeat), after two warm-up calls each. Reported: median
and p95 milliseconds per call, milliseconds per clip, and the speed-up over torch eager at the
same batch size. ``--repeats`` defaults to as many rounds as fit in ~25 s per variant (5 to 20;
SlowOnly gets 5, so its p95 is close to its maximum).

Accuracy (always run, unless ``--no-accuracy``; ~2 min): int8 is only as good as the top-1 it
keeps, and a top-1 needs a model that has learned something. So: a labelled set from the
sample generator (``waving_and_walking_clip``), four classes: person 0 waving (right hand),
the same mirrored (waving the left hand), person 1 walking right-to-left, and mirrored
(left-to-right); each clip varies by seed, length, start frame, image shape, keypoint jitter
and dropped keypoints. X3D-s is trained on clips from seeds 0-63 for ``--train-steps`` batches of 16 on
the benchmark's threads (17 x 32 x 32 x 32 volumes: 32 x 48 x 48 trains 5-10x slower per step
on this CPU), exported, quantized (calibrated on 128 training clips) and evaluated on 400 clips
from 100 seeds never used in training. Reported: top-1 of torch, ORT fp32 and ORT int8, the
int8 top-1 change, and the fp32/int8 top-1 disagreement rate (which bounds the change); also
int8 without ``reduce_range`` for comparison. The same is measured on the half-trained model
(the weights at half the steps), whose many near-tied predictions show where int8 flips a
top-1: only where fp32's top-2 margin is within a few percent of the logit range.

Other processes on the machine skew the latencies (not the ratios, which come from
interleaved calls, as much); the load average is printed at the start and the end.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from posestream.engines.action import OnnxEngine, TorchEngine
from posestream.engines.quantize import quantize_int8
from posestream.skeleton import KEYPOINT_FLIP_INDEX
from posestream.train.checkpoints import ModelCard
from posestream.train.data.sample import waving_and_walking_clip
from posestream.train.export import export_model, render_volumes, sample_calibration_volumes
from posestream.train.models import SPECS, build_model
from posestream.train.transforms import (
    Compose,
    FormatShape,
    GeneratePoseTarget,
    PoseCompact,
    PoseDecode,
    RandomResizedCrop,
    Resize,
    UniformSampleFrames,
)

ENGINES = ("torch", "torch-cl3d", "onnx", "onnx-int8")
DEFAULT_VARIANTS = ("x3d_s", "x3d", "slowonly", "c3d_s")
LATENCY_SHAPE = (17, 48, 56, 56)
CLASSES = ("waving (right hand)", "waving (left hand)", "walking right-to-left", "walking left-to-right")
ACC_T, ACC_SIZE = 32, 32
TRAIN_SEEDS = range(0, 64)
VAL_SEEDS = range(10_000, 10_100)
IMG_SHAPES = ((480, 640), (720, 1280), (1080, 1920), (576, 768), (640, 480), (540, 960))


# ----------------------------------------------------------------------------------------------
# Latency


def _stats(times_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(times_s) * 1000
    return float(np.median(ms)), float(np.percentile(ms, 95))


def bench_variant(name: str, batches: list[int], threads: int, repeats: int | None, budget_s: float,
                  workdir: Path, log) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(name, num_classes=60, in_channels=LATENCY_SHAPE[0]).eval()
    card = ModelCard(arch=name, num_classes=60, clip_len=LATENCY_SHAPE[1], size=LATENCY_SHAPE[2],
                     source="benchmarks/action.py throwaway (random weights)")
    fp32_path, int8_path = workdir / f"{name}.onnx", workdir / f"{name}.int8.onnx"
    t0 = time.perf_counter()
    report = export_model(model, fp32_path, LATENCY_SHAPE, card=card, samples=2)
    t1 = time.perf_counter()
    quantize_int8(fp32_path, int8_path, sample_calibration_volumes(card, count=8, seed=0))
    t2 = time.perf_counter()
    log(f"  export {t1 - t0:.1f} s (ORT vs torch {report.max_abs_diff:.1g}), int8 quantization {t2 - t1:.1f} s")
    engines = {
        "torch": TorchEngine(model, card, threads=threads),
        "torch-cl3d": TorchEngine(model, card, channels_last_3d=True, threads=threads),
        "onnx": OnnxEngine(fp32_path, threads=threads, device="cpu"),
        "onnx-int8": OnnxEngine(int8_path, threads=threads, device="cpu"),
    }
    volumes = sample_calibration_volumes(card, count=max(batches), seed=99)   # real volumes, unseen
    inputs = {b: np.ascontiguousarray(volumes[:b]) for b in batches}
    outputs, round_s = {}, 0.0
    for b in batches:
        for kind, engine in engines.items():
            outputs[b, kind] = engine.predict(inputs[b])
            start = time.perf_counter()
            engine.predict(inputs[b])
            round_s += time.perf_counter() - start
    n = repeats or int(min(20, max(5, budget_s // max(round_s, 1e-3))))
    log(f"  {n} interleaved repeats (one round ~{round_s:.1f} s)")
    times: dict[tuple[int, str], list[float]] = {(b, k): [] for b in batches for k in engines}
    order = list(engines)
    for r in range(n):
        for b in batches:
            rotated = order[r % len(order):] + order[:r % len(order)]
            for kind in rotated:
                start = time.perf_counter()
                engines[kind].predict(inputs[b])
                times[b, kind].append(time.perf_counter() - start)
    rows = []
    for b in batches:
        eager_median = _stats(times[b, "torch"])[0]
        ref = outputs[b, "torch"]
        for kind in engines:
            median, p95 = _stats(times[b, kind])
            diff = float(np.abs(outputs[b, kind] - ref).max())
            rows.append({"variant": name, "batch": b, "engine": kind, "median_ms": median, "p95_ms": p95,
                         "ms_per_clip": median / b, "speedup_vs_eager": eager_median / median, "repeats": n,
                         "max_abs_diff_vs_eager": diff,
                         "rel_diff_vs_eager": diff / max(float(np.abs(ref).max()), 1e-12)})
    return rows


def print_latency(rows: list[dict], threads: int) -> None:
    print(f"\nLatency, {'x'.join(map(str, LATENCY_SHAPE))} volumes, {threads} threads "
          "(ms per call; speed-up = torch eager median / engine median at the same batch)")
    width = max([10] + [len(r["variant"]) for r in rows])
    print(f"{'variant':<{width}} {'batch':>5} {'engine':<11} {'median':>9} {'p95':>9} {'per clip':>9} {'vs eager':>9}"
          f" {'n':>3}")
    last = None
    for row in rows:
        if last is not None and (row["variant"], row["batch"]) != last:
            print()
        last = (row["variant"], row["batch"])
        print(f"{row['variant']:<{width}} {row['batch']:>5} {row['engine']:<11} {row['median_ms']:>9.1f} "
              f"{row['p95_ms']:>9.1f} {row['ms_per_clip']:>9.1f} {row['speedup_vs_eager']:>8.2f}x {row['repeats']:>3}")


# ----------------------------------------------------------------------------------------------
# Accuracy


def labelled_clips(seed: int) -> list[dict]:
    """Four labelled single-person clips from one generated scene (see the module docstring)."""
    rng = np.random.default_rng(seed)
    frames, start = int(rng.integers(24, 121)), int(rng.integers(0, 40))
    shape = IMG_SHAPES[int(rng.integers(len(IMG_SHAPES)))]
    scene = waving_and_walking_clip(num_frames=frames + start, img_shape=shape, seed=seed)
    h, w = shape
    clips = []
    for person in (0, 1):
        kp = scene["keypoint"][person:person + 1, start:].copy()
        score = scene["keypoint_score"][person:person + 1, start:].copy()
        kp += rng.normal(0, rng.uniform(0, 0.012) * h, kp.shape)          # extra estimator jitter
        dropped = rng.random(score.shape) < rng.uniform(0, 0.25)          # missed keypoints
        score[dropped] = 0
        for mirror in (0, 1):
            k, s = kp, score
            if mirror:
                k, s = kp[:, :, KEYPOINT_FLIP_INDEX].copy(), score[:, :, KEYPOINT_FLIP_INDEX]
                k[..., 0] = w - k[..., 0]
            clips.append(dict(scene, keypoint=np.ascontiguousarray(k, dtype=np.float32),
                              keypoint_score=np.ascontiguousarray(s, dtype=np.float32), total_frames=frames,
                              label=2 * person + mirror, frame_dir=f"seed{seed}-p{person}-m{mirror}"))
    return clips


def _train_pipeline(seed: int) -> Compose:
    # PYSKL's training pipeline at ACC_SIZE, without the flip (mirroring changes the label here).
    sample, crop = np.random.SeedSequence(seed).spawn(2)
    return Compose([UniformSampleFrames(ACC_T, rng=sample), PoseDecode(), PoseCompact(hw_ratio=1.0, allow_imgpad=True),
                    Resize((-1, int(ACC_SIZE * 64 / 56))), RandomResizedCrop(area_range=(0.56, 1.0), rng=crop),
                    Resize((ACC_SIZE, ACC_SIZE), keep_ratio=False), GeneratePoseTarget(), FormatShape()])


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean() * 100)


def _predict(predict, volumes: np.ndarray, batch: int = 50) -> np.ndarray:
    return np.concatenate([predict(volumes[i:i + batch]) for i in range(0, len(volumes), batch)])


def evaluate_int8(model: torch.nn.Module, card: ModelCard, val_x: np.ndarray, val_y: np.ndarray,
                  calibration: np.ndarray, threads: int, workdir: Path, tag: str,
                  reduce_ranges: tuple[bool, ...] = (True, False)) -> dict:
    """Export ``model``, quantize it, and compare top-1 of torch, ORT fp32 and ORT int8."""
    model = model.eval()
    fp32_path = workdir / f"acc_{tag}.onnx"
    export_model(model, fp32_path, (17, ACC_T, ACC_SIZE, ACC_SIZE), card=card)
    torch_logits = _predict(TorchEngine(model, card).predict, val_x)
    fp32_logits = _predict(OnnxEngine(fp32_path, threads=threads, device="cpu").predict, val_x)
    top2 = np.sort(fp32_logits, 1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / np.abs(fp32_logits).max(1)    # fp32 top-1 margin, share of the logit range
    out = {"torch_top1": _top1(torch_logits, val_y), "onnx_fp32_top1": _top1(fp32_logits, val_y),
           "onnx_fp32_vs_torch_max_abs": float(np.abs(fp32_logits - torch_logits).max()),
           "near_ties": int((margin < 0.02).sum())}
    for reduce_range in reduce_ranges:
        label = "int8" if reduce_range else "int8 (no reduce_range)"
        path = workdir / f"acc_{tag}.{'rr' if reduce_range else 'full'}.int8.onnx"
        quantize_int8(fp32_path, path, calibration, reduce_range=reduce_range)
        logits = _predict(OnnxEngine(path, threads=threads, device="cpu").predict, val_x)
        flips = logits.argmax(1) != fp32_logits.argmax(1)
        rel = np.abs(logits - fp32_logits).max(1) / np.abs(fp32_logits).max(1)
        out[label] = {"top1": _top1(logits, val_y), "top1_change_points": _top1(logits, val_y) - out["onnx_fp32_top1"],
                      "disagreements": int(flips.sum()), "disagreement_rate": float(flips.mean() * 100),
                      "disagreements_at_near_ties": int((flips & (margin < 0.02)).sum()),
                      "rel_logit_error_mean": float(rel.mean()), "rel_logit_error_max": float(rel.max()),
                      "reduce_range": reduce_range}
    return out


def accuracy(threads: int, train_steps: int, train_seconds: float, workdir: Path, log) -> dict:
    torch.manual_seed(0)
    train = [c for s in TRAIN_SEEDS for c in labelled_clips(s)]
    val = [c for s in VAL_SEEDS for c in labelled_clips(s)]
    card = ModelCard(arch="x3d_s", num_classes=len(CLASSES), clip_len=ACC_T, size=ACC_SIZE, class_names=list(CLASSES),
                     source="benchmarks/action.py waving/walking")
    val_x = render_volumes(val, card)
    val_y = np.array([c["label"] for c in val])
    # Calibration: 128 training clips (never validation ones). With 32 the mean logit error was
    # several times larger (MinMax ranges from too few volumes).
    calibration = render_volumes([train[i] for i in np.random.default_rng(1).choice(len(train), 128, replace=False)],
                                 card)

    model = build_model("x3d_s", num_classes=len(CLASSES)).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    pipeline, rng = _train_pipeline(0), np.random.default_rng(0)
    batch, steps, start, half = 16, 0, time.perf_counter(), None
    log(f"  training X3D-s for {train_steps} steps (at most {train_seconds:.0f} s) on {len(train)} clips "
        f"({threads} threads)")
    model.train()
    while steps < train_steps and time.perf_counter() - start < train_seconds:
        for g in opt.param_groups:   # cosine decay over the steps
            g["lr"] = 3e-3 * 0.5 * (1 + np.cos(np.pi * steps / train_steps))
        picks = rng.choice(len(train), batch, replace=False)
        x = torch.from_numpy(np.concatenate([pipeline(train[i])["imgs"] for i in picks]))
        y = torch.tensor([train[i]["label"] for i in picks])
        loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last_3d)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps == train_steps // 2:
            half = {k: v.clone() for k, v in model.state_dict().items()}
    train_time = time.perf_counter() - start
    if steps < train_steps:
        log(f"  WARNING: stopped after {train_seconds:.0f} s at step {steps} of {train_steps} (a busy machine?); "
            "the figures below are for a less-trained model")
    log(f"  {steps} steps in {train_time:.0f} s ({steps * batch / len(train):.1f} epochs), last loss {loss.item():.3f}")
    stages = {}
    if half is not None:
        half_model = build_model("x3d_s", num_classes=len(CLASSES))
        half_model.load_state_dict(half)
        stages[f"half-trained ({train_steps // 2} steps)"] = evaluate_int8(
            half_model, card, val_x, val_y, calibration, threads, workdir, "half", reduce_ranges=(True,))
    model = model.to(memory_format=torch.contiguous_format)
    stages[f"trained ({steps} steps)"] = evaluate_int8(model, card, val_x, val_y, calibration, threads, workdir, "full")
    final = stages[f"trained ({steps} steps)"]
    return {"classes": list(CLASSES), "input": [17, ACC_T, ACC_SIZE, ACC_SIZE], "train_clips": len(train),
            "train_seeds": [TRAIN_SEEDS.start, TRAIN_SEEDS.stop - 1], "val_clips": len(val),
            "val_seeds": [VAL_SEEDS.start, VAL_SEEDS.stop - 1], "train_seconds": train_time, "steps": steps,
            "steps_planned": train_steps, "calibration_volumes": len(calibration), "stages": stages,
            "int8": final["int8"], "fp32_top1": final["onnx_fp32_top1"]}


def print_accuracy(acc: dict) -> None:
    n = acc["val_clips"]
    print(f"\nint8 accuracy: X3D-s, {len(acc['classes'])} classes ({', '.join(acc['classes'])}), "
          f"{'x'.join(map(str, acc['input']))} volumes")
    print(f"  trained {acc['train_seconds']:.0f} s ({acc['steps']} steps of 16) on {acc['train_clips']} clips from seeds "
          f"{acc['train_seeds'][0]}-{acc['train_seeds'][1]}; validated on {n} clips from unseen seeds "
          f"{acc['val_seeds'][0]}-{acc['val_seeds'][1]}; int8 calibrated on {acc['calibration_volumes']} training clips")
    print(f"  near tie = fp32 top-2 margin under 2% of the logit range")
    print(f"  {'':<28} {'top-1':>7} {'change':>8} {'disagree with fp32':>19} {'at near ties':>13} "
          f"{'rel. logit err mean/max':>24}")
    for stage, r0 in acc["stages"].items():
        print(f"  {stage}: {r0['near_ties']} near ties")
        print(f"  {'  torch fp32':<28} {r0['torch_top1']:>6.2f}%")
        print(f"  {'  ORT fp32':<28} {r0['onnx_fp32_top1']:>6.2f}%   (max |ORT - torch| "
              f"{r0['onnx_fp32_vs_torch_max_abs']:.1g})")
        for label in ("int8", "int8 (no reduce_range)"):
            if label not in r0:
                continue
            r = r0[label]
            print(f"  {'  ORT ' + label:<28} {r['top1']:>6.2f}% {r['top1_change_points']:>+7.2f}p "
                  f"{r['disagreements']:>6}/{n} = {r['disagreement_rate']:4.2f}% {r['disagreements_at_near_ties']:>9} "
                  f"{r['rel_logit_error_mean'] * 100:>13.1f}% / {r['rel_logit_error_max'] * 100:.1f}%")


# ----------------------------------------------------------------------------------------------


def _cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'})"


def _busy_cores(seconds: float = 1.0) -> float:
    """Cores' worth of CPU time other processes used over ``seconds`` (Linux; 0 elsewhere)."""
    def snapshot():
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields[:8]) - idle, sum(fields[:8])
    try:
        busy0, total0 = snapshot()
        time.sleep(seconds)
        busy1, total1 = snapshot()
    except (OSError, ValueError, IndexError):
        return 0.0
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated model names (default {','.join(DEFAULT_VARIANTS)}; any of {', '.join(n for n in SPECS if n != 'rgbpose_conv3d')})")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every engine (default 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per variant (default: as many as fit in ~25 s, 5 to 20)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the int8 top-1 measurement (~2 min)")
    parser.add_argument("--train-steps", type=int, default=200,
                        help="training steps (batches of 16) of the accuracy model (default 200, ~2 min on 2 idle cores)")
    parser.add_argument("--train-seconds", type=float, default=600.0,
                        help="stop training after this long even if the steps are not done (default 600)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--work-dir", help="keep the ONNX files here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]   # "" = accuracy only
    unknown = [v for v in variants if v not in SPECS or v == "rgbpose_conv3d"]
    if unknown:
        parser.error(f"unknown or unsupported variants: {', '.join(unknown)}")
    batches = [int(b) for b in args.batches.split(",")]
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1) or min(batches) < 1:
        parser.error("threads, repeats and batches must be positive")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import onnxruntime

    env = {"cpu": _cpu(), "python": platform.python_version(), "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "threads": args.threads, "load_average_start": _load()}
    print(f"{env['cpu']}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, {args.threads} threads; "
          f"load average {env['load_average_start']}")
    busy = _busy_cores()
    if busy > 0.3:
        print(f"WARNING: other processes keep {busy:.1f} cores busy. With another process holding a core, "
              "multi-threaded PyTorch/ORT calls wait on it at every parallel region and can run several times "
              "slower than 1 thread: these figures will not be representative.")
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="posestream-bench-") as tmp:
        workdir = Path(args.work_dir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in variants:
            log(f"{name}:")
            rows += bench_variant(name, batches, args.threads, args.repeats, 25.0, workdir, log)
        print_latency(rows, args.threads)
        acc = None
        if not args.no_accuracy:
            log("accuracy:")
            acc = accuracy(args.threads, args.train_steps, args.train_seconds, workdir, log)
            print_accuracy(acc)

    target = None
    speed = next((r["speedup_vs_eager"] for r in rows
                  if r["variant"] == "x3d_s" and r["batch"] == 4 and r["engine"] == "onnx-int8"), None)
    if speed is not None or acc is not None:
        change = None if acc is None else abs(acc["int8"]["top1_change_points"])
        target = {"x3d_s_int8_speedup_b4": speed, "top1_change_points": change,
                  "met": bool(speed is not None and speed >= 2 and change is not None and change <= 0.5)}
        print("\nTarget (default CPU engine for X3D-s = ORT int8: >= 2x torch eager at batch 4, top-1 within "
              "0.5 points of fp32): "
              + ("speed-up not measured" if speed is None else f"{speed:.2f}x")
              + ", " + ("top-1 not measured" if change is None else f"top-1 change {change:.2f} points")
              + f" -> {'met' if target['met'] else 'NOT met'}")
    env["load_average_end"] = _load()
    print(f"\n(total {time.perf_counter() - started:.0f} s; load average now {env['load_average_end']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "latency": rows, "accuracy": acc,
                                               "target": target}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
