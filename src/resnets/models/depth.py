"""Training very deep nets: stochastic depth, and activation checkpointing of block segments.

Stochastic depth (Huang et al. 2016): in training each residual branch is dropped with a
probability rising linearly with depth, ``p_l = l / L * p_L``, the identity shortcut always
kept; at inference the branch is scaled by its survival probability ``1 - p_l``. Masks are
drawn per sample (as timm does) so every parameter gets a gradient each step, which keeps
DistributedDataParallel and activation checkpointing simple.

Activation checkpointing keeps only each segment's input in the forward pass and recomputes
the segment in the backward pass (``torch.utils.checkpoint``, non-reentrant). The
recomputation must not update BatchNorm running statistics a second time; random masks are
replayed (the RNG state is restored), so the recomputed activations are the same.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class StochasticDepth(nn.Module):
    """Zero a residual branch per sample with probability ``p`` in training; scale by 1-p in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return branch * (1.0 - self.p)
        keep = torch.empty(branch.shape[0], 1, 1, 1, device=branch.device, dtype=branch.dtype)
        return branch * keep.bernoulli_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def drop_probabilities(blocks: int, p_last: float) -> list[float]:
    """The linear decay rule: block l of L (1-based) is dropped with probability l / L * p_L."""
    return [p_last * (i + 1) / blocks for i in range(blocks)]


def expected_depth(blocks: int, p_last: float) -> float:
    """The expected number of residual branches active in a training step."""
    return sum(1.0 - p for p in drop_probabilities(blocks, p_last))


def default_segments(blocks: int) -> int:
    """sqrt(n) segments of sqrt(n) blocks: memory ~ 2 sqrt(n) blocks' activations (Chen et al. 2016)."""
    return max(1, round(math.sqrt(blocks)))


def split(blocks: Sequence[nn.Module], segments: int) -> list[list[nn.Module]]:
    """``blocks`` in ``segments`` contiguous runs of nearly equal length."""
    segments = max(1, min(segments, len(blocks)))
    bounds = [round(i * len(blocks) / segments) for i in range(segments + 1)]
    return [list(blocks[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


@contextlib.contextmanager
def _frozen_bn_statistics(modules: Sequence[nn.Module]) -> Iterator[None]:
    """BatchNorm running sums as they were before the body: the recomputation updates none.

    (Turning tracking off instead would change what batch_norm saves for backward, which the
    checkpoint checks against the original forward.)
    """
    batchnorm = nn.modules.batchnorm._BatchNorm
    buffers = [
        b for block in modules for m in block.modules() if isinstance(m, batchnorm)
        for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None
    ]  # fmt: skip
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved, strict=True):
                b.copy_(s)


def run_checkpointed(blocks: Sequence[nn.Module], x: torch.Tensor, segments: int) -> torch.Tensor:
    """``blocks`` applied in order, each segment's activations recomputed in the backward pass."""
    for segment in split(blocks, segments):

        def run(t: torch.Tensor, segment: list[nn.Module] = segment) -> torch.Tensor:
            for block in segment:
                t = block(t)
            return t

        contexts: Callable[[], tuple[contextlib.AbstractContextManager, ...]] = lambda segment=segment: (  # noqa: E731
            contextlib.nullcontext(),
            _frozen_bn_statistics(segment),
        )
        x = checkpoint(run, x, use_reentrant=False, context_fn=contexts)
    return x
