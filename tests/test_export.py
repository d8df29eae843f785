"""ONNX export: every model variant matches torch in ONNX Runtime (dynamic batch), the model
card round-trips through the file's metadata, and an export that does not match is refused
without leaving a file. Small inputs (T=8, 32x32) keep the file fast (~1 min on 2 cores)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from posestream.engines.action import OnnxEngine, card_from_metadata, read_onnx_metadata
from posestream.train import export
from posestream.train.checkpoints import ModelCard, save_checkpoint
from posestream.train.export import ExportError, ExportVerificationError, export_model, export_onnx
from posestream.train.models import MODEL_NAMES, build_model

SMALL = (17, 8, 32, 32)
RGBPOSE_SMALL = ((3, 2, 32, 32), (17, 8, 8, 8))   # RGB 2 frames at 32x32, pose 4x the frames at 1/4 the size


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Freshly built models have BatchNorm at identity and a 0.01-std classifier, so their
    logits are ~1e-3 and a 1e-4 tolerance would say little. Give BN running statistics and
    affine terms and the classifier realistic values, so logits are O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                # A residual branch's last BN starts at zero (as in PYSKL): keep it small, so
                # activations do not grow with depth.
                low, high = (0.5, 1.5) if m.weight.any() else (0.0, 0.2)
                m.weight.copy_(low + (high - low) * torch.rand(n, generator=g))
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 4 / m.in_features ** 0.5)
    return model.eval()


def _run(session, names, inputs):
    return session.run(None, dict(zip(names, inputs)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_variant_matches_torch_in_onnx_runtime(name, tmp_path):
    torch.manual_seed(0)
    model = lively(build_model(name, num_classes=5))
    shapes = RGBPOSE_SMALL if name == "rgbpose_conv3d" else (SMALL,)
    path = tmp_path / f"{name}.onnx"
    report = export_model(model, path, shapes if len(shapes) > 1 else shapes[0])
    assert report.verified and report.batch_sizes == [1, 3]
    assert report.max_abs_diff <= 1e-4
    assert report.max_abs_logit > 0.05, "logits too small for the tolerance to mean anything"
    assert report.opset == 18 and path.stat().st_size == report.size_bytes

    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}
    names = [i.name for i in proto.graph.input]
    assert names == (["rgb", "volume"] if len(shapes) > 1 else ["volume"])
    assert [o.name for o in proto.graph.output] == (["rgb_logits", "pose_logits"] if len(shapes) > 1 else ["logits"])
    for graph_input, shape in zip(proto.graph.input, shapes):
        dims = graph_input.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].HasField("dim_value")   # a symbolic batch
        assert [d.dim_value for d in dims[1:]] == list(shape)

    # Batch sizes the exporter did not verify itself: 2 and 5.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for n in (2, 5):
        inputs = [rng.random((n, *s), dtype=np.float32) for s in shapes]
        with torch.inference_mode():
            ref = model(*[torch.from_numpy(x) for x in inputs])
        refs = ref if isinstance(ref, tuple) else (ref,)
        for got, want in zip(_run(session, names, inputs), refs):
            assert got.shape == (n, 5)
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)


def _checkpoint(tmp_path, **card_kw):
    card = ModelCard(**({"arch": "x3d_s", "num_classes": 3, "clip_len": 8, "size": 32} | card_kw))
    model = lively(build_model(card.arch, num_classes=card.num_classes, in_channels=card.in_channels))
    path = tmp_path / "model.pth"
    save_checkpoint(path, card, model.state_dict())
    return path, card, model


def test_checkpoint_export_carries_the_card(tmp_path):
    from posestream.engines.raster import num_channels

    k = num_channels(17, "pyskl_released")
    ckpt, card, _ = _checkpoint(tmp_path, in_channels=k, heatmap="limbs", limbs="pyskl_released",
                                class_names=["wave", "walk", "fall"], sigma=0.7, source="unit test")
    out = tmp_path / "model.onnx"
    report = export_onnx(ckpt, out)
    assert report.arch == "x3d_s" and report.input_shapes == [[None, k, 8, 32, 32]]
    props = read_onnx_metadata(out)
    assert card_from_metadata(props) == card
    # Readable copies for people and tools (Netron, onnx.load) beside the authoritative JSON.
    assert props["arch"] == "x3d_s" and props["limbs"] == "pyskl_released" and props["clip_len"] == "8"
    assert props["posestream.precision"] == "fp32"
    engine = OnnxEngine(out)
    assert engine.card == card and engine.input_shape == (k, 8, 32, 32) and engine.class_names == card.class_names


def test_an_export_that_does_not_match_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    ckpt, card, _ = _checkpoint(tmp_path)
    impostor = lively(build_model("x3d_s", num_classes=3), seed=1)   # same shapes, other weights
    real_to_onnx = export._to_onnx
    monkeypatch.setattr(export, "_to_onnx", lambda model, *a, **kw: real_to_onnx(impostor, *a, **kw))
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportVerificationError, match="disagrees with torch .* nothing written"):
        export_onnx(ckpt, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]   # no temporary left either
    # An older file at the destination is left as it was.
    out.write_bytes(b"previous export")
    with pytest.raises(ExportVerificationError):
        export_onnx(ckpt, out)
    assert out.read_bytes() == b"previous export"


def test_a_tighter_tolerance_than_float_noise_is_refused(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path)
    with pytest.raises(ExportVerificationError, match="atol 0"):
        export_onnx(ckpt, tmp_path / "m.onnx", atol=0.0)
    assert not (tmp_path / "m.onnx").exists()


def test_fixed_batch_export(tmp_path):
    ckpt, _, model = _checkpoint(tmp_path)
    out = tmp_path / "fixed.onnx"
    report = export_onnx(ckpt, out, batch_dynamic=False, samples=2)
    assert report.input_shapes == [[1, 17, 8, 32, 32]] and report.batch_sizes == [1]
    engine = OnnxEngine(out)
    x = np.random.default_rng(0).random((3, *SMALL), dtype=np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(engine.predict(x), model(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-4)


def test_bad_arguments_get_one_line_errors(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path)
    with pytest.raises(ExportError, match="opset 16 is too old"):
        export_onnx(ckpt, tmp_path / "m.onnx", opset=16)
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(ckpt, tmp_path / "no" / "m.onnx")
    with pytest.raises(ValueError, match="missing.pth: no such file"):
        export_onnx(tmp_path / "missing.pth", tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"\(K, T, H, W\)"):
        export_model(build_model("x3d_s", 3), tmp_path / "m.onnx", (17, 8, 32))
    with pytest.raises(ExportError, match=r"x3d_s does not take inputs of shape \[\[2, 13, 8, 32, 32\]\]"):
        export_model(build_model("x3d_s", 3), tmp_path / "m.onnx", (13, 8, 32, 32))
    assert not (tmp_path / "m.onnx").exists()
