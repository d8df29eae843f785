"""The model card: what a model expects besides its weights, without torch.

A card says how a model must be fed (joint or limb heatmaps, limb order, clip length, size,
sigma) and what its outputs mean (classes). Serving reads it from an ONNX file's metadata
(:func:`posestream.engines.action.card_from_metadata`), training and checkpoints
(:mod:`posestream.train.checkpoints`) write it; both use this one definition, which imports
neither torch nor the model zoo, so serving an ONNX model needs no torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from posestream.skeleton import LIMB_LAYOUTS

#: The architecture names a card may carry: the networks of the model zoo
#: (:data:`posestream.train.models.SPECS`, which ``tests/test_checkpoints.py`` checks
#: against this list), kept here so that a card is validated without importing torch.
MODEL_NAMES: tuple[str, ...] = ("slowonly", "slowonly_wd", "slowonly_hr", "c3d", "c3d_s", "x3d", "x3d_s",
                                "slowonly_volleyball", "rgbpose_conv3d")


@dataclass
class ModelCard:
    """What a checkpoint (or an exported model) says about its model besides the weights."""

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

    def to_dict(self) -> dict[str, Any]:
        """The card's fields as a plain dict (what checkpoints and ONNX metadata store)."""
        return {name: getattr(self, name) for name in CARD_FIELDS}

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> "ModelCard":
        """A card from stored fields; keys that are not card fields are ignored (a checkpoint
        also holds its weights and format keys). Raises ValueError or TypeError on bad fields."""
        if not isinstance(fields, Mapping):
            raise TypeError(f"a model card is a table of fields, got {type(fields).__name__}")
        return cls(**{k: v for k, v in fields.items() if k in CARD_FIELDS})


#: The card's field names, in order.
CARD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelCard))

__all__ = ["MODEL_NAMES", "CARD_FIELDS", "ModelCard"]
