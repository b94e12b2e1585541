"""Loss and error of a model over a whole split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import TensorLoader
from .precision import autocast


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: TensorLoader, precision: str = "fp32", flip_tta: bool = False
) -> tuple[float, float]:
    """(mean cross-entropy, error as a fraction) of ``model`` on every batch of ``loader``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    wrong = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = 0
    for x, y in loader:
        with autocast(precision, loader.device):
            logits = model(x).float()
            if flip_tta:  # average with the mirrored image's prediction
                logits = (logits + model(x.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
        n += len(y)
    model.train(was_training)
    return loss_sum.item() / n, wrong.item() / n
