"""Lookahead as the fast CIFAR trainers use it: slow weights the fast ones are reset to every few steps."""

from __future__ import annotations

import torch
from torch import nn

EVERY = 5  # steps between pulls
START = 0.3  # share of the run before the first pull: early steps move freely
BASE_DECAY = 0.95  # per step; the decay grows as (step / total)^3, so late pulls average over more
POWER = 3.0


class Lookahead:
    """Every ``EVERY`` steps after ``START`` of the run, slow <- lerp(slow, fast) and fast <- slow.

    The decay follows airbench's schedule (0.95^5 x (t / T)^3): near zero when it starts, so the
    weights barely move back, and 0.77 at the end, where it damps the last steps' noise. BN
    statistics are pulled along with the weights, so the model stays consistent.
    """

    def __init__(self) -> None:
        self.slow: list[torch.Tensor] | None = None

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t for t in model.state_dict().values() if t.is_floating_point()]

    def decay(self, step: int, total: int) -> float:
        """The share of the slow weights kept at ``step`` of ``total``."""
        return BASE_DECAY**EVERY * (step / total) ** POWER

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, total: int) -> bool:
        """Pull ``model`` (after optimisation step ``step``, 1-based) where due; whether it did."""
        if step < START * total or step % EVERY:
            return False
        fast = self._tensors(model)
        if self.slow is None:
            self.slow = [t.detach().clone() for t in fast]
            return False
        torch._foreach_lerp_(self.slow, fast, 1 - self.decay(step, total))
        torch._foreach_copy_(fast, self.slow)
        return True

    def state_dict(self) -> dict[str, list[torch.Tensor] | None]:
        """For the checkpoint: the slow weights, or None before the first pull."""
        return {"slow": self.slow}

    def load_state_dict(
        self, state: dict[str, list[torch.Tensor] | None], device: torch.device | str | None = None
    ) -> None:
        """Restore from a checkpoint, onto the model's ``device`` (default: where the tensors are)."""
        self.slow = None if state["slow"] is None else [t.to(device).clone() for t in state["slow"]]
