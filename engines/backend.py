"""CPU runtimes for the ONNX networks: OpenVINO, with ONNX Runtime as the fallback.

The pose networks (MoveNet, BlazePose landmarks) and the action model are ONNX files. Each runs
in a *session* with ONNX Runtime's shape: ``session.run(output_names, feeds)`` -> list of numpy
arrays, ``session.get_inputs()`` / ``get_outputs()`` -> objects with ``.name`` and ``.shape``.
:func:`open_session` gives an :class:`OpenVinoSession` or an ``onnxruntime.InferenceSession``;
:func:`session_backend` says which.

Backends (``backend=``): ``auto`` (OpenVINO when it is installed, else ONNX Runtime),
``openvino``, ``onnx`` (ONNX Runtime). When OpenVINO is missing, or fails to read or compile a
model, the session is ONNX Runtime's, after one logged notice (never an exception).

Why OpenVINO: on an Intel Xeon with AVX-512/VNNI/AMX (2 cores, one thread, OpenVINO 2026.4 vs
ONNX Runtime 1.32, same ONNX files) it ran MoveNet MultiPose 384x512 in 87 ms vs 163,
BlazePose landmarks 14 vs 37 and X3D-s 13 vs 47 at batch 1, with logits within 1.5e-5 in
fp32. ``benchmarks/backends.py`` measures it side by side.

Settings of every OpenVINO compile, and why:

- ``INFERENCE_PRECISION_HINT`` is set explicitly (``f32`` by default): on a CPU with AMX
  OpenVINO's default is bf16, which moved X3D-s logits by 0.4. ``precision="bf16"`` is for
  callers that measure its accuracy (:func:`posestream.engines.action.precision_check`).
- ``INFERENCE_NUM_THREADS`` = ``threads`` (posestream's ``pose_threads`` / ``engine_threads``),
  ``PERFORMANCE_HINT=LATENCY`` and one stream: one request at a time, as the pipeline calls.
- ``ENABLE_CPU_PINNING=False``: the detector, landmark and action sessions run in different
  threads at the same time; pinned, several one-thread sessions can end up on one core.
- ``CACHE_DIR``: compiled models are cached (:func:`openvino_cache_dir`), so a restart skips
  most of the compile. An unusable cache folder gives one notice and compiles without a cache.
- A model with dynamic input sizes other than the batch (MoveNet: any H x W) is compiled for
  each input shape it is called with (at most :data:`MAX_STATIC_SHAPES`, the least recently
  used dropped): OpenVINO's CPU plugin ran MoveNet at 384x512 about 1.5x faster static than
  with dynamic H, W. It is also compiled once as it is when the session opens (and dropped),
  so that a model OpenVINO cannot compile falls back at open time, not at the first frame.
  A dynamic batch (the action model) stays dynamic.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from posestream.errors import first_line

log = logging.getLogger(__name__)

#: ``backend=`` values of :func:`open_session` (and ``--pose-backend``); ``triton`` runs the
#: network on a Triton server (:mod:`posestream.engines.triton`) with an ``auto`` local fall-back.
BACKENDS: tuple[str, ...] = ("auto", "openvino", "onnx", "triton")
#: What each precision is called in OpenVINO's INFERENCE_PRECISION_HINT.
OPENVINO_PRECISIONS: dict[str, str] = {"fp32": "f32", "bf16": "bf16"}
#: Environment variable naming the compiled-model cache folder ("off" for no cache).
CACHE_ENV = "POSESTREAM_OPENVINO_CACHE"
#: Input shapes compiled per model with dynamic sizes (a stream's frame size rarely changes).
MAX_STATIC_SHAPES = 4

_notices: set[str] = set()
_notices_lock = threading.Lock()

#: OpenVINO's compiled-model cache switches the whole process to the "C" locale while it reads or
#: writes a blob, then puts back the locale it found (setlocale: process-wide, not per thread).
#: Two compiles at once (two streams' pose networks opening together) interleave: the second
#: saves the first's "C" and restores it last, leaving the process in "C" for good, after which
#: Python read every text file as ASCII. OpenVINO's reads and compiles take turns behind this
#: lock, and the locale found before each is put back after it.
_OPENVINO_BUILD_LOCK = threading.Lock()


def openvino_build(fn, *args: Any) -> Any:
    """``fn(*args)`` (an OpenVINO ``read_model`` / ``compile_model``) one at a time in the
    process, with the process locale as it was before (see :data:`_OPENVINO_BUILD_LOCK`)."""
    import locale

    with _OPENVINO_BUILD_LOCK:
        saved = locale.setlocale(locale.LC_ALL)
        try:
            return fn(*args)
        finally:
            if locale.setlocale(locale.LC_ALL) != saved:
                locale.setlocale(locale.LC_ALL, saved)


class BackendError(ValueError):
    """A one-line, user-facing error about a backend choice."""


def notice_once(key: str, message: str, *args: Any) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _notices_lock:
        if key in _notices:
            return
        _notices.add(key)
    log.warning(message, *args)


def check_backend(backend: str) -> str:
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return name


#: What ``import openvino`` imports besides the runtime and posestream never uses: the model
#: conversion tools, whose import sends a usage event to Intel's telemetry (openvino-telemetry,
#: Google Analytics) from a worker thread, with no consent asked and no off switch short of a
#: file in the user's home. A camera box may be offline or must not phone home, and that thread
#: outlives a run. Marking the module absent makes openvino's ``__init__`` skip it (it catches the
#: ImportError); posestream reads ONNX files with ``Core.read_model``, which needs no conversion.
OPENVINO_SKIPPED_MODULES = ("openvino.tools.ovc",)


def openvino_module():
    """The ``openvino`` module, or None when it cannot be imported (one notice). Imported without
    the conversion tools (:data:`OPENVINO_SKIPPED_MODULES`), unless something imported them already."""
    import sys

    if "openvino" not in sys.modules:
        for name in OPENVINO_SKIPPED_MODULES:
            sys.modules.setdefault(name, None)  # None: "import X" raises ImportError
    try:
        import openvino
    except Exception as exc:  # ImportError, or a broken install raising something else
        notice_once("openvino-missing", "OpenVINO is not available (%s); the networks run in ONNX Runtime "
                    "(pip install openvino for the faster CPU runtime)", first_line(exc))
        return None
    return openvino


def openvino_available() -> bool:
    return openvino_module() is not None


def openvino_cache_dir() -> Path | None:
    """Where compiled OpenVINO models are cached: ``$POSESTREAM_OPENVINO_CACHE`` when set
    (``off`` or empty: no cache), else ``$XDG_CACHE_HOME/posestream/openvino``, else
    ``~/.cache/posestream/openvino``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        value = value.strip()
        return None if value.lower() in ("", "off", "none", "0") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "posestream" / "openvino"


def usable_cache_dir(path: Path | None) -> Path | None:
    """``path`` created if needed when a file can be written in it, else None (one notice)."""
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        notice_once(f"cache:{path}", "OpenVINO model cache %s is not writable (%s); compiling without a cache "
                    "(set %s to a writable folder, or to 'off')", path, first_line(exc), CACHE_ENV)
        return None
    return path


@dataclass(frozen=True)
class TensorInfo:
    """ONNX Runtime's NodeArg shape: a name and dims (int, or None where dynamic)."""

    name: str
    shape: list
    type: str = ""


class OpenVinoSession:
    """One ONNX file compiled by OpenVINO for the CPU, used like an ONNX Runtime session.

    One infer request per compiled shape: calls from several threads (an ONNX Runtime session
    allows them) take turns behind a lock instead of failing on a busy request. Outputs are
    copies, so a caller may keep them across calls.
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = 1, precision: str = "fp32",
                 cache_dir: Path | None | str = "default", static_shapes: bool = True) -> None:
        ov = openvino_module()
        if ov is None:
            raise RuntimeError("openvino is not installed")
        if precision not in OPENVINO_PRECISIONS:
            raise BackendError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
        self.path = Path(path)
        self.precision = precision
        self.threads = None if threads is None else max(1, int(threads))
        self.cache_dir = usable_cache_dir(openvino_cache_dir() if cache_dir == "default" else
                                          (None if cache_dir is None else Path(cache_dir)))
        self._core = ov.Core()
        self._model = openvino_build(self._core.read_model, os.fspath(self.path))
        self._inputs = [TensorInfo(p.any_name, _dims(p.get_partial_shape()), str(p.get_element_type()))
                        for p in self._model.inputs]
        self._outputs = [TensorInfo(p.any_name, _dims(p.get_partial_shape()), str(p.get_element_type()))
                         for p in self._model.outputs]
        # Only sizes past the batch make a per-shape compile worth it (see the module docstring).
        self._per_shape = static_shapes and any(None in i.shape[1:] for i in self._inputs)
        self._requests: "OrderedDict[tuple, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.loaded_from_cache: bool | None = None
        self.last_compiled: Any = None
        self.compiles = 0
        if not self._per_shape:
            self._requests[()] = self._compile(self._model, from_path=True)
        else:
            # Compile it once as it is (then drop it): a model OpenVINO cannot compile fails
            # here, where open_session falls back to ONNX Runtime, not at the first frame.
            self._compile(self._model, from_path=True)
            self.compiles = 0

    # -- ONNX Runtime's session shape
    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(feeds[i.name]) for i in self._inputs]
        with self._lock:
            return self._run(output_names, arrays)

    def _run(self, output_names: Sequence[str] | None, arrays: list[np.ndarray]) -> list[np.ndarray]:
        key = tuple(a.shape for a in arrays) if self._per_shape else ()
        request = self._requests.get(key)
        if request is None:
            request = self._compile_for(key)
        else:
            self._requests.move_to_end(key)
        results = request.infer(arrays)
        names = [o.name for o in self._outputs] if output_names is None else list(output_names)
        out = []
        for name in names:
            index = self._output_index(name)
            out.append(np.array(results[request.model_outputs[index]], copy=True))
        return out

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                               "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[self.precision],
                               "ENABLE_CPU_PINNING": False}
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = self.threads
        if self.cache_dir is not None:
            cfg["CACHE_DIR"] = os.fspath(self.cache_dir)
        return cfg

    def info(self) -> dict[str, Any]:
        openvino = openvino_module()
        return {"backend": "openvino", "openvino": openvino.__version__, "precision": self.precision,
                "threads": self.threads, "cache_dir": None if self.cache_dir is None else os.fspath(self.cache_dir),
                "loaded_from_cache": self.loaded_from_cache}

    # -- internals
    def _output_index(self, name: str) -> int:
        for i, o in enumerate(self._outputs):
            if o.name == name:
                return i
        raise KeyError(f"{self.path}: no output {name!r} (outputs: {', '.join(o.name for o in self._outputs)})")

    def _compile_for(self, key: tuple):
        model = self._model.clone()
        model.reshape({port: list(shape) for port, shape in zip(model.inputs, key)})
        request = self._compile(model, from_path=False)
        self._requests[key] = request
        while len(self._requests) > MAX_STATIC_SHAPES:
            self._requests.popitem(last=False)
        return request

    def _compile(self, model, from_path: bool):
        cfg = self.config()
        source = os.fspath(self.path) if from_path else model  # from the path, the cache skips reading too
        try:
            compiled = openvino_build(self._core.compile_model, source, "CPU", cfg)
        except Exception as exc:
            if "CACHE_DIR" not in cfg:
                raise
            notice_once(f"cache-compile:{self.cache_dir}", "OpenVINO could not use the model cache %s (%s); "
                        "compiling without it", self.cache_dir, first_line(exc))
            self.cache_dir = None
            compiled = openvino_build(self._core.compile_model, source, "CPU", self.config())
        self.compiles += 1
        self.last_compiled = compiled  # its properties say what OpenVINO actually set
        try:
            self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # an older OpenVINO without the property
            self.loaded_from_cache = None
        return _Request(compiled.create_infer_request(), list(compiled.outputs))


class _Request:
    """An infer request and the compiled model's output ports, in the model's output order."""

    __slots__ = ("request", "model_outputs")

    def __init__(self, request, outputs) -> None:
        self.request = request
        self.model_outputs = outputs

    def infer(self, arrays):
        return self.request.infer(arrays)


def _dims(partial_shape) -> list:
    return [d.get_length() if d.is_static else None for d in partial_shape]


def ort_session(path: str | os.PathLike, threads: int | None = 1, what: str = "model", error=ValueError):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (no spinning: the networks
    share the CPU). Problems are one-line ``error`` s."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        raise error("onnxruntime is not installed: pip install onnxruntime") from None
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise error(f"{os.fspath(path)}: cannot load {what}: {first_line(exc)}") from None


def open_session(path: str | os.PathLike, threads: int | None = 1, what: str = "model", backend: str = "auto",
                 precision: str = "fp32", error=ValueError, triton: Mapping[str, Any] | None = None):
    """A session for the ONNX file ``path`` on ``backend`` (see the module docstring): an
    :class:`OpenVinoSession`, or ONNX Runtime's (the fallback, after one notice, when OpenVINO
    is missing or cannot compile the file). A missing file is a one-line ``error``.

    ``backend="triton"``: a :class:`posestream.engines.triton.TritonSession` on the server
    ``triton["url"]`` (other keys: ``model``, the name on the server, by default the file's;
    ``timeout_s``, ``retries``, ``probe_s``), with an ``auto`` session of the file as its local
    fall-back."""
    backend = check_backend(backend)
    p = Path(path)
    if not p.is_file():
        raise error(f"{os.fspath(path)}: no such {what} file")
    if backend == "triton":
        from posestream.engines.triton import TritonError, TritonSession
        from posestream.engines.triton_models import triton_model_name

        options = dict(triton or {})
        url = options.pop("url", None)
        name = options.pop("model", None) or triton_model_name(p)
        local = open_session(p, threads, what, backend="auto", precision=precision, error=error)
        try:
            return TritonSession(url, name, local, what=what, **options)
        except TritonError as exc:
            raise error(str(exc)) from None
    if backend in ("auto", "openvino") and openvino_module() is not None:
        try:
            return OpenVinoSession(p, threads, precision=precision)
        except BackendError:
            raise
        except Exception as exc:
            notice_once(f"openvino-load:{p}", "OpenVINO could not load %s %s (%s); running it in ONNX Runtime",
                        what, p, first_line(exc))
    return ort_session(p, threads, what, error)


def session_backend(session: Any) -> str:
    """``"openvino"``, ``"onnxruntime"`` or ``"triton"``: what runs ``session``."""
    if isinstance(session, OpenVinoSession):
        return "openvino"
    return "triton" if getattr(session, "backend", None) == "triton" else "onnxruntime"


def session_info(session: Any) -> dict[str, Any]:
    """The backend of ``session`` and its settings, for engine info and benchmark reports."""
    if isinstance(session, OpenVinoSession) or getattr(session, "backend", None) == "triton":
        return session.info()
    import onnxruntime

    return {"backend": "onnxruntime", "onnxruntime": onnxruntime.__version__, "providers": session.get_providers()}


__all__ = ["BACKENDS", "OPENVINO_PRECISIONS", "CACHE_ENV", "MAX_STATIC_SHAPES", "BackendError", "OpenVinoSession",
           "TensorInfo", "open_session", "ort_session", "session_backend", "session_info", "openvino_available",
           "openvino_cache_dir", "usable_cache_dir", "notice_once"]
