"""Training data as the runtime serves it, and the families dataset of the shipped models.

The runtime does not classify whole clips: a busy pipeline processes only some of a camera's
frames (it always takes the latest one, so gaps come irregularly), and every ``stride``
processed frames it classifies the last ``window_s`` seconds of a track, from its first to its
last observed frame there. A window may begin in the middle of one action and end in another.
:func:`served_window` cuts such a window out of a synthetic clip (the same
:func:`posestream.engines.crop.window_span` the runtime uses) and labels it from the clip's
timeline with :func:`posestream.actions.window_label` (None: too mixed to say, left out).

:func:`generate_families_dataset` builds the shipped models' dataset: clips of every body,
motion style, camera and fall family of :mod:`.synthetic`, a share of the training samples
replaced by served windows, held-out subjects (``val``, ``val_served``), and whole families
kept out of training (:data:`DEFAULT_HOLDOUT`), each with its own validation splits
(``val_<key>_<value>`` and ``..._served``). Every clip depends only on the seed and its place,
so any number of worker processes gives the same arrays, and
:func:`families_validation_clips` remakes the first clips of a validation split without
making the rest.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from posestream.actions import ACTIONS, Segment, window_label
from posestream.engines.crop import (WINDOW_FLOOR_FRAMES, WINDOW_MIN_FRAMES, WINDOW_MIN_SPAN_S, window_is_enough,
                                     window_span)

#: The runtime's defaults (:class:`posestream.realtime.config.RunConfig`) a served window follows;
#: its minimum is the runtime's own (:func:`posestream.engines.crop.window_is_enough`).
WINDOW_S = 3.0
MIN_FRAMES = WINDOW_MIN_FRAMES

#: Families kept out of training: a ceiling-corner camera, large bodies, shuffling walkers and
#: falls from a push. Each gets its own validation splits.
DEFAULT_HOLDOUT = {"camera": "corner", "body": "large", "style": "shuffle", "fall": "push"}

_BODY_WEIGHTS = {"child": 0.15, "adult": 0.7, "large": 0.15}
_STYLE_WEIGHTS = {"shuffle": 0.2, "typical": 0.6, "brisk": 0.2}


def processed_frames(rng: np.random.Generator, num_frames: int, camera_fps: float, rate: float) -> np.ndarray:
    """Indices of the frames of a ``camera_fps`` camera that a pipeline managing ``rate``
    frames a second processes: each frame takes ``1 / rate`` seconds give or take 25 %,
    now and then a stall (0.2-0.6 s, 1 % of frames), and the next frame is always the latest
    one captured (the runtime's latest-frame slot). All frames when ``rate`` keeps up."""
    if rate >= camera_fps:
        return np.arange(num_frames)
    picked, now = [0], 0.0
    while True:
        now += (1.0 / rate) * float(rng.uniform(0.75, 1.25))
        if rng.random() < 0.01:
            now += float(rng.uniform(0.2, 0.6))
        frame = int(math.floor(now * camera_fps + 1e-9))
        if frame >= num_frames:
            break
        if frame > picked[-1]:
            picked.append(frame)
    return np.asarray(picked)


def served_window(clip: dict, rng: np.random.Generator, rate: float | None = None, now: float | None = None,
                  window_s: float = WINDOW_S, min_frames: int = MIN_FRAMES, floor_frames: int = WINDOW_FLOOR_FRAMES,
                  min_span_s: float = WINDOW_MIN_SPAN_S) -> dict | None:
    """The actor's window of ``clip`` as the runtime would classify it: the frames processed at
    ``rate`` frames/s (default drawn: the camera's own rate 35 % of the time, else 3 fps to
    it), the last ``window_s`` seconds before the processed frame at or before ``now``
    (default drawn among the processed frames whose window the runtime would classify), first
    to last observed frame. A clip dict (one person) labelled from the clip's timeline, with
    ``served``: ``t0``/``t1`` (capture times of its first and last frame), ``now``, ``rate``;
    None when the observed frames are not enough for the runtime
    (:func:`~posestream.engines.crop.window_is_enough` with ``min_frames``, ``floor_frames``,
    ``min_span_s``) or the window is too mixed to name."""
    fps = float(clip["fps"])
    n = int(clip["total_frames"])
    if rate is None:
        rate = fps if rng.random() < 0.35 else float(rng.uniform(3.0, fps)) if fps > 3.0 else fps
    picked = processed_frames(rng, n, fps, rate)
    t = picked / fps
    actor = int(clip.get("actor", 0))
    observed = np.asarray(clip["keypoint_score"])[actor, picked].max(axis=-1) > 0
    def span(end: int) -> tuple[int, int, int, bool]:
        lo, hi, seen = window_span(t[:end + 1], observed[:end + 1], t[end] - window_s, t[end])
        enough = seen > 0 and window_is_enough(seen, float(t[hi - 1] - t[lo]), min_frames, floor_frames, min_span_s)
        return lo, hi, seen, enough

    if now is None:
        floor = max(1, min(floor_frames, min_frames))
        ready = [int(e) for e in np.flatnonzero(np.cumsum(observed) >= floor) if span(int(e))[3]]
        if not ready:
            return None
        end = ready[int(rng.integers(len(ready)))]
    else:
        end = int(np.searchsorted(t, now + 1e-9, side="right")) - 1
        if end < 0:
            return None
    lo, hi, seen, enough = span(end)
    if not enough:
        return None
    t0, t1 = float(t[lo]), float(t[hi - 1])
    label = window_label([Segment(*seg) for seg in clip["timeline"]], t0, t1 + 1.0 / fps)
    if label is None or label not in clip["class_names"]:
        return None
    frames = picked[lo:hi]
    out = {k: v for k, v in clip.items() if k not in ("debug", "action_frames")}
    out.update(keypoint=np.ascontiguousarray(clip["keypoint"][actor:actor + 1, frames]),
               keypoint_score=np.ascontiguousarray(clip["keypoint_score"][actor:actor + 1, frames]),
               total_frames=int(len(frames)), action=label, label=int(clip["class_names"].index(label)),
               actor=0, fps=float(min(rate, fps)),
               served={"t0": round(t0, 4), "t1": round(t1, 4), "now": round(float(t[end]), 4),
                       "rate": round(float(min(rate, fps)), 3), "observed": int(seen)})
    return out


def _families(holdout: dict[str, str] | None) -> dict[str, str]:
    from posestream.train.data import ragdoll
    from posestream.train.data import synthetic as syn

    holdout = dict(DEFAULT_HOLDOUT if holdout is None else holdout)
    known = {"camera": syn.CAMERA_KINDS, "body": syn.BODY_FAMILIES, "style": syn.STYLE_FAMILIES,
             "fall": syn.FALL_FAMILIES}
    for key, value in holdout.items():
        if key not in known:
            raise ValueError(f"unknown family {key!r} in the holdout; known: {', '.join(known)}")
        if value not in known[key]:
            raise ValueError(f"unknown {key} family {value!r} in the holdout; known: {', '.join(known[key])}")
    if holdout.get("fall", "kinematic") != "kinematic" and not ragdoll.available():
        raise ValueError(f"holding out the {holdout['fall']!r} falls needs MuJoCo and dm-control "
                         '(pip install "posestream[synth]" && pip install --no-deps dm-control==1.0.50)')
    return holdout


class _Recipe:
    """Which clip sits where in a families dataset; every draw seeded by the clip's place."""

    def __init__(self, seed: int, holdout: dict[str, str], classes: Sequence[str], val_fraction: float,
                 served_share: float):
        from posestream.train.data import synthetic as syn

        self.seed, self.holdout, self.classes = seed, holdout, tuple(classes)
        self.served_share = served_share
        # every m-th subject (0, m, 2m, ...) is a validation subject, whatever the clip count
        self.val_every = 0 if val_fraction <= 0 else max(2, int(round(1.0 / val_fraction)))
        self.allowed = {
            "camera": tuple(k for k in syn.CAMERA_KINDS if k != holdout.get("camera")),
            "body": tuple(k for k in syn.BODY_FAMILIES if k != holdout.get("body")),
            "style": tuple(k for k in syn.STYLE_FAMILIES if k != holdout.get("style")),
            "fall": tuple(k for k in syn.FALL_FAMILIES if k != holdout.get("fall")),
        }

    def is_val_subject(self, s: int) -> bool:
        return self.val_every > 0 and s % self.val_every == 0

    def subject(self, rng_key: list[int], subject_id: str, **fixed):
        from posestream.train.data import synthetic as syn

        pick = np.random.default_rng(rng_key + [0])
        body = fixed.get("body") or _weighted(pick, self.allowed["body"], _BODY_WEIGHTS)
        style = fixed.get("style") or _weighted(pick, self.allowed["style"], _STYLE_WEIGHTS)
        return syn.sample_subject(np.random.default_rng(rng_key), subject_id, body_family=body, style_family=style)

    def make(self, job: tuple) -> list[tuple[str, dict]]:
        """The samples of one job: ``("main", i)`` or ``("hold", h, j)``, as (split, clip)."""
        from posestream.train.data import synthetic as syn

        k, seed = len(self.classes), self.seed
        if job[0] == "main":
            i = job[1]
            s = i // k
            subject = self.subject([seed, 1, s], f"S{s:04d}")
            action = self.classes[i % k]
            clip = syn.generate_clip(action, np.random.default_rng([seed, 2, i]), subject=subject, classes=self.classes,
                                     bystander=0.25, camera_kinds=self.allowed["camera"],
                                     fall_families=self.allowed["fall"],
                                     frame_dir=f"fam{seed}_{i:06d}_{subject.id}_{action}")
            if self.is_val_subject(s):
                out = [("val", clip)]
                window = served_window(clip, np.random.default_rng([seed, 4, i]))
                if window is not None:
                    window["frame_dir"] = clip["frame_dir"] + "_served"
                    out.append(("val_served", window))
                return out
            rng = np.random.default_rng([seed, 5, i])
            if rng.random() < self.served_share:
                window = served_window(clip, rng)
                if window is not None:
                    window["frame_dir"] = clip["frame_dir"] + "_served"
                    return [("train", window)]
            return [("train", clip)]
        h, j = job[1], job[2]
        key, value = list(self.holdout.items())[h]
        name = f"val_{key}_{value}"
        s = j // k
        subject = self.subject([seed, 20 + h, s], f"H{h}{s:04d}", **({key: value} if key in ("body", "style") else {}))
        if key == "fall":
            action = ("falling", "lying")[j % 2]
        else:
            action = self.classes[j % k]
        clip = syn.generate_clip(
            action, np.random.default_rng([seed, 10 + h, j]), subject=subject, classes=self.classes, bystander=0.25,
            camera_kinds=(value,) if key == "camera" else self.allowed["camera"],
            fall_families=(value,) if key == "fall" else self.allowed["fall"],
            variant=f"fallen-{value}" if key == "fall" and action == "lying" else None,
            frame_dir=f"fam{seed}_{name}_{j:05d}_{subject.id}_{action}")
        out = [(name, clip)]
        window = served_window(clip, np.random.default_rng([seed, 30 + h, j]))
        if window is not None:
            window["frame_dir"] = clip["frame_dir"] + "_served"
            out.append((name + "_served", window))
        return out


def _weighted(rng: np.random.Generator, names: Sequence[str], weights: dict[str, float]) -> str:
    p = np.array([weights[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


_WORKER_RECIPE: _Recipe | None = None


def _init_worker(recipe: _Recipe) -> None:
    global _WORKER_RECIPE
    _WORKER_RECIPE = recipe


def _run_job(job: tuple) -> list[tuple[str, dict]]:
    return _WORKER_RECIPE.make(job)


def _results(recipe: _Recipe, jobs: list[tuple], workers: int, progress: bool) -> Iterator[list[tuple[str, dict]]]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="families clips", unit="clip")
    try:
        if workers <= 1:
            for job in jobs:
                yield recipe.make(job)
                if bar is not None:
                    bar.update(1)
            return
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(recipe,)) as pool:
            for result in pool.imap(_run_job, jobs, chunksize=8):  # in job order: the same dataset
                yield result
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def generate_families_dataset(num_clips: int, seed: int = 0, holdout: dict[str, str] | None = None,
                              served_share: float = 0.6, val_fraction: float = 0.1, holdout_clips: int = 240,
                              classes: Sequence[str] = ACTIONS, progress: bool = True, workers: int = 1) -> dict:
    """The families dataset (see the module docstring): ``num_clips`` clips, classes balanced
    (clip i is class ``i % len(classes)``, subject ``i // len(classes)``), every
    ``round(1 / val_fraction)``-th subject held out (``val``, and its served windows in
    ``val_served``), ``served_share`` of the training clips replaced by a served window of
    themselves, and ``holdout_clips`` clips for each held-out family (``holdout``: family ->
    value, default :data:`DEFAULT_HOLDOUT`; ``{}`` for none), performed by subjects of their
    own. ``workers`` processes make the clips; the result does not depend on it."""
    if not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
        raise ValueError(f"num_clips must be a positive int, got {num_clips!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= served_share <= 1.0:
        raise ValueError(f"served_share must be in [0, 1], got {served_share}")
    if holdout_clips < 0:
        raise ValueError(f"holdout_clips must be at least 0, got {holdout_clips}")
    unknown = [c for c in classes if c not in ACTIONS]
    if unknown:
        raise ValueError(f"unknown action(s) {', '.join(unknown)}; known: {', '.join(ACTIONS)}")
    holdout = _families(holdout)
    if holdout.get("fall") and not {"falling", "lying"} <= set(classes):
        raise ValueError("holding out a fall family needs the classes falling and lying")
    recipe = _Recipe(seed, holdout, classes, val_fraction, served_share)
    jobs = [("main", i) for i in range(num_clips)]
    jobs += [("hold", h, j) for h in range(len(holdout)) for j in range(holdout_clips)]
    split: dict[str, list[str]] = {"train": [], "val": [], "val_served": []}
    for key, value in holdout.items():
        split[f"val_{key}_{value}"], split[f"val_{key}_{value}_served"] = [], []
    annotations = []
    for samples in _results(recipe, jobs, workers, progress):
        for name, clip in samples:
            split[name].append(clip["frame_dir"])
            annotations.append(clip)
    return {"split": split, "annotations": annotations, "class_names": tuple(classes)}


def families_validation_clips(split: str, count: int, seed: int = 0, holdout: dict[str, str] | None = None,
                              val_fraction: float = 0.1, classes: Sequence[str] = ACTIONS) -> list[dict]:
    """The first ``count`` clips of a validation ``split`` of the families dataset of ``seed``
    (the same arrays as :func:`generate_families_dataset` makes), without making the others."""
    holdout = _families(holdout)
    recipe = _Recipe(seed, holdout, classes, val_fraction, served_share=0.0)
    names = {"val": None, "val_served": None}
    for h, (key, value) in enumerate(holdout.items()):
        names[f"val_{key}_{value}"] = names[f"val_{key}_{value}_served"] = h
    if split not in names:
        raise ValueError(f"unknown validation split {split!r}; known: {', '.join(names)}")
    if names[split] is None and not recipe.val_every:
        raise ValueError("val_fraction 0 holds out no subject")
    out: list[dict] = []
    index = 0
    k = len(classes)
    while len(out) < count:
        if names[split] is None:
            if not recipe.is_val_subject(index // k):
                index = (index // k + 1) * k  # the next subject's first clip
                continue
            job = ("main", index)
        else:
            job = ("hold", names[split], index)
        out += [clip for name, clip in recipe.make(job) if name == split]
        index += 1
    return out[:count]
