"""The three 3D-CNN backbones of PoseConv3D (paper Table 11): SlowOnly, C3D and X3D.

Each takes ``[N, C_in, T, H, W]`` and returns the last feature map ``[N, out_channels, T', H', W']``.
Adapted to heatmap volumes as the paper's Sec. 3.3 says: no early spatial down-sampling (the
volume is already 4x smaller than an RGB frame) and thinner, shallower networks.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import Bottleneck, ConvBNAct, X3DBlock, init_weights


class SlowOnly(nn.Module):
    """ResNet-50-style SlowOnly (Feichtenhofer et al., 2019) without its first stage.

    stem: conv 1x7x7 (+BN+ReLU), then a 1x3x3 max-pool; with ``stem_stride = pool_stride = 1``
    (the pose variants) the pool is a stride-1 max filter that keeps the size, as in PYSKL.
    stages: ``layer1..layerN`` of bottlenecks, widths ``base * 2**i`` (x4 at the output), the
    stride (temporal, spatial) on each stage's first block, the 3x1x1 temporal kernels only in
    the stages whose ``inflate`` is 1.

    ``lateral_channels[i]`` extra input channels for stage i are concatenated in by RGBPose-Conv3D.
    """

    def __init__(self, in_channels: int = 17, base_channels: int = 32,
                 stage_blocks: Sequence[int] = (4, 6, 3), inflate: Sequence[int] = (0, 1, 1),
                 spatial_strides: Sequence[int] = (2, 2, 2), temporal_strides: Sequence[int] = (1, 1, 2),
                 stem_stride: int = 1, pool_stride: int = 1,
                 lateral_channels: Sequence[int] | None = None):
        super().__init__()
        n = len(stage_blocks)
        lateral_channels = tuple(lateral_channels or (0,) * n)
        if not (len(inflate) == len(spatial_strides) == len(temporal_strides) == len(lateral_channels) == n):
            raise ValueError("stage_blocks, inflate, strides and lateral_channels need one entry per stage")
        self.in_channels = in_channels
        self.stem = ConvBNAct(in_channels, base_channels, (1, 7, 7), stride=(1, stem_stride, stem_stride))
        self.stem_pool = nn.MaxPool3d((1, 3, 3), stride=(1, pool_stride, pool_stride), padding=(0, 1, 1))
        channels = base_channels
        self.num_stages = n
        for i, blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            stride = (temporal_strides[i], spatial_strides[i])
            layer = [Bottleneck(channels + lateral_channels[i], planes, stride, bool(inflate[i]))]
            channels = planes * Bottleneck.expansion
            layer += [Bottleneck(channels, planes, (1, 1), bool(inflate[i])) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = channels
        init_weights(self)

    def stage(self, i: int) -> nn.Sequential:
        """Stage ``i`` (1-based, as ``layer{i}``)."""
        return getattr(self, f"layer{i}")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_pool(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for i in range(1, self.num_stages + 1):
            x = self.stage(i)(x)
        return x


class C3D(nn.Module):
    """C3D (Tran et al., 2015) at half width, 3x3x3 conv + BN + ReLU throughout.

    conv1a | pool1 conv2a | pool2 conv3a conv3b | pool3 conv4a conv4b [| conv5a conv5b]
    Pools are 1x2x2 (no temporal down-sampling, PYSKL's ``temporal_downsample=False``) and
    average pools, as in PYSKL's code and released C3D-light weights (Table 11 says "maxpool";
    ``pool="max"`` gives that). Pose-C3D-s stops after conv4b (``num_stages=3``). Pose-C3D
    (``num_stages=4``) adds conv5a/conv5b *without* a pool before them, as Table 11 draws it and
    as its 25.2 GFLOPs require; PYSKL's ``C3D(num_stages=4)`` would pool first (``pool4=True``).
    """

    def __init__(self, in_channels: int = 17, base_channels: int = 32, num_stages: int = 3,
                 pool: str = "avg", pool4: bool = False):
        super().__init__()
        if num_stages not in (3, 4):
            raise ValueError(f"C3D has 3 or 4 stages, got {num_stages}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        Pool = nn.AvgPool3d if pool == "avg" else nn.MaxPool3d
        c = base_channels
        self.in_channels = in_channels
        self.num_stages = num_stages
        self.conv1a = ConvBNAct(in_channels, c, 3)
        self.pool1 = Pool((1, 2, 2), (1, 2, 2))
        self.conv2a = ConvBNAct(c, 2 * c, 3)
        self.pool2 = Pool((1, 2, 2), (1, 2, 2))
        self.conv3a = ConvBNAct(2 * c, 4 * c, 3)
        self.conv3b = ConvBNAct(4 * c, 4 * c, 3)
        self.pool3 = Pool((1, 2, 2), (1, 2, 2))
        self.conv4a = ConvBNAct(4 * c, 8 * c, 3)
        self.conv4b = ConvBNAct(8 * c, 8 * c, 3)
        self.out_channels = 8 * c
        if num_stages == 4:
            self.pool4 = Pool((1, 2, 2), (1, 2, 2)) if pool4 else nn.Identity()
            self.conv5a = ConvBNAct(8 * c, 8 * c, 3)
            self.conv5b = ConvBNAct(8 * c, 8 * c, 3)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1a(x)
        x = self.conv2a(self.pool1(x))
        x = self.conv3b(self.conv3a(self.pool2(x)))
        x = self.conv4b(self.conv4a(self.pool3(x)))
        if self.num_stages == 4:
            x = self.conv5b(self.conv5a(self.pool4(x)))
        return x


class X3DStem(nn.Module):
    """X3D's stem: a spatial 1x3x3 conv (stride 2, no BN) then a depth-wise temporal 5x1x1 conv
    (+BN+ReLU)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv_s = nn.Conv3d(in_channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1),
                                bias=False)
        self.conv_t = ConvBNAct(channels, channels, (5, 1, 1), groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_t(self.conv_s(x))


class X3D(nn.Module):
    """X3D-S (Feichtenhofer, 2020) without its first stage, no SE, ReLU only.

    stage i: ``blocks[i]`` X3D blocks of width ``base * 2**i`` with a ``gamma_b``-times wider
    depth-wise middle; then ``conv5``, a 1x1x1 conv to ``gamma_b`` times the last width.
    Pose-X3D-s has blocks (2, 5, 3); Pose-X3D multiplies them by ``gamma_d = 2.2`` (rounded
    up: 5, 11, 7).
    """

    def __init__(self, in_channels: int = 17, base_channels: int = 24,
                 stage_blocks: Sequence[int] = (2, 5, 3), gamma_b: float = 2.25,
                 spatial_strides: Sequence[int] = (2, 2, 2)):
        super().__init__()
        if len(spatial_strides) != len(stage_blocks):
            raise ValueError("need one spatial stride per stage")
        self.in_channels = in_channels
        self.stem = X3DStem(in_channels, base_channels)
        channels = base_channels
        self.num_stages = len(stage_blocks)
        for i, blocks in enumerate(stage_blocks):
            width = base_channels * 2**i
            planes = int(width * gamma_b)
            layer = [X3DBlock(channels, planes, width, spatial_strides[i])]
            layer += [X3DBlock(width, planes, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            channels = width
        self.out_channels = int(channels * gamma_b)
        self.conv5 = ConvBNAct(channels, self.out_channels, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.conv5(x)
