"""Action engines on a CUDA GPU: ``torch-cuda`` (PyTorch, fp16/bf16, CUDA graphs) and
``tensorrt`` (a TensorRT 10 engine built from our ONNX export, cached on disk).

Both are :class:`~posestream.engines.action.ActionEngine` s: ``predict(volumes)`` takes numpy
(or torch) ``[N, K, T, H, W]`` and returns numpy logits, as every engine does. On top of that
they keep everything on the GPU when asked:

- ``predict_torch(x)``: a CUDA tensor in, float32 logits ``[N, classes]`` as a CUDA tensor out,
  queued on PyTorch's current stream (nothing is copied to the host, nothing synchronizes);
- ``input_buffer(n)``: the engine's own input tensor for a batch of ``n`` (``input_dtype``,
  C-contiguous ``[n, K, T, H, W]``); :class:`~posestream.engines.raster_cuda.CudaRasterizer`
  writes volumes straight into it (``raster(kp, out=engine.input_buffer(n))``) and
  ``predict_torch`` on that same tensor then copies nothing at all.

:class:`GpuBatchRasterizer` wires the two for the realtime batcher: a drop-in for its CPU
``Rasterizer`` that fills the engine's input tensor on the GPU, after which the batcher's
unchanged ``engine.predict(volumes)`` copies nothing but ``N x classes`` logits back.

Agreement with ``torch`` fp32 (the CPU reference), on the same volumes: fp32 within 1e-4 of the
logit range (TF32 is off for fp32 unless ``tf32=True``); fp16 within 1e-2 and bf16 within 5e-2
(8 mantissa bits) of the logit range (``max |got - ref| <= tol * max(1, max |ref|)``) with the same top-1
wherever the reference's top two logits are further apart than that. ``tests/test_gpu.py``
checks these on a GPU.

The realtime batcher (posestream.realtime.batcher.ActionBatcher) uses the GPU path with one
change: where it builds its CPU ``Rasterizer``, it takes ``gpu_batch_rasterizer(engine)`` when
that is not None::

    self.rasterizer = gpu_batch_rasterizer(engine) or Rasterizer(size, size, sigma=..., limbs=...)

Its ``_classify`` stays as it is: ``volumes = self.rasterizer(kp, sc)`` is then the engine's own
CUDA input tensor, filled by the kernel, and ``self.engine.predict(volumes)`` classifies it in
place and returns numpy logits (``max_batch`` of the batcher <= the engine's ``max_batch``
keeps every batch in the engine's buffers). Done by hand, the same is::

    raster = CudaRasterizer(card.size, card.size, card.sigma, limbs, dtype=engine.input_dtype)
    buffer = engine.input_buffer(n)                  # [n, K, T, H, W] CUDA tensor, engine dtype
    raster(keypoints_xy_score, out=buffer)           # [n, M, T, V, 3] numpy or CUDA tensor
    logits = engine.predict_torch(buffer)            # CUDA float32 [n, classes], same stream

Fallbacks (:func:`make_gpu_engine`, reached through ``make_engine("torch-cuda" | "tensorrt",
path)``): without a usable CUDA device every GPU kind runs the best CPU engine for the file
(what ``auto`` picks) with a logged notice; ``tensorrt`` without the ``tensorrt`` package
falls back, with one notice naming what is missing, to ``torch-cuda`` on the checkpoint (given
directly, or found beside the ONNX file with the same stem), else to the ``onnx`` engine
(ONNX Runtime's CUDAExecutionProvider when present, else its CPU). Nothing here crashes for
want of a GPU; importing this module needs neither CUDA nor TensorRT.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from posestream.engines.action import (
    GPU_ENGINE_KINDS,
    ActionEngine,
    EngineError,
    OnnxEngine,
    TorchEngine,
    _as_float32,
    _is_rgbpose,
    _load_checkpoint,
    _looks_like_onnx,
    _require_file,
    _torch_num_classes,
    card_from_metadata,
)
from posestream.errors import first_line
from posestream.files import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from posestream.engines.card import ModelCard

log = logging.getLogger(__name__)

__all__ = ["GPU_ENGINE_KINDS", "GpuUnavailableError", "TorchCudaEngine", "TensorRTEngine", "GpuBatchRasterizer",
           "gpu_batch_rasterizer", "make_gpu_engine", "gpu_unavailable_reason", "tensorrt_unavailable_reason",
           "batch_buckets", "default_tensorrt_cache_dir", "tensorrt_cache_key", "PRECISION_TOLERANCE"]

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: Stated agreement with torch fp32 on the logits: max |got - ref| <= tol * max(1, max |ref|).
PRECISION_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


class GpuUnavailableError(EngineError, RuntimeError):
    """A GPU engine cannot run here (no CUDA device, or TensorRT missing); one line."""


# ----------------------------------------------------------------------------------------------
# What this machine has


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """Why PyTorch cannot run on a CUDA device here (one line), or None when it can."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    try:
        if torch.cuda.is_available():
            return None
    except Exception as exc:  # a broken driver install
        return f"CUDA initialization failed ({first_line(exc)})"
    build = torch.version.cuda
    return f"PyTorch {torch.__version__} sees no CUDA device" + ("" if build else " (a CPU-only build)")


@functools.lru_cache(maxsize=1)
def tensorrt_unavailable_reason() -> str | None:
    """Why ``import tensorrt`` fails here (one line), or None when it works."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return (f"TensorRT is not installed ({first_line(exc)}); install the wheel for the CUDA major version, "
                "e.g. pip install tensorrt-cu13 (or tensorrt-cu12)")
    return None


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes CUDA graphs are captured for: powers of two below ``max_batch``, and it.
    A batch runs in the smallest bucket that holds it (rows past the batch are ignored)."""
    sizes = {max_batch}
    b = 1
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return tuple(sorted(sizes))


def _device_index(device: Any) -> int:
    import torch

    if isinstance(device, torch.device):
        index = device.index if device.index is not None else torch.cuda.current_device()
    elif isinstance(device, str):
        d = torch.device(device)
        if d.type != "cuda":
            raise EngineError(f"a GPU engine needs a CUDA device, got {device!r}")
        index = d.index if d.index is not None else torch.cuda.current_device()
    else:
        index = int(device)
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise GpuUnavailableError(f"CUDA device {index} does not exist ({count} device(s) here)")
    return index


def _torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _check_precision(precision: str, allowed: Sequence[str] = tuple(PRECISIONS)) -> str:
    p = str(precision).strip().lower()
    if p not in allowed:
        raise EngineError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    return p


def _check_max_batch(max_batch: int) -> int:
    if int(max_batch) != max_batch or max_batch < 1:
        raise EngineError(f"max_batch must be a positive integer, got {max_batch!r}")
    return int(max_batch)


class _StagingBuffer:
    """A reused pinned host buffer for numpy -> GPU copies. The copy is asynchronous; before the
    buffer is overwritten, the event recorded after the previous copy is waited for."""

    def __init__(self, device):
        import torch

        self.device = device
        self.buffer: "torch.Tensor | None" = None
        self.event = torch.cuda.Event()
        self.used = False

    def upload(self, arr: np.ndarray) -> "torch.Tensor":
        import torch

        if arr.size == 0:
            return torch.empty(arr.shape, dtype=torch.float32, device=self.device)
        if self.buffer is None or self.buffer.numel() < arr.size:
            self.buffer = torch.empty(arr.size, dtype=torch.float32, pin_memory=True)
        elif self.used:
            self.event.synchronize()
        host = self.buffer[:arr.size].view(arr.shape)
        host.numpy()[...] = arr
        out = host.to(self.device, non_blocking=True)
        self.event.record(torch.cuda.current_stream(self.device))
        self.used = True
        return out


# ----------------------------------------------------------------------------------------------
# torch-cuda


class _Graph:
    __slots__ = ("graph", "static_in", "static_out")

    def __init__(self, graph, static_in, static_out):
        self.graph, self.static_in, self.static_out = graph, static_in, static_out


class _GpuEngine(ActionEngine):
    """What both GPU engines share: numpy (or CPU tensor) input goes up through the engine's
    pinned staging buffer, CUDA tensors are used as they are, and ``predict_torch`` (each
    engine's own) runs the batch on the GPU."""

    def predict(self, volumes) -> np.ndarray:
        import torch

        self._check_batch(volumes)
        if isinstance(volumes, torch.Tensor) and volumes.is_cuda:
            x = volumes
        else:
            if isinstance(volumes, torch.Tensor):
                volumes = volumes.detach().numpy()
            x = self._staging.upload(_as_float32(volumes))
        return self.predict_torch(x).cpu().numpy()


class TorchCudaEngine(_GpuEngine):
    """A posestream model in PyTorch on a CUDA device, the no-TensorRT GPU path.

    ``model``: a posestream checkpoint path or an ``nn.Module`` (with ``card`` to say how to
    feed it; the caller's module is copied, never changed). ``precision``: ``"fp16"``
    (default), ``"bf16"`` (Ampere or newer) or ``"fp32"`` (TF32 off unless ``tf32=True``);
    weights are cast to it and the input tensor has that dtype (``input_dtype``).
    ``channels_last_3d``: run the network in that memory format (the input buffer stays
    plain NCDHW; the conversion is the graph's first kernel). ``cuda_graphs``: capture one CUDA
    graph per batch bucket (:func:`batch_buckets` of ``max_batch``: 1, 2, 4, ... max_batch) on
    first use (static input/output tensors; three warm-up runs on a side stream before the
    capture, as PyTorch's CUDA-graph docs do; the graphs share one memory pool, which is safe
    here because they replay one at a time on one stream, each graph's output is copied out
    right after its replay, and the static inputs are allocated outside the pool); a batch runs in the smallest bucket that holds
    it, larger batches in chunks of ``max_batch``. ``cudnn_benchmark``: let cuDNN time its
    algorithms during warm-up. numpy input is copied up through a reused pinned buffer.

    Agreement with torch fp32: see :data:`PRECISION_TOLERANCE` (fp16: 1e-2 of the logit range,
    same top-1). One caller at a time (a lock serializes calls: graphs have static buffers).
    """

    name = "torch-cuda"

    def __init__(self, model: "torch.nn.Module | str | os.PathLike", card: "ModelCard | None" = None, *,
                 precision: str = "fp16", channels_last_3d: bool = True, cuda_graphs: bool = True,
                 max_batch: int = 32, device: Any = 0, source: str | None = None, tf32: bool = False,
                 cudnn_benchmark: bool = True):
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise GpuUnavailableError(f"the torch-cuda engine needs a CUDA GPU: {reason}")
        import torch

        precision = _check_precision(precision)
        max_batch = _check_max_batch(max_batch)
        index = _device_index(device)
        if isinstance(model, (str, os.PathLike)):
            source = os.fspath(model)
            _require_file(source)
            if _looks_like_onnx(source):
                raise EngineError(f"{source}: the torch-cuda engine needs a posestream checkpoint, this is an ONNX "
                                  "model (use the tensorrt or onnx engine)")
            model, card = _load_checkpoint(source)
            own_model = True
        else:
            own_model = False
        source = source or "<module>"
        if not isinstance(model, torch.nn.Module):
            raise EngineError(f"TorchCudaEngine needs an nn.Module or a checkpoint path, got {type(model).__name__}")
        if _is_rgbpose(model, card):
            raise EngineError(f"{source}: RGBPose-Conv3D also needs RGB frames; the action engines serve "
                              "pose-only models")
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise EngineError(f"bf16 needs an Ampere or newer GPU; {torch.cuda.get_device_name(index)} has none "
                              "(use fp16)")
        if card is not None:
            input_shape: tuple = (card.in_channels, card.clip_len, card.size, card.size)
            num_classes = card.num_classes
        else:
            input_shape = (getattr(model, "in_channels", None), None, None, None)
            num_classes = _torch_num_classes(model)
        super().__init__(card, input_shape, num_classes, None, source)
        self.precision = precision
        self.device_index = index
        self.torch_device = torch.device("cuda", index)
        self.device = str(self.torch_device)
        self.input_dtype = _torch_dtype(precision)
        self.channels_last_3d = bool(channels_last_3d)
        self.cuda_graphs = bool(cuda_graphs)
        self.max_batch = max_batch
        self.buckets = batch_buckets(max_batch) if self.cuda_graphs else (max_batch,)
        self.tf32 = bool(tf32)
        self.cudnn_benchmark = bool(cudnn_benchmark)
        if not own_model:
            model = copy.deepcopy(model)
        model = model.to(device=self.torch_device, dtype=self.input_dtype).eval()
        if self.channels_last_3d:
            model = model.to(memory_format=torch.channels_last_3d)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self._graphs: dict[tuple, _Graph] = {}
        self._buffers: dict[tuple, "torch.Tensor"] = {}   # input buffers of the eager path
        self._pool = None
        self._lock = threading.RLock()
        self._staging = _StagingBuffer(self.torch_device)
        self.captures = 0          # graphs captured so far
        self.capture_seconds = 0.0

    # ------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        info = super().info()
        import torch

        info.update(gpu=torch.cuda.get_device_name(self.device_index), cuda_graphs=self.cuda_graphs,
                    channels_last_3d=self.channels_last_3d, max_batch=self.max_batch,
                    graphs_captured=self.captures, input_dtype=str(self.input_dtype).replace("torch.", ""))
        return info

    def _check_batch(self, volumes):
        shape = tuple(volumes.shape) if hasattr(volumes, "shape") else np.shape(volumes)
        k = self.input_shape[0]
        if len(shape) != 5 or (k is not None and shape[1] != k):
            raise EngineError(f"{self.name} engine ({self.source}): expected volumes [N, {k}, T, H, W], "
                              f"got {list(shape)}")
        if shape[0] == 0:
            raise EngineError(f"{self.name} engine ({self.source}): empty batch")
        return volumes

    def _volume_shape(self, shape: Sequence[int] | None) -> tuple[int, int, int, int]:
        if shape is None:
            if any(d is None for d in self.input_shape):
                raise EngineError(f"{self.name} engine ({self.source}): no model card, so pass the volume shape "
                                  "(K, T, H, W)")
            shape = self.input_shape
        return tuple(int(d) for d in shape)  # type: ignore[return-value]

    @contextlib.contextmanager
    def _backend_flags(self):
        """cuDNN settings for this engine's convolutions (restored afterwards)."""
        import torch

        cudnn = torch.backends.cudnn
        saved = (cudnn.benchmark, cudnn.allow_tf32)
        cudnn.benchmark = self.cudnn_benchmark
        if self.precision == "fp32":
            cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            cudnn.benchmark, cudnn.allow_tf32 = saved

    def _forward(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        if self.channels_last_3d:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.model(x)

    def _bucket(self, n: int) -> int:
        for b in self.buckets:
            if b >= n:
                return b
        return self.max_batch

    def _graph(self, bucket: int, shape: tuple[int, int, int, int]) -> _Graph:
        """The captured graph for this bucket and volume shape (captured on first use)."""
        key = (bucket, *shape)
        g = self._graphs.get(key)
        if g is not None:
            return g
        import torch

        started = time.perf_counter()
        with torch.cuda.device(self.device_index), torch.no_grad(), self._backend_flags():
            static_in = torch.zeros((bucket, *shape), dtype=self.input_dtype, device=self.torch_device)
            current = torch.cuda.current_stream(self.torch_device)
            side = torch.cuda.Stream(self.torch_device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN autotuning, lazy inits, allocator
                    self._forward(static_in)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA calls from other threads (a pose model, another engine) may go on.
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                static_out = self._forward(static_in)
            if self._pool is None:
                self._pool = graph.pool()
        g = _Graph(graph, static_in, static_out)
        self._graphs[key] = g
        self.captures += 1
        self.capture_seconds += time.perf_counter() - started
        log.debug("%s: captured a CUDA graph for batch %d x %s in %.2f s", self.source, bucket, shape,
                  time.perf_counter() - started)
        return g

    def prepare(self, batches: Sequence[int] | None = None, shape: Sequence[int] | None = None) -> None:
        """Capture the CUDA graphs (or autotune the eager path) for these batch sizes now (default:
        every bucket), so that no later call pays for it."""
        import torch

        shape = self._volume_shape(shape)
        with self._lock:
            for b in sorted({self._bucket(int(n)) for n in (batches or self.buckets)}):
                if self.cuda_graphs:
                    self._graph(b, shape)
                else:
                    with torch.no_grad(), self._backend_flags():
                        self._forward(self.input_buffer(b, shape))
        torch.cuda.synchronize(self.torch_device)

    def warmup(self, batch: int = 1) -> None:
        self.prepare([batch])

    def input_buffer(self, batch: int, shape: Sequence[int] | None = None) -> "torch.Tensor":
        """The engine's input tensor for a batch of ``batch`` volumes (``[batch, K, T, H, W]``,
        ``input_dtype``, C-contiguous, on the engine's device): write volumes into it (e.g.
        ``CudaRasterizer(..., out=)``) and pass it to :meth:`predict_torch`, which then copies
        nothing. It is reused by later calls of the same bucket: fill it, then predict, before
        asking for another. ``shape``: ``(K, T, H, W)``, needed only without a model card."""
        import torch

        if not 1 <= int(batch) <= self.max_batch:
            raise EngineError(f"{self.name} engine: input_buffer batch must be 1..{self.max_batch}, got {batch}")
        shape = self._volume_shape(shape)
        bucket = self._bucket(int(batch))
        with self._lock:
            if self.cuda_graphs:
                return self._graph(bucket, shape).static_in[:batch]
            key = (bucket, *shape)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = torch.zeros((bucket, *shape), dtype=self.input_dtype, device=self.torch_device)
            return buf[:batch]

    def predict_torch(self, x: "torch.Tensor") -> "torch.Tensor":
        """CUDA (or CPU) tensor ``[N, K, T, H, W]`` -> float32 logits ``[N, classes]`` on the GPU,
        queued on the current stream (a new tensor, not overwritten by later calls)."""
        import torch

        self._check_batch(x)
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(_as_float32(x))
        if x.device != self.torch_device:
            if x.device.type == "cpu":
                x = self._staging.upload(_as_float32(x.detach().numpy()))
            else:
                x = x.to(self.torch_device)
        outs = [self._run(x[i:i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _run(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        n = int(x.shape[0])
        shape = tuple(int(d) for d in x.shape[1:])
        with self._lock, torch.cuda.device(self.device_index):
            if not self.cuda_graphs:
                with torch.no_grad(), self._backend_flags():
                    return self._forward(x.to(self.input_dtype)).to(torch.float32)
            g = self._graph(self._bucket(n), shape)
            if not (x.data_ptr() == g.static_in.data_ptr() and x.dtype == g.static_in.dtype and x.is_contiguous()):
                g.static_in[:n].copy_(x)   # casts to the engine's dtype on the GPU
            g.graph.replay()
            return g.static_out[:n].to(torch.float32, copy=True)


# ----------------------------------------------------------------------------------------------
# tensorrt


def default_tensorrt_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/posestream/tensorrt`` (``~/.cache/posestream/tensorrt`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "posestream" / "tensorrt"


def tensorrt_cache_key(onnx_bytes: bytes, *, trt_version: str, gpu_name: str, precision: str, max_batch: int,
                       opt_batch: int, compute_capability: Sequence[int] = ()) -> tuple[str, dict[str, Any]]:
    """The engine cache key (sha256 hex) and the fields it hashes: the ONNX file's sha256, the
    TensorRT version, the GPU's name (and compute capability), precision and batch profile. Any
    change to one of them builds a new engine."""
    fields = {"onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "tensorrt": str(trt_version),
              "gpu": str(gpu_name), "compute_capability": list(compute_capability), "precision": precision,
              "max_batch": int(max_batch), "opt_batch": int(opt_batch)}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return key, fields


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


_TRT_LOGGER = None


def _trt_logger(trt):
    global _TRT_LOGGER
    if _TRT_LOGGER is None:  # one logger per process, as TensorRT asks
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


def _onnx_io(path: str) -> tuple[list[tuple[str, list[int | None]]], list[str], dict[str, str]]:
    """Graph inputs (name, dims; None for a free dim), output names and metadata of an ONNX file."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise EngineError(f"{path}: not an ONNX model ({first_line(exc)})") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        inputs.append((value.name, dims))
    outputs = [o.name for o in model.graph.output]
    return inputs, outputs, {p.key: p.value for p in model.metadata_props}


class TensorRTEngine(_GpuEngine):
    """A TensorRT engine built from a posestream ONNX export (TensorRT 10 Python API).

    ``onnx_path``: the ``.onnx`` file (its metadata holds the model card). ``precision``:
    ``"fp16"`` (default; ``BuilderFlag.FP16``), ``"bf16"`` or ``"fp32"``; I/O tensors stay
    float32 as in the ONNX file (``input_dtype``). ``max_batch``: the optimization profile
    covers batches 1..max_batch (optimum at ``opt_batch``, default max_batch // 2, at least 1;
    a fixed-batch export gets that batch only). ``cache_dir`` (default
    :func:`default_tensorrt_cache_dir`): serialized engines, named by
    :func:`tensorrt_cache_key`, and a timing cache per GPU and TensorRT version; both are
    written atomically, so concurrent builders never see half a file. ``workspace_gb``: the
    builder's workspace pool. ``rebuild``: ignore a cached engine.

    Runs with tensor-name based I/O (``set_input_shape``, ``set_tensor_address``,
    ``execute_async_v3``) on PyTorch's current stream, with torch CUDA tensors as input and
    output buffers: :meth:`predict_torch` and :meth:`input_buffer` keep the volumes on the GPU.
    Agreement with torch fp32: :data:`PRECISION_TOLERANCE` (fp16: 1e-2 of the logit range, same
    top-1). ``cache_hit`` says whether the engine came from the cache; ``build_seconds`` how
    long a build took.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str | os.PathLike, *, precision: str = "fp16", max_batch: int = 32,
                 cache_dir: str | os.PathLike | None = None, workspace_gb: float = 4, device: Any = 0,
                 opt_batch: int | None = None, rebuild: bool = False):
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise GpuUnavailableError(f"the tensorrt engine needs a CUDA GPU: {reason}")
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise GpuUnavailableError(f"the tensorrt engine cannot run: {reason}")
        import tensorrt as trt
        import torch

        source = os.fspath(onnx_path)
        _require_file(source)
        if not _looks_like_onnx(source):
            raise EngineError(f"{source}: the tensorrt engine builds from an ONNX export; export the checkpoint "
                              "first (posestream export, or posestream.train.export.export_onnx)")
        precision = _check_precision(precision)
        max_batch = _check_max_batch(max_batch)
        if not float(workspace_gb) > 0:
            raise EngineError(f"workspace_gb must be positive, got {workspace_gb!r}")
        index = _device_index(device)
        inputs, outputs, props = _onnx_io(source)
        card = card_from_metadata(props, source)
        if len(inputs) != 1:
            raise EngineError(f"{source}: the model takes {len(inputs)} inputs ({', '.join(n for n, _ in inputs)}); "
                              "the action engines feed one heatmap volume")
        input_name, dims = inputs[0]
        if len(dims) != 5 or any(d is None for d in dims[1:]):
            raise EngineError(f"{source}: input {input_name!r} has shape {dims}; TensorRT needs [N, K, T, H, W] "
                              "with K, T, H, W fixed")
        fixed_batch = dims[0]
        if fixed_batch is not None:
            max_batch = opt = min_batch = int(fixed_batch)
        else:
            min_batch = 1
            opt = int(opt_batch) if opt_batch is not None else max(1, max_batch // 2)
            if not 1 <= opt <= max_batch:
                raise EngineError(f"opt_batch must be in 1..{max_batch}, got {opt_batch}")
        if card is not None:
            num_classes = card.num_classes
        else:
            num_classes = -1  # read from the engine's output shape below
        flag_name = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
        if flag_name is not None and not hasattr(trt.BuilderFlag, flag_name):
            log.warning("%s: TensorRT %s has no BuilderFlag.%s (weak typing was removed in TensorRT 11); "
                        "building an fp32 engine", source, trt.__version__, flag_name)
            precision = "fp32"
        super().__init__(card, dims[1:], max(num_classes, 1), None, source)
        self.precision = precision
        self.device_index = index
        self.torch_device = torch.device("cuda", index)
        self.device = str(self.torch_device)
        self.max_batch, self.min_batch, self.opt_batch = max_batch, min_batch, opt
        self.fixed_batch = fixed_batch
        self.input_name = input_name
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_tensorrt_cache_dir()
        self.workspace_bytes = int(float(workspace_gb) * (1 << 30))
        self._trt = trt
        self._lock = threading.RLock()
        self._staging = _StagingBuffer(self.torch_device)
        self._buffer: "torch.Tensor | None" = None

        onnx_bytes = Path(source).read_bytes()
        gpu_name = torch.cuda.get_device_name(index)
        capability = torch.cuda.get_device_capability(index)
        self.cache_key, self.cache_fields = tensorrt_cache_key(
            onnx_bytes, trt_version=trt.__version__, gpu_name=gpu_name, precision=precision,
            max_batch=max_batch, opt_batch=opt, compute_capability=capability)
        stem = _slug(Path(source).stem)
        self.engine_path = self.cache_dir / f"{stem}.{precision}.b{max_batch}.{self.cache_key[:16]}.engine"
        self.timing_cache_path = self.cache_dir / f"timing.{_slug(gpu_name)}.sm{capability[0]}{capability[1]}.trt{trt.__version__}.cache"
        self.cache_hit = False
        self.build_seconds = 0.0

        with torch.cuda.device(index):
            torch.cuda.init()
            runtime = trt.Runtime(_trt_logger(trt))
            engine = None
            if self.engine_path.is_file() and not rebuild:
                engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
                if engine is None:
                    log.warning("%s: the cached TensorRT engine %s does not load; rebuilding", source, self.engine_path)
                else:
                    self.cache_hit = True
            if engine is None:
                data = self._build(source, dims[1:])
                engine = runtime.deserialize_cuda_engine(data)
                if engine is None:
                    raise EngineError(f"{source}: TensorRT built an engine it cannot load")
            self._runtime = runtime
            self.engine = engine
            self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"{source}: TensorRT could not create an execution context (out of GPU memory?)")

        self._io: dict[str, tuple[Any, "torch.dtype"]] = {}
        self.output_names: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            self._io[name] = (mode, _trt_to_torch_dtype(trt, engine.get_tensor_dtype(name)))
            if mode == trt.TensorIOMode.OUTPUT:
                self.output_names.append(name)
        if input_name not in self._io:
            raise EngineError(f"{source}: the TensorRT engine has no input {input_name!r}")
        self.output_name = "logits" if "logits" in self.output_names else (outputs[0] if outputs else self.output_names[0])
        self.input_dtype = self._io[input_name][1]
        if num_classes < 0:
            out_shape = tuple(engine.get_tensor_shape(self.output_name))
            if len(out_shape) != 2 or out_shape[1] < 1:
                raise EngineError(f"{source}: cannot tell the number of classes from output shape {out_shape}")
            self.num_classes = int(out_shape[1])

    # ------------------------------------------------------------------------------------------

    def _build(self, source: str, volume_dims: Sequence[int]) -> bytes:
        """Parse the ONNX file, build a serialized engine, write it (and the timing cache) to the cache."""
        trt = self._trt
        started = time.perf_counter()
        log.info("%s: building a TensorRT %s %s engine for batches %d..%d (takes a while; cached in %s)",
                 source, trt.__version__, self.precision, self.min_batch, self.max_batch, self.cache_dir)
        logger = _trt_logger(trt)
        builder = trt.Builder(logger)
        flags = 0
        if int(trt.__version__.split(".")[0]) < 10:  # TensorRT 8/9 need explicit batch; 10 ignores it
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(source):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown error"
            raise EngineError(f"{source}: TensorRT cannot parse the ONNX model ({first_line(Exception(errors))})")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        profile = builder.create_optimization_profile()
        dims = tuple(int(d) for d in volume_dims)
        profile.set_shape(self.input_name, (self.min_batch, *dims), (self.opt_batch, *dims), (self.max_batch, *dims))
        config.add_optimization_profile(profile)
        timing_bytes = b""
        if self.timing_cache_path.is_file():
            timing_bytes = self.timing_cache_path.read_bytes()
        timing_cache = config.create_timing_cache(timing_bytes)
        if not config.set_timing_cache(timing_cache, False):
            log.warning("%s: the timing cache %s does not fit this GPU/TensorRT; starting a new one", source,
                        self.timing_cache_path)
            timing_cache = config.create_timing_cache(b"")
            config.set_timing_cache(timing_cache, False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"{source}: TensorRT could not build an engine (see the TensorRT log above)")
        data = bytes(serialized)
        self.build_seconds = time.perf_counter() - started
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            timing = bytes(config.get_timing_cache().serialize())
            atomic_write(self.timing_cache_path, lambda f: f.write(timing))
            atomic_write(self.engine_path, lambda f: f.write(data))
            meta = dict(self.cache_fields, key=self.cache_key, source=os.path.abspath(source),
                        build_seconds=round(self.build_seconds, 1))
            atomic_write(self.engine_path.with_suffix(".json"),
                         lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))
        except OSError as exc:
            log.warning("%s: cannot cache the TensorRT engine in %s (%s); it will be rebuilt next time", source,
                        self.cache_dir, exc.strerror or exc)
        log.info("%s: TensorRT engine built in %.1f s -> %s", source, self.build_seconds, self.engine_path)
        return data

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(tensorrt=self._trt.__version__, engine_path=str(self.engine_path), cache_hit=self.cache_hit,
                    max_batch=self.max_batch, opt_batch=self.opt_batch, build_seconds=round(self.build_seconds, 1))
        return info

    def input_buffer(self, batch: int, shape: Sequence[int] | None = None) -> "torch.Tensor":
        """A reused input tensor ``[batch, K, T, H, W]`` (``input_dtype``) on the engine's device,
        for a rasterizer to write into before :meth:`predict_torch` (see TorchCudaEngine)."""
        import torch

        if not 1 <= int(batch) <= self.max_batch:
            raise EngineError(f"{self.name} engine: input_buffer batch must be 1..{self.max_batch}, got {batch}")
        with self._lock:
            if self._buffer is None:
                self._buffer = torch.zeros((self.max_batch, *self.input_shape), dtype=self.input_dtype,
                                           device=self.torch_device)
            return self._buffer[:batch]

    def predict_torch(self, x: "torch.Tensor") -> "torch.Tensor":
        """``[N, K, T, H, W]`` -> float32 logits ``[N, classes]`` on the GPU, on the current stream."""
        import torch

        self._check_batch(x)
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(_as_float32(x))
        if x.device != self.torch_device:
            x = (self._staging.upload(_as_float32(x.detach().numpy())) if x.device.type == "cpu"
                 else x.to(self.torch_device))
        outs = []
        step = self.max_batch
        for i in range(0, x.shape[0], step):
            part = x[i:i + step]
            if self.fixed_batch is not None and part.shape[0] != self.fixed_batch:
                raise EngineError(f"{self.name} engine ({self.source}): the model was exported for batches of "
                                  f"{self.fixed_batch}, got {part.shape[0]} volumes")
            outs.append(self._run(part))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _run(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        x = x.to(self.input_dtype).contiguous()
        ctx = self.context
        with self._lock, torch.cuda.device(self.device_index):
            if not ctx.set_input_shape(self.input_name, tuple(x.shape)):
                raise EngineError(f"{self.name} engine ({self.source}): TensorRT rejects input shape {list(x.shape)}")
            ctx.set_tensor_address(self.input_name, x.data_ptr())
            outputs = {}
            for name in self.output_names:
                dtype = self._io[name][1]
                out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device=self.torch_device)
                ctx.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            stream = torch.cuda.current_stream(self.torch_device)
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"{self.name} engine ({self.source}): TensorRT execution failed")
        return outputs[self.output_name].to(torch.float32)


def _trt_to_torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
    for name, tdtype in (("BF16", torch.bfloat16), ("INT64", torch.int64), ("UINT8", torch.uint8)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdtype
    if dtype not in table:
        raise EngineError(f"TensorRT tensor type {dtype} has no torch equivalent here")
    return table[dtype]


# ----------------------------------------------------------------------------------------------
# The batcher's GPU path


class GpuBatchRasterizer:
    """A drop-in for the batcher's :class:`~posestream.engines.raster.Rasterizer` in front of a
    GPU engine: ``(keypoints [N, M, T, V, 2], scores [N, M, T, V])`` numpy (on the model's grid)
    -> the engine's own input tensor ``engine.input_buffer(N)``, filled by the CUDA kernel
    (:class:`~posestream.engines.raster_cuda.CudaRasterizer` with the card's size, sigma, joints
    or limbs, in the engine's ``input_dtype``). ``engine.predict(that tensor)`` then runs without
    copying it: the only host-device traffic per batch is the keypoints up (through a pinned
    buffer) and ``N x classes`` logits down.

    ``synchronize``: wait for the kernel before returning, so that the caller's clock measures
    the rasterization (a fraction of a millisecond) and not just its launch. The returned tensor
    is reused by the next call of the same batch bucket: predict on it before rasterizing again.
    A batch above the engine's ``max_batch`` gets a new tensor (the engine runs it in chunks).
    """

    def __init__(self, engine: ActionEngine, *, synchronize: bool = True, threads: int = 256):
        from posestream.engines.raster_cuda import CudaRasterizer

        card = engine.card
        if card is None:
            raise EngineError(f"{engine.source}: no model card, so the volume geometry is unknown")
        if not (hasattr(engine, "predict_torch") and hasattr(engine, "input_buffer")):
            raise EngineError(f"the {engine.name} engine does not run on the GPU")
        self.engine = engine
        limbs = None if card.heatmap == "joints" else card.limbs
        self.raster = CudaRasterizer(card.size, card.size, sigma=float(card.sigma), limbs=limbs,
                                     dtype=engine.input_dtype, device=engine.device_index, threads=threads)
        self.max_batch = int(getattr(engine, "max_batch", 32))
        self.synchronize = bool(synchronize)

    def __call__(self, keypoints: np.ndarray, scores: np.ndarray) -> "torch.Tensor":
        import torch

        kp = np.asarray(keypoints, np.float32)
        if kp.ndim != 5 or kp.shape[-1] != 2:
            raise ValueError(f"keypoints must be [N, M, T, V, 2], got shape {list(kp.shape)}")
        packed = np.concatenate([kp, np.asarray(scores, np.float32)[..., None]], axis=-1)
        n = packed.shape[0]
        shape = self.raster.output_shape(packed.shape)
        if 1 <= n <= self.max_batch and shape[1:] == tuple(self.engine.input_shape):
            volumes = self.raster(packed, out=self.engine.input_buffer(n))
        else:
            volumes = self.raster(packed)
        if self.synchronize:
            torch.cuda.current_stream(self.raster.device).synchronize()
        return volumes


def gpu_batch_rasterizer(engine: ActionEngine) -> GpuBatchRasterizer | None:
    """A :class:`GpuBatchRasterizer` for ``engine``, or None when the CPU rasterizer must be used:
    the engine is not a GPU engine, or the CUDA rasterizer cannot run (then with a logged notice:
    volumes are rasterized on the CPU and copied up by ``engine.predict``)."""
    if not (hasattr(engine, "predict_torch") and hasattr(engine, "input_buffer")) or engine.card is None:
        return None
    from posestream.engines.raster_cuda import CudaUnavailableError

    try:
        return GpuBatchRasterizer(engine)
    except CudaUnavailableError as exc:
        log.warning("%s; rasterizing on the CPU and copying volumes to the GPU", first_line(exc))
        return None


# ----------------------------------------------------------------------------------------------
# Choosing a GPU engine, with fallbacks


def _sibling_checkpoint(onnx_path: str) -> str | None:
    base = Path(onnx_path)
    for suffix in CHECKPOINT_SUFFIXES:
        candidate = base.with_suffix(suffix)
        if candidate.is_file() and not _looks_like_onnx(str(candidate)):
            return str(candidate)
    return None


def _cpu_engine(source: str, threads: int | None) -> ActionEngine:
    """The best CPU engine for the file (what ``make_engine("auto")`` picks)."""
    if _looks_like_onnx(source):
        return OnnxEngine(source, threads=threads, device="cpu")
    return TorchEngine(source, channels_last_3d=True, threads=threads)


_TORCH_OPTIONS = ("precision", "channels_last_3d", "cuda_graphs", "max_batch", "device", "tf32", "cudnn_benchmark")
_TRT_OPTIONS = ("precision", "max_batch", "cache_dir", "workspace_gb", "device", "opt_batch", "rebuild")


def make_gpu_engine(kind: str, source: str, *, threads: int | None = None, device: str = "auto",
                    options: Mapping[str, Any] | None = None) -> ActionEngine:
    """``torch-cuda`` or ``tensorrt`` for ``source``, with the fallbacks of the module docstring.

    ``device``: ``"auto"``/``"cuda"`` (or ``"cuda:N"``) run on the GPU; ``"cpu"`` asks for the
    CPU engine (logged). ``options``: keyword arguments of :class:`TorchCudaEngine` /
    :class:`TensorRTEngine` (``precision``, ``max_batch``, ``cache_dir``, ...); those the engine
    that finally runs does not take are ignored. ``threads`` applies to the CPU fallbacks.
    """
    kind = str(kind).strip().lower()
    if kind not in GPU_ENGINE_KINDS:
        raise EngineError(f"not a GPU engine kind: {kind!r} (GPU kinds: {', '.join(GPU_ENGINE_KINDS)})")
    options = dict(options or {})
    unknown = set(options) - set(_TORCH_OPTIONS) - set(_TRT_OPTIONS)
    if unknown:
        raise EngineError(f"unknown GPU engine option(s): {', '.join(sorted(unknown))}")
    device = str(device).strip().lower()
    if device.startswith("cuda:"):
        options.setdefault("device", int(device.split(":", 1)[1]))
    elif device not in ("auto", "cuda", "cpu"):
        raise EngineError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    is_onnx = _looks_like_onnx(source)

    def torch_options():
        return {k: v for k, v in options.items() if k in _TORCH_OPTIONS}

    def trt_options():
        return {k: v for k, v in options.items() if k in _TRT_OPTIONS}

    if kind == "torch-cuda" and is_onnx:
        raise EngineError(f"{source}: the torch-cuda engine needs a posestream checkpoint, this is an ONNX model "
                          "(use the tensorrt or onnx engine)")
    if device == "cpu":
        engine = _cpu_engine(source, threads)
        log.warning("%s engine: device cpu asked for; running the %s engine on the CPU instead", kind, engine.name)
        return engine
    reason = gpu_unavailable_reason()
    if reason is not None:
        engine = _cpu_engine(source, threads)
        log.warning("%s engine unavailable: %s; running the %s engine on the CPU instead", kind, reason, engine.name)
        return engine
    try:
        if kind == "torch-cuda":
            return TorchCudaEngine(source, **torch_options())
        trt_reason = tensorrt_unavailable_reason()
        if trt_reason is None:
            if not is_onnx:
                raise EngineError(f"{source}: the tensorrt engine builds from an ONNX export; export the checkpoint "
                                  "first (posestream export)")
            return TensorRTEngine(source, **trt_options())
        checkpoint = source if not is_onnx else _sibling_checkpoint(source)
        if checkpoint is not None:
            log.warning("tensorrt engine unavailable: %s; running torch-cuda on %s instead", trt_reason, checkpoint)
            return TorchCudaEngine(checkpoint, **torch_options())
        log.warning("tensorrt engine unavailable: %s; no posestream checkpoint beside %s for torch-cuda, so running "
                    "it in ONNX Runtime (CUDA if its build has it, else the CPU)", trt_reason, source)
        return OnnxEngine(source, threads=threads, device="auto")
    except GpuUnavailableError as exc:
        engine = _cpu_engine(source, threads)
        log.warning("%s; running the %s engine on the CPU instead", first_line(exc), engine.name)
        return engine
    except EngineError:
        raise
    except Exception as exc:  # CUDA out of memory, driver errors: degrade, never crash
        engine = _cpu_engine(source, threads)
        log.warning("%s engine failed to start on the GPU (%s: %s); running the %s engine on the CPU instead",
                    kind, type(exc).__name__, first_line(exc), engine.name)
        return engine
