"""The shipped default action model (posestream/engines/models/x3d_s_synthetic.*): the first
clips of its recipe's validation splits are remade here (the families dataset is deterministic
for a seed, clip by clip: posestream.train.data.served.families_validation_clips), and the
committed weights must score on them what the model card says."""
import re
from pathlib import Path

import numpy as np
import pytest

from posestream.actions import ACTIONS
from posestream.engines.action import make_engine
from posestream.realtime.pipeline import default_action_model
from posestream.train.checkpoints import load_model
from posestream.train.config import load_config
from posestream.train.data import ragdoll
from posestream.train.data.clips import save_dataset
from posestream.train.evaluate import evaluate

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not ragdoll.available(), reason="the recipe's falls need MuJoCo and dm-control")]

MODELS = Path(default_action_model()).parent
ONNX = MODELS / "x3d_s_synthetic.onnx"
CHECKPOINT = MODELS / "x3d_s_synthetic.pth"
CARD = MODELS / "x3d_s_synthetic.md"

#: How many clips of each split the test remakes (the card states its figures on these).
CHECK_CLIPS = {"val": 240, "val_served": 240, "val_fall_push": 120}


def _card_number(label: str) -> float:
    """The shipped model's percentage in the model card's row ``label`` (its last column),
    e.g. ``| val, first 240 | 66.7 | 72.5 |`` -> 72.5."""
    match = re.search(rf"\|\s*{re.escape(label)}\s*\|([^\n]*)", CARD.read_text())
    assert match, f"{CARD} states no '{label}' figure"
    return float(re.findall(r"[0-9]+(?:\.[0-9]+)?", match.group(1))[-1])


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory):
    """The first clips of the recipe's validation splits (`posestream synth --families --seed 0`)."""
    from posestream.train.data.served import families_validation_clips

    split, annotations = {}, []
    for name, count in CHECK_CLIPS.items():
        clips = families_validation_clips(name, count, seed=0)
        split[name] = [c["frame_dir"] for c in clips]
        annotations += clips
    path = tmp_path_factory.mktemp("families") / "families_check.pkl"
    save_dataset(path, {"split": split, "annotations": annotations, "class_names": ACTIONS})
    return path


def test_the_files_and_their_card_agree():
    model, card = load_model(CHECKPOINT)
    assert (card.arch, card.heatmap, card.clip_len, card.size) == ("x3d_s", "joints", 32, 48)
    assert card.class_names == list(ACTIONS)
    engine = make_engine("onnx", ONNX)
    assert engine.card.class_names == card.class_names and engine.input_shape == (17, 32, 48, 48)
    assert 0.2 < engine.card.extra["temperature"] < 5 and 0 <= engine.card.extra["min_confidence"] < 1
    text = CARD.read_text()
    for name in ACTIONS:
        assert name in text
    # the data it learned from, where that came from and its licence
    for source in ("posestream.train.data.synthetic", "humanoid_CMU.xml", "dm-control", "MuJoCo", "Apache-2.0"):
        assert source in text, source


@pytest.mark.parametrize("split", list(CHECK_CLIPS))
def test_validation_accuracy_is_what_the_card_says(recipe_data, tmp_path, split):
    cfg = load_config("synthetic_x3d_s_families").override(ann_file=str(recipe_data))
    result = evaluate(cfg, CHECKPOINT, split=split, num_clips=1, flip=False, out_dir=tmp_path, progress=False)
    top1 = 100 * result["top1"]
    assert top1 == pytest.approx(_card_number(f"{split}, first {CHECK_CLIPS[split]}"), abs=0.05)


def test_the_onnx_model_gives_the_checkpoints_answers(recipe_data):
    import torch

    from posestream.train.data.clips import load_dataset

    cfg = load_config("synthetic_x3d_s_families").override(ann_file=str(recipe_data))
    clips = load_dataset(recipe_data).clips("val_served")[:48]
    pipeline = cfg.pipeline("val")
    volumes = np.stack([pipeline(dict(c))["imgs"][0] for c in clips]).astype(np.float32)
    model, _ = load_model(CHECKPOINT)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(volumes)).numpy()
    got = make_engine("onnx", ONNX).predict(volumes)
    np.testing.assert_allclose(got, expected, atol=3e-4)  # as the recipe's `export --atol 3e-4`
