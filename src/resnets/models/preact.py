"""The pre-activation nets of He et al. 2016 and their plain twins.

CIFAR layout (three stages at 16, 32, 64 planes) with BN-ReLU before each convolution and a
final BN-ReLU before pooling. Projection shortcuts where the shape changes, as in the authors'
code; ResNet-164 and -1001 use bottleneck units, so their stages end at 64, 128, 256 channels.
"""

from __future__ import annotations

from typing import Any

from .blocks import PreActBasicBlock, PreActBottleneck
from .contract import ResidualUnit
from .networks import PreActResNet
from .registry import register_model

STAGE_PLANES = (16, 32, 64)
OPTION_B = {"shortcut": "B"}


def preact_resnet(block: type[ResidualUnit], n: int, residual: bool = True, **kw: Any) -> PreActResNet:
    """A pre-activation CIFAR net: three stages of ``n`` units."""
    return PreActResNet(block, [n] * 3, STAGE_PLANES, stem="cifar", residual=residual, **kw)


@register_model(family="preact", depth=110, twin="preact_plain110", options=OPTION_B)
def preact_resnet110(residual: bool = True, **kw: Any) -> PreActResNet:
    """Pre-activation ResNet-110: 18 basic units a stage."""
    return preact_resnet(PreActBasicBlock, 18, residual, **kw)


@register_model(family="preact", depth=164, twin="preact_plain164", options=OPTION_B)
def preact_resnet164(residual: bool = True, **kw: Any) -> PreActResNet:
    """Pre-activation ResNet-164: 18 bottleneck units a stage."""
    return preact_resnet(PreActBottleneck, 18, residual, **kw)


@register_model(family="preact", depth=1001, twin="preact_plain1001", options=OPTION_B)
def preact_resnet1001(residual: bool = True, **kw: Any) -> PreActResNet:
    """Pre-activation ResNet-1001: 111 bottleneck units a stage (the paper's 1000-layer net)."""
    return preact_resnet(PreActBottleneck, 111, residual, **kw)
