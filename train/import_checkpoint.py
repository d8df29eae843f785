"""Import a PYSKL or MMAction2 PoseC3D checkpoint into a posestream checkpoint.

    from posestream.train.import_checkpoint import import_checkpoint
    report = import_checkpoint("slowonly_r50_ntu60_xsub_limb.pth", "slowonly", "ours.pth", heatmap="limbs")
    print(report.summary())

PYSKL and MMAction2 (0.x and 1.x, ``configs/skeleton/posec3d``) name their weights the same way
(mmcv's ``ConvModule``: ``backbone.conv1.conv.weight``, ``backbone.layer1.0.conv1.bn.running_mean``,
``cls_head.fc_cls.weight``). Our models use the same names except for a few prefixes,
:data:`NAME_RULES` (the table of ``train/models/zoo.py``'s docstring).

What happens to each entry of the source checkpoint:

* ``module.`` (left by DDP training) is stripped from every key that has it.
* ``data_preprocessor.*`` (MMAction2 1.x: the input mean/std of its data preprocessor) is not a
  model weight: it is *skipped*, listed in the report and kept (as numbers) in the card's
  ``extra["import"]``.
* Every other key is renamed by :data:`NAME_RULES` and must land on a weight of the freshly
  built model with the same shape. With ``strict=True`` (the default) a single error lists every
  key that has no place, every model weight the checkpoint lacks and every shape mismatch, and
  nothing is written. ``strict=False`` imports what fits, leaves the rest freshly initialised
  and reports it.
* BatchNorm ``num_batches_tracked`` counters missing from an old checkpoint are not an error:
  they only count training steps (used by no PoseC3D model); the fresh zeros are kept and listed
  as ``filled``.
* Top-level entries other than ``state_dict`` (``meta``, ``optimizer``, MMEngine's
  ``message_hub`` ...) are ignored and named in the report.

The file is read with ``torch.load(weights_only=True)`` (plus numpy scalars, which mmcv puts in
``meta``); a checkpoint whose ``meta`` holds other Python objects is refused unless
``trusted=True`` (CLI: ``--trust-pickle``), since the full unpickler can run arbitrary code.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from posestream.skeleton import LIMB_LAYOUTS, NUM_KEYPOINTS
from posestream.train.checkpoints import ModelCard, save_checkpoint

__all__ = [
    "NAME_RULES", "SKIPPED_PREFIXES", "ImportReport", "CheckpointImportError", "import_checkpoint",
    "to_pyskl_name", "from_pyskl_name", "to_pyskl_state_dict", "input_conv_key", "classifier_key",
]

# posestream prefix                       PYSKL / MMAction2 prefix                        models
NAME_RULES: tuple[tuple[str, str], ...] = (
    ("head.fc.",                           "cls_head.fc_cls."),                         # all single-path
    ("head.fc_rgb.",                       "cls_head.fc_rgb."),                         # RGBPose
    ("head.fc_pose.",                      "cls_head.fc_pose."),                        # RGBPose
    ("backbone.stem.conv_s.weight",        "backbone.conv1_s.conv.weight"),             # X3D
    ("backbone.stem.conv_t.",              "backbone.conv1_t."),                        # X3D
    ("backbone.stem.",                     "backbone.conv1."),                          # SlowOnly
    ("backbone.rgb_path.stem.",            "backbone.rgb_path.conv1."),                 # RGBPose
    ("backbone.pose_path.stem.",           "backbone.pose_path.conv1."),                # RGBPose
    ("backbone.pose_to_rgb_res3.weight",   "backbone.rgb_path.layer2_lateral.conv.weight"),  # RGBPose
    ("backbone.pose_to_rgb_res4.weight",   "backbone.rgb_path.layer3_lateral.conv.weight"),  # RGBPose
    ("backbone.rgb_to_pose_res3.",         "backbone.pose_path.layer1_lateral."),       # RGBPose
    ("backbone.rgb_to_pose_res4.",         "backbone.pose_path.layer2_lateral."),       # RGBPose
)
"""Applied top to bottom, first matching prefix wins; a key no rule matches keeps its name
(``backbone.layer1.0.conv1.bn.weight``, ``backbone.conv3b.conv.weight``, ...)."""

SKIPPED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("data_preprocessor.", "MMAction2 1.x data-preprocessor input mean/std, not a model weight"),
)

class CheckpointImportError(ValueError):
    """A checkpoint cannot be imported; ``str(error)`` is one line naming the file."""


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return key


_TO_PYSKL = NAME_RULES
_FROM_PYSKL = tuple((pyskl, ours) for ours, pyskl in NAME_RULES)


def to_pyskl_name(key: str) -> str:
    """Our state-dict name -> PYSKL's (``head.fc.weight`` -> ``cls_head.fc_cls.weight``)."""
    return _rename(key, _TO_PYSKL)


def from_pyskl_name(key: str) -> str:
    """PYSKL's / MMAction2's state-dict name -> ours
    (``backbone.conv1.conv.weight`` -> ``backbone.stem.conv.weight``)."""
    return _rename(key, _FROM_PYSKL)


def to_pyskl_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One of our models' state dict, renamed as PYSKL would have saved it (tests, export)."""
    return {to_pyskl_name(k): v for k, v in state_dict.items()}


def input_conv_key(arch: str) -> str:
    """Our name of the convolution that reads the heatmaps (its weight's dim 1 is K)."""
    if arch == "rgbpose_conv3d":
        return "backbone.pose_path.stem.conv.weight"
    if arch.startswith("x3d"):
        return "backbone.stem.conv_s.weight"
    if arch.startswith("c3d"):
        return "backbone.conv1a.conv.weight"
    return "backbone.stem.conv.weight"


def classifier_key(arch: str) -> str:
    """Our name of the final linear layer's weight (its dim 0 is the class count)."""
    return "head.fc_pose.weight" if arch == "rgbpose_conv3d" else "head.fc.weight"


@dataclass
class ImportReport:
    """What :func:`import_checkpoint` did. Key lists use the checkpoint's own (PYSKL) names."""

    arch: str
    num_classes: int
    in_channels: int
    heatmap: str
    limbs: str | None
    src: str
    out: str
    source: str                                                # the card's ``source`` text
    mapped: dict[str, str] = field(default_factory=dict)       # checkpoint key -> our key, loaded
    skipped: dict[str, str] = field(default_factory=dict)      # checkpoint key -> why (not a weight)
    unplaced: list[str] = field(default_factory=list)          # checkpoint keys with no place in the model
    missing: list[str] = field(default_factory=list)           # model weights the checkpoint lacks
    mismatched: list[str] = field(default_factory=list)        # "name: checkpoint [..] vs model [..]"
    filled: list[str] = field(default_factory=list)            # num_batches_tracked counters kept at 0
    ignored_top_level: list[str] = field(default_factory=list)  # meta, optimizer, ...

    @property
    def complete(self) -> bool:
        """Every model weight came from the checkpoint and every checkpoint weight was used."""
        return not (self.unplaced or self.missing or self.mismatched)

    def summary(self) -> str:
        limbs = f", limbs in {self.limbs} order" if self.limbs else ""
        lines = [f"wrote {self.out}: {self.arch}, {self.num_classes} classes, {self.in_channels} "
                 f"{self.heatmap[:-1]}-heatmap channels{limbs}; {len(self.mapped)} weights imported from {self.src}"]
        for key, why in self.skipped.items():
            lines.append(f"  skipped {key}: {why}")
        if self.ignored_top_level:
            lines.append(f"  ignored top-level entries: {', '.join(self.ignored_top_level)}")
        if self.filled:
            lines.append(f"  {len(self.filled)} BatchNorm num_batches_tracked counters absent, kept at 0")
        if not self.complete:
            lines.append("  NOT COMPLETE (strict=False): " + _problems(self.unplaced, self.missing, self.mismatched))
        return "\n".join(lines)


def import_checkpoint(src: str | os.PathLike, arch: str, out: str | os.PathLike, *,
                      num_classes: int | None = None, heatmap: str = "joints", limbs: str | None = None,
                      strict: bool = True, trusted: bool = False, class_names: list[str] | None = None,
                      clip_len: int = 48, size: int = 64) -> ImportReport:
    """Convert a PYSKL / MMAction2 PoseC3D checkpoint ``src`` into our format at ``out``.

    ``arch``: one of ``MODEL_NAMES``. ``num_classes``: inferred from ``cls_head.fc_cls.weight``
    when None. ``in_channels`` is read from the first convolution. ``heatmap="limbs"`` marks a
    limb model; its limb order ``limbs`` defaults to ``"pyskl_released"`` (the order of PYSKL's
    released limb configs, hence of its released limb checkpoints). ``clip_len``/``size``: the
    test-time volume geometry for the card (PYSKL's NTU test pipeline: 48 frames, 64x64).

    Raises :class:`CheckpointImportError` (a ``ValueError``, one line) and writes nothing when the
    file cannot be read, or (``strict=True``) when any weight does not fit.
    """
    from posestream.train.models import MODEL_NAMES, build_model

    src_name = os.fspath(src)
    if arch not in MODEL_NAMES:
        raise CheckpointImportError(f"unknown arch {arch!r}; choose one of {', '.join(MODEL_NAMES)}")
    if heatmap not in ("joints", "limbs"):
        raise CheckpointImportError(f"heatmap must be 'joints' or 'limbs', got {heatmap!r}")
    if heatmap == "joints" and limbs is not None:
        raise CheckpointImportError(f"limbs={limbs!r} given for a joint model; pass heatmap='limbs' "
                                    "(CLI: --heatmap limbs) for a limb model")
    if heatmap == "limbs":
        limbs = limbs or "pyskl_released"
        if limbs not in LIMB_LAYOUTS:
            raise CheckpointImportError(f"unknown limb order {limbs!r}; choose one of {', '.join(LIMB_LAYOUTS)}")
    if os.path.exists(out) and os.path.exists(src) and os.path.samefile(src, out):
        raise CheckpointImportError(f"{os.fspath(out)}: the output would overwrite the source checkpoint")
    expected_channels = len(LIMB_LAYOUTS[limbs]) if heatmap == "limbs" else NUM_KEYPOINTS

    raw, ignored_top_level = _load_state_dict(src_name, trusted)

    # 1. sort the checkpoint's entries: skipped (not weights) or renamed to ours
    skipped: dict[str, str] = {}
    preprocessor: dict[str, list[float]] = {}
    ours: dict[str, tuple[str, torch.Tensor]] = {}   # our key -> (checkpoint key, tensor)
    unplaced: list[str] = []
    for key, value in raw.items():
        reason = next((why for prefix, why in SKIPPED_PREFIXES if key.startswith(prefix)), None)
        if reason is not None:
            skipped[key] = reason
            if isinstance(value, torch.Tensor) and value.numel() <= 64:
                preprocessor[key] = value.detach().flatten().tolist()
            continue
        if not isinstance(value, torch.Tensor):
            skipped[key] = f"not a tensor ({type(value).__name__})"
            continue
        name = from_pyskl_name(key)
        if name in ours:   # two names for one weight (e.g. a checkpoint mixing both namings)
            unplaced.append(f"{key} (a second weight for {ours[name][0]})")
            continue
        ours[name] = (key, value)

    # 2. the model it must fit
    if num_classes is None:
        fc = ours.get(classifier_key(arch))
        if fc is None:
            raise CheckpointImportError(f"{src_name}: cannot infer the number of classes: no "
                                        f"{to_pyskl_name(classifier_key(arch))} in the checkpoint; pass num_classes "
                                        "(CLI: --num-classes)")
        num_classes = int(fc[1].shape[0])
    first = ours.get(input_conv_key(arch))
    in_channels = int(first[1].shape[1]) if first is not None and first[1].dim() == 5 else expected_channels
    if in_channels != expected_channels:
        what = f"{expected_channels} limbs ({limbs} order)" if heatmap == "limbs" else f"{NUM_KEYPOINTS} COCO joints"
        raise CheckpointImportError(f"{src_name}: {to_pyskl_name(input_conv_key(arch))} takes {in_channels} "
                                    f"heatmap channels, but heatmap={heatmap!r} gives {what}")
    try:
        card = ModelCard(arch=arch, num_classes=num_classes, in_channels=in_channels, heatmap=heatmap,
                         limbs=limbs if heatmap == "limbs" else None, clip_len=clip_len, size=size,
                         class_names=list(class_names) if class_names is not None else None)
    except ValueError as exc:
        raise CheckpointImportError(f"{src_name}: {exc}") from None
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels)
    target = model.state_dict()

    # 3. place every weight, or say why not
    fitting: dict[str, torch.Tensor] = {}
    mapped: dict[str, str] = {}
    mismatched: list[str] = []
    for name, (key, value) in ours.items():
        if name not in target:
            unplaced.append(key)
        elif value.shape != target[name].shape:
            mismatched.append(f"{key}: checkpoint {list(value.shape)} vs model {list(target[name].shape)}")
        else:
            fitting[name] = value
            mapped[key] = name
    missing, filled = [], []
    for name in target:
        if name in ours:
            continue
        (filled if name.endswith(".num_batches_tracked") else missing).append(to_pyskl_name(name))

    if strict and (unplaced or missing or mismatched):
        hint = _arch_hint(arch, ours, num_classes, in_channels)
        raise CheckpointImportError(
            f"{src_name}: does not fit {arch}{hint} (nothing written): "
            f"{_problems(unplaced, missing, mismatched)}. "
            "Pass strict=False (CLI: --no-strict) to import only what fits")

    # 4. write
    model.load_state_dict(fitting, strict=False)
    flavour = "MMAction2 1.x naming" if any(k.startswith("data_preprocessor.") for k in raw) else "PYSKL naming"
    card.source = f"imported from {os.path.basename(src_name)} ({flavour})"
    record: dict[str, Any] = {"file": os.path.basename(src_name), "skipped": dict(skipped)}
    if preprocessor:
        record["data_preprocessor"] = preprocessor
    if unplaced or missing or mismatched:
        record.update(unplaced=list(unplaced), missing=list(missing), mismatched=list(mismatched))
    card.extra = {"import": record}
    save_checkpoint(out, card, model.state_dict())
    return ImportReport(arch=arch, num_classes=num_classes, in_channels=in_channels, heatmap=heatmap,
                        limbs=card.limbs, src=src_name, out=os.fspath(out), source=card.source,
                        mapped=mapped, skipped=skipped, unplaced=unplaced, missing=missing,
                        mismatched=mismatched, filled=filled, ignored_top_level=ignored_top_level)


def _problems(unplaced: list[str], missing: list[str], mismatched: list[str]) -> str:
    parts = []
    if unplaced:
        parts.append(f"{len(unplaced)} checkpoint key(s) with no place in the model: {', '.join(unplaced)}")
    if missing:
        parts.append(f"{len(missing)} model weight(s) missing from the checkpoint: {', '.join(missing)}")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched)}")
    return "; ".join(parts)


def _arch_hint(arch: str, ours: dict[str, tuple[str, torch.Tensor]], num_classes: int, in_channels: int) -> str:
    """', but every weight fits c3d_s (...)' when another arch takes every weight exactly."""
    from posestream.train.models import MODEL_NAMES, build_model

    for other in MODEL_NAMES:
        if other == arch:
            continue
        with torch.device("meta"):
            target = build_model(other, num_classes=num_classes, in_channels=in_channels).state_dict()
        weights = {k for k in target if not k.endswith(".num_batches_tracked")}
        if weights <= ours.keys() and all(k in target and target[k].shape == v.shape for k, (_, v) in ours.items()):
            return f", but every weight fits {other} (CLI: --arch {other})"
    return ""


def _numpy_scalar_globals() -> list:
    """What it takes to unpickle numpy scalars (mmcv stores e.g. ``best_score`` as one in
    ``meta``): the scalar constructor and the numeric dtypes. Nothing here runs user code."""
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    names = {"numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"}
    found = [scalar] + [(scalar, n) for n in names if n != f"{scalar.__module__}.{scalar.__name__}"]
    found.append(np.dtype)
    found += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    return found


def _load_state_dict(src: str, trusted: bool) -> tuple[dict[str, Any], list[str]]:
    """Read ``src``; return its state dict (``module.`` stripped) and the other top-level keys."""
    try:
        if trusted:
            payload = torch.load(src, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_scalar_globals()):
                payload = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointImportError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise CheckpointImportError(f"{src}: is a directory, not a checkpoint file") from None
    except Exception as exc:
        msg = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        if not trusted and found:
            raise CheckpointImportError(
                f"{src}: the weights-only loader refused the Python object {found.group(1)} (PYSKL/MMAction2 "
                "checkpoints can keep such objects in 'meta'); if you trust this file, pass trusted=True "
                "(CLI: --trust-pickle): full unpickling can run arbitrary code") from None
        first = next((line.strip() for line in msg.splitlines() if line.strip()), "")
        raise CheckpointImportError(f"{src}: not a readable torch checkpoint ({type(exc).__name__}: "
                                    f"{first[:200]})") from None
    if isinstance(payload, Mapping) and payload.get("format") == "posestream-checkpoint":
        raise CheckpointImportError(f"{src}: already a posestream checkpoint; nothing to import")
    ignored: list[str] = []
    if isinstance(payload, Mapping) and "state_dict" in payload and isinstance(payload["state_dict"], Mapping):
        ignored = [str(k) for k in payload if k != "state_dict"]
        state = payload["state_dict"]
    elif isinstance(payload, Mapping) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = payload
    else:
        what = f"a dict with keys {', '.join(map(str, list(payload)[:6]))}" if isinstance(payload, Mapping) \
            else f"a {type(payload).__name__}"
        raise CheckpointImportError(f"{src}: no state dict in it (expected a dict of tensors or a dict with "
                                    f"'state_dict'; found {what})")
    stripped: dict[str, Any] = {}
    for key, value in state.items():
        key = str(key)
        stripped[key[len("module."):] if key.startswith("module.") else key] = value
    if not stripped:
        raise CheckpointImportError(f"{src}: the state dict is empty")
    return stripped, ignored
