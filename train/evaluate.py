"""Testing trained models: accuracy, multi-clip flip testing, late fusion, confusion analysis and
the robustness test of PoseConv3D's Table 7.

    from posestream.train.evaluate import evaluate, fuse_results, format_results
    result = evaluate("ntu60_xsub_joint", "work_dirs/.../best.pth")        # 10 clips + flip, as the config
    result = evaluate(cfg, ckpt, num_clips=1, flip=False)                   # 1-clip testing (Table 6)
    result = evaluate(cfg, ckpt, drop_probs=(0, 1/8, 1/4, 1/2, 1))          # Table 7
    fused = fuse_results([joint_result["out_dir"], limb_result["out_dir"]])  # J + L (Table 3)
    print(format_results(result))

Protocol
--------
- Test-time sampling and heatmaps come from the config's test pipeline (PYSKL's: 10 clips,
  each also mirrored with ``double=True``); ``num_clips`` / ``flip`` override it. The model sees
  every volume of a video, and the scores are combined as PYSKL's ``average_clips``: ``'prob'``
  takes the softmax of each volume's logits, then the mean over volumes; ``'score'`` the mean
  of the logits.
- Top-k: a video counts when its label is among the k highest scores (ties broken towards the
  lower class index). Mean class accuracy: the mean over the classes present in the labels of
  each class's recall. (PYSKL's own function also averages in, as 0, classes that are only
  ever *predicted*; on a full test set, where every class occurs, the two agree.)
- Confusion: ``confusion[i, j]`` counts videos of class i predicted as j. The confusion score of
  a pair (paper Eq. 3) is ``n_ij + n_ji``; the most confused pairs are listed as Table 18.
- Robustness (Sec. 4.4.2, Table 7): "randomly dropping one limb keypoint in each frame with
  probability p", where the eight limb keypoints are the elbows, wrists, knees and ankles
  (footnote 4; COCO indices 7, 8, 9, 10, 13, 14, 15, 16). Here, independently for every person
  in every frame of a test video, with probability p one of the eight is chosen uniformly and
  *removed*: its coordinates and its score become 0, which is how PYSKL's pickles mark a
  missing keypoint (zero coordinates are ignored by ``PoseCompact`` and ``Flip``; a zero score
  draws nothing, and no limb that touches it). This happens to the whole video, before the
  test pipeline samples frames. The draws are seeded per (seed, p, video), so a run repeats
  exactly. The paper does not say how multi-person frames are treated; FineGYM (its Table 7
  dataset) has one athlete, where the two readings coincide.
- Late fusion (J + L): the weighted mean of the runs' per-video scores (weights 1 by default).

Files written to ``out_dir`` (each atomically): ``scores.npy`` (float32 ``[videos, classes]``),
``meta.json`` (frame_dirs, labels, split, protocol: what fusion checks runs against),
``results.json``, ``confusion.png`` and, for the robustness test, ``scores_drop_<p>.npy``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posestream.files import atomic_write

__all__ = [
    "LIMB_KEYPOINTS", "TABLE7_DROP_PROBS", "topk_accuracy", "mean_class_accuracy", "confusion_matrix",
    "compute_metrics", "most_confused_pairs", "average_clip_scores", "drop_limb_keypoints", "predict", "worker_init",
    "late_fusion", "load_scores", "fuse_results", "confusion_image", "confusion_layout", "save_confusion_png",
    "evaluate", "format_results", "run_test", "EvalOptions", "ProcessOptions",
]

log = logging.getLogger("posestream.train")

#: The eight limb keypoints of the robustness test (COCO-17): elbows, wrists, knees, ankles.
LIMB_KEYPOINTS = (7, 8, 9, 10, 13, 14, 15, 16)
#: The drop probabilities of the paper's Table 7.
TABLE7_DROP_PROBS = (0.0, 1 / 8, 1 / 4, 1 / 2, 1.0)


# ---------------------------------------------------------------------------------------------
# Metrics


def _check_scores(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [videos, classes], got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be [{scores.shape[0]}] to match the scores, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}, got {labels.min()}..{labels.max()}")
    return scores, labels.astype(np.int64)


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices by descending score; ties go to the lower index."""
    return np.argsort(-scores, axis=1, kind="stable")


def topk_accuracy(scores, labels, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """``{k: fraction of videos whose label is among their k highest scores}``."""
    scores, labels = _check_scores(scores, labels)
    if not len(labels):
        return {k: float("nan") for k in ks}
    rank = _ranking(scores)
    return {k: float((rank[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` int64: entry (i, j) counts videos of class i predicted as j."""
    pred = np.asarray(pred, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_class_accuracy(scores, labels) -> float:
    """Mean over the classes present in ``labels`` of the fraction of their videos predicted right."""
    scores, labels = _check_scores(scores, labels)
    if not len(labels):
        return float("nan")
    cm = confusion_matrix(_ranking(scores)[:, 0], labels, scores.shape[1])
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def compute_metrics(scores, labels) -> dict[str, float]:
    """``{"top1", "top5", "mean_class_accuracy", "videos"}``."""
    top = topk_accuracy(scores, labels, (1, 5))
    return {"top1": top[1], "top5": top[5], "mean_class_accuracy": mean_class_accuracy(scores, labels),
            "videos": int(np.shape(labels)[0])}


def most_confused_pairs(confusion: np.ndarray, k: int = 5, class_names: Sequence[str] | None = None) -> list[dict]:
    """The ``k`` class pairs with the highest confusion score ``n_ij + n_ji`` (paper Eq. 3,
    Table 18), highest first, pairs never confused left out."""
    cm = np.asarray(confusion, dtype=np.int64)
    n = cm.shape[0]
    i, j = np.triu_indices(n, 1)
    score = cm[i, j] + cm[j, i]
    order = np.lexsort((j, i, -score))  # by score, then by class indices
    pairs = []
    for idx in order[:k]:
        if score[idx] <= 0:
            break
        a, b = int(i[idx]), int(j[idx])
        pair = {"class_a": a, "class_b": b, "score": int(score[idx]), "a_as_b": int(cm[a, b]), "b_as_a": int(cm[b, a])}
        if class_names is not None:
            pair["name_a"], pair["name_b"] = class_names[a], class_names[b]
        pairs.append(pair)
    return pairs


# ---------------------------------------------------------------------------------------------
# Clip averaging and the robustness perturbation


def average_clip_scores(logits, mode: str = "prob"):
    """``[videos, views, classes]`` logits -> ``[videos, classes]``: ``'prob'`` averages the
    softmax of each view (PYSKL's ``average_clips='prob'``), ``'score'`` the logits. Works on
    numpy arrays and torch tensors."""
    if mode not in ("prob", "score"):
        raise ValueError(f"average_clips must be 'prob' or 'score', got {mode!r}")
    if isinstance(logits, np.ndarray):
        x = logits.astype(np.float64)
        if mode == "prob":
            x = np.exp(x - x.max(axis=-1, keepdims=True))
            x = x / x.sum(axis=-1, keepdims=True)
        return x.mean(axis=1)
    import torch

    x = logits.float()
    if mode == "prob":
        x = torch.softmax(x, dim=-1)
    return x.mean(dim=1)


def drop_limb_keypoints(clip: Mapping, p: float, rng: np.random.Generator | int | None = None,
                        keypoints: Sequence[int] = LIMB_KEYPOINTS, mode: str = "remove") -> dict:
    """The robustness perturbation of Table 7 (see the module docstring): for every person in
    every frame, with probability ``p`` one of ``keypoints`` (uniformly) is dropped. ``mode``
    ``'remove'`` zeroes its coordinates and score (a missing keypoint), ``'score'`` only its
    score. Returns a new clip dict; the given one is not modified."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    if mode not in ("remove", "score"):
        raise ValueError(f"mode must be 'remove' or 'score', got {mode!r}")
    rng = np.random.default_rng(rng)
    kp = np.array(clip["keypoint"], copy=True)
    score = np.array(clip["keypoint_score"], copy=True)
    if kp.shape[2] <= max(keypoints):
        raise ValueError(f"clip {clip.get('frame_dir')!r} has {kp.shape[2]} keypoints; the limb keypoints "
                         f"{tuple(keypoints)} need COCO-17")
    persons, frames = score.shape[:2]
    dropped = rng.random((persons, frames)) < p
    choice = np.asarray(keypoints)[rng.integers(0, len(keypoints), size=(persons, frames))]
    m, t = np.nonzero(dropped)
    k = choice[m, t]
    score[m, t, k] = 0
    if mode == "remove":
        kp[m, t, k] = 0
    return {**clip, "keypoint": kp, "keypoint_score": score}


class _Dropped:
    """A clip transform for :class:`~posestream.train.trainer.ClipDataset`: drop limb keypoints
    with probability ``p``, seeded per (seed, p, clip index)."""

    def __init__(self, p: float, seed: int = 0):
        self.p = float(p)
        self.seed = int(seed)

    def __call__(self, clip: Mapping, index: int) -> dict:
        rng = np.random.default_rng([self.seed, round(self.p * 1_000_000), index])
        return drop_limb_keypoints(clip, self.p, rng)


# ---------------------------------------------------------------------------------------------
# Running a model over clips


def worker_context(workers: int) -> str | None:
    """``multiprocessing_context`` of every posestream DataLoader: the default (fork) unless this
    process has loaded OpenVINO, whose runtime keeps thread pools (TBB) running after its models
    are gone: forking then crashed the parent (a segmentation fault at the first multi-worker
    loader after a two-stream run in the same process, e.g. the test suite). ``forkserver``
    starts workers from a clean process instead; the samples stay the same (each is seeded by its
    place in the epoch, not by the worker)."""
    import sys

    return "forkserver" if workers > 0 and "openvino" in sys.modules else None


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of every posestream DataLoader: leave Ctrl-C to the main process (it
    stops cleanly; a worker killed by it would fail the next batch), and give a dataset without
    per-sample seeding (``seed=None``) its own random stream in each worker."""
    import signal

    import torch

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not in the main thread
        pass
    info = torch.utils.data.get_worker_info()
    dataset = getattr(info, "dataset", None)
    dataset = getattr(dataset, "dataset", dataset)  # through a Subset
    pipeline = getattr(dataset, "pipeline", None)
    if pipeline is not None and getattr(dataset, "seed", None) is None and hasattr(pipeline, "reseed"):
        pipeline.reseed(torch.initial_seed())  # the loader's base seed + worker id: distinct per worker


def predict(model, dataset, *, batch_size: int = 1, device=None, workers: int = 0, average_clips: str = "prob",
            progress: bool = False, desc: str = "test", amp: bool = False) -> np.ndarray:
    """Scores ``[len(dataset), classes]`` (float32) of a model over a dataset of
    ``(volumes [views, K, T, H, W], label)`` items: every view goes through the model, and the
    views of one video are combined by ``average_clips``. The model is put in eval mode."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    device = torch.device(device or "cpu")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator(),
                        worker_init_fn=worker_init, multiprocessing_context=worker_context(workers))
    model.eval()
    out = []
    with torch.inference_mode():
        for volumes, _ in tqdm(loader, desc=desc, unit="batch", disable=None if progress else True, leave=False):
            b, views = volumes.shape[:2]
            x = volumes.flatten(0, 1).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                logits = model(x)
            scores = average_clip_scores(logits.float().reshape(b, views, -1), average_clips)
            out.append(scores.cpu().numpy().astype(np.float32))
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Late fusion


def load_scores(source) -> tuple[np.ndarray, dict | None]:
    """Scores from an array, a ``.npy`` file, or an evaluation folder (its ``scores.npy`` and
    ``meta.json``). Returns ``(scores, meta or None)``."""
    if isinstance(source, np.ndarray):
        return source, None
    path = Path(source)
    meta = None
    if path.is_dir():
        meta_path = path / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        path = path / "scores.npy"
    elif path.suffix == ".npy" and (path.parent / "meta.json").is_file() and path.name == "scores.npy":
        meta = json.loads((path.parent / "meta.json").read_text(encoding="utf-8"))
    try:
        scores = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (give an evaluation folder or a scores .npy file)") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a numpy score file ({exc})") from None
    if scores.ndim != 2:
        raise ValueError(f"{path}: scores must be [videos, classes], got shape {scores.shape}")
    return scores, meta


def late_fusion(sources: Sequence, weights: Sequence[float] | None = None) -> np.ndarray:
    """The weighted mean of several runs' ``[videos, classes]`` scores (arrays, ``.npy`` files or
    evaluation folders), e.g. a joint and a limb model for PoseConv3D (J + L)."""
    if not sources:
        raise ValueError("late fusion needs at least one score array")
    arrays = [np.asarray(load_scores(s)[0], dtype=np.float64) for s in sources]
    weights = [1.0] * len(arrays) if weights is None else [float(w) for w in weights]
    if len(weights) != len(arrays):
        raise ValueError(f"{len(weights)} weights for {len(arrays)} score arrays")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise ValueError(f"score array #{i} has shape {a.shape}, #0 has {shape}: runs over different "
                             "videos or classes cannot be fused")
    return (sum(w * a for w, a in zip(weights, arrays)) / sum(weights)).astype(np.float32)


def fuse_results(sources: Sequence, weights: Sequence[float] | None = None, out_dir: str | os.PathLike | None = None,
                 labels: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 top_confused: int = 5) -> dict:
    """Late-fuse evaluation runs (folders written by :func:`evaluate`) and score the fusion.

    The runs must cover the same videos in the same order (checked against their ``meta.json``);
    labels come from there unless given. With ``out_dir`` the fused scores, meta, results and
    confusion picture are written there."""
    loaded = [load_scores(s) for s in sources]
    metas = [m for _, m in loaded]
    ref = next((m for m in metas if m is not None), None)
    for i, m in enumerate(metas):
        if m is not None and ref is not None and m.get("frame_dirs") != ref.get("frame_dirs"):
            raise ValueError(f"run #{i} ({sources[i]}) covers other videos (or another order) than run #0: "
                             "fuse runs of the same split")
    if labels is None:
        if ref is None:
            raise ValueError("no labels: give labels=..., or evaluation folders (with meta.json)")
        labels = ref["labels"]
    class_names = class_names if class_names is not None else (ref or {}).get("class_names")
    fused = late_fusion([s for s, _ in loaded], weights)
    labels = np.asarray(labels, dtype=np.int64)
    result: dict[str, Any] = {"fused": [os.fspath(s) if not isinstance(s, np.ndarray) else "<array>" for s in sources],
                              "weights": list(weights) if weights is not None else [1.0] * len(sources)}
    result.update(compute_metrics(fused, labels))
    cm = confusion_matrix(_ranking(fused)[:, 0], labels, fused.shape[1])
    result["confused_pairs"] = most_confused_pairs(cm, top_confused, class_names)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = dict(ref or {}, labels=labels.tolist(), fused_from=result["fused"], weights=result["weights"])
        _write_outputs(out, fused, meta, cm, class_names, result)
    return result


# ---------------------------------------------------------------------------------------------
# Confusion picture

_PAD = 4
_LABEL_GAP = 4
_MAX_LABEL_CHARS = 28


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _labels(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    return [n if len(n) <= _MAX_LABEL_CHARS else n[:_MAX_LABEL_CHARS - 1] + "…" for n in class_names]


def confusion_layout(num_classes: int, class_names: Sequence[str] | None = None) -> dict:
    """Geometry of :func:`confusion_image`: ``cell`` (pixels per class), ``left`` / ``top``
    (label margins; 0 when the cells are too small for text), ``size`` (width, height)."""
    cell = max(2, min(28, 896 // max(num_classes, 1)))
    left = top = 0
    if cell >= 10:
        font = _font()
        widths = [font.getbbox(text)[2] for text in _labels(num_classes, class_names)]
        left = top = max(widths, default=0) + _LABEL_GAP
    side = num_classes * cell
    return {"cell": cell, "left": left, "top": top, "size": (left + side + 2 * _PAD, top + side + 2 * _PAD)}


def confusion_image(confusion: np.ndarray, class_names: Sequence[str] | None = None):
    """The confusion matrix as a picture: row i (true class) x column j (predicted), each cell
    shaded by the fraction of class i's videos predicted as j (white 0 .. dark blue 1), class
    names (or indices) along both axes when the cells are big enough for text."""
    from PIL import Image, ImageDraw

    cm = np.asarray(confusion, dtype=np.float64)
    n = cm.shape[0]
    lay = confusion_layout(n, class_names)
    cell, left, top = lay["cell"], lay["left"], lay["top"]
    image = Image.new("RGB", lay["size"], "white")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    low, high = np.array([255, 255, 255], float), np.array([8, 48, 107], float)
    rgb = (low + frac[..., None] * (high - low)).round().astype(np.uint8)        # [n, n, 3]
    grid = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    image.paste(Image.fromarray(grid, "RGB"), (left + _PAD, top + _PAD))
    if left:
        font = _font()
        draw = ImageDraw.Draw(image)
        labels = _labels(n, class_names)
        for i, text in enumerate(labels):  # row labels end where the matrix begins
            width = font.getbbox(text)[2]
            draw.text((left + _PAD - _LABEL_GAP - width, top + _PAD + i * cell + cell // 2), text, fill="black",
                      font=font, anchor="lm")
        # column labels: drawn left to right on a strip, turned a quarter counter-clockwise so that
        # they read upwards from the matrix
        strip = Image.new("RGB", (top, n * cell), "white")
        sdraw = ImageDraw.Draw(strip)
        for j, text in enumerate(labels):
            sdraw.text((_LABEL_GAP, j * cell + cell // 2), text, fill="black", font=font, anchor="lm")
        image.paste(strip.rotate(90, expand=True), (left + _PAD, _PAD))
    return image


def save_confusion_png(path: str | os.PathLike, confusion: np.ndarray, class_names: Sequence[str] | None = None) -> tuple[int, int]:
    """Write :func:`confusion_image` as a PNG (atomically); returns its (width, height)."""
    image = confusion_image(confusion, class_names)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
    return image.size


# ---------------------------------------------------------------------------------------------
# Evaluation runs


def _json_bytes(obj: Any) -> bytes:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.generic):
            return o.item()
        return o
    return (json.dumps(clean(obj), indent=1) + "\n").encode("utf-8")


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _write_outputs(out: Path, scores: np.ndarray, meta: dict, cm: np.ndarray, class_names, result: dict) -> None:
    _save_npy(out / "scores.npy", scores.astype(np.float32))
    atomic_write(out / "meta.json", lambda f: f.write(_json_bytes(meta)))
    size = save_confusion_png(out / "confusion.png", cm, class_names)
    result["files"] = {"scores": str(out / "scores.npy"), "meta": str(out / "meta.json"),
                       "confusion_png": str(out / "confusion.png"), "results": str(out / "results.json")}
    result["confusion_png_size"] = list(size)
    result["out_dir"] = str(out)
    atomic_write(out / "results.json", lambda f: f.write(_json_bytes(result)))


def _pick_device(device) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA is not available: running on the CPU instead")
        return torch.device("cpu")
    return device


def evaluate(config, checkpoint: str | os.PathLike, split: str | None = None, num_clips: int | None = None,
             flip: bool | None = None, out_dir: str | os.PathLike | None = None, *, batch_size: int | None = None,
             device=None, workers: int | None = None, drop_probs: Sequence[float] | None = None, drop_seed: int = 0,
             trusted: bool = False, progress: bool = True, top_confused: int = 5,
             options: Mapping[str, Any] | None = None) -> dict:
    """Test a checkpoint on a split of the config's test data (see the module docstring).

    ``config``: a :class:`~posestream.train.config.TrainConfig`, a config file or a shipped
    config's name. ``split`` defaults to the config's ``data.test`` split; ``num_clips`` and
    ``flip`` to its test pipeline (PYSKL's configs: 10 clips, flipped). ``drop_probs`` runs the
    robustness test at those probabilities (:data:`TABLE7_DROP_PROBS` for the paper's). Results
    and per-video scores go to ``out_dir`` (default: ``eval_<checkpoint>_<split>_<n>clip[_flip]``
    beside the checkpoint). Returns the results dict (also ``results.json``)."""
    from posestream.train.checkpoints import load_model
    from posestream.train.config import TrainConfig, load_config
    from posestream.train.data.clips import load_dataset
    from posestream.train.trainer import ClipDataset

    cfg = config if isinstance(config, TrainConfig) else load_config(config, options)
    model, card = load_model(checkpoint)
    ckpt_name = os.fspath(checkpoint)
    for name, want, got in (("heatmap", cfg.heatmap, card.heatmap), ("limbs", cfg.limbs, card.limbs),
                            ("in_channels", cfg.in_channels, card.in_channels),
                            ("num_classes", cfg.num_classes, card.num_classes)):
        if want != got:
            raise ValueError(f"{ckpt_name}: the checkpoint has {name}={got!r} but {cfg.source} has {name}={want!r}")
    for name, want, got in (("arch", cfg.arch, card.arch), ("clip_len", cfg.clip_len, card.clip_len),
                            ("sigma", cfg.sigma, card.sigma)):
        if want != got:
            log.warning("%s: the checkpoint has %s=%r, %s has %r; testing with the config's pipeline",
                        ckpt_name, name, got, cfg.source, want)
    device = _pick_device(device)
    model.to(device)

    split = split or cfg.test.split
    num_clips = cfg.num_clips if num_clips is None else int(num_clips)
    flip = cfg.flip_test if flip is None else bool(flip)
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    dataset = load_dataset(cfg.test.ann_file, trusted=trusted)
    clips = dataset.clips(split) if split is not None else dataset.annotations
    if not clips:
        raise ValueError(f"{cfg.test.ann_file}: split {split!r} has no clips")
    labels = np.array([int(c["label"]) for c in clips], dtype=np.int64)
    if labels.max() >= cfg.num_classes:
        raise ValueError(f"{cfg.test.ann_file}: label {labels.max()} is out of range for the model's "
                         f"{cfg.num_classes} classes")
    class_names = card.class_names or (list(cfg.class_names) if cfg.class_names else None)
    pipeline = cfg.pipeline("test", num_clips=num_clips, flip=flip)
    batch = batch_size or cfg.test_batch_size
    n_workers = cfg.workers if workers is None else workers
    views = num_clips * (2 if flip else 1)
    protocol = f"{num_clips} clip{'s' if num_clips > 1 else ''}{' + flip' if flip else ''}"
    log.info("testing %s on %s split %r: %d videos, %s (%d volumes each), average_clips=%s",
             ckpt_name, cfg.test.ann_file, split, len(clips), protocol, views, cfg.average_clips)

    def run(transform=None, desc="test"):
        ds = ClipDataset(clips, pipeline, transform=transform)
        return predict(model, ds, batch_size=batch, device=device, workers=n_workers,
                       average_clips=cfg.average_clips, progress=progress, desc=desc)

    scores = run()
    cm = confusion_matrix(_ranking(scores)[:, 0], labels, cfg.num_classes)
    result: dict[str, Any] = {
        "config": cfg.source, "checkpoint": ckpt_name, "ann_file": cfg.test.ann_file, "split": split,
        "num_clips": num_clips, "flip": flip, "average_clips": cfg.average_clips, "arch": card.arch,
        "heatmap": card.heatmap, "limbs": card.limbs,
    }
    result.update(compute_metrics(scores, labels))
    result["confused_pairs"] = most_confused_pairs(cm, top_confused, class_names)

    if out_dir is None:
        stem = Path(ckpt_name).stem
        out_dir = Path(ckpt_name).parent / f"eval_{stem}_{split or 'all'}_{num_clips}clip{'_flip' if flip else ''}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if drop_probs:
        rows = []
        for p in drop_probs:
            p = float(p)
            if not 0 <= p <= 1:
                raise ValueError(f"drop probabilities must lie in [0, 1], got {p}")
            dropped = scores if p == 0 else run(_Dropped(p, drop_seed), desc=f"drop p={p:g}")
            if p:
                _save_npy(out / f"scores_drop_{p:g}.npy", dropped)
            rows.append({"p": p, **compute_metrics(dropped, labels)})
        result["robustness"] = {"keypoints": list(LIMB_KEYPOINTS), "seed": drop_seed, "mode": "remove",
                                "rows": rows}

    meta = {"frame_dirs": [str(c["frame_dir"]) for c in clips], "labels": labels.tolist(), "split": split,
            "ann_file": cfg.test.ann_file, "config": cfg.source, "checkpoint": ckpt_name, "num_clips": num_clips,
            "flip": flip, "average_clips": cfg.average_clips, "class_names": class_names}
    _write_outputs(out, scores, meta, cm, class_names, result)
    return result


def _pct(x) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:5.1f}"


def format_results(result: Mapping) -> str:
    """A printable summary of an :func:`evaluate` / :func:`fuse_results` result: accuracies,
    the most confused pairs (Table 18 style) and the robustness table (Table 7 style)."""
    lines = []
    what = result.get("checkpoint") or " + ".join(map(str, result.get("fused", [])))
    if "split" in result:
        proto = f"{result['num_clips']} clip{'s' if result['num_clips'] > 1 else ''}" + (" + flip" if result.get("flip") else "")
        lines.append(f"{what}  split {result['split']!r}  {result['videos']} videos  {proto}  "
                     f"(average_clips={result.get('average_clips')})")
    else:
        lines.append(f"late fusion of {what}  weights {result.get('weights')}  {result['videos']} videos")
    lines.append(f"  top-1 {_pct(result['top1'])}   top-5 {_pct(result['top5'])}   "
                 f"mean class {_pct(result['mean_class_accuracy'])}")
    pairs = result.get("confused_pairs") or []
    if pairs:
        lines.append("  most confused pairs (n_ij + n_ji):")
        width = max(len(str(p.get("name_a", p["class_a"]))) for p in pairs)
        for p in pairs:
            a, b = p.get("name_a", p["class_a"]), p.get("name_b", p["class_b"])
            lines.append(f"    {str(a):<{width}}  <->  {b}   {p['score']}  ({p['a_as_b']} + {p['b_as_a']})")
    rob = result.get("robustness")
    if rob:
        rows = rob["rows"]
        lines.append("  robustness: one limb keypoint dropped per person and frame with probability p")
        lines.append("    p          " + "".join(f"{r['p']:>8.3g}" for r in rows))
        lines.append("    top-1      " + "".join(f"{_pct(r['top1']):>8}" for r in rows))
        lines.append("    mean class " + "".join(f"{_pct(r['mean_class_accuracy']):>8}" for r in rows))
    if result.get("out_dir"):
        lines.append(f"  results in {result['out_dir']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# `posestream test` (the command line options are defined in posestream.cli)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessOptions:
    """The settings ``posestream train`` and ``posestream test`` share (keyword-only)."""

    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  #: dotted config overrides
    device: str | None = None
    workers: int | None = None
    threads: int | None = None             #: torch CPU threads (None: torch's default)
    trusted: bool = False                  #: the unrestricted unpickler
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class EvalOptions(ProcessOptions):
    """What ``posestream test`` runs: :func:`evaluate`'s arguments plus the process settings."""

    config: str | os.PathLike              #: a config file or a shipped config's name
    checkpoint: str | os.PathLike
    split: str | None = None
    num_clips: int | None = None
    flip: bool | None = None               #: None: as the config's test pipeline
    out_dir: str | os.PathLike | None = None
    batch_size: int | None = None
    drop_probs: Sequence[float] | None = None  #: the robustness test's probabilities (None: no test)
    drop_seed: int = 0
    top_confused: int = 5


def run_test(opts: EvalOptions) -> int:
    """``posestream test``: evaluate, then print the results table."""
    from posestream.train.trainer import _console_logging

    _console_logging()
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    result = evaluate(opts.config, opts.checkpoint, split=opts.split, num_clips=opts.num_clips, flip=opts.flip,
                      out_dir=opts.out_dir, batch_size=opts.batch_size, device=opts.device, workers=opts.workers,
                      drop_probs=opts.drop_probs, drop_seed=opts.drop_seed, trusted=opts.trusted,
                      progress=opts.progress, top_confused=opts.top_confused, options=opts.options)
    print(format_results(result))
    return 0
