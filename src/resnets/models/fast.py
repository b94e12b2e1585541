"""A residual net shaped for speed on CIFAR: a whitening layer and three wide conv-pool groups.

The layout follows the fast CIFAR-10 trainers (Page's ResNet-9, hlb-cifar10, Jordan's airbench):
few layers, wide channels that keep the matrix units busy, pooling early, GELU, BatchNorm with
fixed scale, identity-initialised convs. Here every group ends in an identity shortcut
(y = x + F(x)); the plain twin drops it and is airbench94's network.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .contract import Network
from .registry import register_model

WHITENING_KERNEL = 2  # 2x2 patches: 12 dimensions, whitened into 24 channels (each direction, both signs)
BASE_WIDTHS = (64, 256, 256)
LOGIT_SCALE = 1 / 9  # a cooler softmax at init, as airbench measured
WHITENING_EPS = 5e-4
BN_MOMENTUM = 0.4  # PyTorch's convention (weight of the new batch); airbench's 0.6 kept for the old
WHITENING_IMAGES = 5000  # training images the whitening stem is fitted to (airbench: 5,000)


class Whitening(nn.Conv2d):
    """A frozen 2x2 conv that decorrelates image patches: fitted to training images, not learned."""

    def __init__(self, in_channels: int, kernel_size: int = WHITENING_KERNEL) -> None:
        super().__init__(in_channels, 2 * in_channels * kernel_size**2, kernel_size, bias=True)
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, eps: float = WHITENING_EPS) -> None:
        """Set the filters to the patch covariance's eigenvectors / sqrt(eigenvalue), with both signs."""
        k = self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.in_channels * k * k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        filters = (eigenvectors.T / (eigenvalues[:, None] + eps).sqrt()).flip(0).float()
        filters = filters.reshape(-1, self.in_channels, k, k)
        self.weight.copy_(torch.cat([filters, -filters]))


def fixed_scale_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with a learned shift but a fixed unit scale, and fast-moving running statistics."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    """conv-pool-BN-GELU to ``out_channels`` at half the size, then a residual unit conv-BN-GELU."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = fixed_scale_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = fixed_scale_norm(out_channels)
        self.act = nn.GELU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        out = self.act(self.bn2(self.conv2(x)))
        return x + out if self.residual else out


class FastResNet(Network):
    """Whitening stem, three ConvGroups (64/256/256 channels at width 1), global max pool, linear head.

    Its groups open with a conv and a pool that no shortcut crosses, so they are not
    ``ResidualUnit``s: ``blocks()`` is empty, and the lesion study and checkpointing pass it by.
    """

    min_input_size = 9  # the 2x2 stem takes one pixel, and three 2x pools must leave one
    init = "dirac"  # PyTorch's default conv init under an identity on the first channels
    init_images = WHITENING_IMAGES

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, residual: bool = True
    ) -> None:
        super().__init__()
        self.residual = residual
        self.num_classes = num_classes
        widths = [max(1, round(c * width)) for c in BASE_WIDTHS]
        self.whiten = Whitening(in_channels)
        self.act = nn.GELU()
        channels = [self.whiten.out_channels, *widths]
        self.layers = nn.Sequential(
            *(ConvGroup(cin, cout, residual) for cin, cout in itertools.pairwise(channels))
        )
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Identity-initialised convs (airbench's dirac init): each conv starts by passing its first
        # input channels through, so the net starts near a shallow one and the signal survives.
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, Whitening):
                nn.init.dirac_(m.weight[: m.in_channels])

    def init_from_data(self, images: torch.Tensor) -> None:
        """Fit the whitening layer to ``init_images`` normalised training images (N, C, H, W)."""
        self.whiten.fit(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.act(self.whiten(x)))
        # A max pool, not torch.amax: amax's backward finds the maximum again by equality, and
        # torch.compile on the CPU recomputes the GELU before it by another path in bf16, so
        # nothing matches and the gradient is 0/0 (pytorch PR 186953); the pool keeps its index.
        return self.fc(F.adaptive_max_pool2d(x, 1).flatten(1)) * LOGIT_SCALE


@register_model(family="fast", depth=8, twin="fastplain")
def fastresnet(residual: bool = True, **kw: Any) -> FastResNet:
    """The fast CIFAR net with an identity shortcut in each group; ``fastplain`` is airbench94's net."""
    return FastResNet(residual=residual, **kw)
