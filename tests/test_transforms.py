"""Clip transforms (posestream.train.transforms): each step alone, then the PoseC3D pipelines."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from posestream.engines.raster import rasterize
from posestream.skeleton import (
    KEYPOINT_FLIP_INDEX,
    LEFT_KEYPOINTS,
    PYSKL_DEFAULT_LIMBS,
    PYSKL_RELEASED_LIMBS,
    RIGHT_KEYPOINTS,
)
from posestream.train import transforms as T


def make_clip(total_frames=150, persons=2, seed=0, img_shape=(1080, 1920)):
    """A random clip in PYSKL's annotation format: persons walking around, some frames missing."""
    rng = np.random.default_rng(seed)
    h, w = img_shape
    centre = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.7 * h], size=(persons, 1, 1, 2))
    walk = np.cumsum(rng.normal(0, 3, size=(persons, total_frames, 1, 2)), axis=1)
    body = rng.normal(0, 80, size=(persons, 1, 17, 2))
    keypoint = (centre + walk + body).astype(np.float32)
    score = rng.uniform(0.2, 1, size=(persons, total_frames, 17)).astype(np.float32)
    missing = rng.random((persons, total_frames)) < 0.1
    keypoint[missing] = 0
    score[missing] = 0
    return dict(keypoint=keypoint, keypoint_score=score, img_shape=img_shape,
                total_frames=total_frames, label=7, frame_dir="S001C001P001R001A007")


# ---------------------------------------------------------------------------------------------
# UniformSampleFrames


@pytest.mark.parametrize("seed", range(5))
def test_train_sampling_long_clip_takes_one_frame_per_segment(seed):
    total, clip_len = 200, 48
    out = T.UniformSampleFrames(clip_len, rng=seed)({"total_frames": total})
    inds = out["frame_inds"]
    assert inds.shape == (clip_len,) and inds.dtype.kind == "i"
    bounds = np.arange(clip_len + 1) * total // clip_len
    assert np.all(inds >= bounds[:-1]) and np.all(inds < bounds[1:])
    assert np.all(np.diff(inds) > 0)
    assert out["clip_len"] == clip_len and out["num_clips"] == 1


def test_train_sampling_is_random_across_calls_but_reproducible_by_seed():
    draws = [T.UniformSampleFrames(48, rng=3)({"total_frames": 300})["frame_inds"] for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    sampler = T.UniformSampleFrames(48, rng=3)
    first, second = (sampler({"total_frames": 300})["frame_inds"] for _ in range(2))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("seed", range(5))
def test_train_sampling_short_clip_wraps_consecutive_frames(seed):
    total, clip_len = 30, 48
    inds = T.UniformSampleFrames(clip_len, rng=seed)({"total_frames": total})["frame_inds"]
    assert inds.shape == (clip_len,)
    np.testing.assert_array_equal(inds, (inds[0] + np.arange(clip_len)) % total)


@pytest.mark.parametrize("seed", range(5))
def test_train_sampling_medium_clip_inserts_single_frame_gaps(seed):
    total, clip_len = 60, 48
    inds = T.UniformSampleFrames(clip_len, rng=seed)({"total_frames": total})["frame_inds"]
    steps = np.diff(inds)
    assert set(steps.tolist()) <= {1, 2}  # distinct, sorted, at most one frame skipped at a time
    assert inds[0] + (steps == 2).sum() == inds[-1] - (clip_len - 1)
    assert 0 <= inds[0] and inds[-1] < total


def test_multi_clip_train_sampling_concatenates_clips():
    out = T.UniformSampleFrames(16, num_clips=3, rng=0)({"total_frames": 100})
    inds = out["frame_inds"].reshape(3, 16)
    bounds = np.arange(17) * 100 // 16
    assert np.all((inds >= bounds[:-1]) & (inds < bounds[1:]))
    assert out["num_clips"] == 3


# Produced by PYSKL's own UniformSampleFrames (pyskl/datasets/pipelines/sampling.py, run
# unchanged in /tmp with test_mode=True and its default seed 255):
# (total_frames, clip_len, num_clips) -> frame_inds.
PYSKL_TEST_INDICES = {
    (100, 48, 1): [1, 3, 4, 7, 9, 10, 13, 15, 16, 18, 21, 22, 25, 28, 29, 32, 34, 35, 37, 40, 42, 43, 45, 49,
                   50, 52, 55, 56, 58, 60, 62, 64, 67, 68, 71, 74, 75, 77, 80, 82, 84, 86, 87, 90, 91, 94, 96, 97],
    (60, 48, 1): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 16, 17, 19, 20, 21, 22, 24, 25, 27, 28, 29, 30,
                  31, 33, 34, 36, 37, 38, 40, 41, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 57, 58],
    (20, 8, 2): [1, 3, 5, 8, 11, 12, 16, 18, 1, 2, 5, 9, 11, 13, 15, 17],
    (130, 16, 2): [7, 9, 22, 29, 39, 40, 53, 58, 69, 74, 81, 93, 104, 107, 120, 122,
                   1, 15, 16, 30, 38, 42, 54, 56, 71, 77, 85, 93, 104, 109, 114, 125],
    (5, 8, 10): [0, 1, 2, 3, 4, 0, 1, 2, 1, 2, 3, 4, 0, 1, 2, 3, 2, 3, 4, 0, 1, 2, 3, 4, 3, 4, 0, 1, 2, 3, 4, 0,
                 4, 0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 3, 4, 0, 1, 2, 1, 2, 3, 4, 0, 1, 2, 3, 2, 3, 4, 0, 1, 2, 3, 4,
                 3, 4, 0, 1, 2, 3, 4, 0, 4, 0, 1, 2, 3, 4, 0, 1],
}


@pytest.mark.parametrize("case", sorted(PYSKL_TEST_INDICES))
def test_test_mode_sampling_reproduces_pyskl(case):
    total, clip_len, num_clips = case
    sampler = T.UniformSampleFrames(clip_len, num_clips=num_clips, test_mode=True)
    for _ in range(2):  # deterministic: the same indices every call
        inds = sampler({"total_frames": total})["frame_inds"]
        assert inds.tolist() == PYSKL_TEST_INDICES[case]


def test_short_clip_multi_clip_test_starts():
    # 30 frames, 3 clips of 48: clip i starts at i * 30 // 3 and wraps around.
    inds = T.UniformSampleFrames(48, num_clips=3, test_mode=True)({"total_frames": 30})["frame_inds"]
    expected = np.concatenate([(start + np.arange(48)) % 30 for start in (0, 10, 20)])
    np.testing.assert_array_equal(inds, expected)


def test_sampling_leaves_global_numpy_rng_alone():
    np.random.seed(1234)
    state = np.random.get_state()
    T.UniformSampleFrames(48, num_clips=10, test_mode=True)({"total_frames": 100})
    T.UniformSampleFrames(48, rng=0)({"total_frames": 100})
    T.train_pipeline(seed=0)(make_clip(total_frames=80))
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_train_sampling_ignores_the_global_rng():
    np.random.seed(0)
    a = T.UniformSampleFrames(48, rng=5)({"total_frames": 500})["frame_inds"]
    np.random.seed(99)
    b = T.UniformSampleFrames(48, rng=5)({"total_frames": 500})["frame_inds"]
    np.testing.assert_array_equal(a, b)


def test_sampling_rejects_inconsistent_clip():
    clip = make_clip(total_frames=50)
    clip["total_frames"] = 60
    with pytest.raises(ValueError, match="S001C001P001R001A007"):
        T.UniformSampleFrames(48)(clip)


# ---------------------------------------------------------------------------------------------
# PoseDecode


def test_pose_decode_gathers_frames_as_float32():
    clip = make_clip(total_frames=20)
    clip["keypoint"] = clip["keypoint"].astype(np.float64)
    inds = np.array([3, 3, 0, 19])
    out = T.PoseDecode()(dict(clip, frame_inds=inds))
    assert out["keypoint"].dtype == np.float32 and out["keypoint_score"].dtype == np.float32
    np.testing.assert_array_equal(out["keypoint"], clip["keypoint"][:, inds].astype(np.float32))
    np.testing.assert_array_equal(out["keypoint_score"], clip["keypoint_score"][:, inds])


# ---------------------------------------------------------------------------------------------
# PoseCompact


def box_clip(xs, ys, img_shape=(480, 640)):
    """Two persons, 3 frames; the nonzero coordinates span exactly [min(xs), max(xs)] x
    [min(ys), max(ys)]; some keypoints are missing (0, 0)."""
    kp = np.zeros((2, 3, 17, 2), np.float32)
    rng = np.random.default_rng(0)
    kp[..., 0] = rng.uniform(min(xs) + 1, max(xs) - 1, size=(2, 3, 17))
    kp[..., 1] = rng.uniform(min(ys) + 1, max(ys) - 1, size=(2, 3, 17))
    kp[0, 0, 0] = (min(xs), min(ys))
    kp[1, 2, 5] = (max(xs), max(ys))
    kp[1, 1, :4] = 0  # missing keypoints
    return dict(keypoint=kp, keypoint_score=np.ones((2, 3, 17), np.float32), img_shape=img_shape)


def test_pose_compact_box_with_padding():
    clip = box_clip(xs=(100, 200), ys=(50, 250))
    before = clip["keypoint"].copy()
    out = T.PoseCompact(padding=0.25)(clip)
    # centre (150, 150), half sizes 50 * 1.25 = 62.5 and 100 * 1.25 = 125 -> x 87.5..212.5, y 25..275
    assert out["img_shape"] == (250, 125)
    assert out["crop_quadruple"] == pytest.approx((87 / 640, 25 / 480, 125 / 640, 250 / 480))
    expected = before - np.array([87, 25], np.float32)
    expected[before == 0] = 0  # missing coordinates stay 0
    np.testing.assert_array_equal(out["keypoint"], expected)
    np.testing.assert_array_equal(clip["keypoint"], before)  # the input is untouched


def test_pose_compact_hw_ratio_makes_a_square():
    out = T.PoseCompact(hw_ratio=1.0)(box_clip(xs=(100, 200), ys=(50, 250)))
    assert out["img_shape"] == (250, 250)  # x 25..275, y 25..275
    out = T.PoseCompact(hw_ratio=(0.5, 1.0))(box_clip(xs=(100, 200), ys=(50, 250)))
    assert out["img_shape"] == (250, 250)  # height >= 0.5 width already; width widened to >= height


def test_pose_compact_image_padding_versus_clamping():
    clip = box_clip(xs=(11, 110), ys=(50, 250))
    # square box: centre x 60.5, half 125 -> x -64.5..185.5, truncated toward zero: -64..185
    padded = T.PoseCompact(hw_ratio=1.0, allow_imgpad=True)(clip)
    assert padded["img_shape"] == (250, 249)
    np.testing.assert_array_equal(padded["keypoint"][0, 0, 0], [11 + 64, 50 - 25])
    clamped = T.PoseCompact(hw_ratio=1.0, allow_imgpad=False)(clip)
    assert clamped["img_shape"] == (250, 185)  # x clamped to 0..185
    np.testing.assert_array_equal(clamped["keypoint"][0, 0, 0], [11, 50 - 25])
    assert clamped["crop_quadruple"][0] == 0


def test_pose_compact_small_box_and_nan():
    clip = box_clip(xs=(100, 105), ys=(50, 250))  # 5 px wide: below the threshold
    clip["keypoint"][0, 2, 7] = np.nan
    out = T.PoseCompact()(clip)
    assert out["img_shape"] == (480, 640) and "crop_quadruple" not in out
    assert not np.isnan(out["keypoint"]).any() and np.isnan(clip["keypoint"]).any()


# ---------------------------------------------------------------------------------------------
# Resize


@pytest.mark.parametrize("scale, keep_ratio, size", [
    ((-1, 64), True, (64, 114)),   # short side 64: 1920 * 64 / 1080 = 113.8 -> 114
    ((64, -1), True, (64, 114)),
    (0.5, True, (540, 960)),
    ((100, 60), True, (56, 100)),  # bound: factor min(100 / 1920, 60 / 1080)
    ((56, 56), False, (56, 56)),
    ((80, 40), False, (40, 80)),   # (w, h)
])
def test_resize_sizes_and_keypoints(scale, keep_ratio, size):
    clip = dict(keypoint=np.full((1, 2, 17, 2), [960.0, 540.0], np.float32), img_shape=(1080, 1920))
    out = T.Resize(scale, keep_ratio=keep_ratio)(clip)
    assert out["img_shape"] == size
    factor = np.array([size[1] / 1920, size[0] / 1080], np.float32)
    np.testing.assert_allclose(out["keypoint"], clip["keypoint"] * factor)
    np.testing.assert_allclose(out["scale_factor"], factor)
    assert clip["img_shape"] == (1080, 1920)


def test_resize_scale_factor_accumulates():
    out = T.Resize(0.5)(T.Resize((-1, 540))(dict(img_shape=(1080, 1920))))
    assert out["img_shape"] == (270, 480)
    np.testing.assert_allclose(out["scale_factor"], [0.25, 0.25])


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop


@pytest.mark.parametrize("seed", range(10))
def test_random_resized_crop_box_and_keypoints(seed):
    clip = make_clip(total_frames=4, img_shape=(64, 90))
    crop = T.RandomResizedCrop(area_range=(0.56, 1.0), rng=seed)
    out = crop(clip)
    left, top, right, bottom = out["crop_bbox"].tolist()
    assert 0 <= left < right <= 90 and 0 <= top < bottom <= 64
    assert out["img_shape"] == (bottom - top, right - left)
    area = (right - left) * (bottom - top) / (64 * 90)
    assert 0.5 <= area <= 1.0  # the area range, up to rounding of the sides
    ratio = (right - left) / (bottom - top)
    assert 3 / 4 - 0.05 <= ratio <= 4 / 3 + 0.05
    np.testing.assert_allclose(out["keypoint"], clip["keypoint"] - np.array([left, top], np.float32))
    assert out["crop_quadruple"] == pytest.approx((left / 90, top / 64, (right - left) / 90, (bottom - top) / 64))


def test_random_resized_crop_falls_back_to_centre_square():
    crop = T.RandomResizedCrop(area_range=(0.9, 1.0), aspect_ratio_range=(10.0, 20.0), rng=0)
    out = crop(dict(img_shape=(100, 50), keypoint=np.ones((1, 1, 17, 2), np.float32) * 30))
    assert out["crop_bbox"].tolist() == [0, 25, 50, 75]
    np.testing.assert_array_equal(out["keypoint"][0, 0, 0], [30, 5])


# ---------------------------------------------------------------------------------------------
# Flip


def test_flip_mirrors_x_and_swaps_sides():
    clip = make_clip(total_frames=6, img_shape=(56, 56))
    clip["keypoint"] = np.clip(clip["keypoint"] / 40, 0, 55)
    clip["keypoint"][0, 1] = 0  # a missing person-frame
    before = copy.deepcopy(clip)
    flip = T.Flip(flip_ratio=1.0)
    out = flip(clip)
    assert out["flip"] is True
    left, right = list(LEFT_KEYPOINTS), list(RIGHT_KEYPOINTS)
    np.testing.assert_array_equal(out["keypoint_score"][:, :, left], clip["keypoint_score"][:, :, right])
    np.testing.assert_array_equal(out["keypoint_score"][:, :, right], clip["keypoint_score"][:, :, left])
    x = clip["keypoint"][..., 0][:, :, KEYPOINT_FLIP_INDEX]
    np.testing.assert_allclose(out["keypoint"][..., 0], np.where(x != 0, 56 - x, 0))
    np.testing.assert_array_equal(out["keypoint"][..., 1], clip["keypoint"][..., 1][:, :, KEYPOINT_FLIP_INDEX])
    assert np.all(out["keypoint"][0, 1] == 0)
    twice = flip(out)
    np.testing.assert_allclose(twice["keypoint"], clip["keypoint"], atol=1e-5)
    np.testing.assert_array_equal(twice["keypoint_score"], clip["keypoint_score"])
    for key in ("keypoint", "keypoint_score"):  # the input is untouched
        np.testing.assert_array_equal(clip[key], before[key])


def test_flip_ratio_zero_never_flips():
    clip = make_clip(total_frames=4)
    out = T.Flip(flip_ratio=0.0, rng=0)(clip)
    assert out["flip"] is False
    assert out["keypoint"] is clip["keypoint"]


def test_flip_ratio_is_a_probability():
    flip = T.Flip(flip_ratio=0.5, rng=0)
    flips = [flip(dict(img_shape=(56, 56)))["flip"] for _ in range(400)]
    assert 150 < sum(flips) < 250


# ---------------------------------------------------------------------------------------------
# GeneratePoseTarget and FormatShape


def small_clip(frames=6):
    clip = make_clip(total_frames=frames, img_shape=(40, 48))
    clip["keypoint"] = clip["keypoint"] / np.array([40, 27], np.float32)  # into the 48 x 40 frame
    return clip


@pytest.mark.parametrize("limbs", [None, "pyskl_default", "pyskl_released"])
def test_generate_pose_target_is_rasterize(limbs):
    clip = small_clip()
    step = T.GeneratePoseTarget(with_kp=limbs is None, with_limb=limbs is not None, limbs=limbs or "pyskl_default")
    out = step(clip)
    expected = rasterize(clip["keypoint"], clip["keypoint_score"], 40, 48, sigma=0.6, limbs=limbs)
    assert out["imgs"].shape == (1, 17, 6, 40, 48) and out["imgs"].dtype == np.float32
    np.testing.assert_array_equal(out["imgs"][0], expected)


@pytest.mark.parametrize("limbs, flip_index", [(None, KEYPOINT_FLIP_INDEX),
                                               ("pyskl_default", PYSKL_DEFAULT_LIMBS.flip_index),
                                               ("pyskl_released", PYSKL_RELEASED_LIMBS.flip_index)])
def test_generate_pose_target_double_appends_the_mirror(limbs, flip_index):
    clip = small_clip()
    step = T.GeneratePoseTarget(with_kp=limbs is None, with_limb=limbs is not None,
                                limbs=limbs or "pyskl_default", double=True)
    imgs = step(clip)["imgs"]
    assert imgs.shape == (2, 17, 6, 40, 48)
    np.testing.assert_array_equal(imgs[1], imgs[0][flip_index][..., ::-1])
    assert not np.array_equal(imgs[1], imgs[0])


def test_generate_pose_target_without_scores():
    out = T.GeneratePoseTarget(use_score=False)(small_clip())
    expected = rasterize(small_clip()["keypoint"], np.ones((2, 6, 17), np.float32), 40, 48)
    np.testing.assert_array_equal(out["imgs"][0], expected)
    with pytest.raises(ValueError):
        T.GeneratePoseTarget(with_kp=True, with_limb=True)


def test_format_shape_orders_clips_then_mirror():
    augs, k, num_clips, clip_len = 2, 3, 4, 5
    imgs = np.zeros((augs, k, num_clips * clip_len, 2, 2), np.float32)
    imgs += (np.arange(augs)[:, None, None] * 1000 + np.arange(k)[None, :, None] * 100
             + np.arange(num_clips * clip_len)[None, None, :])[..., None, None]
    out = T.FormatShape()(dict(imgs=imgs, num_clips=num_clips, clip_len=clip_len))["imgs"]
    assert out.shape == (augs * num_clips, k, clip_len, 2, 2) and out.flags.c_contiguous
    for n in range(augs * num_clips):
        aug, clip = divmod(n, num_clips)
        expected = aug * 1000 + np.arange(k)[:, None] * 100 + clip * clip_len + np.arange(clip_len)[None, :]
        np.testing.assert_array_equal(out[n, :, :, 0, 0], expected)


# ---------------------------------------------------------------------------------------------
# Pipelines


def test_compose_applies_steps_in_order_and_copies_the_dict():
    clip = {"x": 1}
    out = T.Compose([lambda r: dict(r, x=r["x"] * 10), lambda r: dict(r, x=r["x"] + 1)])(clip)
    assert out["x"] == 11 and clip == {"x": 1}


def assert_untouched(clip, before):
    assert clip.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(clip[key], value)
        else:
            assert clip[key] == value


@pytest.mark.parametrize("limbs", [None, "pyskl_released"])
def test_train_and_val_pipelines(limbs):
    clip = make_clip(total_frames=150)
    before = copy.deepcopy(clip)
    for pipeline, shape in [(T.train_pipeline(limbs=limbs, seed=0), (1, 17, 48, 56, 56)),
                            (T.val_pipeline(limbs=limbs), (1, 17, 48, 64, 64))]:
        out = pipeline(clip)
        imgs = out["imgs"]
        assert imgs.shape == shape and imgs.dtype == np.float32
        assert imgs.min() >= 0 and 0.5 < imgs.max() <= 1
        assert out["label"] == 7
    assert_untouched(clip, before)


def test_train_pipeline_is_seeded_and_random():
    clip = make_clip(total_frames=150)
    a = T.train_pipeline(seed=1)(clip)["imgs"]
    b = T.train_pipeline(seed=1)(clip)["imgs"]
    np.testing.assert_array_equal(a, b)
    pipeline = T.train_pipeline(seed=1)
    outs = [pipeline(clip)["imgs"] for _ in range(2)]
    assert not np.array_equal(outs[0], outs[1])
    pipeline.reseed(1)
    reseeded = pipeline(clip)["imgs"]
    pipeline.reseed(1)
    np.testing.assert_array_equal(pipeline(clip)["imgs"], reseeded)


def test_val_pipeline_is_deterministic():
    clip = make_clip(total_frames=150)
    np.testing.assert_array_equal(T.val_pipeline()(clip)["imgs"], T.val_pipeline()(clip)["imgs"])


@pytest.mark.parametrize("limbs, flip_index", [(None, KEYPOINT_FLIP_INDEX),
                                               ("pyskl_released", PYSKL_RELEASED_LIMBS.flip_index)])
def test_test_pipeline_ten_clips_and_their_mirrors(limbs, flip_index):
    clip = make_clip(total_frames=150)
    before = copy.deepcopy(clip)
    imgs = T.test_pipeline(limbs=limbs)(clip)["imgs"]
    assert imgs.shape == (20, 17, 48, 64, 64) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 1
    # all ten clips first (each a different sample of the clip), then their mirror images
    assert not np.array_equal(imgs[0], imgs[1])
    for i in (0, 9):
        np.testing.assert_array_equal(imgs[10 + i], imgs[i][flip_index][..., ::-1])
    assert_untouched(clip, before)
