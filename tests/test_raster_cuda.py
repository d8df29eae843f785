"""The CUDA rasterizer's source, checked on machines without a GPU.

1. ``engines/kernels/rasterize.cu`` compiles to PTX for the GPUs we target (sm_80, sm_90) with
   the options NVRTC uses at run time, when ``nvcc`` is installed.
2. The same file, built for the host by a plain C++ compiler (its per-item and per-pixel
   functions and its plane loop are ``__host__ __device__``), rasterizes random clips and the CPU
   tests' edge cases exactly like :func:`posestream.engines.raster.rasterize_batch` (within
   1e-5 in fp32; fp16/bf16 outputs are the fp32 values rounded to nearest even). So the code the
   GPU runs is checked on every CI run; tests/test_gpu.py repeats the comparison on a device.
"""
import ctypes
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from posestream.engines.raster import EPS, rasterize_batch
from posestream.engines.raster_cuda import KERNEL_NAMES, KERNEL_PATH, NVRTC_OPTIONS, kernel_pairs, kernel_scalars
from posestream.skeleton import PYSKL_DEFAULT_LIMBS, PYSKL_RELEASED_LIMBS

FP32_ATOL = 1e-5


def find_nvcc() -> str | None:
    for candidate in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
                      "/usr/local/bin/nvcc"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_cxx() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


# ----------------------------------------------------------------------------------------------
# 1. PTX for the target GPUs


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_to_ptx(arch, tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed here")
    ptx = tmp_path / f"rasterize_{arch}.ptx"
    result = subprocess.run([nvcc, "--ptx", f"-arch={arch}", *NVRTC_OPTIONS, str(KERNEL_PATH), "-o", str(ptx)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = ptx.read_text()
    for name in KERNEL_NAMES.values():
        assert f".entry {name}(" in text, name  # extern "C": unmangled entry points


def find_nvrtc() -> str | None:
    """libnvrtc from a CUDA toolkit or the nvidia-cuda-nvrtc wheel (CuPy's runtime compiler)."""
    import ctypes.util
    import glob
    import importlib.util

    candidates = []
    for pkg in ("nvidia", "nvidia.cuda_nvrtc", "nvidia.cu13"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            candidates += sorted(glob.glob(os.path.join(root, "**", "libnvrtc.so*"), recursive=True))
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidates += sorted(glob.glob(os.path.join(cuda_home, "lib64", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    candidates += [found] if found else []
    for path in candidates:
        if "builtins" in os.path.basename(path):
            continue
        try:
            ctypes.CDLL(path)
            return path
        except OSError:
            continue
    return None


def test_kernel_compiles_with_nvrtc_and_the_runtime_options():
    """What CuPy does at run time (NVRTC, NVRTC_OPTIONS), where libnvrtc is installed: NVRTC
    compiles without a GPU. The source must need no header NVRTC lacks."""
    path = find_nvrtc()
    if path is None:
        pytest.skip("libnvrtc is not installed here (CUDA toolkit or pip install nvidia-cuda-nvrtc)")
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), KERNEL_PATH.read_bytes(), b"rasterize.cu", 0, None, None) == 0
    try:
        for arch in ("compute_80", "compute_90"):
            options = [o.encode() for o in NVRTC_OPTIONS] + [f"-arch={arch}".encode()]
            rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            assert rc == 0, log.value.decode(errors="replace")[-3000:]
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            ptx = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, ptx)
            for name in KERNEL_NAMES.values():
                assert f".entry {name}(" in ptx.value.decode(), (arch, name)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


# ----------------------------------------------------------------------------------------------
# 2. The kernel's code on the host

SHIM = r"""
#include "{source}"

template <class Out>
static void run(const float* keypoints, const int* pairs, typename Out::T* out, int n, int m, int t, int v, int k,
                int height, int width, int limbs, float reach, float scale) {{
    // One "block" of one thread per plane, planes in order: the kernel's loop, serialized.
    ps::Item items[PS_CHUNK];
    ps::Geometry g;
    g.n = n; g.m = m; g.t = t; g.v = v; g.k = k; g.height = height; g.width = width; g.limbs = limbs;
    g.reach = reach; g.scale = scale;
    const long long planes = (long long)n * k * t;
    for (long long plane = 0; plane < planes; ++plane)
        ps::rasterize_plane<Out>(keypoints, pairs, out, g, plane, 0, 1, items);
}}

#define ENTRY(NAME, OUT) \
    extern "C" void NAME(const float* kp, const int* pairs, OUT::T* out, int n, int m, int t, int v, int k, \
                         int h, int w, int limbs, float reach, float scale) {{ \
        run<OUT>(kp, pairs, out, n, m, t, v, k, h, w, limbs, reach, scale); }}
ENTRY(host_rasterize_f32, ps::OutF32)
ENTRY(host_rasterize_f16, ps::OutF16)
ENTRY(host_rasterize_bf16, ps::OutBF16)

extern "C" void host_to_f16(const float* x, unsigned short* y, long long n) {{
    for (long long i = 0; i < n; ++i) y[i] = ps::f32_to_f16(x[i]); }}
extern "C" void host_from_f16(const unsigned short* x, float* y, long long n) {{
    for (long long i = 0; i < n; ++i) y[i] = ps::f16_to_f32(x[i]); }}
extern "C" void host_to_bf16(const float* x, unsigned short* y, long long n) {{
    for (long long i = 0; i < n; ++i) y[i] = ps::f32_to_bf16(x[i]); }}
"""


class HostKernel:
    """rasterize.cu compiled for the host, called like rasterize_batch."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        ptr = ctypes.c_void_p
        for name in ("host_rasterize_f32", "host_rasterize_f16", "host_rasterize_bf16"):
            fn = getattr(self.lib, name)
            fn.argtypes = [ptr, ptr, ptr] + [ctypes.c_int] * 8 + [ctypes.c_float, ctypes.c_float]
            fn.restype = None
        for name in ("host_to_f16", "host_from_f16", "host_to_bf16"):
            getattr(self.lib, name).argtypes = [ptr, ptr, ctypes.c_longlong]

    def __call__(self, kp, sc, height, width, sigma=0.6, limbs=None, dtype="float32"):
        kp = np.asarray(kp, np.float32)
        sc = np.asarray(sc, np.float32)
        n, m, t, v, _ = kp.shape
        packed = np.ascontiguousarray(np.concatenate([kp, sc[..., None]], axis=-1))  # [N, M, T, V, 3]
        pairs = kernel_pairs(limbs)
        k = v if limbs is None else len(pairs)
        reach, scale = kernel_scalars(sigma)
        np_dtype = {"float32": np.float32, "float16": np.uint16, "bfloat16": np.uint16}[dtype]
        out = np.full((n, k, t, height, width), 0x7fc0 if dtype != "float32" else np.nan, np_dtype)  # poisoned
        fn = {"float32": self.lib.host_rasterize_f32, "float16": self.lib.host_rasterize_f16,
              "bfloat16": self.lib.host_rasterize_bf16}[dtype]
        fn(packed.ctypes.data, pairs.ctypes.data, out.ctypes.data, n, m, t, v, k, height, width,
           int(limbs is not None), float(reach), float(scale))
        if dtype == "float16":
            return out.view(np.float16)
        if dtype == "bfloat16":
            return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16).float().numpy()
        return out

    def to_f16(self, x):
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty(x.shape, np.uint16)
        self.lib.host_to_f16(x.ctypes.data, y.ctypes.data, x.size)
        return y

    def from_f16(self, bits):
        bits = np.ascontiguousarray(bits, np.uint16)
        y = np.empty(bits.shape, np.float32)
        self.lib.host_from_f16(bits.ctypes.data, y.ctypes.data, bits.size)
        return y

    def to_bf16(self, x):
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty(x.shape, np.uint16)
        self.lib.host_to_bf16(x.ctypes.data, y.ctypes.data, x.size)
        return y


def build_host_kernel(tmp: Path, chunk: int | None = None) -> HostKernel:
    cxx = find_cxx()
    if cxx is None:
        pytest.skip("no C++ compiler (g++/clang++) here")
    shim = tmp / "shim.cpp"
    shim.write_text(SHIM.format(source=KERNEL_PATH.as_posix()))
    lib = tmp / "libraster_host.so"
    # No FMA contraction and no fast math: the same float32 rounding as numpy (and as NVRTC with
    # --fmad=false).
    cmd = [cxx, "-O2", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", str(shim),
           "-o", str(lib)]
    if chunk is not None:
        cmd.insert(1, f"-DPS_CHUNK={chunk}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return HostKernel(lib)


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    return build_host_kernel(tmp_path_factory.mktemp("raster_host"))


@pytest.fixture(scope="module")
def host_kernel_chunk2(tmp_path_factory):
    """Two persons staged at a time: three or more persons exercise the read-back-and-max path."""
    return build_host_kernel(tmp_path_factory.mktemp("raster_host_chunk2"), chunk=2)


def random_clips(rng, n=3, m=3, t=4, v=17, height=24, width=28, margin=5):
    """Random skeletons on and around the grid, with the edge cases sprinkled in: zero, low and
    exactly-EPS scores, NaN/inf coordinates and scores, near-coincident limb ends."""
    kp = rng.uniform(-margin, [width + margin, height + margin], size=(n, m, t, v, 2)).astype(np.float32)
    sc = rng.uniform(0, 1, size=(n, m, t, v)).astype(np.float32)
    flat_sc, flat_kp = sc.reshape(-1), kp.reshape(-1, 2)
    pick = lambda frac: rng.random(flat_sc.shape) < frac  # noqa: E731
    flat_sc[pick(0.08)] = 0
    flat_sc[pick(0.03)] = EPS * 0.999
    flat_sc[pick(0.03)] = np.float32(EPS)
    flat_sc[pick(0.01)] = np.nan
    flat_kp[pick(0.02), 0] = np.nan
    flat_kp[pick(0.01), 1] = np.inf
    # Keypoints 0..4 (the head; limbs 0-1, 0-2, 1-3, 2-4) 0..1.5 px from each other: short limbs,
    # coincident ends, and some exactly one pixel apart (|a - b|^2 == 1 is a segment).
    head = kp[..., :5, :]
    offsets = rng.uniform(-1.1, 1.1, size=head.shape).astype(np.float32)
    offsets[rng.random(offsets.shape) < 0.2] = 0
    head[...] = head[..., :1, :] + offsets
    exact = rng.random(kp.shape[:4]) < 0.05
    kp[..., 1, 0] = np.where(exact[..., 1], kp[..., 0, 0] + 1, kp[..., 1, 0])
    kp[..., 1, 1] = np.where(exact[..., 1], kp[..., 0, 1], kp[..., 1, 1])
    return kp, sc


@pytest.mark.parametrize("limbs", [None, PYSKL_DEFAULT_LIMBS, PYSKL_RELEASED_LIMBS], ids=["joints", "default", "released"])
@pytest.mark.parametrize("sigma", [0.6, 1.3])
@pytest.mark.filterwarnings("ignore:.*encountered in add:RuntimeWarning")
def test_host_compiled_kernel_matches_the_cpu_rasterizer(host_kernel, limbs, sigma):
    rng = np.random.default_rng(11)
    for height, width in ((24, 28), (9, 40)):
        kp, sc = random_clips(rng, height=height, width=width)
        ref = rasterize_batch(kp, sc, height, width, sigma, limbs)
        got = host_kernel(kp, sc, height, width, sigma, limbs)
        assert got.shape == ref.shape and np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=0, atol=FP32_ATOL)
        assert ref.max() > 0.5 and np.count_nonzero(ref) > 1000  # real Gaussians were compared


def test_host_compiled_kernel_at_the_serving_geometry(host_kernel):
    """Two persons x 48 frames at 56 x 56, from realistic skeleton scales (joints and limbs)."""
    rng = np.random.default_rng(5)
    kp = rng.normal(28, 9, size=(2, 2, 48, 17, 2)).astype(np.float32)
    sc = rng.uniform(0.2, 1, size=(2, 2, 48, 17)).astype(np.float32)
    for limbs in (None, "pyskl_released"):
        ref = rasterize_batch(kp, sc, 56, 56, 0.6, limbs)
        np.testing.assert_allclose(host_kernel(kp, sc, 56, 56, 0.6, limbs), ref, rtol=0, atol=FP32_ATOL)


@pytest.mark.filterwarnings("ignore:.*encountered in add:RuntimeWarning")  # numpy's own inf + -inf
@pytest.mark.parametrize("point,expect_nonzero", [
    ((-1.0, 5.0), True), ((-2.5, 5.0), True), ((-3.5, 5.0), False), ((13.5, 5.0), True),
    ((5.0, 1e6), False), ((np.nan, 5.0), False), ((5.0, np.inf), False), ((-np.inf, np.inf), False),
    ((3e38, 3e38), False),   # x + y overflows: not finite, as the CPU code tests it
])
def test_host_kernel_keypoints_outside_the_grid(host_kernel, point, expect_nonzero):
    kp = np.array(point, np.float32).reshape(1, 1, 1, 1, 2)
    sc = np.ones((1, 1, 1, 1), np.float32)
    got = host_kernel(kp, sc, 10, 12)
    ref = rasterize_batch(kp, sc, 10, 12)
    assert (got.max() > 0) == expect_nonzero
    np.testing.assert_allclose(got, ref, rtol=0, atol=FP32_ATOL)


def test_host_kernel_scores_window_and_short_limbs(host_kernel):
    # Scores at the threshold.
    kp = np.array([[[[[5.0, 5.0], [10.0, 5.0]]]]], np.float32)
    sc = np.array([[[[EPS * 0.999, EPS]]]], np.float32)
    vol = host_kernel(kp, sc, 12, 16)[0]
    assert vol[0].max() == 0 and vol[1, 0, 5, 10] == pytest.approx(EPS)
    assert host_kernel(kp, sc, 12, 16, limbs=[(0, 1)]).max() == 0
    # The window edge: x = 5.0, sigma 0.6 draws columns 3..6 only.
    one = host_kernel(np.array([5.0, 5.0], np.float32).reshape(1, 1, 1, 1, 2), np.ones((1, 1, 1, 1), np.float32), 12, 12)
    plane = one[0, 0, 0]
    assert plane[5, 3] == pytest.approx(math.exp(-4 / 0.72), rel=1e-5)
    assert plane[5, 7] == 0 and plane[7, 5] == 0 and plane[5, 2] == 0 and plane[5, 5] == 1.0
    assert np.count_nonzero(plane) == 16
    # Limbs 0.9 px long: the start keypoint at its own score; 1.1 px: a segment at the min score.
    kp = np.array([[[[[6.0, 6.0], [6.9, 6.0]]]]], np.float32)
    sc = np.array([[[[0.8, 0.3]]]], np.float32)
    vol = host_kernel(kp, sc, 12, 12, limbs=[(0, 1)])[0, 0, 0]
    assert vol[6, 6] == pytest.approx(0.8) and vol[6, 7] == pytest.approx(0.8 * math.exp(-1 / 0.72), rel=1e-5)
    kp[..., 1, 0] = 7.1
    vol = host_kernel(kp, sc, 12, 12, limbs=[(0, 1)])[0, 0, 0]
    assert vol[6, 6] == pytest.approx(0.3) and vol[6, 7] == pytest.approx(0.3)
    for b in ((6.0, 6.0), (7.0, 6.0), (6.6, 6.8)):  # coincident, exactly 1 px, just over 1 px
        kp[..., 1, :] = b
        np.testing.assert_allclose(host_kernel(kp, sc, 12, 12, limbs=[(0, 1)]),
                                   rasterize_batch(kp, sc, 12, 12, limbs=[(0, 1)]), rtol=0, atol=FP32_ATOL)


def test_host_kernel_persons_combine_by_max(host_kernel, host_kernel_chunk2):
    kp = np.array([[[[[5.0, 5.0]]], [[[5.5, 5.0]]]]], np.float32)  # two persons, same joint
    sc = np.array([[[[0.9]], [[0.6]]]], np.float32)
    vol = host_kernel(kp, sc, 10, 10)[0, 0, 0]
    np.testing.assert_array_equal(vol, np.maximum(host_kernel(kp[:, :1], sc[:, :1], 10, 10)[0, 0, 0],
                                                  host_kernel(kp[:, 1:], sc[:, 1:], 10, 10)[0, 0, 0]))
    # Many persons over several shared-memory chunks (read back and max), joints and limbs, and
    # an empty person axis (still writes every element: zeros).
    rng = np.random.default_rng(2)
    kp, sc = random_clips(rng, n=2, m=7, t=3, height=16, width=16)
    for limbs in (None, "pyskl_default"):
        ref = rasterize_batch(kp, sc, 16, 16, 0.8, limbs)
        for lib in (host_kernel, host_kernel_chunk2):
            np.testing.assert_allclose(lib(kp, sc, 16, 16, 0.8, limbs), ref, rtol=0, atol=FP32_ATOL)
            for dtype, tol in (("float16", 1e-3), ("bfloat16", 4e-3)):
                np.testing.assert_allclose(lib(kp, sc, 16, 16, 0.8, limbs, dtype=dtype).astype(np.float32), ref,
                                           rtol=0, atol=tol)
        empty = host_kernel_chunk2(kp[:, :0], sc[:, :0], 16, 16, 0.8, limbs)
        assert empty.shape[:3] == ref.shape[:3] and not empty.any()


def test_host_kernel_half_outputs_round_like_torch(host_kernel):
    rng = np.random.default_rng(3)
    kp, sc = random_clips(rng, n=2, m=2, t=3, height=20, width=20)
    ref = rasterize_batch(kp, sc, 20, 20)
    f16 = host_kernel(kp, sc, 20, 20, dtype="float16")
    bf16 = host_kernel(kp, sc, 20, 20, dtype="bfloat16")
    # fp16/bf16 are the fp32 values rounded to nearest even: at most one 16-bit ulp from
    # rounding the CPU's fp32 volume (the fp32 values themselves differ by an ulp of exp).
    np.testing.assert_allclose(f16.astype(np.float32), ref.astype(np.float16).astype(np.float32), rtol=0, atol=4.9e-4)
    np.testing.assert_allclose(bf16, torch.from_numpy(ref).bfloat16().float().numpy(), rtol=0, atol=3.91e-3)
    assert (f16.astype(np.float32) > 0).sum() > 100


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # numpy's reference
def test_half_conversions_are_exact(host_kernel):
    """The kernel's own fp16/bf16 conversions (the same code on host and device) against numpy
    and torch, on every kind of float32: zeros, subnormals, ties, overflow, inf, NaN."""
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, 1e9, np.inf, -np.inf, 6.1035156e-05,
                        6.0e-05, 5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1e-10, 1e-45, 1.00048828125,
                        1.00146484375, 0.33333334, 3.4028235e38], np.float32)
    randoms = np.concatenate([rng.uniform(-2, 2, 20000), np.exp(rng.uniform(-30, 12, 20000)),
                              rng.uniform(0, 1, 20000)]).astype(np.float32)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([special, randoms, bits[np.isfinite(bits)]])
    np.testing.assert_array_equal(host_kernel.to_f16(values), values.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(host_kernel.to_bf16(values),
                                  torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view(np.uint16))
    nan16 = host_kernel.to_f16(np.array([np.nan], np.float32)).view(np.float16)
    assert np.isnan(nan16).all()
    all_halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    ours = host_kernel.from_f16(all_halves)
    theirs = all_halves.view(np.float16).astype(np.float32)
    finite = np.isfinite(theirs)
    np.testing.assert_array_equal(ours[finite], theirs[finite])
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)) and np.array_equal(np.isinf(ours), np.isinf(theirs))
