"""The model zoo: one builder per PoseConv3D variant of the paper (Tables 2, 11, 12; Sec. 4.4.3).

=====================  ==============  ==============================================================
name                   paper name      architecture (input C x T x H x W at the paper's setting)
=====================  ==============  ==============================================================
slowonly (default)     SlowOnly        stem 1x7x7 32, res (4, 6, 3) widths 32/64/128 (x4 out),
                                       3x1x1 kernels in the last two stages, spatial strides
                                       (2, 2, 2), temporal (1, 1, 2); 17 x 48 x 56 x 56
slowonly_wd            SlowOnly-wd     the same at width 64 (stem 64, widths 64/128/256)
slowonly_hr            SlowOnly-HR     width 32 with the first ResNet stage kept: res (3, 4, 6, 3),
                                       3x1x1 kernels in the last two, spatial strides (2, 2, 2, 2),
                                       temporal (1, 1, 1, 2); 17 x 48 x 112 x 112
c3d                    C3D             C3D at width 32: 8 3x3x3 convs, 1x2x2 pools, no pool before
                                       conv5 (Table 11)
c3d_s                  C3D-s           C3D without the last two convs (PYSKL "C3D-light")
x3d                    X3D             X3D-S without its first stage, blocks (5, 11, 7) (gamma_d
                                       2.2), widths 24/48/96, bottleneck x2.25, no SE, ReLU
x3d_s                  X3D-s           the same with blocks (2, 5, 3) (gamma_d 1)
slowonly_volleyball    SlowOnly (VB)   ``slowonly`` at base width 16; 17 x 12 x 56 x 56 (Sec. 4.4.3)
rgbpose_conv3d         RGBPose-Conv3D  see ``rgbpose``; RGB 3 x 8 x 224 x 224 + pose 17 x 32 x 56 x 56
=====================  ==============  ==============================================================

State-dict names, and the mechanical correspondence to PYSKL's (applied top to bottom on the
key prefix; everything not listed is identical, e.g. ``backbone.layer1.0.conv1.bn.weight``,
``backbone.layer2.0.downsample.conv.weight``, ``backbone.conv3b.conv.weight``,
``backbone.layer3.4.conv2.bn.running_mean``):

===============================================  ===================================================
posestream                                       PYSKL
===============================================  ===================================================
``head.fc.``                                     ``cls_head.fc_cls.``
SlowOnly: ``backbone.stem.``                     ``backbone.conv1.``  (``conv``/``bn`` below both)
X3D: ``backbone.stem.conv_s.weight``             ``backbone.conv1_s.conv.weight``
X3D: ``backbone.stem.conv_t.``                   ``backbone.conv1_t.``
RGBPose: ``backbone.rgb_path.stem.``             ``backbone.rgb_path.conv1.``
RGBPose: ``backbone.pose_path.stem.``            ``backbone.pose_path.conv1.``
RGBPose: ``backbone.pose_to_rgb_res3.weight``    ``backbone.rgb_path.layer2_lateral.conv.weight``
RGBPose: ``backbone.pose_to_rgb_res4.weight``    ``backbone.rgb_path.layer3_lateral.conv.weight``
RGBPose: ``backbone.rgb_to_pose_res3.``          ``backbone.pose_path.layer1_lateral.``
RGBPose: ``backbone.rgb_to_pose_res4.``          ``backbone.pose_path.layer2_lateral.``
RGBPose: ``head.fc_rgb.`` / ``head.fc_pose.``    ``cls_head.fc_rgb.`` / ``cls_head.fc_pose.``
===============================================  ===================================================

Activations, pools and dropouts hold no parameters or buffers, so their names do not matter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# The names alone live with the model card (no torch there); SPECS below must hold exactly
# these, in this order (tests/test_checkpoints.py checks).
from posestream.engines.card import MODEL_NAMES

from .backbones import C3D, X3D, SlowOnly
from .heads import ClsHead
from .rgbpose import RGBPoseConv3D


class PoseConv3D(nn.Module):
    """A backbone and a classification head: ``[N, K, T, H, W]`` -> logits ``[N, num_classes]``."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.in_channels = backbone.in_channels
        self.backbone = backbone
        self.head = ClsHead(backbone.out_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a heatmap batch [N, {self.in_channels}, T, H, W], got {list(x.shape)}")
        return self.head(self.backbone(x))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    paper_name: str
    frames_hw: tuple[int, int, int]          # the paper's T, H, W (the pose input for RGBPose)
    make_backbone: Callable[[int], nn.Module] | None  # in_channels -> backbone; None for RGBPose


def _slowonly(**kw) -> Callable[[int], nn.Module]:
    return lambda c: SlowOnly(in_channels=c, **kw)


SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("slowonly", "SlowOnly", (48, 56, 56), _slowonly()),
    ModelSpec("slowonly_wd", "SlowOnly-wd", (48, 56, 56), _slowonly(base_channels=64)),
    ModelSpec("slowonly_hr", "SlowOnly-HR", (48, 112, 112),
              _slowonly(stage_blocks=(3, 4, 6, 3), inflate=(0, 0, 1, 1), spatial_strides=(2, 2, 2, 2),
                        temporal_strides=(1, 1, 1, 2))),
    ModelSpec("c3d", "C3D", (48, 56, 56), lambda c: C3D(in_channels=c, num_stages=4)),
    ModelSpec("c3d_s", "C3D-s", (48, 56, 56), lambda c: C3D(in_channels=c, num_stages=3)),
    ModelSpec("x3d", "X3D", (48, 56, 56), lambda c: X3D(in_channels=c, stage_blocks=(5, 11, 7))),
    ModelSpec("x3d_s", "X3D-s", (48, 56, 56), lambda c: X3D(in_channels=c, stage_blocks=(2, 5, 3))),
    ModelSpec("slowonly_volleyball", "SlowOnly (Volleyball, width 16)", (12, 56, 56),
              _slowonly(base_channels=16)),
    ModelSpec("rgbpose_conv3d", "RGBPose-Conv3D", (32, 56, 56), None),
)}

RGB_INPUT_SHAPE = (3, 8, 224, 224)


def build_model(name: str = "slowonly", num_classes: int = 60, in_channels: int = 17,
                dropout: float = 0.5) -> nn.Module:
    """Build a variant by name (see ``MODEL_NAMES``), freshly initialised as PYSKL does.

    ``in_channels`` is K: 17 for joint heatmaps, the limb count for limb heatmaps. The model
    carries ``name``, ``paper_name`` and ``paper_input_shape`` (``(K, T, H, W)``; for
    RGBPose-Conv3D a pair ``((3, 8, 224, 224), (K, 32, 56, 56))``).
    """
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}")
    spec = SPECS[name]
    if spec.make_backbone is None:
        model: nn.Module = RGBPoseConv3D(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
        model.paper_input_shape = (RGB_INPUT_SHAPE, (in_channels, *spec.frames_hw))
    else:
        model = PoseConv3D(spec.make_backbone(in_channels), num_classes, dropout)
        model.paper_input_shape = (in_channels, *spec.frames_hw)
    model.name = name
    model.paper_name = spec.paper_name
    return model
