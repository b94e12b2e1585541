"""Will a training step fit in memory? An estimate of activation memory, and the checkpointing rule."""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..models import Network

# Turn checkpointing on by itself when the activations would take more than this share of the
# memory free at the start: the rest is weights, optimizer state, the dataset and the allocator.
AUTO_SHARE = 0.5


def _activation_sizes(model: nn.Module, image_shape: tuple[int, ...]) -> list[int]:
    """Elements of each layer's output for one image, in forward order."""
    sizes: list[int] = []

    def count(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    # In-place layers (ReLU) write over their input's storage and identities add nothing.
    leaves = [
        m for m in model.modules()
        if not list(m.children()) and not getattr(m, "inplace", False) and not isinstance(m, nn.Identity)
    ]  # fmt: skip
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model.eval()(torch.zeros(1, *image_shape, device=device))  # eval: BN statistics untouched
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sizes


def activation_bytes(model: nn.Module, image_shape: tuple[int, ...], batch: int) -> int:
    """Bytes of activations a training step keeps for backward: every layer's output, fp32.

    Of the right size: resnet1202 at batch 128 is estimated at 11.0 GiB and measured 11.2 GiB
    of peak CUDA memory (H200, weights and gradients included) and 8 GB of peak RSS on the CPU;
    preact_resnet1001 18.3 GiB against 18.4 GiB.
    """
    return sum(_activation_sizes(model, image_shape)) * batch * 4


def largest_activation_bytes(
    model: nn.Module, image_shape: tuple[int, ...], batch: int, element_bytes: int = 4
) -> int:
    """Bytes of the largest single activation tensor of a step."""
    return max(_activation_sizes(model, image_shape), default=0) * batch * element_bytes


# glibc's mallopt parameter and the largest threshold it accepts on 64-bit systems. Below the
# smallest worth mapping the heap's slack is small and page faults would cost more than it.
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_GLIBC_MMAP_MAX, _GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024
_MMAP_WORTH_IT = 4 * 2**20
_MMAP_THRESHOLD_MAX = 32 * 2**20


def map_large_blocks(threshold: int) -> int | None:
    """Serve allocations of ``threshold`` bytes or more from fresh mmaps, returned to the OS on free.

    Why: a checkpointed step frees and re-allocates the same activations many times, and glibc
    keeps them in its heap, where mixed sizes fragment it: resnet1202 checkpointed at batch 128
    peaks at ~4.4-5.0 GB of RSS for ~1.7 GB of live tensors (docs/performance.md). Mapping only
    the largest tensors keeps the peak near the live size for little page-fault time. Returns the
    threshold set, or None where it is too small to matter, or the C library has no mallopt
    (not glibc) or refuses. The setting lasts for the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threshold < _MMAP_WORTH_IT:
        return None
    threshold = min(int(threshold), _MMAP_THRESHOLD_MAX)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Undo keep_freed_blocks where an earlier run in this process set it: glibc's defaults.
    mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
    mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
    return threshold if mallopt(_M_MMAP_THRESHOLD, threshold) == 1 else None


def keep_freed_blocks() -> bool:
    """Serve every allocation from glibc's heap and keep freed memory there for the next step.

    Why: glibc maps each block over 32 MiB afresh and unmaps it on free, so a step whose
    activations are that large pays page faults and kernel zeroing for all of them, every step:
    fastresnet at batch 1024 trained 1.2-1.5x faster with the heap kept (docs/performance.md).
    The price is an RSS that stays at the step's peak. Returns whether glibc took the setting;
    it lasts for the process.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1


def free_bytes(device: torch.device) -> int | None:
    """Memory free for this process now: MemAvailable on Linux, free CUDA memory on a GPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class CheckpointingChoice:
    """Whether a run checkpoints activations, and why (recorded in config.json 'resolved')."""

    segments: int | str
    auto: bool
    estimate_gib: float | None = None
    free_gib: float | None = None

    def reason(self) -> str:
        """One line for the user."""
        return (
            f"activations estimated at {self.estimate_gib:.1f} GiB, more than {AUTO_SHARE:.0%} of the "
            f"{self.free_gib:.1f} GiB free: checkpointing them (--checkpoint-activations 0 turns it off)"
        )


def choose_checkpointing(
    given: int | str | None, model: nn.Module, image_shape: tuple[int, ...], batch: int, device: torch.device
) -> CheckpointingChoice:
    """The user's setting when given; else on by itself where the activations would not fit."""
    if given is not None:
        return CheckpointingChoice(given, auto=False)
    estimate, free = activation_bytes(model, image_shape, batch), free_bytes(device)
    gib = 2.0**30
    on = free is not None and estimate > AUTO_SHARE * free
    return CheckpointingChoice("auto" if on else 0, on, estimate / gib, free / gib if free else None)


def map_checkpointed_activations(
    model: Network, image_shape: tuple[int, ...], batch: int, precision: str, device: torch.device
) -> int | None:
    """On the CPU, a checkpointed model's largest activations come from mmap (``map_large_blocks``)."""
    if device.type != "cpu" or not model.checkpoint_segments:
        return None
    element = 2 if precision in ("bf16", "fp16") else 4
    return map_large_blocks(largest_activation_bytes(model, image_shape, batch, element))
