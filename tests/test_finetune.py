"""Fine-tuning and optimisers: frozen parts, lr scales by position, AdamW and Muon with exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_clean_error, run_cli
from safetensors.torch import load_file, save_file
from torch import nn

from resnets import create_model
from resnets.errors import ResnetsError
from resnets.training import TrainConfig, train
from resnets.training.checkpoint import list_checkpoints, load_checkpoint
from resnets.training.finetune import freeze, stage_names
from resnets.training.optim import MuonWithSGD, hidden_weights, make_optimizer

CPU = torch.device("cpu")
# A short run on the built-in digits (1x16x16, 10 classes) with no fast-path trial: 8 steps an epoch.
QUICK = ["--dataset", "digits", "--train-subset", "256", "--epochs", "1", "--batch-size", "32",
         "--precision", "fp32", "--no-channels-last", "--no-compile", "--quiet"]  # fmt: skip


def _quick_config(out: Path, **settings: object) -> TrainConfig:
    base = {"model": "resnet20", "dataset": "digits", "train_subset": 256, "batch_size": 32, "iterations": 8,
            "checkpoint_every": 2, "eval_every": 8, "precision": "fp32", "channels_last": False,
            "compile": False, "out": str(out)}  # fmt: skip
    return TrainConfig(**(base | settings))  # type: ignore[arg-type]


def _save_start(path: Path, num_classes: int) -> dict[str, torch.Tensor]:
    """Seeded resnet20 weights for the digits' one channel, as --init-from reads them."""
    torch.manual_seed(1)
    weights = create_model("resnet20", num_classes=num_classes, in_channels=1).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return weights


def _group_of(optimizer: object, model: torch.nn.Module) -> dict[str, dict]:
    by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}  # type: ignore[attr-defined]
    return {name: by_id[id(p)] for name, p in model.named_parameters() if id(p) in by_id}


def test_freeze_layer2_freezes_the_stem_and_the_first_two_stages_only() -> None:
    model = create_model("resnet20", num_classes=10)
    assert stage_names(model) == ["stem", "layer1", "layer2", "layer3"]
    frozen = ["conv1", "maxpool", "bn1", "act", "layer1", "layer2"]
    assert freeze(model, TrainConfig(freeze="layer2")) == frozen
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("layer3.", "fc.")), name
    model.train()  # what the trainer and the evaluation's restore call: frozen parts stay in eval
    for name, module in model.named_modules():
        if name:
            assert module.training == (name.split(".")[0] not in frozen), name
    model.eval()
    model.train()
    assert not model.layer2[2].bn2.training and model.layer3[0].bn1.training
    trained = _group_of(make_optimizer(model, TrainConfig(freeze="layer2"), CPU), model)
    assert set(trained) == {n for n, _ in model.named_parameters() if n.startswith(("layer3.", "fc."))}


def test_freeze_backbone_leaves_only_the_classifier() -> None:
    model = create_model("preact_resnet110", num_classes=10)
    freeze(model, TrainConfig(model="preact_resnet110", freeze_backbone=True))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    model.train()
    assert not model.bn_final.training and model.fc.training


@pytest.mark.slow
def test_frozen_parts_keep_their_weights_and_bn_statistics_and_a_new_head_is_announced_once(
    tmp_path: Path,
) -> None:
    start = _save_start(tmp_path / "five.safetensors", num_classes=5)  # another class count: a new head
    proc = run_cli("train", "--model", "resnet20", *QUICK, "--init-from", str(tmp_path / "five.safetensors"),
                   "--freeze", "layer2", "--out", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    announced = [line for line in proc.stderr.splitlines() if "re-initialised for fine-tuning" in line]
    assert len(announced) == 1, proc.stderr
    after = load_file(tmp_path / "run" / "model.safetensors")
    frozen = ("conv1.", "bn1.", "layer1.", "layer2.")
    assert any(k.endswith("running_mean") for k in after if k.startswith(frozen))
    for key, value in after.items():
        if key.startswith(frozen):  # weights, BN statistics and batch counters: bit for bit
            assert torch.equal(value, start[key]), key
    assert not torch.equal(after["layer3.2.conv2.weight"], start["layer3.2.conv2.weight"])
    assert not torch.equal(after["layer3.0.bn1.running_mean"], start["layer3.0.bn1.running_mean"])
    assert after["fc.weight"].shape == (10, 64)


@pytest.mark.slow
def test_freeze_backbone_trains_the_head_alone(tmp_path: Path) -> None:
    start = _save_start(tmp_path / "ten.safetensors", num_classes=10)
    proc = run_cli("train", "--model", "resnet20", *QUICK, "--init-from", str(tmp_path / "ten.safetensors"),
                   "--freeze-backbone", "--head-lr-scale", "2", "--out", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "re-initialised" not in proc.stderr  # same class count: the file's head is kept
    after = load_file(tmp_path / "run" / "model.safetensors")
    for key, value in after.items():
        assert torch.equal(value, start[key]) == (not key.startswith("fc.")), key


def test_layer_decay_scales_each_parameter_by_its_distance_from_the_head() -> None:
    d = 0.7
    expected_power = {"conv1": 4, "bn1": 4, "layer1": 3, "layer2": 2, "layer3": 1, "fc": 0}
    model = create_model("resnet20", num_classes=10)
    cfg = TrainConfig(layer_decay=d, head_lr_scale=5.0, lr_scale_for={"*.bias": 0.1})
    groups = _group_of(make_optimizer(model, cfg, CPU), model)
    for name, group in groups.items():
        position = d ** expected_power[name.split(".")[0]] * (5.0 if name.startswith("fc.") else 1.0)
        pattern = 0.1 if name.endswith(".bias") else 1.0
        assert group["lr_scale"] == pattern * position, name
        assert group["weight_decay"] == cfg.weight_decay, name  # positions leave the decay as set
    assert groups["conv1.weight"]["lr_scale"] == d**4 and groups["fc.weight"]["lr_scale"] == 5.0
    # A pre-activation net's final BN comes after the last stage: it goes with it (timm's grouping).
    preact = create_model("preact_resnet110", num_classes=10)
    cfg = TrainConfig(model="preact_resnet110", layer_decay=d)
    scales = _group_of(make_optimizer(preact, cfg, CPU), preact)
    assert scales["bn_final.weight"]["lr_scale"] == d and scales["conv1.weight"]["lr_scale"] == d**4
    fast = create_model("fastresnet", width=0.25)
    with pytest.raises(ResnetsError, match="--layer-decay needs a net of stages"):
        make_optimizer(fast, TrainConfig(model="fastresnet", layer_decay=d), CPU)


def test_a_faster_bn_shift_keeps_its_decay_per_step_under_layer_decay() -> None:
    model = create_model("resnet20", num_classes=10)
    cfg = TrainConfig(layer_decay=0.5, norm_bias_lr_scale=4.0, weight_decay=1e-4)
    groups = _group_of(make_optimizer(model, cfg, CPU), model)
    assert groups["layer1.0.bn1.bias"]["lr_scale"] == 4.0 * 0.5**3
    assert groups["layer1.0.bn1.bias"]["weight_decay"] == 1e-4 / 4.0


@pytest.mark.slow
def test_head_lr_scale_reaches_the_fc_group_in_training(tmp_path: Path) -> None:
    cfg = _quick_config(tmp_path / "run", head_lr_scale=10.0, iterations=2)
    train(cfg, progress=False)
    saved = load_checkpoint(list_checkpoints(tmp_path / "run")[0])["optimizer"]["param_groups"]
    head = [g for g in saved if g["lr_scale"] == 10.0]
    rest = [g for g in saved if g["lr_scale"] == 1.0]
    assert len(head) == 1 and len(head[0]["params"]) == 2  # fc.weight and fc.bias
    assert head[0]["lr"] == pytest.approx(10 * rest[0]["lr"]) and rest[0]["lr"] > 0  # set by the trainer


def test_muon_takes_the_hidden_filters_and_sgd_the_rest() -> None:
    model = create_model("resnet20", num_classes=10)
    hidden = hidden_weights(model)
    assert "conv1.weight" not in hidden and "fc.weight" not in hidden  # the input layer and the classifier
    assert hidden == {n for n, p in model.named_parameters() if p.ndim == 4} - {"conv1.weight"}
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon", layer_decay=0.5), CPU)
    assert isinstance(optimizer, MuonWithSGD)
    muon, sgd = optimizer.parts["muon"], optimizer.parts["sgd"]
    assert isinstance(muon, torch.optim.Muon) and isinstance(sgd, torch.optim.SGD)
    assert {g["lr_scale"] for g in muon.param_groups} == {0.2 * 0.5**3, 0.2 * 0.5**2, 0.2 * 0.5}
    sgd_params = {id(p) for g in sgd.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert {id(named["conv1.weight"]), id(named["fc.weight"]), id(named["bn1.bias"])} <= sgd_params


def test_muon_steps_a_channels_last_filter_in_place_as_the_matrix_of_its_flattened_inputs() -> None:
    def one_step(channels_last: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = create_model("resnet20", num_classes=10)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, TrainConfig(optimizer="muon", weight_decay=1e-2), CPU)
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * group["lr_scale"]
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
        w = model.layer2[1].conv1.weight
        order = (0, 2, 3, 1) if channels_last else (0, 1, 2, 3)
        # torch's Muon on the matrix by hand: what the filter must become, bit for bit.
        matrix = torch.nn.Parameter(w.detach().permute(order).reshape(len(w), -1).clone())
        matrix.grad = w.grad.permute(order).reshape(len(w), -1).clone()
        torch.optim.Muon([matrix], lr=0.1 * 0.2, weight_decay=1e-2).step()
        start = w.detach().clone()
        optimizer.step()
        assert torch.equal(w.detach().permute(order).reshape(len(w), -1), matrix.detach())
        return w.detach() - start

    plain, last = one_step(False), one_step(True)
    # The same update up to rounding: the convolutions' sums and Muon's bf16 ones run in another order.
    assert plain.abs().max() > 0 and ((plain - last).norm() / plain.norm()).item() < 0.05


@pytest.mark.parametrize("channels_last", [False, True])
def test_muon_filter_norm_holds_each_filter_at_root_out_channels_not_decay(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig(optimizer="muon", weight_decay=5e-4, muon_filter_norm=True)
    optimizer = make_optimizer(model, cfg, CPU)
    assert {g["weight_decay"] for g in optimizer.parts["muon"].param_groups} == {0.0}
    assert {g["weight_decay"] for g in optimizer.parts["sgd"].param_groups} == {5e-4}  # the rest keep theirs
    named = dict(model.named_parameters())
    hidden = sorted(hidden_weights(model))
    with torch.no_grad():  # He init leaves a filter's norm near sqrt(2 x in channels): move them off it
        for n in hidden:
            named[n].mul_(3.0)
    for p in model.parameters():  # a zero gradient: Muon's update is zero, only the rescaling acts
        p.grad = torch.zeros_like(p)
    for group in optimizer.param_groups:
        group["lr"] = 0.1 * group["lr_scale"]
    optimizer.step()
    for n in hidden:
        assert named[n].detach().norm().item() == pytest.approx(named[n].shape[0] ** 0.5, rel=1e-5), n
    assert named["conv1.weight"].detach().norm().item() != pytest.approx(4.0, rel=1e-3)  # SGD's: untouched


def test_muon_filter_norm_rescales_before_the_update_and_leaves_a_zero_filter_zero() -> None:
    def one_step(filter_norm: bool) -> nn.Module:
        torch.manual_seed(0)
        model = create_model("resnet20", num_classes=10)
        with torch.no_grad():
            model.layer2[0].conv2.weight.zero_()  # as zero-init of a last branch conv leaves it
        cfg = TrainConfig(optimizer="muon", weight_decay=0.0, muon_filter_norm=filter_norm)
        optimizer = make_optimizer(model, cfg, CPU)
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * group["lr_scale"]
        F.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
        if not filter_norm:  # the twin: the same rescaling by hand, then an ordinary Muon step
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in hidden_weights(model) and p.norm() > 0:
                        p.mul_(p.shape[0] ** 0.5 / p.norm())
        optimizer.step()
        return model

    switched, by_hand = one_step(True), one_step(False)
    for (name, a), b in zip(switched.named_parameters(), by_hand.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    assert torch.isfinite(switched.layer2[0].conv2.weight).all()


def test_muon_makes_the_newton_schulz_iterations_it_is_given() -> None:
    def one_step(steps: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = create_model("resnet20", num_classes=10)
        optimizer = make_optimizer(model, TrainConfig(optimizer="muon", muon_ns_steps=steps), CPU)
        assert {g["ns_steps"] for g in optimizer.parts["muon"].param_groups} == {steps}
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * group["lr_scale"]
        F.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
        optimizer.step()
        return model.layer2[1].conv1.weight.detach().clone()

    assert not torch.allclose(one_step(3), one_step(5))
    with pytest.raises(ResnetsError, match="muon-ns-steps must be a positive integer"):
        TrainConfig(muon_ns_steps=0).validate()


def test_fp32_muon_is_torchs_muon_orthogonalising_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.optim import _muon

    from resnets.training.muon import Fp32Muon, orthogonalise

    # torch's own step with its bf16 iteration swapped for ours is the reference: momentum, Nesterov,
    # decay and the lr adjustment of a tall matrix must be torch's, step after step.
    monkeypatch.setattr(_muon, "_zeropower_via_newtonschulz", orthogonalise)
    torch.manual_seed(0)
    weights = [torch.randn(16, 72), torch.randn(72, 16), torch.randn(8, 8)]
    ours, theirs = ([nn.Parameter(w.clone()) for w in weights] for _ in range(2))
    settings = {"lr": 0.05, "weight_decay": 0.01, "momentum": 0.6, "ns_steps": 4}
    optimizers = [Fp32Muon(ours, **settings), torch.optim.Muon(theirs, **settings)]
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in zip((ours, theirs), optimizers, strict=True):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, torch.zeros_like(a))
    # Its singular values near 1 (the quintic's 0.68-1.13), whatever the matrix's scale or shape.
    for shape in ((32, 288), (288, 32)):
        s = torch.linalg.svdvals(orthogonalise(1e3 * torch.randn(*shape), (3.4445, -4.7750, 2.0315), 5, 1e-7))
        assert s.min() > 0.6 and s.max() < 1.2


def test_a_run_in_fp32_orthogonalises_in_fp32_and_one_in_bf16_as_torch_does() -> None:
    from resnets.training.muon import Fp32Muon

    model = create_model("resnet20", num_classes=10)
    cfg = TrainConfig(optimizer="muon")
    assert type(make_optimizer(model, cfg, CPU, "fp32").parts["muon"]) is Fp32Muon
    assert type(make_optimizer(model, cfg, CPU, "bf16").parts["muon"]) is torch.optim.Muon


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "lr", "extra"),
    [("adamw", 1e-3, {}), ("muon", 0.05, {}), ("muon", 0.05, {"muon_filter_norm": True, "muon_ns_steps": 3})],
)
def test_adamw_and_muon_train_and_resume_exactly(
    tmp_path: Path, optimizer: str, lr: float, extra: dict
) -> None:
    settings = {"optimizer": optimizer, "lr": lr, "weight_decay": 5e-4, **extra}
    straight = train(_quick_config(tmp_path / "straight", **settings), progress=False)
    assert math.isfinite(straight.metrics["train_loss"]) and math.isfinite(straight.metrics["test_loss"])
    stopped = train(_quick_config(tmp_path / "stopped", **settings), progress=False, until=3)
    assert not stopped.finished and stopped.steps == 3
    resumed = train(_quick_config(tmp_path / "stopped", **settings), resume=True, progress=False)
    assert resumed.finished and resumed.steps == 8
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "stopped" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    saved = load_checkpoint(list_checkpoints(tmp_path / "stopped")[0])["optimizer"]
    assert set(saved) == ({"muon", "sgd"} if optimizer == "muon" else {"state", "param_groups"})


def test_an_old_config_without_the_new_settings_still_loads() -> None:
    cfg = TrainConfig.from_dict({"model": "resnet20", "lr": 0.1})
    assert (cfg.optimizer, cfg.freeze, cfg.freeze_backbone, cfg.layer_decay, cfg.head_lr_scale) == (
        "sgd", None, False, None, 1.0,
    )  # fmt: skip
    assert (cfg.muon_ns_steps, cfg.muon_filter_norm) == (5, False)  # torch's Muon as earlier runs used it


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layer_decay": 0.0}, r"layer-decay must be a number in \(0, 1\]"),
        ({"layer_decay": 1.5}, r"layer-decay must be a number in \(0, 1\]"),
        ({"head_lr_scale": 0}, "head-lr-scale must be a number > 0"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; choose one of sgd, adamw, muon"),
        ({"freeze": "block3"}, "freeze takes stem or layerN"),
        ({"freeze": "layer2", "freeze_backbone": True}, "give one"),
        ({"betas": [0.9]}, "betas must be two numbers"),
    ],
)
def test_bad_fine_tuning_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ResnetsError, match=message):
        TrainConfig(**settings).validate()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--layer-decay", "0"], ["layer-decay must be a number in (0, 1], got 0.0"]),
        (["--layer-decay", "1.5"], ["layer-decay must be a number in (0, 1], got 1.5"]),
        (["--freeze", "layer9"], ["--freeze layer9", "choose one of stem, layer1, layer2, layer3"]),
        (["--opt", "rmsprop"], ["unknown optimizer 'rmsprop'"]),
        (["--model", "fastresnet", "--freeze", "layer1"], ["fastresnet has none", "--freeze-backbone"]),
    ],
)
def test_bad_fine_tuning_flags_are_one_line_errors(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    proc = run_cli("train", *QUICK, *args, "--out", str(tmp_path / "run"))
    assert_clean_error(proc, *needles)
    assert proc.returncode == 2
    assert not (tmp_path / "run" / "config.json").exists()


def test_gradient_recording_skips_the_frozen_layers(tmp_path: Path) -> None:
    cfg = TrainConfig(model="resnet20", dataset="digits", iterations=3, grad_every=1, batch_size=32,
                      freeze="layer1", precision="fp32", channels_last=False,
                      out=str(tmp_path / "run"))  # fmt: skip
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "gradients.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    layers = rows[0]["layers"]
    assert layers[0].startswith("layer2.") and layers[-1] == "fc"  # stem and layer1 are frozen
    assert all(math.isfinite(v) and v > 0 for v in rows[0]["norms"])
