"""Layer choices a block takes as options: its activation and its normalisation.

Names are what users type (``--act elu``); the factories build fresh modules for each use.
``trelu`` is the transformed leaky ReLU of TAT (Zhang, Botev, Martens 2022): a leaky ReLU
scaled to keep a unit Gaussian input's second moment, with the slope chosen per network so
that the whole net's correlation map sends 0 to eta (``tat_slope``).

Two layers a network may hold in place of an ordinary one: ``PerLocationNorm``, the input
normalisation DKS/TAT use on images, and ``DiracConv2d``, DiracNets' convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "elu", "selu", "gelu", "tanh", "trelu")
NORMS: tuple[str, ...] = ("batchnorm", "none")
INPUT_NORMS: tuple[str, ...] = ("none", "per-location")

ActLayer = Callable[[], nn.Module]
NormLayer = Callable[[int], nn.Module] | None  # None: no normalisation (convolutions get biases)


class ScaledLeakyReLU(nn.Module):
    """sqrt(2 / (1 + a^2)) * leaky_relu(x, a): E[f(x)^2] = 1 for x ~ N(0, 1) (TAT's TReLU)."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.gain = math.sqrt(2.0 / (1.0 + slope * slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope) * self.gain

    def extra_repr(self) -> str:
        return f"slope={self.slope:.4f}"


def relu() -> nn.Module:
    """An in-place ReLU: the papers' activation and every block's default ``act_layer``."""
    return nn.ReLU(inplace=True)


def activation_factory(name: str, slope: float = 0.01) -> ActLayer:
    """A maker of the named activation; ``slope`` is leaky_relu's and trelu's negative slope."""
    makers: dict[str, ActLayer] = {
        "relu": relu,
        "leaky_relu": lambda: nn.LeakyReLU(slope, inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "selu": lambda: nn.SELU(inplace=True),
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "trelu": lambda: ScaledLeakyReLU(slope),
    }
    if name not in makers:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    return makers[name]


def norm_factory(name: str) -> NormLayer:
    """BatchNorm2d, or None for no normalisation."""
    if name not in NORMS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMS)}; got {name!r}")
    return nn.BatchNorm2d if name == "batchnorm" else None


def make_norm(norm_layer: NormLayer, channels: int) -> nn.Module:
    """The normalisation layer, or an identity where there is none."""
    return nn.Identity() if norm_layer is None else norm_layer(channels)


class PerLocationNorm(nn.Module):
    """Append a channel of ones, then scale each pixel's channel vector to mean square 1 (DKS's PLN).

    The constant channel (a homogeneous coordinate) keeps a pixel's overall brightness, which the
    normalisation would otherwise divide away; the scaling gives every location the same q-value,
    as TAT's kernel analysis assumes of the input.
    """

    extra_channels = 1

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


def make_input_norm(name: str) -> nn.Module | None:
    """The input normalisation a network starts with, or None for none."""
    if name not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}; got {name!r}")
    return PerLocationNorm() if name == "per-location" else None


class DiracConv2d(nn.Conv2d):
    """DiracNets' convolution (Zagoruyko & Komodakis 2017): weight = alpha * I + beta * W / ||W||.

    I is the identity kernel (the first min(in, out) channels map to themselves through the centre
    tap); W is normalised per output filter, so only its direction is learned and its scale lives in
    beta. alpha and beta are per output channel and start at 1 and 0.1: each layer starts close to
    the identity, which is what lets a deep net without shortcuts train.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
        bias: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.alpha = nn.Parameter(torch.empty(out_channels))
        self.beta = nn.Parameter(torch.empty(out_channels))
        # Not saved: it follows from the shape, and checkpoints then hold only what is learned.
        self.register_buffer("delta", nn.init.dirac_(torch.empty_like(self.weight)), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W He-normal (its scale is normalised away), alpha 1, beta 0.1, bias 0."""
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if "alpha" in self._parameters:  # nn.Conv2d.__init__ calls this before alpha and beta exist
            nn.init.ones_(self.alpha)
            nn.init.constant_(self.beta, 0.1)

    def effective_weight(self) -> torch.Tensor:
        """The kernel the convolution applies: alpha * I + beta * W / ||W|| per output filter."""
        direction = F.normalize(self.weight.flatten(1), dim=1).view_as(self.weight)
        return self.alpha.view(-1, 1, 1, 1) * self.delta + self.beta.view(-1, 1, 1, 1) * direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


def leaky_relu_cmap(c: float, slope: float) -> float:
    """Correlation map of the unit-gain leaky ReLU: output correlation of inputs correlated ``c``.

    For a ReLU (slope 0) this is the arc-cosine kernel of degree 1; slope 1 is the identity.
    """
    c = max(-1.0, min(1.0, c))
    bend = (1.0 - slope) ** 2 / (math.pi * (1.0 + slope * slope))
    return c + bend * (math.sqrt(1.0 - c * c) - c * math.acos(c))


def tat_slope(nonlinear_layers: int, eta: float = 0.9) -> float:
    """The leaky ReLU slope whose ``nonlinear_layers``-fold C-map sends 0 to ``eta`` (TAT, Sec. 4).

    The composed map at 0 falls monotonically from near 1 (ReLU) to 0 (slope 1, linear): bisect.
    """
    if nonlinear_layers < 1 or not 0.0 < eta < 1.0:
        raise ValueError("TAT needs at least one nonlinear layer and eta in (0, 1)")

    def c_net(slope: float) -> float:
        c = 0.0
        for _ in range(nonlinear_layers):
            c = leaky_relu_cmap(c, slope)
        return c

    low, high = 0.0, 1.0
    if c_net(low) <= eta:  # too shallow for eta even with a ReLU
        return 0.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if c_net(mid) > eta else (low, mid)
    return (low + high) / 2
