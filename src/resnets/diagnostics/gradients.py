"""Gradient flow: the gradient norm of every conv/linear weight, in forward (depth) order."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class GradientFlow:
    """Records ||dL/dW|| of each trained conv/linear layer through gradient hooks, on armed steps only.

    Hooks fire as each gradient is accumulated, so recording costs one norm per layer and
    nothing but a flag test on other steps: cheap enough to leave on every N steps. Layers
    are ordered as the first armed forward pass runs them, which is their depth order.
    """

    def __init__(self, model: nn.Module) -> None:
        # Frozen layers (fine-tuning, fastresnet's whitening) have no gradient to record.
        self.layers = [(name, m) for name, m in model.named_modules()
                       if isinstance(m, WEIGHTED) and m.weight.requires_grad]  # fmt: skip
        self.armed = False
        self._order: dict[str, int] = {}
        self._norms: dict[str, torch.Tensor] = {}
        self._grad_hooks = [
            m.weight.register_post_accumulate_grad_hook(self._on_grad(n)) for n, m in self.layers
        ]
        self._fwd_hooks = [m.register_forward_hook(self._on_forward(n)) for n, m in self.layers]

    def _on_forward(self, name: str) -> Callable[..., None]:
        def seen(module: nn.Module, inputs: object, output: object) -> None:
            if self.armed:
                self._order.setdefault(name, len(self._order))

        return seen

    def _on_grad(self, name: str) -> Callable[[torch.Tensor], None]:
        def record(param: torch.Tensor) -> None:
            if self.armed and param.grad is not None:
                self._norms[name] = param.grad.detach().float().norm()

        return record

    @property
    def names(self) -> list[str]:
        """Layer names in depth order (layers never run come last)."""
        rank = {n: self._order.get(n, len(self._order) + i) for i, (n, _) in enumerate(self.layers)}
        return sorted(rank, key=rank.__getitem__)

    def arm(self) -> None:
        """Record the next forward and backward pass."""
        self.armed, self._norms = True, {}

    def collect(self) -> list[float]:
        """The norms recorded since ``arm()``, in depth order; disarms."""
        self.armed = False
        if self._fwd_hooks and self._order:  # the order is known: stop paying for it
            for h in self._fwd_hooks:
                h.remove()
            self._fwd_hooks = []
        return [float(self._norms[n]) if n in self._norms else float("nan") for n in self.names]

    def remove(self) -> None:
        """Detach every hook."""
        for h in self._grad_hooks + self._fwd_hooks:
            h.remove()
        self._grad_hooks, self._fwd_hooks = [], []


def gradient_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> tuple[list[str], list[float]]:
    """Layer names and weight-gradient norms (depth order) of one backward pass on (x, y).

    The model is left as it was: gradients cleared and BN running statistics restored.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    flow = GradientFlow(model)
    try:
        model.zero_grad(set_to_none=True)
        flow.arm()
        loss_fn(model(x), y).backward()
        norms = flow.collect()
        names = flow.names
    finally:
        flow.remove()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return names, norms
