"""Layer responses (the paper's Fig. 7): std of each 3x3 conv's output after its BN."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def layer_responses(model: nn.Module, x: torch.Tensor) -> tuple[list[str], list[float]]:
    """Names and response std of every 3x3 conv in forward order, on batch ``x``, eval mode.

    The response is the BN output when a BatchNorm consumes the conv's output directly (after
    BN, before ReLU or the addition, as in the paper); otherwise the conv output itself.
    The std is taken over every element of the response tensor.
    """
    was_training = model.training
    model.eval()
    convs = {
        m: name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    }
    pending: dict[int, str] = {}  # id(conv output) -> conv name, until a BN claims it
    raw: dict[str, float] = {}
    after_bn: dict[str, float] = {}
    order: list[str] = []

    def on_conv(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        name = convs[module]
        order.append(name)
        pending[id(out)] = name
        raw[name] = out.float().std().item()

    def on_bn(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        name = pending.pop(id(inputs[0]), None)
        if name is not None:
            after_bn[name] = out.float().std().item()

    handles = [m.register_forward_hook(on_conv) for m in convs]
    handles += [
        m.register_forward_hook(on_bn)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order, [after_bn.get(name, raw[name]) for name in order]
