"""GPU engines and the CUDA rasterizer.

Tests marked ``gpu`` run only where PyTorch sees a CUDA device (tests/conftest.py skips them
elsewhere): the kernel against the CPU rasterizer (fp32 within 1e-5, fp16 within 1e-3, written
into a given buffer), the torch-cuda engine against torch fp32 on the CPU (fp32 within 1e-4 of
the logit range, fp16 within 1e-2 and the same top-1; CUDA graphs against eager at batches 1,
8 and 32), the TensorRT engine (when ``tensorrt`` imports) and the fallbacks. The unmarked
tests run everywhere and check that, without CUDA, the modules import and every GPU path
degrades to a CPU engine with a logged notice instead of crashing.
"""
import logging

import numpy as np
import pytest
import torch

from posestream.engines import action_gpu, raster_cuda
from posestream.engines.action import (
    ALL_ENGINE_KINDS,
    ENGINE_KINDS,
    GPU_ENGINE_KINDS,
    EngineError,
    OnnxEngine,
    TorchEngine,
    make_engine,
)
from posestream.engines.action_gpu import (
    PRECISION_TOLERANCE,
    GpuUnavailableError,
    TensorRTEngine,
    TorchCudaEngine,
    batch_buckets,
    tensorrt_cache_key,
)
from posestream.engines.raster import EPS, Rasterizer, make_rasterizer, rasterize_batch
from posestream.engines.raster_cuda import CudaRasterizer, CudaUnavailableError, gbytes_per_volume
from posestream.train.checkpoints import ModelCard, save_checkpoint
from posestream.train.models import build_model

HAS_CUDA = torch.cuda.is_available()
GPU_LOGGER = "posestream.engines.action_gpu"


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Realistic BN statistics and an O(1) classifier (as tests/test_action_engines.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                low, high = (0.5, 1.5) if m.weight.any() else (0.0, 0.2)
                m.weight.copy_(low + (high - low) * torch.rand(n, generator=g))
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 4 / m.in_features ** 0.5)
    return model.eval()


def random_windows(rng, n, m=2, t=8, v=17, size=32):
    """Skeleton windows on a ``size`` grid, with missing joints and a few off-grid ones."""
    centre = rng.uniform(size * 0.3, size * 0.7, size=(n, m, 1, 1, 2))
    kp = (centre + rng.normal(0, size * 0.15, size=(n, m, t, v, 2))).astype(np.float32)
    sc = rng.uniform(0.2, 1.0, size=(n, m, t, v)).astype(np.float32)
    sc[rng.random(sc.shape) < 0.1] = 0
    return kp, sc


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """An X3D-s checkpoint at 8 frames x 32 x 32 (joints), its module and card."""
    root = tmp_path_factory.mktemp("gpu_engines")
    torch.manual_seed(0)
    card = ModelCard(arch="x3d_s", num_classes=4, clip_len=8, size=32, sigma=0.6,
                     class_names=["wave", "walk", "sit", "fall"], source="test")
    model = lively(build_model("x3d_s", num_classes=4))
    ckpt = root / "x3d_s.pth"
    save_checkpoint(ckpt, card, model.state_dict())
    return {"root": root, "card": card, "model": model, "ckpt": ckpt}


@pytest.fixture(scope="module")
def volumes_and_reference(small_model):
    """Real volumes (rasterized windows) and torch fp32 CPU logits for them."""
    rng = np.random.default_rng(7)
    kp, sc = random_windows(rng, 40)
    volumes = rasterize_batch(kp, sc, 32, 32, 0.6)
    with torch.inference_mode():
        reference = small_model["model"](torch.from_numpy(volumes)).numpy()
    assert np.abs(reference).max() > 0.5
    return kp, sc, volumes, reference


def assert_agrees(got, ref, precision):
    """The stated agreement: max |got - ref| <= tol * max(1, max |ref|); the same top-1 wherever
    the reference's top two are further apart than twice that."""
    tol = PRECISION_TOLERANCE[precision] * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(got - ref).max())
    assert err <= tol, f"{precision}: logits off by {err:.3g} (allowed {tol:.3g})"
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert np.array_equal(got.argmax(1)[clear], ref.argmax(1)[clear])
    return err


def tiny_onnx(path):
    """A small foreign ONNX model ([N, 17, 8, 32, 32] -> [N, 17] means), no card needed."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 17, 8, 32, 32])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 17])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["scores"], axes=[2, 3, 4], keepdims=0)],
                              "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------------------------
# Everywhere (the CPU side of the GPU code)


def test_gpu_modules_import_and_report_availability():
    # cuda_available() is what this machine can do, and the reason says why not when it cannot.
    reason = raster_cuda.cuda_unavailable_reason()
    assert raster_cuda.cuda_available() is (reason is None)
    if torch.cuda.is_available():
        assert reason is None or "CuPy" in reason
    else:
        assert "sees no CUDA device" in reason and "\n" not in reason
    assert action_gpu.__all__ and all(hasattr(action_gpu, name) for name in action_gpu.__all__)
    assert raster_cuda.KERNEL_PATH.is_file() and raster_cuda.KERNEL_PATH.suffix == ".cu"
    assert set(GPU_ENGINE_KINDS) == {"torch-cuda", "tensorrt"} and ALL_ENGINE_KINDS == ENGINE_KINDS + GPU_ENGINE_KINDS
    assert batch_buckets(32) == (1, 2, 4, 8, 16, 32) and batch_buckets(12) == (1, 2, 4, 8, 12) and batch_buckets(1) == (1,)
    # 17 x 48 x 56 x 56 fp32 written + 2 x 48 x 17 x 3 float32 read.
    assert gbytes_per_volume() == pytest.approx((17 * 48 * 56 * 56 * 4 + 2 * 48 * 17 * 12) / 1e9)
    assert gbytes_per_volume(dtype="fp16") < gbytes_per_volume()


def test_tensorrt_cache_key_covers_every_field():
    base = dict(trt_version="10.9.0", gpu_name="NVIDIA H100 80GB HBM3", precision="fp16", max_batch=32, opt_batch=16)
    key, fields = tensorrt_cache_key(b"onnx", **base)
    assert fields["onnx_sha256"] and len(key) == 64 and tensorrt_cache_key(b"onnx", **base)[0] == key
    changed = [tensorrt_cache_key(b"onnx2", **base)[0]]
    for name, value in (("trt_version", "10.10.0"), ("gpu_name", "NVIDIA H200"), ("precision", "fp32"),
                        ("max_batch", 16), ("opt_batch", 8)):
        changed.append(tensorrt_cache_key(b"onnx", **dict(base, **{name: value}))[0])
    assert key not in changed and len(set(changed)) == len(changed)


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA behaviour")
def test_constructing_gpu_objects_without_cuda_says_what_is_missing(small_model, tmp_path):
    with pytest.raises(CudaUnavailableError) as e:
        CudaRasterizer(56, 56)
    assert isinstance(e.value, RuntimeError) and "CUDA rasterizer cannot run here" in one_line(e)
    with pytest.raises(RuntimeError, match="cannot run here"):
        make_rasterizer(56, 56, backend="cuda")
    assert isinstance(make_rasterizer(56, 56, backend="auto"), Rasterizer)
    with pytest.raises(GpuUnavailableError, match="torch-cuda engine needs a CUDA GPU") as e:
        TorchCudaEngine(small_model["ckpt"])
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, EngineError)
    one_line(e)
    with pytest.raises(GpuUnavailableError, match="tensorrt engine needs a CUDA GPU") as e:
        TensorRTEngine(tmp_path / "any.onnx")
    one_line(e)


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA fallback")
def test_gpu_kinds_fall_back_to_cpu_engines_with_a_notice(small_model, volumes_and_reference, caplog, tmp_path):
    _, _, volumes, reference = volumes_and_reference
    for kind in GPU_ENGINE_KINDS:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=GPU_LOGGER):
            engine = make_engine(kind, small_model["ckpt"], options={"precision": "fp16", "max_batch": 8})
        assert isinstance(engine, TorchEngine) and engine.name == "torch-cl3d", kind   # what auto picks
        assert f"{kind} engine unavailable" in caplog.text and "on the CPU instead" in caplog.text
        assert engine.card == small_model["card"]
        np.testing.assert_allclose(engine.predict(volumes[:3]), reference[:3], rtol=0, atol=1e-4)
    # An ONNX file: tensorrt -> the onnx engine on the CPU.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=GPU_LOGGER):
        engine = make_engine("tensorrt", tiny_onnx(tmp_path / "tiny.onnx"))
    assert isinstance(engine, OnnxEngine) and engine.device == "cpu" and "tensorrt engine unavailable" in caplog.text
    np.testing.assert_allclose(engine.predict(volumes[:2]), volumes[:2].mean(axis=(2, 3, 4)), rtol=1e-5)


def test_gpu_kind_errors_are_one_line(small_model, tmp_path):
    with pytest.raises(EngineError, match="torch-cuda engine needs a posestream checkpoint, this is an ONNX") as e:
        make_engine("torch-cuda", tiny_onnx(tmp_path / "tiny.onnx"))
    one_line(e)
    with pytest.raises(EngineError, match="unknown GPU engine option"):
        make_engine("torch-cuda", small_model["ckpt"], options={"precison": "fp16"})
    with pytest.raises(EngineError, match="no such file"):
        make_engine("tensorrt", tmp_path / "missing.onnx")
    with pytest.raises(EngineError, match="unknown engine 'tensorrt-int4'; choose one of .*torch-cuda, tensorrt"):
        make_engine("tensorrt-int4", small_model["ckpt"])
    with pytest.raises(ValueError, match="backend must be cpu, cuda or auto"):
        make_rasterizer(8, 8, backend="opencl")


def test_device_cpu_asks_for_the_cpu_engine(small_model, caplog):
    with caplog.at_level(logging.WARNING, logger=GPU_LOGGER):
        engine = make_engine("torch-cuda", small_model["ckpt"], device="cpu")
    assert isinstance(engine, TorchEngine) and "device cpu asked for" in caplog.text
    # The batcher's GPU rasterizer is for GPU engines only: a CPU engine keeps the CPU one.
    assert action_gpu.gpu_batch_rasterizer(engine) is None


# ----------------------------------------------------------------------------------------------
# On a GPU: the kernel


@pytest.fixture(scope="module")
def cuda_raster_ready():
    reason = raster_cuda.cuda_unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA rasterizer unavailable: {reason}")


def edge_case_batch():
    """The CPU tests' edge cases in one batch of windows on a 12 x 12 grid: off-grid, NaN and
    inf keypoints, scores at EPS, limbs shorter than / exactly / just over one pixel, two
    persons on one joint."""
    n, m, t, v = 6, 2, 2, 17
    kp = np.full((n, m, t, v, 2), 6.0, np.float32)
    sc = np.zeros((n, m, t, v), np.float32)
    points = [(-1.0, 5.0), (-2.5, 5.0), (-3.5, 5.0), (13.5, 5.0), (5.0, 1e6), (np.nan, 5.0), (5.0, np.inf),
              (5.0, 5.0), (6.9, 6.0), (7.0, 6.0), (7.1, 6.0), (6.0, 6.0), (0.0, 0.0), (11.0, 11.0)]
    for i, p in enumerate(points):
        kp[i % n, 0, i % t, i % v] = p
        sc[i % n, 0, i % t, i % v] = 1.0
    kp[:, :, :, 0] = (6.0, 6.0)
    kp[:, :, :, 1] = [[(6.9, 6.0)], [(7.0, 6.0)]] * np.ones((n, 1, t, 1), np.float32)
    kp[:, :, :, 2] = (6.0, 6.0)
    sc[:, :, :, :3] = [0.8, 0.3, 0.5]
    sc[0, 0, 0, 3] = EPS * 0.999
    sc[1, 0, 0, 3] = EPS
    sc[2, 1, 1, 5] = np.nan
    kp[3, 1] = kp[3, 0] + 0.5          # a second person beside the first
    sc[3, 1] = sc[3, 0] * 0.6
    return kp, sc


@pytest.mark.gpu
@pytest.mark.parametrize("limbs", [None, "pyskl_default", "pyskl_released"])
def test_cuda_kernel_matches_the_cpu_rasterizer(cuda_raster_ready, limbs):
    from test_raster_cuda import random_clips

    rng = np.random.default_rng(1)
    cases = [random_clips(rng, n=5, m=3, t=6, height=24, width=28) + (24, 28),
             random_windows(rng, 4, m=2, t=48, size=56) + (56, 56),
             edge_case_batch() + (12, 12),
             random_clips(rng, n=2, m=70, t=2, height=16, width=16) + (16, 16)]   # > 64 persons: two chunks
    for kp, sc, h, w in cases:
        for sigma in (0.6, 1.1):
            with np.errstate(all="ignore"):
                ref = rasterize_batch(kp, sc, h, w, sigma, limbs)
            raster = CudaRasterizer(h, w, sigma, limbs)
            got = raster(kp, sc)
            assert got.is_cuda and got.dtype == torch.float32 and tuple(got.shape) == ref.shape
            np.testing.assert_allclose(got.cpu().numpy(), ref, rtol=0, atol=1e-5)
            packed = torch.from_numpy(np.concatenate([kp, sc[..., None]], -1)).cuda()
            np.testing.assert_allclose(raster(packed).cpu().numpy(), ref, rtol=0, atol=1e-5)
            f16 = CudaRasterizer(h, w, sigma, limbs, dtype="float16")(kp, sc)
            assert f16.dtype == torch.float16
            np.testing.assert_allclose(f16.float().cpu().numpy(), ref, rtol=0, atol=1e-3)
            bf16 = CudaRasterizer(h, w, sigma, limbs, dtype=torch.bfloat16)(kp, sc)
            np.testing.assert_allclose(bf16.float().cpu().numpy(), ref, rtol=0, atol=4e-3)


@pytest.mark.gpu
def test_cuda_kernel_writes_every_element_of_a_given_buffer(cuda_raster_ready):
    rng = np.random.default_rng(2)
    kp, sc = random_windows(rng, 6, size=32)
    ref = rasterize_batch(kp, sc, 32, 32)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 1e-3)):
        raster = CudaRasterizer(32, 32, dtype=dtype)
        big = torch.full((8, 17, 8, 32, 32), float("nan"), dtype=dtype, device="cuda")   # poisoned
        out = big[:6]
        assert raster(kp, sc, out=out) is out
        np.testing.assert_allclose(out.float().cpu().numpy(), ref, rtol=0, atol=tol)
        assert torch.isnan(big[6:]).all()   # nothing past the batch was touched
        # On another stream: the kernel follows torch's current stream.
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            again = raster(torch.from_numpy(kp).cuda(), torch.from_numpy(sc).cuda())
        side.synchronize()
        np.testing.assert_allclose(again.float().cpu().numpy(), ref, rtol=0, atol=tol)
        with pytest.raises(ValueError, match="out must be a contiguous"):
            raster(kp, sc, out=torch.empty((6, 17, 8, 32, 32), dtype=torch.float64, device="cuda"))
    empty = CudaRasterizer(32, 32)(kp[:, :0], sc[:, :0])
    assert tuple(empty.shape) == (6, 17, 8, 32, 32) and not empty.any()
    with pytest.raises(ValueError, match=r"keypoints must be \[N, M, T, V, 3\]"):
        CudaRasterizer(32, 32)(kp)


# ----------------------------------------------------------------------------------------------
# On a GPU: engines


@pytest.mark.gpu
def test_torch_cuda_agrees_with_torch_fp32(small_model, volumes_and_reference):
    _, _, volumes, reference = volumes_and_reference
    for precision in ("fp32", "fp16", "bf16"):
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            continue
        engine = TorchCudaEngine(small_model["ckpt"], precision=precision, max_batch=16)
        assert engine.name == "torch-cuda" and engine.precision == precision and engine.device.startswith("cuda")
        got = engine.predict(volumes)          # 40 volumes: chunks of 16 (16, 16, 8)
        assert got.dtype == np.float32 and got.shape == reference.shape
        assert_agrees(got, reference, precision)
        gpu = engine.predict_torch(torch.from_numpy(volumes[:5]).cuda())
        assert gpu.is_cuda and gpu.dtype == torch.float32
        assert_agrees(gpu.cpu().numpy(), reference[:5], precision)
    # The caller's module is copied, not moved or cast.
    module = small_model["model"]
    TorchCudaEngine(module, small_model["card"], precision="fp16")
    assert next(module.parameters()).device.type == "cpu" and next(module.parameters()).dtype == torch.float32


@pytest.mark.gpu
def test_cuda_graphs_replay_like_eager(small_model, volumes_and_reference):
    _, _, volumes, _ = volumes_and_reference
    graphs = TorchCudaEngine(small_model["ckpt"], precision="fp16", cuda_graphs=True, max_batch=32)
    eager = TorchCudaEngine(small_model["ckpt"], precision="fp16", cuda_graphs=False, max_batch=32)
    x = torch.from_numpy(volumes[:32]).cuda()
    for batch in (1, 8, 32, 5, 1):      # 5 runs in the bucket of 8; repeats reuse the graphs
        a = graphs.predict_torch(x[:batch])
        b = eager.predict_torch(x[:batch])
        assert tuple(a.shape) == (batch, 4)
        np.testing.assert_allclose(a.cpu().numpy(), b.cpu().numpy(), rtol=0, atol=2e-3 * max(1, b.abs().max().item()))
    assert graphs.captures == 3   # buckets 1, 8, 32
    first = graphs.predict_torch(x[:1])
    kept = first.clone()
    graphs.predict_torch(x[1:2])      # results are fresh tensors, not views of the static output
    assert torch.equal(first, kept)


@pytest.mark.gpu
def test_rasterizer_writes_straight_into_the_engine_input(cuda_raster_ready, small_model, volumes_and_reference):
    kp, sc, volumes, reference = volumes_and_reference
    engine = TorchCudaEngine(small_model["ckpt"], precision="fp16", max_batch=8)
    raster = CudaRasterizer(32, 32, 0.6, dtype=engine.input_dtype)
    buffer = engine.input_buffer(6)
    assert buffer.dtype == torch.float16 and tuple(buffer.shape) == (6, 17, 8, 32, 32) and buffer.is_contiguous()
    raster(kp[:6], sc[:6], out=buffer)
    assert_agrees(engine.predict_torch(buffer).cpu().numpy(), reference[:6], "fp16")
    # The batcher's GPU path: a drop-in for its Rasterizer; predict on what it returns.
    batch_raster = action_gpu.gpu_batch_rasterizer(engine)
    assert isinstance(batch_raster, action_gpu.GpuBatchRasterizer)
    volumes = batch_raster(kp[:7], sc[:7])
    assert volumes.data_ptr() == engine.input_buffer(7).data_ptr()      # the engine's own input tensor
    assert_agrees(engine.predict(volumes), reference[:7], "fp16")
    big = batch_raster(kp[:20], sc[:20])                                 # above max_batch: a new tensor
    assert tuple(big.shape) == (20, 17, 8, 32, 32)
    assert_agrees(engine.predict(big), reference[:20], "fp16")
    # A CPU engine gets no GPU rasterizer.
    assert action_gpu.gpu_batch_rasterizer(TorchEngine(small_model["ckpt"])) is None


@pytest.mark.gpu
def test_tensorrt_engine_agrees_and_is_cached(small_model, volumes_and_reference, tmp_path):
    if action_gpu.tensorrt_unavailable_reason() is not None:
        pytest.skip(action_gpu.tensorrt_unavailable_reason())
    pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript")
    from posestream.train.export import export_onnx

    _, _, volumes, reference = volumes_and_reference
    onnx_path = tmp_path / "x3d_s.onnx"
    export_onnx(small_model["ckpt"], onnx_path)
    cache = tmp_path / "trt_cache"
    engine = TensorRTEngine(onnx_path, precision="fp16", max_batch=16, cache_dir=cache)
    assert not engine.cache_hit and engine.engine_path.is_file() and engine.timing_cache_path.is_file()
    assert engine.card == small_model["card"] and engine.name == "tensorrt"
    assert_agrees(engine.predict(volumes), reference, "fp16")
    buffer = engine.input_buffer(3)
    buffer.copy_(torch.from_numpy(volumes[:3]))
    assert_agrees(engine.predict_torch(buffer).cpu().numpy(), reference[:3], "fp16")
    again = TensorRTEngine(onnx_path, precision="fp16", max_batch=16, cache_dir=cache)
    assert again.cache_hit and again.engine_path == engine.engine_path
    assert_agrees(again.predict(volumes[:4]), reference[:4], "fp16")
    via_make = make_engine("tensorrt", onnx_path, options={"max_batch": 16, "cache_dir": cache})
    assert isinstance(via_make, TensorRTEngine) and via_make.cache_hit


@pytest.mark.gpu
def test_tensorrt_without_tensorrt_falls_back_to_torch_cuda(small_model, volumes_and_reference, tmp_path, caplog):
    if action_gpu.tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is installed here")
    _, _, volumes, reference = volumes_and_reference
    with caplog.at_level(logging.WARNING, logger=GPU_LOGGER):
        engine = make_engine("tensorrt", small_model["ckpt"], options={"precision": "fp16", "max_batch": 8})
    assert isinstance(engine, TorchCudaEngine) and "TensorRT is not installed" in caplog.text
    assert "running torch-cuda" in caplog.text
    assert_agrees(engine.predict(volumes[:8]), reference[:8], "fp16")


@pytest.mark.gpu
def test_tensorrt_on_an_onnx_file_without_tensorrt_falls_back(small_model, volumes_and_reference, tmp_path, caplog):
    if action_gpu.tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is installed here")
    pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript")
    pytest.importorskip("onnxruntime")
    from posestream.train.export import export_onnx

    _, _, volumes, reference = volumes_and_reference
    onnx_path = small_model["root"] / "x3d_s.onnx"
    if not onnx_path.exists():
        export_onnx(small_model["ckpt"], onnx_path)
    # The checkpoint beside it (same stem): torch-cuda.
    with caplog.at_level(logging.WARNING, logger=GPU_LOGGER):
        engine = make_engine("tensorrt", onnx_path)
    assert isinstance(engine, TorchCudaEngine) and "x3d_s.pth" in caplog.text
    # A lone ONNX file: the onnx engine (ONNX Runtime's CUDA provider when it has one).
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(onnx_path.read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=GPU_LOGGER):
        engine = make_engine("tensorrt", lone)
    assert isinstance(engine, OnnxEngine) and "no posestream checkpoint beside" in caplog.text
    np.testing.assert_allclose(engine.predict(volumes[:2]), reference[:2], rtol=0, atol=1e-3)


@pytest.mark.gpu
def test_torch_cuda_via_make_engine(small_model, volumes_and_reference):
    _, _, volumes, reference = volumes_and_reference
    engine = make_engine("torch-cuda", small_model["ckpt"], options={"max_batch": 8})
    assert isinstance(engine, TorchCudaEngine) and engine.precision == "fp16" and engine.max_batch == 8
    engine.warmup(4)
    assert engine.info()["graphs_captured"] >= 1
    assert_agrees(engine.predict(torch.from_numpy(volumes[:4])), reference[:4], "fp16")
    with pytest.raises(EngineError, match=r"expected volumes \[N, 17, T, H, W\]"):
        engine.predict(np.zeros((2, 13, 8, 32, 32), np.float32))
