"""A small procedurally drawn clip for demos, benchmarks and tests: one person waving while a
second walks across the frame, as a top-down pose estimator would report them (COCO-17,
image pixels, with score noise and a few low-confidence joints).

It is no substitute for real data or for the synthetic action generator: it exists so that
the README's commands and the benchmarks have a realistic-looking skeleton clip on a machine
with no dataset.
"""
from __future__ import annotations

import numpy as np

# A standing person in body units: x to the person's left-right (image x), y down, feet at
# y = 1, head top at y = 0. COCO-17 order.
_STANDING = np.array([
    [0.00, 0.07],    # nose
    [0.03, 0.05],    # left eye (image right: the person faces the camera)
    [-0.03, 0.05],   # right eye
    [0.06, 0.07],    # left ear
    [-0.06, 0.07],   # right ear
    [0.12, 0.20],    # left shoulder
    [-0.12, 0.20],   # right shoulder
    [0.15, 0.36],    # left elbow
    [-0.15, 0.36],   # right elbow
    [0.16, 0.50],    # left wrist
    [-0.16, 0.50],   # right wrist
    [0.08, 0.52],    # left hip
    [-0.08, 0.52],   # right hip
    [0.09, 0.76],    # left knee
    [-0.09, 0.76],   # right knee
    [0.09, 0.98],    # left ankle
    [-0.09, 0.98],   # right ankle
], dtype=np.float64)


def waving_and_walking_clip(num_frames: int = 72, img_shape: tuple[int, int] = (480, 640),
                            seed: int = 0) -> dict:
    """A two-person clip dict in the PYSKL annotation format (label 0, frame_dir 'sample')."""
    rng = np.random.default_rng(seed)
    h, w = img_shape
    t = np.arange(num_frames) / 25.0  # seconds at 25 fps
    keypoint = np.empty((2, num_frames, 17, 2))

    # Person 0 stands on the left and waves the right arm above the head.
    waver = np.repeat(_STANDING[None], num_frames, axis=0)
    swing = 0.5 * np.sin(2 * np.pi * 1.5 * t)  # radians, 1.5 waves per second
    shoulder = waver[:, 6]
    elbow = shoulder + 0.16 * np.stack([-np.ones(num_frames) * 0.6, -np.ones(num_frames) * 0.8], -1)
    wrist = elbow + 0.15 * np.stack([np.sin(swing), -np.cos(swing)], -1)
    waver[:, 8], waver[:, 10] = elbow, wrist
    height0 = 0.7 * h
    keypoint[0] = waver * height0 + [0.3 * w, 0.15 * h]

    # Person 1 walks from right to left, further away (smaller), legs and arms swinging.
    walker = np.repeat(_STANDING[None], num_frames, axis=0)
    phase = 2 * np.pi * 1.8 * t
    for knee, ankle, sign in ((13, 15, 1), (14, 16, -1)):
        stride = 0.12 * np.sin(phase) * sign
        walker[:, knee, 0] += stride * 0.5
        walker[:, ankle, 0] += stride
        walker[:, ankle, 1] -= 0.03 * np.clip(np.sin(phase) * sign, 0, None)
    for elbow_i, wrist_i, sign in ((7, 9, -1), (8, 10, 1)):
        walker[:, elbow_i, 0] += 0.04 * np.sin(phase) * sign
        walker[:, wrist_i, 0] += 0.08 * np.sin(phase) * sign
    height1 = 0.45 * h
    x1 = np.linspace(0.85 * w, 0.55 * w, num_frames)[:, None]
    keypoint[1] = walker * height1 + np.concatenate([x1, np.full_like(x1, 0.35 * h)], -1)[:, None]

    keypoint += rng.normal(0, 0.004 * h, keypoint.shape)  # estimator jitter
    score = np.clip(rng.normal(0.9, 0.05, keypoint.shape[:-1]), 0, 1)
    score[1, :, 1:5] *= 0.5  # the far walker's face is less certain
    occluded = rng.random(score.shape) < 0.03
    score[occluded] = rng.uniform(0.0, 0.2, occluded.sum())
    return {
        "frame_dir": "sample",
        "label": 0,
        "img_shape": (h, w),
        "original_shape": (h, w),
        "total_frames": num_frames,
        "keypoint": keypoint.astype(np.float32),
        "keypoint_score": score.astype(np.float32),
    }
