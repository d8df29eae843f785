"""OpenVINO as the CPU runtime of the three networks, ONNX Runtime as the fallback.

Real parts only: both runtimes on the shipped ONNX files, on real vtest.avi frames (OpenCV's
sample footage); a missing OpenVINO is a fresh interpreter in which importing it fails as it
does where it is not installed; a load failure is a real model OpenVINO cannot compile.
"""
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines import backend as B

openvino = B.openvino_module()  # a dependency (setup.py): its absence is a failure here, not a skip
assert openvino is not None, "openvino is not installed (a dependency: pip install -e .)"
from posestream.engines import pose as P
from posestream.engines.action import EngineError, OnnxEngine, OpenVinoEngine, check_volumes, make_engine
from posestream.realtime.pipeline import default_action_model

B_MODEL = Path(default_action_model())
VTEST = Path(__file__).resolve().parent / ".media" / "vtest.avi"
FRAMES = (0, 100, 300)

# Stated tolerances (measured on an Intel Xeon with AMX, fp32 on both sides: MoveNet's raw
# outputs within 1.5e-6, BlazePose landmarks within 3e-4 crop pixels, X3D-s logits within 3e-6
# on these volumes and 1.5e-5 on random ones; the whole front end within 0.15 px, the
# crop of each person depending on the detector's keypoints).
NETWORK_PX = 0.01       # one network's keypoints, in image pixels, for the same input
NETWORK_SCORE = 1e-4    # its scores / probabilities
FRONT_END_PX = 0.5      # the whole front end (detector -> crop -> landmarks -> refinement)
FRONT_END_SCORE = 0.02
LOGIT_ATOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    """This module compiles into a cache folder of its own, not the user's ~/.cache."""
    import os

    old = os.environ.get(B.CACHE_ENV)
    os.environ[B.CACHE_ENV] = str(tmp_path_factory.mktemp("ov_cache"))
    yield Path(os.environ[B.CACHE_ENV])
    if old is None:
        os.environ.pop(B.CACHE_ENV, None)
    else:
        os.environ[B.CACHE_ENV] = old


@pytest.fixture(scope="module")
def vtest_frames() -> dict[int, np.ndarray]:
    if not VTEST.is_file():
        pytest.fail(f"{VTEST} is missing: run tests/get_media.sh first")
    cap = cv2.VideoCapture(str(VTEST))
    frames, i = {}, 0
    while len(frames) < len(FRAMES):
        ok, frame = cap.read()
        assert ok, f"vtest.avi ended at frame {i}"
        if i in FRAMES:
            frames[i] = frame
        i += 1
    cap.release()
    return frames


@pytest.fixture(scope="module")
def front_ends():
    return P.MoveNetBlazePose(backend="onnx"), P.MoveNetBlazePose(backend="openvino")


def test_auto_picks_openvino_and_onnx_keeps_onnx_runtime(front_ends):
    ort_est, ov_est = front_ends
    assert ort_est.backends() == {"detector": "onnxruntime", "landmarks": "onnxruntime"}
    assert ov_est.backends() == {"detector": "openvino", "landmarks": "openvino"}
    assert P.MoveNetBlazePose().backends() == {"detector": "openvino", "landmarks": "openvino"}
    assert ov_est.info()["backends"]["detector"] == "openvino"
    model = default_action_model()
    auto, onnx, ov = make_engine("auto", model, threads=1), make_engine("onnx", model), make_engine("openvino", model)
    assert isinstance(auto, OpenVinoEngine) and auto.name == "openvino" and auto.info()["backend"] == "openvino"
    assert auto.info()["precision"] == "fp32" and auto.session.config()["INFERENCE_PRECISION_HINT"] == "f32"
    assert auto.session.config()["INFERENCE_NUM_THREADS"] == 1
    assert auto.session.config()["PERFORMANCE_HINT"] == "LATENCY"
    assert type(onnx) is OnnxEngine and onnx.info()["backend"] == "onnxruntime"
    assert isinstance(ov, OpenVinoEngine)
    two = P.MoveNetBlazePose(threads=2)  # --threads / pose_threads is OpenVINO's thread count
    for session in (two.detector.session, two.landmarks.session, auto.session):
        compiled = session.last_compiled
        want = 1 if session is auto.session else 2
        assert compiled.get_property("INFERENCE_NUM_THREADS") == want
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
        assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    with pytest.raises(P.PoseError, match="unknown backend 'tpu'"):
        P.MoveNetBlazePose(backend="tpu")


def test_each_pose_network_matches_onnx_runtime_on_real_frames(front_ends, vtest_frames):
    ort_est, ov_est = front_ends
    crops = 0
    for i, frame in vtest_frames.items():
        # MoveNet: the raw [6, 56] output, keypoints and boxes mapped to image pixels
        raw_o, s, (ih, iw) = ort_est.detector.raw(frame)
        raw_v, _, _ = ov_est.detector.raw(frame)
        to_px = np.array([ih, iw] * 17 + [ih, iw, ih, iw], np.float32) / s
        yx = [j for j in range(55) if j < 51 and j % 3 != 2 or j >= 51]
        assert np.abs(raw_o[:, yx] - raw_v[:, yx]).max() * to_px.max() < NETWORK_PX, f"frame {i}"
        assert np.abs(raw_o[:, 2:51:3] - raw_v[:, 2:51:3]).max() < NETWORK_SCORE
        assert np.abs(raw_o[:, 55] - raw_v[:, 55]).max() < NETWORK_SCORE
        # BlazePose: the same crops (from ORT's detections) through both runtimes
        for person in ort_est.detect(frame):
            m = ort_est.landmarks.crop_matrix(person)
            lm_o, flag_o, heat_o = ort_est.landmarks.run(frame, m)
            lm_v, flag_v, heat_v = ov_est.landmarks.run(frame, m)
            crop_to_image = 1.0 / abs(np.linalg.det(m[:, :2])) ** 0.5
            assert np.abs(lm_o[:, :2] - lm_v[:, :2]).max() * crop_to_image < NETWORK_PX
            assert np.abs(P.sigmoid(lm_o[:, 3:]) - P.sigmoid(lm_v[:, 3:])).max() < NETWORK_SCORE
            assert abs(flag_o - flag_v) < NETWORK_SCORE
            assert np.abs(P.sigmoid(heat_o) - P.sigmoid(heat_v)).max() < NETWORK_SCORE
            crops += 1
    assert crops >= 10  # 3 + 7 + 6 people in these frames, give or take MoveNet's candidates


def test_the_front_end_gives_the_same_skeletons_in_pixels(front_ends, vtest_frames):
    ort_est, ov_est = front_ends
    people = 0
    for i, frame in vtest_frames.items():
        a, b = ort_est(frame), ov_est(frame)
        assert [p.source for p in a] == [p.source for p in b], f"frame {i}"
        for pa, pb in zip(a, b):
            assert np.abs(pa.keypoints[:, :2] - pb.keypoints[:, :2]).max() < FRONT_END_PX, f"frame {i}"
            assert np.abs(pa.keypoints[:, 2] - pb.keypoints[:, 2]).max() < FRONT_END_SCORE, f"frame {i}"
            assert np.abs(pa.box - pb.box).max() < FRONT_END_PX
        people += len(a)
    assert people >= 12


def test_action_logits_match_onnx_runtime_at_every_batch_size():
    model = default_action_model()
    ort_engine, ov_engine = make_engine("onnx", model, threads=1), make_engine("openvino", model, threads=1)
    volumes = check_volumes(ov_engine.card, count=6)
    for batch in (1, 4, 6, 3):  # the batch stays dynamic: no recompile, any size
        ref, got = ort_engine.predict(volumes[:batch]), ov_engine.predict(volumes[:batch])
        assert got.shape == ref.shape == (batch, ov_engine.num_classes)
        assert np.abs(got - ref).max() < LOGIT_ATOL
        assert (got.argmax(1) == ref.argmax(1)).all()
    assert ov_engine.session.compiles == 1
    kept = ov_engine.predict(volumes[:2])
    ov_engine.predict(volumes[2:4])
    np.testing.assert_array_equal(kept, ov_engine.predict(volumes[:2]))  # outputs are copies
    with pytest.raises(EngineError, match=r"expected volumes \[N, 17, 32, 48, 48\]"):
        ov_engine.predict(np.zeros((1, 17, 8, 48, 48), np.float32))


def test_compiled_models_are_served_from_the_cache(tmp_path, private_cache, monkeypatch):
    cache = tmp_path / "cache"
    model = P.shipped_model(P.LANDMARK_FILE)
    first = B.OpenVinoSession(model, 1, cache_dir=cache)
    assert first.cache_dir == cache and first.loaded_from_cache is False
    blobs = list(cache.glob("*.blob"))
    assert blobs, "no compiled model in the cache"
    second = B.OpenVinoSession(model, 1, cache_dir=cache)
    assert second.loaded_from_cache is True
    assert sorted(cache.glob("*.blob")) == sorted(blobs)
    # the default folder: the env var, else ~/.cache/posestream/openvino
    assert B.openvino_cache_dir() == private_cache
    monkeypatch.delenv(B.CACHE_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert B.openvino_cache_dir() == Path.home() / ".cache" / "posestream" / "openvino"


def test_per_shape_compiles_are_cached_too(tmp_path):
    cache = tmp_path / "cache"
    det = B.OpenVinoSession(P.shipped_model(P.MOVENET_FILE), 1, cache_dir=cache)
    x = np.zeros((1, 288, 384, 3), np.uint8)
    det.run(None, {det.get_inputs()[0].name: x})
    assert det.loaded_from_cache is False and det.compiles == 1
    det.run(None, {det.get_inputs()[0].name: x})
    assert det.compiles == 1  # the same shape reuses its compiled model
    again = B.OpenVinoSession(P.shipped_model(P.MOVENET_FILE), 1, cache_dir=cache)
    again.run(None, {again.get_inputs()[0].name: x})
    assert again.loaded_from_cache is True
    for k in range(B.MAX_STATIC_SHAPES + 1):  # the per-shape compiles are bounded
        again.run(None, {again.get_inputs()[0].name: np.zeros((1, 64 + 32 * k, 96, 3), np.uint8)})
    assert len(again._requests) == B.MAX_STATIC_SHAPES


def test_an_unwritable_cache_folder_gives_a_notice_not_a_crash(tmp_path, monkeypatch, caplog, vtest_frames):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(B.CACHE_ENV, str(blocker / "cache"))  # mkdir fails: its parent is a file
    with caplog.at_level(logging.WARNING, logger="posestream.engines.backend"):
        est = P.MoveNetBlazePose()
    assert est.backends() == {"detector": "openvino", "landmarks": "openvino"}
    assert est.detector.session.cache_dir is None
    notices = [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
    assert len(notices) == 1, notices  # one notice for both networks
    assert len(est(vtest_frames[0])) >= 3
    monkeypatch.setenv(B.CACHE_ENV, "off")
    assert B.openvino_cache_dir() is None


def test_a_model_openvino_cannot_compile_falls_back_to_onnx_runtime(tmp_path, caplog):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # com.microsoft's Inverse: an ONNX Runtime contrib op that OpenVINO's ONNX reader lacks
    graph = helper.make_graph([helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")], "inverse",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3])])
    path = tmp_path / "inverse.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), str(path))
    with caplog.at_level(logging.WARNING, logger="posestream.engines.backend"):
        session = B.open_session(path, 1, "test model", backend="openvino")
    assert B.session_backend(session) == "onnxruntime"
    assert any("OpenVINO could not load test model" in r.getMessage() for r in caplog.records)
    x = np.diag([2.0, 4.0, 5.0]).astype(np.float32)[None]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], np.linalg.inv(x), rtol=1e-6)


NO_OPENVINO = '''
import sys
assert "openvino" not in sys.modules

class _NoOpenVino:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "openvino":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoOpenVino())
try:
    import openvino
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the openvino blocker does not work")
'''


def test_without_openvino_everything_runs_in_onnx_runtime_after_one_notice(vtest_frames):
    code = NO_OPENVINO + f'''
import logging, cv2
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
from posestream.engines.pose import MoveNetBlazePose
from posestream.engines.action import make_engine
from posestream.realtime.pipeline import default_action_model
est = MoveNetBlazePose(backend="openvino")
engine = make_engine("auto", default_action_model())
engine2 = make_engine("openvino", default_action_model())
cap = cv2.VideoCapture({str(VTEST)!r}); ok, frame = cap.read()
print("RESULT", est.backends(), engine.name, engine2.name, engine.info()["backend"], len(est(frame)))
try:
    make_engine("openvino", default_action_model(), options={{"precision": "bf16"}})
except ValueError as exc:
    print("BF16", exc)
'''
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")][0]
    assert result.startswith("RESULT {'detector': 'onnxruntime', 'landmarks': 'onnxruntime'} onnx onnx onnxruntime")
    assert int(result.split()[-1]) >= 3
    assert proc.stderr.count("OpenVINO is not available") == 1, proc.stderr
    assert "bf16 needs OpenVINO" in proc.stdout


def test_bf16_is_built_only_with_its_accuracy_check_printed(capsys):
    model = default_action_model()
    engine = make_engine("openvino", model, threads=1, options={"precision": "bf16"})
    printed = capsys.readouterr().err
    assert "openvino bf16" in printed and "held-out volumes vs fp32" in printed and "same top-1 in" in printed
    check = engine.info()["accuracy_check"]
    assert engine.precision == "bf16" and engine.session.config()["INFERENCE_PRECISION_HINT"] == "bf16"
    assert check["volumes"] == 12 and 0.0 <= check["argmax_agreement"] <= 1.0
    assert check["max_abs_logit_diff"] > 0  # bf16 is not fp32: the check measured a real difference
    with pytest.raises(EngineError, match="precision 'bf16' is for the openvino"):
        make_engine("onnx", model, options={"precision": "bf16"})


def test_cli_options_choose_the_backends():
    from posestream.cli import _run_config, build_parser
    from posestream.realtime.config import RunConfig
    from posestream.realtime.pipeline import default_estimator

    args = build_parser().parse_args(["run", "x.mp4", "--pose-backend", "onnx"])
    config = _run_config(args)
    assert config.pose_backend == "onnx"
    assert default_estimator(config).backends() == {"detector": "onnxruntime", "landmarks": "onnxruntime"}
    assert default_estimator(RunConfig()).backends()["detector"] == "openvino"
    args = build_parser().parse_args(["bench", "--engine", "openvino", "--engine-precision", "bf16"])
    assert (args.engine, args.engine_precision) == ("openvino", "bf16")
    with pytest.raises(ValueError, match="engine_precision bf16 needs engine openvino"):
        RunConfig().replace(engine_precision="bf16")


def test_bench_says_what_runs_each_network(front_ends):
    from posestream.realtime.bench import describe_backends

    engine = make_engine("auto", default_action_model(), threads=1)
    report = {"engine": engine.info(), "runs": [{"pose": front_ends[1].info()}]}
    assert describe_backends(report) == ("runs on: action: openvino (openvino, fp32, 1 thread(s)); "
                                         "detector: openvino; landmarks: openvino")


def test_an_int8_file_runs_in_openvino_only_with_its_check_against_onnx_runtime_printed(tmp_path, capsys):
    from posestream.engines.quantize import quantize_int8

    model = default_action_model()
    card = make_engine("onnx", model, device="cpu").card
    int8 = tmp_path / "x3d_s_int8.onnx"
    quantize_int8(model, int8, check_volumes(card, count=3, seed=0))  # few volumes: a smoke calibration
    capsys.readouterr()
    engine = make_engine("openvino", int8, threads=1)
    printed = capsys.readouterr().err
    assert isinstance(engine, OpenVinoEngine) and engine.precision == "int8"
    assert "openvino int8" in printed and "vs ONNX Runtime int8" in printed and "same top-1 in" in printed
    assert engine.info()["accuracy_check"]["reference"] == "ONNX Runtime int8"
    auto = make_engine("auto", int8, threads=1)  # auto keeps an int8 file on the runtime that checked it
    assert type(auto) is OnnxEngine and auto.name == "onnx-int8"


def test_the_runtime_status_says_what_runs_each_network():
    from posestream.realtime.config import RunConfig
    from posestream.realtime.pipeline import Runtime
    from posestream.realtime.sources import parse_source

    for pose_backend, engine, want in (("auto", "auto", "openvino"), ("onnx", "onnx", "onnxruntime")):
        runtime = Runtime([parse_source(str(VTEST))], RunConfig(events_out=None, max_frames=5, pace="fast",
                                                                 pose_backend=pose_backend, engine=engine))
        try:
            status = runtime.status()  # what /status serves
        finally:
            runtime.stop()
        assert status["engine"]["backend"] == want
        assert status["pose"]["backends"] == {"detector": want, "landmarks": want}


def test_one_engine_called_from_several_threads_gives_each_its_own_logits():
    from concurrent.futures import ThreadPoolExecutor

    engine = make_engine("openvino", default_action_model(), threads=1)
    volumes = check_volumes(engine.card, count=4)
    want = [engine.predict(volumes[i:i + 1]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:  # one infer request: the calls take turns, none fails
        got = list(pool.map(lambda i: engine.predict(volumes[i:i + 1]), [0, 1, 2, 3] * 3))
    for k, logits in enumerate(got):
        np.testing.assert_allclose(logits, want[k % 4], atol=1e-6)


def test_openvino_is_imported_without_its_telemetry():
    """``import openvino`` alone imports its conversion tools, which send a usage event to
    Intel's telemetry from a worker thread that outlives the run; posestream imports the runtime
    without them. A fresh interpreter opens a real session and runs it: no telemetry module is
    loaded, no thread is left."""
    code = f"""
import sys, threading
import numpy as np
from posestream.engines import backend as B
session = B.open_session({str(B_MODEL)!r}, threads=1, what="action model", backend="openvino")
assert B.session_backend(session) == "openvino", B.session_backend(session)
x = np.zeros([1] + [int(d) for d in session.get_inputs()[0].shape[1:]], np.float32)
session.run(None, {{session.get_inputs()[0].name: x}})
assert "openvino_telemetry" not in sys.modules, "telemetry imported"
assert "openvino.tools.ovc" not in sys.modules or sys.modules["openvino.tools.ovc"] is None
assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_compiles_in_several_threads_leave_the_process_locale_alone():
    """OpenVINO's model cache sets the process locale to "C" around each blob read or write and
    restores what it saw; compiles in several threads at once (streams opening their pose
    networks together) left the process in "C" for good, and Python then read text files as
    ASCII (seen: a UTF-8 model card failed to load after a two-stream run). Measured here: four
    threads compiling the shipped networks through a shared cache, three rounds; without the
    lock (raw ``Core.compile_model`` calls) every round ended in "C"."""
    import locale
    import threading

    before = locale.setlocale(locale.LC_ALL)
    assert locale.setlocale(locale.LC_CTYPE) != "C", "the test needs a locale other than C (e.g. C.UTF-8)"
    paths = [B_MODEL, P.shipped_model(P.LANDMARK_FILE)]
    errors = []

    def open_one(path):
        try:
            session = B.open_session(path, threads=1, what="a network", backend="openvino")
            assert B.session_backend(session) == "openvino"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=open_one, args=(paths[i % 2],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert locale.setlocale(locale.LC_ALL) == before
