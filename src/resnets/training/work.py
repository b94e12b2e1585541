"""The arithmetic of training: FLOPs of one step per image, counted once, and the total after any step.

The count is PyTorch's own (``torch.utils.flop_counter``, a multiply-add counted as 2: convolutions,
matrix products and attention, not the element-wise work between them) of the forward pass and
the backward pass of a cross-entropy loss, run on the "meta" device, where tensors have shapes
and no data: it allocates nothing, runs no kernel, draws no random number and leaves the model's
weights and statistics as they were (on a 2-core EPYC, one thread: 0.1 s for resnet20 and for
ResNet-18 at 224 px, 0.5 s for resnet110, 8 s for resnet1202, and about 1 s more for the
counter's first use in a process). The backward pass computes only the gradients the run takes
(none for a frozen weight, none for the images), and the count leaves out what activation
checkpointing recomputes and what the optimiser computes (Muon's Newton-Schulz iterations): it is
the work of the training algorithm.

The total after ``step`` steps is then a pure function of the step (every training batch holds
``batch_size`` images: the last partial one of an epoch is dropped), so a resumed run reports the
same figures as one that never stopped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

COUNT_BATCH = 2  # images counted at once (BatchNorm wants more than one); the count is linear in it


def train_flops_per_image(model: nn.Module, image_shape: Sequence[int]) -> int:
    """FLOPs of one training step's forward and backward pass, per image of ``image_shape`` (C, H, W)."""
    segments = getattr(model, "checkpoint_segments", 0)
    if segments:  # recomputed activations are overhead, not the step's own work
        model.checkpoint_segments = 0
    try:
        try:
            return _count(model, image_shape, torch.device("meta"))
        except (NotImplementedError, RuntimeError):  # an operation without a meta kernel
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            return _count(copy.deepcopy(model), image_shape, device)
    finally:
        if segments:
            model.checkpoint_segments = segments


def _count(model: nn.Module, image_shape: Sequence[int], device: torch.device) -> int:
    """The count on ``device``: on "meta" with stand-ins for the model's tensors, else on the model itself."""
    tensors = {}
    if device.type == "meta":
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            tensors[name] = torch.empty_like(t, device=device).requires_grad_(t.requires_grad)
    x = torch.zeros(COUNT_BATCH, *image_shape, device=device)
    y = torch.zeros(COUNT_BATCH, dtype=torch.long, device=device)
    cuda = [device] if device.type == "cuda" else []
    # fork_rng: a stochastic layer (drop-path) must not move the run's random stream.
    with torch.random.fork_rng(devices=cuda), FlopCounterMode(display=False) as counter:
        logits = functional_call(model, tensors, (x,)) if tensors else model(x)
        F.cross_entropy(logits.float(), y).backward()
    return int(counter.get_total_flops()) // COUNT_BATCH


def work_record(model: nn.Module, image_shape: Sequence[int], sizes: list[int] | None,
                saved: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """config.json's training-FLOPs entries: per image at the run's size, and at each size of a resized run.

    A resumed run keeps the figures it started with (a newer torch may count otherwise).
    """
    if saved is not None and "train_flops_per_image" in saved:
        return {k: saved[k] for k in ("train_flops_per_image", "train_flops_per_image_at") if k in saved}
    c, *_ = image_shape
    record: dict[str, Any] = {"train_flops_per_image": train_flops_per_image(model, image_shape)}
    if sizes:  # progressive resizing: each epoch's crop has its own count
        record["train_flops_per_image_at"] = {
            str(s): train_flops_per_image(model, (c, s, s)) for s in sorted(set(sizes))
        }
    return record


def train_flops_done(step: int, batch_size: int, steps_per_epoch: int, resolved: dict[str, Any]) -> int:
    """FLOPs of the first ``step`` training steps, from config.json's resolved record."""
    at, sizes = resolved.get("train_flops_per_image_at"), resolved.get("train_sizes")
    if not at or not sizes:
        return step * batch_size * int(resolved["train_flops_per_image"])
    total = 0
    for epoch in range(math.ceil(step / steps_per_epoch)):
        steps = min(steps_per_epoch, step - epoch * steps_per_epoch)
        total += steps * batch_size * int(at[str(sizes[min(epoch, len(sizes) - 1)])])
    return total


def train_pflop(step: int, batch_size: int, steps_per_epoch: int, resolved: dict[str, Any]) -> float | None:
    """PFLOP (1e15 FLOPs) of the first ``step`` training steps; None for a record without the count."""
    if "train_flops_per_image" not in resolved:
        return None
    return train_flops_done(step, batch_size, steps_per_epoch, resolved) / 1e15
