"""``posestream serve``: the action model and the two pose networks on Triton Inference Server.

Triton comes from PyTriton (``nvidia-pytriton==0.7.0``, which bundles Triton server 2.51): each
:class:`~posestream.engines.triton_models.ServedModel` is bound as a model of that name, its
tensors named :func:`~posestream.engines.triton_models.triton_tensor_name` of the ONNX names,
with ``max_batch_size`` and Triton's dynamic batcher. The infer function runs the ONNX file in
posestream's own session code (:func:`posestream.engines.backend.open_session`: OpenVINO, or
ONNX Runtime), on the whole batch Triton formed when the file's batch is dynamic (action model,
landmark copy), one item at a time otherwise (MoveNet). Outputs come back in the ONNX graph's
output order, each with the batch dimension.

Health is Triton's own ``/v2/health/ready`` (HTTP port), metrics Triton's own Prometheus
endpoint (``/metrics`` on the metrics port). Everything binds to ``--host`` (127.0.0.1 unless
told otherwise). SIGINT/SIGTERM stop Triton and exit 0.

PyTriton's Python backend embeds the interpreter it runs under, and only Python 3.13 works here
(a 3.11 venv failed to load a model; pyenv's 3.12 has no libpython to embed), so this runs in
``.venv-serve`` (``sh scripts/setup_serve.sh``). It needs no torch.
"""
from __future__ import annotations

import logging
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from posestream.engines.triton_models import ServedModel, triton_tensor_name
from posestream.errors import first_line

log = logging.getLogger(__name__)

#: The PyTriton release this was written and tested against (the numpy bridge below patches its
#: proxy model source, so another release is refused rather than served wrong).
PYTRITON_VERSION = "0.7.0"
#: Triton endpoints only PyTriton itself may use (with its access token); statistics, health,
#: metadata and inference are open to every client that can reach the ports.
RESTRICTED_ENDPOINTS = ("model-repository", "shared-memory", "trace", "logging")
SETUP_HINT = "create the server's environment with `sh scripts/setup_serve.sh` and run `.venv-serve/bin/posestream serve`"


class ServeError(RuntimeError):
    """A one-line, user-facing error of ``posestream serve``."""


def check_ports(host: str, ports: dict[str, int]) -> None:
    """One-line error naming the first of ``ports`` (``{"--grpc-port": 8001, ...}``) that cannot be
    bound on ``host``: Triton itself would only log it and exit."""
    if len(set(ports.values())) != len(ports):
        raise ServeError(f"--http-port, --grpc-port and --metrics-port must differ, got {sorted(ports.values())}")
    for option, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            # as Triton's listeners do: a port left in TIME_WAIT by a killed server is free
            # (a restart right after a crash), one that something listens on is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise ServeError(f"{host}:{port} ({option}): cannot listen there ({first_line(exc)}); "
                                 f"choose another {option}") from None


def pytriton_modules():
    """PyTriton's modules, or a one-line error saying how to get the server's environment."""
    if sys.version_info[:2] != (3, 13):
        raise ServeError(f"posestream serve runs under Python 3.13 (PyTriton embeds it; this is "
                         f"{sys.version_info[0]}.{sys.version_info[1]}): {SETUP_HINT}")
    try:
        from importlib.metadata import version

        import pytriton.triton  # noqa: F401
        found = version("nvidia-pytriton")
    except Exception as exc:  # ImportError, PackageNotFoundError
        raise ServeError(f"PyTriton is not installed here ({first_line(exc)}): {SETUP_HINT}") from None
    if found != PYTRITON_VERSION:
        raise ServeError(f"nvidia-pytriton {found} is installed; posestream serve is tested with "
                         f"{PYTRITON_VERSION}: {SETUP_HINT}")
    import pytriton.decorators
    import pytriton.model_config
    import pytriton.models.model

    return pytriton


# --- numpy 2 inside Triton's Python backend --------------------------------------------------------
#
# PyTriton 0.7.0 pins numpy<2, which has no wheel for Python 3.13, so the server's environment has
# numpy 2. Triton's Python backend stub (c_python_backend_utils, compiled against numpy 1's C
# structures) then misreads every array: the item size of a numpy 2 dtype sits where numpy 1 had
# it no longer, so pb_utils' Tensor.as_numpy() returned arrays with zero strides (every element
# equal to the first: [1, 2, 3] read as [1, 1, 1]) and pb_utils.Tensor(name, array) sent zero
# bytes ("cannot reshape array of size 0" at the client). DLPack carries shape, strides and dtype
# in its own C struct, which both sides read correctly, so the proxy model that PyTriton loads
# into the stub is given DLPack conversions in place of those two calls. The stub marks a
# consumed capsule "used_dlpack" where numpy's deleter expects "used_dltensor" (it printed a
# traceback per response); the capsule is renamed to the standard name after the stub took it.

_PROXY_INPUT = "request[input_name] = input_tensor.as_numpy()"
_PROXY_OUTPUT = "pb_utils.Tensor(name, value)"
_PROXY_BRIDGE = '''


# --- added by posestream (engines/triton_server.py): numpy 2 through DLPack, see there ---
class _PosestreamDLPack:
    """An object with the DLPack protocol around a capsule the stub made (numpy.from_dlpack wants one)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def _posestream_as_numpy(tensor):
    import numpy

    try:
        capsule = tensor.to_dlpack()
    except Exception:  # BYTES tensors have no DLPack form (and posestream serves none)
        return tensor.as_numpy()
    return numpy.from_dlpack(_PosestreamDLPack(capsule))


_POSESTREAM_USED = b"used_dltensor"


def _posestream_tensor(name, value):
    import ctypes

    import numpy

    value = numpy.ascontiguousarray(value)
    if value.dtype.kind in "OSU":
        return pb_utils.Tensor(name, value)
    capsule = value.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    set_name = ctypes.pythonapi.PyCapsule_SetName
    set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
    set_name(capsule, _POSESTREAM_USED)
    return tensor
'''


def bridged_proxy_source(source: str) -> str:
    """PyTriton's proxy ``model.py`` with the DLPack conversions (see above)."""
    if source.count(_PROXY_INPUT) != 1 or source.count(_PROXY_OUTPUT) != 1:
        raise ServeError(f"PyTriton's proxy model.py is not the one of nvidia-pytriton {PYTRITON_VERSION}; "
                         f"cannot bridge numpy 2 into it: {SETUP_HINT}")
    source = source.replace(_PROXY_INPUT, "request[input_name] = _posestream_as_numpy(input_tensor)")
    return source.replace(_PROXY_OUTPUT, "_posestream_tensor(name, value)") + _PROXY_BRIDGE


def install_numpy_bridge(pytriton) -> None:
    """Make PyTriton hand the bridged proxy source to Triton (it sends the files with each model
    load; ``get_proxy_model_files`` is where it reads them)."""
    model_class = pytriton.models.model.Model
    if getattr(model_class, "_posestream_bridged", False):
        return
    original = model_class.get_proxy_model_files

    def get_proxy_model_files(self):
        files = original(self)
        key = f"file:{self.model_version}/model.py"
        files[key] = bridged_proxy_source(files[key].decode("utf-8")).encode("utf-8")
        return files

    model_class.get_proxy_model_files = get_proxy_model_files
    model_class._posestream_bridged = True


# --- the infer functions ---------------------------------------------------------------------------


def infer_function(model: ServedModel, session: Any) -> Callable[..., dict[str, np.ndarray]]:
    """``f(**inputs) -> outputs`` of one batch, keyed by the served (Triton) tensor names, running
    ``session`` on the whole batch when ``model.batch_dynamic``, else item by item."""
    feeds_by = {triton_tensor_name(s.name): s.name for s in model.inputs}
    output_names = [s.name for s in model.outputs]
    served_outputs = [triton_tensor_name(n) for n in output_names]

    def run(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(output_names, arrays)

    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {feeds_by[name]: np.ascontiguousarray(value) for name, value in inputs.items()}
        if model.batch_dynamic:
            outputs = run(feeds)
        else:
            size = len(next(iter(feeds.values())))
            items = [run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(size)]
            outputs = [np.concatenate([item[j] for item in items]) for j in range(len(output_names))]
        return {name: np.asarray(out) for name, out in zip(served_outputs, outputs)}

    return infer


def open_sessions(models: Sequence[ServedModel], threads: int, backend: str) -> list[Any]:
    from posestream.engines.backend import open_session

    return [open_session(m.load_path, threads, m.what, backend=backend, error=ServeError) for m in models]


# --- the server ------------------------------------------------------------------------------------


def serve(models: Sequence[ServedModel], *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int = 8002, max_batch: int = 8, max_queue_delay_us: int = 2000, threads: int = 1,
          backend: str = "auto", stop: threading.Event | None = None, ready: Callable[[str], None] | None = None) -> int:
    """Serve ``models`` until SIGINT/SIGTERM (or ``stop`` is set); returns 0 after Triton stopped.
    ``ready(line)`` is called once Triton answers ready (default: print the line)."""
    if max_batch < 1 or max_queue_delay_us < 0 or threads < 1:
        raise ServeError(f"--max-batch and --threads must be at least 1 and --max-queue-delay-us at least 0, got "
                         f"{max_batch}, {threads}, {max_queue_delay_us}")
    pytriton = pytriton_modules()
    check_ports(host, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    sessions = open_sessions(models, threads, backend)
    install_numpy_bridge(pytriton)
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    logs = Path(tempfile.mkdtemp(prefix="posestream-serve-"))
    # Triton's own log (its start-up tables, NVML/DCGM warnings on a CPU machine) goes to a file;
    # the console gets posestream's lines.
    config = TritonConfig(http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
                          metrics_address=host, metrics_port=metrics_port, allow_metrics=True,
                          allow_cpu_metrics=True, allow_gpu_metrics=False, log_file=logs / "triton.log")
    # PyTriton keeps Triton's statistics API behind a random access token by default; it is
    # opened here (operators and tests read the batch sizes Triton formed), while loading and
    # unloading models, shared memory, tracing and log settings stay behind the token.
    security = TritonSecurityConfig(restricted_endpoints=list(RESTRICTED_ENDPOINTS))
    triton = Triton(config=config, security_config=security)
    try:
        for model, session in zip(models, sessions):
            triton.bind(model_name=model.name, infer_func=batch(infer_function(model, session)),
                        inputs=[Tensor(name=triton_tensor_name(s.name), dtype=np.dtype(s.dtype), shape=s.dims)
                                for s in model.inputs],
                        outputs=[Tensor(name=triton_tensor_name(s.name), dtype=np.dtype(s.dtype), shape=s.dims)
                                 for s in model.outputs],
                        config=ModelConfig(max_batch_size=max_batch,
                                           batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)),
                        strict=True)
        try:
            triton.run()
        except Exception as exc:
            raise ServeError(f"Triton did not start on {host} ({first_line(exc)}); its log: "
                             f"{_last_error(logs / 'triton.log')}") from None
        _wait_ready(host, http_port, stop)
        if stop.is_set():  # a signal during start-up
            return 0
        names = ", ".join(m.name for m in models)
        line = (f"serving {names} on grpc://{host}:{grpc_port} (http {http_port}, metrics {metrics_port})")
        (ready or (lambda text: print(text, flush=True)))(line)
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise ServeError(f"Triton on {host}:{grpc_port} stopped by itself; its log: "
                                 f"{_last_error(logs / 'triton.log')}")
    finally:
        triton.stop()
        restore()
        if not stop.is_set():  # an error: keep Triton's log for the user
            print(f"posestream serve: Triton's log is in {logs / 'triton.log'}", file=sys.stderr)
        else:
            _remove(logs)
    return 0


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop`` (main thread only); returns what puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore


def _wait_ready(host: str, http_port: int, stop: threading.Event, timeout_s: float = 60.0) -> None:
    """Until Triton's own readiness endpoint answers 200 (all models loaded)."""
    url = f"http://{'[' + host + ']' if ':' in host else host}:{http_port}/v2/health/ready"
    if host in ("0.0.0.0", "::"):
        url = f"http://127.0.0.1:{http_port}/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"{url}: Triton not ready after {timeout_s:.0f} s")
        stop.wait(0.2)


def _last_error(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"{path} (unreadable)"
    errors = [line for line in lines if line.startswith("E")] or lines
    return errors[-1][:300] if errors else f"{path} (empty)"


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
