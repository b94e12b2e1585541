"""One optimisation step on the fast path: channels-last, autocast, compiled where it pays."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetsError
from .optim import make_optimizer as make_optimizer  # its home before optim.py: callers import it here
from .precision import autocast


@dataclass(frozen=True)
class FastPath:
    """The speed settings a run actually uses, after 'auto' is resolved."""

    precision: str
    channels_last: bool
    compile: bool
    graphs: bool = False  # compiled for CUDA graphs (mode "reduce-overhead"): one launch for many kernels


def has_compiler() -> bool:
    """torch.compile on the CPU generates C++; without a compiler it cannot run."""
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def forward_backward(
    forward: nn.Module, x: torch.Tensor, y: torch.Tensor, accumulate: int, label_smoothing: float,
    precision: str, scaler: torch.amp.GradScaler, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of the batch's mean loss, a micro-batch at a time; returns (loss sum, errors) on the device.

    Nothing is read back to the host here: the caller decides when to wait for the device. ``y`` holds
    class indices, or class probabilities (B, classes) for mixed batches; label smoothing applies to both.
    """
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)  # float64: the host's running sum
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    chunks = list(zip(x.chunk(accumulate), y.chunk(accumulate), strict=True))
    for i, (xc, yc) in enumerate(chunks):
        # Under DDP, gradients are all-reduced once, on the last micro-batch.
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or not hasattr(forward, "no_sync") else forward.no_sync()
        with sync:
            with autocast(precision, device):
                logits = forward(xc)
            loss = F.cross_entropy(logits.float(), yc, label_smoothing=label_smoothing)
            scaler.scale(loss if len(chunks) == 1 else loss * (len(yc) / len(y))).backward()
        loss_sum += loss.detach().double() * len(yc)
        # Mixed batches (--mixup, --cutmix) come with soft targets (B, classes): an image counts as an
        # error when the prediction is not its dominant label, the one with the larger share of the
        # mix (its own label where lambda > 0.5, the partner's where lambda < 0.5; a tie, the lower
        # class index). Training error is then the error on the dominant label, not on the clean image.
        wrong += (logits.argmax(1) != (yc.argmax(1) if yc.ndim == 2 else yc)).sum()
    return loss_sum, wrong


def compile_forward(forward: nn.Module, graphs: bool = False) -> nn.Module:
    """torch.compile (replayed as CUDA graphs where ``graphs``), with a one-line error where it cannot run."""
    try:
        # dynamic=False: training batches keep one shape (the last partial batch is dropped)
        return torch.compile(forward, mode="reduce-overhead" if graphs else None, dynamic=False)
    except RuntimeError as e:
        raise ResnetsError(f"torch.compile is not available here ({e}); run with --no-compile") from None
