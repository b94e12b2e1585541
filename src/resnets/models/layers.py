"""Layer choices a block takes as options: its activation and its normalisation.

Names are what users type (``--act elu``); the factories build fresh modules for each use.
``trelu`` is the transformed leaky ReLU of TAT (Zhang, Botev, Martens 2022): a leaky ReLU
scaled to keep a unit Gaussian input's second moment, with the slope chosen per network so
that the whole net's correlation map sends 0 to eta (``tat_slope``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "elu", "selu", "gelu", "tanh", "trelu")
NORMS: tuple[str, ...] = ("batchnorm", "none")

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
