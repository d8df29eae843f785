"""Evaluation (posestream.train.evaluate): metrics by hand, clip/flip averaging, late fusion, the
confusion picture and pairs (Table 18), the robustness protocol (Table 7), results files and CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from posestream.cli import main
from posestream.train.checkpoints import ModelCard, save_checkpoint
from posestream.train.config import load_config
from posestream.train.data.clips import load_dataset, save_dataset
from posestream.train.data.sample import waving_and_walking_clip
from posestream.train.evaluate import (
    LIMB_KEYPOINTS,
    TABLE7_DROP_PROBS,
    average_clip_scores,
    compute_metrics,
    confusion_layout,
    confusion_matrix,
    drop_limb_keypoints,
    evaluate,
    format_results,
    fuse_results,
    late_fusion,
    mean_class_accuracy,
    most_confused_pairs,
    predict,
    save_confusion_png,
    topk_accuracy,
)
from posestream.train.trainer import ClipDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# Metrics by hand

# 6 classes, 5 videos. Labels 0, 0, 1, 2, 5; predictions 0, 1, 1, 2, 0.
SCORES = np.array([
    [.90, .10, .00, .00, .00, .00],   # label 0: right
    [.20, .50, .30, .00, .00, .00],   # label 0: predicted 1; the label is 2nd -> in the top 5
    [.00, .60, .40, .00, .00, .00],   # label 1: right
    [.10, .20, .30, .15, .25, .00],   # label 2: right
    [.50, .40, .30, .20, .10, .05],   # label 5: predicted 0; the label is 6th -> not in the top 5
])
LABELS = np.array([0, 0, 1, 2, 5])


def test_accuracies_of_a_hand_made_score_matrix():
    assert topk_accuracy(SCORES, LABELS, (1, 5)) == {1: 3 / 5, 5: 4 / 5}
    # per-class recall over the classes present: class 0 1/2, class 1 1/1, class 2 1/1, class 5 0/1
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert compute_metrics(SCORES, LABELS) == {"top1": 0.6, "top5": 0.8, "mean_class_accuracy": 0.625, "videos": 5}
    cm = confusion_matrix(SCORES.argmax(1), LABELS, 6)
    assert cm.sum() == 5 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[5, 0] == 1 and np.trace(cm) == 3
    with pytest.raises(ValueError, match="labels must lie in 0..5"):
        topk_accuracy(SCORES, [0, 0, 1, 2, 6])


def test_most_confused_pairs_rank_by_confusion_score_as_table_18():
    names = ["read", "write", "play with phone", "type"]
    cm = np.array([[10, 4, 7, 0],
                   [3, 10, 1, 5],
                   [2, 0, 10, 0],
                   [0, 1, 0, 10]])
    pairs = most_confused_pairs(cm, k=3, class_names=names)
    assert [(p["name_a"], p["name_b"], p["score"]) for p in pairs] == [
        ("read", "play with phone", 9), ("read", "write", 7), ("write", "type", 6)]
    assert pairs[0]["a_as_b"] == 7 and pairs[0]["b_as_a"] == 2
    tied = most_confused_pairs(np.array([[0, 0, 3], [2, 0, 1], [0, 2, 0]]))
    # (0, 2) and (1, 2) both score 3: the lower indices first; then (0, 1) with 2
    assert [(p["class_a"], p["class_b"], p["score"]) for p in tied] == [(0, 2, 3), (1, 2, 3), (0, 1, 2)]
    assert most_confused_pairs(np.eye(3, dtype=int)) == []


# ---------------------------------------------------------------------------------------------
# Multi-clip / flip averaging


def test_prob_averaging_is_softmax_then_mean_over_views():
    logits = np.random.default_rng(0).normal(size=(2, 20, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(average_clip_scores(logits, "prob"), probs.mean(1), rtol=1e-12)
    np.testing.assert_allclose(average_clip_scores(logits, "score"), logits.mean(1), rtol=1e-12)
    torch.testing.assert_close(average_clip_scores(torch.tensor(logits), "prob").double(),
                               torch.tensor(probs.mean(1)), rtol=1e-6, atol=1e-7)
    # averaging probabilities is not averaging logits: a probability is capped at 1, so one
    # extreme view cannot outvote two confident ones
    views = np.array([[[10.0, 0.0], [0.0, 4.0], [0.0, 4.0]]])
    assert average_clip_scores(views, "prob").argmax() == 1 and average_clip_scores(views, "score").argmax() == 0


def make_tiny_dataset(path, videos=3, frames=20):
    """Waving person = class 0, walking person = class 1, one person per clip; 4 train, 2 val."""
    annotations = []
    for seed in range(videos):
        base = waving_and_walking_clip(num_frames=frames, img_shape=(120, 160), seed=seed)
        for person in (0, 1):
            annotations.append({**base, "keypoint": base["keypoint"][person:person + 1].copy(),
                                "keypoint_score": base["keypoint_score"][person:person + 1].copy(),
                                "label": person, "frame_dir": f"v{seed}_p{person}"})
    names = [c["frame_dir"] for c in annotations]
    save_dataset(path, {"split": {"train": names[:4], "val": names[4:]}, "annotations": annotations})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny pickle, the synthetic X3D-s config shrunk to 8 x 32 x 32, an untrained checkpoint."""
    root = tmp_path_factory.mktemp("eval")
    make_tiny_dataset(root / "tiny.pkl")
    cfg = load_config("synthetic_x3d_s").override(ann_file=root / "tiny.pkl", clip_len=8, size=32, train_size=32,
                                                  workers=0)
    torch.manual_seed(0)
    model = cfg.build_model()
    save_checkpoint(root / "model.pth", cfg.model_card(), model.state_dict())
    return root, cfg, model.eval()


class MeanLogits(torch.nn.Module):
    """A stand-in model: logits from each volume's per-channel means, recording its batches."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(17, 3)
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_ten_clip_flip_testing_averages_the_softmax_of_all_twenty_volumes(setup):
    root, cfg, _ = setup
    clips = load_dataset(root / "tiny.pkl").clips("val")
    pipeline = cfg.pipeline("test", num_clips=10, flip=True)
    model = MeanLogits()
    scores = predict(model, ClipDataset(clips, pipeline), batch_size=2, average_clips="prob")
    assert model.batches == [(40, 17, 8, 32, 32)]  # 2 videos x 10 clips x (original + mirrored)
    with torch.no_grad():
        for i, clip in enumerate(clips):
            volumes = torch.from_numpy(pipeline(clip)["imgs"])
            assert volumes.shape == (20, 17, 8, 32, 32)
            expected = torch.softmax(model.fc(volumes.mean(dim=(2, 3, 4))), -1).mean(0)
            np.testing.assert_allclose(scores[i], expected.numpy(), rtol=1e-5)
    single = predict(MeanLogits(), ClipDataset(clips, cfg.pipeline("test", num_clips=1, flip=False)), batch_size=2)
    assert single.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# Late fusion


def test_late_fusion_weights_runs_and_refuses_misaligned_ones(tmp_path):
    joint = np.array([[0.6, 0.4], [0.3, 0.7]], np.float32)
    limb = np.array([[0.2, 0.8], [0.1, 0.9]], np.float32)
    np.testing.assert_allclose(late_fusion([joint, limb]), (joint + limb) / 2)
    np.testing.assert_allclose(late_fusion([joint, limb], [3, 1]), (3 * joint + limb) / 4)
    np.save(tmp_path / "j.npy", joint)
    np.testing.assert_allclose(late_fusion([tmp_path / "j.npy", limb], [1, 0]), joint)
    with pytest.raises(ValueError, match="cannot be fused"):
        late_fusion([joint, limb[:1]])
    with pytest.raises(ValueError, match="2 weights for 1"):
        late_fusion([joint], [1, 1])


def test_fusing_evaluation_runs(setup, tmp_path):
    root, cfg, _ = setup
    a = evaluate(cfg, root / "model.pth", num_clips=1, flip=False, out_dir=tmp_path / "a", progress=False)
    b = evaluate(cfg, root / "model.pth", num_clips=2, flip=True, out_dir=tmp_path / "b", progress=False)
    fused = fuse_results([a["out_dir"], b["out_dir"]], [1, 2], out_dir=tmp_path / "ab")
    expected = (np.load(tmp_path / "a" / "scores.npy") + 2 * np.load(tmp_path / "b" / "scores.npy")) / 3
    np.testing.assert_allclose(np.load(tmp_path / "ab" / "scores.npy"), expected, rtol=1e-6)
    assert fused["top1"] == compute_metrics(expected, [0, 1])["top1"]
    assert json.loads((tmp_path / "ab" / "results.json").read_text())["weights"] == [1, 2]
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    meta["frame_dirs"] = meta["frame_dirs"][::-1]
    (tmp_path / "b" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="covers other videos"):
        fuse_results([a["out_dir"], b["out_dir"]])


# ---------------------------------------------------------------------------------------------
# Confusion picture


def test_confusion_png_has_the_layouts_size_and_shades_the_cells(tmp_path):
    names = ["walk", "fall", "sit down"]
    cm = np.diag([4, 2, 3])
    size = save_confusion_png(tmp_path / "c.png", cm, names)
    layout = confusion_layout(3, names)
    image = Image.open(tmp_path / "c.png")
    assert image.format == "PNG" and image.size == size == layout["size"]
    assert layout["left"] > 0 and layout["cell"] == 28  # big cells, labelled
    assert image.size == (layout["left"] + 3 * 28 + 8, layout["top"] + 3 * 28 + 8)

    def cell(i, j):
        return image.getpixel((layout["left"] + 4 + j * 28 + 14, layout["top"] + 4 + i * 28 + 14))

    assert cell(1, 1) == (8, 48, 107) and cell(0, 1) == (255, 255, 255)  # dark diagonal, white elsewhere
    assert np.asarray(image)[:layout["top"], layout["left"]:].min() < 128  # column labels drawn above
    many = confusion_layout(400)  # Kinetics: small cells, no text
    assert many["left"] == many["top"] == 0 and many["size"] == (400 * many["cell"] + 8,) * 2


# ---------------------------------------------------------------------------------------------
# Robustness (Table 7)


def make_clip(frames=400, persons=2):
    rng = np.random.default_rng(1)
    return {"keypoint": rng.uniform(10, 100, (persons, frames, 17, 2)).astype(np.float32),
            "keypoint_score": rng.uniform(0.5, 1, (persons, frames, 17)).astype(np.float32),
            "img_shape": (120, 160), "total_frames": frames, "label": 0, "frame_dir": "c"}


def test_dropping_at_p_1_removes_exactly_one_limb_keypoint_per_person_and_frame():
    clip = make_clip()
    before = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in clip.items()}
    out = drop_limb_keypoints(clip, 1.0, rng=0)
    changed = out["keypoint_score"] != clip["keypoint_score"]              # [M, T, V]
    assert changed.sum(axis=2).tolist() == [[1] * 400] * 2                  # one per person and frame
    assert set(np.flatnonzero(changed.any(axis=(0, 1)))) == set(LIMB_KEYPOINTS)  # all 8, only those
    assert set(LIMB_KEYPOINTS) == {7, 8, 9, 10, 13, 14, 15, 16}              # elbows, wrists, knees, ankles
    assert np.all(out["keypoint_score"][changed] == 0) and np.all(out["keypoint"][changed] == 0)  # removed
    np.testing.assert_array_equal(out["keypoint"][~changed], clip["keypoint"][~changed])
    for key in ("keypoint", "keypoint_score"):                              # the input is untouched
        np.testing.assert_array_equal(clip[key], before[key])
    np.testing.assert_array_equal(drop_limb_keypoints(clip, 1.0, rng=0)["keypoint"], out["keypoint"])
    score_only = drop_limb_keypoints(clip, 1.0, rng=0, mode="score")
    assert np.all(score_only["keypoint"] == clip["keypoint"])


@pytest.mark.parametrize("p", TABLE7_DROP_PROBS)
def test_drop_probability_is_per_person_and_frame(p):
    clip = make_clip()
    out = drop_limb_keypoints(clip, p, rng=5)
    dropped = (out["keypoint_score"] != clip["keypoint_score"]).any(axis=2).mean()
    assert dropped == pytest.approx(p, abs=0.05)


def test_evaluate_writes_scores_json_and_the_robustness_table(setup, tmp_path):
    root, cfg, _ = setup
    result = evaluate(cfg, root / "model.pth", num_clips=2, flip=True, drop_probs=TABLE7_DROP_PROBS,
                      out_dir=tmp_path, progress=False)
    assert (result["split"], result["num_clips"], result["flip"], result["videos"]) == ("val", 2, True, 2)
    scores = np.load(tmp_path / "scores.npy")
    assert scores.shape == (2, cfg.num_classes) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)  # averaged probabilities
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["frame_dirs"] == ["v2_p0", "v2_p1"] and meta["labels"] == [0, 1]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["top1"] == result["top1"] == compute_metrics(scores, [0, 1])["top1"]
    rows = saved["robustness"]["rows"]
    assert [r["p"] for r in rows] == list(TABLE7_DROP_PROBS)
    assert not np.allclose(np.load(tmp_path / "scores_drop_1.npy"), scores)  # the model saw other volumes
    assert Image.open(tmp_path / "confusion.png").size == tuple(saved["confusion_png_size"])
    text = format_results(result)
    assert "top-1" in text and "robustness" in text and "0.125" in text


def test_a_checkpoint_that_does_not_fit_the_config_is_refused(setup, tmp_path):
    root, cfg, model = setup
    card = ModelCard(arch="x3d_s", num_classes=cfg.num_classes, heatmap="limbs", limbs="pyskl_released")
    save_checkpoint(tmp_path / "limb.pth", card, model.state_dict())
    with pytest.raises(ValueError, match="heatmap='limbs' but .* has heatmap='joints'"):
        evaluate(cfg, tmp_path / "limb.pth", out_dir=tmp_path / "out", progress=False)


# ---------------------------------------------------------------------------------------------
# The commands `posestream train` / `test` / `fuse`, from the command line to the results


def test_command_line_train_test_and_fuse(setup, tmp_path, capsys):
    root, _, _ = setup
    base = load_config("synthetic_x3d_s").source
    config = tmp_path / "tiny_config.py"
    tiny = str(root / "tiny.pkl")
    config.write_text(f"_base_ = {base!r}\n"
                      f"data = dict(train=dict(dataset=dict(ann_file={tiny!r})), val=dict(ann_file={tiny!r}), "
                      f"test=dict(ann_file={tiny!r}))\n")

    options = ["data.train.dataset.pipeline.0.clip_len=8", "data.val.pipeline.0.clip_len=8",
               "data.test.pipeline.0.clip_len=8", "data.test.pipeline.3.scale=(32,32)", "data.workers_per_gpu=0"]
    assert main(["train", str(config), "--work-dir", str(tmp_path / "run"), "--max-steps", "1", "--quiet",
                 "--cfg-options", *options]) == 0
    assert "1 steps" in capsys.readouterr().out
    best = str(tmp_path / "run" / "best.pth")
    assert main(["test", str(config), best, "--num-clips", "2", "--quiet", "--out", str(tmp_path / "t1"),
                 "--drop-probs", "0", "1", "--cfg-options", *options]) == 0
    out = capsys.readouterr().out
    assert "2 clips + flip" in out and "robustness" in out
    assert main(["test", str(config), best, "--num-clips", "1", "--no-flip", "--quiet", "--out", str(tmp_path / "t2"),
                 "--cfg-options", *options]) == 0
    assert main(["fuse", str(tmp_path / "t1"), str(tmp_path / "t2"), "--weights", "1", "1"]) == 0
    assert "late fusion" in capsys.readouterr().out
