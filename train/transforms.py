"""Clip transforms: from a skeleton clip annotation to the heatmap volume a model is fed.

PoseConv3D (Duan et al., CVPR 2022) preprocesses skeletons in two ways (paper Sec. 3.2 and
4.3): *uniform sampling* (split a clip into ``clip_len`` segments, take one frame from each) and
*subjects-centred cropping* (crop every frame to the box around all persons, then resize).
Training adds a random resized crop and a horizontal flip; testing averages over several clips
and, optionally, over the flipped volume. This module implements those steps with the
semantics (and defaults) of PYSKL's PoseC3D pipelines, so that volumes made here are the
volumes PYSKL's released models saw:

    UniformSampleFrames -> PoseDecode -> PoseCompact -> Resize -> [RandomResizedCrop -> Resize
    -> Flip] -> GeneratePoseTarget -> FormatShape

Each step is a plain class: a constructor for its settings and ``__call__(results) -> results``
on a clip dict (``keypoint [M, T, V, 2]``, ``keypoint_score [M, T, V]``, ``img_shape (h, w)``,
``total_frames``, ...). A step never writes into the dict or the arrays it is given: it returns
a new dict whose changed entries are new arrays, so a dataset can hand the same clip to the
pipeline every epoch. :func:`train_pipeline`, :func:`val_pipeline` and :func:`test_pipeline`
build the PoseC3D NTU-60 pipelines (``configs/posec3d/slowonly_r50_ntu60_xsub``).

Randomness: the random steps (training-mode sampling, the random crop, the flip) each draw
from their own ``numpy.random.Generator``; nothing here reads or reseeds numpy's global RNG.
Test-mode sampling uses a private ``RandomState(seed)`` per clip, which reproduces PYSKL's
test-time frame indices exactly. A pipeline copied into DataLoader worker processes carries
the same generator state into every worker; call :meth:`Compose.reseed` with a per-worker
seed (e.g. from ``worker_init_fn``) so that the workers do not repeat each other's draws.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import numpy as np

from posestream.engines.crop import (
    as_pair,
    compact_box,
    crop_keypoints,
    rescale_size,
    resize_factor,
    uniform_clip_indices,
    uniform_sample_indices,
)
from posestream.engines.raster import rasterize
from posestream.skeleton import (
    LEFT_KEYPOINTS,
    RIGHT_KEYPOINTS,
    LimbLayout,
    limb_layout,
    swap_index,
)

Results = dict[str, Any]
RngLike = Union[None, int, np.random.SeedSequence, np.random.Generator]


def _make_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator (returned as is), a seed, a SeedSequence or None (fresh)."""
    return np.random.default_rng(rng)


def _clip_name(results: Results) -> str:
    return str(results.get("frame_dir", "<clip>"))


def _require(results: Results, key: str, step: str) -> Any:
    if key not in results:
        raise KeyError(f"{step}: clip {_clip_name(results)} has no {key!r}")
    return results[key]


def _img_shape(results: Results, step: str) -> tuple[int, int]:
    shape = _require(results, "img_shape", step)
    if len(shape) != 2:
        raise ValueError(f"{step}: clip {_clip_name(results)} has img_shape {shape!r}, expected (h, w)")
    return shape[0], shape[1]


def _combine_quadruple(outer: Sequence[float], inner: Sequence[float]) -> tuple[float, ...]:
    """Compose crops given as (x, y, w, h) fractions: ``inner`` is relative to ``outer``."""
    return (outer[0] + outer[2] * inner[0], outer[1] + outer[3] * inner[1],
            outer[2] * inner[2], outer[3] * inner[3])


# ----------------------------------------------------------------------------------------------
# 1. Temporal sampling


class UniformSampleFrames:
    """Uniform sampling (paper Sec. 3.2): ``num_clips`` clips of ``clip_len`` frames each.

    A clip of ``n`` frames (after the optional ``p_interval`` shortening) is sampled as PYSKL's
    ``UniformSampleFrames`` does:

    - ``n < clip_len``: consecutive frames from a start frame, wrapping around (all indices
      are taken modulo ``total_frames`` at the end). In training the start is random; in testing
      clip ``i`` starts at ``i`` if ``n < num_clips``, else at ``i * n // num_clips``.
    - ``clip_len <= n < 2 * clip_len``: ``0 .. clip_len - 1`` with ``n - clip_len`` random
      one-frame gaps inserted, so every index is distinct and sorted.
    - otherwise: split ``0 .. n`` into ``clip_len`` segments (bounds ``i * n // clip_len``) and
      draw one frame from each.

    ``p_interval`` (a number or a ``(low, high)`` range in (0, 1]) first keeps a random
    fraction of the clip at a random offset, as PYSKL does (1 = the whole clip).

    Training draws from ``rng`` (a Generator, a seed or None). Test mode is deterministic per
    clip: every call makes the very draws PYSKL makes after ``np.random.seed(seed)``, from a
    private ``np.random.RandomState(seed)``, so it returns PYSKL's test indices exactly and
    leaves numpy's global RNG alone.

    Adds ``frame_inds`` (int64, ``num_clips * clip_len`` indices into ``0 .. total_frames-1``),
    ``clip_len`` and ``num_clips``.
    """

    def __init__(self, clip_len: int, num_clips: int = 1, test_mode: bool = False, seed: int = 255,
                 p_interval: float | tuple[float, float] = 1, rng: RngLike = None):
        if int(clip_len) != clip_len or clip_len < 1:
            raise ValueError(f"clip_len must be a positive integer, got {clip_len!r}")
        if int(num_clips) != num_clips or num_clips < 1:
            raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}")
        low, high = as_pair(p_interval, "p_interval")
        if not 0 < low <= high <= 1:
            raise ValueError(f"p_interval must lie in (0, 1] with low <= high, got {p_interval!r}")
        self.clip_len = int(clip_len)
        self.num_clips = int(num_clips)
        self.test_mode = bool(test_mode)
        self.seed = seed
        self.p_interval = (low, high)
        self.rng = _make_rng(rng)

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        total = int(_require(results, "total_frames", "UniformSampleFrames"))
        if total < 1:
            raise ValueError(f"UniformSampleFrames: clip {_clip_name(results)} has no frames")
        keypoint = results.get("keypoint")
        if keypoint is not None and np.shape(keypoint)[1] != total:
            raise ValueError(f"UniformSampleFrames: clip {_clip_name(results)} has total_frames={total} "
                             f"but keypoint has {np.shape(keypoint)[1]} frames")
        if self.test_mode:
            inds = uniform_sample_indices(total, self.clip_len, self.num_clips, self.seed, self.p_interval)
            results["frame_inds"] = inds.copy()  # the cached array is shared and read-only
        else:
            rng = self.rng
            inds = uniform_clip_indices(total, self.clip_len, self.num_clips, test_mode=False,
                                        p_interval=self.p_interval, rand=rng.random, randint=rng.integers,
                                        choice=lambda n, k: rng.choice(n, k, replace=False))
            results["frame_inds"] = np.mod(inds, total).astype(np.int64)
        results["clip_len"] = self.clip_len
        results["num_clips"] = self.num_clips
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(clip_len={self.clip_len}, num_clips={self.num_clips}, "
                f"test_mode={self.test_mode}, seed={self.seed}, p_interval={self.p_interval})")


# ----------------------------------------------------------------------------------------------
# 2. Decoding


class PoseDecode:
    """Gather the sampled frames: ``keypoint`` and ``keypoint_score`` at ``frame_inds`` along
    the T axis, as float32 (all frames when there is no ``frame_inds``)."""

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        inds = results.get("frame_inds")
        if inds is None:
            inds = np.arange(int(_require(results, "total_frames", "PoseDecode")))
        inds = np.asarray(inds).reshape(-1)
        _require(results, "keypoint", "PoseDecode")
        for key in ("keypoint", "keypoint_score"):
            if key in results:
                results[key] = np.take(np.asarray(results[key]), inds, axis=1).astype(np.float32, copy=False)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ----------------------------------------------------------------------------------------------
# 3. Spatial steps


class PoseCompact:
    """Subjects-centred cropping (paper Sec. 3.2/4.3), as PYSKL's ``PoseCompact``.

    Finds the smallest box around every nonzero keypoint coordinate of every person and frame
    (an x or y of exactly 0 means "missing"; NaN coordinates are set to 0 first), grows it by
    ``padding`` around its centre, and, with ``hw_ratio`` (a number or a (low, high) pair of
    height/width ratios), widens whichever side is too short. With ``allow_imgpad`` the box may
    extend past the image; without it, it is clamped to the image. The box corners are
    truncated to int. If the tight box is narrower or shorter than ``threshold`` pixels, the
    clip is left as it is.

    Nonzero coordinates are shifted into the box (zeros stay zero, as in PYSKL);
    ``img_shape`` becomes the box size and ``crop_quadruple`` (x, y, w, h as fractions of the
    previous frame) records the crop.
    """

    def __init__(self, padding: float = 0.25, threshold: float = 10, hw_ratio: float | tuple[float, float] | None = None,
                 allow_imgpad: bool = True):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding
        self.threshold = threshold
        self.hw_ratio = None if hw_ratio is None else as_pair(hw_ratio, "hw_ratio")
        self.allow_imgpad = allow_imgpad

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        h, w = _img_shape(results, "PoseCompact")
        kp = np.asarray(_require(results, "keypoint", "PoseCompact"))
        box = compact_box(kp, self.padding, self.threshold, self.hw_ratio, self.allow_imgpad, (h, w))
        if box is None:  # nothing to crop to: the frame stays, NaN coordinates become 0
            results["keypoint"] = np.where(np.isnan(kp), 0, kp)
            return results
        min_x, min_y, max_x, max_y = box
        results["keypoint"] = crop_keypoints(kp, box)
        results["img_shape"] = (max_y - min_y, max_x - min_x)
        crop = (min_x / w, min_y / h, (max_x - min_x) / w, (max_y - min_y) / h)
        results["crop_quadruple"] = _combine_quadruple(results.get("crop_quadruple", (0.0, 0.0, 1.0, 1.0)), crop)
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(padding={self.padding}, threshold={self.threshold}, "
                f"hw_ratio={self.hw_ratio}, allow_imgpad={self.allow_imgpad})")


class Resize:
    """Resize the frame (and so the keypoints), as PYSKL's ``Resize``.

    ``scale`` is a positive factor (the aspect ratio is always kept), a ``(w, h)`` pair, or
    ``(-1, short)`` / ``(short, -1)`` for "short side = short". With ``keep_ratio`` a pair is a
    bound: the frame is scaled by the largest factor with long side <= max(pair) and short side
    <= min(pair) (so ``(-1, 64)`` gives a short side of 64); without it the frame becomes exactly
    ``(w, h)``. Keypoints are scaled by ``(new_w / w, new_h / h)`` (computed in float32, as
    PYSKL). Sets ``img_shape``, ``keep_ratio`` and the cumulative ``scale_factor``.
    """

    def __init__(self, scale: float | tuple[int, int], keep_ratio: bool = True):
        if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            if scale <= 0:
                raise ValueError(f"Resize scale must be positive, got {scale}")
            self.scale: float | tuple[float, float] = float(scale)
        elif isinstance(scale, Sequence) and len(scale) == 2:
            long_edge, short_edge = max(scale), min(scale)
            if short_edge == -1:
                if not keep_ratio:
                    raise ValueError(f"Resize scale {tuple(scale)} (short side) needs keep_ratio=True")
                self.scale = (math.inf, long_edge)
            elif short_edge <= 0:
                raise ValueError(f"Resize scale must be positive, got {tuple(scale)}")
            else:
                self.scale = tuple(scale)
        else:
            raise TypeError(f"Resize scale must be a number or a (w, h) pair, got {scale!r}")
        self.keep_ratio = keep_ratio

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        img_h, img_w = _img_shape(results, "Resize")
        if self.keep_ratio or isinstance(self.scale, float):
            new_w, new_h = rescale_size((img_w, img_h), self.scale)
        else:
            new_w, new_h = int(self.scale[0]), int(self.scale[1])
        factor = resize_factor((img_h, img_w), (new_h, new_w))
        results["img_shape"] = (new_h, new_w)
        results["keep_ratio"] = self.keep_ratio
        results["scale_factor"] = np.asarray(results.get("scale_factor", np.ones(2, np.float32))) * factor
        if "keypoint" in results:
            results["keypoint"] = results["keypoint"] * factor
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomResizedCrop:
    """Random crop of a random area fraction and aspect ratio, as PYSKL's ``RandomResizedCrop``
    (the resize is the ``Resize`` after it).

    Ten candidates are drawn at once: aspect ratios log-uniform in ``aspect_ratio_range``,
    areas uniform in ``area_range`` times the frame area, sides ``round(sqrt(area * ratio))`` x
    ``round(sqrt(area / ratio))``. The first candidate that fits is placed at a uniform random
    offset; if none fits, the centred square of the short side is taken. All keypoints are
    shifted by the crop offset (PYSKL shifts zero "missing" ones too; their scores keep them
    invisible). Sets ``img_shape``, ``crop_bbox`` (x1, y1, x2, y2) and ``crop_quadruple``.
    """

    max_attempts = 10

    def __init__(self, area_range: tuple[float, float] = (0.08, 1.0),
                 aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3), rng: RngLike = None):
        area_range = as_pair(area_range, "area_range")
        aspect_ratio_range = as_pair(aspect_ratio_range, "aspect_ratio_range")
        if not 0 < area_range[0] <= area_range[1] <= 1:
            raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {area_range}")
        if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
            raise ValueError(f"aspect_ratio_range must satisfy 0 < low <= high, got {aspect_ratio_range}")
        self.area_range = area_range
        self.aspect_ratio_range = aspect_ratio_range
        self.rng = _make_rng(rng)

    def crop_box(self, img_h: int, img_w: int) -> tuple[int, int, int, int]:
        """Draw a crop box ``(x1, y1, x2, y2)`` for an ``img_h`` x ``img_w`` frame."""
        rng, n = self.rng, self.max_attempts
        low, high = self.aspect_ratio_range
        ratios = np.exp(rng.uniform(np.log(low), np.log(high), size=n))
        areas = rng.uniform(*self.area_range, size=n) * (img_h * img_w)
        crop_w = np.round(np.sqrt(areas * ratios)).astype(np.int64)
        crop_h = np.round(np.sqrt(areas / ratios)).astype(np.int64)
        for cw, ch in zip(crop_w.tolist(), crop_h.tolist()):
            if ch <= img_h and cw <= img_w:
                x = int(rng.integers(0, img_w - cw + 1))
                y = int(rng.integers(0, img_h - ch + 1))
                return x, y, x + cw, y + ch
        size = min(img_h, img_w)
        x, y = (img_w - size) // 2, (img_h - size) // 2
        return x, y, x + size, y + size

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        img_h, img_w = _img_shape(results, "RandomResizedCrop")
        left, top, right, bottom = self.crop_box(img_h, img_w)
        new_h, new_w = bottom - top, right - left
        crop = (left / img_w, top / img_h, new_w / img_w, new_h / img_h)
        results["crop_quadruple"] = _combine_quadruple(results.get("crop_quadruple", (0.0, 0.0, 1.0, 1.0)), crop)
        results["crop_bbox"] = np.array([left, top, right, bottom])
        results["img_shape"] = (new_h, new_w)
        if "keypoint" in results:
            kp = np.asarray(results["keypoint"])
            results["keypoint"] = kp - np.array([left, top], dtype=kp.dtype)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(area_range={self.area_range}, aspect_ratio_range={self.aspect_ratio_range})"


class Flip:
    """Horizontal flip with probability ``flip_ratio``, as PYSKL's ``Flip`` on keypoints:
    every nonzero x becomes ``img_w - x`` (zero means missing and stays zero), then each left
    keypoint trades places with its right partner, in ``keypoint`` and ``keypoint_score``.
    Sets ``flip`` (whether it flipped) and ``flip_direction``."""

    def __init__(self, flip_ratio: float = 0.5, left_kp: Sequence[int] = LEFT_KEYPOINTS,
                 right_kp: Sequence[int] = RIGHT_KEYPOINTS, rng: RngLike = None):
        if len(left_kp) != len(right_kp):
            raise ValueError("left_kp and right_kp must pair up one to one")
        self.flip_ratio = flip_ratio
        self.left_kp = tuple(left_kp)
        self.right_kp = tuple(right_kp)
        self.rng = _make_rng(rng)

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        flip = bool(self.rng.random() < self.flip_ratio)
        results["flip"] = flip
        results["flip_direction"] = "horizontal"
        if not flip or "keypoint" not in results:
            return results
        img_w = _img_shape(results, "Flip")[1]
        kp = np.array(results["keypoint"], copy=True)
        kp_x = kp[..., 0]
        moved = kp_x != 0
        kp_x[moved] = img_w - kp_x[moved]
        order = swap_index(kp.shape[2], self.left_kp, self.right_kp)
        results["keypoint"] = kp[:, :, order]
        if "keypoint_score" in results:
            results["keypoint_score"] = np.asarray(results["keypoint_score"])[:, :, order]
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(flip_ratio={self.flip_ratio}, left_kp={self.left_kp}, right_kp={self.right_kp})"


# ----------------------------------------------------------------------------------------------
# 4. Heatmaps and layout


class GeneratePoseTarget:
    """Pseudo heatmap volume (paper Eq. 1 / Eq. 2) of the clip at its current ``img_shape``,
    drawn by :func:`posestream.engines.raster.rasterize`.

    ``with_kp`` gives joint heatmaps (K = V), ``with_limb`` limb heatmaps in the order of the
    ``limbs`` layout (a name or a :class:`LimbLayout`); exactly one of them must be set.
    ``use_score=False`` draws every keypoint at full height. With ``double`` the mirrored
    volume is appended, as PYSKL does for flip-averaged testing: the volume reversed along W,
    with channels exchanged left/right (``left_kp``/``right_kp`` for joints, the layout's
    ``flip_index`` for limbs).

    Sets ``imgs``: float32 ``[A, K, T, H, W]``, T = all sampled frames (``num_clips *
    clip_len``) and A = 2 with ``double`` (``imgs[1]`` is the mirrored volume), else 1.
    """

    def __init__(self, sigma: float = 0.6, use_score: bool = True, with_kp: bool = True, with_limb: bool = False,
                 limbs: str | LimbLayout = "pyskl_default", double: bool = False,
                 left_kp: Sequence[int] = LEFT_KEYPOINTS, right_kp: Sequence[int] = RIGHT_KEYPOINTS):
        if bool(with_kp) == bool(with_limb):
            raise ValueError("GeneratePoseTarget needs exactly one of with_kp and with_limb")
        if len(left_kp) != len(right_kp):
            raise ValueError("left_kp and right_kp must pair up one to one")
        self.sigma = sigma
        self.use_score = use_score
        self.with_kp = bool(with_kp)
        self.with_limb = bool(with_limb)
        self.limbs = limb_layout(limbs) if with_limb else None
        self.double = double
        self.left_kp = tuple(left_kp)
        self.right_kp = tuple(right_kp)

    def flip_index(self, num_channels: int) -> np.ndarray:
        """Channel ``c`` of the mirrored volume is channel ``flip_index[c]`` of the original."""
        if self.limbs is not None:
            return self.limbs.flip_index
        return swap_index(num_channels, self.left_kp, self.right_kp)

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        h, w = _img_shape(results, "GeneratePoseTarget")
        kp = np.asarray(_require(results, "keypoint", "GeneratePoseTarget"))
        scores = results.get("keypoint_score")
        if scores is None or not self.use_score:
            scores = np.ones(kp.shape[:-1], dtype=np.float32)
        k = kp.shape[2] if self.limbs is None else len(self.limbs)
        heatmap = np.empty((2 if self.double else 1, k, kp.shape[1], int(h), int(w)), dtype=np.float32)
        rasterize(kp, scores, int(h), int(w), sigma=self.sigma, limbs=self.limbs, out=heatmap[0])
        if self.double:
            for channel, source in enumerate(self.flip_index(k)):
                heatmap[1, channel] = heatmap[0, source, :, :, ::-1]
        results["imgs"] = heatmap
        return results

    def __repr__(self) -> str:
        limbs = None if self.limbs is None else self.limbs.name
        return (f"{type(self).__name__}(sigma={self.sigma}, use_score={self.use_score}, with_kp={self.with_kp}, "
                f"with_limb={self.with_limb}, limbs={limbs}, double={self.double})")


class FormatShape:
    """``imgs`` ``[A, K, num_clips * clip_len, H, W]`` (or one ``[K, T, H, W]`` volume) ->
    float32 ``[N, K, clip_len, H, W]`` (PYSKL's 'NCTHW_Heatmap'), N = A * num_clips, ordered as
    PYSKL orders it: every clip of the original volume, then every clip of the mirrored one.
    Sets ``input_shape``."""

    def __init__(self, input_format: str = "NCTHW_Heatmap"):
        if input_format != "NCTHW_Heatmap":
            raise ValueError(f"only the 'NCTHW_Heatmap' input format is supported, got {input_format!r}")
        self.input_format = input_format

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        imgs = np.asarray(_require(results, "imgs", "FormatShape"))
        clip_len = int(_require(results, "clip_len", "FormatShape"))
        num_clips = int(results.get("num_clips", 1))
        if imgs.ndim == 4:  # a single [K, T, H, W] volume
            imgs = imgs[None]
        augs, k, frames, h, w = imgs.shape
        if frames != clip_len * num_clips:
            raise ValueError(f"FormatShape: clip {_clip_name(results)} has {frames} heatmap frames, "
                             f"expected num_clips * clip_len = {num_clips * clip_len}")
        imgs = imgs.reshape(augs, k, num_clips, clip_len, h, w).transpose(0, 2, 1, 3, 4, 5)
        imgs = imgs.reshape(augs * num_clips, k, clip_len, h, w)  # a view when num_clips == 1
        results["imgs"] = np.ascontiguousarray(imgs, dtype=np.float32)
        results["input_shape"] = results["imgs"].shape
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_format={self.input_format!r})"


# ----------------------------------------------------------------------------------------------
# 5. Pipelines


class Compose:
    """Apply steps in order. The caller's dict is never modified (it is copied first, and no
    step writes into the arrays it receives)."""

    def __init__(self, steps: Iterable[Callable[[Results], Results]]):
        self.steps = list(steps)
        for step in self.steps:
            if not callable(step):
                raise TypeError(f"pipeline step {step!r} is not callable")

    def __call__(self, results: Results) -> Results:
        results = dict(results)
        for step in self.steps:
            results = step(results)
        return results

    def reseed(self, seed: RngLike) -> None:
        """Give every random step (one with an ``rng``) its own stream drawn from ``seed``.
        Call it in each DataLoader worker with a per-worker seed."""
        random_steps = [step for step in self.steps if isinstance(getattr(step, "rng", None), np.random.Generator)]
        for step, child in zip(random_steps, _seed_sequence(seed).spawn(len(random_steps))):
            step.rng = np.random.default_rng(child)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(step) for step in self.steps)
        return f"{type(self).__name__}([\n    {inner}\n])"


def _seed_sequence(seed: RngLike) -> np.random.SeedSequence:
    """A SeedSequence from a seed, a SeedSequence, a Generator (draws from it) or None (fresh)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2**63)))
    return np.random.SeedSequence(seed)


def _heatmap_step(limbs: str | LimbLayout | None, double: bool = False) -> GeneratePoseTarget:
    if limbs is None:
        return GeneratePoseTarget(with_kp=True, with_limb=False, double=double)
    return GeneratePoseTarget(with_kp=False, with_limb=True, limbs=limbs, double=double)


def train_pipeline(clip_len: int = 48, limbs: str | LimbLayout | None = None, seed: RngLike = None) -> Compose:
    """PYSKL's PoseC3D NTU-60 training pipeline: ``[1, K, clip_len, 56, 56]`` volumes.

    ``limbs=None`` draws joint heatmaps; a layout name or :class:`LimbLayout` draws limb
    heatmaps in that order (PYSKL's released limb models use ``"pyskl_released"``). ``seed``
    seeds the random steps (independent streams); None draws fresh entropy.
    """
    sample_seed, crop_seed, flip_seed = _seed_sequence(seed).spawn(3)
    return Compose([
        UniformSampleFrames(clip_len, rng=sample_seed),
        PoseDecode(),
        PoseCompact(hw_ratio=1.0, allow_imgpad=True),
        Resize((-1, 64)),
        RandomResizedCrop(area_range=(0.56, 1.0), rng=crop_seed),
        Resize((56, 56), keep_ratio=False),
        Flip(flip_ratio=0.5, left_kp=LEFT_KEYPOINTS, right_kp=RIGHT_KEYPOINTS, rng=flip_seed),
        _heatmap_step(limbs),
        FormatShape(),
    ])


def val_pipeline(clip_len: int = 48, limbs: str | LimbLayout | None = None, size: int = 64) -> Compose:
    """PYSKL's PoseC3D NTU-60 validation pipeline: one deterministic clip, ``[1, K, clip_len, 64, 64]``
    (``size`` x ``size``)."""
    return test_pipeline(clip_len, num_clips=1, limbs=limbs, double=False, size=size)


def test_pipeline(clip_len: int = 48, num_clips: int = 10, limbs: str | LimbLayout | None = None,
                  double: bool = True, size: int = 64) -> Compose:
    """PYSKL's PoseC3D NTU-60 test pipeline: ``num_clips`` deterministic clips plus their mirror
    images (``double``), ``[2 * num_clips, K, clip_len, 64, 64]`` (``size`` x ``size``); average
    the predictions."""
    return Compose([
        UniformSampleFrames(clip_len, num_clips=num_clips, test_mode=True),
        PoseDecode(),
        PoseCompact(hw_ratio=1.0, allow_imgpad=True),
        Resize((size, size), keep_ratio=False),
        _heatmap_step(limbs, double=double),
        FormatShape(),
    ])


test_pipeline.__test__ = False  # not a pytest test, whatever its name


__all__ = [
    "UniformSampleFrames",
    "PoseDecode",
    "PoseCompact",
    "Resize",
    "RandomResizedCrop",
    "Flip",
    "GeneratePoseTarget",
    "FormatShape",
    "Compose",
    "rescale_size",
    "train_pipeline",
    "val_pipeline",
    "test_pipeline",
]
