"""Other ways across a deep stack: gated skips, long skips, identity kernels, and rescaled shortcut units.

- ``HighwayBlock`` (Srivastava et al. 2015): y = T(x) * H(x) + (1 - T(x)) * x, the gate T a
  sigmoid of a convolution whose bias starts negative (more so in deeper nets,
  ``highway_gate_bias``), so each block starts mostly carrying x.
- ``LongSkipStage``: a stage of plain blocks with one identity connection over the whole stage
  instead of one every two layers.
- ``DiracBlock`` (Zagoruyko & Komodakis 2017): a plain block whose convolutions are
  ``DiracConv2d``s, alpha * I + beta * W: the identity lives inside each kernel, not beside it.
- ``FixupBlock`` (Zhang et al. 2019): no normalisation; scalar biases before each layer and a
  scalar multiplier, the branch's last convolution zeroed and the others scaled at init.
- ``SkipInitBlock`` (De & Smith 2020): no normalisation; a learnable scalar, started at 0, ends
  each residual branch.
- ``ReZeroBlock`` (Bachlechner et al. 2020): x + alpha * F(x), alpha = 0, nothing after the add;
  F keeps BatchNorm as in the authors' CIFAR ResNet, or drops it (``norm_layer=None``).

All take a basic block's arguments, so a network builds them in its place, and all are
``contract.ResidualUnit``s, so the lesion study and the diagnostics treat them as any block.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BasicBlock, PadShortcut, Shortcut, conv3x3, make_shortcut
from .contract import ResidualUnit
from .layers import ActLayer, DiracConv2d, NormLayer, make_norm, relu

# Highway gates start biased to carry: sigmoid(-2) = 0.12 of the transform, 0.88 of the input.
# The authors' released CIFAR code used -2; a network sets its own by depth (highway_gate_bias).
HIGHWAY_GATE_BIAS = -2.0


def highway_gate_bias(depth: int) -> float:
    """Srivastava et al.'s suggestion for convolutional highway nets: -1, -2, -3 at depths ~10, 20, 30+."""
    return -float(min(3, max(1, round(depth / 10))))


class Scale(nn.Module):
    """Multiply by one learnable scalar (SkipInit's and ReZero's alpha)."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha


class Bias(nn.Module):
    """Add one learnable scalar (Fixup's biases)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


def _carry(in_planes: int, planes: int, stride: int) -> nn.Module:
    """The parameter-free path a skip takes: the identity, or option A where the shape changes."""
    return PadShortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()


class _RemedyUnit(ResidualUnit):
    """A unit that always has its skip (``residual`` whatever the net asks) and sets its own init.

    Stochastic depth is offered on the basic units only, so ``drop_path`` stays an identity here.
    """

    def zero_init_last(self) -> None:
        """These units start with their branches at zero (or gated off) already."""


class HighwayBlock(_RemedyUnit):
    """Two 3x3 convolutions H, gated against the input by T = sigmoid(conv3x3(x) + b), b < 0."""

    last_layer = "bn2"  # the last layer of the transform H
    act_after_add = False  # without its transform, a highway block carries its input

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A", residual: bool = True,
        act_layer: ActLayer = nn.ReLU, norm_layer: NormLayer = nn.BatchNorm2d, drop_rate: float = 0.0,
        gate_bias: float = HIGHWAY_GATE_BIAS,
    ) -> None:  # fmt: skip
        super().__init__()
        bias = norm_layer is None
        self.gate_bias = gate_bias
        self.conv1 = conv3x3(in_planes, planes, stride, bias=bias)
        self.bn1 = make_norm(norm_layer, planes)
        self.act = act_layer()
        self.conv2 = conv3x3(planes, planes, bias=bias)
        self.bn2 = make_norm(norm_layer, planes)
        self.gate = conv3x3(in_planes, planes, stride, bias=True)
        self.downsample = _carry(in_planes, planes, stride)
        self.drop_path = nn.Identity()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """H(x): the block's layers, activation included (a highway layer's nonlinear transform)."""
        return self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))
        return t * self.transform(x) + (1.0 - t) * self.shortcut(x)

    def post_init(self, blocks: int) -> None:
        """The gate's bias starts negative: the block starts by mostly carrying its input."""
        nn.init.constant_(self.gate.bias, self.gate_bias)


class FixupBlock(_RemedyUnit):
    """Fixup's basic block: bias, conv, bias, act, bias, conv, scale, bias; plus the shortcut."""

    last_layer = "bias2b"

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A", residual: bool = True,
        act_layer: ActLayer = nn.ReLU, norm_layer: NormLayer = None, drop_rate: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = Bias(), Bias(), Bias(), Bias()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.act = act_layer()
        self.conv2 = conv3x3(planes, planes)
        self.scale = Scale(1.0)
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, norm=None)
        self.drop_path = nn.Identity()

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """x itself; where the shape changes, the padding or projection of x + bias1a (the authors' code)."""
        return x if self.downsample is None else self.downsample(self.bias1a(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bias1b(self.conv1(self.bias1a(x))))
        out = self.bias2b(self.scale(self.conv2(self.bias2a(out))))
        return self.act(out + self.shortcut(x))

    def post_init(self, blocks: int) -> None:
        """Scale conv1 by L^(-1/2) (m = 2 layers per branch) and zero conv2 (Fixup, Sec. 3)."""
        branches = blocks
        # He normal over the fan-out, as the authors' CIFAR code draws it (std sqrt(2 / (out * k * k))).
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        with torch.no_grad():
            self.conv1.weight.mul_(branches**-0.5)
        nn.init.zeros_(self.conv2.weight)
        if isinstance(self.downsample, nn.Sequential):
            nn.init.kaiming_normal_(self.downsample[0].weight, mode="fan_in", nonlinearity="linear")


class SkipInitBlock(_RemedyUnit):
    """A basic block without BN whose branch ends in a learnable scalar started at 0."""

    last_layer = "skip_gain"

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A", residual: bool = True,
        act_layer: ActLayer = nn.ReLU, norm_layer: NormLayer = None, drop_rate: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride, bias=True)
        self.act = act_layer()
        self.conv2 = conv3x3(planes, planes, bias=True)
        self.skip_gain = Scale(0.0)
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, norm=None)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.skip_gain(self.conv2(self.act(self.conv1(x))))
        return self.act(out + self.shortcut(x))


class ReZeroBlock(_RemedyUnit):
    """shortcut(x) + alpha * F(x) with alpha = 0 and nothing after the sum: a pure identity path.

    With BatchNorm (the authors' CIFAR ResNet), F(x) = act(bn2(conv2(act(bn1(conv1(x)))))); without
    (``norm_layer=None``), F(x) = conv2(act(conv1(x))), its convolutions biased.
    """

    last_layer = "skip_gain"
    act_after_add = False

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A", residual: bool = True,
        act_layer: ActLayer = nn.ReLU, norm_layer: NormLayer = nn.BatchNorm2d, drop_rate: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        normed = norm_layer is not None
        self.conv1 = conv3x3(in_planes, planes, stride, bias=not normed)
        self.bn1 = make_norm(norm_layer, planes)
        self.act = act_layer()
        self.conv2 = conv3x3(planes, planes, bias=not normed)
        self.bn2 = make_norm(norm_layer, planes)
        # The authors' BN branch ends in its activation (the sum has none); the norm-free one in conv2.
        self.act_on_branch = normed
        self.skip_gain = Scale(0.0)
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, norm=norm_layer)
        self.drop_path = nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """F(x), before alpha."""
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(out) if self.act_on_branch else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.skip_gain(self.branch(x))


class DiracBlock(BasicBlock):
    """A plain basic block whose 3x3 convolutions are ``DiracConv2d``s; BN and activation as in the block."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A", residual: bool = False,
        act_layer: ActLayer = relu, norm_layer: NormLayer = nn.BatchNorm2d, drop_rate: float = 0.0,
    ) -> None:  # fmt: skip
        if residual:
            raise ValueError("a Dirac block carries its identity in its kernels: residual=False")
        super().__init__(in_planes, planes, stride, shortcut, False, act_layer, norm_layer, drop_rate)
        bias = norm_layer is None
        self.conv1 = DiracConv2d(in_planes, planes, stride=stride, bias=bias)
        self.conv2 = DiracConv2d(planes, planes, bias=bias)


class LongSkipStage(nn.Sequential):
    """A stage of plain blocks with one parameter-free skip over all of them: y = stage(x) + x."""

    def __init__(self, *blocks: nn.Module, in_planes: int, planes: int, stride: int) -> None:
        super().__init__(*blocks)
        # Kept out of the module tree: a Sequential runs every child, and the skip has no weights.
        self.__dict__["skip"] = _carry(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.__dict__["skip"](x)


UNITS: dict[str, type[ResidualUnit]] = {
    "highway": HighwayBlock,
    "fixup": FixupBlock,
    "skipinit": SkipInitBlock,
    "rezero": ReZeroBlock,
    "dirac": DiracBlock,
}
