"""Classification heads: global average pooling, dropout, linear (PYSKL's I3DHead / RGBPoseHead)."""
from __future__ import annotations

import torch
from torch import nn


def _init_fc(fc: nn.Linear, std: float = 0.01) -> None:
    nn.init.normal_(fc.weight, 0.0, std)
    nn.init.zeros_(fc.bias)


class ClsHead(nn.Module):
    """``[N, C, T, H, W]`` -> GAP -> dropout -> linear -> logits ``[N, num_classes]``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)
        _init_fc(self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))


class RGBPoseHead(nn.Module):
    """One GAP -> dropout -> linear head per pathway; returns ``(rgb_logits, pose_logits)``."""

    def __init__(self, rgb_channels: int, pose_channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout_rgb = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout_pose = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc_rgb = nn.Linear(rgb_channels, num_classes)
        self.fc_pose = nn.Linear(pose_channels, num_classes)
        _init_fc(self.fc_rgb)
        _init_fc(self.fc_pose)

    def forward(self, x_rgb: torch.Tensor, x_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = self.fc_rgb(self.dropout_rgb(self.pool(x_rgb).flatten(1)))
        pose = self.fc_pose(self.dropout_pose(self.pool(x_pose).flatten(1)))
        return rgb, pose
