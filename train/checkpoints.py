"""posestream checkpoints: a model's weights together with what it takes to rebuild and feed it.

A checkpoint is a ``torch.save`` of a plain dict (loadable with ``weights_only=True``, so
opening one runs no code)::

    {
        "format": "posestream-checkpoint", "version": 1,
        "arch": "slowonly",            # a name from posestream.train.models.MODEL_NAMES
        "num_classes": 60, "in_channels": 17,
        "heatmap": "joints",           # or "limbs"
        "limbs": None,                 # for limb models, the limb order it was trained with
        "clip_len": 48, "size": 64,    # the volume geometry it expects at test time
        "sigma": 0.6,
        "class_names": None,           # or a list of num_classes strings
        "source": "...",               # where the weights came from (free text)
        "state_dict": {...},
    }

Everything that serves a model (the action engines, export) reads the heatmap settings from
here, so a limb model is always fed limbs in the order it was trained with.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from posestream.files import atomic_write
from posestream.skeleton import LIMB_LAYOUTS

FORMAT = "posestream-checkpoint"
VERSION = 1


@dataclass
class ModelCard:
    """What a checkpoint says about its model besides the weights."""

    arch: str
    num_classes: int
    in_channels: int = 17
    heatmap: str = "joints"
    limbs: str | None = None
    clip_len: int = 48
    size: int = 64
    sigma: float = 0.6
    class_names: list[str] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from posestream.train.models import MODEL_NAMES

        if self.arch not in MODEL_NAMES:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.heatmap not in ("joints", "limbs"):
            raise ValueError(f"heatmap must be 'joints' or 'limbs', got {self.heatmap!r}")
        if self.heatmap == "limbs" and self.limbs not in LIMB_LAYOUTS:
            raise ValueError(f"a limb model needs its limb order, one of {', '.join(LIMB_LAYOUTS)}; got {self.limbs!r}")
        if self.heatmap == "joints" and self.limbs is not None:
            raise ValueError("a joint model has no limb order")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")


def save_checkpoint(path: str | os.PathLike, card: ModelCard, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint atomically."""
    payload = {"format": FORMAT, "version": VERSION, **_card_fields(card),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """Read a checkpoint written by :func:`save_checkpoint` (no code runs while loading)."""
    source = os.fspath(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{source}: no such file") from None
    except Exception as exc:
        raise ValueError(f"{source}: not a readable torch checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{source}: not a posestream checkpoint (for a PYSKL or MMAction2 checkpoint, "
                         "run `posestream import-checkpoint` first)")
    if payload.get("version") != VERSION:
        raise ValueError(f"{source}: checkpoint version {payload.get('version')!r}, this posestream reads {VERSION}")
    fields = {k: payload[k] for k in _card_fields(None) if k in payload}
    try:
        card = ModelCard(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None
    return card, payload["state_dict"]


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelCard]:
    """Build the model a checkpoint describes, with its weights, in eval mode."""
    from posestream.train.models import build_model

    card, state_dict = load_checkpoint(path)
    model = build_model(card.arch, num_classes=card.num_classes, in_channels=card.in_channels)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{os.fspath(path)}: weights do not fit {card.arch}: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    if missing or unexpected:
        raise ValueError(f"{os.fspath(path)}: weights do not fit {card.arch}: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    return model.eval(), card


def _card_fields(card: ModelCard | None) -> dict[str, Any]:
    names = ("arch", "num_classes", "in_channels", "heatmap", "limbs", "clip_len", "size", "sigma",
             "class_names", "source", "extra")
    if card is None:
        return dict.fromkeys(names)
    return {name: getattr(card, name) for name in names}
