"""posestream checkpoints: a model's weights together with what it takes to rebuild and feed it.

A checkpoint is a ``torch.save`` of a plain dict (loadable with ``weights_only=True``, so
opening one runs no code)::

    {
        "format": "posestream-checkpoint", "version": 1,
        "arch": "slowonly",            # a name from posestream.engines.card.MODEL_NAMES
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

import torch

# The card itself lives on the engines side (no torch there, so serving an ONNX model needs
# none); checkpoints store its fields next to the weights.
from posestream.engines.card import ModelCard
from posestream.files import atomic_write

FORMAT = "posestream-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, card: ModelCard, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint atomically."""
    payload = {"format": FORMAT, "version": VERSION, **card.to_dict(),
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
    try:
        card = ModelCard.from_dict(payload)
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
