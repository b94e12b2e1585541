"""torch's Muon with its Newton-Schulz iterations in fp32, for machines where bf16 matrix products are slow.

``torch.optim.Muon`` casts every update to bf16 before orthogonalising it: the right call on a GPU or a
CPU with bf16 units, and 25x slower than fp32 on an AVX2-only CPU (AMD EPYC family 25 model 1:
328 ms against 13 ms per step for fast-muon's six filters, docs/performance.md). A run whose fast path
is fp32, because bf16 measured slower for its net, orthogonalises in fp32 with ``Fp32Muon``; every other
run keeps torch's class as it is.
"""

from __future__ import annotations

import torch


def orthogonalise(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float) -> torch.Tensor:  # fmt: skip
    """Muon's quintic Newton-Schulz iteration on ``update`` (a matrix) in fp32: about U V^T of its SVD."""
    a, b, c = coefficients
    wide = update.size(0) <= update.size(1)
    x = update.float() if wide else update.float().T  # iterate on the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class Fp32Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (same groups, state and step) orthogonalising in fp32 rather than bf16."""

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon step of every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["adjust_lr_fn"] not in (None, "original"):
                raise ValueError(f"Fp32Muon has Muon's original lr rule only, not {group['adjust_lr_fn']}")
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalise(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                # Muon's original rule: a tall matrix's orthogonal update is scaled up to the same RMS.
                scaled = lr * max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-scaled)
        return loss
