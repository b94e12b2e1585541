"""Learning-rate schedules as pure functions of the step, so resuming needs no scheduler state."""

from __future__ import annotations

import math

PAPER_WARMUP_STEPS = 400  # He et al. 2015, Sec. 4.2: ResNet-110 starts at lr 0.01 for ~400 steps
PAPER_WARMUP_MIN_DEPTH = 110
ONECYCLE_RAMP = 0.3  # share of the steps spent climbing to the peak
ONECYCLE_START = 1 / 25  # peak/25 at the start, as in Smith's one-cycle policy


def default_warmup(schedule: str, depth: int, total_steps: int) -> int:
    """Warm-up steps when none are given: the paper's rule for very deep nets, else none."""
    if schedule == "paper" and depth >= PAPER_WARMUP_MIN_DEPTH:
        return min(PAPER_WARMUP_STEPS, total_steps // 10)
    return 0


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_steps: int = 0) -> float:
    """The learning rate for optimisation step ``step`` (0-based) of ``total_steps``."""
    if schedule == "onecycle":
        ramp = warmup_steps or max(1, int(ONECYCLE_RAMP * total_steps))
        if step < ramp:
            t = step / ramp
            return base_lr * (ONECYCLE_START + (1 - ONECYCLE_START) * t)
        t = (step - ramp) / max(1, total_steps - ramp)
        return base_lr * max(0.0, 1 - t)
    if step < warmup_steps:
        if schedule == "paper":
            return base_lr / 10  # constant, not linear: the paper's recipe
        return base_lr * (step + 1) / warmup_steps
    if schedule == "paper":
        if step >= 0.75 * total_steps:
            return base_lr / 100
        if step >= 0.5 * total_steps:
            return base_lr / 10
        return base_lr
    if schedule == "linear":  # straight down to zero after any warm-up (airbench94_muon: from the first step)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return base_lr * max(0.0, 1 - t)
    if schedule == "cosine":
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return base_lr * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "constant":
        return base_lr
    if schedule == "imagenet":  # /10 at epochs 30 and 60 of torchvision's 90
        return base_lr * 0.1 ** sum(step >= total_steps * k / 3 for k in (1, 2))
    raise ValueError(f"unknown schedule {schedule!r}")


RESIZE_RAMP = 0.75  # the share of the epochs over which the crop grows; the rest train at full size


def resize_step(final: int) -> int:
    """Progressive sizes are multiples of this: 32 for ImageNet-size crops, 8 for CIFAR-size ones.

    Every ImageNet ResNet stage divides a multiple of 32 evenly; the CIFAR nets downsample by 4
    (ResNet-20...) or 8 (fastresnet's three pools), so a multiple of 8 keeps their maps whole.
    """
    return 32 if final >= 128 else 8


def resolution_at(epoch: int, epochs: int, low: int, high: int) -> int:
    """The training crop of ``epoch``: from ``low`` up to ``high`` by 75 % of the epochs, then ``high``."""
    ramp = max(1, round(RESIZE_RAMP * epochs) - 1)
    t = min(1.0, epoch / ramp)
    size = low + t * (high - low)
    step = resize_step(high)
    return min(high, max(step, round(size / step) * step))
