"""Calibrated probabilities: temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017) fitted on held-out data, the expected calibration error (ECE) before and
after, and the confidence below which the runtime shows no label.

    posestream calibrate synthetic_x3d_s_families work_dirs/.../epoch_4.pth --split val --split val_served \
        --report-split val_camera_corner --write

A model's softmax is often over-confident on data unlike its training data; a single
temperature ``T`` (``softmax(logits / T)``) keeps the ranking (top-1 is unchanged) and makes the
top probability mean what it says on the fitting data. The runtime divides the logits by the
card's ``extra["temperature"]`` (1 when absent) and shows no label for a track whose smoothed
top probability is below ``extra["min_confidence"]``: the confidence at which, on the fitting
data, the labels it does show are right at least ``target_precision`` of the time (default
90 %), so that "not sure" replaces most wrong labels.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["softmax", "nll", "fit_temperature", "expected_calibration_error", "confidence_threshold",
           "collect_logits", "calibrate"]

#: ECE bins (equal width over the top probability), as Guo et al.
ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    p = softmax(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The ``T`` in ``[low, high]`` minimising :func:`nll` (golden-section search on log T;
    the NLL is convex in 1 / T)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ValueError(f"need logits [N, C] and N labels, got {logits.shape} and {labels.shape}")
    a, b = math.log(low), math.log(high)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean over equal-width confidence bins of |accuracy - confidence|, weighted by
    the share of samples in each bin (confidence = the top probability)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def confidence_threshold(probs: np.ndarray, labels: np.ndarray, target_precision: float = 0.9) -> float:
    """The lowest confidence ``c`` such that the samples with top probability ``>= c`` are
    right at least ``target_precision`` of the time (0 when all of them already are)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target_precision)
    if not ok.size:
        return 1.0
    # the largest prefix (lowest confidence) that still reaches the target
    return float(conf[order][ok[-1]]) if ok[-1] < len(order) - 1 else 0.0


def collect_logits(config, checkpoint: str | os.PathLike, split: str, *, trusted: bool = False,
                   progress: bool = True, options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 1-clip, unflipped logits ``[N, C]`` (the runtime's protocol: one window, one volume)
    and labels of a split of the config's test data."""
    from posestream.train.checkpoints import load_model
    from posestream.train.config import TrainConfig, load_config
    from posestream.train.data.clips import load_dataset
    from posestream.train.evaluate import predict
    from posestream.train.trainer import ClipDataset

    cfg = config if isinstance(config, TrainConfig) else load_config(config, options)
    model, _ = load_model(checkpoint)
    clips = load_dataset(cfg.test.ann_file, trusted=trusted).clips(split)
    if not clips:
        raise ValueError(f"{cfg.test.ann_file}: split {split!r} has no clips")
    pipeline = cfg.pipeline("test", num_clips=1, flip=False)
    logits = predict(model, ClipDataset(clips, pipeline), batch_size=cfg.test_batch_size, workers=cfg.workers,
                     average_clips="score", progress=progress, desc=f"logits {split}")
    return logits, np.array([int(c["label"]) for c in clips], dtype=np.int64)


def calibrate(config, checkpoint: str | os.PathLike, fit_splits: Sequence[str], report_splits: Sequence[str] = (),
              *, target_precision: float = 0.9, write: bool = False, trusted: bool = False,
              progress: bool = True) -> dict:
    """Fit the temperature on ``fit_splits`` (pooled), report NLL, ECE and accuracy before and
    after on every split, and the confidence threshold; with ``write``, store ``temperature``,
    ``min_confidence`` and the report in the checkpoint's card (``extra``), atomically."""
    from posestream.train.checkpoints import load_checkpoint, save_checkpoint

    per_split = {s: collect_logits(config, checkpoint, s, trusted=trusted, progress=progress)
                 for s in dict.fromkeys([*fit_splits, *report_splits])}
    fit_logits = np.concatenate([per_split[s][0] for s in fit_splits])
    fit_labels = np.concatenate([per_split[s][1] for s in fit_splits])
    temperature = fit_temperature(fit_logits, fit_labels)
    threshold = confidence_threshold(softmax(fit_logits, temperature), fit_labels, target_precision)
    report: dict[str, Any] = {"temperature": round(temperature, 4), "min_confidence": round(threshold, 4),
                              "target_precision": target_precision, "fit_splits": list(fit_splits), "splits": {}}
    for name, (logits, labels) in per_split.items():
        before, after = softmax(logits), softmax(logits, temperature)
        shown = after.max(axis=1) >= threshold
        report["splits"][name] = {
            "videos": int(len(labels)), "top1": float((after.argmax(1) == labels).mean()),
            "nll_before": nll(logits, labels), "nll_after": nll(logits, labels, temperature),
            "ece_before": expected_calibration_error(before, labels),
            "ece_after": expected_calibration_error(after, labels),
            "shown": float(shown.mean()),
            "shown_top1": float((after.argmax(1) == labels)[shown].mean()) if shown.any() else None,
        }
    if write:
        card, state = load_checkpoint(checkpoint)
        card.extra = {**card.extra, "temperature": report["temperature"], "min_confidence": report["min_confidence"],
                      "calibration": report}
        save_checkpoint(checkpoint, card, state)
        log.info("%s: temperature %.3f and min_confidence %.3f written to the card", checkpoint, temperature, threshold)
    return report
