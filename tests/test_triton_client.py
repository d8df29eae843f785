"""The Triton engine on the client side (engines/triton.py): URLs, the local fall-back when no
server answers, and, against the real server (``posestream serve`` in its Python 3.13
environment, ``scripts/setup_serve.sh``), results equal to the local engine's, two
``posestream run`` processes batched together by Triton, and a server killed mid-run.

The server tests skip when ``.venv-serve`` is missing, and fail instead when
``POSESTREAM_REQUIRE_SERVICES=1`` (as on CI)."""
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from posestream.engines.action import EngineError, OpenVinoEngine, make_engine
from posestream.engines.backend import open_session
from posestream.engines.pose import MoveNetBlazePose, PoseError, shipped_model
from posestream.engines.triton import TritonError, parse_triton_url
from posestream.realtime.config import RunConfig
from posestream.realtime.pipeline import default_action_model
from triton_server import SERVE_PYTHON, Server, free_port, wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VTEST = HERE / ".media" / "vtest.avi"
REQUIRE = os.environ.get("POSESTREAM_REQUIRE_SERVICES") == "1"


# --- no server ---------------------------------------------------------------------------------


def test_triton_urls():
    assert parse_triton_url("grpc://127.0.0.1:9001") == "127.0.0.1:9001"
    assert parse_triton_url("10.0.0.5") == "10.0.0.5:8001"
    assert parse_triton_url("grpc://[::1]:8001") == "[::1]:8001"
    for bad, why in (("http://127.0.0.1:8000", "only grpc"), ("", "needs a server"), ("grpc://h:99999", "bad port"),
                     ("grpc://h:8001/models", "expected grpc")):
        with pytest.raises(TritonError, match=why):
            parse_triton_url(bad)
    with pytest.raises(ValueError, match="needs triton_url"):
        RunConfig().replace(engine="triton")
    with pytest.raises(ValueError, match="needs triton_url"):
        RunConfig().replace(pose_backend="triton")
    with pytest.raises(ValueError, match="only grpc"):
        RunConfig().replace(engine="triton", triton_url="http://127.0.0.1:8000")
    with pytest.raises(EngineError, match="needs a server"):
        make_engine("triton", default_action_model())


def test_no_server_runs_locally_counted_and_logged_once(caplog):
    # nothing listens on the port: every call runs on the local session, whose results are
    # the local engine's exactly; one notice for the outage, probes counted as failed calls
    url = f"grpc://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="posestream.engines.triton")
    engine = make_engine("triton", default_action_model(), options={"triton": {"url": url, "probe_s": 0.05}})
    local = OpenVinoEngine(default_action_model(), threads=1)
    volumes = np.random.default_rng(0).random((3, *engine.input_shape), dtype=np.float32)
    for _ in range(3):
        assert np.array_equal(engine.predict(volumes), local.predict(volumes))
        time.sleep(0.06)
    stats = engine.stats()
    assert stats["on_server"] is False and stats["remote_calls"] == 0 and stats["local_calls"] == 3
    assert stats["fallbacks"] == 1 and stats["returns"] == 0 and stats["failed_calls"] >= 3  # open + 2-3 probes
    assert "UNAVAILABLE" in stats["last_error"].upper() or "connect" in stats["last_error"].lower()
    notices = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(notices) == 1 and url in notices[0].getMessage()
    assert engine.info()["engine"] == "triton" and engine.info()["local"]["backend"] in ("openvino", "onnxruntime")


def test_pose_backend_triton_without_server_keeps_the_people():
    # the default front end with both networks "on" a dead server finds the same people as locally
    import cv2

    if not VTEST.is_file():
        pytest.skip("tests/.media/vtest.avi missing (sh tests/get_media.sh)")
    cap = cv2.VideoCapture(str(VTEST))
    ok, frame = cap.read()
    cap.release()
    assert ok
    remote = MoveNetBlazePose(backend="triton", triton={"url": f"grpc://127.0.0.1:{free_port()}"})
    local = MoveNetBlazePose(backend="auto")
    a, b = remote(frame), local(frame)
    assert len(a) == len(b) >= 3
    assert np.allclose(sorted(p.keypoints[:, 0].mean() for p in a), sorted(p.keypoints[:, 0].mean() for p in b))
    assert remote.backends() == {"detector": "triton", "landmarks": "triton"}
    stats = remote.triton_stats()
    assert stats["detector"]["local_calls"] == 1 and stats["landmarks"]["local_calls"] == len(a)
    with pytest.raises(PoseError, match="only grpc"):
        MoveNetBlazePose(backend="triton", triton={"url": "http://127.0.0.1:1"})


# --- the real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    if not SERVE_PYTHON.is_file():
        if REQUIRE:
            pytest.fail(f"{SERVE_PYTHON} missing: run sh scripts/setup_serve.sh")
        pytest.skip(f"{SERVE_PYTHON} missing (sh scripts/setup_serve.sh makes the server environment)")
    # a batching delay of 20 ms (2 by default): the two runs' requests meet in the queue often
    # enough for the batch test on a slow, shared CI machine
    s = Server("--max-queue-delay-us", "20000").start()
    yield s
    s.stop()


def test_sessions_on_the_server_equal_the_local_ones(server):
    action = make_engine("triton", default_action_model(), options={"triton": {"url": server.url}})
    local = OpenVinoEngine(default_action_model(), threads=1)
    volumes = np.random.default_rng(1).random((5, *action.input_shape), dtype=np.float32)
    assert np.abs(action.predict(volumes) - local.predict(volumes)).max() < 1e-4
    assert action.stats()["remote_calls"] == 1 and action.stats()["local_calls"] == 0
    import cv2

    cap = cv2.VideoCapture(str(VTEST))
    ok, frame = cap.read()
    cap.release()
    remote = MoveNetBlazePose(backend="triton", triton={"url": server.url})
    near = MoveNetBlazePose(backend="auto")
    a, b = remote(frame), near(frame)
    assert len(a) == len(b) >= 3
    for p, q in zip(sorted(a, key=lambda p: p.box[0]), sorted(b, key=lambda p: p.box[0])):
        assert np.abs(p.keypoints[:, :2] - q.keypoints[:, :2]).max() < 0.5  # pixels
    stats = remote.triton_stats()
    assert stats["detector"]["remote_calls"] == 1 and stats["landmarks"]["remote_calls"] == len(a)
    assert stats["detector"]["local_calls"] == stats["landmarks"]["local_calls"] == 0


def test_a_model_the_server_does_not_serve_is_a_one_line_error(server, tmp_path):
    other = tmp_path / "not_served.onnx"
    other.write_bytes(Path(default_action_model()).read_bytes())
    with pytest.raises(EngineError, match="not_served"):
        make_engine("triton", other, options={"triton": {"url": server.url}})
    # the file of another network under the action model's name: its inputs do not match
    with pytest.raises(ValueError, match="has no input"):
        open_session(shipped_model("movenet_multipose_lightning.onnx"), backend="triton",
                     triton={"url": server.url, "model": "x3d_s_synthetic"})


def _run(url: str | None, labels: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "posestream", "run", str(VTEST), "--no-evidence", "--events", os.devnull,
            "--labels", str(labels), *extra]
    if url:
        args += ["--engine", "triton", "--pose-backend", "triton", "--triton-url", url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _labels(path: Path) -> list[tuple]:
    """The label changes of a --labels file: (track, label, frame), in frame order."""
    return sorted((r["frame_index"], r["track_id"], r["label"]) for r in map(json.loads, path.read_text().splitlines()))


def _summary(stderr: str) -> dict[str, dict[str, int]]:
    out = {}
    for line in stderr.splitlines():
        if line.startswith("triton "):
            network, rest = line[len("triton "):].split(": ", 1)
            numbers = [int(w) for w in rest.replace(",", " ").split() if w.isdigit()]
            out[network] = dict(zip(("remote", "local", "retries", "fallbacks", "returns"), numbers))
    return out


def _metric(port: int, series: str) -> float | None:
    """One series' value from a run's Prometheus /metrics (None when absent or unreachable)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def _requests(stats: dict, model: str) -> int:
    # Triton's statistics as JSON: protobuf leaves out zero counts and writes int64 as strings
    return int(stats.get(model, {}).get("inference_stats", {}).get("success", {}).get("count", 0))


def test_two_runs_share_the_server_and_match_a_local_run(server, tmp_path):
    if not VTEST.is_file():
        pytest.skip("tests/.media/vtest.avi missing (sh tests/get_media.sh)")
    before = server.statistics()
    frames = ("--pace", "fast", "--max-frames", "120")
    local = _run(None, tmp_path / "local.jsonl", *frames)
    assert local.wait(timeout=300) == 0, local.stderr.read()[-2000:]
    runs = [_run(server.url, tmp_path / f"remote{i}.jsonl", *frames) for i in range(2)]
    errs = [r.communicate(timeout=600)[1] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for e in errs]
    expected = _labels(tmp_path / "local.jsonl")
    assert len(expected) >= 10
    for i, err in enumerate(errs):
        summary = _summary(err)
        assert set(summary) == {"action", "detector", "landmarks"}, err[-2000:]
        for network, counts in summary.items():
            assert counts["remote"] > 0 and counts["local"] == 0 and counts["fallbacks"] == 0, (network, counts)
        assert _labels(tmp_path / f"remote{i}.jsonl") == expected
    after = server.statistics()
    # Triton's batcher joined requests: fewer executions than requests. One process has at most
    # one request of a network in flight (one stream, one batcher thread), so an execution of
    # several requests held requests of both processes.
    for model in ("x3d_s_synthetic", "movenet_multipose_lightning", "pose_landmark_full"):
        requests = _requests(after, model) - _requests(before, model)
        executions = int(after[model].get("execution_count", 0)) - int(before[model].get("execution_count", 0))
        assert requests > 0, model
        if model != "movenet_multipose_lightning":  # MoveNet: every 5th frame, rarely at once
            assert executions < requests, (model, executions, requests)


def test_server_killed_mid_run_both_runs_go_on_and_come_back(tmp_path):
    if not VTEST.is_file():
        pytest.skip("tests/.media/vtest.avi missing (sh tests/get_media.sh)")
    if not SERVE_PYTHON.is_file():
        if REQUIRE:
            pytest.fail(f"{SERVE_PYTHON} missing: run sh scripts/setup_serve.sh")
        pytest.skip(f"{SERVE_PYTHON} missing (sh scripts/setup_serve.sh makes the server environment)")
    srv = Server().start()
    runs: list[subprocess.Popen] = []

    def classified() -> int:
        return _requests(srv.statistics(), "x3d_s_synthetic")

    try:
        # the video's own pace (10 fps, 40 s): the runs go on while the server dies and returns
        http = free_port()  # the first run's /metrics: what an operator's Prometheus sees
        runs = [_run(srv.url, tmp_path / f"r{i}.jsonl", "--max-frames", "400",
                     *(("--http", f"127.0.0.1:{http}") if i == 0 else ())) for i in range(2)]
        assert wait_until(lambda: classified() >= 6, 120, 0.5), "the runs never reached the server"
        assert _metric(http, 'posestream_triton_on_server{network="action"}') == 1.0
        srv.kill()
        time.sleep(5)
        assert all(r.poll() is None for r in runs), "a run ended when the server died"
        assert _metric(http, 'posestream_triton_on_server{network="landmarks"}') == 0.0
        assert _metric(http, 'posestream_triton_fallbacks_total{network="landmarks"}') == 1.0
        assert _metric(http, 'posestream_triton_calls_total{network="landmarks",where="local"}') > 0
        srv.start()  # the same ports: what the runs know
        assert wait_until(lambda: _metric(http, 'posestream_triton_returns_total{network="landmarks"}') == 1.0,
                          30, 0.5)
        errs = [r.communicate(timeout=300)[1] for r in runs]
        assert classified() > 0  # the restarted server classified again
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
        srv.stop()
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for e in errs]
    for i, err in enumerate(errs):
        summary = _summary(err)
        assert set(summary) == {"action", "detector", "landmarks"}, err[-2000:]
        for network, counts in summary.items():
            # on the server, then locally (one fall-back), then back on the restarted server
            assert counts["remote"] > 0 and counts["local"] > 0, (i, network, counts)
            assert counts["fallbacks"] == 1 and counts["returns"] == 1, (i, network, counts)
        assert len(_labels(tmp_path / f"r{i}.jsonl")) > 0
