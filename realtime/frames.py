"""What flows between the realtime stages: one captured frame of one stream.

A reader thread (:mod:`posestream.realtime.sources`) makes a :class:`Frame` for every frame it
reads; the perception stage takes the newest one, and every later stage refers back to it by
``(stream, index)`` and measures its latency from ``t_capture``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Frame", "FrameError", "to_bgr_uint8"]


class FrameError(ValueError):
    """An image that cannot be made into a frame (one line: what is wrong with it)."""


def to_bgr_uint8(image: Any) -> np.ndarray:
    """The image as a BGR uint8 ``[H, W, 3]`` frame, converting what can be converted.

    Grey (``[H, W]`` or ``[H, W, 1]``) and BGRA (``[H, W, 4]``) frames get three channels;
    16-bit frames (cameras, PNGs read unchanged) keep their high byte; other integer and
    float frames are clipped to 0..255 (non-finite values become 0). A frame already BGR
    uint8 is returned as is (no copy). Anything else raises :class:`FrameError`: not an array,
    zero-size, a rank other than 2 or 3, or 2 or more than 4 channels.
    """
    if not isinstance(image, np.ndarray):
        raise FrameError(f"not an image array: {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise FrameError(f"an image needs 2 or 3 dims [H, W(, C)], got shape {list(image.shape)}")
    if image.size == 0:
        raise FrameError(f"zero-size image, shape {list(image.shape)}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        raise FrameError(f"an image needs 1, 3 or 4 channels, got shape {list(image.shape)}")
    if channels == 3 and image.dtype == np.uint8:
        return image
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating):
        image = np.clip(np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0),
                        0, 255).astype(np.uint8)
    else:
        raise FrameError(f"an image needs an integer or float dtype, got {image.dtype}")
    if channels == 1:
        grey = image.reshape(image.shape[0], image.shape[1])
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3])  # BGRA -> BGR: the alpha channel goes
    return np.ascontiguousarray(image)


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame read from one source.

    stream: the stream's name (unique within a run, e.g. ``"cam0"`` or the file's stem).
    index: the frame's index in the stream, from 0, counting every frame the reader read
        (frames dropped later still use up their index, so gaps show drops).
    t_capture: ``time.monotonic()`` when the reader got the frame: every latency is measured
        from here.
    t_wall: ``time.time()`` at the same moment (for event timestamps).
    image: BGR uint8 ``[H, W, 3]``.
    pts: the frame's position in its source in seconds when the source says (video files,
        image folders at their nominal rate), else None.
    t_stream: the moment the frame shows on its stream's own clock, when that is not
        ``t_capture``: a file read at pace "fast" is read as fast as the pipeline takes frames,
        so its frames' read times follow the CPU, not the scene; its first frame's
        ``t_capture`` + ``pts`` keeps the file's own time. None elsewhere (cameras, streams, files
        played at their own rate: read time is scene time). :attr:`t_clock` is the one to use.
    """

    stream: str
    index: int
    t_capture: float
    t_wall: float
    image: np.ndarray
    pts: float | None = None
    t_stream: float | None = None

    @property
    def t_clock(self) -> float:
        """The frame's time on the stream's clock (windows, tracks, the fall logic, the detection
        schedule measure motion on it); latencies are measured from ``t_capture``."""
        return self.t_capture if self.t_stream is None else self.t_stream

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])
