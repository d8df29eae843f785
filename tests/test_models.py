"""The PoseConv3D networks: shapes, the paper's parameter / multiply-add figures, RGBPose-Conv3D."""
import numpy as np
import pytest
import torch

from posestream.skeleton import PYSKL_RELEASED_LIMBS
from posestream.train.models import (MODEL_NAMES, PAPER_TABLE, build_model, late_fusion, model_complexity,
                                     rgbpose_loss)

torch.set_num_threads(2)

POSE_MODELS = [n for n in MODEL_NAMES if n != "rgbpose_conv3d"]

# Our exact counts at the paper's input (regression pins; params exclude the final fc).
OURS = {
    "slowonly": (1_994_080, 15.631),
    "slowonly_wd": (7_897_792, 54.498),
    "slowonly_hr": (7_946_208, 72.234),
    "c3d": (6_929_440, 25.101),
    "c3d_s": (3_389_472, 16.777),
    "x3d": (530_742, 1.016),
    "x3d_s": (241_488, 0.569),
    "slowonly_volleyball": (508_336, 1.228),
}

# Where the faithful architecture does not meet the paper's figure, the relative deviation we
# expect (and check), with the reason.
EXPECTED_DEVIATION = {
    # Sec. 4.4.3 gives 1.6 GFLOPs for Pose-SlowOnly at width 16 on 17 x 12 x 56 x 56, but that
    # network does 1.23 G multiply-adds there (its parameter count, 0.508M vs 0.52M, agrees).
    # 1.6 G is what it does at 64 x 64, PYSKL's test-time resolution (see the test below).
    ("slowonly_volleyball", "gmacs"): -0.233,
}


@pytest.fixture(scope="module")
def complexity():
    return {name: model_complexity(name) for name in POSE_MODELS}


@pytest.mark.parametrize("name", POSE_MODELS)
def test_forward_small_input(name):
    model = build_model(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 17, 8, 32, 32))
    assert out.shape == (1, 5)
    assert torch.isfinite(out).all()
    assert model.name == name and model.paper_name == PAPER_TABLE[name]["paper_name"]
    assert model.paper_input_shape[0] == 17 and len(model.paper_input_shape) == 4


@pytest.mark.parametrize("name", POSE_MODELS)
def test_params_and_macs_against_paper(name, complexity):
    ours, paper = complexity[name], PAPER_TABLE[name]
    params, gmacs = OURS[name]
    assert ours["params_no_fc"] == params
    assert ours["gmacs"] == pytest.approx(gmacs, abs=2e-3)
    for key, ours_value, tolerance in (("params", ours["params_no_fc"], 0.03), ("gmacs", ours["gmacs"], 0.10)):
        deviation = ours_value / paper[key] - 1
        expected = EXPECTED_DEVIATION.get((name, key))
        if expected is None:
            assert abs(deviation) <= tolerance, f"{name} {key}: {ours_value:.4g} vs paper {paper[key]:.4g}"
        else:
            assert deviation == pytest.approx(expected, abs=0.01)


def test_volleyball_macs_match_the_paper_at_64x64():
    assert model_complexity("slowonly_volleyball", (17, 12, 64, 64))["gmacs"] == pytest.approx(1.6, rel=0.02)


def test_counting_on_meta_equals_counting_on_cpu():
    model = build_model("x3d_s", num_classes=7)
    cpu = model_complexity(model, (17, 8, 32, 32), device="cpu")
    assert cpu == model_complexity(model, (17, 8, 32, 32))
    assert cpu["params"] - cpu["params_no_fc"] == 216 * 7 + 7
    assert next(model.parameters()).device.type == "cpu"  # the model handed in is left alone


def test_training_step_updates_every_stage():
    model = build_model("slowonly", num_classes=4).train()
    logits = model(torch.rand(2, 17, 8, 32, 32))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for stage in ("stem", "layer1", "layer2", "layer3"):
        grads = [p.grad for n, p in model.backbone.named_parameters() if n.startswith(stage)]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), stage


def test_residual_blocks_start_as_identity_and_head_is_small():
    model = build_model("slowonly")
    for block in model.backbone.layer2:
        assert torch.count_nonzero(block.conv3.bn.weight) == 0
    assert model.head.fc.weight.std() < 0.02 and torch.count_nonzero(model.head.fc.bias) == 0
    assert isinstance(model.head.dropout, torch.nn.Dropout) and model.head.dropout.p == 0.5
    assert isinstance(build_model("slowonly", dropout=0).head.dropout, torch.nn.Identity)


@pytest.mark.parametrize("channels", [len(PYSKL_RELEASED_LIMBS), 19])
def test_limb_volumes(channels):
    model = build_model("x3d_s", num_classes=3, in_channels=channels).eval()
    assert model.paper_input_shape == (channels, 48, 56, 56)
    with torch.no_grad():
        assert model(torch.rand(1, channels, 8, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match=f"\\[N, {channels}, T, H, W\\]"):
        model(torch.rand(1, 18, 8, 32, 32))


def test_state_dict_names_follow_the_documented_pyskl_correspondence():
    keys = set(build_model("slowonly").state_dict())
    assert {"backbone.stem.conv.weight", "backbone.stem.bn.running_var", "backbone.layer1.0.conv1.bn.weight",
            "backbone.layer1.0.downsample.conv.weight", "backbone.layer3.2.conv3.conv.weight",
            "head.fc.weight", "head.fc.bias"} <= keys
    keys = set(build_model("x3d_s").state_dict())
    assert {"backbone.stem.conv_s.weight", "backbone.stem.conv_t.bn.weight", "backbone.conv5.conv.weight",
            "backbone.layer2.4.conv2.conv.weight"} <= keys
    keys = set(build_model("c3d").state_dict())
    assert {"backbone.conv1a.conv.weight", "backbone.conv5b.bn.weight"} <= keys
    keys = set(build_model("rgbpose_conv3d").state_dict())
    assert {"backbone.rgb_path.stem.conv.weight", "backbone.pose_path.layer3.2.conv3.bn.weight",
            "backbone.pose_to_rgb_res3.weight", "backbone.rgb_to_pose_res4.bn.weight",
            "head.fc_rgb.weight", "head.fc_pose.weight"} <= keys


def test_unknown_name():
    with pytest.raises(ValueError, match="slowonly_hr"):
        build_model("resnet50")


@pytest.fixture(scope="module")
def rgbpose():
    return build_model("rgbpose_conv3d", num_classes=5)


def test_rgbpose_paper_shapes(rgbpose):
    assert rgbpose.paper_input_shape == ((3, 8, 224, 224), (17, 32, 56, 56))
    c = model_complexity(rgbpose)
    assert c["params_no_fc"] == 35_994_208
    assert c["params"] - c["params_no_fc"] == (2048 + 512) * 5 + 2 * 5
    assert c["gmacs"] == pytest.approx(58.005, abs=1e-2)


def test_rgbpose_forward_loss_and_fusion(rgbpose):
    rgbpose.train()
    imgs, heatmaps = torch.rand(2, 3, 4, 64, 64), torch.rand(2, 17, 16, 16, 16)  # pose: 4x the frames, 1/4 the size
    rgb_logits, pose_logits = rgbpose(imgs, heatmaps)
    assert rgb_logits.shape == pose_logits.shape == (2, 5)
    labels = torch.tensor([1, 4])
    losses = rgbpose_loss(rgb_logits, pose_logits, labels)
    ce = torch.nn.functional.cross_entropy
    value = {k: v.item() for k, v in losses.items()}
    assert value["loss_rgb"] == pytest.approx(ce(rgb_logits, labels).item())
    assert value["loss_pose"] == pytest.approx(ce(pose_logits, labels).item())
    assert value["loss"] == pytest.approx(value["loss_rgb"] + value["loss_pose"])
    weighted = rgbpose_loss(rgb_logits, pose_logits, labels, weights=(0.5, 2.0))["loss"].item()
    assert weighted == pytest.approx(0.5 * value["loss_rgb"] + 2 * value["loss_pose"])
    losses["loss"].backward()
    bb = rgbpose.backbone
    for lateral in (bb.pose_to_rgb_res3, bb.pose_to_rgb_res4, bb.rgb_to_pose_res3.conv, bb.rgb_to_pose_res4.conv):
        assert lateral.weight.grad is not None and lateral.weight.grad.abs().sum() > 0
    rgbpose.zero_grad()

    rgbpose.eval()
    with torch.no_grad():
        rgb_logits, pose_logits = rgbpose(imgs, heatmaps)
    fused = late_fusion(rgb_logits.softmax(1), pose_logits.softmax(1))
    assert torch.allclose(fused, (rgb_logits.softmax(1) + pose_logits.softmax(1)) / 2)
    assert torch.allclose(fused.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="4x as many pose frames"):
        rgbpose(imgs, torch.rand(2, 17, 8, 16, 16))


def test_late_fusion_weights():
    rgb, pose = np.array([[0.7, 0.3]]), np.array([[0.2, 0.8]])
    assert np.allclose(late_fusion(rgb, pose), [[0.45, 0.55]])
    assert np.allclose(late_fusion(rgb, pose, (3, 1)), [[0.575, 0.425]])
    assert np.allclose(late_fusion(rgb, pose, (1, 0)), rgb)
    with pytest.raises(ValueError):
        late_fusion(rgb, pose, (0, 0))
