"""RGBPose-Conv3D (paper Sec. 3.3 / 4.5 / A.3.2, Table 12): two SlowOnly pathways with
bidirectional lateral connections, one classification head per pathway.

RGB pathway: SlowOnly-R50 (stem 1x7x7 64 ch stride 2 + max-pool stride 2, res2..res5 with
(3, 4, 6, 3) bottlenecks, temporal kernels in res4/res5), 8 frames at 224x224.
Pose pathway: Pose-SlowOnly (stem 1x7x7 32 ch stride 1, res3..res5 with (4, 6, 3), temporal
kernels in res4/res5, no temporal stride so it keeps all its frames), 32 frames at 56x56.
Both reach 28x28 after res3, 14x14 after res4 and 7x7 after res5; the pose pathway runs at
4x the frame rate (``speed_ratio``).

Lateral connections, after res3 and after res4 (time-strided convolutions along T, 7x1x1):
  pose -> RGB: conv, temporal stride 4 (32 -> 8 frames), C -> C channels, no BN/ReLU;
  RGB -> pose: transposed conv, temporal stride 4 (8 -> 32 frames), C -> C * 4 / 16, BN+ReLU.
Each result is concatenated (channels) to the other pathway's features before its next stage,
so RGB res4/res5 take 512+128 / 1024+256 channels and pose res4/res5 take 128+32 / 256+64.

Training uses two cross-entropy losses, one per pathway (``rgbpose_loss``); prediction fuses the
two pathways' class scores (``late_fusion``), 1:1 in the paper and PYSKL.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import SlowOnly
from .blocks import DeconvBNAct
from .heads import RGBPoseHead


class RGBPoseBackbone(nn.Module):
    """``(imgs, heatmaps)`` -> ``(rgb_features, pose_features)``: at the paper's input
    (``[N, 3, 8, 224, 224]``, ``[N, 17, 32, 56, 56]``) ``[N, 2048, 8, 7, 7]`` and ``[N, 512, 32, 7, 7]``."""

    def __init__(self, pose_in_channels: int = 17, rgb_in_channels: int = 3, speed_ratio: int = 4,
                 channel_ratio: int = 4, rgb_to_pose_reduction: int = 16, fusion_kernel: int = 7):
        super().__init__()
        self.speed_ratio = speed_ratio
        rgb_res3, rgb_res4 = 512, 1024        # RGB outputs of res3 / res4 (layer2 / layer3)
        pose_res3, pose_res4 = 128, 256       # pose outputs of res3 / res4 (layer1 / layer2)
        to_rgb = [c // channel_ratio for c in (rgb_res3, rgb_res4)]                            # 128, 256
        to_pose = [c * channel_ratio // rgb_to_pose_reduction for c in (pose_res3, pose_res4)]  # 32, 64
        self.rgb_path = SlowOnly(in_channels=rgb_in_channels, base_channels=64, stage_blocks=(3, 4, 6, 3),
                                 inflate=(0, 0, 1, 1), spatial_strides=(1, 2, 2, 2),
                                 temporal_strides=(1, 1, 1, 1), stem_stride=2, pool_stride=2,
                                 lateral_channels=(0, 0, to_rgb[0], to_rgb[1]))
        self.pose_path = SlowOnly(in_channels=pose_in_channels, base_channels=32, stage_blocks=(4, 6, 3),
                                  inflate=(0, 1, 1), spatial_strides=(2, 2, 2), temporal_strides=(1, 1, 1),
                                  stem_stride=1, pool_stride=1, lateral_channels=(0, to_pose[0], to_pose[1]))
        k, s, p = (fusion_kernel, 1, 1), (speed_ratio, 1, 1), ((fusion_kernel - 1) // 2, 0, 0)
        self.pose_to_rgb_res3 = nn.Conv3d(pose_res3, to_rgb[0], k, stride=s, padding=p, bias=False)
        self.pose_to_rgb_res4 = nn.Conv3d(pose_res4, to_rgb[1], k, stride=s, padding=p, bias=False)
        self.rgb_to_pose_res3 = DeconvBNAct(rgb_res3, to_pose[0], k, stride=s, padding=p)
        self.rgb_to_pose_res4 = DeconvBNAct(rgb_res4, to_pose[1], k, stride=s, padding=p)
        for conv in (self.pose_to_rgb_res3, self.pose_to_rgb_res4):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, imgs: torch.Tensor, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if imgs.shape[2] * self.speed_ratio != heatmaps.shape[2]:
            raise ValueError(f"RGBPose-Conv3D needs {self.speed_ratio}x as many pose frames as RGB frames, "
                             f"got {heatmaps.shape[2]} and {imgs.shape[2]}")
        rgb, pose = self.rgb_path, self.pose_path
        x_rgb = rgb.layer2(rgb.layer1(rgb.forward_stem(imgs)))   # res2, res3
        x_pose = pose.layer1(pose.forward_stem(heatmaps))         # res3
        x_rgb, x_pose = (torch.cat([x_rgb, self.pose_to_rgb_res3(x_pose)], 1),
                         torch.cat([x_pose, self.rgb_to_pose_res3(x_rgb)], 1))
        x_rgb, x_pose = rgb.layer3(x_rgb), pose.layer2(x_pose)   # res4
        x_rgb, x_pose = (torch.cat([x_rgb, self.pose_to_rgb_res4(x_pose)], 1),
                         torch.cat([x_pose, self.rgb_to_pose_res4(x_rgb)], 1))
        return rgb.layer4(x_rgb), pose.layer3(x_pose)             # res5


class RGBPoseConv3D(nn.Module):
    """``(imgs [N, 3, T, H, W], heatmaps [N, K, 4T, H/4, W/4])`` -> ``(rgb_logits, pose_logits)``."""

    def __init__(self, num_classes: int = 60, in_channels: int = 17, dropout: float = 0.5, **backbone_kw):
        super().__init__()
        self.in_channels = in_channels
        self.backbone = RGBPoseBackbone(pose_in_channels=in_channels, **backbone_kw)
        self.head = RGBPoseHead(self.backbone.rgb_path.out_channels, self.backbone.pose_path.out_channels,
                                num_classes, dropout)

    def forward(self, imgs: torch.Tensor, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(*self.backbone(imgs, heatmaps))


def rgbpose_loss(rgb_logits: torch.Tensor, pose_logits: torch.Tensor, labels: torch.Tensor,
                 weights: Sequence[float] = (1.0, 1.0)) -> dict[str, torch.Tensor]:
    """The two per-pathway cross-entropy losses of RGBPose-Conv3D (never one joint loss: the
    paper found that over-fits). Returns ``loss`` = ``weights[0] * loss_rgb + weights[1] *
    loss_pose`` (what to back-propagate) and the two unweighted terms for logging."""
    loss_rgb = F.cross_entropy(rgb_logits, labels)
    loss_pose = F.cross_entropy(pose_logits, labels)
    return {"loss": weights[0] * loss_rgb + weights[1] * loss_pose, "loss_rgb": loss_rgb, "loss_pose": loss_pose}


def late_fusion(rgb_scores, pose_scores, weights: Sequence[float] = (1.0, 1.0)):
    """Weighted mean of the two pathways' class scores (tensors or numpy arrays, same shape).

    Pass probabilities (softmax of the logits, averaged over clips), as PYSKL does with
    ``average_clips='prob'``; the paper and PYSKL fuse 1:1. Dividing by the weight sum keeps a
    probability a probability and does not change the arg-max.
    """
    w_rgb, w_pose = float(weights[0]), float(weights[1])
    if w_rgb + w_pose <= 0:
        raise ValueError(f"late_fusion weights must sum to a positive number, got {tuple(weights)}")
    return (w_rgb * rgb_scores + w_pose * pose_scores) / (w_rgb + w_pose)
