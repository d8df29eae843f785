import pickle

import pytest
import torch

from posestream.train.checkpoints import ModelCard, load_checkpoint, load_model, save_checkpoint
from posestream.train.models import build_model


def test_the_cards_model_names_are_the_zoos_registry():
    """The card validates names without importing torch, against its own list; that list must
    be exactly the networks the zoo builds, in the zoo's order."""
    from posestream.engines import card
    from posestream.train.models.zoo import SPECS

    assert card.MODEL_NAMES == tuple(SPECS)
    assert ModelCard is card.ModelCard  # checkpoints use the engines' card, not a copy


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = build_model("x3d_s", num_classes=5).eval()
    card = ModelCard(arch="x3d_s", num_classes=5, heatmap="limbs", limbs="pyskl_released",
                     class_names=list("abcde"), source="test")
    path = tmp_path / "m.pth"
    save_checkpoint(path, card, model.state_dict())
    loaded, loaded_card = load_model(path)
    assert loaded_card == card
    x = torch.rand(2, 17, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,message", [
    (dict(arch="resnet"), "unknown arch"),
    (dict(heatmap="limbs"), "limb order"),
    (dict(limbs="pyskl_default"), "joint model has no limb order"),
    (dict(class_names=["a"]), "class names"),
])
def test_bad_cards_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelCard(**({"arch": "x3d_s", "num_classes": 2} | kwargs))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_or_broken_files_are_refused(tmp_path):
    other = tmp_path / "pyskl.pth"
    torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="import-checkpoint"):
        load_checkpoint(other)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"nope")
    with pytest.raises(ValueError, match="junk.pth: not a readable"):
        load_checkpoint(junk)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(ModelCard(arch="x3d_s", num_classes=2)))  # a pickled object, not a dict
    with pytest.raises(ValueError, match="evil.pth"):
        load_checkpoint(evil)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "m.pth"
    state = build_model("x3d_s", num_classes=3).state_dict()
    save_checkpoint(path, ModelCard(arch="x3d_s", num_classes=4), state)
    with pytest.raises(ValueError, match="do not fit x3d_s"):
        load_model(path)
