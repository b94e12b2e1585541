"""Diagnostics checked against numbers worked out by hand on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.diagnostics import GradientFlow, gradient_norms, layer_responses, signal_propagation
from resnets.training import TrainConfig, train


def _two_layer() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([[5.0, 6.0]]))
    return model


def test_gradient_norms_of_a_linear_net_by_hand() -> None:
    # y = W2 W1 x, L = sum(y). dL/dW2 = (W1 x)^T = [3, 7] for x = [1, 1];
    # dL/dW1 = W2^T x^T = [[5, 5], [6, 6]].
    model = _two_layer()
    x = torch.tensor([[1.0, 1.0]])
    names, norms = gradient_norms(model, x, torch.zeros(1), loss_fn=lambda out, _: out.sum())
    assert names == ["0", "1"]
    assert norms[0] == pytest.approx(math.sqrt(25 + 25 + 36 + 36))
    assert norms[1] == pytest.approx(math.sqrt(9 + 49))
    assert all(p.grad is None for p in model.parameters())  # left as it was


def test_gradient_flow_records_only_armed_steps_in_forward_order() -> None:
    class Reordered(nn.Module):  # registered b-then-a, run a-then-b
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Linear(3, 1)
            self.a = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    model = Reordered()
    flow = GradientFlow(model)
    model(torch.ones(4, 2)).sum().backward()  # not armed: nothing recorded
    assert flow._norms == {}
    model.zero_grad()
    flow.arm()
    model(torch.ones(4, 2)).sum().backward()
    norms = flow.collect()
    assert flow.names == ["a", "b"]
    assert norms[0] == pytest.approx(model.a.weight.grad.norm().item())
    assert norms[1] == pytest.approx(model.b.weight.grad.norm().item())
    flow.remove()


def test_layer_response_after_bn_by_hand() -> None:
    # A 3x3 all-ones conv on an all-ones 5x5 image counts in-bounds neighbours:
    # 4 at corners, 6 on edges, 9 inside. BN (eval, mean 0, var 1, gamma 2) doubles it.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(1, eps=0.0)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        bn.weight.fill_(2.0)
    model = nn.Sequential(conv, bn, nn.ReLU())
    counts = np.full((5, 5), 9.0)
    counts[0, :] = counts[-1, :] = counts[:, 0] = counts[:, -1] = 6.0
    counts[0, 0] = counts[0, -1] = counts[-1, 0] = counts[-1, -1] = 4.0
    names, stds = layer_responses(model, torch.ones(1, 1, 5, 5))
    assert names == ["0"]
    assert stds[0] == pytest.approx(2 * counts.std(ddof=1), rel=1e-6)
    model.train()
    layer_responses(model, torch.ones(1, 1, 5, 5))
    assert model.training


def test_signal_propagation_by_hand() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 3 * x

    torch.manual_seed(0)
    x = torch.randn(8, 2, 4, 4) + torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    model = nn.Sequential(Scale())
    stats = signal_propagation(model, x, blocks=[("0", model[0])])
    per_channel = x.transpose(0, 1).flatten(1)
    assert stats.mean_squared[0] == pytest.approx((3 * per_channel.mean(1)).pow(2).mean().item(), rel=1e-5)
    assert stats.variance[0] == pytest.approx((9 * per_channel.var(1)).mean().item(), rel=1e-5)
    assert math.isnan(stats.branch_variance[0])


@pytest.mark.slow
def test_signal_propagation_sees_zero_branches_and_leaves_bn_alone() -> None:
    model = create_model("resnet20", zero_init_residual=True)
    before = model.layer1[0].bn1.running_mean.clone()
    stats = signal_propagation(model, torch.randn(4, 3, 32, 32))
    assert len(stats.blocks) == 9
    assert stats.branch_variance == [0.0] * 9  # gamma = 0: every branch starts at zero
    assert torch.equal(model.layer1[0].bn1.running_mean, before)
    plain = signal_propagation(create_model("plain20"), torch.randn(4, 3, 32, 32))
    assert all(math.isnan(v) for v in plain.branch_variance)


@pytest.mark.slow
def test_trainer_logs_gradient_norms_every_n_steps(tmp_path: Path) -> None:
    cfg = TrainConfig(model="resnet20", dataset="digits", iterations=7, grad_every=3, batch_size=32,
                      out=str(tmp_path / "run"))  # fmt: skip
    train(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "gradients.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 3, 6]
    assert (
        len(lines[0]["layers"]) == 20 and lines[0]["layers"][0] == "conv1" and lines[0]["layers"][-1] == "fc"
    )
    assert all(v > 0 and math.isfinite(v) for x in lines for v in x["norms"])
