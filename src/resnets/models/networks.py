"""The networks: CIFAR (3 stages), ImageNet (4 stages) and pre-activation residual nets.

One ``ResNet`` class covers the original-unit families; its attribute names follow
torchvision (conv1, bn1, layer1..4, fc) so torchvision checkpoints load unchanged. Both classes
are ``contract.Network``s built of ``contract.ResidualUnit``s; the named nets are built in
cifar.py, imagenet.py and preact.py. Parts only some nets have (an input normalisation, Fixup's
scalar biases around the blocks) are added only there, so the default nets' weights keep their names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from .blocks import Bottleneck, PreActBottleneck, Shortcut
from .contract import Network, ResidualUnit
from .depth import StochasticDepth, drop_probabilities, run_checkpointed
from .init import LSUV_IMAGES, initialise, lsuv_
from .layers import ActLayer, NormLayer, make_input_norm, make_norm, relu
from .units import Bias, FixupBlock, LongSkipStage

Stem = Literal["cifar", "imagenet"]
BlockType = type[ResidualUnit]


class ResNet(Network):
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
        act_layer: ActLayer = relu,
        norm_layer: NormLayer = nn.BatchNorm2d,
        drop_rate: float = 0.0,
        long_skip: bool = False,
        init: str = "he_fan_out",
        init_gain: float = 2.0**0.5,
        input_norm: str = "none",
        block_options: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(stage_planes):
            raise ValueError("layers and stage_planes must have the same length")
        if not issubclass(block, ResidualUnit):
            raise TypeError(f"blocks must be ResidualUnit subclasses, not {block.__name__}")
        self.residual = residual
        self.num_classes = num_classes
        self.init = init
        self.long_skip = long_skip
        # Fixup's net adds a scalar bias after the stem conv and one before the classifier (Zhang et al.).
        self.fixup = issubclass(block, FixupBlock)
        bottleneck = block in (Bottleneck, PreActBottleneck)
        # A basic block's width scales all its channels; a bottleneck's scales only the inner 3x3.
        planes = [p if bottleneck else round(p * width) for p in stage_planes]
        block_kwargs: dict[str, object] = {"shortcut": shortcut, "residual": residual}
        if bottleneck:
            block_kwargs |= {"groups": groups, "width_per_group": width_per_group, "width": width}
        if act_layer is not relu or norm_layer is not nn.BatchNorm2d:
            block_kwargs |= {"act_layer": act_layer, "norm_layer": norm_layer}
        if drop_rate:
            block_kwargs["drop_rate"] = drop_rate
        block_kwargs |= dict(block_options or {})  # a unit's own settings (a highway gate's bias)

        self.in_planes = planes[0]
        # Held only where used: a None attribute adds no module, so the default nets' keys stay put.
        self.input_norm = make_input_norm(input_norm)
        extra = getattr(self.input_norm, "extra_channels", 0)
        self._make_stem(stem, in_channels + extra, self.in_planes, act_layer, norm_layer)
        for i, (n, p) in enumerate(zip(layers, planes, strict=True)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", self._make_layer(block, p, n, stride, block_kwargs))
        self.num_features = self.in_planes
        self._make_final_activation(norm_layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if self.fixup:
            self.bias2 = Bias()
        self.fc = nn.Linear(self.num_features, num_classes)
        self.num_stages = len(layers)
        self._init_weights(zero_init_residual, init, init_gain)
        self.drop_path = drop_path
        if drop_path:  # stochastic depth: deeper branches dropped more often
            blocks = self.blocks()
            for block, p in zip(blocks, drop_probabilities(len(blocks), drop_path), strict=True):
                block.drop_path = StochasticDepth(p)
        self.set_checkpointing(None if checkpoint_segments == "auto" else int(checkpoint_segments))

    @property
    def init_images(self) -> int:  # type: ignore[override]
        """LSUV rescales the layers on a batch of training images; other schemes need none."""
        return LSUV_IMAGES if self.init == "lsuv" else 0

    def init_from_data(self, images: torch.Tensor) -> None:
        """LSUV's pass over a batch (Mishkin & Matas 2015), where the net was built with init='lsuv'."""
        if self.init == "lsuv":
            lsuv_(self, images)

    def _make_stem(
        self, stem: Stem, in_channels: int, planes: int, act_layer: ActLayer, norm_layer: NormLayer
    ) -> None:
        bias = norm_layer is None and not self.fixup  # Fixup's stem conv has its scalar bias1 instead
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=bias)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes, 7, stride=2, padding=3, bias=bias)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        if self.fixup:
            self.bias1 = Bias()
        self.bn1 = make_norm(norm_layer, planes)
        self.act = act_layer()

    def _make_final_activation(self, norm_layer: NormLayer) -> None:
        """Original units end in their activation already; pre-activation nets add BN-ReLU here."""

    def _make_layer(
        self, block: BlockType, planes: int, blocks: int, stride: int, kwargs: dict[str, object]
    ) -> nn.Sequential:
        in_planes = self.in_planes
        layers: list[nn.Module] = []
        for i in range(blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1, **kwargs))
            self.in_planes = planes * block.expansion
        if self.long_skip:
            return LongSkipStage(*layers, in_planes=in_planes, planes=self.in_planes, stride=stride)
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool, scheme: str, gain: float) -> None:
        # Default: He et al. 2015 ("Delving deep") normal init, fan-out as in the authors' Torch code.
        initialise(self, scheme, gain)
        blocks = self.blocks()
        if zero_init_residual:
            for b in blocks:
                b.zero_init_last()
        for b in blocks:  # gated and normalisation-free units set their own parts
            b.post_init(len(blocks))
        if any(isinstance(b, FixupBlock) for b in blocks):  # Fixup zeroes the classifier too
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def stages(self) -> list[nn.Sequential]:
        """The stages layer1, layer2, ... (torchvision's names), input to output."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def blocks(self) -> list[ResidualUnit]:
        """All residual (or plain) blocks, input to output."""
        return [b for stage in self.stages() for b in stage]

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input normalisation the net was built with (``input_norm``), or x itself."""
        return x if self.input_norm is None else self.input_norm(x)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The input normalisation, the first convolution (and its BN or bias, activation and pooling)."""
        x = self.conv1(self.normalise_input(x))
        if self.fixup:
            x = self.bias1(x)
        return self.maxpool(self.act(self.bn1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling."""
        x = self.stem(x)
        if self.checkpoint_segments and self.training and torch.is_grad_enabled():
            return run_checkpointed(self.blocks(), x, self.checkpoint_segments)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the classifier."""
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.bias2(x) if self.fixup else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PreActResNet(ResNet):
    """Pre-activation residual net (He et al. 2016): conv stem, BN-ReLU units, final BN-ReLU."""

    def _make_stem(
        self, stem: Stem, in_channels: int, planes: int, act_layer: ActLayer, norm_layer: NormLayer
    ) -> None:
        super()._make_stem(stem, in_channels, planes, act_layer, norm_layer)
        del self.bn1  # the first unit starts with BN-ReLU, so the stem is a bare convolution

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The input normalisation, the first convolution (and pooling, for an ImageNet stem)."""
        return self.maxpool(self.conv1(self.normalise_input(x)))

    def _make_final_activation(self, norm_layer: NormLayer) -> None:
        self.bn_final = make_norm(norm_layer, self.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map after the final BN-ReLU, before global pooling."""
        return self.act(self.bn_final(super().forward_features(x)))
