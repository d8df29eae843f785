"""The COCO-17 skeleton layout: keypoint names, limbs and left/right pairs for flipping.

Every part of posestream that needs to know what joint 5 is, or which limbs a limb heatmap
has and in what order, reads it from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

LEFT_KEYPOINTS = (1, 3, 5, 7, 9, 11, 13, 15)
RIGHT_KEYPOINTS = (2, 4, 6, 8, 10, 12, 14, 16)


def swap_index(size: int, left: tuple[int, ...], right: tuple[int, ...]) -> np.ndarray:
    """The permutation that exchanges each left index with its right partner."""
    index = np.arange(size)
    index[list(left)] = right
    index[list(right)] = left
    return index


# KEYPOINT_FLIP_INDEX[k] is the keypoint that k becomes in a horizontally mirrored image.
KEYPOINT_FLIP_INDEX = swap_index(NUM_KEYPOINTS, LEFT_KEYPOINTS, RIGHT_KEYPOINTS)


@dataclass(frozen=True)
class LimbLayout:
    """An ordered list of limbs (pairs of keypoint indices) and its left/right limb pairs.

    The order matters: channel ``i`` of a limb heatmap volume is limb ``pairs[i]``, so a model
    trained with one order only works on volumes rasterized in that order.
    """

    name: str
    pairs: tuple[tuple[int, int], ...]
    left: tuple[int, ...]
    right: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def flip_index(self) -> np.ndarray:
        """FLIP_INDEX[i] is the limb that limb i becomes in a horizontally mirrored image."""
        return swap_index(len(self.pairs), self.left, self.right)

    def as_array(self) -> np.ndarray:
        return np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)


# The default skeleton of PYSKL's (and MMAction2's) GeneratePoseTarget.
PYSKL_DEFAULT_LIMBS = LimbLayout(
    name="pyskl_default",
    pairs=((0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8),
           (8, 10), (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12)),
    left=(0, 2, 4, 5, 6, 10, 11, 12),
    right=(1, 3, 7, 8, 9, 13, 14, 15),
)

# The order used by PYSKL's released PoseC3D limb configs (configs/posec3d/*/limb.py), and so
# by every released limb checkpoint: arms and legs first, the face last.
PYSKL_RELEASED_LIMBS = LimbLayout(
    name="pyskl_released",
    pairs=((0, 5), (0, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (11, 13), (13, 15),
           (6, 12), (12, 14), (14, 16), (0, 1), (0, 2), (1, 3), (2, 4), (11, 12)),
    left=(0, 2, 3, 6, 7, 8, 12, 14),
    right=(1, 4, 5, 9, 10, 11, 13, 15),
)

LIMB_LAYOUTS = {layout.name: layout for layout in (PYSKL_DEFAULT_LIMBS, PYSKL_RELEASED_LIMBS)}


def limb_layout(limbs: str | LimbLayout) -> LimbLayout:
    """Look up a limb layout by name (``pyskl_default`` or ``pyskl_released``)."""
    if isinstance(limbs, LimbLayout):
        return limbs
    try:
        return LIMB_LAYOUTS[limbs]
    except KeyError:
        raise ValueError(f"unknown limb layout {limbs!r}; known: {', '.join(LIMB_LAYOUTS)}") from None
