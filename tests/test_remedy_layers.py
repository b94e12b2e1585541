"""The remedies' building blocks: activations, inits, units without BN, gated and long skips."""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets import create_model
from resnets.diagnostics import signal_propagation
from resnets.errors import ResnetsError
from resnets.models.init import delta_orthogonal_, dirac_, lsuv_
from resnets.models.layers import DiracConv2d, PerLocationNorm, ScaledLeakyReLU, leaky_relu_cmap, tat_slope
from resnets.models.units import (
    HIGHWAY_GATE_BIAS,
    Bias,
    FixupBlock,
    HighwayBlock,
    LongSkipStage,
    ReZeroBlock,
    highway_gate_bias,
)
from resnets.training import TrainConfig
from resnets.training.resume import resume_config
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


def test_fixup_and_skipinit_start_as_their_shortcuts_without_bn() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 16, 8, 8)
    for unit in ("fixup", "skipinit"):
        model = create_model("resnet20", num_classes=10, unit=unit)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), unit
        block = model.layer1[1]
        assert torch.allclose(block(x), block.lesioned(x)), unit  # the branch adds nothing at init
    fixup = create_model("resnet56", num_classes=10, unit="fixup")
    assert fixup.fc.weight.abs().max() == 0 and fixup.fc.bias.abs().max() == 0
    blocks = [b for b in fixup.modules() if isinstance(b, FixupBlock)]
    assert len(blocks) == 27 and all(b.conv2.weight.abs().max() == 0 for b in blocks)
    for block in (blocks[5], blocks[9]):  # within a stage, and where the channels double (16 -> 32)
        w = block.conv1.weight
        fan_out = w.shape[0] * w[0, 0].numel()
        expected = (
            math.sqrt(2 / fan_out) * 27**-0.5
        )  # the authors' He fan-out, scaled by L^(-1/(2m-2)), m = 2
        assert abs(w.std().item() / expected - 1) < 0.1


def test_fixup_net_has_its_scalar_biases_and_starts_at_zero_logits() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, unit="fixup")
    assert isinstance(model.bias1, Bias) and isinstance(model.bias2, Bias)
    assert model.conv1.bias is None  # bias1 takes the stem conv's bias
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), torch.zeros(4, 10))  # the classifier starts at zero
    with torch.no_grad():
        model.bias1.bias.fill_(0.3)
        model.bias2.bias.fill_(-0.7)
        model.fc.weight.normal_()
    assert torch.allclose(model.stem(x), torch.relu(model.conv1(x) + 0.3))
    features = model.avgpool(model.forward_features(x)).flatten(1)
    assert torch.allclose(model(x), model.fc(features - 0.7), atol=1e-6)
    # Only the Fixup net has them: no other net's weights change names.
    assert not any(
        "bias1" in k or "bias2" in k for k in create_model("resnet20", num_classes=10).state_dict()
    )
    h = torch.randn(4, 16, 8, 8)
    for block in (model.layer1[1], model.layer2[0]):
        assert torch.equal(block(h), block.lesioned(h))  # at init each block is its shortcut
    # As in the authors' code: a same-shape block adds x itself; a downsampling one, x + bias1a.
    for block, size in ((model.layer1[1], 16), (model.layer2[0], 16)):
        with torch.no_grad():
            block.bias1a.bias.fill_(5.0)
        h = torch.randn(2, size, 8, 8)
        shifted = h + 5.0 if block.downsample is not None else h
        expected = block.downsample(shifted) if block.downsample is not None else shifted
        assert torch.allclose(block(h), torch.relu(expected))


def test_rezero_keeps_batchnorm_and_starts_as_its_shortcut() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, unit="rezero")
    blocks = [b for b in model.modules() if isinstance(b, ReZeroBlock)]
    assert len(blocks) == 9 and all(isinstance(b.bn1, nn.BatchNorm2d) for b in blocks)
    assert all(b.skip_gain.alpha.item() == 0 and b.skip_gain.alpha.numel() == 1 for b in blocks)
    x = torch.randn(8, 16, 8, 8)
    for block in (model.layer1[1], model.layer2[0]):
        assert torch.equal(block(x), block.shortcut(x))  # alpha = 0: the shortcut exactly
    negative = -torch.rand(8, 16, 8, 8) - 0.1
    assert torch.equal(model.layer1[1](negative), negative)  # no activation after the sum
    block = model.layer1[1]
    with torch.no_grad():
        block.skip_gain.alpha.fill_(1.0)
    assert (block(x) - x).min() >= 0  # the BN branch ends in its ReLU
    free = create_model("resnet20", num_classes=10, unit="rezero", norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in free.modules())
    block = free.layer1[1]
    assert block.conv1.bias is not None and torch.equal(block(negative), negative)
    with torch.no_grad():
        block.skip_gain.alpha.fill_(1.0)
    assert (block(x) - x).min() < 0  # the norm-free branch ends in conv2, signed
    keys = [k for k in free.state_dict() if k.startswith("layer1.0.")]
    assert keys == [f"layer1.0.{k}" for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                 "skip_gain.alpha")]  # fmt: skip


def test_dirac_conv_is_alpha_identity_plus_beta_normalised_weight() -> None:
    torch.manual_seed(0)
    for c_in, c_out in ((8, 12), (12, 8), (8, 8)):
        conv = DiracConv2d(c_in, c_out)
        assert torch.all(conv.alpha == 1) and torch.allclose(conv.beta, torch.full((c_out,), 0.1))
        x = torch.randn(2, c_in, 6, 6)
        with torch.no_grad():
            conv.beta.zero_()
        n = min(c_in, c_out)
        out = conv(x)
        assert torch.equal(out[:, :n], x[:, :n]) and torch.all(out[:, n:] == 0)
    conv = DiracConv2d(8, 12, stride=2)
    with torch.no_grad():
        conv.alpha.normal_()
        conv.beta.normal_()
    by_hand = conv.beta.view(-1, 1, 1, 1) * conv.weight / conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for o in range(8):
        by_hand[o, o, 1, 1] = by_hand[o, o, 1, 1] + conv.alpha[o]
    x = torch.randn(2, 8, 9, 9)
    expected = F.conv2d(x, by_hand, stride=2, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)
    conv(x).square().sum().backward()
    for p in (conv.alpha, conv.beta, conv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert [k for k in conv.state_dict()] == ["weight", "alpha", "beta"]  # the identity kernel is not saved


def test_dirac_unit_builds_a_plain_net_of_dirac_convs() -> None:
    torch.manual_seed(0)
    model = create_model("plain20", num_classes=10, unit="dirac")
    assert type(model.conv1) is nn.Conv2d  # the stem stays an ordinary convolution
    convs = [m for m in model.modules() if isinstance(m, DiracConv2d)]
    assert len(convs) == 18 and all(not b.residual for b in model.blocks())
    names = [n for n, _ in model.named_parameters()]
    assert "layer1.0.conv1.alpha" in names
    assert len(fnmatch.filter(names, "*.alpha")) == len(fnmatch.filter(names, "*.beta")) == 18
    for conv in convs:  # the net's initialisation leaves alpha, beta and a He-normal W
        assert torch.all(conv.alpha == 1) and torch.allclose(conv.beta, torch.full_like(conv.beta, 0.1))
        fan_in = conv.weight[0].numel()
        assert abs(conv.weight.std().item() / math.sqrt(2 / fan_in) - 1) < 0.15
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_per_location_norm_adds_a_ones_channel_and_unit_mean_square() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8) * 5 + 2
    out = PerLocationNorm()(x)
    assert out.shape == (4, 4, 8, 8)
    assert torch.allclose(out.square().mean(dim=1), torch.ones(4, 8, 8), atol=1e-5)
    assert torch.allclose(out[:, :3] / out[:, 3:], x, atol=1e-4)  # the ones channel keeps the pixel's scale
    model = create_model("plain20", num_classes=10, input_norm="per-location")
    assert model.conv1.in_channels == 4 and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    plain = create_model("plain20", num_classes=10)
    assert "input_norm" not in dict(plain.named_modules())
    assert list(create_model("plain20", num_classes=10, input_norm="none").state_dict()) == list(
        plain.state_dict()
    )
    assert list(model.state_dict()) == list(plain.state_dict())  # it has no weights of its own
    preact = create_model("preact_resnet110", num_classes=10, input_norm="per-location")
    assert preact.conv1.in_channels == 4


def test_highway_gate_bias_follows_depth_or_the_option() -> None:
    assert [highway_gate_bias(d) for d in (8, 10, 20, 32, 56, 110)] == [-1, -1, -2, -3, -3, -3]
    for name, options, bias in (
        ("plain20", {}, -2.0),
        ("plain56", {}, -3.0),
        ("plain56", {"gate_bias": -1.5}, -1.5),
    ):
        model = create_model(name, num_classes=10, unit="highway", **options)
        gates = [b.gate.bias for b in model.modules() if isinstance(b, HighwayBlock)]
        assert gates and all(torch.all(g == bias) for g in gates), (name, options)
    assert HIGHWAY_GATE_BIAS == -2.0  # the authors' CIFAR code, and plain20's


def test_long_skips() -> None:
    torch.manual_seed(0)
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
        ("resnet20", {"unit": "skipinit", "norm": "batchnorm"}, "without normalisation"),
        ("resnet20", {"unit": "rezero", "norm": "groupnorm"}, "norm must be one of"),
        ("plain20", {"unit": "rezero"}, "use residual net resnet20"),
        ("resnet20", {"unit": "dirac"}, "use plain net plain20"),
        ("plain20", {"unit": "dirac", "init": "dirac"}, "initialises its own kernels"),
        ("plain20", {"input_norm": "x"}, "input_norm must be one of"),
        ("fastresnet", {"input_norm": "per-location"}, "does not apply"),
        ("plain20", {"unit": "highway", "gate_bias": "a"}, "gate_bias must be a number"),
        ("plain20", {"unit": "highway", "gate_bias": True}, "gate_bias must be a number"),
        ("plain20", {"unit": "highway", "gate_bias": float("nan")}, "gate_bias must be a number"),
        ("plain20", {"gate_bias": -1.0}, "needs unit='highway'"),
        ("plain20", {"act": "swish"}, "act must be one of"),
        ("plain20", {"init": "kaiming"}, "init must be one of"),
        ("plain20", {"drop_rate": 1.5}, "drop_rate must be"),
        ("resnet50", {"unit": "fixup"}, "does not apply"),
    ],
)
def test_nonsense_options_are_one_line_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(ResnetsError, match=message) as error:
        create_model(name, num_classes=10, **options)
    assert "\n" not in str(error.value)


def test_decay_for_sets_weight_decay_by_layer() -> None:
    model = create_model("plain20", num_classes=10)
    cfg = TrainConfig(model="plain20", weight_decay=1e-4, decay_for={"layer3.*": 5e-3})
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (5e-3 if name.startswith("layer3.") else 1e-4), name
    with pytest.raises(ResnetsError, match="matches no parameter"):
        make_optimizer(model, TrainConfig(model="plain20", decay_for={"layr3.*": 5e-3}), torch.device("cpu"))


def test_lr_scale_for_scales_the_learning_rate_of_matching_parameters() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, unit="fixup")
    cfg = TrainConfig(model="resnet20", weight_decay=5e-4, lr_scale_for={"*.bias": 0.1, "*.scale.alpha": 0.1})
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        matched = name.endswith(".bias") or name.endswith(".scale.alpha")
        assert group_of[id(p)]["lr_scale"] == (0.1 if matched else 1.0), name
        assert group_of[id(p)]["weight_decay"] == 5e-4, name  # the decay is not rescaled
    assert "bias1.bias" in {n for n, p in model.named_parameters() if group_of[id(p)]["lr_scale"] == 0.1}
    with pytest.raises(ResnetsError, match=r"learning-rate scale pattern '\*\.gamma' matches no parameter"):
        make_optimizer(
            model, TrainConfig(model="resnet20", lr_scale_for={"*.gamma": 0.1}), torch.device("cpu")
        )
    # A pattern overrides norm_bias_lr_scale, whose groups keep lr * decay fixed.
    bn_net = create_model("plain20", num_classes=10)
    cfg = TrainConfig(model="plain20", weight_decay=1e-4, norm_bias_lr_scale=64.0,
                      lr_scale_for={"layer1.0.bn1.bias": 0.5})  # fmt: skip
    group_of = {
        id(p): g for g in make_optimizer(bn_net, cfg, torch.device("cpu")).param_groups for p in g["params"]
    }
    named = dict(bn_net.named_parameters())
    assert (
        group_of[id(named["layer1.0.bn1.bias"])]["lr_scale"],
        group_of[id(named["layer1.0.bn1.bias"])]["weight_decay"],
    ) == (0.5, 1e-4)
    assert group_of[id(named["layer1.0.bn2.bias"])]["lr_scale"] == 64.0
    assert group_of[id(named["layer1.0.bn2.bias"])]["weight_decay"] == pytest.approx(1e-4 / 64)


def test_lr_scale_for_moves_a_matched_parameter_ten_times_less() -> None:
    def run(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = create_model("plain20", num_classes=10)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = TrainConfig(model="plain20", lr=0.05, weight_decay=5e-4, lr_scale_for={"fc.bias": scale})
        opt = make_optimizer(model, cfg, torch.device("cpu"))
        x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
        for _ in range(3):
            for group in opt.param_groups:  # as the trainer sets each step's learning rate
                group["lr"] = cfg.lr * group["lr_scale"]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        params = dict(model.named_parameters())
        return params["fc.bias"] - start["fc.bias"], params["fc.weight"] - start["fc.weight"]

    slow, fast = run(0.1), run(1.0)
    ratio = slow[0].norm() / fast[0].norm()
    assert abs(ratio.item() - 0.1) < 0.01
    assert torch.allclose(slow[1], fast[1], rtol=0.05, atol=1e-4)  # the unmatched weights move as before


def test_lr_scale_for_round_trips_through_config_json_and_resume(tmp_path: Path) -> None:
    cfg = TrainConfig(model="resnet20", out=str(tmp_path), lr_scale_for={"*.bias": 0.1, "*.scale.alpha": 0.1})
    (tmp_path / "config.json").write_text(cfg.validate().to_json())
    saved = resume_config({"out": str(tmp_path), "lr_scale_for": {"*.bias": 0.1, "*.scale.alpha": 0.1}})
    assert saved is not None and saved.lr_scale_for == cfg.lr_scale_for
    with pytest.raises(ResnetsError, match="differs from the run's"):
        resume_config({"out": str(tmp_path), "lr_scale_for": {"*.bias": 0.2}})
    for bad in ({"*": 0.0}, {"*": -1.0}, {"*": "x"}, ["*.bias"]):
        with pytest.raises(ResnetsError, match=r"lr_scale_for must map|learning-rate scale for"):
            TrainConfig(lr_scale_for=bad).validate()  # type: ignore[arg-type]


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
