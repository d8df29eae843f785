"""Small building blocks shared by the PoseConv3D backbones.

Shapes are ``[N, C, T, H, W]`` throughout. Every convolution that is followed by batch norm has
no bias, as in PYSKL (mmcv's ``ConvModule`` with ``bias='auto'``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

Size3 = int | Sequence[int]


def _triple(v: Size3) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def same_padding(kernel: Size3) -> tuple[int, int, int]:
    """Padding that keeps the size of an odd kernel at stride 1."""
    return tuple(k // 2 for k in _triple(kernel))  # type: ignore[return-value]


class ConvBNAct(nn.Module):
    """conv3d -> BatchNorm3d -> ReLU; the norm and the activation can be left out.

    The submodules are called ``conv``, ``bn`` and ``act``, as mmcv's ``ConvModule`` calls
    its ``conv`` and ``bn``, so state-dict keys read ``....conv.weight`` / ``....bn.weight``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3, stride: Size3 = 1,
                 padding: Size3 | None = None, groups: int = 1, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=same_padding(kernel_size) if padding is None else padding,
                              groups=groups, bias=not norm)
        self.bn = nn.BatchNorm3d(out_channels) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class DeconvBNAct(nn.Module):
    """Transposed conv3d -> BatchNorm3d -> ReLU that multiplies the size by its stride exactly.

    Used by RGBPose-Conv3D to bring the (slow) RGB features up to the (fast) pose frame rate;
    PYSKL's ``DeConvModule`` (``conv``, ``bn``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3, stride: Size3,
                 padding: Size3):
        super().__init__()
        self.stride = _triple(stride)
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size, stride=stride,
                                       padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        size = (t * self.stride[0], h * self.stride[1], w * self.stride[2])
        return self.act(self.bn(self.conv(x, output_size=size)))


class ResidualBlock(nn.Module):
    """conv1 -> conv2 -> conv3 (no activation), plus the input (through ``downsample`` when the
    shape changes), then ReLU. Subclasses build the three convs."""

    conv3: ConvBNAct
    downsample: ConvBNAct | None

    def last_bn(self) -> nn.BatchNorm3d:
        return self.conv3.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


class Bottleneck(ResidualBlock):
    """ResNet bottleneck: 1x1 (or 3x1x1 when inflated) -> 1x3x3 (strided) -> 1x1 (x4 width).

    SlowOnly's "3x1x1" inflation: an inflated block puts its temporal kernel in the first conv,
    the 3x3 conv stays spatial. ``stride`` is (temporal, spatial) and sits on the 3x3 conv.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: tuple[int, int] = (1, 1),
                 inflate: bool = False):
        super().__init__()
        out_channels = planes * self.expansion
        st, ss = stride
        kt = 3 if inflate else 1
        self.conv1 = ConvBNAct(in_channels, planes, (kt, 1, 1))
        self.conv2 = ConvBNAct(planes, planes, (1, 3, 3), stride=(st, ss, ss))
        self.conv3 = ConvBNAct(planes, out_channels, 1, act=False)
        self.downsample = None
        if st != 1 or ss != 1 or in_channels != out_channels:
            self.downsample = ConvBNAct(in_channels, out_channels, 1, stride=(st, ss, ss), act=False)
        self.relu = nn.ReLU(inplace=True)


class X3DBlock(ResidualBlock):
    """X3D block: 1x1x1 expand -> 3x3x3 depth-wise (strided) -> 1x1x1 project, residual.

    As PYSKL's Pose-X3D configs (``se_ratio=None, use_swish=False``): no squeeze-excitation and
    no swish, so nothing sits between the depth-wise conv's BN and the projection.
    """

    def __init__(self, in_channels: int, planes: int, out_channels: int, spatial_stride: int = 1):
        super().__init__()
        s = spatial_stride
        self.conv1 = ConvBNAct(in_channels, planes, 1)
        self.conv2 = ConvBNAct(planes, planes, 3, stride=(1, s, s), groups=planes, act=False)
        self.conv3 = ConvBNAct(planes, out_channels, 1, act=False)
        self.downsample = None
        if s != 1 or in_channels != out_channels:
            self.downsample = ConvBNAct(in_channels, out_channels, 1, stride=(1, s, s), act=False)
        self.relu = nn.ReLU(inplace=True)


def init_weights(module: nn.Module, zero_init_residual: bool = True) -> None:
    """PYSKL's initialisation: Kaiming-normal (fan_out, ReLU) convs, BN to (1, 0), the last BN of
    every residual block to 0 (each block starts as the identity). Transposed convs keep
    PyTorch's default, as in PYSKL. Heads initialise their own linear layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, ResidualBlock):
                nn.init.zeros_(m.last_bn().weight)
