"""Tests for the synthetic skeleton clip generator (posestream.train.data.synthetic) and the
clip animation writer (posestream.train.data.show)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from posestream.train.data import noise_stats, ragdoll
from posestream.train.data import synthetic as syn
from posestream.train.data.clips import load_dataset, save_dataset, validate_clip, validate_dataset
from posestream.train.data.show import contact_sheet, render_clip_animation, render_frames


def body_axis_deg(joints: np.ndarray) -> np.ndarray:
    """Angle of mid-hip -> mid-shoulder from vertical, degrees, per frame of ``[T, 17, 3]``."""
    axis = joints[:, 5:7].mean(1) - joints[:, 11:13].mean(1)
    return np.degrees(np.arccos(np.clip(axis[:, 2] / np.linalg.norm(axis, axis=-1), -1, 1)))


def mid_hip_height(joints: np.ndarray) -> np.ndarray:
    return joints[:, 11:13, 2].mean(1)


# --------------------------------------------------------------------------------------------
# Clips and datasets
# --------------------------------------------------------------------------------------------


def test_actions_list():
    assert len(syn.ACTIONS) >= 10
    assert len(set(syn.ACTIONS)) == len(syn.ACTIONS)
    for name in ("standing", "walking", "running", "sitting_down", "standing_up", "falling", "lying",
                 "picking_up", "squatting", "jumping", "waving"):
        assert name in syn.ACTIONS
    assert set(syn.VARIANTS) == set(syn.ACTIONS)


@pytest.mark.parametrize("action", syn.ACTIONS)
def test_every_action_and_variant_gives_a_valid_clip(action):
    for i, variant in enumerate(syn.VARIANTS[action]):
        clip = syn.generate_clip(action, 100 + i, variant=variant, bystander=0.5)
        validate_clip(clip, num_classes=len(syn.ACTIONS))
        assert clip["label"] == syn.ACTIONS.index(action)
        assert clip["class_names"] == syn.ACTIONS and clip["action"] == action
        assert clip["variant"] == variant
        m, t = clip["keypoint"].shape[:2]
        assert clip["keypoint"].dtype == np.float32 and clip["keypoint_score"].dtype == np.float32
        assert m in (1, 2) and clip["keypoint"].shape == (m, t, 17, 2)
        assert 10 <= clip["fps"] <= 30 and 1.5 <= t / clip["fps"] <= 6.05
        first, last = clip["action_frames"]
        assert 0 <= first <= last < t
        h, w = clip["img_shape"]
        assert (h, w) in ((480, 640), (576, 768), (720, 1280), (1080, 1920), (360, 640))
        # a missing person is all zeros; a present one has every score > 0
        score = clip["keypoint_score"]
        present = (score > 0).any(-1)
        assert np.all((score > 0) == present[..., None])
        assert np.all(clip["keypoint"][~present] == 0)
        assert present[0].mean() > 0.5  # the actor is mostly visible


def test_label_follows_classes_and_index():
    classes = ("falling", "walking", "lying")
    clip = syn.generate_clip("lying", 0, classes=classes)
    assert clip["label"] == 2 and clip["class_names"] == classes
    clip = syn.generate_clip(1, 0, classes=classes)
    assert clip["action"] == "walking" and clip["label"] == 1
    with pytest.raises(ValueError, match="unknown action"):
        syn.generate_clip("dancing", 0)
    with pytest.raises(ValueError, match="unknown variant"):
        syn.generate_clip("falling", 0, variant="upward-from-standing")
    with pytest.raises(ValueError, match="unknown action"):
        syn.generate_dataset(4, classes=("walking", "flying"), progress=False)


def test_same_seed_same_bytes_and_different_seed_differs():
    a = syn.generate_dataset(30, seed=7, progress=False, bystander_prob=0.5)
    b = syn.generate_dataset(30, seed=7, progress=False, bystander_prob=0.5)
    c = syn.generate_dataset(30, seed=8, progress=False, bystander_prob=0.5)
    assert a["split"] == b["split"]
    for x, y in zip(a["annotations"], b["annotations"]):
        assert x["keypoint"].tobytes() == y["keypoint"].tobytes()
        assert x["keypoint_score"].tobytes() == y["keypoint_score"].tobytes()
        assert {k: v for k, v in x.items() if not isinstance(v, np.ndarray)} == \
            {k: v for k, v in y.items() if not isinstance(v, np.ndarray)}
    assert any(x["keypoint"].shape != z["keypoint"].shape or not np.array_equal(x["keypoint"], z["keypoint"])
               for x, z in zip(a["annotations"], c["annotations"]))
    one = syn.generate_clip("falling", 5)
    two = syn.generate_clip("falling", np.random.default_rng(5))
    assert one["keypoint"].tobytes() == two["keypoint"].tobytes()


def test_dataset_split_by_subject_and_round_trip(tmp_path):
    data = syn.generate_dataset(48, seed=3, val_fraction=0.25, num_subjects=4, progress=False)
    validate_dataset(data, num_classes=len(syn.ACTIONS))
    assert data["class_names"] == syn.ACTIONS
    by_dir = {c["frame_dir"]: c for c in data["annotations"]}
    train_subjects = {by_dir[fd]["subject"] for fd in data["split"]["train"]}
    val_subjects = {by_dir[fd]["subject"] for fd in data["split"]["val"]}
    assert train_subjects and val_subjects
    assert not train_subjects & val_subjects
    assert sorted(data["split"]["train"] + data["split"]["val"]) == sorted(by_dir)
    # balanced classes; validation sees every class
    labels = [c["label"] for c in data["annotations"]]
    assert np.bincount(labels).tolist() == [4] * len(syn.ACTIONS)
    assert len(data["split"]["val"]) == 12
    assert {by_dir[fd]["action"] for fd in data["split"]["val"]} == set(syn.ACTIONS)
    # saved with the restricted unpickler's allowed types only, extra fields kept
    path = tmp_path / "synthetic.pkl"
    save_dataset(path, data)
    loaded = load_dataset(path, num_classes=len(syn.ACTIONS))
    assert loaded.split == data["split"]
    assert tuple(loaded.annotations[0]["class_names"]) == syn.ACTIONS
    np.testing.assert_array_equal(loaded.annotations[7]["keypoint"], data["annotations"][7]["keypoint"])
    # a subset of classes relabels 0..k-1
    small = syn.generate_dataset(6, classes=("lying", "falling"), seed=1, progress=False)
    assert sorted({(c["action"], c["label"]) for c in small["annotations"]}) == [("falling", 1), ("lying", 0)]
    assert small["split"]["val"] and small["split"]["train"]
    # tiny datasets still split by subject; a single clip goes to train
    for n in (1, 2, 5, 13):
        split = syn.generate_dataset(n, seed=0, progress=False)["split"]
        assert len(split["train"]) + len(split["val"]) == n and split["train"]
        assert split["val"] or n == 1


def test_extra_train_clips_keep_the_val_split_and_add_only_new_subjects():
    base = syn.generate_dataset(30, seed=4, bystander_prob=0.0, progress=False)
    more = syn.generate_dataset(30, seed=4, bystander_prob=0.0, progress=False, extra_train_clips=26)
    # val (names and arrays) and the original train clips are exactly those of the base dataset
    assert more["split"]["val"] == base["split"]["val"] and base["split"]["val"]
    assert more["split"]["train"][:len(base["split"]["train"])] == base["split"]["train"]
    for a, b in zip(base["annotations"], more["annotations"]):
        assert a["frame_dir"] == b["frame_dir"] and a["keypoint"].tobytes() == b["keypoint"].tobytes()
    extra = more["annotations"][30:]
    assert len(extra) == 26 and [c["frame_dir"] for c in extra] == more["split"]["train"][-26:]
    old_subjects = {c["subject"] for c in base["annotations"]}
    new_subjects = [c["subject"] for c in extra]
    assert not set(new_subjects) & old_subjects
    # each new subject performs the classes in turn, so the extra clips stay balanced
    assert len(set(new_subjects)) == 3 and new_subjects.count(new_subjects[0]) == 12
    assert np.bincount([c["label"] for c in extra[:24]]).tolist() == [2] * 12
    validate_dataset(more, num_classes=len(syn.ACTIONS))
    with pytest.raises(ValueError, match="extra_train_clips"):
        syn.generate_dataset(4, progress=False, extra_train_clips=-1)


# --------------------------------------------------------------------------------------------
# Motion in 3D
# --------------------------------------------------------------------------------------------


KINEMATIC_FALLS = [v for v in syn.VARIANTS["falling"] if v.split("-from-")[0] not in ragdoll.SCENARIOS]
PHYSICS_FALLS = [v for v in syn.VARIANTS["falling"] if v.split("-from-")[0] in ragdoll.SCENARIOS]


@pytest.mark.parametrize("variant", KINEMATIC_FALLS)
def test_falls_end_lying_with_hips_on_the_floor(variant):
    for seed in range(3):
        clip = syn.generate_clip("falling", seed, variant=variant, noise=False, debug=True)
        joints = clip["debug"]["joints3d"][0]
        fps = clip["fps"]
        axis = body_axis_deg(joints)
        hips = mid_hip_height(joints)
        assert axis[0] < 35 and hips[0] > 0.45 * joints[0, 0, 2]  # starts upright
        tail = slice(-max(2, int(0.2 * fps)), None)
        assert np.all(axis[tail] > 60), (variant, seed, axis[tail])
        assert np.all(hips[tail] < 0.4), (variant, seed, hips[tail])
        # a quick collapse: from 30 to 60 degrees in well under a second and a half
        t30 = int(np.argmax(axis > 30))
        t60 = int(np.argmax(axis > 60))
        assert 0 < t60 - t30 <= 1.2 * fps, (variant, seed, (t60 - t30) / fps)
        assert joints[..., 2].min() > -0.01  # nothing below the floor


@pytest.mark.skipif(not ragdoll.available(), reason="MuJoCo / dm-control not installed")
@pytest.mark.parametrize("variant", PHYSICS_FALLS)
def test_simulated_falls_go_down_fast_and_the_timeline_says_so(variant):
    for seed in range(2):
        clip = syn.generate_clip("falling", seed, variant=variant, noise=False, debug=True, duration=4.0)
        joints = clip["debug"]["joints3d"][0]
        fps = clip["fps"]
        hips = mid_hip_height(joints)
        assert body_axis_deg(joints)[0] < 35 and hips[0] > 0.45 * joints[0, 0, 2]  # starts upright
        # down: the hips end well below where they started (lying, sitting or kneeling on the floor)
        assert hips[-1] < 0.6 * hips[0], (variant, seed, hips[-1], hips[0])
        # fast: from 90 % to 60 % of the standing hip height in under 1.5 s
        t90 = int(np.argmax(hips < 0.9 * hips[0]))
        t60 = int(np.argmax(hips < 0.6 * hips[0]))
        assert 0 < t60 - t90 <= 1.5 * fps, (variant, seed, (t60 - t90) / fps)
        assert joints[..., 2].min() > -0.01
        (before, b0, b1), (fall, f0, f1) = clip["timeline"][:2]
        assert before == variant.split("-from-")[1] and fall == "falling" and b1 == f0 < f1
        # the timeline's descent holds the body's drop
        assert f0 - 0.35 <= t90 / fps and t60 / fps <= f1 + 0.5, (clip["timeline"], t90 / fps, t60 / fps)
        assert clip["families"]["fall"] == variant.split("-from-")[0]


def test_standing_stays_upright_and_lying_stays_down():
    for seed in range(4):
        for variant in syn.VARIANTS["standing"]:
            clip = syn.generate_clip("standing", seed, variant=variant, noise=False, debug=True)
            joints = clip["debug"]["joints3d"][0]
            assert np.all(body_axis_deg(joints) < 30)
            assert np.all(mid_hip_height(joints) > 0.45 * joints[:, 0, 2])  # hips at half the nose's height
            ankles = joints[:, 15:17, 2]
            assert ankles.min() > 0.0 and ankles.min(axis=1).max() < 0.12  # feet on the floor
        joints = syn.generate_clip("lying", seed, noise=False, debug=True)["debug"]["joints3d"][0]
        assert np.all(body_axis_deg(joints) > 60) and np.all(mid_hip_height(joints) < 0.4)


def test_walking_moves_with_planted_feet_and_sitting_is_lower():
    clip = syn.generate_clip("walking", 2, variant="straight", noise=False, debug=True, duration=3.0, fps=30)
    joints = clip["debug"]["joints3d"][0]
    pelvis = joints[:, 11:13].mean(1)
    speed = np.linalg.norm(pelvis[-1, :2] - pelvis[0, :2]) / 3.0
    assert 0.4 < speed < 2.0
    ankle = joints[:, 15]
    stance = ankle[:, 2] < ankle[:, 2].min() + 0.01  # the foot is on the floor
    slide = np.linalg.norm(np.diff(ankle[:, :2], axis=0), axis=-1)[stance[1:] & stance[:-1]]
    assert slide.mean() < 0.01  # metres per frame: no skating
    subject = syn.sample_subject(0)
    seated = syn.generate_clip("sitting", 1, subject=subject, noise=False, debug=True)["debug"]["joints3d"][0]
    standing = syn.generate_clip("standing", 1, subject=subject, noise=False, debug=True)["debug"]["joints3d"][0]
    assert mid_hip_height(seated).mean() < mid_hip_height(standing).mean() - 0.25


def test_subjects_vary():
    bodies = [syn.sample_subject(i).body for i in range(50)]
    heights = np.array([b.height for b in bodies])
    assert 1.0 <= heights.min() and heights.max() <= 2.0 and heights.std() > 0.05
    families = {syn.sample_subject(i).body_family for i in range(50)}
    assert families == set(syn.BODY_FAMILIES)
    children = [syn.sample_subject(i, body_family="child").body for i in range(20)]
    adults = [syn.sample_subject(i, body_family="adult").body for i in range(20)]
    assert max(b.height for b in children) <= 1.45 < min(b.height for b in adults)
    # a child's head is a larger, its legs a smaller part of its stature
    assert np.mean([b.head / b.height for b in children]) > 1.1 * np.mean([b.head / b.height for b in adults])
    assert np.mean([b.leg / b.height for b in children]) < np.mean([b.leg / b.height for b in adults])
    large = [syn.sample_subject(i, body_family="large").body for i in range(20)]
    assert np.mean([b.hip_width / b.height for b in large]) > 1.15 * np.mean([b.hip_width / b.height for b in adults])
    ratio = np.array([b.thigh / b.height for b in bodies])
    assert ratio.std() > 0.005
    widths = np.array([b.shoulder_width / b.hip_width for b in bodies])
    assert widths.std() > 0.05


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------


def make_camera(height: float, pitch_deg: float, distance: float = 4.0, size=(480, 640), hfov=60.0):
    target = np.array([0.0, 0.0, 0.9])
    pitch = math.radians(pitch_deg)
    position = target + np.array([-distance * math.cos(pitch), 0.0, distance * math.sin(pitch)])
    position[2] = height if height is not None else position[2]
    focal = 0.5 * size[1] / math.tan(math.radians(hfov) / 2)
    return syn.Camera(position=position, rotation=syn.look_at(position, target), focal=focal,
                      center=(size[1] / 2, size[0] / 2), img_shape=size)


def test_projection_orientation():
    cam = make_camera(None, 0.0)  # at x = -4, looking along +x at the target
    uv, depth = cam.project(np.array([[0.0, 0.0, 0.9], [0.0, 0.5, 0.9], [0.0, 0.0, 1.4], [-8.0, 0.0, 0.9]]))
    np.testing.assert_allclose(uv[0], [320, 240], atol=1e-6)
    assert depth[0] == pytest.approx(4.0)
    assert uv[1, 0] < 320  # world +y is to the left of a camera looking along +x
    assert uv[2, 1] < 240  # up is up in the image
    assert depth[3] < 0  # behind the camera
    assert abs(cam.pitch_deg) < 1e-6


def test_sampled_cameras_see_the_target():
    rng = np.random.default_rng(0)
    target = np.array([1.0, 2.0, 0.9])
    for kind in syn.CAMERA_KINDS:
        for _ in range(20):
            cam = syn.sample_camera(rng, target, kind=kind, image_pos=(0.5, 0.5))
            (u, v), depth = cam.project(target)
            h, w = cam.img_shape
            if kind != "floor":  # a floor camera looks level, not at the person's centre
                assert 0 <= u < w and 0 <= v < h and depth > 0.5
            if kind == "ceiling":  # (a telephoto one is further away and higher up)
                assert 2.4 <= cam.height <= 13.5 and 28 <= cam.pitch_deg <= 72
            if kind == "corner":
                assert 2.3 <= cam.height <= 3.2 and 33 <= cam.pitch_deg <= 62 and cam.hfov_deg >= 89 and cam.k1 < -0.1
            if kind == "level":
                assert cam.height <= 1.9 and -25 <= cam.pitch_deg <= 25
            if kind == "floor":
                assert cam.height <= 0.5 and -25 <= cam.pitch_deg <= 10


def foreshortening(cam, joints: np.ndarray) -> float:
    """Image height of a standing body (ankles to nose) over what a camera looking straight at
    it would see: cos of the viewing elevation, 1 for a level camera."""
    uv, depth = cam.project(joints)
    image_height = uv[15:17, 1].mean() - uv[0, 1]
    true_height = joints[0, 2] - joints[15:17, 2].mean()
    return float(image_height / (cam.focal * true_height / depth.mean()))


def test_ceiling_camera_sees_the_person_from_above():
    joints = syn.generate_clip("standing", 0, noise=False, debug=True)["debug"]["joints3d"][0, 0].astype(np.float64)
    joints = joints - np.r_[joints[11:13, :2].mean(0), 0.0]  # person at the origin
    ratios = [foreshortening(make_camera(None, pitch, distance=4.0), joints) for pitch in (0, 30, 45, 60, 70)]
    assert ratios[0] > 0.9  # a level camera sees the full height
    assert all(a > b for a, b in zip(ratios, ratios[1:]))  # the steeper, the shorter
    assert 0.05 < ratios[3] < 0.6  # from a ceiling: head still above the feet, strongly foreshortened


# --------------------------------------------------------------------------------------------
# Estimator noise
# --------------------------------------------------------------------------------------------


def test_noise_jitter_grows_as_scores_drop():
    errors, scores = [], []
    for seed in range(12):
        clip = syn.generate_clip(syn.ACTIONS[seed % len(syn.ACTIONS)], seed, debug=True, score_style="estimator")
        kp, score = clip["keypoint"][0], clip["keypoint_score"][0]
        clean = clip["debug"]["clean"][0]
        present = clip["debug"]["present"][0]
        size = (clean.max(1) - clean.min(1)).max(-1)
        err = np.linalg.norm(kp - clean, axis=-1) / size[:, None]
        errors.append(err[present].ravel())
        scores.append(score[present].ravel())
    err, score = np.concatenate(errors), np.concatenate(scores)
    high, low = err[score > 0.8], err[score < 0.5]
    assert len(low) > 50 and len(high) > 500
    assert np.median(low) > 2.5 * np.median(high)
    assert np.median(high) < 0.03  # confident joints sit within a few % of the body size
    assert 0.6 < np.median(score) < 0.95  # a present person's scores are typically 0.6-1.0


def test_noise_occludes_the_far_side():
    """Seen from the person's right, the left joints score lower."""
    subject = syn.sample_subject(1)
    t = np.arange(30) / 15.0
    rng = np.random.default_rng(0)
    m = syn._standing(t, subject, rng, yaw=0.0, anchor=(0.0, 0.0))  # facing +x, left is +y
    joints = syn.world_joints(subject.body, m)
    cam_pos = np.array([0.0, -4.0, 1.2])  # on the person's right
    cam = syn.Camera(position=cam_pos, rotation=syn.look_at(cam_pos, [0, 0, 0.9]), focal=500.0,
                     center=(320.0, 240.0), img_shape=(480, 640))
    left, right = [], []
    for seed in range(10):
        _, score, _ = syn.estimator_noise(np.random.default_rng(seed), joints, cam)
        left.append(score[:, [7, 9, 13, 15]].mean())
        right.append(score[:, [8, 10, 14, 16]].mean())
    assert np.mean(right) - np.mean(left) > 0.1


def test_out_of_frame_joints_and_gaps():
    # a person placed at the image border: joints outside get low scores, outside coordinates
    subject = syn.sample_subject(2)
    t = np.arange(40) / 20.0
    m = syn._standing(t, subject, np.random.default_rng(0), yaw=math.pi, anchor=(0.0, 0.0))
    joints = syn.world_joints(subject.body, m)
    cam_pos = np.array([-3.0, 0.0, 1.2])
    rot = syn.look_at(cam_pos, [0.0, 0.0, 0.9])
    cam = syn.Camera(position=cam_pos, rotation=rot, focal=500.0, center=(320.0, 400.0), img_shape=(480, 640))
    uv, _ = cam.project(joints)
    outside = uv[..., 1] >= 480
    assert outside.any() and not outside.all()
    seen = 0
    for seed in range(5):
        kp, score, info = syn.estimator_noise(np.random.default_rng(seed), joints, cam, score_style="estimator")
        ok = info["present"]
        seen += ok.sum()
        assert score[ok][outside[ok]].max() <= 0.3
        assert np.median(score[ok][~outside[ok]]) > 0.6
        assert (kp[ok][..., 1][outside[ok]] > 460).mean() > 0.9  # reported near/below the border
        assert np.all(score[~ok] == 0) and np.all(kp[~ok] == 0)
    assert seen > 0


# The generator against the front end's errors measured on real footage (vtest.avi through the
# default front end: train/data/front_end_measured.json, benchmarks/front_end_errors.py).


@pytest.fixture(scope="module")
def measured():
    return noise_stats.load_measured()


def _like_vtest(measured, action, count, seed, heights=None):
    """The generator's clips at vtest.avi's rate, image size, camera heights and person sizes
    (the real tracks' 10-90 % heights unless given), scored as the default front end scores.
    (People under 60 px are rare in the generator's camera draws: up to 100 tries a clip.)"""
    lo, _, hi = measured["tracks"]["height_px"]
    clips = noise_stats.generator_tracks(action, count, seed, fps=measured["fps"], img_shape=tuple(measured["img_shape"]),
                                         heights=heights or (lo, hi), score_style="confident", max_tries=100)
    assert len(clips) == count
    return clips


def test_noise_matches_the_measured_front_end(measured):
    clips = _like_vtest(measured, "walking", 30, 0) + _like_vtest(measured, "standing", 30, 1)
    stats = noise_stats.track_statistics(clips, measured["fps"])
    real = measured["tracks"]
    # one estimate's random error: the real flip test's distance / sqrt(2)
    error = noise_stats.random_error(clips)
    for group, value in measured["random_error"].items():
        assert value / 1.4 < error[group]["p50"] < value * 1.4, group
    for group, value in real["swap"].items():
        assert value / 1.6 < stats["swap"][group] < value * 1.6, group
    for key, tolerance in (("gap", 0.35), ("limb_change", 0.35), ("joint_miss", 0.4)):
        assert abs(stats[key] - real[key]) < tolerance * real[key], key
    assert abs(stats["score"]["arms"]["below_0_3"] - real["score"]["arms"]["below_0_3"]) < 0.08
    assert stats["score"]["hips"]["p10"] > 0.9 and real["score"]["hips"]["p10"] > 0.9  # the trunk is always sure


def test_swaps_and_gaps_fall_with_person_size(measured):
    fps = measured["fps"]
    small = noise_stats.track_statistics(_like_vtest(measured, "walking", 30, 4, heights=(40, 60)), fps)
    large = noise_stats.track_statistics(_like_vtest(measured, "walking", 30, 5, heights=(80, 120)), fps)
    # measured: legs swap 5.9 % / 1.3 %, gaps 14.6 % / 5.5 % (other gaps, e.g. people partly
    # out of the frame, do not fall with size)
    assert small["swap"]["legs"] > 2 * large["swap"]["legs"]
    assert small["gap"] > 1.5 * large["gap"]
    for gen, real in ((small, measured["by_height"]["0-60px"]), (large, measured["by_height"]["80-120px"])):
        assert real["swap"]["legs"] / 2 < gen["swap"]["legs"] < 2 * real["swap"]["legs"]
        assert real["gap"] / 2 < gen["gap"] < 2 * real["gap"]


def test_hips_and_shoulders_follow_the_measured_blazepose_convention(measured):
    expected = measured["blazepose_vs_movenet"]["convention_per_track"]
    clip = syn.generate_clip("standing", 3, noise=False, fps=10.0, duration=2.0)
    uv = clip["keypoint"][0].astype(np.float64)
    rng = np.random.default_rng(0)
    shifted = []
    for _ in range(400):
        out = syn._joint_convention(rng, uv)
        if not np.array_equal(out, uv):
            shifted.append(noise_stats.trunk_convention(out[0], uv[0]))
    assert 150 < len(shifted) < 250  # half the clips keep a COCO-trained estimator's joints
    for key in ("hip_up", "hip_width", "shoulder_up", "shoulder_width"):
        values = np.array([c[key] for c in shifted])
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        assert abs(q50 - expected[key]["p50"]) < 0.02, key
        want = expected[key]["p75"] - expected[key]["p25"]
        assert 0.6 * want < q75 - q25 < 1.4 * want, key


def test_walking_covers_the_measured_gait_and_running_stays_faster(measured):
    fps = measured["fps"]
    real = measured["walking"]
    walk = _like_vtest(measured, "walking", 40, 2)
    per_clip = [noise_stats.track_statistics([c], fps) for c in walk]
    # the typical real walker's legs, as the front end draws them, are among the generator's
    # walkers (clip by clip, 10-90 %): not only much wider strides and more bent knees
    for key in ("ankle_spread", "knee_flexion"):
        values = [s[key] for s in per_clip]
        assert np.percentile(values, 10) <= measured["walking_per_track"][key][1] <= np.percentile(values, 90), key
    walking = noise_stats.track_statistics(walk, fps)
    running = noise_stats.track_statistics(_like_vtest(measured, "running", 40, 3), fps)
    assert abs(walking["cadence_hz"]["p50"] - real["cadence_hz"]["p50"]) < 0.12
    assert running["cadence_hz"]["p25"] > max(walking["cadence_hz"]["p75"], real["cadence_hz"]["p75"])


def test_bystanders_appear():
    shapes = [syn.generate_clip("falling", seed, bystander=True)["keypoint"].shape[0] for seed in range(6)]
    assert max(shapes) == 2
    data = syn.generate_dataset(24, seed=0, bystander_prob=0.0, progress=False)
    assert all(c["keypoint"].shape[0] == 1 for c in data["annotations"])


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def test_gif_has_one_frame_per_clip_frame(tmp_path):
    clip = syn.generate_clip("waving", 3, duration=1.5, fps=10, bystander=True)
    out = render_clip_animation(clip, tmp_path / "clip.gif", size=200)
    with Image.open(out) as im:
        assert im.format == "GIF"
        assert im.n_frames == clip["total_frames"]
        assert im.info.get("duration") == 100
    frames = render_frames(clip, size=200)
    assert len(frames) == clip["total_frames"]
    assert len({f.tobytes() for f in frames}) == len(frames)
    sheet = contact_sheet(clip, num=4, size=150)
    assert sheet.size[0] > 3 * 150
    with pytest.raises(ValueError, match="unsupported"):
        render_clip_animation(clip, tmp_path / "clip.avi")
    assert not (tmp_path / "clip.avi").exists()


def test_mp4_writer(tmp_path):
    cv2 = pytest.importorskip("cv2")
    clip = syn.generate_clip("walking", 1, duration=1.5, fps=12)
    out = render_clip_animation(clip, tmp_path / "clip.mp4", size=160)
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == clip["total_frames"]
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp files left
