"""The remedies' building blocks: activations, inits, units without BN, gated and long skips."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.diagnostics import signal_propagation
from resnets.errors import ResnetsError
from resnets.models.init import delta_orthogonal_, dirac_, lsuv_
from resnets.models.layers import ScaledLeakyReLU, leaky_relu_cmap, tat_slope
from resnets.models.units import HIGHWAY_GATE_BIAS, FixupBlock, HighwayBlock, LongSkipStage
from resnets.training import TrainConfig
from resnets.training.step import make_optimizer


def test_leaky_relu_cmap_matches_a_monte_carlo_estimate() -> None:
    torch.manual_seed(0)
    n = 2_000_000
    for c, slope in ((0.0, 0.0), (0.3, 0.2), (-0.5, 0.45), (0.9, 0.7)):
        u, z = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
        v = c * u + math.sqrt(1 - c * c) * z  # corr(u, v) = c
        f = ScaledLeakyReLU(slope)
        fu, fv = f(u), f(v)
        estimate = (fu * fv).mean() / (fu * fu).mean()
        assert abs(estimate.item() - leaky_relu_cmap(c, slope)) < 3e-3, (c, slope)
        assert abs((fu * fu).mean().item() - 1.0) < 3e-3  # unit gain: the q-map keeps 1


def test_tat_slope_gives_the_target_and_matches_dks() -> None:
    # Reference slopes computed with dks 0.1.2 (DeepMind's implementation, PyTorch backend):
    # get_transformed_activations(["leaky_relu"], method="TAT", tat_params={"c_val_0_target": 0.9}) on a
    # chain of L nonlinear layers.
    for layers, dks_slope in ((19, 0.16444278030234755), (55, 0.4518559667119976), (109, 0.585552698154044)):
        slope = tat_slope(layers, 0.9)
        assert abs(slope - dks_slope) < 1e-6
        c = 0.0
        for _ in range(layers):
            c = leaky_relu_cmap(c, slope)
        assert abs(c - 0.9) < 1e-9
    assert tat_slope(1000, 0.9) > tat_slope(100, 0.9)  # deeper nets need a more linear activation


def test_delta_orthogonal_and_dirac_weights() -> None:
    w = torch.empty(32, 16, 3, 3)
    delta_orthogonal_(w)
    centre = w[:, :, 1, 1]
    assert torch.allclose(centre.T @ centre, torch.eye(16), atol=1e-5)
    w[:, :, 1, 1] = 0
    assert w.abs().max() == 0  # every other tap zero
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    dirac_(conv.weight)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(conv(x), x)  # starts as the identity


@pytest.mark.slow
def test_tat_net_keeps_its_signal_without_bn_where_a_relu_net_does_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    tat = create_model("plain110", num_classes=10, act="trelu", init="delta_orthogonal", norm="none")
    relu = create_model("plain110", num_classes=10, init="xavier", norm="none")
    v_tat = signal_propagation(tat, x).variance
    v_relu = signal_propagation(relu, x).variance
    assert 0.1 < v_tat[-1] / v_tat[0] < 10  # the q-map holds over 54 blocks
    assert v_relu[-1] / v_relu[0] < 1e-6  # Xavier's gain 1 with ReLU halves the variance each layer


@pytest.mark.slow
def test_lsuv_gives_unit_output_variance_and_leaves_bn_statistics() -> None:
    torch.manual_seed(0)
    model = create_model("plain20", num_classes=10, init="lsuv")
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = torch.randn(64, 3, 32, 32)
    variances = lsuv_(model, x)
    assert len(variances) == 20  # 19 convs and the classifier
    assert all(abs(v - 1) < 0.06 for v in variances), variances
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fixup_skipinit_rezero_start_as_their_shortcuts() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 16, 8, 8)
    for unit in ("fixup", "skipinit", "rezero"):
        model = create_model("resnet20", num_classes=10, unit=unit)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), unit
        block = model.layer1[1]
        assert torch.allclose(block(x), block.lesioned(x)), unit  # the branch adds nothing at init
    fixup = create_model("resnet56", num_classes=10, unit="fixup")
    assert fixup.fc.weight.abs().max() == 0 and fixup.fc.bias.abs().max() == 0
    blocks = [b for b in fixup.modules() if isinstance(b, FixupBlock)]
    assert len(blocks) == 27 and all(b.conv2.weight.abs().max() == 0 for b in blocks)
    w = blocks[5].conv1.weight
    expected = math.sqrt(2 / w[0].numel()) * 27**-0.5  # He fan-in scaled by L^(-1/(2m-2)), m = 2
    assert abs(w.std().item() / expected - 1) < 0.1


def test_highway_and_long_skips() -> None:
    torch.manual_seed(0)
    highway = create_model("plain20", num_classes=10, unit="highway")
    gates = [b.gate.bias for b in highway.modules() if isinstance(b, HighwayBlock)]
    assert len(gates) == 9 and all(torch.all(g == HIGHWAY_GATE_BIAS) for g in gates)
    plain = create_model("plain20", num_classes=10)
    long = create_model("plain20", num_classes=10, long_skip=True)
    assert isinstance(long.layer2, LongSkipStage)
    assert list(long.state_dict()) == list(plain.state_dict())  # the long skip has no weights
    long.load_state_dict(plain.state_dict())
    x = torch.randn(4, 16, 32, 32)
    stage_in = x
    expected = nn.Sequential(*plain.layer1)(stage_in) + stage_in
    assert torch.allclose(long.layer1(stage_in), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("plain20", {"unit": "fixup"}, "use residual net resnet20"),
        ("resnet20", {"unit": "highway"}, "use plain net plain20"),
        ("resnet20", {"long_skip": True}, "use plain net plain20"),
        ("plain20", {"long_skip": True, "checkpoint_segments": 2}, "cannot be combined"),
        ("resnet20", {"unit": "rezero", "norm": "batchnorm"}, "without normalisation"),
        ("plain20", {"act": "swish"}, "act must be one of"),
        ("plain20", {"init": "kaiming"}, "init must be one of"),
        ("plain20", {"drop_rate": 1.5}, "drop_rate must be"),
        ("resnet50", {"unit": "fixup"}, "does not apply"),
    ],
)
def test_nonsense_options_are_one_line_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(ResnetsError, match=message):
        create_model(name, num_classes=10, **options)


def test_decay_for_sets_weight_decay_by_layer() -> None:
    model = create_model("plain20", num_classes=10)
    cfg = TrainConfig(model="plain20", weight_decay=1e-4, decay_for={"layer3.*": 5e-3})
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (5e-3 if name.startswith("layer3.") else 1e-4), name
    with pytest.raises(ResnetsError, match="matches no parameter"):
        make_optimizer(model, TrainConfig(model="plain20", decay_for={"layr3.*": 5e-3}), torch.device("cpu"))


def test_signal_diagnostics_work_on_any_module_that_names_its_branch_end() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.out_gate = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.out_gate(self.conv(x) * 0.5)

        def branch_end(self) -> nn.Module:
            return self.out_gate

    class Opaque(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    model = nn.Sequential(Branchy(), Opaque())
    stats = signal_propagation(model, torch.randn(16, 4, 6, 6), blocks=[("0", model[0]), ("1", model[1])])
    assert stats.branch_variance[0] > 0 and math.isnan(stats.branch_variance[1])
    assert abs(stats.variance[1] / stats.variance[0] - 4) < 1e-4
