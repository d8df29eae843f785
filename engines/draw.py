"""Pictures of heatmap volumes, for people: each channel colour-coded, frames side by side."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def channel_colors(num_channels: int) -> np.ndarray:
    """A distinct RGB colour in [0, 1] per channel: hues spread around the wheel."""
    hues = np.arange(num_channels) / max(num_channels, 1)
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], dtype=np.float32).reshape(-1, 3)


def colorize(volume: np.ndarray) -> np.ndarray:
    """``[K, T, H, W]`` in [0, 1] -> RGB float ``[T, H, W, 3]``: each pixel takes the colour of
    its strongest channel, scaled by that channel's value (a max, so overlapping joints stay
    distinguishable instead of summing to white)."""
    volume = np.asarray(volume, dtype=np.float32)
    colors = channel_colors(volume.shape[0])
    strongest = volume.argmax(axis=0)  # [T, H, W]
    value = np.clip(volume.max(axis=0), 0, 1)
    return colors[strongest] * value[..., None]


def volume_grid(rows: list[tuple[str, np.ndarray]], frames: int = 8, scale: int = 4, gap: int = 2) -> Image.Image:
    """One image: a row per (title, volume ``[K, T, H, W]``) with ``frames`` evenly spaced frames,
    each enlarged ``scale`` times (nearest neighbour, so pixels stay visible)."""
    if not rows:
        raise ValueError("nothing to draw")
    font = ImageFont.load_default()
    title_h = 14
    tiles = []
    for title, volume in rows:
        _, t, h, w = volume.shape
        picked = np.unique(np.linspace(0, t - 1, min(frames, t)).round().astype(int))
        rgb = colorize(volume[:, picked])
        rgb = rgb.repeat(scale, axis=1).repeat(scale, axis=2)
        tiles.append((title, picked, (rgb * 255).astype(np.uint8)))
    width = max(len(p) * (tile.shape[2] + gap) for _, p, tile in tiles) + gap
    height = sum(tile.shape[1] + title_h + gap for _, _, tile in tiles) + gap
    canvas = Image.new("RGB", (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    y = gap
    for title, picked, tile in tiles:
        for i, frame in enumerate(picked):
            x = gap + i * (tile.shape[2] + gap)
            label = f"{title}  t={frame}" if i == 0 else f"t={frame}"
            draw.text((x + 1, y), label, fill=(220, 220, 220), font=font)
            canvas.paste(Image.fromarray(tile[i]), (x, y + title_h))
        y += tile.shape[1] + title_h + gap
    return canvas


# Limb colours by body side (BGR): the person's left cyan, right magenta, centre yellow.
SIDE_COLORS = {"left": (255, 255, 0), "right": (255, 0, 255), "centre": (0, 255, 255)}


def draw_skeleton(frame_bgr: np.ndarray, keypoints: np.ndarray, *, min_score: float = 0.3, thickness: int = 2,
                  limb_color: tuple[int, int, int] | None = None, joint_color: tuple[int, int, int] = (0, 0, 255),
                  joint_radius: int | None = None) -> np.ndarray:
    """Draw one COCO-17 skeleton (``keypoints [17, 3]`` = x, y, score in pixels) on a BGR frame,
    in place: the limbs whose two keypoints reach ``min_score`` (in ``limb_color``, or coloured
    by body side when None) and those keypoints as dots."""
    import cv2

    from posestream.skeleton import LEFT_KEYPOINTS, PYSKL_DEFAULT_LIMBS, RIGHT_KEYPOINTS

    visible = keypoints[:, 2] >= min_score
    points = np.round(keypoints[:, :2]).astype(int)
    for a, b in PYSKL_DEFAULT_LIMBS.pairs:
        if not (visible[a] and visible[b]):
            continue
        color = limb_color
        if color is None:
            side = ("left" if a in LEFT_KEYPOINTS and b in LEFT_KEYPOINTS else
                    "right" if a in RIGHT_KEYPOINTS and b in RIGHT_KEYPOINTS else "centre")
            color = SIDE_COLORS[side]
        cv2.line(frame_bgr, tuple(points[a]), tuple(points[b]), color, thickness, cv2.LINE_AA)
    radius = max(1, thickness) if joint_radius is None else joint_radius
    for point in points[visible]:
        cv2.circle(frame_bgr, tuple(point), radius, joint_color, -1, cv2.LINE_AA)
    return frame_bgr
