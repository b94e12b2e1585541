"""The ImageNet nets of He et al. 2015 (Table 1), their Wide and ResNeXt variants, and plain twins.

A 7x7 stride-2 conv and a max pool, four stages at 64, 128, 256 and 512 planes, the classifier.
Option B shortcuts (projections only where the shape changes), as torchvision's; the names and
layer names are torchvision's, so its checkpoints load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .blocks import BasicBlock, Bottleneck
from .contract import ResidualUnit
from .networks import ResNet
from .registry import register_model

STAGE_PLANES = (64, 128, 256, 512)
OPTION_B = {"shortcut": "B"}


def imagenet_resnet(
    block: type[ResidualUnit], layers: Sequence[int], residual: bool = True, **kw: Any
) -> ResNet:
    """An ImageNet net of four stages with ``layers`` blocks each."""
    return ResNet(block, layers, STAGE_PLANES, stem="imagenet", residual=residual, **kw)


@register_model(family="imagenet", depth=18, twin="plain18", options=OPTION_B)
def resnet18(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-18: basic blocks, 2-2-2-2."""
    return imagenet_resnet(BasicBlock, [2, 2, 2, 2], residual, **kw)


@register_model(family="imagenet", depth=34, twin="plain34", options=OPTION_B)
def resnet34(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-34: basic blocks, 3-4-6-3."""
    return imagenet_resnet(BasicBlock, [3, 4, 6, 3], residual, **kw)


@register_model(family="imagenet", depth=50, twin="plain50", options=OPTION_B)
def resnet50(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-50: bottlenecks, 3-4-6-3."""
    return imagenet_resnet(Bottleneck, [3, 4, 6, 3], residual, **kw)


@register_model(family="imagenet", depth=101, twin="plain101", options=OPTION_B)
def resnet101(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-101: bottlenecks, 3-4-23-3."""
    return imagenet_resnet(Bottleneck, [3, 4, 23, 3], residual, **kw)


@register_model(family="imagenet", depth=152, twin="plain152", options=OPTION_B)
def resnet152(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-152: bottlenecks, 3-8-36-3."""
    return imagenet_resnet(Bottleneck, [3, 8, 36, 3], residual, **kw)


# Wide ResNet (Zagoruyko & Komodakis 2016) and ResNeXt (Xie et al. 2017) under torchvision's
# names: ResNet-50/101 whose bottlenecks are wider inside, or grouped. The registered options
# (width, groups, width_per_group) make them so, as create_model passes them; users may change them.


@register_model(family="imagenet", depth=50, twin="wide_plain50_2", options={**OPTION_B, "width": 2.0})
def wide_resnet50_2(residual: bool = True, **kw: Any) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide inside."""
    return resnet50(residual, **kw)


@register_model(family="imagenet", depth=101, twin="wide_plain101_2", options={**OPTION_B, "width": 2.0})
def wide_resnet101_2(residual: bool = True, **kw: Any) -> ResNet:
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide inside."""
    return resnet101(residual, **kw)


@register_model(
    family="imagenet",
    depth=50,
    twin="plainnext50_32x4d",
    options={**OPTION_B, "groups": 32, "width_per_group": 4},
)
def resnext50_32x4d(residual: bool = True, **kw: Any) -> ResNet:
    """ResNeXt-50 (32x4d): ResNet-50 whose 3x3 convs have 32 groups of 4 channels."""
    return resnet50(residual, **kw)


@register_model(
    family="imagenet",
    depth=101,
    twin="plainnext101_32x8d",
    options={**OPTION_B, "groups": 32, "width_per_group": 8},
)
def resnext101_32x8d(residual: bool = True, **kw: Any) -> ResNet:
    """ResNeXt-101 (32x8d): ResNet-101 whose 3x3 convs have 32 groups of 8 channels."""
    return resnet101(residual, **kw)


@register_model(
    family="imagenet",
    depth=101,
    twin="plainnext101_64x4d",
    options={**OPTION_B, "groups": 64, "width_per_group": 4},
)
def resnext101_64x4d(residual: bool = True, **kw: Any) -> ResNet:
    """ResNeXt-101 (64x4d): ResNet-101 whose 3x3 convs have 64 groups of 4 channels."""
    return resnet101(residual, **kw)
