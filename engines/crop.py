"""Clip geometry shared by training and serving: which frames a clip keeps, which box it is
cropped to, and how it is scaled onto the model's grid.

A model only works on volumes made the way its training volumes were made. The validation
pipeline of :mod:`posestream.train.transforms` (PYSKL's PoseC3D one) turns a clip into a
volume with

    UniformSampleFrames(test_mode) -> PoseDecode -> PoseCompact -> Resize -> GeneratePoseTarget

and the realtime path must do exactly the same to a window of tracked skeletons. So the pure
arithmetic of those steps lives here, in ``engines`` (which both ``train`` and ``realtime``
may import), and the transforms call it:

- :func:`uniform_clip_indices` / :func:`uniform_sample_indices`: PYSKL's ``UniformSampleFrames``
  frame indices (the latter is test mode, deterministic for its seed, and cached);
- :func:`compact_box` and :func:`crop_keypoints`: PYSKL's ``PoseCompact`` box and shift;
- :func:`rescale_size` and :func:`resize_factor`: PYSKL's ``Resize`` sizes and keypoint factor;
- :func:`window_to_grid`: ``PoseCompact(allow_imgpad=True) + Resize((size, size),
  keep_ratio=False)`` in one vectorized pass, as the realtime windows use it;
- :func:`window_span`: which of a track's processed frames a realtime window holds (the
  runtime cuts its windows with it, and training cuts its "served" windows with it too);
- :func:`window_is_enough`: whether those frames are enough to classify (the one minimum of
  the runtime's windows and of training's served windows).

PYSKL's convention that an x or y of exactly 0 means "missing" holds throughout: such a
coordinate is ignored by the box and stays 0 when the others are shifted and scaled.
"""
from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "as_pair",
    "window_is_enough",
    "WINDOW_MIN_FRAMES",
    "WINDOW_FLOOR_FRAMES",
    "WINDOW_MIN_SPAN_S",
    "uniform_clip_indices",
    "uniform_sample_indices",
    "compact_box",
    "crop_keypoints",
    "rescale_size",
    "resize_factor",
    "window_to_grid",
    "window_span",
]

Box = tuple[int, int, int, int]


def as_pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """``x`` -> ``(x, x)``; a pair stays a pair (as floats); anything else is a ValueError."""
    if isinstance(value, numbers.Real):
        return float(value), float(value)
    pair = tuple(float(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a pair, got {value!r}")
    return pair


# ----------------------------------------------------------------------------------------------
# Temporal sampling


def uniform_clip_indices(num_frames: int, clip_len: int, num_clips: int, *, test_mode: bool,
                         p_interval: tuple[float, float], rand: Callable, randint: Callable,
                         choice: Callable) -> np.ndarray:
    """The frame indices of ``num_clips`` clips of ``clip_len`` frames, before the modulo by
    ``num_frames`` (see :class:`posestream.train.transforms.UniformSampleFrames` for the rules).

    ``rand()`` is a uniform float in [0, 1), ``randint(high)`` an integer (or an array of them)
    in [0, high), ``choice(n, k)`` k distinct integers from [0, n). The draws are made in
    PYSKL's order, so a ``RandomState(seed)``'s methods reproduce PYSKL's test indices.
    """
    low, high = p_interval
    clips = []
    for i in range(num_clips):
        ratio = rand() * (high - low) + low
        # PYSKL would fail on an empty interval (randint(0)); keep at least one frame.
        n = max(int(ratio * num_frames), 1)
        offset = randint(num_frames - n + 1)
        if n < clip_len:
            if test_mode:
                start = i if n < num_clips else i * n // num_clips
            else:
                start = randint(n)
            inds = np.arange(start, start + clip_len)
        elif n < 2 * clip_len:
            gaps = np.zeros(clip_len + 1, dtype=np.int64)
            gaps[choice(clip_len + 1, n - clip_len)] = 1
            inds = np.arange(clip_len) + np.cumsum(gaps)[:-1]
        else:
            bounds = np.arange(clip_len + 1) * n // clip_len
            inds = bounds[:-1] + randint(np.diff(bounds))
        clips.append(inds + offset)
    return np.concatenate(clips)


def uniform_sample_indices(num_frames: int, clip_len: int, num_clips: int = 1, seed: int | None = 255,
                           p_interval: float | tuple[float, float] = 1.0) -> np.ndarray:
    """Test-mode ``UniformSampleFrames``: the int64 indices (``num_clips * clip_len`` of them,
    each in ``0 .. num_frames - 1``) that the validation/test pipeline takes from a clip of
    ``num_frames`` frames.

    Every call makes the draws PYSKL makes after ``np.random.seed(seed)``, from a private
    ``RandomState(seed)`` (numpy's global RNG is left alone), so the answer depends on the
    arguments only. It is cached: a realtime window asks for the same few lengths over and
    over, and seeding a ``RandomState`` costs more than the rest of a window. The returned
    array is read-only (it is shared); copy it to modify it.
    """
    num_frames, clip_len, num_clips = int(num_frames), int(clip_len), int(num_clips)
    if num_frames < 1 or clip_len < 1 or num_clips < 1:
        raise ValueError(f"num_frames, clip_len and num_clips must be >= 1, "
                         f"got {num_frames}, {clip_len}, {num_clips}")
    interval = as_pair(p_interval, "p_interval")
    if seed is None:  # fresh entropy: nothing to cache
        return _test_indices.__wrapped__(num_frames, clip_len, num_clips, None, interval)
    return _test_indices(num_frames, clip_len, num_clips, int(seed), interval)


@functools.lru_cache(maxsize=4096)
def _test_indices(num_frames: int, clip_len: int, num_clips: int, seed: int | None,
                  p_interval: tuple[float, float]) -> np.ndarray:
    state = np.random.RandomState(seed)
    inds = uniform_clip_indices(num_frames, clip_len, num_clips, test_mode=True, p_interval=p_interval,
                                rand=state.rand, randint=state.randint,
                                choice=lambda n, k: state.choice(n, k, replace=False))
    # PYSKL then replaces the indices by float ones away from frames where the person count
    # changes ("transitional" frames) and truncates them back to int: a no-op on integer
    # indices, so it is left out. PYSKL's start_index is 0 for poses.
    inds = np.mod(inds, num_frames).astype(np.int64)
    inds.flags.writeable = False
    return inds


# ----------------------------------------------------------------------------------------------
# Subjects-centred box (PoseCompact)


def compact_box(keypoint: np.ndarray, padding: float = 0.25, threshold: float = 10,
                hw_ratio: float | tuple[float, float] | None = None, allow_imgpad: bool = True,
                img_shape: tuple[int, int] | None = None) -> Box | None:
    """PYSKL's ``PoseCompact`` box ``(x0, y0, x1, y1)`` (ints) of ``keypoint [..., 2]``, or
    None when the clip is to be left as it is.

    The tight box around every nonzero (and non-NaN) x and every nonzero y is grown by
    ``padding`` around its centre; with ``hw_ratio`` (a height/width ratio or a ``(low,
    high)`` pair) the too-short side is widened. With ``allow_imgpad`` the box may extend past
    the image and its corners are truncated toward zero; without it they are clamped to the
    ``img_shape`` ``(h, w)`` image first. None when no coordinate is set or the tight box is
    narrower or shorter than ``threshold`` pixels.
    """
    kp = np.asarray(keypoint)
    kp_x, kp_y = kp[..., 0], kp[..., 1]
    # x == 0 means missing; NaN is missing too (PoseCompact zeroes it first)
    x = kp_x[(kp_x != 0) & ~np.isnan(kp_x)]
    y = kp_y[(kp_y != 0) & ~np.isnan(kp_y)]
    if not x.size or not y.size:
        return None
    # The arithmetic runs in float64 on the float32 extremes (as PYSKL did under numpy 1.x,
    # where float32 scalars promote to float64 against Python floats).
    min_x, max_x = float(x.min()), float(x.max())
    min_y, max_y = float(y.min()), float(y.max())
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return None

    center_x, center_y = (max_x + min_x) / 2, (max_y + min_y) / 2
    half_w = (max_x - min_x) / 2 * (1 + padding)
    half_h = (max_y - min_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        low, high = as_pair(hw_ratio, "hw_ratio")
        half_h = max(low * half_w, half_h)
        half_w = max(1 / high * half_h, half_w)
    x0, x1 = center_x - half_w, center_x + half_w
    y0, y1 = center_y - half_h, center_y + half_h
    if allow_imgpad:
        return int(x0), int(y0), int(x1), int(y1)
    if img_shape is None:
        raise ValueError("compact_box needs img_shape to clamp the box (allow_imgpad=False)")
    h, w = img_shape
    return int(max(0, x0)), int(max(0, y0)), int(min(w, x1)), int(min(h, y1))


def crop_keypoints(keypoint: np.ndarray, box: Box) -> np.ndarray:
    """A new array: the coordinates of ``keypoint [..., 2]`` relative to ``box``'s top-left
    corner; NaN and 0 ("missing") coordinates are 0 after it, as PYSKL leaves them. Float
    input keeps its dtype (the subtraction runs in it, as PoseCompact's in-place one did);
    anything else becomes float32."""
    kp = np.asarray(keypoint)
    if kp.dtype.kind != "f":
        kp = kp.astype(np.float32)
    kp = np.where(np.isnan(kp), 0, kp)
    origin = np.array(box[:2], dtype=kp.dtype)
    return np.where(kp != 0, kp - origin, kp)


# ----------------------------------------------------------------------------------------------
# Resize


def rescale_size(size: tuple[int, int], scale: float | tuple[float, float]) -> tuple[int, int]:
    """The (w, h) an image of ``size`` (w, h) gets when rescaled with its aspect ratio kept, as
    ``mmcv.rescale_size``: ``scale`` is a factor, or a (long, short) bound (either order) and
    the largest factor that fits both edges is used. Sizes round half up."""
    w, h = size
    if isinstance(scale, numbers.Real):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def resize_factor(img_shape: tuple[int, int], new_shape: tuple[int, int]) -> np.ndarray:
    """float32 ``[2]`` = ``(new_w / w, new_h / h)``: what ``Resize`` multiplies keypoints by
    when an ``img_shape`` ``(h, w)`` frame becomes ``new_shape`` ``(new_h, new_w)``. (The
    divisions run in float64 and are rounded to float32 once, as PYSKL does.)"""
    (h, w), (new_h, new_w) = img_shape, new_shape
    return np.array([new_w / w, new_h / h], dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# The realtime shortcut


def window_to_grid(keypoint: np.ndarray, score: np.ndarray, size: int, *, img_shape: tuple[int, int],
                   padding: float = 0.25, threshold: float = 10,
                   hw_ratio: float | tuple[float, float] | None = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel skeletons ``keypoint [M, T, V, 2]``, ``score [M, T, V]`` -> the same on the
    model's ``size x size`` grid: float32 ``(keypoint, score)``.

    Exactly what ``PoseCompact(padding, threshold, hw_ratio, allow_imgpad=True)`` then
    ``Resize((size, size), keep_ratio=False)`` give for a clip of these (already sampled)
    frames: one box around all persons and frames, every nonzero coordinate shifted into it
    and scaled to the grid, zeros ("missing", and NaN) left at 0. When the box is degenerate
    (nothing set, or narrower/shorter than ``threshold``), PoseCompact leaves the frame alone
    and the whole ``img_shape`` ``(h, w)`` image is scaled onto the grid, so ``img_shape`` is
    needed. ``score`` is returned as float32 (it is not changed).
    """
    kp = np.asarray(keypoint, dtype=np.float32)
    box = compact_box(kp, padding, threshold, hw_ratio, allow_imgpad=True)
    if box is None:
        kp = np.where(np.isnan(kp), 0, kp)
        frame = img_shape
    else:
        kp = crop_keypoints(kp, box)
        frame = (box[3] - box[1], box[2] - box[0])
    kp *= resize_factor(frame, (size, size))  # kp is our own array here
    return kp, np.asarray(score, dtype=np.float32)


def window_span(t_capture: np.ndarray, observed: np.ndarray, t_from: float, t_to: float) -> tuple[int, int, int]:
    """Which frames of a track a window ``[t_from, t_to]`` (capture times) holds: ``(lo, hi,
    n_observed)`` such that frames ``lo .. hi - 1`` run from the first to the last *observed*
    frame with ``t_from <= t_capture <= t_to`` (the unobserved frames between them included:
    they hold zeros, as PYSKL stores a missing person), ``n_observed`` of them observed;
    ``lo == hi`` when none was. ``t_capture`` ``[N]`` must be sorted (oldest first) and
    ``observed`` ``[N]`` says which frames had a skeleton."""
    t = np.asarray(t_capture)
    lo, hi = int(np.searchsorted(t, t_from, side="left")), int(np.searchsorted(t, t_to, side="right"))
    seen = np.flatnonzero(np.asarray(observed)[lo:hi])
    if not seen.size:
        return lo, lo, 0
    return lo + int(seen[0]), lo + int(seen[-1]) + 1, int(seen.size)


#: Observed frames that always make a window (a stream that keeps up reaches them in < 1 s).
WINDOW_MIN_FRAMES = 8
#: Observed frames below which no window is classified, whatever they span.
WINDOW_FLOOR_FRAMES = 3
#: Between the two, observed frames spanning this many seconds make a window: a stream
#: processing ~1 frame/s (four cameras on two cores) still gets its people classified, from
#: fewer frames over the same stretch of time (a window is resampled to the clip length
#: anyway: :func:`uniform_sample_indices`).
WINDOW_MIN_SPAN_S = 1.5


def window_is_enough(n_observed: int, span_s: float, min_frames: int = WINDOW_MIN_FRAMES,
                     floor_frames: int = WINDOW_FLOOR_FRAMES, min_span_s: float = WINDOW_MIN_SPAN_S) -> bool:
    """Whether a window with ``n_observed`` observed frames, its first and last observed
    frame ``span_s`` seconds apart, is classified: ``min_frames`` always are; fewer need at
    least ``floor_frames`` (and one) and a span of ``min_span_s``. The minimum so adapts to the
    processed frame rate: ``min_frames`` at a rate above ``min_frames / min_span_s`` (5.3
    frames/s by default), fewer, down to ``floor_frames``, below it. ``min_span_s = inf``
    gives the fixed minimum of ``min_frames``."""
    if n_observed >= max(1, min_frames):
        return True
    return n_observed >= max(1, floor_frames) and span_s >= min_span_s
