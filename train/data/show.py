"""Animations of skeleton clips, for people: what a clip (synthetic or real) looks like.

:func:`render_frames` draws each frame of a PYSKL clip dict: the image area (with a margin
around it, so keypoints outside the image stay visible), every person's limbs coloured by
side (left orange, right blue, centre grey), joints sized by score (hollow below 0.3), the
person index beside each skeleton, and a header with the frame counter, time and label.
:func:`render_clip_animation` writes them as a GIF (Pillow), an animated WebP (Pillow, when
built with WebP) or an MP4 (needs ``imageio-ffmpeg``, H.264, or ``opencv-python-headless``,
MPEG-4 Part 2). :func:`contact_sheet` puts a few frames side by side in one image.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from posestream.files import atomic_write
from posestream.skeleton import PYSKL_DEFAULT_LIMBS

__all__ = ["render_frames", "render_clip_animation", "contact_sheet"]

LEFT_COLOR = (255, 150, 40)
RIGHT_COLOR = (60, 160, 255)
CENTER_COLOR = (200, 200, 200)
BACKGROUND = (24, 24, 28)
IMAGE_AREA = (44, 46, 52)
TEXT_COLOR = (235, 235, 235)
_LOW_SCORE = 0.3

_LIMB_COLORS = []
for _i in range(len(PYSKL_DEFAULT_LIMBS)):
    if _i in PYSKL_DEFAULT_LIMBS.left:
        _LIMB_COLORS.append(LEFT_COLOR)
    elif _i in PYSKL_DEFAULT_LIMBS.right:
        _LIMB_COLORS.append(RIGHT_COLOR)
    else:
        _LIMB_COLORS.append(CENTER_COLOR)
_JOINT_COLORS = [CENTER_COLOR] + [LEFT_COLOR if j % 2 else RIGHT_COLOR for j in range(1, 17)]


def _mix(color, amount: float, base=IMAGE_AREA):
    a = float(np.clip(amount, 0.0, 1.0))
    return tuple(int(round(b + (c - b) * a)) for c, b in zip(color, base))


def _geometry(clip: Mapping, size, margin: float):
    h, w = (int(x) for x in clip["img_shape"])
    if size is None:
        scale = min(1.0, 640.0 / max(h, w))
    elif isinstance(size, (tuple, list)):
        scale = min(size[0] / (w * (1 + 2 * margin)), size[1] / (h * (1 + 2 * margin) + 22))
    else:
        scale = float(size) / max(h, w)
    mx, my = int(round(margin * w * scale)), int(round(margin * h * scale))
    header = 22
    cw = int(round(w * scale)) + 2 * mx
    ch = int(round(h * scale)) + 2 * my + header
    cw += cw % 2  # even sizes for video encoders
    ch += ch % 2
    return h, w, scale, mx, my + header, cw, ch


def _title(clip: Mapping) -> str:
    names = clip.get("class_names")
    label = clip.get("label")
    title = ""
    if names is not None and label is not None and 0 <= int(label) < len(names):
        title = str(names[int(label)])
    elif label is not None:
        title = f"label {int(label)}"
    if clip.get("variant"):
        title += f" ({clip['variant']})"
    return title


def render_frames(clip: Mapping, size=None, margin: float = 0.08,
                  frames: Sequence[int] | None = None) -> list[Image.Image]:
    """One RGB image per frame of ``clip`` (a PYSKL clip dict), or per index in ``frames``.

    ``size``: the longest side of the drawn image area in pixels (default: the image's, at
    most 640), or ``(width, height)`` of the whole canvas. ``margin``: the border around the
    image area, as a fraction of its size, where out-of-frame keypoints are drawn.
    """
    kp = np.asarray(clip["keypoint"], dtype=np.float64)
    sc = np.asarray(clip["keypoint_score"], dtype=np.float64)
    m_len, t_len = kp.shape[:2]
    h, w, scale, ox, oy, cw, ch = _geometry(clip, size, margin)
    font = ImageFont.load_default()
    title = _title(clip)
    fps = clip.get("fps")
    pairs = PYSKL_DEFAULT_LIMBS.pairs
    out = []
    for t in (range(t_len) if frames is None else frames):
        img = Image.new("RGB", (cw, ch), BACKGROUND)
        d = ImageDraw.Draw(img)
        d.rectangle([ox, oy, ox + int(round(w * scale)) - 1, oy + int(round(h * scale)) - 1],
                    fill=IMAGE_AREA, outline=(90, 90, 100))
        when = f"  t={t / float(fps):.2f}s" if fps else ""
        d.text((4, 4), f"frame {t + 1}/{t_len}{when}  {title}", fill=TEXT_COLOR, font=font)
        lw = max(1, int(round(3 * scale ** 0.5)))
        for p in range(m_len):
            s = sc[p, t]
            if not (s > 0).any():
                d.text((ox + 4, oy + 4 + 12 * p), f"P{p} missing", fill=(160, 160, 160), font=font)
                continue
            xy = kp[p, t] * scale + (ox, oy)
            for (a, b), color in zip(pairs, _LIMB_COLORS):
                conf = min(s[a], s[b])
                if conf <= 0.05:
                    continue
                d.line([tuple(xy[a]), tuple(xy[b])], fill=_mix(color, 0.35 + 0.65 * conf),
                       width=max(1, int(round(lw * (0.4 + 0.6 * conf)))))
            for j in range(len(s)):
                if s[j] <= 0.0:
                    continue
                r = (1.0 + 4.0 * s[j]) * max(scale, 0.35) ** 0.5
                x, y = xy[j]
                box = [x - r, y - r, x + r, y + r]
                color = _JOINT_COLORS[j] if j < len(_JOINT_COLORS) else CENTER_COLOR
                if s[j] < _LOW_SCORE:
                    d.ellipse(box, outline=_mix(color, 0.6), width=1)
                else:
                    d.ellipse(box, fill=_mix(color, 0.4 + 0.6 * s[j]), outline=(20, 20, 20))
            good = s > _LOW_SCORE
            pts = xy[good] if good.any() else xy[s > 0]
            top = pts[np.argmin(pts[:, 1])]
            tx = float(np.clip(top[0] - 6, 0, cw - 20))
            ty = float(np.clip(top[1] - 22 * max(scale, 0.5) ** 0.5 - 6, 0, ch - 12))
            d.text((tx, ty), f"P{p}", fill=(255, 255, 120), font=font)
        out.append(img)
    return out


def contact_sheet(clip: Mapping, num: int = 6, size=320, margin: float = 0.08,
                  columns: int | None = None) -> Image.Image:
    """``num`` evenly spaced frames of ``clip`` in one image, ``columns`` per row (default:
    all in one row)."""
    t_len = int(np.asarray(clip["keypoint"]).shape[1])
    picked = np.unique(np.linspace(0, t_len - 1, min(num, t_len)).round().astype(int)).tolist()
    frames = render_frames(clip, size=size, margin=margin, frames=picked)
    cols = columns or len(frames)
    rows = -(-len(frames) // cols)
    fw, fh = frames[0].size
    sheet = Image.new("RGB", (cols * fw + (cols - 1) * 2, rows * fh + (rows - 1) * 2), (0, 0, 0))
    for i, f in enumerate(frames):
        sheet.paste(f, ((i % cols) * (fw + 2), (i // cols) * (fh + 2)))
    return sheet


def _write_mp4(frames: Sequence[Image.Image], path: Path, fps: float) -> None:
    tmp_dir = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_dir) / "video.mp4"
    try:
        try:
            import imageio_ffmpeg
        except ImportError:
            imageio_ffmpeg = None
        if imageio_ffmpeg is not None:
            w, h = frames[0].size
            writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264",
                                                 pix_fmt_out="yuv420p", macro_block_size=2,
                                                 output_params=["-loglevel", "error"])
            writer.send(None)
            for f in frames:
                writer.send(np.ascontiguousarray(np.asarray(f, dtype=np.uint8)))
            writer.close()
        else:
            try:
                import cv2
            except ImportError:
                raise RuntimeError(
                    f"{path}: writing MP4 needs imageio-ffmpeg (H.264) or opencv-python-headless "
                    "(pip install imageio-ffmpeg); .gif and .webp need only Pillow") from None
            w, h = frames[0].size
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
            if not writer.isOpened():
                raise RuntimeError(f"{path}: OpenCV cannot open an MP4 writer (mp4v)")
            for f in frames:
                writer.write(np.asarray(f, dtype=np.uint8)[:, :, ::-1].copy())
            writer.release()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def render_clip_animation(clip: Mapping, out_path, fps: float | None = None, size=None,
                          margin: float = 0.08) -> Path:
    """Write ``clip``'s skeletons over time to ``out_path`` (``.gif``, ``.webp`` or ``.mp4``)
    and return its path. ``fps`` defaults to the clip's ``fps`` field, else 15; ``size`` and
    ``margin`` as in :func:`render_frames`. GIF and WebP use Pillow only; MP4 needs
    ``imageio-ffmpeg`` or ``opencv-python-headless``. The file is written atomically.
    """
    path = Path(out_path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".webp", ".mp4"):
        raise ValueError(f"{path}: unsupported animation format {suffix or '(none)'}; use .gif, .webp or .mp4")
    fps = float(fps or clip.get("fps") or 15.0)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = render_frames(clip, size=size, margin=margin)
    if suffix == ".mp4":
        _write_mp4(frames, path, fps)
        return path
    duration = max(20, int(round(1000.0 / fps)))
    if suffix == ".gif":
        def write(f):
            frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=duration,
                           loop=0, optimize=False)
    else:
        def write(f):
            frames[0].save(f, format="WEBP", save_all=True, append_images=frames[1:], duration=duration,
                           loop=0, quality=80)
    atomic_write(path, write)
    return path
