"""What flows between the realtime stages: one captured frame of one stream.

A reader thread (:mod:`posestream.realtime.sources`) makes a :class:`Frame` for every frame it
reads; the perception stage takes the newest one, and every later stage refers back to it by
``(stream, index)`` and measures its latency from ``t_capture``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Frame"]


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
    """

    stream: str
    index: int
    t_capture: float
    t_wall: float
    image: np.ndarray
    pts: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])
