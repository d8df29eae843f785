"""Training configs: PYSKL's config files, read as they are and translated to posestream's parts.

A PYSKL config is a Python file of plain assignments (``model = dict(...)``, ``train_pipeline =
[...]``, ``data = dict(...)``, ``optimizer``, ``optimizer_config``, ``lr_config``,
``total_epochs``, ``work_dir``, ...). :func:`load_config` reads one and returns a
:class:`TrainConfig`: the model as one of posestream's architecture names, each pipeline as
posestream's transform steps, the data splits, and the optimisation recipe. Anything posestream
cannot honour exactly is refused with a :class:`ConfigError`, a one-line message naming the
config file and the key, e.g.::

    configs/x.py: model.backbone.se_ratio: 0.0625 is not supported (posestream's X3D has no SE blocks; set se_ratio=None)

SECURITY — a config file is Python and :func:`load_config` *executes* it, exactly as mmcv's
``Config.fromfile`` (which PYSKL uses) does. Only load configs you would run yourself: your own,
or the ones shipped with posestream (:func:`shipped_configs`).

Translation table (PYSKL -> posestream)
---------------------------------------

=====================================================  ==========================================
PYSKL                                                  posestream
=====================================================  ==========================================
``Recognizer3D`` + ``ResNet3dSlowOnly`` (base 32,      ``slowonly``
stages (4, 6, 3), inflate (0, 1, 1), spatial strides
(2, 2, 2), temporal (1, 1, 2), conv1/pool1 stride 1)
  ... the same at base 64 / base 16                    ``slowonly_wd`` / ``slowonly_volleyball``
  ... 4 stages (3, 4, 6, 3), inflate (0, 0, 1, 1),     ``slowonly_hr``
  spatial (2, 2, 2, 2), temporal (1, 1, 1, 2)
``C3D`` (base 32, temporal_downsample=False,           ``c3d_s`` / ``c3d`` (Table 11's C3D: no
num_stages 3 / 4)                                      pool before conv5, see ``models.backbones``)
``X3D`` (base 24, se_ratio=None, use_swish=False,      ``x3d_s`` / ``x3d``
gamma_b 2.25, 3 stages, effective blocks
ceil(gamma_d * stage_blocks) = (2, 5, 3) / (5, 11, 7))
``I3DHead`` (in_channels, num_classes, dropout)        the model's ``ClsHead`` (checked, copied)
``test_cfg.average_clips`` ('prob' / 'score')          :attr:`TrainConfig.average_clips`
``UniformSampleFrames`` / ``PoseDecode`` /             the class of the same name in
``PoseCompact`` / ``Resize`` / ``RandomResizedCrop``   ``posestream.train.transforms``; sampling is
/ ``Flip`` / ``FormatShape``                           in test mode in the val and test pipelines
``GeneratePoseTarget(with_kp=True)``                   joint heatmaps (K = 17)
``GeneratePoseTarget(with_limb=True, skeletons=S,      limb heatmaps in the :mod:`posestream.skeleton`
left_limb=..., right_limb=...)``                       layout whose pairs equal S (no S: PYSKL's
                                                       default skeleton = ``pyskl_default``)
``Collect`` / ``ToTensor``                             dropped (no-ops here)
``DecompressPose``, GCN steps, anything else           refused
``data.videos_per_gpu`` / ``workers_per_gpu`` /        :attr:`batch_size` / :attr:`workers` /
``test_dataloader`` / ``val_dataloader``               :attr:`test_batch_size` / :attr:`val_batch_size`
``data.train`` ``RepeatDataset(times=n)``              :attr:`SplitConfig.times` (epoch = n passes)
``PoseDataset(ann_file, split, class_prob)``           :class:`SplitConfig`
``optimizer`` (SGD / Adam / AdamW kwargs)              :attr:`optimizer`
``optimizer_config.grad_clip`` (max_norm, norm_type)   :attr:`grad_clip`
``lr_config`` (CosineAnnealing / step / fixed,         :attr:`lr_config` (see ``trainer.lr_at``)
by_epoch, min_lr(_ratio), warmup)
``total_epochs`` (or ``runner.max_epochs``)            :attr:`total_epochs`
``checkpoint_config`` / ``evaluation`` /               intervals, ``max_keep_ckpts``
``log_config.interval``
``work_dir`` / ``load_from`` / ``resume_from`` /       the same
``seed`` / ``find_unused_parameters``
``class_names = [...]`` / ``label_map = 'file.txt'``   class names (posestream's addition; PYSKL
                                                       ignores both)
=====================================================  ==========================================

Paths in a config (``ann_file``, ``work_dir``, ``load_from``) are used as written, so relative
paths are relative to the current directory, as in PYSKL. ``label_map`` (one class name per
line) is looked up there first, then beside the config file, then among the shipped label maps
(``configs/label_maps``: NTU-60 and NTU-120).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError", "Step", "SplitConfig", "TrainConfig", "load_config", "translate",
    "read_config_file", "apply_options", "parse_cfg_options", "shipped_configs", "resolve_config",
    "CONFIG_DIR", "PIPELINE_STEPS",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config that cannot be read or translated. ``str(error)`` is one line:
    ``"<config file>: <key>: <problem>"``."""

    def __init__(self, source: str, key: str | None, problem: str):
        problem = re.sub(r"\s*[\r\n]+\s*", " ", str(problem)).strip()
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key


# ---------------------------------------------------------------------------------------------
# Reading the file


def shipped_configs() -> dict[str, Path]:
    """The configs shipped with posestream: name (file stem) -> path. Files whose name starts
    with ``_`` are the bases the shipped configs name in ``_base_``, not configs of their own."""
    if not CONFIG_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.py")) if not p.name.startswith("_")}


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """A config path as given if it exists, else a shipped config by name (``ntu60_xsub_joint``
    or ``ntu60_xsub_joint.py``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_configs()
    stem = path.name[:-3] if path.name.endswith(".py") else path.name
    if str(path.parent) in ("", ".") and stem in shipped:
        return shipped[stem]
    known = ", ".join(shipped) or "none"
    raise ConfigError(os.fspath(name_or_path), None, f"no such config file, and no shipped config of that "
                                                     f"name (shipped: {known})")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Execute a config file and return its top-level names (without modules, functions,
    classes and names starting with ``_``). ``_base_`` (a path or a list of paths, relative to
    the file) is honoured as mmcv does: the base configs are read first and this file's dicts
    are merged into theirs, key by key (a dict with ``_delete_=True`` replaces instead).

    The file is run as Python: see the module docstring."""
    path = Path(path)
    source = os.fspath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"not a UTF-8 text file ({exc.reason})") from None
    namespace: dict[str, Any] = {"__file__": str(path.resolve()), "__name__": "__posestream_config__"}
    try:
        code = compile(text, source, "exec")
        exec(code, namespace)  # noqa: S102 - a config file is the user's own Python (module docstring)
    except SyntaxError as exc:
        raise ConfigError(source, None, f"line {exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        line = _traceback_line(exc, source)
        raise ConfigError(source, None, f"{line}{type(exc).__name__} while executing it: {exc}") from None
    values = {k: v for k, v in namespace.items()
              if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
    base = namespace.get("_base_")
    if base is None:
        return values
    merged: dict[str, Any] = {}
    for base_path in [base] if isinstance(base, (str, os.PathLike)) else list(base):
        full = Path(base_path) if Path(base_path).is_absolute() else path.parent / base_path
        merged = _merge(merged, read_config_file(full))
    return _merge(merged, values)


def _traceback_line(exc: BaseException, source: str) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == source:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"line {line}: " if line else ""


def _merge(base: dict, child: Mapping) -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not value.get("_delete_", False):
            out[key] = _merge(dict(out[key]), value)
        elif isinstance(value, Mapping):
            out[key] = {k: v for k, v in value.items() if k != "_delete_"}
        else:
            out[key] = value
    return out


def parse_cfg_options(items: Sequence[str]) -> dict[str, Any]:
    """``["data.videos_per_gpu=8", "total_epochs=1"]`` -> ``{"data.videos_per_gpu": 8, ...}``
    (values read as Python literals when they are one, else as strings), as PYSKL's
    ``--cfg-options``."""
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--cfg-options: expected KEY=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        options[key.strip()] = value
    return options


def apply_options(values: dict[str, Any], options: Mapping[str, Any], source: str = "<config>") -> dict[str, Any]:
    """Set dotted keys (``data.train.dataset.pipeline.0.clip_len``) in a copy of ``values``;
    a number indexes a list."""
    values = copy.deepcopy(values)
    for dotted, value in options.items():
        parts = dotted.split(".")
        node: Any = values
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(source, where, f"no list item {part!r} (the list has {len(node)} items)")
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
            else:
                raise ConfigError(source, where, f"cannot set a key inside a {type(node).__name__}")
            if last:
                node[index] = value
            else:
                if isinstance(node, dict) and index not in node:
                    node[index] = {}
                node = node[index]
    return values


# ---------------------------------------------------------------------------------------------
# The translated config


@dataclass(frozen=True)
class Step:
    """One pipeline step: the name of a :mod:`posestream.train.transforms` class and the keyword
    arguments for its constructor (never an ``rng``: random steps are seeded by the caller)."""

    name: str
    kwargs: dict

    def build(self):
        return PIPELINE_STEPS[self.name](**self.kwargs)

    def replace(self, **kwargs) -> "Step":
        return Step(self.name, {**self.kwargs, **kwargs})


@dataclass(frozen=True)
class SplitConfig:
    """One of ``data.train`` / ``data.val`` / ``data.test``."""

    ann_file: str
    split: str | None
    pipeline: tuple[Step, ...]
    times: int = 1
    class_prob: dict[int, float] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A PYSKL config translated to posestream (see the module docstring's table)."""

    source: str
    arch: str
    num_classes: int
    in_channels: int
    dropout: float
    heatmap: str                    # "joints" or "limbs"
    limbs: str | None               # the limb layout name for limb models
    sigma: float
    average_clips: str              # "prob" or "score"
    train: SplitConfig
    val: SplitConfig
    test: SplitConfig
    batch_size: int = 32
    workers: int = 2
    val_batch_size: int = 32
    test_batch_size: int = 1
    optimizer: dict = field(default_factory=lambda: dict(type="SGD", lr=0.4, momentum=0.9, weight_decay=3e-4))
    grad_clip: dict | None = field(default_factory=lambda: dict(max_norm=40.0, norm_type=2.0))
    lr_config: dict = field(default_factory=lambda: dict(policy="CosineAnnealing", by_epoch=False, min_lr=0.0))
    total_epochs: int = 24
    work_dir: str = "work_dirs/posestream"
    load_from: str | None = None
    resume_from: str | None = None
    checkpoint_interval: int = 1
    max_keep_ckpts: int = -1
    eval_interval: int = 1
    best_metric: str = "top1"       # which validation metric picks best.pth: top1, top5, mean_class_accuracy
    log_interval: int = 20
    find_unused_parameters: bool = False
    cudnn_benchmark: bool = False
    class_names: tuple[str, ...] | None = None
    seed: int | None = None
    precise_bn: dict | None = None  # dict(num_batches=N): recompute BN statistics before each validation
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    # --- derived ------------------------------------------------------------------------------

    def _find(self, which: str, name: str, last: bool = False) -> Step | None:
        steps = [s for s in self.split_config(which).pipeline if s.name == name]
        if not steps:
            return None
        return steps[-1] if last else steps[0]

    def split_config(self, which: str) -> SplitConfig:
        if which not in ("train", "val", "test"):
            raise ValueError(f"which must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, which)

    @property
    def clip_len(self) -> int:
        """Frames per clip at test time (the test pipeline's ``UniformSampleFrames``)."""
        step = self._find("test", "UniformSampleFrames")
        return int(step.kwargs["clip_len"]) if step else 48

    @property
    def num_clips(self) -> int:
        step = self._find("test", "UniformSampleFrames")
        return int(step.kwargs.get("num_clips", 1)) if step else 1

    @property
    def flip_test(self) -> bool:
        step = self._find("test", "GeneratePoseTarget")
        return bool(step.kwargs.get("double", False)) if step else False

    @property
    def size(self) -> int:
        """The square volume size at test time (the test pipeline's last ``Resize``)."""
        step = self._find("test", "Resize", last=True)
        scale = None if step is None else step.kwargs.get("scale")
        keep_ratio = None if step is None else step.kwargs.get("keep_ratio", True)
        if (isinstance(scale, tuple) and len(scale) == 2 and scale[0] == scale[1] and scale[0] > 0
                and not keep_ratio):
            return int(scale[0])
        raise ConfigError(self.source, "data.test.pipeline",
                          "must end with a fixed square Resize (e.g. scale=(64, 64), keep_ratio=False): "
                          f"a model card records one volume size; got {step.kwargs if step else 'no Resize'}")

    def pipeline(self, which: str, *, num_clips: int | None = None, flip: bool | None = None,
                 seed=None, clip_len: int | None = None):
        """Build the ``train`` / ``val`` / ``test`` pipeline as a
        :class:`~posestream.train.transforms.Compose`. ``num_clips`` and ``flip`` (double
        volumes) override the sampling and heatmap steps; ``seed`` seeds the random steps."""
        from posestream.train.transforms import Compose

        steps = []
        for step in self.split_config(which).pipeline:
            if step.name == "UniformSampleFrames":
                if num_clips is not None:
                    step = step.replace(num_clips=int(num_clips))
                if clip_len is not None:
                    step = step.replace(clip_len=int(clip_len))
            if step.name == "GeneratePoseTarget" and flip is not None:
                step = step.replace(double=bool(flip))
            steps.append(step.build())
        pipe = Compose(steps)
        if seed is not None:
            pipe.reseed(seed)
        return pipe

    def build_model(self):
        from posestream.train.models import build_model

        return build_model(self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                           dropout=self.dropout)

    def model_card(self, source: str = "", extra: dict | None = None):
        """The :class:`~posestream.engines.card.ModelCard` of a model trained with this config."""
        from posestream.engines.card import ModelCard

        return ModelCard(arch=self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                         heatmap=self.heatmap, limbs=self.limbs, clip_len=self.clip_len, size=self.size,
                         sigma=float(self.sigma),
                         class_names=list(self.class_names) if self.class_names else None,
                         source=source or f"trained with {self.source}", extra=dict(extra or {}))

    # --- overrides ----------------------------------------------------------------------------

    def override(self, **changes) -> "TrainConfig":
        """A copy with some settings changed, for smoke runs and tests:

        ``ann_file`` (every split), ``splits`` ({"train": name, ...}), ``clip_len`` (every
        sampling step), ``size`` (the last Resize of the val and test pipelines), ``train_size``
        (the last Resize of the train pipeline), ``times`` (train repeats), ``lr``, and any
        field of this class (``batch_size``, ``workers``, ``total_epochs``, ``work_dir``,
        ``load_from``, ...)."""
        cfg = self
        split_fields = {}
        for which in ("train", "val", "test"):
            split = cfg.split_config(which)
            steps = list(split.pipeline)
            if "clip_len" in changes:
                steps = [s.replace(clip_len=int(changes["clip_len"])) if s.name == "UniformSampleFrames" else s
                         for s in steps]
            size_key = "train_size" if which == "train" else "size"
            if size_key in changes:
                resize = [i for i, s in enumerate(steps) if s.name == "Resize"]
                if not resize:
                    raise ConfigError(self.source, f"data.{which}.pipeline", f"has no Resize for {size_key}")
                n = int(changes[size_key])
                steps[resize[-1]] = steps[resize[-1]].replace(scale=(n, n), keep_ratio=False)
            kw: dict[str, Any] = {"pipeline": tuple(steps)}
            if "ann_file" in changes:
                kw["ann_file"] = os.fspath(changes["ann_file"])
            if "splits" in changes and which in changes["splits"]:
                kw["split"] = changes["splits"][which]
            if which == "train" and "times" in changes:
                kw["times"] = int(changes["times"])
            split_fields[which] = dataclasses.replace(split, **kw)
        rest = {k: v for k, v in changes.items()
                if k not in ("ann_file", "splits", "clip_len", "size", "train_size", "times", "lr")}
        if "lr" in changes:
            rest["optimizer"] = {**cfg.optimizer, "lr": float(changes["lr"])}
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(rest) - names)
        if unknown:
            raise TypeError(f"override: unknown setting(s) {', '.join(unknown)}")
        if "work_dir" in rest and rest["work_dir"] is not None:
            rest["work_dir"] = os.fspath(rest["work_dir"])
        if ("num_classes" in rest and "class_names" not in rest and cfg.class_names is not None
                and len(cfg.class_names) != rest["num_classes"]):
            rest["class_names"] = None  # the names describe the classes being replaced
        return dataclasses.replace(cfg, **split_fields, **rest)


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike, options: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a PYSKL-format config file (or a shipped config by name) and translate it.

    ``options`` are dotted-key overrides applied to the file's values before translation
    (PYSKL's ``--cfg-options``; see :func:`parse_cfg_options`). The file is executed as Python
    (see the module docstring). Raises :class:`ConfigError` (one line, naming the file and key)."""
    resolved = resolve_config(path)
    source = os.fspath(path) if Path(path).exists() else os.fspath(resolved)
    values = read_config_file(resolved)
    if options:
        values = apply_options(values, options, source)
    return translate(values, source, config_dir=resolved.parent)


def translate(values: Mapping[str, Any], source: str = "<config>", config_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Translate a config's top-level values (as :func:`read_config_file` returns them)."""
    return _Translator(values, source, Path(config_dir) if config_dir else None).run()


class _Translator:
    def __init__(self, values: Mapping[str, Any], source: str, config_dir: Path | None):
        self.v = dict(values)
        self.source = source
        self.config_dir = config_dir

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    # --- helpers ------------------------------------------------------------------------------

    def require_dict(self, value: Any, key: str) -> dict:
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a dict, got {type(value).__name__}")
        return dict(value)

    def check_keys(self, d: Mapping, key: str, allowed: set[str] | Sequence[str]) -> None:
        unknown = [k for k in d if k not in allowed]
        if unknown:
            raise self.error(f"{key}.{unknown[0]}", f"is not supported by posestream (supported keys: "
                                                    f"{', '.join(sorted(allowed)) or 'none'})")

    def number(self, value: Any, key: str, *, integer: bool = False, positive: bool = False,
               minimum: float | None = None) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer:
            ok = float(value).is_integer()
        if ok and positive:
            ok = value > 0
        if ok and minimum is not None:
            ok = value >= minimum
        if not ok:
            what = "a positive " if positive else "a "
            what += "integer" if integer else "number"
            if minimum is not None:
                what += f" >= {minimum}"
            raise self.error(key, f"expected {what}, got {value!r}")
        return int(value) if integer else float(value)

    def must_equal(self, d: Mapping, name: str, key: str, expected: Any, why: str) -> None:
        if name in d and _norm(d[name]) != _norm(expected):
            raise self.error(f"{key}.{name}", f"{d[name]!r} is not supported ({why})")

    # --- the whole config -----------------------------------------------------------------------

    def run(self) -> TrainConfig:
        v = self.v
        if "model" not in v:
            raise self.error("model", "missing: a PYSKL config defines model = dict(type='Recognizer3D', ...)")
        if "data" not in v:
            raise self.error("data", "missing: a PYSKL config defines data = dict(train=..., val=..., test=...)")
        if v.get("memcached"):
            raise self.error("memcached", "PYSKL's memcached keypoint cache is not supported: use a pickle "
                                          "with full keypoints and set memcached = False")
        arch, num_classes, in_channels, dropout, average_clips = self.model(self.require_dict(v["model"], "model"))
        data = self.require_dict(v["data"], "data")
        self.check_keys(data, "data", {"videos_per_gpu", "workers_per_gpu", "train", "val", "test",
                                       "train_dataloader", "val_dataloader", "test_dataloader",
                                       "persistent_workers", "pin_memory"})
        batch = self.number(data.get("videos_per_gpu", 1), "data.videos_per_gpu", integer=True, positive=True)
        workers = self.number(data.get("workers_per_gpu", 1), "data.workers_per_gpu", integer=True, minimum=0)
        loader_batch = {}
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            d = self.require_dict(data.get(name) or {}, f"data.{name}")
            self.check_keys(d, f"data.{name}", {"videos_per_gpu", "workers_per_gpu", "persistent_workers",
                                                "shuffle", "pin_memory"})
            if "videos_per_gpu" in d:
                loader_batch[name] = self.number(d["videos_per_gpu"], f"data.{name}.videos_per_gpu",
                                                 integer=True, positive=True)
        if loader_batch.get("train_dataloader"):
            batch = loader_batch["train_dataloader"]
        splits = {}
        for which in ("train", "val", "test"):
            if which not in data:
                raise self.error(f"data.{which}", "missing (PYSKL configs define data.train, data.val and data.test)")
            splits[which] = self.split(data[which], which)

        heat = {which: self.heatmap_of(splits[which], which) for which in ("train", "val", "test")}
        first = heat["train"]
        for which in ("val", "test"):
            if heat[which][:2] != first[:2] or heat[which][2] != first[2]:
                raise self.error(f"data.{which}.pipeline", f"draws {_heat_desc(heat[which])} but the train "
                                                           f"pipeline draws {_heat_desc(first)}")
        heatmap, limbs, sigma = first
        from posestream.skeleton import LIMB_LAYOUTS, NUM_KEYPOINTS

        channels = NUM_KEYPOINTS if heatmap == "joints" else len(LIMB_LAYOUTS[limbs])
        if in_channels != channels:
            raise self.error("model.backbone.in_channels", f"{in_channels}, but the pipelines draw "
                                                           f"{_heat_desc(first)}: {channels} channels")
        self.check_head(arch, num_classes, in_channels)

        opt = self.optimizer()
        grad_clip = self.grad_clip()
        lr_config = self.lr_config()
        total_epochs = self.total_epochs()
        ckpt = self.require_dict(v.get("checkpoint_config") or {}, "checkpoint_config")
        self.check_keys(ckpt, "checkpoint_config", {"interval", "max_keep_ckpts", "by_epoch", "save_optimizer",
                                                    "out_dir", "create_symlink"})
        if ckpt.get("by_epoch", True) is not True:
            raise self.error("checkpoint_config.by_epoch", "only per-epoch checkpoints are supported")
        if ckpt.get("out_dir"):
            raise self.error("checkpoint_config.out_dir", "checkpoints go to work_dir; set work_dir instead")
        evaluation = self.require_dict(v.get("evaluation") or {}, "evaluation")
        self.check_keys(evaluation, "evaluation", {"interval", "metrics", "topk", "save_best", "rule", "by_epoch",
                                                   "start", "metric_options", "tmpdir", "gpu_collect"})
        metrics = evaluation.get("metrics", ["top_k_accuracy"])
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unsupported = [m for m in metrics if m not in ("top_k_accuracy", "mean_class_accuracy")]
        if unsupported:
            raise self.error("evaluation.metrics", f"{unsupported[0]!r} is not supported "
                                                   "(top_k_accuracy and mean_class_accuracy are)")
        save_best = evaluation.get("save_best", "auto")
        best_metric = {None: "top1", "auto": "top1", "top1_acc": "top1", "top5_acc": "top5",
                       "mean_class_accuracy": "mean_class_accuracy"}.get(save_best)
        if best_metric is None:
            raise self.error("evaluation.save_best", f"{save_best!r} is not supported "
                                                     "('auto', 'top1_acc', 'top5_acc', 'mean_class_accuracy')")
        if evaluation.get("rule", "greater") != "greater":
            raise self.error("evaluation.rule", "accuracies are better when greater; use rule='greater'")
        log = self.require_dict(v.get("log_config") or {}, "log_config")
        workflow = v.get("workflow", [("train", 1)])
        if [tuple(w) for w in workflow] != [("train", 1)]:
            raise self.error("workflow", f"{workflow!r} is not supported: validation runs every "
                                         "evaluation.interval epochs; use workflow = [('train', 1)]")
        if v.get("fp16"):
            pass  # mixed precision is decided by the trainer (on for CUDA); nothing to translate
        work_dir = v.get("work_dir") or "work_dirs/posestream/" + Path(self.source).stem
        load_from = v.get("load_from")
        if load_from is not None and not isinstance(load_from, (str, os.PathLike)):
            raise self.error("load_from", f"expected a path, got {load_from!r}")
        if isinstance(load_from, str) and re.match(r"^[a-z][a-z0-9+.-]*://", load_from):
            raise self.error("load_from", f"{load_from} is a URL; posestream downloads nothing at run time: "
                                          "fetch it yourself, convert it with `posestream import-checkpoint`, "
                                          "and point load_from at the local file")
        resume_from = v.get("resume_from")
        seed = v.get("seed")
        if seed is not None:
            seed = self.number(seed, "seed", integer=True, minimum=0)
        class_names = self.class_names(num_classes)
        precise_bn = None
        if v.get("precise_bn"):
            precise_bn = self.require_dict(v["precise_bn"], "precise_bn")
            self.check_keys(precise_bn, "precise_bn", {"num_batches"})
            precise_bn = {"num_batches": self.number(precise_bn.get("num_batches", 50), "precise_bn.num_batches",
                                                     integer=True, positive=True)}

        return TrainConfig(
            source=self.source, arch=arch, num_classes=num_classes, in_channels=in_channels, dropout=dropout,
            heatmap=heatmap, limbs=limbs, sigma=sigma, average_clips=average_clips,
            train=splits["train"], val=splits["val"], test=splits["test"],
            batch_size=batch, workers=workers,
            val_batch_size=loader_batch.get("val_dataloader", batch),
            test_batch_size=loader_batch.get("test_dataloader", batch),
            optimizer=opt, grad_clip=grad_clip, lr_config=lr_config, total_epochs=total_epochs,
            work_dir=os.fspath(work_dir), load_from=os.fspath(load_from) if load_from else None,
            resume_from=os.fspath(resume_from) if resume_from else None,
            checkpoint_interval=self.number(ckpt.get("interval", 1), "checkpoint_config.interval",
                                            integer=True, positive=True),
            max_keep_ckpts=self.number(ckpt.get("max_keep_ckpts", -1), "checkpoint_config.max_keep_ckpts",
                                       integer=True),
            eval_interval=self.number(evaluation.get("interval", 1), "evaluation.interval", integer=True,
                                      positive=True),
            best_metric=best_metric,
            log_interval=self.number(log.get("interval", 20), "log_config.interval", integer=True, positive=True),
            find_unused_parameters=bool(v.get("find_unused_parameters", False)),
            cudnn_benchmark=bool(v.get("cudnn_benchmark", False)),
            class_names=class_names, seed=seed, precise_bn=precise_bn, raw=dict(self.v),
        )

    # --- model --------------------------------------------------------------------------------

    def model(self, model: dict) -> tuple[str, int, int, float, str]:
        mtype = model.get("type")
        if mtype != "Recognizer3D":
            hint = ""
            if mtype in ("RecognizerGCN", "Recognizer2D"):
                hint = " (posestream trains PoseConv3D heatmap models, not GCNs or 2D CNNs)"
            elif mtype == "MMRecognizer3D":
                hint = " (RGBPose-Conv3D needs RGB frames; posestream trains skeleton-only models)"
            raise self.error("model.type", f"{mtype!r} is not supported{hint}; use 'Recognizer3D'")
        self.check_keys(model, "model", {"type", "backbone", "cls_head", "train_cfg", "test_cfg"})
        backbone = self.require_dict(model.get("backbone"), "model.backbone")
        head = self.require_dict(model.get("cls_head"), "model.cls_head")
        arch = self.backbone(backbone)
        in_channels = self.number(backbone.get("in_channels", 3), "model.backbone.in_channels", integer=True,
                                  positive=True)
        num_classes, dropout = self.head(head)
        test_cfg = self.require_dict(model.get("test_cfg") or {}, "model.test_cfg")
        self.check_keys(test_cfg, "model.test_cfg", {"average_clips", "max_testing_views", "feat_ext"})
        if test_cfg.get("feat_ext"):
            raise self.error("model.test_cfg.feat_ext", "feature extraction is not supported")
        average = test_cfg.get("average_clips", "score")
        if average is None:
            average = "score"
        if average not in ("prob", "score"):
            raise self.error("model.test_cfg.average_clips", f"{average!r} is not supported ('prob' or 'score')")
        train_cfg = model.get("train_cfg")
        if train_cfg:
            raise self.error("model.train_cfg", f"{train_cfg!r} is not supported (use train_cfg=None or dict())")
        return arch, num_classes, in_channels, dropout, average

    def backbone(self, b: dict) -> str:
        btype = b.get("type")
        key = "model.backbone"
        handler = {"ResNet3dSlowOnly": self.slowonly, "C3D": self.c3d, "X3D": self.x3d}.get(btype)
        if handler is None:
            raise self.error(f"{key}.type", f"{btype!r} is not supported (ResNet3dSlowOnly, C3D and X3D are)")
        return handler(b, key)

    def _check_init_only(self, b: dict, key: str, defaults: dict) -> None:
        for name, default in defaults.items():
            if name in b and _norm(b[name]) != _norm(default):
                why = {"pretrained": "posestream loads weights with load_from, not a backbone 'pretrained'",
                       "frozen_stages": "every stage is trained",
                       "norm_eval": "BatchNorm always updates its statistics in training",
                       "with_cp": "no activation checkpointing"}.get(name, f"only {default!r} is")
                raise self.error(f"{key}.{name}", f"{b[name]!r} is not supported ({why})")

    def slowonly(self, b: dict, key: str) -> str:
        allowed = {"type", "depth", "pretrained", "stage_blocks", "pretrained2d", "in_channels", "num_stages",
                   "base_channels", "out_indices", "spatial_strides", "temporal_strides", "conv1_kernel",
                   "conv1_stride", "pool1_stride", "advanced", "frozen_stages", "inflate", "inflate_style",
                   "conv_cfg", "norm_cfg", "act_cfg", "norm_eval", "zero_init_residual", "with_cp", "dilations"}
        self.check_keys(b, key, allowed)
        self._check_init_only(b, key, dict(pretrained=None, advanced=False, frozen_stages=-1, inflate_style="3x1x1",
                                           conv_cfg=dict(type="Conv3d"),
                                           norm_cfg=dict(type="BN3d", requires_grad=True),
                                           act_cfg=dict(type="ReLU", inplace=True), norm_eval=False,
                                           zero_init_residual=True, with_cp=False))
        depth = b.get("depth", 50)
        if depth not in (50, 101, 152):
            raise self.error(f"{key}.depth", f"{depth!r} is not supported (bottleneck ResNets: 50, 101, 152)")
        num_stages = self.number(b.get("num_stages", 4), f"{key}.num_stages", integer=True, positive=True)
        default_blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[depth][:num_stages]
        blocks = _norm(b.get("stage_blocks") or default_blocks)
        inflate = b.get("inflate", (0, 0, 1, 1))
        inflate = _norm((inflate,) * num_stages if isinstance(inflate, int) else inflate)
        sig = dict(
            base_channels=b.get("base_channels", 64), stage_blocks=blocks, inflate=inflate,
            spatial_strides=_norm(b.get("spatial_strides", (1, 2, 2, 2))),
            temporal_strides=_norm(b.get("temporal_strides", (1, 1, 1, 1))),
            conv1_kernel=_norm(b.get("conv1_kernel", (1, 7, 7))),
            conv1_stride=_norm(b.get("conv1_stride", (1, 2))), pool1_stride=_norm(b.get("pool1_stride", (1, 2))),
            out_indices=_norm(b.get("out_indices", (3,))),
            dilations=_norm(b.get("dilations", (1,) * num_stages)),
        )
        for name in ("stage_blocks", "inflate", "spatial_strides", "temporal_strides"):
            if len(sig[name]) != num_stages:
                raise self.error(f"{key}.{name}", f"{sig[name]!r} needs one entry per stage (num_stages={num_stages})")
        if sig["out_indices"] != (num_stages - 1,):
            raise self.error(f"{key}.out_indices", f"{sig['out_indices']!r} is not supported: only the last stage "
                                                   f"feeds the head, out_indices=({num_stages - 1},)")
        return self.match(key, "ResNet3dSlowOnly", sig, _SLOWONLY_VARIANTS)

    def c3d(self, b: dict, key: str) -> str:
        self.check_keys(b, key, {"type", "in_channels", "base_channels", "num_stages", "temporal_downsample",
                                 "pretrained"})
        self._check_init_only(b, key, dict(pretrained=None))
        sig = dict(base_channels=b.get("base_channels", 64), num_stages=b.get("num_stages", 4),
                   temporal_downsample=bool(b.get("temporal_downsample", True)))
        return self.match(key, "C3D", sig, _C3D_VARIANTS)

    def x3d(self, b: dict, key: str) -> str:
        allowed = {"type", "gamma_w", "gamma_b", "gamma_d", "pretrained", "in_channels", "base_channels",
                   "num_stages", "stage_blocks", "spatial_strides", "frozen_stages", "se_style", "se_ratio",
                   "use_swish", "conv_cfg", "norm_cfg", "act_cfg", "norm_eval", "zero_init_residual", "with_cp"}
        self.check_keys(b, key, allowed)
        self._check_init_only(b, key, dict(pretrained=None, frozen_stages=-1, conv_cfg=dict(type="Conv3d"),
                                           norm_cfg=dict(type="BN3d", requires_grad=True),
                                           act_cfg=dict(type="ReLU", inplace=True), norm_eval=False,
                                           zero_init_residual=True, with_cp=False))
        if b.get("se_ratio", 1 / 16) is not None:
            raise self.error(f"{key}.se_ratio", f"{b.get('se_ratio', 1 / 16)!r} is not supported (posestream's X3D "
                                                "has no SE blocks, as PYSKL's pose configs; set se_ratio=None)")
        if b.get("use_swish", True):
            raise self.error(f"{key}.use_swish", "True is not supported (posestream's X3D uses ReLU, as PYSKL's "
                                                 "pose configs; set use_swish=False)")
        gamma_w = b.get("gamma_w", 1.0)
        if gamma_w not in (None, 0, 1, 1.0):
            raise self.error(f"{key}.gamma_w", f"{gamma_w!r} is not supported (widen with base_channels)")
        num_stages = self.number(b.get("num_stages", 4), f"{key}.num_stages", integer=True, positive=True)
        gamma_d = b.get("gamma_d", 2.2)
        blocks = [int(math.ceil(gamma_d * n)) if gamma_d else int(n) for n in b.get("stage_blocks", (1, 2, 5, 3))]
        sig = dict(base_channels=b.get("base_channels", 24), stage_blocks=tuple(blocks[:num_stages]),
                   spatial_strides=_norm(b.get("spatial_strides", (2, 2, 2, 2))), gamma_b=float(b.get("gamma_b", 2.25)))
        return self.match(key, "X3D", sig, _X3D_VARIANTS)

    def match(self, key: str, btype: str, sig: dict, variants: dict[str, dict]) -> str:
        sig = {k: _norm(v) for k, v in sig.items()}
        for arch, want in variants.items():
            if all(sig.get(k) == _norm(v) for k, v in want.items()):
                return arch
        # name the closest variant and the first setting that differs
        best = max(variants, key=lambda a: sum(sig.get(k) == _norm(v) for k, v in variants[a].items()))
        diff = next(k for k, v in variants[best].items() if sig.get(k) != _norm(v))
        raise self.error(f"{key}.{diff}", f"{sig.get(diff)!r} matches none of posestream's {btype} variants "
                                          f"({', '.join(variants)}); the closest, {best}, has {diff}="
                                          f"{_norm(variants[best][diff])!r}")

    def head(self, h: dict) -> tuple[int, float]:
        key = "model.cls_head"
        if h.get("type") not in ("I3DHead", "SimpleHead"):
            raise self.error(f"{key}.type", f"{h.get('type')!r} is not supported (use 'I3DHead')")
        self.check_keys(h, key, {"type", "in_channels", "num_classes", "dropout", "init_std", "spatial_type",
                                 "loss_cls", "multi_class", "label_smooth_eps", "mode"})
        num_classes = self.number(h.get("num_classes"), f"{key}.num_classes", integer=True, positive=True)
        dropout = self.number(h.get("dropout", 0.5), f"{key}.dropout", minimum=0)
        if dropout >= 1:
            raise self.error(f"{key}.dropout", f"{dropout} must be below 1")
        self.must_equal(h, "init_std", key, 0.01, "the head's fc is initialised with std 0.01")
        self.must_equal(h, "spatial_type", key, "avg", "the head pools by average")
        self.must_equal(h, "multi_class", key, False, "single-label classification only")
        self.must_equal(h, "label_smooth_eps", key, 0, "no label smoothing")
        self.must_equal(h, "mode", key, "3D", "a 3D-CNN head")
        loss = h.get("loss_cls", {"type": "CrossEntropyLoss"})
        if not isinstance(loss, Mapping) or loss.get("type") != "CrossEntropyLoss" or \
                any(k not in ("type", "loss_weight") for k in loss) or loss.get("loss_weight", 1.0) != 1.0:
            raise self.error(f"{key}.loss_cls", f"{loss!r} is not supported (plain CrossEntropyLoss)")
        self._head_in = h.get("in_channels")
        return num_classes, dropout

    def check_head(self, arch: str, num_classes: int, in_channels: int) -> None:
        from posestream.train.models import build_model

        expected = _head_channels(arch, build_model)
        if self._head_in is not None and self._head_in != expected:
            raise self.error("model.cls_head.in_channels", f"{self._head_in!r}, but the {arch} backbone "
                                                           f"outputs {expected} channels")

    # --- data ---------------------------------------------------------------------------------

    def split(self, d: Any, which: str) -> SplitConfig:
        key = f"data.{which}"
        d = self.require_dict(d, key)
        times = 1
        while d.get("type") == "RepeatDataset":
            self.check_keys(d, key, {"type", "times", "dataset", "test_mode"})
            times *= self.number(d.get("times", 1), f"{key}.times", integer=True, positive=True)
            key = f"{key}.dataset"
            d = self.require_dict(d.get("dataset"), key)
        if d.get("type") != "PoseDataset":
            raise self.error(f"{key}.type", f"{d.get('type')!r} is not supported (PoseDataset, optionally "
                                            "inside a RepeatDataset)")
        self.check_keys(d, key, {"type", "ann_file", "pipeline", "split", "data_prefix", "test_mode", "valid_ratio",
                                 "box_thr", "class_prob", "memcached", "mc_cfg", "multi_class", "num_classes",
                                 "start_index", "modality"})
        ann_file = d.get("ann_file")
        if not isinstance(ann_file, (str, os.PathLike)) or not os.fspath(ann_file):
            raise self.error(f"{key}.ann_file", f"expected a pickle path, got {ann_file!r}")
        ann_file = os.fspath(ann_file)
        if not ann_file.endswith(".pkl"):
            raise self.error(f"{key}.ann_file", f"{ann_file} is not a .pkl file (PYSKL's PoseDataset reads pickles)")
        if d.get("data_prefix"):
            raise self.error(f"{key}.data_prefix", "is not supported: frame_dir names are used as they are")
        if d.get("valid_ratio"):
            raise self.error(f"{key}.valid_ratio", "is not supported (it needs PYSKL's compressed Kinetics "
                                                   "annotations with box scores)")
        if d.get("memcached"):
            raise self.error(f"{key}.memcached", "PYSKL's memcached keypoint cache is not supported")
        if d.get("multi_class"):
            raise self.error(f"{key}.multi_class", "multi-label datasets are not supported")
        split = d.get("split")
        if split is not None and not isinstance(split, str):
            raise self.error(f"{key}.split", f"expected a split name, got {split!r}")
        class_prob = None
        if d.get("class_prob") is not None:
            if which != "train":
                raise self.error(f"{key}.class_prob", "only applies to the training split")
            cp = d["class_prob"]
            items = enumerate(cp) if isinstance(cp, (list, tuple)) else cp.items() if isinstance(cp, Mapping) else None
            if items is None:
                raise self.error(f"{key}.class_prob", f"expected a list or dict of class multipliers, got {cp!r}")
            class_prob = {int(c): self.number(p, f"{key}.class_prob[{c}]", minimum=0) for c, p in items}
        pipeline = d.get("pipeline")
        if not isinstance(pipeline, (list, tuple)):
            raise self.error(f"{key}.pipeline", f"expected a list of steps, got {type(pipeline).__name__}")
        steps = self.pipeline(pipeline, f"{key}.pipeline", which)
        return SplitConfig(ann_file=ann_file, split=split, pipeline=steps, times=times, class_prob=class_prob)

    def pipeline(self, pipeline: Sequence, key: str, which: str) -> tuple[Step, ...]:
        steps = []
        for i, item in enumerate(pipeline):
            where = f"{key}[{i}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
                raise self.error(where, f"expected dict(type=..., ...), got {item!r}")
            kwargs = {k: v for k, v in item.items() if k != "type"}
            name = item["type"]
            where = f"{where} ({name})"
            if name not in _STEP_TRANSLATORS:
                hint = _UNSUPPORTED_HINTS.get(name, "")
                supported = ", ".join(sorted(_STEP_TRANSLATORS))
                raise self.error(where, f"is not supported{hint}; supported steps: {supported}")
            translator = _STEP_TRANSLATORS[name]
            if translator is None:
                continue  # Collect / ToTensor: the data loader does their job
            steps.append(translator(self, kwargs, where, which))
        names = [s.name for s in steps]
        for needed in ("UniformSampleFrames", "PoseDecode", "GeneratePoseTarget", "FormatShape"):
            if names.count(needed) != 1:
                raise self.error(key, f"needs exactly one {needed} step, found {names.count(needed)}")
        if names[-1] != "FormatShape":
            raise self.error(key, f"must end with FormatShape (before Collect/ToTensor), ends with {names[-1]}")
        return tuple(steps)

    def heatmap_of(self, split: SplitConfig, which: str) -> tuple[str, str | None, float]:
        step = next(s for s in split.pipeline if s.name == "GeneratePoseTarget")
        if step.kwargs["with_limb"]:
            return "limbs", step.kwargs["limbs"], float(step.kwargs["sigma"])
        return "joints", None, float(step.kwargs["sigma"])

    # --- optimisation -----------------------------------------------------------------------------

    def optimizer(self) -> dict:
        opt = self.require_dict(self.v.get("optimizer") or dict(type="SGD", lr=0.4, momentum=0.9, weight_decay=3e-4),
                                "optimizer")
        allowed = {"SGD": {"lr", "momentum", "weight_decay", "dampening", "nesterov"},
                   "Adam": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
                   "AdamW": {"lr", "betas", "eps", "weight_decay", "amsgrad"}}
        otype = opt.get("type")
        if otype not in allowed:
            raise self.error("optimizer.type", f"{otype!r} is not supported ({', '.join(allowed)} are)")
        if opt.get("paramwise_cfg"):
            raise self.error("optimizer.paramwise_cfg", "per-parameter settings are not supported")
        self.check_keys(opt, "optimizer", allowed[otype] | {"type", "paramwise_cfg"})
        out = {k: v for k, v in opt.items() if k != "paramwise_cfg"}
        out["lr"] = self.number(opt.get("lr"), "optimizer.lr", positive=True)
        if "weight_decay" in opt:
            out["weight_decay"] = self.number(opt["weight_decay"], "optimizer.weight_decay", minimum=0)
        if "momentum" in opt:
            out["momentum"] = self.number(opt["momentum"], "optimizer.momentum", minimum=0)
        if "betas" in opt:
            out["betas"] = tuple(float(b) for b in opt["betas"])
        return out

    def grad_clip(self) -> dict | None:
        oc = self.require_dict(self.v.get("optimizer_config") or {}, "optimizer_config")
        if oc.get("type") not in (None, "OptimizerHook"):
            raise self.error("optimizer_config.type", f"{oc['type']!r} is not supported (mixed precision is "
                                                      "automatic on CUDA)")
        self.check_keys(oc, "optimizer_config", {"type", "grad_clip", "detect_anomalous_params"})
        gc = oc.get("grad_clip")
        if gc is None:
            return None
        gc = self.require_dict(gc, "optimizer_config.grad_clip")
        self.check_keys(gc, "optimizer_config.grad_clip", {"max_norm", "norm_type"})
        return dict(max_norm=self.number(gc.get("max_norm"), "optimizer_config.grad_clip.max_norm", positive=True),
                    norm_type=self.number(gc.get("norm_type", 2), "optimizer_config.grad_clip.norm_type", positive=True))

    def lr_config(self) -> dict:
        lc = self.require_dict(self.v.get("lr_config") or dict(policy="fixed"), "lr_config")
        policy = str(lc.get("policy", ""))
        policy = policy[:1].upper() + policy[1:]
        key = "lr_config"
        common = {"policy", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch"}
        out: dict[str, Any] = {"policy": policy, "by_epoch": bool(lc.get("by_epoch", True))}
        if policy == "CosineAnnealing":
            self.check_keys(lc, key, common | {"min_lr", "min_lr_ratio"})
            if lc.get("min_lr") is not None and lc.get("min_lr_ratio") is not None:
                raise self.error(f"{key}.min_lr_ratio", "give min_lr or min_lr_ratio, not both")
            if lc.get("min_lr_ratio") is not None:
                out["min_lr_ratio"] = self.number(lc["min_lr_ratio"], f"{key}.min_lr_ratio", minimum=0)
            else:
                out["min_lr"] = self.number(lc.get("min_lr", 0.0), f"{key}.min_lr", minimum=0)
        elif policy == "Step":
            self.check_keys(lc, key, common | {"step", "gamma", "min_lr"})
            step = lc.get("step")
            if isinstance(step, int) and not isinstance(step, bool):
                out["step"] = self.number(step, f"{key}.step", integer=True, positive=True)
            elif isinstance(step, (list, tuple)) and step:
                out["step"] = [self.number(s, f"{key}.step", integer=True, minimum=0) for s in step]
            else:
                raise self.error(f"{key}.step", f"expected an int or a list of ints, got {step!r}")
            out["gamma"] = self.number(lc.get("gamma", 0.1), f"{key}.gamma", positive=True)
            if lc.get("min_lr") is not None:
                out["min_lr"] = self.number(lc["min_lr"], f"{key}.min_lr", minimum=0)
        elif policy == "Fixed":
            self.check_keys(lc, key, common)
        else:
            raise self.error(f"{key}.policy", f"{lc.get('policy')!r} is not supported "
                                              "(CosineAnnealing, step and fixed are)")
        warmup = lc.get("warmup")
        if warmup is not None:
            if warmup not in ("linear", "constant", "exp"):
                raise self.error(f"{key}.warmup", f"{warmup!r} is not supported (linear, constant, exp)")
            out["warmup"] = warmup
            out["warmup_iters"] = self.number(lc.get("warmup_iters"), f"{key}.warmup_iters", integer=True,
                                              positive=True)
            ratio = self.number(lc.get("warmup_ratio", 0.1), f"{key}.warmup_ratio", positive=True)
            if ratio > 1:
                raise self.error(f"{key}.warmup_ratio", f"{ratio} must be in (0, 1]")
            out["warmup_ratio"] = ratio
            out["warmup_by_epoch"] = bool(lc.get("warmup_by_epoch", False))
        return out

    def total_epochs(self) -> int:
        runner = self.v.get("runner")
        if runner is not None:
            runner = self.require_dict(runner, "runner")
            if runner.get("type", "EpochBasedRunner") != "EpochBasedRunner":
                raise self.error("runner.type", f"{runner.get('type')!r} is not supported (EpochBasedRunner)")
            if "max_epochs" in runner:
                return self.number(runner["max_epochs"], "runner.max_epochs", integer=True, positive=True)
        if "total_epochs" not in self.v:
            raise self.error("total_epochs", "missing")
        return self.number(self.v["total_epochs"], "total_epochs", integer=True, positive=True)

    def class_names(self, num_classes: int) -> tuple[str, ...] | None:
        names = self.v.get("class_names")
        key = "class_names"
        if names is None and self.v.get("label_map"):
            key = "label_map"
            label_map = Path(os.fspath(self.v["label_map"]))
            candidates = [label_map]
            if not label_map.is_absolute():
                if self.config_dir is not None:
                    candidates.append(self.config_dir / label_map)
                candidates.append(CONFIG_DIR / label_map)  # a copy of a shipped config
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise self.error(key, f"{label_map}: no such file (looked in the current directory, beside the "
                                      "config and among the shipped label maps)")
            names = [line.strip() for line in found.read_text(encoding="utf-8").splitlines() if line.strip()]
        if names is None:
            return None
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise self.error(key, "expected a list of class-name strings")
        if len(names) != num_classes:
            raise self.error(key, f"{len(names)} class names for num_classes={num_classes}")
        return tuple(names)


def _heat_desc(heat: tuple[str, str | None, float]) -> str:
    kind, limbs, sigma = heat
    return f"joint heatmaps (sigma {sigma})" if kind == "joints" else f"limb heatmaps in {limbs} order (sigma {sigma})"


def _norm(value: Any) -> Any:
    """Lists -> tuples, whole floats -> ints (recursively), for comparing config values."""
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _norm(v)) for k, v in value.items()))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_HEAD_CHANNELS: dict[str, int] = {}


def _head_channels(arch: str, build_model) -> int:
    if arch not in _HEAD_CHANNELS:
        _HEAD_CHANNELS[arch] = build_model(arch, num_classes=1).head.fc.in_features
    return _HEAD_CHANNELS[arch]


# The PYSKL backbone settings that define each of our variants (PYSKL's defaults filled in).
_SLOWONLY_POSE = dict(stage_blocks=(4, 6, 3), inflate=(0, 1, 1), spatial_strides=(2, 2, 2),
                      temporal_strides=(1, 1, 2), conv1_kernel=(1, 7, 7), conv1_stride=(1, 1), pool1_stride=(1, 1),
                      out_indices=(2,), dilations=(1, 1, 1))
_SLOWONLY_VARIANTS = {
    "slowonly": dict(base_channels=32, **_SLOWONLY_POSE),
    "slowonly_wd": dict(base_channels=64, **_SLOWONLY_POSE),
    "slowonly_volleyball": dict(base_channels=16, **_SLOWONLY_POSE),
    "slowonly_hr": dict(base_channels=32, stage_blocks=(3, 4, 6, 3), inflate=(0, 0, 1, 1),
                        spatial_strides=(2, 2, 2, 2), temporal_strides=(1, 1, 1, 2), conv1_kernel=(1, 7, 7),
                        conv1_stride=(1, 1), pool1_stride=(1, 1), out_indices=(3,), dilations=(1, 1, 1, 1)),
}
_C3D_VARIANTS = {
    "c3d_s": dict(base_channels=32, num_stages=3, temporal_downsample=False),
    "c3d": dict(base_channels=32, num_stages=4, temporal_downsample=False),
}
_X3D_VARIANTS = {
    "x3d_s": dict(base_channels=24, stage_blocks=(2, 5, 3), spatial_strides=(2, 2, 2), gamma_b=2.25),
    "x3d": dict(base_channels=24, stage_blocks=(5, 11, 7), spatial_strides=(2, 2, 2), gamma_b=2.25),
}


# ---------------------------------------------------------------------------------------------
# Pipeline steps: PYSKL name -> translator -> Step(our class name, our kwargs)


def _kw(t: _Translator, kwargs: dict, where: str, allowed: set[str]) -> None:
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise t.error(f"{where}.{unknown[0]}", f"is not supported (supported: {', '.join(sorted(allowed)) or 'none'})")


def _pair_or_number(t: _Translator, value: Any, key: str) -> Any:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise t.error(key, f"expected a number or a pair, got {value!r}")
        return tuple(t.number(v, key) for v in value)
    return t.number(value, key)


def _uniform_sample_frames(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, {"clip_len", "num_clips", "p_interval", "seed", "test_mode"})
    test_mode = which != "train"
    if "test_mode" in kw and bool(kw["test_mode"]) != test_mode:
        raise t.error(f"{where}.test_mode", f"{kw['test_mode']!r} in the {which} pipeline: posestream samples "
                                            f"the train split randomly and val/test deterministically, as PYSKL")
    out = dict(clip_len=t.number(kw.get("clip_len"), f"{where}.clip_len", integer=True, positive=True),
               num_clips=t.number(kw.get("num_clips", 1), f"{where}.num_clips", integer=True, positive=True),
               test_mode=test_mode,
               seed=t.number(kw.get("seed", 255), f"{where}.seed", integer=True, minimum=0),
               p_interval=_pair_or_number(t, kw.get("p_interval", 1), f"{where}.p_interval"))
    if which == "train" and out["num_clips"] != 1:
        raise t.error(f"{where}.num_clips", "training takes one clip per video (num_clips=1)")
    return Step("UniformSampleFrames", out)


def _pose_decode(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, set())
    return Step("PoseDecode", {})


def _pose_compact(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, {"padding", "threshold", "hw_ratio", "allow_imgpad"})
    out: dict[str, Any] = dict(padding=t.number(kw.get("padding", 0.25), f"{where}.padding", minimum=0),
                               threshold=t.number(kw.get("threshold", 10), f"{where}.threshold", minimum=0),
                               allow_imgpad=bool(kw.get("allow_imgpad", True)))
    hw = kw.get("hw_ratio")
    out["hw_ratio"] = None if hw is None else _pair_or_number(t, hw, f"{where}.hw_ratio")
    return Step("PoseCompact", out)


def _resize(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, {"scale", "keep_ratio", "interpolation"})
    scale = kw.get("scale")
    if isinstance(scale, (list, tuple)):
        if len(scale) != 2 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale):
            raise t.error(f"{where}.scale", f"expected a factor, (w, h) or (-1, short side), got {scale!r}")
        scale = tuple(int(s) if float(s).is_integer() else s for s in scale)
    else:
        scale = t.number(scale, f"{where}.scale", positive=True)
    return Step("Resize", dict(scale=scale, keep_ratio=bool(kw.get("keep_ratio", True))))


def _random_resized_crop(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, {"area_range", "aspect_ratio_range"})
    out = {}
    for name, default in (("area_range", (0.08, 1.0)), ("aspect_ratio_range", (3 / 4, 4 / 3))):
        value = kw.get(name, default)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise t.error(f"{where}.{name}", f"expected a (low, high) pair, got {value!r}")
        out[name] = tuple(t.number(v, f"{where}.{name}", positive=True) for v in value)
    return Step("RandomResizedCrop", out)


def _index_list(t: _Translator, value: Any, key: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise t.error(key, f"expected a list of keypoint indices, got {value!r}")
    return tuple(t.number(v, key, integer=True, minimum=0) for v in value)


def _flip(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, {"flip_ratio", "direction", "flip_label_map", "left_kp", "right_kp"})
    if kw.get("direction", "horizontal") != "horizontal":
        raise t.error(f"{where}.direction", f"{kw['direction']!r} is not supported (keypoints flip horizontally)")
    if kw.get("flip_label_map"):
        raise t.error(f"{where}.flip_label_map", "label swapping on flip is not supported")
    left, right = _index_list(t, kw.get("left_kp"), f"{where}.left_kp"), _index_list(t, kw.get("right_kp"), f"{where}.right_kp")
    if len(left) != len(right) or (kw.get("left_kp") is None) != (kw.get("right_kp") is None):
        raise t.error(f"{where}.left_kp", "left_kp and right_kp must pair up one to one")
    ratio = t.number(kw.get("flip_ratio", 0.5), f"{where}.flip_ratio", minimum=0)
    return Step("Flip", dict(flip_ratio=ratio, left_kp=left, right_kp=right))


_PYSKL_DEFAULT_LEFT_LIMB = (0, 2, 4, 5, 6, 10, 11, 12)
_PYSKL_DEFAULT_RIGHT_LIMB = (1, 3, 7, 8, 9, 13, 14, 15)


def _generate_pose_target(t: _Translator, kw: dict, where: str, which: str) -> Step:
    from posestream.skeleton import LIMB_LAYOUTS

    _kw(t, kw, where, {"sigma", "use_score", "with_kp", "with_limb", "skeletons", "double", "left_kp", "right_kp",
                       "left_limb", "right_limb", "scaling"})
    with_kp, with_limb = bool(kw.get("with_kp", True)), bool(kw.get("with_limb", False))
    if with_kp == with_limb:
        raise t.error(where, "exactly one of with_kp and with_limb must be True")
    if kw.get("scaling", 1) != 1:
        raise t.error(f"{where}.scaling", f"{kw['scaling']!r} is not supported (resize with a Resize step)")
    double = bool(kw.get("double", False))
    if double and which == "train":
        raise t.error(f"{where}.double", "double (flip) volumes are for testing only")
    left_kp = _index_list(t, kw.get("left_kp", (1, 3, 5, 7, 9, 11, 13, 15)), f"{where}.left_kp")
    right_kp = _index_list(t, kw.get("right_kp", (2, 4, 6, 8, 10, 12, 14, 16)), f"{where}.right_kp")
    if len(left_kp) != len(right_kp):
        raise t.error(f"{where}.left_kp", "left_kp and right_kp must pair up one to one")
    out: dict[str, Any] = dict(sigma=t.number(kw.get("sigma", 0.6), f"{where}.sigma", positive=True),
                               use_score=bool(kw.get("use_score", True)), with_kp=with_kp, with_limb=with_limb,
                               double=double, left_kp=left_kp, right_kp=right_kp, limbs="pyskl_default")
    if with_limb:
        skeletons = kw.get("skeletons")
        if skeletons is None:
            layout = LIMB_LAYOUTS["pyskl_default"]
        else:
            try:
                pairs = tuple((int(a), int(b)) for a, b in skeletons)
            except (TypeError, ValueError):
                raise t.error(f"{where}.skeletons", "expected a list of [a, b] keypoint index pairs") from None
            layout = next((lay for lay in LIMB_LAYOUTS.values() if lay.pairs == pairs), None)
            if layout is None:
                raise t.error(f"{where}.skeletons", f"these {len(pairs)} limbs match no known limb order "
                                                    f"({', '.join(LIMB_LAYOUTS)}); a model's limb order is part "
                                                    "of its checkpoint card")
        if double:  # the mirrored limb volume swaps channels by left_limb/right_limb
            left = _index_list(t, kw.get("left_limb", _PYSKL_DEFAULT_LEFT_LIMB), f"{where}.left_limb")
            right = _index_list(t, kw.get("right_limb", _PYSKL_DEFAULT_RIGHT_LIMB), f"{where}.right_limb")
            if sorted(zip(left, right)) != sorted(zip(layout.left, layout.right)):
                raise t.error(f"{where}.left_limb", f"left_limb/right_limb {left}/{right} do not mirror the "
                                                    f"{layout.name} limb order (its left/right limbs are "
                                                    f"{layout.left}/{layout.right}); flip testing would swap the "
                                                    "wrong channels")
        out["limbs"] = layout.name
    else:
        out["limbs"] = None
    return Step("GeneratePoseTarget", out)


def _format_shape(t: _Translator, kw: dict, where: str, which: str) -> Step:
    _kw(t, kw, where, {"input_format"})
    if kw.get("input_format") != "NCTHW_Heatmap":
        raise t.error(f"{where}.input_format", f"{kw.get('input_format')!r} is not supported ('NCTHW_Heatmap')")
    return Step("FormatShape", dict(input_format="NCTHW_Heatmap"))


_STEP_TRANSLATORS = {
    "UniformSampleFrames": _uniform_sample_frames,
    "PoseDecode": _pose_decode,
    "PoseCompact": _pose_compact,
    "Resize": _resize,
    "RandomResizedCrop": _random_resized_crop,
    "Flip": _flip,
    "GeneratePoseTarget": _generate_pose_target,
    "FormatShape": _format_shape,
    "Collect": None,
    "ToTensor": None,
}

_UNSUPPORTED_HINTS = {
    "DecompressPose": " (PYSKL's compressed Kinetics pose format: convert the pickle to full keypoint "
                      "[M, T, V, 2] clips and drop this step)",
    "PoseNormalize": " (a GCN step)", "PreNormalize2D": " (a GCN step)", "PreNormalize3D": " (a GCN step)",
    "GenSkeFeat": " (a GCN step)", "FormatGCNInput": " (a GCN step)", "JointToBone": " (a GCN step)",
    "RandomRot": " (a GCN step)", "RandomScale": " (a GCN step)", "PadTo": " (a GCN step)",
    "UniformSample": " (a GCN step; PoseConv3D uses UniformSampleFrames)",
    "MMUniformSampleFrames": " (RGBPose-Conv3D; posestream trains skeleton-only models)",
    "MMDecode": " (RGBPose-Conv3D; posestream trains skeleton-only models)",
    "MMCompact": " (RGBPose-Conv3D; posestream trains skeleton-only models)",
}


def _step_classes() -> dict[str, Any]:
    from posestream.train import transforms as T

    return {name: getattr(T, name) for name in ("UniformSampleFrames", "PoseDecode", "PoseCompact", "Resize",
                                                "RandomResizedCrop", "Flip", "GeneratePoseTarget", "FormatShape")}


class _LazySteps(dict):
    def __missing__(self, key):
        self.update(_step_classes())
        return dict.__getitem__(self, key)


#: posestream transform class by name (the names PYSKL uses).
PIPELINE_STEPS: dict[str, Any] = _LazySteps()
