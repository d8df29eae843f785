"""Class definitions and window labels (posestream.actions), served windows and the families
dataset (posestream.train.data.served), the physics falls (posestream.train.data.ragdoll)."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.actions import ACTIONS, DEFINITIONS, EVENT_ACTIONS, GROUPS, Segment, group_of, window_label
from posestream.engines.crop import window_span
from posestream.train.data import ragdoll
from posestream.train.data import synthetic as syn
from posestream.train.data.clips import validate_clip
from posestream.train.data.served import (DEFAULT_HOLDOUT, generate_families_dataset, processed_frames,
                                          served_window)


def test_every_class_is_defined_and_grouped_once():
    assert tuple(DEFINITIONS) == ACTIONS and syn.ACTIONS == ACTIONS
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(ACTIONS)  # each class in exactly one group
    assert group_of("lying") == "down" and group_of("falling") == "fall" and group_of("nope") is None
    assert set(EVENT_ACTIONS) <= set(ACTIONS)


FALL = [Segment("walking", 0.0, 2.0), Segment("falling", 2.0, 2.8), Segment("lying", 2.8, 9.0)]


@pytest.mark.parametrize("t0, t1, label", [
    (0.0, 1.9, "walking"),          # before the fall
    (0.5, 3.5, "falling"),          # the whole descent inside
    (2.2, 5.2, "falling"),          # 75 % of the descent inside
    (2.5, 5.5, None),               # 38 % of it: neither falling nor lying
    (2.6, 5.6, "lying"),            # 25 % of it: the end of a fall is lying already
    (3.0, 6.0, "lying"),            # after it
    (1.0, 2.3, None),               # 38 % of the descent at the end of a short window
    (1.0, 2.15, "walking"),         # its first 19 %: still walking
])
def test_window_label_follows_the_definitions(t0, t1, label):
    assert window_label(FALL, t0, t1) == label


def test_window_label_needs_a_clear_majority_state():
    stop = [Segment("walking", 0.0, 2.0), Segment("standing", 2.0, 6.0)]
    assert window_label(stop, 0.5, 3.5) is None          # half walking, half standing
    assert window_label(stop, 2.5, 5.5) == "standing"
    unnamed = [Segment("standing", 0.0, 1.0), Segment(None, 1.0, 4.0)]
    assert window_label(unnamed, 1.0, 4.0) is None       # something no class names
    with pytest.raises(ValueError):
        window_label(stop, 3.0, 3.0)


def test_window_span_is_first_to_last_observed_in_the_interval():
    t = np.arange(10) * 0.5
    observed = np.array([0, 1, 1, 0, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert window_span(t, observed, 0.0, 4.5) == (1, 10, 5)
    assert window_span(t, observed, 1.2, 3.2) == (4, 5, 1)  # frames 3..6 held, only frame 4 observed
    assert window_span(t, observed, 2.6, 3.4)[2] == 0


def test_processed_frames_keep_up_with_the_rate():
    rng = np.random.default_rng(0)
    picked = processed_frames(rng, 300, 30.0, 10.0)
    assert np.all(np.diff(picked) > 0) and picked[-1] < 300
    assert 80 <= len(picked) <= 105  # about 10 of the camera's 30 frames a second (stalls included)
    assert processed_frames(rng, 50, 10.0, 30.0).tolist() == list(range(50))  # faster than the camera: all


def test_a_served_window_is_a_valid_clip_labelled_from_the_timeline():
    clip = syn.generate_clip("falling", 3, variant="forward-from-standing", fps=25, duration=6.0, camera_kind="level")
    rng = np.random.default_rng(1)
    windows = [served_window(clip, rng, rate=r) for r in (5.0, 12.0, 25.0) for _ in range(6)]
    windows = [w for w in windows if w is not None]
    assert windows
    for w in windows:
        validate_clip(w, num_classes=len(ACTIONS))
        span = w["served"]
        assert span["t1"] - span["t0"] <= 3.0 + 1e-6 and w["total_frames"] >= 8
        assert w["action"] == window_label([Segment(*s) for s in clip["timeline"]], span["t0"], span["t1"] + 1 / 25)
        assert w["label"] == ACTIONS.index(w["action"])
    # a window ending long after the impact is lying, one holding the descent is falling
    impact = clip["timeline"][1][2]
    late = served_window(clip, np.random.default_rng(2), rate=25.0, now=impact + 3.2)
    assert late is not None and late["action"] == "lying"
    during = served_window(clip, np.random.default_rng(2), rate=25.0, now=impact + 0.5)
    assert during is not None and during["action"] == "falling"


def test_families_dataset_holds_out_whole_families():
    data = generate_families_dataset(48, seed=3, holdout_clips=8, progress=False)
    split = data["split"]
    assert {"train", "val", "val_served"} <= set(split)
    names = {a["frame_dir"]: a for a in data["annotations"]}
    train = [names[n] for n in split["train"]]
    for key, value in DEFAULT_HOLDOUT.items():
        assert all(a["families"][key] != value for a in train), key  # never in training
        held = [names[n] for n in split[f"val_{key}_{value}"]]
        assert len(held) == 8 and all(a["families"][key] == value for a in held)
    assert {a["subject"] for a in train}.isdisjoint({names[n]["subject"] for n in split["val"]})
    assert any("served" in a for a in train) and any("served" not in a for a in train)
    again = generate_families_dataset(48, seed=3, holdout_clips=8, progress=False, workers=2)
    assert [a["frame_dir"] for a in again["annotations"]] == [a["frame_dir"] for a in data["annotations"]]
    assert all(np.array_equal(a["keypoint"], b["keypoint"]) for a, b in zip(again["annotations"], data["annotations"]))
    with pytest.raises(ValueError, match="unknown family"):
        generate_families_dataset(12, holdout={"colour": "red"}, progress=False)


@pytest.mark.skipif(not ragdoll.available(), reason="MuJoCo / dm-control not installed")
def test_simulated_falls_come_down_and_retarget_to_a_subject():
    downs = set()
    for seed, scenario in enumerate(ragdoll.SCENARIOS):
        sim = ragdoll.simulate_fall(seed, scenario, duration=3.0, fps=20)
        assert sim.joints.shape == (61, 17, 3) and np.isfinite(sim.joints).all()
        hips = sim.joints[:, [11, 12], 2].mean(1)
        assert hips[0] > 0.8 and hips[-1] < 0.45 and 0.2 < sim.impact < 2.0
        assert sim.joints[..., 2].min() > -0.05  # nothing deep in the floor
        downs.add(sim.down)
        subject = syn.sample_subject(seed, body_family="child")
        body = subject.body
        world = ragdoll.retarget(sim.joints, body)
        np.testing.assert_allclose(np.linalg.norm(world[:, 13] - world[:, 11], axis=-1), body.thigh, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(world[:, 9] - world[:, 7], axis=-1), body.forearm, rtol=1e-5)
        assert abs(world[..., 2].min(axis=1) - 0.04).max() < 1e-6  # every frame on the floor
    assert len(downs) >= 3  # several ways of ending up down
    a = ragdoll.simulate_fall(7, "push", duration=2.0, fps=10)
    b = ragdoll.simulate_fall(7, "push", duration=2.0, fps=10)
    assert np.array_equal(a.joints, b.joints)  # deterministic for a seed
    with pytest.raises(ValueError, match="unknown fall scenario"):
        ragdoll.simulate_fall(0, "tumble")


def test_down_kind_reads_postures():
    joints = np.zeros((17, 3))
    joints[[5, 6], 2], joints[[11, 12], 2], joints[[13, 14], 2] = 1.4, 0.9, 0.5
    joints[5, 0], joints[6, 0] = 0.2, -0.2
    assert ragdoll.down_kind(joints) == "upright"
    joints[[5, 6], 2], joints[[11, 12], 2], joints[[13, 14], 2] = 0.6, 0.1, 0.3  # trunk up, hips on the floor
    assert ragdoll.down_kind(joints) == "sitting"
    flat = np.zeros((17, 3))
    flat[[5, 6], 0], flat[[11, 12], 0] = 0.5, 0.0        # trunk along +x, on the floor
    flat[5, 1], flat[6, 1] = 0.2, -0.2                   # left shoulder at +y
    flat[..., 2] = 0.1
    assert ragdoll.down_kind(flat) in ("back", "front")
