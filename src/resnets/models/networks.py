"""The networks: CIFAR (3 stages), ImageNet (4 stages) and pre-activation residual nets.

One ``ResNet`` class covers the original-unit families; its attribute names follow
torchvision (conv1, bn1, layer1..4, fc) so torchvision checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from .blocks import (
    BasicBlock,
    Block,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    Shortcut,
)
from .depth import StochasticDepth, default_segments, drop_probabilities, run_checkpointed

Stem = Literal["cifar", "imagenet"]
BlockType = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]


class ResNet(nn.Module):
    """A residual network (or its plain twin) built from stages of identical blocks."""

    def __init__(
        self,
        block: BlockType,
        layers: Sequence[int],
        stage_planes: Sequence[int],
        stem: Stem = "imagenet",
        num_classes: int = 1000,
        in_channels: int = 3,
        shortcut: Shortcut = "B",
        residual: bool = True,
        zero_init_residual: bool = False,
        width: float = 1.0,
        groups: int = 1,
        width_per_group: int = 64,
        drop_path: float = 0.0,
        checkpoint_segments: int | str = 0,
    ) -> None:
        super().__init__()
        if len(layers) != len(stage_planes):
            raise ValueError("layers and stage_planes must have the same length")
        self.residual = residual
        self.num_classes = num_classes
        bottleneck = block in (Bottleneck, PreActBottleneck)
        # A basic block's width scales all its channels; a bottleneck's scales only the inner 3x3.
        planes = [p if bottleneck else round(p * width) for p in stage_planes]
        block_kwargs: dict[str, object] = {"shortcut": shortcut, "residual": residual}
        if bottleneck:
            block_kwargs |= {"groups": groups, "width_per_group": width_per_group, "width": width}

        self.in_planes = planes[0]
        self._make_stem(stem, in_channels, self.in_planes)
        for i, (n, p) in enumerate(zip(layers, planes, strict=True)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", self._make_layer(block, p, n, stride, block_kwargs))
        self.num_features = self.in_planes
        self._make_final_activation()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.num_stages = len(layers)
        self._init_weights(zero_init_residual)
        self.drop_path = drop_path
        if drop_path:  # stochastic depth: deeper branches dropped more often
            blocks = self.blocks()
            for block, p in zip(blocks, drop_probabilities(len(blocks), drop_path), strict=True):
                block.drop_path = StochasticDepth(p)
        self.set_checkpointing(None if checkpoint_segments == "auto" else int(checkpoint_segments))

    def set_checkpointing(self, segments: int | None) -> None:
        """Recompute activations in the backward pass in ``segments`` runs of blocks (0: off).

        None picks sqrt(number of blocks). Results are unchanged; memory falls, time rises.
        """
        self.checkpoint_segments = default_segments(len(self.blocks())) if segments is None else segments

    def _make_stem(self, stem: Stem, in_channels: int, planes: int) -> None:
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def _make_final_activation(self) -> None:
        """Original units end in ReLU already; pre-activation nets add BN-ReLU here."""

    def _make_layer(
        self, block: BlockType, planes: int, blocks: int, stride: int, kwargs: dict[str, object]
    ) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1, **kwargs))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He et al. 2015 ("Delving deep") normal init; fan_out as in the authors' Torch code.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.blocks():
                m.zero_init_last()

    def blocks(self) -> list[Block]:
        """All residual (or plain) blocks, input to output."""
        return [b for i in range(self.num_stages) for b in getattr(self, f"layer{i + 1}")]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first convolution (and its BN, ReLU and pooling)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling."""
        x = self.stem(x)
        if self.checkpoint_segments and self.training and torch.is_grad_enabled():
            return run_checkpointed(self.blocks(), x, self.checkpoint_segments)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the classifier."""
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PreActResNet(ResNet):
    """Pre-activation residual net (He et al. 2016): conv stem, BN-ReLU units, final BN-ReLU."""

    def _make_stem(self, stem: Stem, in_channels: int, planes: int) -> None:
        super()._make_stem(stem, in_channels, planes)
        del self.bn1  # the first unit starts with BN-ReLU, so the stem is a bare convolution

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first convolution (and pooling, for an ImageNet stem)."""
        return self.maxpool(self.conv1(x))

    def _make_final_activation(self) -> None:
        self.bn_final = nn.BatchNorm2d(self.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map after the final BN-ReLU, before global pooling."""
        return self.relu(self.bn_final(super().forward_features(x)))
