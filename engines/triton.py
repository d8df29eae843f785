"""The networks on a Triton Inference Server: a session that runs a model remotely, with the
local session as its fall-back.

A site with many cameras runs the light per-camera work (reading, tracking, windows, events)
near the cameras and the networks on shared servers (``posestream serve``, Triton through
PyTriton, or NVIDIA's container on a repository from ``posestream export --triton-repo``).
:class:`TritonSession` has ONNX Runtime's session shape (``run(output_names, feeds)``,
``get_inputs()``, ``get_outputs()``; see :mod:`posestream.engines.backend`), so the pose
networks and the action engine use it as they use a local session: ``--engine triton`` and
``--pose-backend triton`` with ``--triton-url grpc://HOST:PORT``.

What happens when the server is gone, and why:

- A call that fails with a transient error (server unreachable, deadline exceeded, server busy)
  is retried ``retries`` times with exponential back-off (``backoff_s``, doubled each time):
  a restarting server or a dropped connection costs a few tens of milliseconds, not a frame.
- When the retries fail too, the call runs on the local session (the same ONNX file, on
  OpenVINO or ONNX Runtime), logged once per outage, and so do the following calls: a camera
  never loses frames or labels to a dead server. Every such call is counted (:meth:`stats`).
- While local, one call every ``probe_s`` seconds tries the server first (one attempt, no
  retries), and the session returns to it when that succeeds (logged once): the server's
  restart is noticed within ``probe_s``.
- A server that answers but does not serve the model, or serves it with other inputs or
  outputs, is a configuration error: a one-line :class:`TritonError` when the session opens.
  Found later (a server restarted with other models), or any other failed call, it is handled
  as an outage: logged with its reason, local session, probes.

Models are found by name: :func:`posestream.engines.triton_models.triton_model_name` of the
local ONNX file (``x3d_s_synthetic``, ``movenet_multipose_lightning``, ``pose_landmark_full``),
the names ``posestream serve`` and ``export --triton-repo`` give them. Tensors are matched by
the ONNX graph's names, or by their Triton-safe spelling
(:func:`~posestream.engines.triton_models.triton_tensor_name`, which ``posestream serve`` uses).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

from posestream.errors import first_line

log = logging.getLogger(__name__)

#: Triton's usual gRPC port (``posestream serve``'s default).
DEFAULT_GRPC_PORT = 8001
#: Seconds a call may take before it counts as failed: a batch of the action model on a busy
#: CPU server takes ~0.1-0.3 s; a hung server must not hold a camera for long.
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 0.05
#: While on the local session, how often a call tries the server again.
DEFAULT_PROBE_S = 2.0

# gRPC status codes (tritonclient puts them in InferenceServerException.status()) that a retry
# or the local session may outlive; anything else (a bad input, an unknown model) is an error.
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED", "INTERNAL",
              "UNKNOWN")


class TritonError(ValueError):
    """A one-line, user-facing error about a Triton server or a model on it."""


def parse_triton_url(url: str) -> str:
    """``grpc://HOST:PORT`` (or ``HOST:PORT``, or ``HOST``: port 8001) -> ``"HOST:PORT"`` for
    tritonclient's gRPC client; anything else is a one-line :class:`TritonError`."""
    text = str(url or "").strip()
    if not text:
        raise TritonError("the triton engine needs a server: --triton-url grpc://HOST:PORT")
    parts = urlsplit(text if "://" in text else f"grpc://{text}")
    if parts.scheme != "grpc":
        raise TritonError(f"triton url {url!r}: only grpc://HOST:PORT is supported (Triton's gRPC port, "
                          f"{DEFAULT_GRPC_PORT} by default)")
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise TritonError(f"triton url {url!r}: expected grpc://HOST:PORT")
    try:
        port = parts.port or DEFAULT_GRPC_PORT
    except ValueError:
        raise TritonError(f"triton url {url!r}: bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def _grpc_module():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise TritonError("the triton engine needs tritonclient: pip install 'tritonclient[grpc]' "
                          "(or posestream's triton extra)") from None
    return grpcclient


def _status(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    text = str(status() if callable(status) else status or "")
    return text.rsplit(".", 1)[-1].upper()  # "StatusCode.UNAVAILABLE" -> "UNAVAILABLE"


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call may succeed later (server down, slow or restarting)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    code = _status(exc)
    if code:
        return code in _TRANSIENT
    text = str(exc).lower()
    return any(k in text for k in ("unavailable", "deadline", "connect", "timed out", "socket closed"))


class TritonSession:
    """One network on a Triton server (``url``, model ``model_name``), used like an ONNX Runtime
    session, running on ``local`` (a session of the same file) while the server is gone (see the
    module docstring). Safe to call from several threads (gRPC calls run concurrently)."""

    backend = "triton"

    def __init__(self, url: str, model_name: str, local: Any, *, what: str = "model",
                 timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 backoff_s: float = DEFAULT_BACKOFF_S, probe_s: float = DEFAULT_PROBE_S) -> None:
        if not timeout_s > 0:
            raise TritonError(f"triton timeout must be > 0 seconds, got {timeout_s!r}")
        if int(retries) != retries or retries < 0:
            raise TritonError(f"triton retries must be an integer >= 0, got {retries!r}")
        self.url = url
        self.address = parse_triton_url(url)
        self.model_name = str(model_name)
        self.local = local
        self.what = what
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.probe_s = float(probe_s)
        self._grpc = _grpc_module()
        from tritonclient.utils import np_to_triton_dtype

        self._to_triton_dtype = np_to_triton_dtype
        self._client = self._grpc.InferenceServerClient(url=self.address)
        self._inputs = list(local.get_inputs())
        self._outputs = list(local.get_outputs())
        self._lock = threading.Lock()
        self._remote_names: tuple[dict[str, str], dict[str, str]] | None = None
        self._on_server = False
        self._next_probe = 0.0
        self._counts = {"remote_calls": 0, "local_calls": 0, "retries": 0, "fallbacks": 0, "returns": 0,
                        "failed_calls": 0}
        self.last_error: str | None = None
        try:
            self._remote_names = self._resolve()
        except TritonError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise TritonError(f"triton server {self.url}: {self.model_name}: {first_line(exc)}") from None
            self._fall_back(exc)
        else:
            self._on_server = True
            log.info("%s %s on the Triton server at %s", what, self.model_name, self.url)

    # -- ONNX Runtime's session shape
    def get_inputs(self) -> list[Any]:
        return list(self._inputs)

    def get_outputs(self) -> list[Any]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        now = time.monotonic()
        with self._lock:
            on_server = self._on_server
            probe = not on_server and now >= self._next_probe
            if probe:
                self._next_probe = now + self.probe_s  # one probe at a time
        if on_server or probe:
            try:
                outputs = self._remote(names, feeds, attempts=1 + (self.retries if on_server else 0))
            except Exception as exc:  # any failure: the frame is not lost to the server (see above)
                self._fall_back(exc)
            else:
                with self._lock:
                    self._counts["remote_calls"] += 1
                    if not self._on_server:
                        self._on_server = True
                        self._counts["returns"] += 1
                        back = True
                    else:
                        back = False
                if back:
                    log.warning("%s %s: back on the Triton server at %s", self.what, self.model_name, self.url)
                return outputs
        with self._lock:
            self._counts["local_calls"] += 1
        return self.local.run(names, feeds)

    # -- the server
    def _resolve(self) -> tuple[dict[str, str], dict[str, str]]:
        """The server's tensor names for ours (inputs, outputs), checked against the model's
        metadata; TritonError when it does not serve this model as we run it."""
        from posestream.engines.triton_models import triton_tensor_name

        meta = self._client.get_model_metadata(self.model_name, as_json=True, client_timeout=self.timeout_s)

        def match(kind: str, ours: Sequence[Any], theirs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
            names = [t["name"] for t in theirs]
            mapping = {}
            for tensor in ours:
                if tensor.name in names:
                    mapping[tensor.name] = tensor.name
                elif triton_tensor_name(tensor.name) in names:
                    mapping[tensor.name] = triton_tensor_name(tensor.name)
                else:
                    raise TritonError(f"triton server {self.url}: model {self.model_name} has no {kind} "
                                      f"{tensor.name!r} (it has {', '.join(names) or 'none'}); is it serving "
                                      f"another file under this name?")
            return mapping

        return (match("input", self._inputs, meta.get("inputs", [])),
                match("output", self._outputs, meta.get("outputs", [])))

    def _remote(self, names: Sequence[str], feeds: Mapping[str, np.ndarray], attempts: int) -> list[np.ndarray]:
        grpc = self._grpc
        delay = self.backoff_s
        for attempt in range(attempts):
            try:
                if self._remote_names is None:
                    self._remote_names = self._resolve()
                ins, outs = self._remote_names
                inputs = []
                for name, array in feeds.items():
                    array = np.ascontiguousarray(array)
                    tensor = grpc.InferInput(ins[name], list(array.shape), self._to_triton_dtype(array.dtype))
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
                wanted = [grpc.InferRequestedOutput(outs[n]) for n in names]
                result = self._client.infer(self.model_name, inputs, outputs=wanted, client_timeout=self.timeout_s)
                return [result.as_numpy(outs[n]) for n in names]
            except TritonError:
                raise
            except Exception as exc:
                if not is_transient(exc) or attempt == attempts - 1:
                    raise
                with self._lock:
                    self._counts["retries"] += 1
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _fall_back(self, exc: BaseException) -> None:
        message = first_line(exc)
        with self._lock:
            self.last_error = message
            self._counts["failed_calls"] += 1
            self._remote_names = None  # a restarted server may serve other files: look again
            # a new outage: the server was in use, or the session opened without it
            was_on = self._on_server or self._counts["fallbacks"] == 0
            if was_on:
                self._counts["fallbacks"] += 1
            self._on_server = False
            self._next_probe = time.monotonic() + self.probe_s
        if was_on:
            log.warning("%s %s: Triton server at %s unreachable (%s); running it locally, trying the server "
                        "again every %.0f s", self.what, self.model_name, self.url, message, self.probe_s)

    # -- reports
    @property
    def on_server(self) -> bool:
        return self._on_server

    def stats(self) -> dict[str, Any]:
        """Calls on the server and on the local session, retries, fall-backs to the local session
        and returns to the server, since the session opened."""
        with self._lock:
            return {**self._counts, "on_server": self._on_server, "last_error": self.last_error}

    def info(self) -> dict[str, Any]:
        from posestream.engines.backend import session_info

        return {"backend": "triton", "url": self.url, "model": self.model_name, "timeout_s": self.timeout_s,
                "retries": self.retries, "local": session_info(self.local), **self.stats()}

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a client of a dead server may raise; nothing to keep
            pass


__all__ = ["TritonSession", "TritonError", "parse_triton_url", "is_transient", "DEFAULT_GRPC_PORT",
           "DEFAULT_TIMEOUT_S", "DEFAULT_RETRIES", "DEFAULT_BACKOFF_S", "DEFAULT_PROBE_S"]
