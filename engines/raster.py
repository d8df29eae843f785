"""Pseudo heatmap volumes (PoseConv3D Sec. 3.2): one rasterizer for training and serving.

``rasterize`` turns 2D skeletons into a joint volume (Eq. 1) or a limb volume (Eq. 2):

    J[k, t, y, x] = max over persons of  exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2)) * c_k
    L[k, t, y, x] = max over persons of  exp(-D((x, y), segment a_k b_k)^2 / (2 sigma^2)) * min(c_a, c_b)

with PYSKL's ``GeneratePoseTarget`` conventions, so that volumes match the ones the released
models were trained on (within 1e-5):

- a keypoint (or limb) whose score is below ``EPS`` draws nothing;
- each Gaussian is evaluated only on its window of the integer pixel grid: columns
  ``max(trunc(x - 3 sigma), 0) .. min(trunc(x + 3 sigma) + 1, W)`` (end excluded), rows alike;
  for a limb the window is the box around both endpoints, widened the same way. A keypoint
  outside the grid draws whatever part of its window still falls inside (``trunc`` rounds
  toward zero, as Python's ``int`` does in the reference);
- a limb whose endpoints are less than one pixel apart is drawn as the Gaussian of its start
  keypoint, scaled by the start keypoint's score;
- persons are combined by taking the maximum, never the sum.

The work is vectorized over clips, persons, frames and keypoints: every window becomes a run
of pixels in one flat array (total size = the sum of the window areas, exactly what the
reference touches), the Gaussians are evaluated there at once, and the runs are max-scattered
into the output volume.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from posestream.skeleton import LimbLayout, limb_layout

EPS = 1e-3  # scores below this draw nothing (PYSKL's EPS)


Limbs = Union[str, LimbLayout, Sequence[Sequence[int]], None]


def num_channels(num_keypoints: int, limbs: Limbs) -> int:
    """K of the volume: the keypoint count for joints, the limb count for limbs."""
    return num_keypoints if limbs is None else len(_limb_pairs(limbs))


def rasterize(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int,
              sigma: float = 0.6, limbs: Limbs = None, out: np.ndarray | None = None) -> np.ndarray:
    """Rasterize one clip: keypoints ``[M, T, V, 2]`` (grid pixels), scores ``[M, T, V]``
    -> float32 ``[K, T, H, W]`` (K = V for joints, K = number of limbs for limbs).

    ``limbs`` is None for joint heatmaps, a layout name (``"pyskl_default"``,
    ``"pyskl_released"``), a :class:`LimbLayout` or a list of keypoint index pairs.
    ``out``, if given, is a float32 C-contiguous ``[K, T, H, W]`` array that is overwritten.
    """
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 4 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be [M, T, V, 2], got shape {keypoints.shape}")
    batch_out = None if out is None else out[None]
    return rasterize_batch(keypoints[None], np.asarray(scores)[None], height, width, sigma, limbs, batch_out)[0]


def rasterize_batch(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int,
                    sigma: float = 0.6, limbs: Limbs = None, out: np.ndarray | None = None) -> np.ndarray:
    """Rasterize N clips at once: ``[N, M, T, V, 2]``, ``[N, M, T, V]`` -> ``[N, K, T, H, W]``."""
    keypoints, scores, pairs = _check(keypoints, scores, height, width, sigma, limbs)
    shape = _volume_shape(keypoints.shape, pairs, height, width)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        out.fill(0.0)
    _draw(out.reshape(-1), keypoints, scores, height, width, sigma, pairs)
    return out


class Rasterizer:
    """The serving path: rasterizes batch after batch into one reused buffer.

    A heatmap volume is mostly zeros, and clearing a whole ``[N, K, T, H, W]`` buffer costs as
    much as drawing every Gaussian in it, so the rasterizer remembers which pixels it drew and
    clears only those before the next batch. The returned array is the buffer itself: it stays
    valid until the next call and must not be written to by the caller.
    """

    def __init__(self, height: int, width: int, sigma: float = 0.6, limbs: Limbs = None):
        self.height, self.width, self.sigma, self.limbs = height, width, sigma, limbs
        self._buffer: np.ndarray | None = None
        self._drawn: np.ndarray | None = None  # flat indices drawn into _buffer by the last call

    def __call__(self, keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``[N, M, T, V, 2]``, ``[N, M, T, V]`` -> ``[N, K, T, H, W]`` (the reused buffer)."""
        keypoints, scores, pairs = _check(keypoints, scores, self.height, self.width, self.sigma, self.limbs)
        shape = _volume_shape(keypoints.shape, pairs, self.height, self.width)
        if self._buffer is None or self._buffer.shape != shape:
            self._buffer = np.zeros(shape, dtype=np.float32)
        else:
            self._buffer.reshape(-1)[self._drawn] = 0.0
        self._drawn = _draw(self._buffer.reshape(-1), keypoints, scores, self.height, self.width,
                            self.sigma, pairs)
        return self._buffer


def _check(keypoints, scores, height, width, sigma, limbs):
    keypoints = np.asarray(keypoints, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if keypoints.ndim != 5 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be [N, M, T, V, 2], got shape {keypoints.shape}")
    if scores.shape != keypoints.shape[:-1]:
        raise ValueError(f"scores must be {keypoints.shape[:-1]} to match keypoints, got {scores.shape}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    pairs = None if limbs is None else _limb_pairs(limbs)
    v = keypoints.shape[3]
    if pairs is not None and pairs.size and (pairs.min() < 0 or pairs.max() >= v):
        raise ValueError(f"limb pairs index keypoints outside 0..{v - 1}")
    return keypoints, scores, pairs


def _volume_shape(keypoint_shape, pairs, height, width):
    n, _, t, v, _ = keypoint_shape
    return (n, v if pairs is None else len(pairs), t, height, width)


# Clips are drawn a few at a time: with about this many items per chunk the temporaries stay
# in cache (a batch of 16 clips at once ran 1.6x slower per clip than chunks of 4).
_ITEMS_PER_CHUNK = 8192


def _draw(out: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, height: int, width: int,
          sigma: float, pairs: np.ndarray | None) -> np.ndarray:
    """Max-draw every Gaussian into the flat view ``out`` of an ``[N, K, T, H, W]`` volume;
    returns the flat indices it drew."""
    n, m, t, v, _ = keypoints.shape
    per_clip = out.size // max(n, 1)
    step = max(1, _ITEMS_PER_CHUNK // max(m * v * t, 1))
    drawn = []
    for first in range(0, n, step):
        last = min(first + step, n)
        flat = _draw_clips(out[first * per_clip:last * per_clip], keypoints[first:last], scores[first:last],
                           height, width, sigma, pairs)
        drawn.append(flat + first * per_clip)
    return np.concatenate(drawn) if drawn else np.zeros(0, np.int64)


def _draw_clips(out: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, height: int, width: int,
                sigma: float, pairs: np.ndarray | None) -> np.ndarray:
    n, m, t, v, _ = keypoints.shape
    k = v if pairs is None else len(pairs)

    # Every drawable item (a keypoint, or a limb) of every clip, person and frame, flattened.
    # plane = index of the [H, W] plane of ``out`` it draws into: (clip, channel, frame).
    plane = np.arange(n * k * t, dtype=np.int64).reshape(n, 1, k, t)
    plane = np.broadcast_to(plane, (n, m, k, t))  # the same plane for every person
    kp = keypoints.transpose(0, 1, 3, 2, 4)  # [N, M, V, T, 2]
    sc = scores.transpose(0, 1, 3, 2)  # [N, M, V, T]
    if pairs is None:
        start, end, value, start_value = kp, kp, sc, sc
    else:
        start, end = kp[:, :, pairs[:, 0]], kp[:, :, pairs[:, 1]]
        start_value = sc[:, :, pairs[:, 0]]
        value = np.minimum(start_value, sc[:, :, pairs[:, 1]])
    # Non-finite coordinates (a missing detection stored as NaN) draw nothing.
    finite = np.isfinite(kp[..., 0] + kp[..., 1])  # [N, M, V, T]
    if pairs is not None:
        finite = finite[:, :, pairs[:, 0]] & finite[:, :, pairs[:, 1]]
    keep = (value >= EPS) & finite
    ax, ay = start[..., 0][keep], start[..., 1][keep]
    bx, by = end[..., 0][keep], end[..., 1][keep]
    value, start_value, plane = value[keep], start_value[keep], plane[keep]

    if pairs is None:
        x0, x1 = _window(ax, ax, sigma, width)
        y0, y1 = _window(ay, ay, sigma, height)
        flat, heat = _joint_pixels(ax, ay, value, plane, x0, x1, y0, y1, sigma, height, width)
    else:
        # Limbs shorter than a pixel are drawn as their start keypoint's Gaussian, at its score.
        ab2 = (ax - bx) ** 2 + (ay - by) ** 2
        point = ab2 < 1
        bx, by = np.where(point, ax, bx), np.where(point, ay, by)
        value = np.where(point, start_value, value)
        ab2 = np.where(point, np.float32(1), ab2)  # a point's segment vector is 0: avoid 0/0
        x0, x1 = _window(np.minimum(ax, bx), np.maximum(ax, bx), sigma, width)
        y0, y1 = _window(np.minimum(ay, by), np.maximum(ay, by), sigma, height)
        drawn = (x1 > x0) & (y1 > y0)  # windows entirely off the grid draw nothing
        if not drawn.all():
            ax, ay, bx, by, value, plane, ab2 = (a[drawn] for a in (ax, ay, bx, by, value, plane, ab2))
            x0, x1, y0, y1 = x0[drawn], x1[drawn], y0[drawn], y1[drawn]
        flat, heat = _limb_pixels(ax, ay, bx, by, ab2, value, plane, x0, x1, y0, y1, sigma, height, width)

    # Persons (and, for joints, clamped off-window pixels of weight 0) may hit the same pixel:
    # ufunc.at applies every update, so the maximum wins whatever the order.
    np.maximum.at(out, flat, heat)
    return flat


def _joint_pixels(ax, ay, value, plane, x0, x1, y0, y1, sigma, height, width):
    """A joint's window is at most S x S pixels (S = floor(6 sigma) + 2) and its Gaussian is
    separable, so every joint gets a fixed S x S patch: the outer product of a row and a
    column profile, each zero outside the true window. Pixels past the grid edge are clamped
    onto it with weight 0, which the max-scatter ignores. Items are the last (contiguous) axis
    so that numpy's inner loops run over thousands of items, not over S."""
    steps = np.arange(int(6 * sigma) + 2)[:, None]
    cols = x0 + steps  # [S, items]
    rows = y0 + steps
    scale = np.float32(-0.5 / sigma**2)
    dx = cols.astype(np.float32) - ax  # the same rounding as the reference
    dy = rows.astype(np.float32) - ay
    gx = np.exp(dx * dx * scale) * (cols < x1)
    gy = np.exp(dy * dy * scale) * (rows < y1) * value
    heat = gy[:, None, :] * gx[None, :, :]  # [S, S, items]
    np.minimum(cols, width - 1, out=cols)
    np.minimum(rows, height - 1, out=rows)
    row_start = (plane * height + rows) * width  # [S, items]
    flat = row_start[:, None, :] + cols[None, :, :]
    # Scatter patch by patch (items first): each patch's few cache lines are then written
    # together, instead of S * S sweeps over the whole volume.
    return flat.transpose(2, 0, 1).reshape(-1), heat.transpose(2, 0, 1).reshape(-1)


def _limb_pixels(ax, ay, bx, by, ab2, value, plane, x0, x1, y0, y1, sigma, height, width):
    """A limb's window is the box around the segment, of any size: lay the windows out, row by
    row, as runs of pixels in one flat array (exactly the pixels the reference visits).
    Whatever is constant along a window or a row is computed once and repeated (np.repeat is
    several times cheaper than gathering with an index array)."""
    rows, cols = y1 - y0, x1 - x0  # [items]
    area = rows * cols
    row_y = np.repeat(y0 - _run_starts(rows), rows) + np.arange(rows.sum(), dtype=np.int64)
    row_w = np.repeat(cols, rows)
    row_dy = row_y.astype(np.float32) - np.repeat(ay, rows)  # the same rounding as the reference
    row_start = (np.repeat(plane, rows) * height + row_y) * width
    # Squared distance to the segment: project onto it, clamped to the endpoints (a point
    # item has a zero segment vector, so this is its distance to the start keypoint).
    sx, sy, inv = bx - ax, by - ay, 1 / ab2
    row_along = row_dy * np.repeat(sy * inv, rows)

    px = np.repeat(np.repeat(x0, rows) - _run_starts(row_w), row_w) + np.arange(area.sum(), dtype=np.int64)
    dx = px.astype(np.float32) - np.repeat(ax, area)
    dy = np.repeat(row_dy, row_w)
    pixel_sx, pixel_sy = np.repeat(sx, area), np.repeat(sy, area)
    along = dx * np.repeat(sx * inv, area)
    along += np.repeat(row_along, row_w)
    np.clip(along, 0, 1, out=along)
    dx -= along * pixel_sx
    dy -= along * pixel_sy
    heat = np.exp((dx * dx + dy * dy) * np.float32(-0.5 / sigma**2))
    heat *= np.repeat(value, area)
    return np.repeat(row_start, row_w) + px, heat


def _run_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each run starts when runs of these lengths are laid end to end."""
    return np.cumsum(lengths) - lengths


def _window(lo: np.ndarray, hi: np.ndarray, sigma: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """PYSKL's window on the integer grid: [max(trunc(lo - 3s), 0), min(trunc(hi + 3s) + 1, size)).

    Clipping to [-1, size] first changes no result and keeps absurd coordinates from
    overflowing the integer cast; the cast itself truncates toward zero, like Python's int().
    """
    reach = np.float32(3 * sigma)
    start = np.clip(lo - reach, -1, size).astype(np.int64)
    np.maximum(start, 0, out=start)
    stop = np.clip(hi + reach, -1, size).astype(np.int64)
    stop += 1
    np.minimum(stop, size, out=stop)
    return start, stop


def _limb_pairs(limbs: str | LimbLayout | Sequence[Sequence[int]]) -> np.ndarray:
    if isinstance(limbs, (str, LimbLayout)):
        return limb_layout(limbs).as_array()
    pairs = np.asarray(limbs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"limbs must be a list of (start, end) keypoint pairs, got shape {pairs.shape}")
    return pairs


def make_rasterizer(height: int, width: int, sigma: float = 0.6, limbs: Limbs = None, *, backend: str = "cpu",
                    **options):
    """A batch rasterizer by backend: ``"cpu"`` (:class:`Rasterizer`: numpy in, numpy out),
    ``"cuda"`` (:class:`posestream.engines.raster_cuda.CudaRasterizer`: one kernel launch,
    torch CUDA tensors out; ``options`` are its ``dtype``, ``device``, ``threads``; raises a
    one-line RuntimeError where CUDA or CuPy is missing) or ``"auto"`` (CUDA when it can run
    here, else the CPU, with a logged notice). Both draw the same volumes (within 1e-5).
    Note the call signatures differ: ``Rasterizer(kp, scores)`` and
    ``CudaRasterizer(kp_with_scores | (kp, scores), out=None)``."""
    name = str(backend).strip().lower()
    if name == "cpu":
        if options:
            raise ValueError(f"the cpu rasterizer takes no options, got {', '.join(sorted(options))}")
        return Rasterizer(height, width, sigma, limbs)
    if name not in ("cuda", "auto"):
        raise ValueError(f"backend must be cpu, cuda or auto, got {backend!r}")
    from posestream.engines import raster_cuda

    if name == "auto":
        reason = raster_cuda.cuda_unavailable_reason()
        if reason is not None:
            import logging

            logging.getLogger(__name__).info("CUDA rasterizer unavailable (%s); rasterizing on the CPU", reason)
            return Rasterizer(height, width, sigma, limbs)
    return raster_cuda.CudaRasterizer(height, width, sigma, limbs, **options)
