"""Training: PYSKL configs translated (posestream.train.config), every shipped config trained a step
on a tiny generated pickle, exact resume, Ctrl-C, DistributedDataParallel (posestream.train.trainer)."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from posestream.train.checkpoints import ModelCard, load_checkpoint, load_model, save_checkpoint
from posestream.train.config import (
    CONFIG_DIR,
    ConfigError,
    apply_options,
    load_config,
    parse_cfg_options,
    read_config_file,
    shipped_configs,
    translate,
)
from posestream.train.data.clips import save_dataset
from posestream.train.data.sample import waving_and_walking_clip
from posestream.train.trainer import ClipDataset, EpochSampler, load_training_state, lr_at, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SPLIT_PAIRS = [("xsub_train", "xsub_val"), ("xview_train", "xview_val"), ("xset_train", "xset_val"),
               ("train", "val"), ("train1", "test1")]


def make_tiny_dataset(path, videos: int = 3, frames: int = 20) -> None:
    """Two classes cut from the sample clip, one person each: the waving person (label 0) and the
    walking one (label 1). Four training clips, two validation clips, under every split name the
    shipped configs use."""
    annotations = []
    for seed in range(videos):
        base = waving_and_walking_clip(num_frames=frames, img_shape=(120, 160), seed=seed)
        for person in (0, 1):
            annotations.append({**base, "keypoint": base["keypoint"][person:person + 1].copy(),
                                "keypoint_score": base["keypoint_score"][person:person + 1].copy(),
                                "label": person, "frame_dir": f"v{seed}_p{person}"})
    names = [c["frame_dir"] for c in annotations]
    split = {}
    for train_name, val_name in SPLIT_PAIRS:
        split[train_name], split[val_name] = names[:4], names[4:]
    save_dataset(path, {"split": split, "annotations": annotations})


@pytest.fixture(scope="session")
def tiny_pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    make_tiny_dataset(path)
    return str(path)


def small(cfg, pkl, **changes):
    """A config shrunk for a CPU test: 8-frame 16x16 volumes, batches of 2, no loader workers."""
    settings = dict(ann_file=pkl, clip_len=8, size=16, train_size=16, batch_size=2, val_batch_size=2, workers=0,
                    load_from=None)
    settings.update(changes)
    return cfg.override(**settings)


# ---------------------------------------------------------------------------------------------
# Shipped configs: what each translates to


TRAIN_STEPS = ["UniformSampleFrames", "PoseDecode", "PoseCompact", "Resize", "RandomResizedCrop", "Resize", "Flip",
               "GeneratePoseTarget", "FormatShape"]
TEST_STEPS = ["UniformSampleFrames", "PoseDecode", "PoseCompact", "Resize", "GeneratePoseTarget", "FormatShape"]

# dataset: (ann_file, classes, train split, test split, lr, weight decay, batch, lr policy, epochs, test size)
DATASETS = {
    "ntu60_xsub": ("data/nturgbd/ntu60_hrnet.pkl", 60, "xsub_train", "xsub_val", 0.4, 3e-4, 32, "CosineAnnealing", 24, 64),
    "ntu60_xview": ("data/nturgbd/ntu60_hrnet.pkl", 60, "xview_train", "xview_val", 0.4, 3e-4, 32, "CosineAnnealing", 24, 64),
    "ntu120_xsub": ("data/nturgbd/ntu120_hrnet.pkl", 120, "xsub_train", "xsub_val", 0.4, 3e-4, 32, "CosineAnnealing", 24, 64),
    "ntu120_xset": ("data/nturgbd/ntu120_hrnet.pkl", 120, "xset_train", "xset_val", 0.4, 3e-4, 32, "CosineAnnealing", 24, 64),
    "gym": ("data/gym/gym_hrnet.pkl", 99, "train", "val", 0.4, 3e-4, 32, "CosineAnnealing", 24, 64),
    "k400": ("data/k400/k400_hrnet.pkl", 400, "train", "val", 0.4, 1e-4, 32, "CosineAnnealing", 24, 64),
    "ucf101": ("data/ucf101/ucf101_hrnet.pkl", 101, "train1", "test1", 0.01, 3e-4, 16, "Step", 12, 56),
    "hmdb51": ("data/hmdb51/hmdb51_hrnet.pkl", 51, "train1", "test1", 0.01, 1e-4, 16, "Step", 12, 56),
}
SHIPPED = [f"{d}_{m}" for d in DATASETS for m in ("joint", "limb")] + ["synthetic_x3d_s", "synthetic_x3d_s_ft",
                                                                     "synthetic_x3d_s_extra",
                                                                     "synthetic_x3d_s_families"]


def test_the_shipped_configs_are_the_expected_ones():
    assert sorted(shipped_configs()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_translates_to_the_papers_setting(name):
    cfg = load_config(name)
    if name.startswith("synthetic_x3d_s"):
        from posestream.train.data.synthetic import ACTIONS

        assert (cfg.arch, cfg.num_classes, cfg.heatmap, cfg.in_channels) == ("x3d_s", len(ACTIONS), "joints", 17)
        assert cfg.class_names == ACTIONS
        # stage 3 trains on data/synthetic_extra.pkl: the same val split, more train subjects
        ann_file = {"synthetic_x3d_s_extra": "data/synthetic_extra.pkl",
                    "synthetic_x3d_s_families": "data/families.pkl"}.get(name, "data/synthetic.pkl")
        for which in ("train", "val", "test"):
            assert cfg.split_config(which).ann_file == ann_file
        assert (cfg.train.split, cfg.val.split, cfg.test.split) == ("train", "val", "val")
        assert cfg.batch_size <= 16 and cfg.clip_len <= 48
        assert cfg.precise_bn == {"num_batches": 50} and cfg.optimizer["type"] == "AdamW"
        if name == "synthetic_x3d_s_ft":  # stage 2 of the shipped model: from stage 1's weights
            assert cfg.load_from == "work_dirs/posestream/synthetic_x3d_s/epoch_10.pth"
            assert (cfg.optimizer["lr"], cfg.total_epochs) == (3e-4, 8)
        if name == "synthetic_x3d_s_extra":  # stage 3: from stage 2's weights
            assert cfg.load_from == "work_dirs/posestream/synthetic_x3d_s_ft/epoch_8.pth"
            assert (cfg.optimizer["lr"], cfg.total_epochs) == (3e-4, 6)
        if name == "synthetic_x3d_s_families":  # stage 4: the broad generator, from stage 3's weights
            assert cfg.load_from == "work_dirs/posestream/synthetic_x3d_s_extra/epoch_6.pth"
        return
    dataset, modality = name.rsplit("_", 1)
    ann_file, classes, train_split, test_split, lr, wd, batch, policy, epochs, size = DATASETS[dataset]
    assert cfg.arch == "slowonly"  # the paper's Pose-SlowOnly, stages (4, 6, 3), everywhere
    assert (cfg.num_classes, cfg.in_channels, cfg.dropout, cfg.average_clips) == (classes, 17, 0.5, "prob")
    assert (cfg.heatmap, cfg.limbs) == (("joints", None) if modality == "joint" else ("limbs", "pyskl_released"))
    for which, split in (("train", train_split), ("val", test_split), ("test", test_split)):
        assert (cfg.split_config(which).ann_file, cfg.split_config(which).split) == (ann_file, split)
    assert cfg.train.times == 10
    assert [s.name for s in cfg.train.pipeline] == TRAIN_STEPS
    assert [s.name for s in cfg.test.pipeline] == TEST_STEPS
    assert (cfg.clip_len, cfg.num_clips, cfg.flip_test, cfg.size) == (48, 10, True, size)
    assert cfg.optimizer == dict(type="SGD", lr=lr, momentum=0.9, weight_decay=wd)
    assert cfg.precise_bn is None  # PYSKL has no such step
    assert cfg.grad_clip == dict(max_norm=40, norm_type=2)
    assert (cfg.batch_size, cfg.test_batch_size, cfg.lr_config["policy"], cfg.total_epochs) == (batch, 1, policy, epochs)
    if policy == "CosineAnnealing":
        assert cfg.lr_config == dict(policy="CosineAnnealing", by_epoch=False, min_lr=0)
    else:  # PYSKL's Kinetics-pretrained UCF101 / HMDB51 fine-tuning
        assert cfg.lr_config["step"] == [9, 11] and cfg.load_from.endswith(f"k400_{modality}/best.pth")
    assert (cfg.train.class_prob is not None) == (dataset == "ntu120_xsub")
    assert cfg.best_metric == ("mean_class_accuracy" if dataset == "gym" else "top1")  # FineGYM reports mean class
    if dataset.startswith("ntu"):
        assert len(cfg.class_names) == classes and cfg.class_names[:2] == ("drink water", "eat meal/snack")
    train_heat = next(s for s in cfg.train.pipeline if s.name == "GeneratePoseTarget").kwargs
    test_heat = next(s for s in cfg.test.pipeline if s.name == "GeneratePoseTarget").kwargs
    assert not train_heat["double"] and test_heat["double"] and train_heat["limbs"] == test_heat["limbs"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_trains_and_writes_a_card(name, tiny_pkl, tmp_path):
    cfg = small(load_config(name), tiny_pkl)
    result = train(cfg, work_dir=tmp_path, max_steps=1, progress=False)
    assert result["global_step"] == 1 and result["stopped_early"] and result["top1"] is not None
    for file in ("best.pth", "latest.pth"):
        card, state = load_checkpoint(tmp_path / file)
        assert (card.arch, card.num_classes, card.in_channels) == (cfg.arch, cfg.num_classes, 17)
        assert (card.heatmap, card.limbs) == (cfg.heatmap, cfg.limbs)
        assert (card.clip_len, card.size, card.sigma) == (8, 16, 0.6)
        assert card.class_names == (list(cfg.class_names) if cfg.class_names else None)
    model, card = load_model(tmp_path / "best.pth")
    with torch.no_grad():
        assert model(torch.rand(1, card.in_channels, 8, 16, 16)).shape == (1, cfg.num_classes)
    assert (tmp_path / "config.py").read_text() == open(cfg.source).read()


# ---------------------------------------------------------------------------------------------
# Translation of PYSKL configs


@pytest.fixture(scope="module")
def joint_values():
    return read_config_file(shipped_configs()["ntu60_xsub_joint"])


@pytest.fixture(scope="module")
def limb_values():
    return read_config_file(shipped_configs()["ntu60_xsub_limb"])


def test_a_pyskl_config_file_runs_unchanged(tmp_path, tiny_pkl):
    # PYSKL-only keys (launcher settings, memcached off, a workflow) and PYSKL's NTU-120 "joint"
    # quirk: with_limb=True without skeletons draws PYSKL's default skeleton.
    # _slowonly.py, the base of the shipped configs, is a complete PYSKL config of its own.
    text = (CONFIG_DIR / "_slowonly.py").read_text()
    text = text.replace("with_kp=True, with_limb=False", "with_kp=False, with_limb=True")
    text += textwrap.dedent(f"""
        ann_file = {tiny_pkl!r}
        for part in ('train', 'val', 'test'):
            d = data[part].get('dataset', data[part])
            d['ann_file'] = ann_file
        dist_params = dict(backend='nccl')
        find_unused_parameters = True
        workflow = [('train', 1)]
        memcached = False
        gpu_ids = range(0, 1)
        """)
    path = tmp_path / "pyskl_joint.py"
    path.write_text(text)
    cfg = load_config(path)
    assert (cfg.heatmap, cfg.limbs, cfg.in_channels) == ("limbs", "pyskl_default", 17)
    assert cfg.train.ann_file == tiny_pkl and cfg.find_unused_parameters
    result = train(small(cfg, tiny_pkl), work_dir=tmp_path / "run", max_steps=1, progress=False, validate=False)
    assert result["global_step"] == 1
    assert load_checkpoint(tmp_path / "run" / "latest.pth")[0].limbs == "pyskl_default"


C3D_LIGHT = dict(type="C3D", in_channels=17, base_channels=32, num_stages=3, temporal_downsample=False)
X3D_SHALLOW = dict(type="X3D", gamma_d=1, in_channels=17, base_channels=24, num_stages=3, se_ratio=None,
                   use_swish=False, stage_blocks=(2, 5, 3), spatial_strides=(2, 2, 2))


@pytest.mark.parametrize("backbone,head_channels,arch", [
    ({}, 512, "slowonly"),
    (dict(base_channels=64), 1024, "slowonly_wd"),
    (dict(base_channels=16), 256, "slowonly_volleyball"),
    (dict(num_stages=4, out_indices=(3,), stage_blocks=(3, 4, 6, 3), inflate=(0, 0, 1, 1),
          spatial_strides=(2, 2, 2, 2), temporal_strides=(1, 1, 1, 2)), 1024, "slowonly_hr"),
    (C3D_LIGHT, 256, "c3d_s"),
    ({**C3D_LIGHT, "num_stages": 4}, 256, "c3d"),
    (X3D_SHALLOW, 216, "x3d_s"),
    ({**X3D_SHALLOW, "gamma_d": 2.2}, 216, "x3d"),  # blocks ceil(2.2 * (2, 5, 3)) = (5, 11, 7)
])
def test_backbone_settings_pick_the_variant(joint_values, backbone, head_channels, arch):
    values = dict(joint_values)
    base = values["model"]["backbone"]
    values["model"] = {**values["model"], "cls_head": {**values["model"]["cls_head"], "in_channels": head_channels},
                       "backbone": {**base, **backbone} if "type" not in backbone else backbone}
    assert translate(values, "x.py").arch == arch


@pytest.mark.parametrize("limb,options,key", [
    (False, {"model.backbone.stage_blocks": (3, 4, 6)}, "model.backbone.stage_blocks"),
    (False, {"model.backbone.type": "ResNet3d"}, "model.backbone.type"),
    (False, {"model.backbone.frozen_stages": 1}, "model.backbone.frozen_stages"),
    (False, {"model.backbone.in_channels": 18}, "model.backbone.in_channels"),
    (False, {"model.cls_head.in_channels": 256}, "model.cls_head.in_channels"),
    (False, {"model.type": "RecognizerGCN"}, "model.type"),
    (False, {"model.test_cfg.average_clips": "max"}, "model.test_cfg.average_clips"),
    (False, {"data.train.dataset.pipeline.0.type": "DecompressPose"}, "data.train.dataset.pipeline[0] (DecompressPose)"),
    (False, {"data.val.pipeline.4.with_kp": False, "data.val.pipeline.4.with_limb": True}, "data.val.pipeline"),
    (False, {"data.val.pipeline.4.with_limb": True}, "data.val.pipeline[4] (GeneratePoseTarget)"),
    (False, {"data.train.dataset.pipeline.6.flip_label_map": {1: 2}}, "flip_label_map"),
    (False, {"data.train.dataset.valid_ratio": 0.5}, "data.train.dataset.valid_ratio"),
    (False, {"optimizer.type": "RMSprop"}, "optimizer.type"),
    (False, {"optimizer.lr": -1}, "optimizer.lr"),
    (False, {"lr_config.policy": "poly"}, "lr_config.policy"),
    (False, {"load_from": "https://example.org/k400.pth"}, "load_from"),
    (False, {"memcached": True}, "memcached"),
    (False, {"workflow": [("train", 1), ("val", 1)]}, "workflow"),
    (True, {"data.train.dataset.pipeline.7.skeletons": [[0, 1], [1, 2]]}, "skeletons"),
    (True, {"data.test.pipeline.4.left_limb": [0, 1, 2, 3, 4, 5, 6, 7]}, "left_limb"),
])
def test_unsupported_settings_are_one_line_errors_naming_the_key(joint_values, limb_values, limb, options, key):
    values = apply_options(limb_values if limb else joint_values, options)
    with pytest.raises(ConfigError) as info:
        translate(values, "configs/my_config.py")
    message = str(info.value)
    assert message.startswith("configs/my_config.py: ") and key in message and "\n" not in message


def test_config_files_base_inheritance_and_cfg_options(tmp_path):
    base = shipped_configs()["ntu60_xsub_joint"]
    (tmp_path / "child.py").write_text(f"_base_ = {str(base)!r}\noptimizer = dict(lr=0.1)\ntotal_epochs = 3\n"
                                       "lr_config = dict(_delete_=True, policy='step', step=[2])\n")
    cfg = load_config(tmp_path / "child.py", parse_cfg_options(["data.videos_per_gpu=4", "work_dir=runs/x"]))
    assert cfg.optimizer == dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=3e-4)  # merged into the base
    assert cfg.lr_config == dict(policy="Step", by_epoch=True, step=[2], gamma=0.1)  # replaced
    assert (cfg.total_epochs, cfg.batch_size, cfg.work_dir, cfg.num_classes) == (3, 4, "runs/x", 60)
    (tmp_path / "broken.py").write_text("model = dict(\n")
    with pytest.raises(ConfigError, match=r"broken.py: line \d+: syntax error"):
        load_config(tmp_path / "broken.py")
    with pytest.raises(ConfigError, match="no shipped config of that name"):
        load_config("no_such_config")


# ---------------------------------------------------------------------------------------------
# Schedule, sampling, augmentation seeding


def test_learning_rate_follows_mmcv_policies():
    cosine = dict(policy="CosineAnnealing", by_epoch=False, min_lr=0)
    assert lr_at(cosine, 0.4, 0, 0, 10, 24) == pytest.approx(0.4)
    assert lr_at(cosine, 0.4, 120, 12, 10, 24) == pytest.approx(0.2)   # halfway through the iterations
    assert lr_at(cosine, 0.4, 60, 6, 10, 24) == pytest.approx(0.2 * (1 + np.cos(np.pi / 4)))
    assert lr_at(cosine, 0.4, 240, 24, 10, 24) == pytest.approx(0.0, abs=1e-12)
    step = dict(policy="Step", by_epoch=True, step=[9, 11], gamma=0.1)
    assert [lr_at(step, 0.01, 0, e, 10, 12) for e in (0, 8, 9, 10, 11)] == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4])
    warm = dict(policy="Fixed", by_epoch=True, warmup="linear", warmup_iters=10, warmup_ratio=0.1)
    assert [lr_at(warm, 1.0, s, 0, 5, 4) for s in (0, 5, 10)] == pytest.approx([0.1, 0.55, 1.0])


def test_epoch_sampler_repeats_shuffles_and_shards():
    labels = [0, 0, 1, 1, 1]
    sampler = EpochSampler(labels, times=2, seed=1)
    order0, order1 = sampler.epoch_order(0), sampler.epoch_order(1)
    assert sorted(order0.tolist()) == sorted(list(range(5)) * 2) and not np.array_equal(order0, order1)
    assert np.array_equal(order0, EpochSampler(labels, times=2, seed=1).epoch_order(0))
    ranks = [list(EpochSampler(labels, times=2, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]   # 10 padded to 12
    positions = sorted(pos for r in ranks for _, _, pos in r)
    assert positions == list(range(12))
    sampler.set_epoch(1, start=3)
    assert [k[0] for k in sampler] == order1[3:].tolist() and len(sampler) == 7
    weighted = EpochSampler(labels, class_prob={1: 1.5}, seed=0).epoch_order(0)
    assert np.bincount(weighted).tolist()[:2] == [1, 1] and len(weighted) == 2 + 3 + 1  # 1.5 x 3 -> 4 of class 1


def test_training_samples_are_seeded_by_their_place_in_the_epoch(tiny_pkl):
    cfg = small(load_config("synthetic_x3d_s"), tiny_pkl)
    from posestream.train.data.clips import load_dataset

    clips = load_dataset(tiny_pkl).clips("train")
    dataset = ClipDataset(clips, cfg.pipeline("train"), seed=7)
    first = dataset[(0, 0, 5)][0]
    other = dataset[(0, 0, 6)][0]
    again = dataset[(0, 0, 5)][0]
    assert first.shape == (1, 17, 8, 16, 16)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, ClipDataset(clips, cfg.pipeline("train"), seed=8)[(0, 0, 5)][0])


# ---------------------------------------------------------------------------------------------
# Resume, Ctrl-C, distributed


@pytest.fixture(scope="module")
def x3d_cfg(tiny_pkl):
    # x3d_s at 8 x 32 x 32: 4 training clips, batches of 2, 2 epochs = 4 steps
    return small(load_config("synthetic_x3d_s"), tiny_pkl, size=32, train_size=32, times=1, total_epochs=2)


@pytest.fixture(scope="module")
def reference_run(x3d_cfg, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("reference")
    lrs = []
    result = train(x3d_cfg, work_dir=work_dir, seed=3, progress=False, on_step=lambda info: lrs.append(info["lr"]))
    return work_dir, result, lrs


def _assert_same_training_state(a, b):
    _, weights_a, state_a = load_training_state(a)
    _, weights_b, state_b = load_training_state(b)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=0, atol=0, msg=key)
    assert (state_a["global_step"], state_a["epoch"]) == (state_b["global_step"], state_b["epoch"])
    # every optimizer buffer (SGD momentum, Adam moments and step counts)
    buffers_a = [(k, v) for s in state_a["optimizer"]["state"].values() for k, v in sorted(s.items())]
    buffers_b = [(k, v) for s in state_b["optimizer"]["state"].values() for k, v in sorted(s.items())]
    assert buffers_a
    for (ka, va), (kb, vb) in zip(buffers_a, buffers_b, strict=True):
        assert ka == kb
        torch.testing.assert_close(torch.as_tensor(va), torch.as_tensor(vb), rtol=0, atol=0)


def test_resume_continues_exactly_where_it_stopped(x3d_cfg, reference_run, tmp_path):
    ref_dir, ref_result, ref_lrs = reference_run
    assert ref_result["global_step"] == 4 and ref_result["epoch"] == 2
    cfg = x3d_cfg
    base_lr = cfg.optimizer["lr"]
    assert ref_lrs == pytest.approx([lr_at(cfg.lr_config, base_lr, s, s // 2, 2, 2) for s in range(4)])
    first = train(cfg, work_dir=tmp_path, seed=3, progress=False, max_steps=3)  # stops in the middle of epoch 2
    assert (first["global_step"], first["epoch"], first["stopped_early"]) == (3, 1, True)
    lrs = []
    second = train(cfg, work_dir=tmp_path, seed=3, progress=False, resume=True, workers=2,  # other worker count
                   on_step=lambda info: lrs.append(info["lr"]))
    assert (second["global_step"], second["epoch"], second["stopped_early"]) == (4, 2, False)
    assert lrs == ref_lrs[3:]
    _assert_same_training_state(ref_dir / "latest.pth", tmp_path / "latest.pth")
    for name in ("epoch_1.pth", "epoch_2.pth", "best.pth"):
        assert (tmp_path / name).exists()
    # the loss log of the resumed run is the uninterrupted run's, step for step
    def losses(path):
        rows = [json.loads(line) for line in open(path / "scalars.jsonl")]
        return [(r["step"], round(r["value"], 6)) for r in rows if r["tag"] == "train/loss"]
    assert losses(tmp_path) == losses(ref_dir)


def test_ctrl_c_finishes_the_step_and_leaves_a_resumable_latest(x3d_cfg, reference_run, tmp_path):
    def interrupt(info):
        if info["global_step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(x3d_cfg, work_dir=tmp_path, seed=3, progress=False, on_step=interrupt)
    assert signal.getsignal(signal.SIGINT) is handler
    assert load_training_state(tmp_path / "latest.pth")[2]["global_step"] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written
    train(x3d_cfg, work_dir=tmp_path, seed=3, progress=False, resume=True)
    _assert_same_training_state(reference_run[0] / "latest.pth", tmp_path / "latest.pth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_one_process_distributed_group_trains_like_a_plain_run(x3d_cfg, reference_run, tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        result = train(x3d_cfg, work_dir=tmp_path, seed=3, progress=False)
    finally:
        torch.distributed.destroy_process_group()
    assert result["global_step"] == 4
    _assert_same_training_state(reference_run[0] / "latest.pth", tmp_path / "latest.pth")


def test_torchrun_with_two_processes(x3d_cfg, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        from posestream.train.config import load_config
        from posestream.train.trainer import train
        cfg = load_config('synthetic_x3d_s').override(
            ann_file={x3d_cfg.train.ann_file!r}, clip_len=8, size=32, train_size=32, batch_size=1, workers=0,
            times=1, total_epochs=1)
        result = train(cfg, work_dir=sys.argv[1], progress=False)
        with open(os.path.join(sys.argv[2], 'result_' + os.environ['RANK'] + '.json'), 'w') as f:
            json.dump(result, f)
        """))
    work_dir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(_free_port()), str(script), str(work_dir), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {p.stem[-1]: json.loads(p.read_text()) for p in tmp_path.glob("result_*.json")}
    assert set(results) == {"0", "1"}, proc.stdout[-2000:] + proc.stderr[-2000:]
    # 4 clips, 2 processes x 1 clip per step: 2 steps; both processes agree on validation
    assert results["0"]["global_step"] == results["1"]["global_step"] == 2
    assert results["0"]["top1"] == results["1"]["top1"]
    state = load_training_state(work_dir / "latest.pth")[2]
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["epoch"] == 1
    assert sorted(p.name for p in work_dir.glob("*.pth")) == ["best.pth", "epoch_1.pth", "latest.pth"]


# ---------------------------------------------------------------------------------------------
# Data and weights problems, logging


def test_data_problems_name_the_config_key(x3d_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"data.train.ann_file: .*nothing.pkl: no such file"):
        train(x3d_cfg.override(ann_file=tmp_path / "nothing.pkl"), work_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"model.cls_head.num_classes: 1, but .* has label 1"):
        train(x3d_cfg.override(num_classes=1), work_dir=tmp_path, progress=False)


def test_load_from_fine_tunes_the_backbone_and_starts_a_new_head(x3d_cfg, tmp_path):
    pretrained = x3d_cfg.override(num_classes=7).build_model()
    save_checkpoint(tmp_path / "k400.pth", x3d_cfg.override(num_classes=7).model_card(), pretrained.state_dict())
    cfg = x3d_cfg.override(load_from=str(tmp_path / "k400.pth"))
    train(cfg, work_dir=tmp_path / "run", max_steps=0, validate=False, progress=False)
    _, weights, _ = load_training_state(tmp_path / "run" / "latest.pth")
    for key, value in pretrained.state_dict().items():
        if key.startswith("backbone."):
            torch.testing.assert_close(weights[key], value, rtol=0, atol=0)
    assert weights["head.fc.weight"].shape == (x3d_cfg.num_classes, 216)
    save_checkpoint(tmp_path / "other.pth", ModelCard(arch="c3d_s", num_classes=7), {})
    with pytest.raises(ConfigError, match="load_from: .*other.pth is a c3d_s model"):
        train(x3d_cfg.override(load_from=str(tmp_path / "other.pth")), work_dir=tmp_path / "r2", progress=False)


def test_scalars_and_log_files(reference_run, caplog):
    work_dir = reference_run[0]
    tags = {json.loads(line)["tag"] for line in open(work_dir / "scalars.jsonl")}
    assert tags == {"train/loss", "train/lr", "val/top1", "val/top5", "val/mean_class_accuracy"}
    assert "val after 4 steps" in (work_dir / "train.log").read_text()


def test_tensorboard_absence_is_a_logged_notice(x3d_cfg, tmp_path, caplog):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    with caplog.at_level(logging.INFO, logger="posestream.train"):
        train(x3d_cfg, work_dir=tmp_path, max_steps=1, validate=False, progress=False)
    noticed = "tensorboard is not installed" in caplog.text
    assert noticed != installed
    assert (tmp_path / "tb").exists() == installed


# ---------------------------------------------------------------------------------------------
# Precise BN


def test_precise_bn_replaces_stale_running_statistics():
    from posestream.train.precise_bn import recompute_bn_stats

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 1), torch.nn.BatchNorm3d(4), torch.nn.Dropout(0.5),
                                torch.nn.Conv3d(4, 3, 1), torch.nn.BatchNorm3d(3))
    model.train()
    batches = [torch.randn(4, 2, 3, 5, 5) * 3 + 7 for _ in range(5)]
    state = torch.random.get_rng_state()
    assert recompute_bn_stats(model, batches) == 5
    assert torch.equal(torch.random.get_rng_state(), state)  # no dropout masks drawn
    assert model.training and all(m.training for m in model.modules())  # mode restored
    # the first BN now holds the exact statistics of its inputs over all batches
    with torch.no_grad():
        feats = torch.cat([model[0](b) for b in batches])
    mean = feats.mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(model[1].running_mean, mean, rtol=1e-4, atol=1e-4)
    # (the cumulative average of per-batch unbiased variances, as PyTorch's momentum=None does)
    per_batch = torch.stack([model[0](b).detach().var(dim=(0, 2, 3, 4), unbiased=True) for b in batches])
    torch.testing.assert_close(model[1].running_var, per_batch.mean(0), rtol=1e-4, atol=1e-4)
    assert model[1].momentum == 0.1
    before = model[1].running_mean.clone()
    assert recompute_bn_stats(model, []) == 0  # no batches: the statistics are kept
    assert torch.equal(model[1].running_mean, before)


def test_precise_bn_runs_before_each_validation(x3d_cfg, tmp_path, caplog):
    cfg = x3d_cfg.override(total_epochs=1)
    assert cfg.precise_bn == {"num_batches": 50}
    with caplog.at_level(logging.INFO, logger="posestream.train.trainer"):
        train(cfg, work_dir=tmp_path, seed=3, progress=False)
    assert "precise BN: statistics recomputed on 2 training batches" in caplog.text  # 4 clips, batches of 2
