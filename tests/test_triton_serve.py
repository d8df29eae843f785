"""``posestream serve`` for real: the server process from ``.venv-serve`` (Python 3.13, PyTriton's
Triton 2.51) on free loopback ports, reached from this interpreter with ``tritonclient.grpc``.

Its answers are compared with ONNX Runtime running the original ONNX files here, one item at a
time, on real pictures (``tests/.media``) for the pose networks. Measured on this machine (the
server on its default backend, OpenVINO, fp32): action logits within 1.6e-5; MoveNet within
3e-6; landmarks (pixel coordinates up to ~300) within 1.3e-3, presence flag 5e-7, heatmaps
3.6e-4, world landmarks 4e-6; the segmentation logits (magnitudes up to ~1800, unused by
posestream) within 0.9, i.e. 5e-4 of their range.

Skips when ``.venv-serve`` is missing (``sh scripts/setup_serve.sh`` makes it) and fails instead
when ``POSESTREAM_REQUIRE_SERVICES=1`` (as on CI)."""
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")

from posestream.engines.triton_models import default_served_models, triton_tensor_name  # noqa: E402
from netutil import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVE = ROOT / ".venv-serve" / "bin" / "posestream"
MEDIA = HERE / ".media"
#: long enough that the concurrent requests below surely meet in one batch
QUEUE_DELAY_US = 20000


def serve_binary() -> Path:
    if not SERVE.is_file():
        why = f"{SERVE} is missing: run `sh scripts/setup_serve.sh` first"
        if os.environ.get("POSESTREAM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"POSESTREAM_REQUIRE_SERVICES=1 but {why}")
        pytest.skip(why)
    return SERVE


class Server:
    def __init__(self, binary: Path, *args: str):
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--http-port", str(self.http), "--grpc-port", str(self.grpc),
             "--metrics-port", str(self.metrics), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("serving "):
                self.ready.set()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"posestream serve did not get ready: rc={self.proc.returncode} "
                            f"stdout={self.lines} stderr={self.proc.stderr.read()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server():
    s = Server(serve_binary(), "--max-queue-delay-us", str(QUEUE_DELAY_US))
    s.wait_ready()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    yield c
    c.close()


def picture(name: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: run tests/get_media.sh first")
    return cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), size)  # size: (w, h)


def infer(client, model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = []
    for name, x in feeds.items():
        i = tritonclient_grpc.InferInput(triton_tensor_name(name), list(x.shape),
                                         {"float32": "FP32", "uint8": "UINT8"}[x.dtype.name])
        i.set_data_from_numpy(x)
        inputs.append(i)
    result = client.infer(model.name, inputs, client_timeout=60)
    return {o.name: result.as_numpy(triton_tensor_name(o.name)) for o in model.outputs}


def local(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime on the original file, one item at a time (its batch may be a fixed 1)."""
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.outputs]
    n = len(next(iter(feeds.values())))
    items = [session.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
    return {name: np.concatenate([item[j] for item in items]) for j, name in enumerate(names)}


def test_readme_serve_command_is_what_this_starts():
    import re

    block = re.search(r"<!-- serve-command -->\n```bash\n(.*?)\n```\n<!-- /serve-command -->",
                      (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README.md has no serve-command block"
    assert block.group(1) == f"sh scripts/setup_serve.sh && {SERVE.relative_to(ROOT)} serve"
    assert (ROOT / "scripts" / "setup_serve.sh").is_file()


def test_ready_line_health_and_served_names(server, client):
    assert server.lines[0] == (f"serving x3d_s_synthetic, movenet_multipose_lightning, pose_landmark_full on "
                               f"grpc://127.0.0.1:{server.grpc} (http {server.http}, metrics {server.metrics})")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    assert client.is_server_ready()
    for m in default_served_models():
        meta = client.get_model_metadata(m.name)
        assert [i.name for i in meta.inputs] == [triton_tensor_name(s.name) for s in m.inputs]
        assert [o.name for o in meta.outputs] == [triton_tensor_name(s.name) for s in m.outputs]
        assert [list(i.shape) for i in meta.inputs] == [[-1, *s.dims] for s in m.inputs]


def test_action_model_matches_onnx_runtime(client):
    action = default_served_models()[0]
    x = np.random.default_rng(0).random((3, *action.inputs[0].dims), dtype=np.float32)
    got, ref = infer(client, action, {"volume": x}), local(action, {"volume": x})
    assert got["logits"].shape == (3, 12)
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=0, atol=1e-4)


def test_pose_networks_match_onnx_runtime(client):
    _, detector, landmark = default_served_models()
    frame = picture("messi5.jpg", (512, 288))[None]  # [1, H, W, 3] uint8, H and W multiples of 32
    got, ref = infer(client, detector, {"serving_default_input:0": frame}), local(detector, {"serving_default_input:0": frame})
    out = "StatefulPartitionedCall:0"
    assert got[out].shape == (1, 6, 56)
    np.testing.assert_allclose(got[out], ref[out], rtol=0, atol=1e-3)
    assert ref[out][0, :, 55].max() > 0.2  # somebody was found: the comparison is on a real detection

    crops = np.stack([picture("messi5.jpg", (256, 256)), picture("basketball1.png", (256, 256))]).astype(np.float32) / 255
    got, ref = infer(client, landmark, {"input_1": crops}), local(landmark, {"input_1": crops})
    for name, (rtol, atol) in {"Identity": (1e-5, 2e-3), "Identity_1": (0, 1e-4), "Identity_3": (0, 1e-3),
                               "Identity_4": (0, 1e-4)}.items():
        assert got[name].shape[0] == 2
        np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=name)
    # segmentation logits (magnitudes ~1e3, not used by posestream): relative to their range
    assert np.abs(got["Identity_2"] - ref["Identity_2"]).max() <= 1e-3 * np.abs(ref["Identity_2"]).max()


def concurrently(client, model, feeds: dict[str, np.ndarray], n: int) -> tuple[list[dict], dict[int, int]]:
    """``n`` requests at once from ``n`` threads: their results and the batches Triton formed."""
    before = batch_sizes(client, model.name)
    results, errors = [], []

    def one() -> None:
        try:
            results.append(infer(client, model, feeds))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == n, errors
    # Triton records a batch's statistics as it releases the requests, which can be a moment
    # after the responses arrived
    deadline = time.monotonic() + 10
    while True:
        after = batch_sizes(client, model.name)
        batches = {size: after.get(size, 0) - before.get(size, 0) for size in after}
        if sum(size * count for size, count in batches.items()) >= n or time.monotonic() > deadline:
            return results, batches
        time.sleep(0.05)


def test_concurrent_requests_form_batches(client):
    action, detector, _ = default_served_models()
    x = np.random.default_rng(1).random((1, *action.inputs[0].dims), dtype=np.float32)
    results, batches = concurrently(client, action, {"volume": x}, 6)
    ref = local(action, {"volume": x})["logits"]
    for r in results:  # batched or not, the same answer
        np.testing.assert_allclose(r["logits"], ref, rtol=0, atol=1e-4)
    assert sum(size * count for size, count in batches.items()) == 6
    assert max(size for size, count in batches.items() if count) > 1, f"no batch formed: {batches}"

    # MoveNet's batch of requests is run one item at a time inside the server
    frame = picture("basketball1.png", (320, 256))[None]
    results, batches = concurrently(client, detector, {"serving_default_input:0": frame}, 3)
    ref = local(detector, {"serving_default_input:0": frame})["StatefulPartitionedCall:0"]
    for r in results:
        np.testing.assert_allclose(r["StatefulPartitionedCall:0"], ref, rtol=0, atol=1e-3)
    assert max(size for size, count in batches.items() if count) > 1, f"no batch formed: {batches}"


def batch_sizes(client, model_name: str) -> dict[int, int]:
    stats = client.get_inference_statistics(model_name).model_stats[0]
    return {b.batch_size: b.compute_infer.count for b in stats.batch_stats}


def test_metrics_endpoint(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts = {line.split("{")[1].split(",")[0]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("nv_inference_request_success{")}
    assert counts['model="x3d_s_synthetic"'] >= 7  # the requests above


def test_busy_port_is_one_line_error(server):
    binary = serve_binary()
    out = subprocess.run([str(binary), "serve", "--grpc-port", str(server.grpc), "--http-port", str(free_port()),
                          "--metrics-port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert f"127.0.0.1:{server.grpc} (--grpc-port): cannot listen there" in out.stderr


def test_sigterm_stops_cleanly(server):
    # last: stops the module's server
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    rc = server.proc.wait(timeout=30)
    took = time.monotonic() - start
    assert rc == 0, server.proc.stderr.read()[-2000:]
    assert took < 15, f"took {took:.1f} s to stop"
    for port in (server.http, server.grpc, server.metrics):  # Triton is gone with it
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
