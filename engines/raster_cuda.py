"""The CUDA rasterizer: a whole batch of skeleton windows -> heatmap volumes in one kernel launch.

    from posestream.engines.raster_cuda import CudaRasterizer, cuda_available

    raster = CudaRasterizer(56, 56, sigma=0.6, limbs=None, dtype="float16")
    volumes = raster(keypoints)            # [N, M, T, V, 3] (x, y, score) -> torch [N, K, T, H, W] on CUDA
    volumes = raster(kp, scores)           # or [N, M, T, V, 2] + [N, M, T, V]
    raster(keypoints, out=engine.input_buffer(n))   # straight into an action engine's input tensor

The kernel is the CUDA C source ``kernels/rasterize.cu`` (shipped with the package), compiled at
run time with NVRTC through CuPy's ``RawModule`` (CuPy caches the binary on disk, under
``~/.cupy/kernel_cache``; this module keeps the loaded module per device for the process). It
produces the same volumes as the CPU rasterizer (:mod:`posestream.engines.raster`, PYSKL's
``GeneratePoseTarget`` rules) within 1e-5 in fp32: every per-pixel and per-keypoint function
is ``__host__ __device__`` and the CPU test suite compiles the same file for the host and
checks it against :func:`posestream.engines.raster.rasterize_batch` (``tests/test_raster_cuda.py``).
fp16 and bf16 outputs are the fp32 values rounded to nearest even (within 1e-3 / 4e-3 of fp32).

Tensors are exchanged with PyTorch through DLPack (no copies) and the kernel runs on PyTorch's
current CUDA stream, so a rasterize followed by an engine call needs no synchronization and no
host round trip. Keypoints given as numpy arrays go up through a reused pinned buffer.

Importing this module needs neither CUDA nor CuPy; constructing a :class:`CudaRasterizer`
without them raises :class:`CudaUnavailableError` (a one-line ``RuntimeError`` saying what is
missing). :func:`cuda_available` says beforehand.
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from posestream.engines.raster import Limbs, _limb_pairs
from posestream.errors import first_line

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["CudaRasterizer", "CudaUnavailableError", "cuda_available", "cuda_unavailable_reason",
           "gbytes_per_volume", "kernel_scalars", "kernel_pairs", "KERNEL_PATH", "KERNEL_NAMES", "NVRTC_OPTIONS"]

#: The one CUDA C source of the kernel.
KERNEL_PATH = Path(__file__).resolve().parent / "kernels" / "rasterize.cu"
#: Output dtype -> extern "C" kernel name in KERNEL_PATH.
KERNEL_NAMES = {"float32": "posestream_rasterize_f32", "float16": "posestream_rasterize_f16",
                "bfloat16": "posestream_rasterize_bf16"}
#: NVRTC options. No fused multiply-add: numpy rounds every float32 product and sum on its own,
#: and the kernel repeats numpy's operations one for one (see the .cu file's header).
NVRTC_OPTIONS = ("-std=c++17", "--fmad=false")
DEFAULT_THREADS = 256   # threads per block (one block per [H, W] plane)
MAX_GRID = 1 << 20      # blocks per launch at most; the kernel strides over the remaining planes

_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "float": "float32",
                  "float16": "float16", "fp16": "float16", "half": "float16",
                  "bfloat16": "bfloat16", "bf16": "bfloat16"}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


class CudaUnavailableError(RuntimeError):
    """CUDA, PyTorch's CUDA build or CuPy is missing: the CUDA rasterizer cannot run here."""


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """Why the CUDA rasterizer cannot run on this machine (one line), or None when it can."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        build = torch.version.cuda
        return (f"PyTorch {torch.__version__} sees no CUDA device"
                + ("" if build else " (a CPU-only build)"))
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CuPy built for another CUDA major version
        return (f"CuPy is not importable ({first_line(exc)}); install the wheel matching the CUDA "
                "driver, e.g. pip install cupy-cuda13x (or cupy-cuda12x)")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as exc:
        return f"CuPy cannot reach the GPU ({first_line(exc)})"
    return None


def cuda_available() -> bool:
    """True when :class:`CudaRasterizer` can run here (a CUDA device, PyTorch's CUDA build, CuPy)."""
    return cuda_unavailable_reason() is None


def kernel_scalars(sigma: float) -> tuple[np.float32, np.float32]:
    """The kernel's ``reach`` = float32(3 sigma) and ``scale`` = float32(-0.5 / sigma^2), rounded
    exactly as the CPU rasterizer rounds them."""
    return np.float32(3 * sigma), np.float32(-0.5 / sigma**2)


def kernel_pairs(limbs: Limbs) -> np.ndarray:
    """Limb keypoint pairs as the kernel reads them: int32 ``[K, 2]``; one dummy row for joints."""
    if limbs is None:
        return np.zeros((1, 2), np.int32)
    return np.ascontiguousarray(_limb_pairs(limbs), dtype=np.int32)


def gbytes_per_volume(num_channels: int = 17, clip_len: int = 48, height: int = 56, width: int = 56, *,
                      persons: int = 2, keypoints: int = 17, dtype: str = "float32") -> float:
    """GB (1e9 bytes) of memory traffic per rasterized volume: the ``[K, T, H, W]`` output written
    plus the ``[M, T, V, 3]`` float32 keypoints read (the bandwidth report's numerator)."""
    name = _dtype_name(dtype)
    written = num_channels * clip_len * height * width * _ITEMSIZE[name]
    read = persons * clip_len * keypoints * 3 * 4
    return (written + read) / 1e9


def _dtype_name(dtype: Any) -> str:
    text = str(dtype).replace("torch.", "").lower()
    if text not in _DTYPE_ALIASES:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return _DTYPE_ALIASES[text]


# ----------------------------------------------------------------------------------------------
# The compiled module, once per device and process

_MODULES: dict[int, Any] = {}
_MODULES_LOCK = threading.Lock()


def _kernels(device: int) -> dict[str, Any]:
    """``{dtype name: cupy RawKernel}`` for ``device``, compiling the source on first use."""
    with _MODULES_LOCK:
        kernels = _MODULES.get(device)
        if kernels is not None:
            return kernels
        import cupy

        try:
            source = KERNEL_PATH.read_text(encoding="utf-8")
        except OSError as exc:
            raise CudaUnavailableError(f"{KERNEL_PATH}: cannot read the kernel source ({exc.strerror or exc})") from None
        try:
            with cupy.cuda.Device(device):
                module = cupy.RawModule(code=source, options=NVRTC_OPTIONS)
                kernels = {name: module.get_function(fn) for name, fn in KERNEL_NAMES.items()}
        except Exception as exc:  # CompileException, or a driver too old for the NVRTC's PTX
            raise CudaUnavailableError(f"{KERNEL_PATH.name}: NVRTC could not build the rasterizer for device {device} "
                                       f"({first_line(exc)})") from None
        _MODULES[device] = kernels
        return kernels


# ----------------------------------------------------------------------------------------------


class CudaRasterizer:
    """Rasterize batches of skeleton windows on a CUDA device (see the module docstring).

    ``height``, ``width``, ``sigma``, ``limbs``: as :func:`posestream.engines.raster.rasterize`
    (``limbs`` None for joint heatmaps, else a layout name, a LimbLayout or index pairs).
    ``dtype``: the output's, ``"float32"``, ``"float16"`` or ``"bfloat16"`` (also a torch
    dtype): the dtype of the tensor the action engine takes. ``device``: CUDA device index.
    ``threads``: threads per block.

    Call it with keypoints ``[N, M, T, V, 3]`` (x, y, score; float32; a torch tensor on the
    device, anywhere else, or a numpy array) or with ``(keypoints [N, M, T, V, 2], scores
    [N, M, T, V])``; it returns a new torch tensor ``[N, K, T, H, W]`` on the device, or writes
    into ``out`` (a C-contiguous CUDA tensor of that shape and of this dtype, e.g. an engine's
    input buffer) and returns it. The kernel is queued on torch's current stream of the device;
    nothing waits for it.
    """

    def __init__(self, height: int, width: int, sigma: float = 0.6, limbs: Limbs = None,
                 dtype: Any = "float32", device: int = 0, threads: int = DEFAULT_THREADS):
        if int(height) <= 0 or int(width) <= 0:
            raise ValueError(f"height and width must be positive, got {height} x {width}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if not 32 <= int(threads) <= 1024 or int(threads) % 32:
            raise ValueError(f"threads must be a multiple of 32 in 32..1024, got {threads}")
        self.height, self.width, self.sigma, self.limbs = int(height), int(width), float(sigma), limbs
        self.dtype = _dtype_name(dtype)
        self.pairs = kernel_pairs(limbs)  # validates the layout before anything touches CUDA
        self.threads = int(threads)
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise CudaUnavailableError(f"the CUDA rasterizer cannot run here: {reason}")
        import torch

        count = torch.cuda.device_count()
        if not 0 <= int(device) < count:
            raise CudaUnavailableError(f"CUDA device {device} does not exist ({count} device(s) here)")
        self.device_index = int(device)
        self.device = torch.device("cuda", self.device_index)
        self.torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.dtype]
        self._kernel = _kernels(self.device_index)[self.dtype]
        self._reach, self._scale = kernel_scalars(self.sigma)
        self._pairs_t = torch.from_numpy(self.pairs).to(self.device)
        # Pinned staging for numpy keypoints, reused; the event says when its last upload left.
        self._staging: "torch.Tensor | None" = None
        self._staging_event = torch.cuda.Event()
        self._staged = False

    # ------------------------------------------------------------------------------------------

    def num_channels(self, num_keypoints: int) -> int:
        """K of the volume for keypoints with ``num_keypoints`` joints."""
        return num_keypoints if self.limbs is None else len(self.pairs)

    def output_shape(self, keypoints_shape) -> tuple[int, int, int, int, int]:
        """``[N, K, T, H, W]`` for keypoints of shape ``[N, M, T, V, 3]`` (or ``[.., 2]``)."""
        n, _, t, v = (int(d) for d in tuple(keypoints_shape)[:4])
        return n, self.num_channels(v), t, self.height, self.width

    def __repr__(self) -> str:
        return (f"CudaRasterizer({self.height}x{self.width}, sigma={self.sigma}, limbs={self.limbs!r}, "
                f"dtype={self.dtype}, device=cuda:{self.device_index})")

    def __call__(self, keypoints, scores=None, *, out: "torch.Tensor | None" = None) -> "torch.Tensor":
        import cupy
        import torch

        kp = self._keypoints(keypoints, scores)
        n, m, t, v, _ = kp.shape
        if self.limbs is not None and len(self.pairs) and int(self.pairs.max()) >= v:
            raise ValueError(f"limb pairs index keypoints outside 0..{v - 1}")
        shape = self.output_shape(kp.shape)
        if out is None:
            out = torch.empty(shape, dtype=self.torch_dtype, device=self.device)
        elif (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != self.torch_dtype
              or out.device != self.device or not out.is_contiguous()):
            what = (f"{tuple(out.shape)} {out.dtype} on {out.device}" if isinstance(out, torch.Tensor)
                    else type(out).__name__)
            raise ValueError(f"out must be a contiguous {self.torch_dtype} tensor of shape {shape} on {self.device}, "
                             f"got {what}")
        planes = n * shape[1] * t
        if planes == 0:
            return out
        if m == 0 or v == 0:  # nobody to draw (and no keypoint memory to hand the kernel)
            return out.zero_()
        stream = torch.cuda.current_stream(self.device)
        # 16-bit outputs go through DLPack as int16 (CuPy has no bfloat16); the kernel writes bits.
        target = out if self.dtype == "float32" else out.view(torch.int16)
        with cupy.cuda.Device(self.device_index), cupy.cuda.ExternalStream(stream.cuda_stream, self.device_index):
            # Inside the stream context CuPy hands torch this same stream: DLPack adds no sync.
            args = (cupy.from_dlpack(kp), cupy.from_dlpack(self._pairs_t), cupy.from_dlpack(target),
                    np.int32(n), np.int32(m), np.int32(t), np.int32(v), np.int32(shape[1]),
                    np.int32(self.height), np.int32(self.width), np.int32(self.limbs is not None),
                    self._reach, self._scale)
            self._kernel((min(planes, MAX_GRID),), (self.threads,), args)
        return out

    # ------------------------------------------------------------------------------------------

    def _keypoints(self, keypoints, scores) -> "torch.Tensor":
        """Float32 contiguous ``[N, M, T, V, 3]`` on the device."""
        import torch

        if scores is not None:
            if isinstance(keypoints, torch.Tensor) and keypoints.is_cuda:
                sc = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
                kp2 = keypoints.to(self.device, torch.float32)
                self._check_pair(tuple(kp2.shape), tuple(sc.shape))
                keypoints = torch.cat([kp2, sc.to(self.device, torch.float32)[..., None]], dim=-1)
            else:
                kp2 = _numpy(keypoints)
                sc = _numpy(scores)
                self._check_pair(kp2.shape, sc.shape)
                keypoints = np.concatenate([kp2, sc[..., None]], axis=-1)
        if isinstance(keypoints, torch.Tensor) and keypoints.is_cuda:
            kp = keypoints.detach().to(self.device, torch.float32).contiguous()
            self._check_shape(tuple(kp.shape))
            return kp
        arr = np.ascontiguousarray(_numpy(keypoints), dtype=np.float32)
        self._check_shape(arr.shape)
        return self._upload(arr)

    @staticmethod
    def _check_shape(shape) -> None:
        if len(shape) != 5 or shape[-1] != 3:
            raise ValueError(f"keypoints must be [N, M, T, V, 3] (x, y, score), got shape {list(shape)}")

    @staticmethod
    def _check_pair(kp_shape, sc_shape) -> None:
        if len(kp_shape) != 5 or kp_shape[-1] != 2:
            raise ValueError(f"keypoints must be [N, M, T, V, 2] when scores are given, got shape {list(kp_shape)}")
        if tuple(sc_shape) != tuple(kp_shape[:-1]):
            raise ValueError(f"scores must be {list(kp_shape[:-1])} to match keypoints, got {list(sc_shape)}")

    def _upload(self, arr: np.ndarray) -> "torch.Tensor":
        """numpy -> device through the pinned staging buffer (asynchronous on the current stream)."""
        import torch

        size = arr.size
        if size == 0:
            return torch.empty(arr.shape, dtype=torch.float32, device=self.device)
        if self._staging is None or self._staging.numel() < size:
            self._staging = torch.empty(max(size, 1 << 16), dtype=torch.float32, pin_memory=True)
        elif self._staged:
            self._staging_event.synchronize()  # the previous upload may still be reading it
        host = self._staging[:size].view(arr.shape)
        host.numpy()[...] = arr
        device = host.to(self.device, non_blocking=True)
        self._staging_event.record(torch.cuda.current_stream(self.device))
        self._staged = True
        return device


def _numpy(value) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)
