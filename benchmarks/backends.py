"""Each network on ONNX Runtime and on OpenVINO, side by side in one run, on this machine's CPU.

    sh tests/get_media.sh
    python benchmarks/backends.py [--threads 1 2] [--repeats 20] [--batches 1 4]
                                  [--movenet-size 512] [--no-bf16] [--json out.json]

Networks (the shipped ONNX files, the same file for both runtimes):

- MoveNet MultiPose Lightning on real vtest.avi frames (768 x 576), resized as the front end
  does to long side ``--movenet-size`` (512: a 384 x 512 input);
- BlazePose landmarks (``pose_landmark_full``) on 256 x 256 crops of the real people MoveNet
  finds in those frames;
- the shipped X3D-s action model on ``[N, 17, 32, 48, 48]`` heatmap volumes rendered by the
  serving rasterizer from sample skeleton clips (the volumes ``posestream export --int8``
  checks on), at each of ``--batches``.

For each network and thread count, both sessions are built with that many threads (OpenVINO:
INFERENCE_NUM_THREADS, PERFORMANCE_HINT=LATENCY, INFERENCE_PRECISION_HINT=f32; ONNX Runtime:
intra_op_num_threads, no spinning; see posestream/engines/backend.py), warmed up twice, then
called in interleaved rounds (the order alternating every round) so that load from other
processes hits both alike. Reported: median and p95 ms per call, the ratio ORT / OpenVINO, and
the largest output difference between the two on the same inputs (keypoints in image pixels,
scores, logits).

The bf16 rows (unless ``--no-bf16``) run OpenVINO with INFERENCE_PRECISION_HINT=bf16 (AMX on a
Sapphire Rapids Xeon; emulated, and slow, on CPUs without it), timed interleaved with OpenVINO
fp32, with their accuracy against fp32: keypoint pixels and scores for the pose networks;
for X3D-s the figures ``posestream export --int8`` prints (top-1 agreement, max |diff| and
max |diff| / max |fp32|) on the check volumes, and top-1 agreement and max |diff| on windows of
real skeletons (``--real-frames N``: every track of vtest.avi's first N frames, through the
default front end and the validation pipeline).

``--int8 N`` adds X3D-s int8 rows: one QDQ file (posestream's ``quantize_int8``, calibrated on
``N`` sample volumes other than the check volumes) on ONNX Runtime and on OpenVINO, each with
its accuracy against ONNX Runtime fp32. A model needs trained weights and its own data to
quantize well; the figures say what these settings do to the shipped model.

The CPU model (``/proc/cpuinfo``), the runtime versions and the load average at the start and
the end are printed: compare figures only within one run, and name the CPU beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posestream.engines import backend as B
from posestream.engines import pose as P
from posestream.engines.action import check_volumes, make_engine
from posestream.realtime.bench import machine_info
from posestream.realtime.pipeline import default_action_model

REPO = Path(__file__).resolve().parents[1]
VTEST = REPO / "tests" / ".media" / "vtest.avi"
FRAMES = (0, 100, 300, 600)


def read_frames(path: Path, indices) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        sys.exit(f"{path}: cannot open (run tests/get_media.sh)")
    wanted, frames, i = set(indices), [], 0
    while len(frames) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Milliseconds per call of each of ``calls``, in rounds, the order reversed every round."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    names = list(calls)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def stats(ms: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "calls": len(ms)}


def cycle(inputs: list) -> Callable[[], Any]:
    """A function returning the next input on each call (real inputs in turn, not one cached)."""
    state = {"i": 0}

    def nxt():
        x = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return x

    return nxt


def movenet_inputs(frames, size: int) -> tuple[list[np.ndarray], list[float]]:
    det = P.MoveNetDetector(input_size=size, backend="onnx")
    xs, scales = [], []
    for f in frames:
        x, s = det.preprocess(f)
        xs.append(x.copy())
        scales.append(s)
    return xs, scales


def landmark_inputs(frames, size: int) -> tuple[list[np.ndarray], list[float]]:
    """256 x 256 crops (network inputs) of the people MoveNet finds, and each crop's pixel size
    in image pixels (to state keypoint differences in image pixels)."""
    import cv2

    det = P.MoveNetDetector(input_size=size, score_threshold=0.2, backend="onnx")
    lm = P.BlazePoseLandmarks(backend="onnx")  # the front end's own crop geometry
    xs, px = [], []
    for f in frames:
        for person in det(f):
            m = lm.crop_matrix(person)
            crop = cv2.warpAffine(f, m.astype(np.float32), (P.BLAZEPOSE_INPUT, P.BLAZEPOSE_INPUT),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            xs.append((cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)[None])
            px.append(1.0 / abs(np.linalg.det(m[:, :2])) ** 0.5)
    return xs, px


def movenet_diff(a: np.ndarray, b: np.ndarray, input_hw, scale: float, min_score: float = 0.2) -> dict[str, float]:
    """Between two raw ``[6, 56]`` outputs: for each person ``a`` is sure of (score >=
    ``min_score``), the detection of ``b`` with the nearest box centre (a lower precision may
    reorder the slots); the largest keypoint distance in image pixels (keypoints scoring >= 0.3
    in both) and score difference, and how many of those people ``b`` lost (its match below
    ``min_score``)."""
    a, b = a.reshape(-1, 56), b.reshape(-1, 56)
    ih, iw = input_hw
    to_px = np.array([ih, iw], np.float32) / scale
    px, score, lost = 0.0, 0.0, 0
    centre = lambda r: np.array([(r[51] + r[53]) / 2, (r[52] + r[54]) / 2]) * to_px
    for row in a[a[:, 55] >= min_score]:
        match = min(b, key=lambda r: float(np.hypot(*(centre(r) - centre(row)))))
        if match[55] < min_score:
            lost += 1
        ka, kb = row[:51].reshape(17, 3), match[:51].reshape(17, 3)
        seen = (ka[:, 2] >= 0.3) & (kb[:, 2] >= 0.3)
        if seen.any():
            px = max(px, float(np.hypot(*((ka[seen, :2] - kb[seen, :2]) * to_px).T).max()))
        score = max(score, float(np.abs(ka[:, 2] - kb[:, 2]).max()), abs(float(row[55] - match[55])))
    return {"keypoint_px": px, "score": score, "people_lost": lost}


def landmark_diff(a: list, b: list, crop_px: float) -> dict[str, float]:
    """The largest distance (image pixels) of the 17 COCO landmarks and the largest probability
    difference (visibility, presence, the pose-presence flag)."""
    # outputs: landmarks [1, 195] (39 x x, y, z, visibility, presence), presence flag [1, 1]
    la, lb = a[0].reshape(39, 5), b[0].reshape(39, 5)
    coco = P.BLAZEPOSE_TO_COCO
    return {"keypoint_px": float(np.hypot(*(la[coco, :2] - lb[coco, :2]).T).max() * crop_px),
            "score": float(max(np.abs(P.sigmoid(la[:, 3:]) - P.sigmoid(lb[:, 3:])).max(),
                               abs(float(a[1].ravel()[0]) - float(b[1].ravel()[0]))))}


def merge_max(rows: list[dict[str, float]]) -> dict[str, float]:
    """The worst figure over all inputs (counts, such as people lost, are summed)."""
    return {k: (sum(r[k] for r in rows) if k == "people_lost" else round(max(r[k] for r in rows), 7))
            for k in rows[0]}


def bench_network(name: str, path: Path, inputs: list[np.ndarray], outputs: list[str] | None, threads: int,
                  repeats: int, bf16: bool, diff: Callable[[int, list, list], dict]) -> list[dict]:
    ort = B.ort_session(path, threads, name)
    ov = B.OpenVinoSession(path, threads, precision="fp32")
    in_ort, in_ov = ort.get_inputs()[0].name, ov.get_inputs()[0].name
    sessions = {"onnxruntime": lambda x: ort.run(outputs, {in_ort: x}), "openvino": lambda x: ov.run(outputs, {in_ov: x})}
    if bf16:
        ov16 = B.OpenVinoSession(path, threads, precision="bf16")
        sessions["openvino-bf16"] = lambda x: ov16.run(outputs, {in_ov: x})
    feeds = {k: cycle(inputs) for k in sessions}
    times = interleaved({k: (lambda k=k: sessions[k](feeds[k]())) for k in sessions}, repeats)
    ref = [sessions["onnxruntime"](x) for x in inputs]
    fp32 = [sessions["openvino"](x) for x in inputs]
    shape = "x".join(str(d) for d in inputs[0].shape)
    rows = [{"network": name, "input": shape, "threads": threads, "runtime": "onnxruntime", **stats(times["onnxruntime"])},
            {"network": name, "input": shape, "threads": threads, "runtime": "openvino", **stats(times["openvino"]),
             "vs_onnxruntime": merge_max([diff(i, r, o) for i, (r, o) in enumerate(zip(ref, fp32))])}]
    if bf16:
        low = [sessions["openvino-bf16"](x) for x in inputs]
        rows.append({"network": name, "input": shape, "threads": threads, "runtime": "openvino-bf16",
                     **stats(times["openvino-bf16"]),
                     "vs_openvino_fp32": merge_max([diff(i, f, b) for i, (f, b) in enumerate(zip(fp32, low))])})
    return rows


def vtest_volumes(card, frames: int) -> np.ndarray:
    """Volumes from real skeletons: every track of the first ``frames`` frames of vtest.avi
    (the default front end, ByteTrack), rendered at the card's geometry by the validation
    pipeline (as the served windows are)."""
    from posestream.realtime.video_clips import extract_clips
    from posestream.train.export import render_volumes

    data = extract_clips(str(VTEST), P.make_pose_estimator("default"), min_frames=min(15, frames),
                         max_frames=frames, progress=False)
    return render_volumes(data["annotations"], card)


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    return {"logit": round(float(np.abs(got - ref).max()), 5), "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "volumes": int(len(ref))}


def bench_action(threads: int, batches, repeats: int, bf16: bool, volumes: np.ndarray,
                 int8_model: str | None = None, real: np.ndarray | None = None) -> list[dict]:
    from posestream.engines.action import OnnxEngine, OpenVinoEngine, precision_check

    model = default_action_model()
    engines = {"onnxruntime": make_engine("onnx", model, threads=threads, device="cpu"),
               "openvino": make_engine("openvino", model, threads=threads)}
    if bf16:
        engines["openvino-bf16"] = bf16_engine(model, threads)
    if int8_model:
        engines["onnxruntime-int8"] = OnnxEngine(int8_model, threads=threads, device="cpu")
        engines["openvino-int8"] = OpenVinoEngine(int8_model, threads=threads)
    rows = []
    for n in batches:
        if n > len(volumes):
            raise SystemExit(f"--batches {n}: only {len(volumes)} check volumes")
        inputs = [volumes[i:i + n] for i in range(0, len(volumes) - n + 1, n)] or [volumes[:n]]
        feeds = {k: cycle(inputs) for k in engines}
        times = interleaved({k: (lambda k=k: engines[k].predict(feeds[k]())) for k in engines}, repeats)
        shape = "x".join(str(d) for d in inputs[0].shape)
        ref = engines["onnxruntime"].predict(volumes)
        got = engines["openvino"].predict(volumes)
        rows.append({"network": "x3d_s", "input": shape, "threads": threads, "runtime": "onnxruntime",
                     **stats(times["onnxruntime"])})
        rows.append({"network": "x3d_s", "input": shape, "threads": threads, "runtime": "openvino",
                     **stats(times["openvino"]),
                     "vs_onnxruntime": {"logit": round(float(np.abs(got - ref).max()), 7),
                                        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}})
        if bf16:
            check = precision_check(engines["openvino"], engines["openvino-bf16"], volumes)
            rows.append({"network": "x3d_s", "input": shape, "threads": threads, "runtime": "openvino-bf16",
                         **stats(times["openvino-bf16"]),
                         "vs_openvino_fp32": {"logit": round(check["max_abs_logit_diff"], 5),
                                              "rel_logit": round(check["max_rel_logit_error"], 5),
                                              "top1_agreement": check["argmax_agreement"],
                                              "volumes": check["volumes"]}})
            if real is not None:
                rows[-1]["vs_openvino_fp32_on_vtest"] = agreement(engines["openvino"].predict(real),
                                                                  engines["openvino-bf16"].predict(real))
        for kind in ("onnxruntime-int8", "openvino-int8"):
            if kind in engines:
                check = precision_check(engines["onnxruntime"], engines[kind], volumes)
                rows.append({"network": "x3d_s", "input": shape, "threads": threads, "runtime": kind,
                             **stats(times[kind]),
                             "vs_onnxruntime_fp32": {"logit": round(check["max_abs_logit_diff"], 5),
                                                     "rel_logit": round(check["max_rel_logit_error"], 5),
                                                     "top1_agreement": check["argmax_agreement"],
                                                     "volumes": check["volumes"]}})
                if real is not None:
                    rows[-1]["vs_onnxruntime_fp32_on_vtest"] = agreement(engines["onnxruntime"].predict(real),
                                                                         engines[kind].predict(real))
    return rows


def bf16_engine(model: str, threads: int):
    """OpenVINO bf16 without make_engine's printed check: this benchmark prints its own."""
    from posestream.engines.action import OpenVinoEngine

    return OpenVinoEngine(model, threads=threads, precision="bf16")


def fmt_diff(row: dict) -> str:
    against, d = next(((label, row[key]) for key, label in (("vs_onnxruntime", "vs ORT"),
                                                             ("vs_openvino_fp32", "vs OV fp32"),
                                                             ("vs_onnxruntime_fp32", "vs ORT fp32")) if key in row),
                      ("", None))
    if not d:
        return ""
    parts = []
    if "keypoint_px" in d:
        parts.append(f"kp {d['keypoint_px']:.2g} px, score {d['score']:.2g}"
                     + (f", people lost {d['people_lost']}" if "people_lost" in d else ""))
    if "logit" in d:
        parts.append(f"logit {d['logit']:.2g}, top-1 same {100 * d['top1_agreement']:.0f}%")
    text = f"{against}: " + "; ".join(parts)
    real = next((v for k, v in row.items() if k.endswith("_on_vtest")), None)
    if real:
        text += (f"; on {real['volumes']} vtest.avi windows: logit {real['logit']:.2g}, "
                 f"top-1 same {100 * real['top1_agreement']:.0f}%")
    return text


def print_table(rows: list[dict]) -> None:
    print(f"{'network':<10}{'input':<18}{'thr':>4}{'runtime':>17}{'median ms':>11}{'p95 ms':>9}{'ORT/this':>10}  diff")
    ort = {(r["network"], r["input"], r["threads"]): r["median_ms"] for r in rows if r["runtime"] == "onnxruntime"}
    for r in rows:
        base = ort.get((r["network"], r["input"], r["threads"]))
        ratio = "" if r["runtime"] == "onnxruntime" or not base else f"{base / r['median_ms']:.2f}x"
        print(f"{r['network']:<10}{r['input']:<18}{r['threads']:>4}{r['runtime']:>17}{r['median_ms']:>11.1f}"
              f"{r['p95_ms']:>9.1f}{ratio:>10}  {fmt_diff(r)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=20, help="interleaved rounds per network (default 20)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="X3D-s batch sizes (default 1 4)")
    ap.add_argument("--movenet-size", type=int, default=512, help="MoveNet input long side (default 512: 384x512)")
    ap.add_argument("--networks", nargs="+", default=["movenet", "blazepose", "x3d_s"],
                    choices=["movenet", "blazepose", "x3d_s"])
    ap.add_argument("--no-bf16", action="store_true", help="skip the OpenVINO bf16 rows")
    ap.add_argument("--int8", type=int, metavar="N", default=0,
                    help="also X3D-s int8 rows (ONNX Runtime and OpenVINO on one QDQ file, quantized here with "
                         "posestream's quantize_int8 on N sample volumes, ~0.5 s each), accuracy vs fp32")
    ap.add_argument("--real-frames", type=int, default=100, metavar="N",
                    help="also check bf16/int8 on windows of real skeletons: the tracks of vtest.avi's first N "
                         "frames (default 100; 0: only the sample-clip volumes)")
    ap.add_argument("--json", help="also write the rows and the machine as JSON")
    args = ap.parse_args(argv)
    openvino = B.openvino_module()
    if openvino is None:
        print("openvino is not installed: pip install openvino", file=sys.stderr)
        return 2

    machine = machine_info()
    machine["openvino"] = openvino.__version__
    load0 = os.getloadavg()
    print(f"cpu: {machine['cpu']} ({machine['cpus']} cpus); onnxruntime {machine.get('onnxruntime')}, "
          f"openvino {machine['openvino']}; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    frames = read_frames(VTEST, FRAMES)
    rows: list[dict] = []
    bf16 = not args.no_bf16
    if "movenet" in args.networks:
        xs, scales = movenet_inputs(frames, args.movenet_size)
        hw = xs[0].shape[1:3]
        for t in args.threads:
            rows += bench_network("movenet", P.shipped_model(P.MOVENET_FILE), xs, None, t, args.repeats, bf16,
                                  lambda i, a, b: movenet_diff(a[0], b[0], hw, scales[i]))
    if "blazepose" in args.networks:
        xs, px = landmark_inputs(frames, args.movenet_size)
        print(f"blazepose: {len(xs)} crops of real people from {len(frames)} vtest.avi frames")
        probe = B.ort_session(P.shipped_model(P.LANDMARK_FILE), 1)
        # the outputs the front end reads: landmarks [1, 195] and the presence flag [1, 1]
        outputs = [o.name for o in probe.get_outputs() if o.shape[-1] in (195, 1) and len(o.shape) == 2]
        for t in args.threads:
            rows += bench_network("blazepose", P.shipped_model(P.LANDMARK_FILE), xs, outputs, t, args.repeats, bf16,
                                  lambda i, a, b: landmark_diff(a, b, px[i]))
    if "x3d_s" in args.networks:
        card = make_engine("onnx", default_action_model(), device="cpu").card
        volumes = check_volumes(card, count=max(12, max(args.batches)))
        int8_model = None
        if args.int8:
            import tempfile

            from posestream.engines.quantize import quantize_int8
            from posestream.train.export import sample_calibration_volumes

            # calibrated on other sample clips (seed 0) than the check volumes (seed 1)
            int8_model = os.path.join(tempfile.mkdtemp(prefix="backends-"), "x3d_s_int8.onnx")
            quantize_int8(default_action_model(), int8_model, sample_calibration_volumes(card, args.int8, seed=0))
            print(f"x3d_s int8: quantized on {args.int8} sample volumes -> {int8_model}")
        real = None
        if args.real_frames and (bf16 or int8_model):
            real = vtest_volumes(card, args.real_frames)
            print(f"x3d_s: {len(real)} windows of real skeletons (tracks of vtest.avi's first {args.real_frames} "
                  "frames) for the bf16/int8 accuracy")
        for t in args.threads:
            rows += bench_action(t, args.batches, args.repeats, bf16, volumes, int8_model, real)
    load1 = os.getloadavg()
    print_table(rows)
    print(f"load average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "load_start": load0, "load_end": load1,
                                               "repeats": args.repeats, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
