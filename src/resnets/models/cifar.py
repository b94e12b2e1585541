"""The CIFAR-10 nets of He et al. 2015 (Sec. 4.2) and their plain twins.

6n+2 weighted layers: a 3x3 conv, three stages of n basic blocks at 16, 32 and 64 channels
on 32x32, 16x16 and 8x8 maps, and the classifier. Option A shortcuts, as the paper's CIFAR
experiments use, have no parameters, so each plain twin has exactly its residual net's weights.
"""

from __future__ import annotations

from typing import Any

from .blocks import BasicBlock
from .contract import ResidualUnit
from .networks import ResNet
from .registry import register_model

STAGE_PLANES = (16, 32, 64)
OPTION_A = {"shortcut": "A"}


def cifar_resnet(n: int, residual: bool = True, block: type[ResidualUnit] = BasicBlock, **kw: Any) -> ResNet:
    """A 6n+2-layer CIFAR net: three stages of ``n`` blocks (``block``: a remedy unit may replace them)."""
    return ResNet(block, [n] * 3, STAGE_PLANES, stem="cifar", residual=residual, **kw)


@register_model(family="cifar", depth=20, twin="plain20", options=OPTION_A)
def resnet20(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-20: 3 blocks a stage."""
    return cifar_resnet(3, residual, **kw)


@register_model(family="cifar", depth=32, twin="plain32", options=OPTION_A)
def resnet32(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-32: 5 blocks a stage."""
    return cifar_resnet(5, residual, **kw)


@register_model(family="cifar", depth=44, twin="plain44", options=OPTION_A)
def resnet44(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-44: 7 blocks a stage."""
    return cifar_resnet(7, residual, **kw)


@register_model(family="cifar", depth=56, twin="plain56", options=OPTION_A)
def resnet56(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-56: 9 blocks a stage."""
    return cifar_resnet(9, residual, **kw)


@register_model(family="cifar", depth=110, twin="plain110", options=OPTION_A)
def resnet110(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-110: 18 blocks a stage."""
    return cifar_resnet(18, residual, **kw)


@register_model(family="cifar", depth=1202, twin="plain1202", options=OPTION_A)
def resnet1202(residual: bool = True, **kw: Any) -> ResNet:
    """ResNet-1202: 200 blocks a stage, the paper's overfitting example (Sec. 4.2)."""
    return cifar_resnet(200, residual, **kw)
