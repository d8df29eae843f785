"""Training PoseConv3D models on skeleton pickles with PYSKL's recipe.

    from posestream.train.trainer import train
    metrics = train("ntu60_xsub_joint")                 # a shipped config, or any PYSKL config file
    metrics = train(cfg, work_dir="runs/a", resume=True)

The recipe is the config's, with PYSKL's defaults: SGD (momentum 0.9, weight decay 3e-4), the
learning rate annealed to 0 by a cosine over *iterations*, gradients clipped to norm 40, the
batch size and epochs of the config, an epoch being ``RepeatDataset.times`` passes over the
training split. The learning rate is used as written: PYSKL's 0.4 is for 8 GPUs x 32 videos;
scale it with the total batch size (PYSKL's own advice).

Work dir (only rank 0 writes; every file is written atomically):

- ``epoch_<n>.pth`` after every ``checkpoint_config.interval`` epochs, ``best.pth`` whenever the
  validation metric (top-1 unless ``evaluation.save_best`` says otherwise) improves: posestream
  checkpoints (weights + model card: arch, classes, heatmap kind and limb order, clip_len, size);
- ``latest.pth``: the same plus the training state (optimizer, step, epoch, RNG states, best so
  far), rewritten after every epoch and when training stops early; ``resume=True`` continues
  from it exactly: the same batches, augmentations, dropout masks and learning rates as an
  uninterrupted run;
- ``scalars.jsonl`` (loss, lr, validation accuracies; one JSON object per line) and, when the
  ``tensorboard`` package is installed, TensorBoard event files in ``tb/``;
- ``train.log`` and ``config.py`` (a copy of the config).

Ctrl-C: the first one lets the current step finish, writes ``latest.pth`` and raises
``KeyboardInterrupt``; a second one aborts at once (``latest.pth`` is then the last one saved,
never a half-written file).

Randomness: the sampler shuffles each epoch from (seed, epoch); every training sample's
augmentations are drawn from a generator seeded by (seed, epoch, position in the epoch), so they
do not depend on the number of loader workers or on which worker loads the sample, and no two
workers repeat each other. Dropout draws from torch's generator, whose state ``latest.pth``
keeps.

Distributed: launched by ``torchrun --nproc_per_node N`` (environment ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), the same call trains with DistributedDataParallel (NCCL on GPUs, gloo on CPUs),
each process taking every N-th sample of the epoch's order with ``videos_per_gpu`` per batch.
A process group that is already initialised is used as it is. Mixed precision (autocast +
GradScaler) is used on CUDA only.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from posestream.files import atomic_write
from posestream.train.checkpoints import FORMAT, VERSION, ModelCard, load_checkpoint, save_checkpoint
from posestream.train.config import ConfigError, TrainConfig, load_config
from posestream.train.evaluate import ProcessOptions, compute_metrics, predict, worker_context, worker_init

__all__ = ["train", "ClipDataset", "EpochSampler", "lr_at", "load_training_state", "run_train", "TrainOptions"]

log = logging.getLogger("posestream.train")

LATEST = "latest.pth"
BEST = "best.pth"


# ---------------------------------------------------------------------------------------------
# Data


class ClipDataset(Dataset):
    """Clip dicts through a transform pipeline: item -> ``(volumes [views, K, T, H, W] float32,
    label)``.

    An item key is a clip index, or ``(clip index, epoch, position)`` as :class:`EpochSampler`
    yields them: then, when ``seed`` is given, the pipeline's random steps are reseeded from
    ``(seed, epoch, position)`` first, so a sample's augmentations are fixed by where it falls in
    the epoch. ``transform(clip, index) -> clip`` runs before the pipeline (the robustness
    test's keypoint dropping)."""

    def __init__(self, clips: Sequence[Mapping], pipeline, seed: int | None = None,
                 transform: Callable[[Mapping, int], Mapping] | None = None):
        self.clips = clips
        self.pipeline = pipeline
        self.seed = seed
        self.transform = transform

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, epoch, position = key
            if self.seed is not None:
                self.pipeline.reseed(np.random.SeedSequence([self.seed, epoch, position]))
        else:
            index = key
        clip = self.clips[index]
        if self.transform is not None:
            clip = self.transform(clip, index)
        volumes = np.asarray(self.pipeline(clip)["imgs"], dtype=np.float32)
        if volumes.ndim == 4:
            volumes = volumes[None]
        return torch.from_numpy(volumes), int(clip["label"])


class EpochSampler(Sampler):
    """The training order: every epoch a fresh permutation (from ``seed`` and the epoch) of
    ``times`` copies of the dataset (PYSKL's RepeatDataset), or, with ``class_prob``, PYSKL's
    class-specific resampling (class c's videos ``times * class_prob[c]`` times: whole copies,
    then a random part for the fraction). The order is padded to a multiple of ``world_size``
    by repeating its start, and process ``rank`` takes every ``world_size``-th item (as
    DistributedSampler). Yields ``(clip index, epoch, position)`` keys for :class:`ClipDataset`.
    ``set_epoch(epoch, start)`` selects the epoch and skips its first ``start`` items (resuming
    mid-epoch)."""

    def __init__(self, labels: Sequence[int], *, times: int = 1, class_prob: Mapping[int, float] | None = None,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.times = int(times)
        self.class_prob = dict(class_prob) if class_prob else None
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.start = 0
        self._total = len(self.epoch_order(0))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The full order of clip indices of an epoch (before padding and sharding)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = len(self.labels)
        if self.class_prob is None:
            order = np.tile(np.arange(n), self.times)
        else:
            parts = []
            for c in np.unique(self.labels):
                members = np.flatnonzero(self.labels == c)
                mul = self.class_prob.get(int(c), 1.0) * self.times
                parts.extend([members] * int(mul // 1))
                rest = int((mul % 1) * len(members))
                if rest:
                    parts.append(members[rng.permutation(len(members))[:rest]])
            order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if self.shuffle:
            order = order[rng.permutation(len(order))]
        return order

    @property
    def num_samples(self) -> int:
        """Items per process in a whole epoch."""
        return math.ceil(self._total / self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    def __iter__(self):
        order = self.epoch_order(self.epoch)
        total = self.num_samples * self.world_size
        if len(order) < total:
            order = np.concatenate([order, np.resize(order, total - len(order))])
        for pos in range(self.rank + self.start * self.world_size, total, self.world_size):
            yield int(order[pos]), self.epoch, pos

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def _load_split(cfg: TrainConfig, which: str, trusted: bool, cache: dict) -> list[dict]:
    from posestream.train.data.clips import load_dataset

    split = cfg.split_config(which)
    key = "data.train.dataset.ann_file" if which == "train" and split.times > 1 else f"data.{which}.ann_file"
    path = split.ann_file
    if path not in cache:
        if not Path(path).is_file():
            raise ConfigError(cfg.source, key, f"{path}: no such file (relative paths are read from the current "
                                               f"directory, {os.getcwd()})")
        cache[path] = load_dataset(path, trusted=trusted)
    dataset = cache[path]
    clips = dataset.clips(split.split) if split.split is not None else dataset.annotations
    if not clips:
        raise ConfigError(cfg.source, f"data.{which}.split", f"split {split.split!r} of {path} has no clips")
    top = max(int(c["label"]) for c in clips)
    if top >= cfg.num_classes:
        raise ConfigError(cfg.source, "model.cls_head.num_classes",
                          f"{cfg.num_classes}, but {path} split {split.split!r} has label {top}")
    return clips


# ---------------------------------------------------------------------------------------------
# Learning rate


def lr_at(lr_config: Mapping[str, Any], base_lr: float, step: int, epoch: int, iters_per_epoch: int,
          total_epochs: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based, counted over the whole run) in
    epoch ``epoch`` (0-based), as mmcv's LrUpdater hooks set it: ``CosineAnnealing`` anneals
    from ``base_lr`` to ``min_lr`` (or ``min_lr_ratio * base_lr``) over all iterations
    (``by_epoch=False``) or epochs; ``Step`` multiplies by ``gamma`` at each of ``step``
    (epochs or iterations, or every ``step`` when an int); ``Fixed`` keeps ``base_lr``; a
    ``warmup`` (linear, constant, exp) over the first ``warmup_iters`` iterations (epochs with
    ``warmup_by_epoch``) scales the result by ``warmup_ratio`` rising to 1."""
    policy = lr_config.get("policy", "Fixed")
    if lr_config.get("by_epoch", True):
        progress, max_progress = epoch, total_epochs
    else:
        progress, max_progress = step, total_epochs * iters_per_epoch
    if policy == "CosineAnnealing":
        target = base_lr * lr_config["min_lr_ratio"] if "min_lr_ratio" in lr_config else lr_config.get("min_lr", 0.0)
        factor = progress / max_progress if max_progress else 1.0
        lr = target + 0.5 * (base_lr - target) * (math.cos(math.pi * factor) + 1)
    elif policy == "Step":
        steps = lr_config["step"]
        if isinstance(steps, int):
            exponent = progress // steps
        else:
            exponent = next((i for i, s in enumerate(steps) if progress < s), len(steps))
        lr = base_lr * lr_config.get("gamma", 0.1) ** exponent
        if lr_config.get("min_lr") is not None:
            lr = max(lr, lr_config["min_lr"])
    elif policy == "Fixed":
        lr = base_lr
    else:
        raise ValueError(f"unknown lr policy {policy!r}")
    warmup = lr_config.get("warmup")
    if warmup:
        warmup_iters = lr_config["warmup_iters"] * (iters_per_epoch if lr_config.get("warmup_by_epoch") else 1)
        ratio = lr_config.get("warmup_ratio", 0.1)
        if step < warmup_iters:
            if warmup == "linear":
                lr *= 1 - (1 - step / warmup_iters) * (1 - ratio)
            elif warmup == "constant":
                lr *= ratio
            else:  # exp
                lr *= ratio ** (1 - step / warmup_iters)
    return lr


# ---------------------------------------------------------------------------------------------
# Scalars: scalars.jsonl always, TensorBoard when installed


class _Scalars:
    def __init__(self, work_dir: Path, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = work_dir / "scalars.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = []  # drop what a killed run logged after the state we resume from
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
            atomic_write(self.path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: scalars go to %s only (pip install tensorboard for "
                     "TensorBoard logs)", self.path)
        else:
            self.tb = SummaryWriter(log_dir=str(work_dir / "tb"), purge_step=resume_step)

    def add(self, tag: str, value: float, step: int) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": int(step), "tag": tag, "value": float(value), "time": round(time.time(), 3)})
                        + "\n")
        self.file.flush()
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------
# Ctrl-C


class _StopRequest:
    """While active (main thread only), the first SIGINT only sets ``requested``; the second
    raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupted: finishing this step, then saving %s (Ctrl-C again to abort at once)", LATEST)

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
        return False


# ---------------------------------------------------------------------------------------------
# Distributed


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False
    created: bool = False

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def any(self, flag: bool, device) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _setup_distributed(device_arg) -> tuple[_Dist, torch.device]:
    dist = torch.distributed
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        d = _Dist(dist.get_rank(), dist.get_world_size(), local_rank, enabled=True)
        device = _pick_device(device_arg, local_rank, d.enabled)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return d, device
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed")
        device = _pick_device(device_arg, local_rank, True)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, enabled=True, created=True), device
    return _Dist(), _pick_device(device_arg, local_rank, False)


def _pick_device(device_arg, local_rank: int, distributed: bool) -> torch.device:
    if device_arg is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
        log.info("CUDA is not available: training on the CPU")
        return torch.device("cpu")
    device = torch.device(device_arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            log.warning("CUDA was asked for but is not available: training on the CPU instead")
            return torch.device("cpu")
        if device.index is None:
            return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    return device


# ---------------------------------------------------------------------------------------------
# RNG state


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---------------------------------------------------------------------------------------------
# The training state file


def _save_latest(path: Path, card: ModelCard, state_dict: Mapping[str, torch.Tensor], train_state: dict) -> None:
    """``latest.pth``: a posestream checkpoint (``load_model`` reads it) plus ``train_state``."""
    payload = {"format": FORMAT, "version": VERSION, **card.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "train_state": train_state}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_training_state(path: str | os.PathLike) -> tuple[ModelCard, dict, dict]:
    """``(card, state_dict, train_state)`` of a ``latest.pth`` (loaded weights-only: no code runs)."""
    source = os.fspath(path)
    card, state_dict = load_checkpoint(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    train_state = payload.get("train_state")
    if not isinstance(train_state, dict):
        raise ValueError(f"{source}: a checkpoint without training state: resume from the {LATEST} of a work dir")
    return card, state_dict, train_state


# ---------------------------------------------------------------------------------------------
# Training


def train(config: TrainConfig | str | os.PathLike, work_dir: str | os.PathLike | None = None, resume: bool = False,
          seed: int | None = None, device=None, max_steps: int | None = None, progress: bool = True, *,
          trusted: bool = False, workers: int | None = None, amp: bool | None = None, validate: bool = True,
          options: Mapping[str, Any] | None = None,
          on_step: Callable[[dict], None] | None = None) -> dict:
    """Train the model a config describes (see the module docstring) and return the final
    metrics: ``epoch`` (epochs finished), ``global_step``, ``loss`` (mean over the last epoch's
    steps), ``lr``, the last validation's ``top1`` / ``top5`` / ``mean_class_accuracy``,
    ``best`` (metric, value, epoch), ``work_dir``, ``stopped_early``.

    ``config``: a :class:`~posestream.train.config.TrainConfig`, a config file or a shipped
    config's name (``options`` override its values, as ``--cfg-options``). ``work_dir``
    defaults to the config's. ``resume`` continues from ``work_dir/latest.pth`` (or the
    config's ``resume_from``). ``seed`` defaults to the config's ``seed``, else 0. ``device``
    defaults to CUDA when available. ``max_steps`` stops after that many optimizer steps of
    the whole run (counted across resumes), validates and saves ``latest.pth``: for smoke runs
    and tests. ``trusted`` unpickles the data with the unrestricted unpickler. ``workers``
    overrides ``workers_per_gpu``; ``amp`` forces mixed precision off (it is only ever on for
    CUDA); ``on_step(info)`` is called after every optimizer step."""
    cfg = config if isinstance(config, TrainConfig) else load_config(config, options)
    run = _Run(cfg)
    try:
        run.setup(work_dir, resume, seed, device, max_steps, progress, trusted, workers, amp, validate, on_step)
        return run.fit()
    finally:
        run.close()


class _Run:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.card = cfg.model_card()  # fails early if the test pipeline has no fixed volume size
        self.scalars = None
        self.log_handler = None
        self.loader = None
        self.dist = _Dist()

    def setup(self, work_dir, resume, seed, device, max_steps, progress, trusted, workers, amp, validate, on_step):
        cfg = self.cfg
        self.work_dir = Path(work_dir if work_dir is not None else cfg.work_dir)
        self.resume = resume or bool(cfg.resume_from)
        self.seed = int(seed if seed is not None else (cfg.seed if cfg.seed is not None else 0))
        self.max_steps = max_steps
        self.progress = progress
        self.trusted = trusted
        self.workers = cfg.workers if workers is None else int(workers)
        self.validate_enabled = validate
        self.on_step = on_step
        self.dist, self.device = _setup_distributed(device)  # last: close() undoes it
        self.rank0 = self.dist.rank == 0
        self.use_amp = self.device.type == "cuda" and amp is not False

    # --- setup ----------------------------------------------------------------------------------

    def _setup_files(self) -> None:
        if self.rank0:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.log_handler = logging.FileHandler(self.work_dir / "train.log", encoding="utf-8")
            self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(self.log_handler)
            if log.level == logging.NOTSET or log.level > logging.INFO:
                log.setLevel(logging.INFO)
            src = Path(self.cfg.source)
            if src.is_file():
                text = src.read_bytes()
                atomic_write(self.work_dir / "config.py", lambda f: f.write(text))
        self.dist.barrier()

    def _build(self) -> None:
        cfg = self.cfg
        cache: dict = {}
        self.train_clips = _load_split(cfg, "train", self.trusted, cache)
        self.val_clips = _load_split(cfg, "val", self.trusted, cache) if self.validate_enabled else []

        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)
        model = cfg.build_model()
        if cfg.load_from and not self.resume:
            self._load_pretrained(model, cfg.load_from)
        model.to(self.device)
        if self.dist.rank:  # other dropout masks on other processes
            torch.manual_seed(self.seed + self.dist.rank)
        self.model = model
        if self.dist.enabled:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters)
        else:
            self.ddp = model
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark

        opt = dict(cfg.optimizer)
        otype = opt.pop("type")
        self.base_lr = float(opt["lr"])
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[otype](params, **opt)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)

        labels = [int(c["label"]) for c in self.train_clips]
        self.sampler = EpochSampler(labels, times=cfg.train.times, class_prob=cfg.train.class_prob, shuffle=True,
                                    seed=self.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        self.train_set = ClipDataset(self.train_clips, cfg.pipeline("train"), seed=self.seed)
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                 drop_last=False, worker_init_fn=worker_init,
                                 multiprocessing_context=worker_context(self.workers),
                                 generator=torch.Generator().manual_seed(self.seed))
        self.iters_per_epoch = math.ceil(self.sampler.num_samples / cfg.batch_size)
        self.total_steps = self.iters_per_epoch * cfg.total_epochs
        if self.validate_enabled:
            self.val_set = ClipDataset(self.val_clips, cfg.pipeline("val"))

    def _load_pretrained(self, model, path: str) -> None:
        card, state = load_checkpoint(path)
        if card.arch != self.cfg.arch or card.in_channels != self.cfg.in_channels:
            raise ConfigError(self.cfg.source, "load_from", f"{path} is a {card.arch} model with {card.in_channels} "
                                                            f"input channels, the config trains {self.cfg.arch} with "
                                                            f"{self.cfg.in_channels}")
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(state) - set(usable))
        model.load_state_dict(usable, strict=False)
        log.info("load_from %s: %d tensors loaded, %d skipped (%s)", path, len(usable), len(skipped),
                 ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else "") if skipped else "none")

    def _resume_path(self) -> Path | None:
        if not self.resume:
            return None
        path = Path(self.cfg.resume_from) if self.cfg.resume_from else self.work_dir / LATEST
        if not path.is_file():
            if self.cfg.resume_from:
                raise ConfigError(self.cfg.source, "resume_from", f"{path}: no such file")
            log.info("nothing to resume in %s (no %s): starting a new run", self.work_dir, LATEST)
            return None
        return path

    def _restore(self, path: Path) -> None:
        card, state_dict, ts = load_training_state(path)
        for name in ("arch", "num_classes", "in_channels", "heatmap", "limbs"):
            if getattr(card, name) != getattr(self.card, name):
                raise ValueError(f"{path}: cannot resume: it has {name}={getattr(card, name)!r}, the config "
                                 f"{getattr(self.card, name)!r}")
        self.model.load_state_dict(state_dict)
        self.optimizer.load_state_dict(ts["optimizer"])
        if ts.get("scaler") and self.use_amp:
            self.scaler.load_state_dict(ts["scaler"])
        self.epoch = int(ts["epoch"])
        self.step_in_epoch = int(ts["step_in_epoch"])
        self.global_step = int(ts["global_step"])
        self.best = dict(ts.get("best") or self.best)
        self.last_val = dict(ts.get("last_val") or {})
        losses = ts.get("losses") or {}
        self.window = [float(x) for x in losses.get("window", [])]
        self.epoch_losses = [float(x) for x in losses.get("epoch", [])]
        same = (ts.get("world_size") == self.dist.world_size and ts.get("batch_size") == self.cfg.batch_size
                and ts.get("iters_per_epoch") == self.iters_per_epoch and ts.get("seed") == self.seed)
        if not same and self.step_in_epoch:
            log.warning("resuming with another batch size, process count or seed: epoch %d restarts from its "
                        "first batch", self.epoch + 1)
            self.global_step -= self.step_in_epoch
            self.step_in_epoch = 0
            self.window, self.epoch_losses = [], []
        rngs = ts.get("rng") or []
        if len(rngs) == self.dist.world_size:
            _set_rng_state(rngs[self.dist.rank])
        log.info("resumed from %s: epoch %d, step %d of %d", path, self.epoch + 1, self.step_in_epoch,
                 self.iters_per_epoch)

    # --- saving ---------------------------------------------------------------------------------

    def _state_dict(self) -> dict:
        return self.model.state_dict()

    def _train_state(self) -> dict:
        rngs = self.dist.gather(_rng_state())
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.use_amp else None,
                "rng": rngs, "best": self.best, "last_val": self.last_val, "seed": self.seed,
                "losses": {"window": list(self.window), "epoch": list(self.epoch_losses)},
                "world_size": self.dist.world_size, "batch_size": self.cfg.batch_size,
                "iters_per_epoch": self.iters_per_epoch, "total_epochs": self.cfg.total_epochs,
                "config": self.cfg.source}

    def _card(self, **extra) -> ModelCard:
        return dataclasses.replace(self.card, extra={"epoch": self.epoch, "global_step": self.global_step, **extra})

    def save_latest(self) -> None:
        ts = self._train_state()  # every process takes part (RNG gather)
        if self.rank0:
            _save_latest(self.work_dir / LATEST, self._card(), self._state_dict(), ts)

    def _save_epoch_checkpoint(self) -> None:
        if not self.rank0:
            return
        epoch = self.epoch  # epochs finished
        if epoch % self.cfg.checkpoint_interval and epoch != self.cfg.total_epochs:
            return
        save_checkpoint(self.work_dir / f"epoch_{epoch}.pth", self._card(val=self.last_val), self._state_dict())
        keep = self.cfg.max_keep_ckpts
        if keep > 0:
            found = sorted((int(m.group(1)), p) for p in self.work_dir.glob("epoch_*.pth")
                           if (m := re.fullmatch(r"epoch_(\d+)\.pth", p.name)))
            for _, p in found[:-keep]:
                p.unlink(missing_ok=True)

    # --- precise BN ----------------------------------------------------------------------------

    def precise_bn(self) -> int:
        """Recompute the BatchNorm statistics on ``precise_bn.num_batches`` training batches
        (see :mod:`posestream.train.precise_bn`). The clips and their augmentations are fixed by
        the seed and the epoch, and no global random state is touched, so resuming stays exact."""
        from posestream.train.precise_bn import recompute_bn_stats

        n_batches = int(self.cfg.precise_bn["num_batches"])
        bs = self.cfg.batch_size
        order = np.random.default_rng([self.seed, self.epoch, 77]).permutation(len(self.train_clips))
        mine = order[self.dist.rank::self.dist.world_size][: n_batches * bs]
        dataset = ClipDataset(self.train_clips, self.cfg.pipeline("train"), seed=self.seed + 1)

        def batches():
            for first in range(0, len(mine), bs):
                items = [dataset[(int(i), self.epoch, first + j)] for j, i in enumerate(mine[first:first + bs])]
                yield torch.cat([x for x, _ in items])

        average = None
        if self.dist.enabled:
            def average(t):
                torch.distributed.all_reduce(t)
                t /= self.dist.world_size
        count = recompute_bn_stats(self.model, batches(), self.device, average)
        if self.rank0:
            log.info("precise BN: statistics recomputed on %d training batches", count)
        return count

    # --- validation -----------------------------------------------------------------------------

    def validate(self) -> dict:
        n = len(self.val_set)
        indices = list(range(self.dist.rank, n, self.dist.world_size))
        subset = torch.utils.data.Subset(self.val_set, indices)
        scores = predict(self.model, subset, batch_size=self.cfg.val_batch_size, device=self.device,
                         workers=self.workers, average_clips=self.cfg.average_clips,
                         progress=self.progress and self.rank0, desc="val", amp=self.use_amp)
        self.model.train()
        parts = self.dist.gather((indices, scores))
        metrics = None
        if self.rank0:
            full = np.zeros((n, self.cfg.num_classes), np.float32)
            for idx, sc in parts:
                if len(idx):
                    full[idx] = sc
            labels = [int(c["label"]) for c in self.val_clips]
            metrics = compute_metrics(full, labels)
        metrics = self.dist.broadcast(metrics)
        self.last_val = dict(metrics, epoch=self.epoch, global_step=self.global_step)
        key = self.cfg.best_metric
        improved = self.best.get("value") is None or metrics[key] > self.best["value"]
        log.info("val after %d steps (epoch %d): top-1 %.4f  top-5 %.4f  mean class %.4f%s", self.global_step,
                 self.epoch, metrics["top1"], metrics["top5"], metrics["mean_class_accuracy"],
                 f"  (best {key})" if improved else "")
        if self.scalars:
            for name in ("top1", "top5", "mean_class_accuracy"):
                self.scalars.add(f"val/{name}", metrics[name], self.global_step)
        if improved:
            self.best = {"metric": key, "value": metrics[key], "epoch": self.epoch, "global_step": self.global_step}
            if self.rank0:
                save_checkpoint(self.work_dir / BEST, self._card(val=self.last_val), self._state_dict())
        return metrics

    # --- the loop -------------------------------------------------------------------------------

    def fit(self) -> dict:
        cfg = self.cfg
        self._setup_files()
        self._build()
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best: dict = {"metric": cfg.best_metric, "value": None, "epoch": None, "global_step": None}
        self.last_val: dict = {}
        self.window: list[float] = []        # losses since the last logged step
        self.epoch_losses: list[float] = []  # losses of the current epoch
        path = self._resume_path()
        if path is not None:
            self._restore(path)
        elif self.rank0 and (self.work_dir / LATEST).exists():
            log.warning("%s holds a previous run's %s; it will be overwritten (resume=True continues it)",
                        self.work_dir, LATEST)
        self.scalars = _Scalars(self.work_dir, self.rank0, self.global_step if path is not None else None)
        log.info("training %s (%s, %d classes, %s) from %s: %d videos x %d repeats, batch %d x %d process(es), "
                 "%d steps per epoch, %d epochs, lr %g, on %s%s", cfg.arch, cfg.source, cfg.num_classes, self.card.heatmap
                 + (f" in {cfg.limbs} order" if cfg.limbs else ""), cfg.train.ann_file, len(self.train_clips),
                 cfg.train.times, cfg.batch_size, self.dist.world_size, self.iters_per_epoch, cfg.total_epochs,
                 self.base_lr, self.device,
                 " with mixed precision" if self.use_amp else
                 f" ({torch.get_num_threads()} threads; fewer can be faster on a busy CPU)" if self.device.type == "cpu" else "")

        stopped = interrupted = False
        last_epoch_loss = None
        with _StopRequest() as stop:
            while self.epoch < cfg.total_epochs:
                finished_epoch, why = self._train_epoch(stop)
                if not finished_epoch:
                    stopped = True
                    interrupted = why == "interrupt"
                    break
                self.epoch += 1
                self.step_in_epoch = 0
                last_epoch_loss = float(np.mean(self.epoch_losses)) if self.epoch_losses else None
                self.epoch_losses = []
                last = self.epoch == cfg.total_epochs
                if cfg.precise_bn:
                    self.precise_bn()
                if self.validate_enabled and (self.epoch % cfg.eval_interval == 0 or last):
                    self.validate()
                self._save_epoch_checkpoint()
                self.save_latest()
            if stopped:
                if self.validate_enabled and not interrupted and self.last_val.get("global_step") != self.global_step:
                    self.validate()
                self.save_latest()
                if self.rank0:
                    log.info("stopped after %d steps (epoch %d, step %d of %d): %s", self.global_step,
                             self.epoch + 1, self.step_in_epoch, self.iters_per_epoch,
                             f"resume from {self.work_dir / LATEST}")
        self.dist.barrier()
        if interrupted:
            raise KeyboardInterrupt
        result = {"epoch": self.epoch, "global_step": self.global_step,
                  "loss": float(np.mean(self.epoch_losses)) if self.epoch_losses else last_epoch_loss,
                  "lr": self.optimizer.param_groups[0]["lr"], "best": self.best, "work_dir": str(self.work_dir),
                  "stopped_early": stopped}
        result.update({k: self.last_val.get(k) for k in ("top1", "top5", "mean_class_accuracy")})
        return result

    def _train_epoch(self, stop: _StopRequest) -> tuple[bool, str | None]:
        """Run the rest of the current epoch. Returns (finished, reason for stopping)."""
        cfg = self.cfg
        from tqdm import tqdm

        if self.max_steps is not None and self.global_step >= self.max_steps:
            return False, "max_steps"
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * cfg.batch_size)
        self.ddp.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(total=self.iters_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.total_epochs}",
                   unit="step", disable=None if (self.progress and self.rank0) else True, leave=False)
        tic, seen = time.monotonic(), 0
        try:
            for volumes, labels in self.loader:
                lr = lr_at(cfg.lr_config, self.base_lr, self.global_step, self.epoch, self.iters_per_epoch,
                           cfg.total_epochs)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                views = volumes.shape[1]
                x = volumes.flatten(0, 1).to(self.device, non_blocking=True)
                y = labels.to(self.device, non_blocking=True).repeat_interleave(views)
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                    logits = self.ddp(x)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                                   cfg.grad_clip["max_norm"], cfg.grad_clip["norm_type"])
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.global_step += 1
                self.step_in_epoch += 1

                value = float(loss.detach())
                if not math.isfinite(value) and not self.use_amp:
                    raise FloatingPointError(f"the loss is {value} at step {self.global_step}: lower the learning "
                                             f"rate ({self.base_lr}) or check the data")
                self.window.append(value)
                self.epoch_losses.append(value)
                seen += int(labels.shape[0])
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.3g}")
                if self.global_step % cfg.log_interval == 0 or self.step_in_epoch == self.iters_per_epoch:
                    rate = seen / max(time.monotonic() - tic, 1e-9)
                    mean = float(np.mean(self.window))
                    self.window = []
                    log.info("epoch %d [%d/%d] step %d  lr %.5g  loss %.4f  %.1f videos/s", self.epoch + 1,
                             self.step_in_epoch, self.iters_per_epoch, self.global_step, lr, mean,
                             rate * self.dist.world_size)
                    self.scalars.add("train/loss", mean, self.global_step)
                    self.scalars.add("train/lr", lr, self.global_step)
                if self.on_step is not None:
                    self.on_step({"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                                  "global_step": self.global_step, "loss": value, "lr": lr})
                if self.dist.any(stop.requested, self.device):
                    return False, "interrupt"
                if (self.max_steps is not None and self.global_step >= self.max_steps
                        and self.step_in_epoch < self.iters_per_epoch):  # at an epoch's end: finish it first
                    return False, "max_steps"
        finally:
            bar.close()
        return True, None

    def close(self) -> None:
        if self.scalars is not None:
            self.scalars.close()
        if self.log_handler is not None:
            log.removeHandler(self.log_handler)
            self.log_handler.close()
        if self.dist.created:
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# `posestream train` (the command line options are defined in posestream.cli)


@dataclasses.dataclass(frozen=True)
class TrainOptions(ProcessOptions):
    """What ``posestream train`` runs: :func:`train`'s arguments plus the process settings."""

    config: str | os.PathLike              #: a config file or a shipped config's name
    work_dir: str | os.PathLike | None = None
    resume: bool = False
    seed: int | None = None
    max_steps: int | None = None
    validate: bool = True
    amp: bool | None = None                #: None: mixed precision on CUDA, off on the CPU


def run_train(opts: TrainOptions) -> int:
    """``posestream train``: train, then print one summary line (on rank 0 under torchrun)."""
    _console_logging()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    result = train(opts.config, work_dir=opts.work_dir, resume=opts.resume, seed=opts.seed, device=opts.device,
                   max_steps=opts.max_steps, progress=opts.progress, trusted=opts.trusted,
                   workers=opts.workers, amp=opts.amp, validate=opts.validate, options=opts.options)
    if int(os.environ.get("RANK", 0)) == 0:
        best = result["best"]
        best_text = (f", best {best['metric']} {best['value']:.4f} after epoch {best['epoch']}"
                     if best.get("value") is not None else "")
        top1 = f", val top-1 {result['top1']:.4f}" if result.get("top1") is not None else ""
        print(f"{result['work_dir']}: {result['epoch']} epochs, {result['global_step']} steps{top1}{best_text}")
    return 0


def _console_logging() -> None:
    root = logging.getLogger("posestream")
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
