"""Loss and error of a model over a whole split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import TensorLoader
from .precision import autocast


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: TensorLoader, precision: str = "fp32", flip_tta: bool = False,
    translate_tta: bool = False,
) -> tuple[float, float]:  # fmt: skip
    """(mean cross-entropy, error as a fraction) of ``model`` on every batch of ``loader``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    wrong = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = 0
    for x, y in loader:
        with autocast(precision, loader.device):
            logits = _views(model, x, flip_tta)
            if translate_tta:  # half the weight on copies shifted one pixel each way (reflected edges)
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                h, w = x.shape[-2:]
                shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
                logits = (logits + sum(_views(model, s, flip_tta) for s in shifted) / 2) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
        n += len(y)
    model.train(was_training)
    return loss_sum.item() / n, wrong.item() / n


def _views(model: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Logits of ``x``, averaged with those of its mirror image when ``flip``."""
    logits = model(x).float()
    return (logits + model(x.flip(3)).float()) / 2 if flip else logits
