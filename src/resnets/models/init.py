"""Weight initialisation schemes for the convolutions of a network.

- ``he_fan_out`` (default): He et al. 2015, normal, fan-out, as in the authors' Torch code;
- ``he_fan_in``: the same with fan-in (PyTorch's convention for kaiming_normal_);
- ``xavier``: Glorot & Bengio 2010, normal, gain 1;
- ``orthogonal``: Saxe et al. 2014, each filter bank a (semi-)orthogonal matrix times the gain;
- ``delta_orthogonal``: Xiao et al. 2018, the centre tap orthogonal, the other taps zero;
- ``dirac``: each convolution starts as the identity on its first channels (as DiracNets and
  the fast CIFAR trainers do), its other filters He-initialised;
- ``lsuv``: Mishkin & Matas 2015, orthogonal, then each layer's weights rescaled on a batch
  until its output variance is 1 (``lsuv_``, needs data: the network's ``init_from_data``).

Gains follow the net's activation (``gain_for``). BatchNorm starts at weight 1, bias 0. A
``DiracConv2d`` keeps its own initialisation whatever the scheme (its W is only a direction).
Linear layers keep PyTorch's default unless a scheme (Fixup) says otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import DiracConv2d

INITS: tuple[str, ...] = (
    "he_fan_out", "he_fan_in", "xavier", "orthogonal", "delta_orthogonal", "dirac", "lsuv",
)  # fmt: skip
LSUV_TOLERANCE, LSUV_TRIES = 0.05, 10
LSUV_IMAGES = 128  # training images LSUV scales the layers on (Mishkin & Matas used 32-1024)


def gain_for(activation: str, slope: float = 0.0) -> float:
    """The gain that keeps activations' scale through a layer of this activation."""
    if activation in ("relu", "elu", "gelu"):
        return math.sqrt(2.0)
    if activation == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if activation == "tanh":
        return 1.0  # at the critical point with no bias variance (Xiao et al. 2018)
    return 1.0  # selu (self-normalising with LeCun's gain 1) and trelu (unit gain by construction)


def delta_orthogonal_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Zero every tap but the centre one, which gets a random (semi-)orthogonal [out, in] matrix."""
    out_c, in_c, kh, kw = weight.shape
    with torch.no_grad():
        weight.zero_()
        centre = torch.empty(out_c, in_c)
        nn.init.orthogonal_(centre, gain)
        weight[:, :, kh // 2, kw // 2] = centre
    return weight


def dirac_(weight: torch.Tensor) -> torch.Tensor:
    """The identity on the first min(out, in) channels (groups of 1), the rest left as they are."""
    out_c, in_c, kh, kw = weight.shape
    n = min(out_c, in_c)
    with torch.no_grad():
        weight[:n].zero_()
        weight[torch.arange(n), torch.arange(n), kh // 2, kw // 2] = 1.0
    return weight


def init_conv(weight: torch.Tensor, scheme: str, gain: float) -> None:
    """Initialise one convolution's weight by ``scheme``."""
    if scheme == "he_fan_out":
        nn.init.normal_(weight, 0.0, gain / math.sqrt(nn.init._calculate_fan_in_and_fan_out(weight)[1]))
    elif scheme == "he_fan_in":
        nn.init.normal_(weight, 0.0, gain / math.sqrt(nn.init._calculate_fan_in_and_fan_out(weight)[0]))
    elif scheme == "xavier":
        nn.init.xavier_normal_(weight, gain=1.0)
    elif scheme in ("orthogonal", "lsuv"):
        nn.init.orthogonal_(weight, gain)
    elif scheme == "delta_orthogonal":
        delta_orthogonal_(weight, gain)
    elif scheme == "dirac":
        init_conv(weight, "he_fan_out", gain)
        dirac_(weight)
    else:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {scheme!r}")


def initialise(model: nn.Module, scheme: str = "he_fan_out", gain: float = math.sqrt(2.0)) -> None:
    """Initialise every convolution by ``scheme``; BatchNorm to the identity; conv biases to 0."""
    for m in model.modules():
        if isinstance(m, DiracConv2d):
            # Its weight is normalised in the forward pass, so a scheme's gain means nothing, and a
            # scheme that shapes the kernel (dirac, delta-orthogonal) would fight its identity term.
            m.reset_parameters()
        elif isinstance(m, nn.Conv2d):
            init_conv(m.weight, scheme, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Seen(Exception):
    """Raised by the hook once the layer's output is seen: the rest of the forward is not needed."""

    def __init__(self, variance: float) -> None:
        self.variance = variance


def _output_variance(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> float:
    def hook(module: nn.Module, inputs: object, out: torch.Tensor) -> None:
        raise _Seen(out.float().var().item())

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Seen as seen:
        return seen.variance
    finally:
        handle.remove()
    return float("nan")  # the layer is not on the forward path


@torch.no_grad()
def lsuv_(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Rescale each conv/linear layer, input to output, until its output variance on ``x`` is 1.

    Runs in training mode, as training will; BatchNorm running statistics are restored after.
    Returns each layer's final output variance.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in batchnorms]
    was_training = model.training
    model.train()
    variances = []
    try:
        for layer in layers:
            var = _output_variance(model, layer, x)
            for _ in range(LSUV_TRIES):
                if not math.isfinite(var) or var <= 0 or abs(var - 1.0) < LSUV_TOLERANCE:
                    break
                layer.weight.div_(math.sqrt(var))
                var = _output_variance(model, layer, x)
            variances.append(var)
    finally:
        for bn, state in zip(batchnorms, saved, strict=True):
            bn.load_state_dict(state)
        model.train(was_training)
    return variances
