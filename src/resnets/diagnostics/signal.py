"""Signal propagation through the blocks: squared mean, variance, and residual-branch variance."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..models.contract import NamesBranchEnd, Network, ResidualUnit


@dataclass
class SignalStats:
    """Per-block statistics of the activations, input to output."""

    blocks: list[str]
    mean_squared: list[float]  # average over channels of (channel mean)^2
    variance: list[float]  # average over channels of the channel variance
    branch_variance: list[float]  # the same for the residual branch F(x); nan when unknown


def branch_end(block: nn.Module) -> nn.Module | None:
    """The last layer of a block's residual branch F(x): a resnets unit's, or any module's that names it."""
    if isinstance(block, ResidualUnit) and not block.residual:
        return None  # a plain twin's F(x) is the block's whole output, not a branch beside a shortcut
    return block.branch_end() if isinstance(block, NamesBranchEnd) else None


def _channel_stats(t: torch.Tensor) -> tuple[float, float]:
    t = t.detach().float().transpose(0, 1).flatten(1)  # (C, everything else)
    return t.mean(1).pow(2).mean().item(), t.var(1).mean().item()


@torch.no_grad()
def signal_propagation(
    model: nn.Module, x: torch.Tensor, blocks: list[tuple[str, nn.Module]] | None = None
) -> SignalStats:
    """Statistics of each block's output (and branch) on batch ``x`` with BN in training mode.

    Runs on a copy, so the model's BN running statistics are not touched. ``blocks`` defaults
    to ``model.blocks()`` for resnets models; pass (name, module) pairs for any other model.
    """
    probe = copy.deepcopy(model).train()
    if blocks is None:
        if not isinstance(probe, Network):
            raise TypeError("signal_propagation needs (name, module) block pairs for a model outside resnets")
        names = {m: n for n, m in probe.named_modules()}
        blocks = [(names[b], b) for b in probe.blocks()]
    else:
        by_name = dict(probe.named_modules())
        blocks = [(name, by_name[name]) for name, _ in blocks]
    outputs: dict[str, torch.Tensor] = {}
    branches: dict[str, torch.Tensor] = {}
    handles = []
    for name, block in blocks:
        handles.append(block.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
        end = branch_end(block)
        if end is not None:
            handles.append(
                end.register_forward_hook(lambda m, i, o, name=name: branches.__setitem__(name, o.clone()))
            )
    try:
        probe(x)
    finally:
        for h in handles:
            h.remove()
    stats = SignalStats([], [], [], [])
    for name, _ in blocks:
        ms, var = _channel_stats(outputs[name])
        stats.blocks.append(name)
        stats.mean_squared.append(ms)
        stats.variance.append(var)
        stats.branch_variance.append(_channel_stats(branches[name])[1] if name in branches else float("nan"))
    return stats
