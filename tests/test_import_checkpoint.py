import fractions

import numpy as np
import pytest
import torch

from posestream.train.checkpoints import load_checkpoint, load_model
from posestream.train.import_checkpoint import (
    CheckpointImportError, classifier_key, from_pyskl_name, import_checkpoint, input_conv_key, to_pyskl_name,
    to_pyskl_state_dict,
)
from posestream.train.models import MODEL_NAMES, build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny forward passes: a single thread avoids oversubscription on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_model(arch, num_classes=7, in_channels=17, seed=0):
    """A model with every parameter and buffer random (BN statistics included), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(123)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            else:
                t.normal_(0, 0.1)
    return model


def _pyskl_state(model):
    return {k: v.clone() for k, v in to_pyskl_state_dict(model.state_dict()).items()}


def _assert_same_outputs(path, model, in_channels=17):
    loaded, card = load_model(path)
    x = torch.rand(2, in_channels, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    return card


@pytest.mark.parametrize("arch", ["slowonly", "x3d_s", "c3d_s"])
def test_pyskl_checkpoint_imports_exactly(tmp_path, arch):
    model = _random_model(arch)
    src, out = tmp_path / "pyskl.pth", tmp_path / "ours.pth"
    torch.save({"state_dict": _pyskl_state(model), "meta": {"epoch": 24, "config": "model = dict(...)"}}, src)
    report = import_checkpoint(src, arch, out)
    assert report.complete and report.num_classes == 7 and report.in_channels == 17 and report.arch == arch
    assert len(report.mapped) == len(model.state_dict())
    assert report.ignored_top_level == ["meta"] and not report.skipped
    card = _assert_same_outputs(out, model)
    assert (card.heatmap, card.limbs, card.clip_len, card.size) == ("joints", None, 48, 64)
    assert card.source == "imported from pyskl.pth (PYSKL naming)"
    # the BN step counters came along too
    _, state = load_checkpoint(out)
    assert all(int(v) == 123 for k, v in state.items() if k.endswith("num_batches_tracked"))


def test_pyskl_names_are_the_released_ones():
    names = set(_pyskl_state(build_model("slowonly", 60)))
    assert {"backbone.conv1.conv.weight", "backbone.conv1.bn.running_var", "cls_head.fc_cls.weight",
            "backbone.layer1.0.conv1.bn.weight", "backbone.layer3.2.conv3.conv.weight",
            "backbone.layer1.0.downsample.conv.weight"} <= names
    assert {"backbone.conv1_s.conv.weight", "backbone.conv1_t.conv.weight", "backbone.conv1_t.bn.weight",
            "backbone.conv5.conv.weight"} <= set(_pyskl_state(build_model("x3d_s", 60)))
    assert {"backbone.conv1a.conv.weight", "backbone.conv4b.bn.running_mean"} <= \
        set(_pyskl_state(build_model("c3d_s", 60)))
    assert to_pyskl_name("head.fc_pose.bias") == "cls_head.fc_pose.bias"
    assert to_pyskl_name("backbone.pose_to_rgb_res3.weight") == "backbone.rgb_path.layer2_lateral.conv.weight"
    assert to_pyskl_name("backbone.rgb_to_pose_res4.bn.weight") == "backbone.pose_path.layer2_lateral.bn.weight"


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_name_mapping_is_one_to_one_for_every_arch(arch):
    with torch.device("meta"):
        model = build_model(arch, num_classes=5, in_channels=9)
    ours = list(model.state_dict())
    pyskl = [to_pyskl_name(k) for k in ours]
    assert len(set(pyskl)) == len(ours)
    assert [from_pyskl_name(k) for k in pyskl] == ours
    state = model.state_dict()
    assert state[input_conv_key(arch)].shape[1] == 9
    assert state[classifier_key(arch)].shape[0] == 5


def test_ddp_prefix_and_raw_state_dict(tmp_path):
    model = _random_model("x3d_s", num_classes=4)
    src, out = tmp_path / "ddp.pth", tmp_path / "ours.pth"
    torch.save({f"module.{k}": v for k, v in _pyskl_state(model).items()}, src)   # raw dict, no wrapper
    report = import_checkpoint(src, "x3d_s", out)
    assert report.complete and report.num_classes == 4 and not report.ignored_top_level
    assert "module.cls_head.fc_cls.weight" not in report.mapped
    assert report.mapped["cls_head.fc_cls.weight"] == "head.fc.weight"
    _assert_same_outputs(out, model)


def _strict_refusal(tmp_path, state, arch="c3d_s"):
    src, out = tmp_path / "bad.pth", tmp_path / "ours.pth"
    torch.save({"state_dict": state}, src)
    with pytest.raises(CheckpointImportError) as err:
        import_checkpoint(src, arch, out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.pth"]
    message = str(err.value)
    assert "\n" not in message and "bad.pth" in message and "nothing written" in message
    return message


def test_unknown_key_is_refused(tmp_path):
    state = _pyskl_state(_random_model("c3d_s"))
    state["backbone.conv9.conv.weight"] = torch.zeros(3)
    message = _strict_refusal(tmp_path, state)
    assert "no place in the model: backbone.conv9.conv.weight" in message


def test_missing_key_is_refused(tmp_path):
    state = _pyskl_state(_random_model("c3d_s"))
    del state["backbone.conv3a.bn.running_var"]
    message = _strict_refusal(tmp_path, state)
    assert "missing from the checkpoint: backbone.conv3a.bn.running_var" in message


def test_wrong_shape_is_refused(tmp_path):
    state = _pyskl_state(_random_model("c3d_s"))
    state["backbone.conv2a.bn.weight"] = torch.zeros(65)
    message = _strict_refusal(tmp_path, state)
    assert "backbone.conv2a.bn.weight: checkpoint [65] vs model [64]" in message


def test_every_problem_is_listed_in_one_error(tmp_path):
    state = _pyskl_state(_random_model("c3d_s"))
    state["cls_head.extra.weight"] = torch.zeros(1)
    del state["backbone.conv1a.bn.bias"]
    state["backbone.conv4b.conv.weight"] = torch.zeros(1, 1, 1, 1, 1)
    message = _strict_refusal(tmp_path, state)
    for key in ("cls_head.extra.weight", "backbone.conv1a.bn.bias", "backbone.conv4b.conv.weight"):
        assert key in message


def test_wrong_arch_gets_a_hint(tmp_path):
    message = _strict_refusal(tmp_path, _pyskl_state(_random_model("c3d_s")), arch="slowonly")
    assert "--arch c3d_s" in message


def test_given_num_classes_must_match_the_classifier(tmp_path):
    src = tmp_path / "m.pth"
    torch.save({"state_dict": _pyskl_state(_random_model("c3d_s", num_classes=7))}, src)
    expected = r"cls_head.fc_cls.weight: checkpoint \[7, 256\] vs model \[9, 256\]"
    with pytest.raises(CheckpointImportError, match=expected):
        import_checkpoint(src, "c3d_s", tmp_path / "o.pth", num_classes=9)
    assert not (tmp_path / "o.pth").exists()


def test_non_strict_imports_what_fits_and_reports_the_rest(tmp_path):
    model = _random_model("c3d_s")
    state = _pyskl_state(model)
    state["backbone.extra.weight"] = torch.zeros(2)
    del state["backbone.conv1a.bn.bias"]
    state["backbone.conv2a.bn.weight"] = torch.zeros(65)
    src, out = tmp_path / "m.pth", tmp_path / "ours.pth"
    torch.save({"state_dict": state}, src)
    report = import_checkpoint(src, "c3d_s", out, strict=False)
    assert not report.complete
    assert report.unplaced == ["backbone.extra.weight"]
    assert report.missing == ["backbone.conv1a.bn.bias"]
    assert report.mismatched == ["backbone.conv2a.bn.weight: checkpoint [65] vs model [64]"]
    assert "NOT COMPLETE" in report.summary()
    card, weights = load_checkpoint(out)
    assert card.extra["import"]["missing"] == ["backbone.conv1a.bn.bias"]
    assert torch.equal(weights["backbone.conv3a.conv.weight"], state["backbone.conv3a.conv.weight"])
    assert torch.equal(weights["backbone.conv1a.bn.bias"], torch.zeros(32))        # fresh init
    assert torch.equal(weights["backbone.conv2a.bn.weight"], torch.ones(64))      # fresh init
    load_model(out)


def test_limb_import_records_the_released_limb_order(tmp_path):
    model = _random_model("slowonly", num_classes=3)
    src, out = tmp_path / "limb.pth", tmp_path / "ours.pth"
    torch.save({"state_dict": _pyskl_state(model)}, src)
    report = import_checkpoint(src, "slowonly", out, heatmap="limbs", class_names=["a", "b", "c"])
    assert report.limbs == "pyskl_released"
    card = _assert_same_outputs(out, model)
    assert (card.heatmap, card.limbs, card.class_names) == ("limbs", "pyskl_released", ["a", "b", "c"])
    import_checkpoint(src, "slowonly", out, heatmap="limbs", limbs="pyskl_default")
    assert load_checkpoint(out)[0].limbs == "pyskl_default"
    with pytest.raises(ValueError, match="joint model"):
        import_checkpoint(src, "slowonly", out, limbs="pyskl_released")


def test_channel_count_must_match_the_heatmap(tmp_path):
    src = tmp_path / "m.pth"
    torch.save({"state_dict": _pyskl_state(_random_model("x3d_s", in_channels=18))}, src)
    with pytest.raises(CheckpointImportError, match="takes 18 heatmap channels"):
        import_checkpoint(src, "x3d_s", tmp_path / "o.pth")
    assert not (tmp_path / "o.pth").exists()


def test_python_objects_in_meta_need_trust(tmp_path):
    model = _random_model("c3d_s")
    src, out = tmp_path / "meta.pth", tmp_path / "ours.pth"
    torch.save({"state_dict": _pyskl_state(model), "meta": {"ratio": fractions.Fraction(1, 3)}}, src)
    with pytest.raises(CheckpointImportError) as err:
        import_checkpoint(src, "c3d_s", out)
    message = str(err.value)
    assert "meta.pth" in message and "--trust-pickle" in message and "fractions.Fraction" in message
    assert "\n" not in message and not out.exists()
    report = import_checkpoint(src, "c3d_s", out, trusted=True)
    assert report.complete and report.ignored_top_level == ["meta"]
    _assert_same_outputs(out, model)


def test_numpy_scalars_in_meta_load_without_trust(tmp_path):
    src, out = tmp_path / "m.pth", tmp_path / "ours.pth"
    meta = {"hook_msgs": {"best_score": np.float64(0.93), "best_epoch": np.int64(20)}}
    torch.save({"state_dict": _pyskl_state(_random_model("c3d_s")), "meta": meta}, src)
    assert import_checkpoint(src, "c3d_s", out).complete


def test_mmaction2_data_preprocessor_is_skipped_and_listed(tmp_path):
    model = _random_model("x3d_s")
    state = _pyskl_state(model)
    state["data_preprocessor.mean"] = torch.zeros(1, 1, 1, 1)
    state["data_preprocessor.std"] = torch.ones(1, 1, 1, 1)
    src, out = tmp_path / "mmaction.pth", tmp_path / "ours.pth"
    torch.save({"meta": {"epoch": 24}, "state_dict": state, "message_hub": {}, "optimizer": {"state": {}}}, src)
    report = import_checkpoint(src, "x3d_s", out)
    assert report.complete and sorted(report.skipped) == ["data_preprocessor.mean", "data_preprocessor.std"]
    assert "not a model weight" in report.skipped["data_preprocessor.mean"]
    assert report.ignored_top_level == ["meta", "message_hub", "optimizer"]
    assert "skipped data_preprocessor.std" in report.summary()
    card = _assert_same_outputs(out, model)
    assert card.source == "imported from mmaction.pth (MMAction2 1.x naming)"
    assert card.extra["import"]["data_preprocessor"] == {"data_preprocessor.mean": [0.0],
                                                         "data_preprocessor.std": [1.0]}


def test_num_classes_is_inferred_or_required(tmp_path):
    state = _pyskl_state(_random_model("c3d_s", num_classes=120))
    src, out = tmp_path / "m.pth", tmp_path / "ours.pth"
    torch.save(state, src)
    assert import_checkpoint(src, "c3d_s", out).num_classes == 120
    assert load_checkpoint(out)[0].num_classes == 120
    del state["cls_head.fc_cls.weight"], state["cls_head.fc_cls.bias"]
    torch.save(state, src)
    with pytest.raises(CheckpointImportError, match="cannot infer the number of classes.*cls_head.fc_cls.weight"):
        import_checkpoint(src, "c3d_s", out, strict=False)
    report = import_checkpoint(src, "c3d_s", out, strict=False, num_classes=11)
    assert report.num_classes == 11 and report.missing == ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]


def test_unreadable_files_get_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointImportError, match=r"junk.pth: not a readable torch checkpoint") as err:
        import_checkpoint(junk, "c3d_s", tmp_path / "o.pth")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointImportError, match="nope.pth: no such file"):
        import_checkpoint(tmp_path / "nope.pth", "c3d_s", tmp_path / "o.pth")
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointImportError, match="no state dict"):
        import_checkpoint(lst, "c3d_s", tmp_path / "o.pth")
    with pytest.raises(CheckpointImportError, match="unknown arch"):
        import_checkpoint(lst, "resnet", tmp_path / "o.pth")
    ours = tmp_path / "ours.pth"
    src = tmp_path / "src.pth"
    torch.save(_pyskl_state(_random_model("c3d_s")), src)
    import_checkpoint(src, "c3d_s", ours)
    with pytest.raises(CheckpointImportError, match="already a posestream checkpoint"):
        import_checkpoint(ours, "c3d_s", tmp_path / "o.pth")
    with pytest.raises(CheckpointImportError, match="overwrite the source"):
        import_checkpoint(src, "c3d_s", src)
    assert not (tmp_path / "o.pth").exists()
