"""``posestream serve`` as a child process for tests and benchmarks: the real Triton server
(PyTriton) from the server environment ``.venv-serve`` (``sh scripts/setup_serve.sh``), on
free loopback ports, killed by its process group (tritonserver and its Python backend stubs
are its children)."""
import os
import signal
import subprocess
from pathlib import Path

from netutil import free_port, wait_until  # noqa: F401 (the tests import them from here too)

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
#: The models ``posestream serve`` hosts by default.
DEFAULT_MODELS = ("x3d_s_synthetic", "movenet_multipose_lightning", "pose_landmark_full")


class Server:
    """``posestream serve`` from the server environment, on free loopback ports."""

    def __init__(self, *args: str) -> None:
        self.grpc, self.http, self.metrics = free_port(), free_port(), free_port()
        self.url = f"grpc://127.0.0.1:{self.grpc}"
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Server":
        import tritonclient.grpc as grpcclient

        cmd = [str(SERVE_PYTHON), "-m", "posestream", "serve", "--grpc-port", str(self.grpc), "--http-port",
               str(self.http), "--metrics-port", str(self.metrics), *self.args]
        self.log = open(os.devnull if not os.environ.get("POSESTREAM_TEST_SERVER_LOG") else
                        os.environ["POSESTREAM_TEST_SERVER_LOG"], "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{self.grpc}")

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"posestream serve exited with {self.proc.returncode}")
            try:
                return client.is_server_ready() and all(client.is_model_ready(m) for m in DEFAULT_MODELS)
            except Exception:
                return False

        assert wait_until(ready, timeout, 0.25), "posestream serve did not get ready"
        client.close()
        return self

    def kill(self) -> None:
        # the whole process group: PyTriton's tritonserver and its Python backend stubs too
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def statistics(self) -> dict:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{self.grpc}")
        try:
            stats = client.get_inference_statistics(as_json=True)["model_stats"]
        finally:
            client.close()
        return {m["name"]: m for m in stats}
