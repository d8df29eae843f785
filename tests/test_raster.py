"""The rasterizer against a direct per-pixel transcription of the paper's Eq. 1 and Eq. 2.

The transcription below visits every pixel of every heatmap plane and evaluates the equations
literally, with PYSKL's GeneratePoseTarget conventions spelled out as predicates (score
threshold, +-3 sigma window on the integer grid with truncation toward zero, the start
keypoint's Gaussian for limbs shorter than a pixel, max over persons). It is slow on purpose
and shares no code with posestream.engines.raster.
"""
import math

import numpy as np
import pytest

from posestream.engines.raster import EPS, Rasterizer, num_channels, rasterize, rasterize_batch
from posestream.skeleton import KEYPOINT_FLIP_INDEX, PYSKL_DEFAULT_LIMBS, PYSKL_RELEASED_LIMBS


def in_window(px, lo, hi, sigma, size):
    """PYSKL's window: pixels int(lo - 3 sigma) .. int(hi + 3 sigma), inside the grid."""
    return max(math.trunc(lo - 3 * sigma), 0) <= px < min(math.trunc(hi + 3 * sigma) + 1, size)


def eq1_joint(x, y, kx, ky, score, sigma, height, width):
    if score < EPS or not (in_window(x, kx, kx, sigma, width) and in_window(y, ky, ky, sigma, height)):
        return 0.0
    return math.exp(-((x - kx) ** 2 + (y - ky) ** 2) / (2 * sigma**2)) * score


def segment_distance(x, y, ax, ay, bx, by):
    """D of Eq. 2: the Euclidean distance from (x, y) to the segment [a, b]."""
    length2 = (bx - ax) ** 2 + (by - ay) ** 2
    along = ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length2
    along = min(max(along, 0.0), 1.0)
    return math.hypot(x - (ax + along * (bx - ax)), y - (ay + along * (by - ay)))


def eq2_limb(x, y, a, b, score_a, score_b, sigma, height, width):
    if min(score_a, score_b) < EPS:
        return 0.0
    if (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < 1:  # (almost) coincident endpoints
        return eq1_joint(x, y, a[0], a[1], score_a, sigma, height, width)
    if not (in_window(x, min(a[0], b[0]), max(a[0], b[0]), sigma, width)
            and in_window(y, min(a[1], b[1]), max(a[1], b[1]), sigma, height)):
        return 0.0
    d = segment_distance(x, y, a[0], a[1], b[0], b[1])
    return math.exp(-d**2 / (2 * sigma**2)) * min(score_a, score_b)


def reference_volume(kp, sc, height, width, sigma=0.6, limbs=None):
    kp, sc = np.asarray(kp, np.float64), np.asarray(sc, np.float64)
    m, t, v, _ = kp.shape
    k = v if limbs is None else len(limbs)
    vol = np.zeros((k, t, height, width))
    for c in range(k):
        for f in range(t):
            for y in range(height):
                for x in range(width):
                    best = 0.0
                    for p in range(m):
                        if limbs is None:
                            val = eq1_joint(x, y, kp[p, f, c, 0], kp[p, f, c, 1], sc[p, f, c], sigma, height, width)
                        else:
                            i, j = limbs[c]
                            val = eq2_limb(x, y, kp[p, f, i], kp[p, f, j], sc[p, f, i], sc[p, f, j],
                                           sigma, height, width)
                        best = max(best, val)
                    vol[c, f, y, x] = best
    return vol


def random_clip(rng, m=2, t=3, v=17, height=16, width=20, margin=4):
    kp = rng.uniform(-margin, [width + margin, height + margin], size=(m, t, v, 2)).astype(np.float32)
    sc = rng.uniform(0, 1, size=(m, t, v)).astype(np.float32)
    sc[rng.random(sc.shape) < 0.1] = 0
    return kp, sc


@pytest.mark.parametrize("limbs", [None, PYSKL_DEFAULT_LIMBS, PYSKL_RELEASED_LIMBS])
@pytest.mark.parametrize("sigma", [0.6, 1.3])
def test_random_clips_match_the_equations(limbs, sigma):
    rng = np.random.default_rng(7)
    for _ in range(2):
        kp, sc = random_clip(rng)
        ours = rasterize(kp, sc, 16, 20, sigma=sigma, limbs=limbs)
        ref = reference_volume(kp, sc, 16, 20, sigma, None if limbs is None else limbs.pairs)
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
        assert ref.max() > 0.1  # the comparison covered real Gaussians


def test_low_scores_are_skipped_exactly_at_eps():
    kp = np.array([[[[5.0, 5.0], [10.0, 5.0]]]], np.float32)  # [1, 1, 2, 2]
    sc = np.array([[[EPS * 0.999, EPS]]], np.float32)
    vol = rasterize(kp, sc, 12, 16)
    assert vol[0].max() == 0
    assert vol[1, 0, 5, 10] == pytest.approx(EPS)
    limb = rasterize(kp, sc, 12, 16, limbs=[(0, 1)])
    assert limb.max() == 0  # min of the two scores is below EPS


def test_gaussian_is_cut_at_the_window_edge():
    # x = 5.0, sigma 0.6: the window is columns int(3.2) .. int(6.8) = 3..6; column 7 is two
    # pixels away (exp(-4 / 0.72) ~ 0.004 in the formula) but lies outside the window.
    kp = np.array([[[[5.0, 5.0]]]], np.float32)
    vol = rasterize(kp, np.ones((1, 1, 1), np.float32), 12, 12)[0, 0]
    assert vol[5, 3] == pytest.approx(math.exp(-4 / 0.72), rel=1e-5)
    assert vol[5, 7] == 0 and vol[7, 5] == 0 and vol[5, 2] == 0
    assert vol[5, 5] == 1.0
    assert np.count_nonzero(vol) == 16


@pytest.mark.parametrize("point,expect_nonzero", [
    ((-1.0, 5.0), True),      # left of the grid, column 0 still in its window
    ((-2.5, 5.0), True),      # int(-2.5 + 1.8) = int(-0.7) = 0: truncation toward zero keeps column 0
    ((-3.5, 5.0), False),     # int(-1.7) + 1 = 0: empty window
    ((13.5, 5.0), True),      # right of a 12-wide grid
    ((5.0, 1e6), False),      # far away
    ((np.nan, 5.0), False),   # a missing detection
    ((5.0, np.inf), False),
])
def test_keypoints_outside_the_grid(point, expect_nonzero):
    kp = np.array(point, np.float32).reshape(1, 1, 1, 2)
    sc = np.ones((1, 1, 1), np.float32)
    vol = rasterize(kp, sc, 10, 12)
    assert np.all(np.isfinite(vol))
    assert (vol.max() > 0) == expect_nonzero
    if np.all(np.isfinite(point)):
        ref = reference_volume(kp, sc, 10, 12)
        np.testing.assert_allclose(vol, ref, atol=1e-6)


def test_short_limbs_draw_the_start_keypoint_at_its_own_score():
    # Endpoints 0.9 px apart: the start keypoint's Gaussian scaled by the start score (0.8),
    # not by min(0.8, 0.3). At 1.1 px apart: a segment at min score.
    kp = np.array([[[[6.0, 6.0], [6.9, 6.0]]]], np.float32)
    sc = np.array([[[0.8, 0.3]]], np.float32)
    vol = rasterize(kp, sc, 12, 12, limbs=[(0, 1)])[0, 0]
    assert vol[6, 6] == pytest.approx(0.8)
    assert vol[6, 7] == pytest.approx(0.8 * math.exp(-1 / 0.72), rel=1e-5)
    kp[0, 0, 1, 0] = 7.1
    vol = rasterize(kp, sc, 12, 12, limbs=[(0, 1)])[0, 0]
    assert vol[6, 6] == pytest.approx(0.3) and vol[6, 7] == pytest.approx(0.3)
    exactly = np.array([[[[6.0, 6.0], [6.0, 6.0]]]], np.float32)
    vol = rasterize(exactly, sc, 12, 12, limbs=[(0, 1)])
    np.testing.assert_allclose(vol, reference_volume(exactly, sc, 12, 12, limbs=[(0, 1)]), atol=1e-6)


def test_persons_combine_by_max_not_sum():
    kp = np.array([[[[5.0, 5.0]]], [[[5.5, 5.0]]]], np.float32)  # two persons, same joint
    sc = np.array([[[0.9]], [[0.6]]], np.float32)
    vol = rasterize(kp, sc, 10, 10)[0, 0]
    one = rasterize(kp[:1], sc[:1], 10, 10)[0, 0]
    two = rasterize(kp[1:], sc[1:], 10, 10)[0, 0]
    np.testing.assert_array_equal(vol, np.maximum(one, two))
    assert vol.max() == pytest.approx(0.9)


def test_limb_orders_are_the_same_limbs_permuted():
    rng = np.random.default_rng(3)
    kp, sc = random_clip(rng, t=4, height=24, width=24)
    default = rasterize(kp, sc, 24, 24, limbs="pyskl_default")
    released = rasterize(kp, sc, 24, 24, limbs="pyskl_released")
    order = [PYSKL_DEFAULT_LIMBS.pairs.index(pair) for pair in PYSKL_RELEASED_LIMBS.pairs]
    np.testing.assert_array_equal(released, default[order])
    assert num_channels(17, "pyskl_released") == 17 and num_channels(17, None) == 17


@pytest.mark.parametrize("layout", [PYSKL_DEFAULT_LIMBS, PYSKL_RELEASED_LIMBS])
def test_limb_flip_pairs_follow_the_keypoint_flip(layout):
    pairs = [frozenset(p) for p in layout.pairs]
    for i, (a, b) in enumerate(layout.pairs):
        mirrored = frozenset((KEYPOINT_FLIP_INDEX[a], KEYPOINT_FLIP_INDEX[b]))
        assert pairs[layout.flip_index[i]] == mirrored


def test_batch_buffer_reuse_and_out_agree_with_single_clips():
    rng = np.random.default_rng(11)
    clips = [random_clip(rng, m=3, t=5, height=32, width=32) for _ in range(3)]
    kp = np.stack([c[0] for c in clips])
    sc = np.stack([c[1] for c in clips])
    for limbs in (None, "pyskl_released"):
        batch = rasterize_batch(kp, sc, 32, 32, limbs=limbs)
        for i in range(3):
            np.testing.assert_array_equal(batch[i], rasterize(kp[i], sc[i], 32, 32, limbs=limbs))
        out = np.full(batch.shape[1:], 7.0, np.float32)
        np.testing.assert_array_equal(rasterize(kp[1], sc[1], 32, 32, limbs=limbs, out=out), batch[1])
        # The reused buffer must be fully cleared between batches, whatever was drawn before,
        # also when the batch shape changes.
        raster = Rasterizer(32, 32, limbs=limbs)
        for first, second in ((0, 1), (2, 0)):
            raster(kp[first:first + 1], sc[first:first + 1])
            np.testing.assert_array_equal(raster(kp[second:second + 1], sc[second:second + 1]), batch[second:second + 1])
        np.testing.assert_array_equal(raster(kp, sc), batch)
        np.testing.assert_array_equal(raster(kp[:1] + 3, sc[:1]), rasterize_batch(kp[:1] + 3, sc[:1], 32, 32, limbs=limbs))


def test_empty_inputs_give_zero_volumes():
    assert rasterize(np.zeros((0, 4, 17, 2)), np.zeros((0, 4, 17)), 8, 8).shape == (17, 4, 8, 8)
    assert rasterize(np.zeros((1, 4, 17, 2)), np.zeros((1, 4, 17)), 8, 8).max() == 0


@pytest.mark.parametrize("kwargs,message", [
    (dict(keypoints=np.zeros((2, 3, 17)), scores=np.zeros((2, 3, 17))), "keypoints must be"),
    (dict(keypoints=np.zeros((2, 3, 17, 2)), scores=np.zeros((2, 3, 16))), "scores must be"),
    (dict(keypoints=np.zeros((1, 1, 17, 2)), scores=np.zeros((1, 1, 17)), height=0), "positive"),
    (dict(keypoints=np.zeros((1, 1, 17, 2)), scores=np.zeros((1, 1, 17)), sigma=0), "sigma"),
    (dict(keypoints=np.zeros((1, 1, 17, 2)), scores=np.zeros((1, 1, 17)), limbs=[(0, 17)]), "outside"),
    (dict(keypoints=np.zeros((1, 1, 17, 2)), scores=np.zeros((1, 1, 17)), limbs="nope"), "unknown limb layout"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    args = dict(height=8, width=8) | kwargs
    with pytest.raises(ValueError, match=message):
        rasterize(**args)
