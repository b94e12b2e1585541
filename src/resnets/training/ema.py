"""An exponential moving average of the weights, warmed up so early steps do not pin it to init."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay after ``updates`` averages: short at first ((1+n)/(10+n)), ``decay`` later."""
    return min(decay, (1 + updates) / (10 + updates))


def _ema_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | int], None]:
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor | int) -> None:
        d = warmed_up_decay(decay, int(n))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():  # BN's batch counter is copied, not averaged
                a.copy_(c)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A running average of ``model``'s parameters and BN statistics (torch's AveragedModel)."""
    return AveragedModel(model, multi_avg_fn=_ema_fn(decay), use_buffers=True)
