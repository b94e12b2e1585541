"""Residual blocks of He et al. 2015 and 2016, each with a plain twin (``residual=False``).

A block computes ``y = relu(F(x) + shortcut(x))``; its plain twin computes ``y = relu(F(x))``
with exactly the same layers F. Shortcut options follow the paper (Sec. 3.3, 4.1):

- ``"A"``: identity; where the shape changes, subsample by the stride and zero-pad the new
  channels (no parameters, so a plain twin has the same parameter count);
- ``"B"``: identity, with a 1x1 projection (+BN) only where the shape changes;
- ``"C"``: a 1x1 projection (+BN) in every block.

Every block takes its activation and normalisation as options (``act_layer``, ``norm_layer``,
as in torchvision and timm); the defaults, ReLU and BatchNorm, are the papers' nets, and no
option changes the names or shapes of the default nets' weights. Every block is a
``contract.ResidualUnit``: the networks, the lesion study and the diagnostics ask it, not its type,
where its branch ends, what its shortcut computes, and what it outputs with its branch deleted.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .contract import ResidualUnit
from .layers import ActLayer, NormLayer, make_norm, relu

Shortcut = Literal["A", "B", "C"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "C")


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, bias: bool = False
) -> nn.Conv2d:
    """3x3 convolution with padding 1; no bias where a normalisation follows."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution; no bias where a normalisation follows."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=bias)


def bottleneck_width(planes: int, width: float = 1.0, width_per_group: int = 64, groups: int = 1) -> int:
    """Channels of a bottleneck's inner convs: Wide ResNet's factor, ResNeXt's groups x width per group."""
    return int(planes * width * width_per_group / 64) * groups


class PadShortcut(nn.Module):
    """Option A: parameter-free shortcut that subsamples by ``stride`` and zero-pads channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError("option A cannot reduce channels; use shortcut 'B' or 'C'")
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def make_shortcut(
    shortcut: Shortcut, in_planes: int, out_planes: int, stride: int, norm: NormLayer = nn.BatchNorm2d
) -> nn.Module | None:
    """The shortcut module for a block, or None for a plain identity."""
    changes_shape = stride != 1 or in_planes != out_planes
    if shortcut == "A":
        return PadShortcut(in_planes, out_planes, stride) if changes_shape else None
    if shortcut == "B" and not changes_shape:
        return None
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    # Named like torchvision's `downsample` (0: conv, 1: BN) so its checkpoints load as they are.
    layers: list[nn.Module] = [conv1x1(in_planes, out_planes, stride)]
    if norm is not None:
        layers.append(norm(out_planes))
    return nn.Sequential(*layers)


class BasicBlock(ResidualUnit):
    """Two 3x3 convolutions (Fig. 2 of the paper); ResNet-18/34 and the CIFAR nets."""

    last_layer = "bn2"

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: Shortcut = "B",
        residual: bool = True,
        act_layer: ActLayer = relu,
        norm_layer: NormLayer = nn.BatchNorm2d,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(residual)
        bias = norm_layer is None
        self.conv1 = conv3x3(in_planes, planes, stride, bias=bias)
        self.bn1 = make_norm(norm_layer, planes)
        self.act = act_layer()
        # Dropout between the two convolutions, where Wide ResNets put it.
        self.drop: nn.Module = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.conv2 = conv3x3(planes, planes, bias=bias)
        self.bn2 = make_norm(norm_layer, planes)
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, norm_layer) if residual else None
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = self.drop_path(out) + self.shortcut(x)
        return self.act(out)


class Bottleneck(ResidualUnit):
    """1x1 reduce, 3x3, 1x1 expand (Fig. 5); stride on the 3x3 as in torchvision."""

    expansion = 4
    last_layer = "bn3"

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: Shortcut = "B",
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        width: float = 1.0,
        act_layer: ActLayer = relu,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(residual)
        inner = bottleneck_width(planes, width, width_per_group, groups)
        out_planes = planes * self.expansion
        bias = norm_layer is None
        self.conv1 = conv1x1(in_planes, inner, bias=bias)
        self.bn1 = make_norm(norm_layer, inner)
        self.conv2 = conv3x3(inner, inner, stride, groups, bias=bias)
        self.bn2 = make_norm(norm_layer, inner)
        self.conv3 = conv1x1(inner, out_planes, bias=bias)
        self.bn3 = make_norm(norm_layer, out_planes)
        self.act = act_layer()
        self.downsample = (
            make_shortcut(shortcut, in_planes, out_planes, stride, norm_layer) if residual else None
        )
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = self.drop_path(out) + self.shortcut(x)
        return self.act(out)


class PreActUnit(ResidualUnit):
    """A pre-activation unit (He et al. 2016): BN-act before each conv, nothing after the sum.

    The branch ends in a convolution (there is no BN after it), which ``zero_init_last`` zeroes.
    """

    act_after_add = False
    bn1: nn.Module

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut path alone; a projection reads the unit's activated input."""
        return self.shortcut_from(x, self.act(self.bn1(x)))

    def shortcut_from(self, x: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
        """The shortcut given x and act(bn1(x)): projections read the latter, as in the authors' code."""
        if self.downsample is None:
            return x
        if isinstance(self.downsample, PadShortcut):
            return self.downsample(x)
        return self.downsample(activated)


class PreActBasicBlock(PreActUnit):
    """Pre-activation unit: BN-ReLU-conv3x3 twice."""

    last_layer = "conv2"

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: Shortcut = "B",
        residual: bool = True,
        act_layer: ActLayer = relu,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(residual)
        bias = norm_layer is None
        self.bn1 = make_norm(norm_layer, in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride, bias=bias)
        self.bn2 = make_norm(norm_layer, planes)
        self.conv2 = conv3x3(planes, planes, bias=bias)
        self.act = act_layer()
        # As in the authors' code, a projection shortcut has no BN of its own.
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, norm=None) if residual else None
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        identity = self.shortcut_from(x, out)
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return self.drop_path(out) + identity if self.residual else out


class PreActBottleneck(PreActUnit):
    """Pre-activation bottleneck unit: BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1."""

    expansion = 4
    last_layer = "conv3"

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: Shortcut = "B",
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        width: float = 1.0,
        act_layer: ActLayer = relu,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(residual)
        inner = bottleneck_width(planes, width, width_per_group, groups)
        out_planes = planes * self.expansion
        bias = norm_layer is None
        self.bn1 = make_norm(norm_layer, in_planes)
        self.conv1 = conv1x1(in_planes, inner, bias=bias)
        self.bn2 = make_norm(norm_layer, inner)
        self.conv2 = conv3x3(inner, inner, stride, groups, bias=bias)
        self.bn3 = make_norm(norm_layer, inner)
        self.conv3 = conv1x1(inner, out_planes, bias=bias)
        self.act = act_layer()
        self.downsample = (
            make_shortcut(shortcut, in_planes, out_planes, stride, norm=None) if residual else None
        )
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        identity = self.shortcut_from(x, out)
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return self.drop_path(out) + identity if self.residual else out
