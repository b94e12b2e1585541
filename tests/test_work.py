"""Training work: FLOPs per image counted on the meta device, and PFLOP done written with each result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from resnets import create_model
from resnets.errors import ResnetsError
from resnets.models import count_flops
from resnets.training import TrainConfig, train
from resnets.training.optim import make_optimizer
from resnets.training.recipes import FAST, FAST94, RECIPES, apply_recipe
from resnets.training.schedules import resolution_at
from resnets.training.work import train_flops_done, train_flops_per_image, train_pflop


def test_a_training_step_counts_three_forward_passes_but_the_first_convs_input_gradient() -> None:
    model = create_model("resnet20", num_classes=10)
    per_image = train_flops_per_image(model, (3, 32, 32))
    forward = count_flops(create_model("resnet20", num_classes=10), (3, 32, 32))
    # Backward = input gradients + weight gradients, each a forward pass's work, except the gradient
    # of the images, which nothing needs: 2 x 16 x 3 x 9 x 32 x 32 FLOPs of the first conv.
    first_conv = 2 * 16 * 3 * 9 * 32 * 32
    assert per_image == 3 * forward - first_conv
    assert per_image == pytest.approx(3 * forward, rel=0.01)  # within 1 % of the usual 3x rule


def test_counting_leaves_the_model_and_the_random_stream_as_they_were() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    train_flops_per_image(model, (3, 32, 32))
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.grad is None and p.device.type == "cpu" for p in model.parameters())


def test_frozen_weights_take_no_gradient_work() -> None:
    # fastresnet's whitening stem (3 -> 24 channels, 2x2, 31x31 out) is frozen and sees the images:
    # neither its filters' gradient nor its input's is computed (its bias's is a sum, not counted).
    model = create_model("fastresnet", width=0.5)
    per_image = train_flops_per_image(model, (3, 32, 32))
    forward = count_flops(create_model("fastresnet", width=0.5), (3, 32, 32))
    whitening = 2 * 24 * 3 * 4 * 31 * 31
    assert per_image == 3 * forward - 2 * whitening


def test_work_done_is_linear_in_the_steps_and_follows_progressive_resizing() -> None:
    resolved = {"train_flops_per_image": 1000}
    assert [train_flops_done(s, 4, 10, resolved) for s in (0, 1, 7)] == [0, 4000, 28000]
    assert train_pflop(5, 2, 10, resolved) == 5 * 2 * 1000 / 1e15
    assert train_pflop(5, 2, 10, {}) is None  # a run from before the count
    resized = resolved | {"train_sizes": [2, 2, 4], "train_flops_per_image_at": {"2": 10, "4": 40}}
    # Epochs of 3 steps at batch 1: 3 x 10 + 3 x 10 + 2 x 40, and the last size holds after the list.
    assert train_flops_done(8, 1, 3, resized) == 140
    assert train_flops_done(12, 1, 3, resized) == 60 + 3 * 40 + 3 * 40


def test_the_muon_recipes_are_the_sgd_ones_with_muon() -> None:
    # fast-muon also grows its images (issue 26: 8 epochs, the first three at 24 px, within 0.065 PFLOP).
    for name, sgd, extra in (("fast-muon", FAST, {"resize_from"}), ("fast94-muon", FAST94, set())):
        muon = RECIPES[name]
        assert {k for k in muon if muon[k] != sgd.get(k)} == {
            "optimizer", "muon_lr_scale", "muon_momentum", *extra,
        } | ({"epochs"} if muon["epochs"] != sgd["epochs"] else set())  # fmt: skip
        assert muon["optimizer"] == "muon" and muon["epochs"] <= sgd["epochs"]
        cfg = TrainConfig(**apply_recipe(name, {})).validate()
        assert (cfg.optimizer, cfg.muon_momentum, cfg.lr * cfg.muon_lr_scale) == (
            "muon", 0.6, pytest.approx(0.24),
        )  # fmt: skip


@pytest.mark.parametrize(("name", "budget"), [("fast-muon", 0.065), ("fast94-muon", 0.25)])
def test_the_muon_recipes_plan_no_more_work_than_issue_26_allows(name: str, budget: float) -> None:
    recipe = RECIPES[name]
    model = create_model(recipe["model"], num_classes=10, **recipe["model_options"])
    per_epoch = 50_000 // recipe["batch_size"]  # CIFAR-10's training set, whole batches
    sizes = [
        resolution_at(e, recipe["epochs"], recipe.get("resize_from") or 32, 32)
        for e in range(recipe["epochs"])
    ]
    resolved = {
        "train_flops_per_image": train_flops_per_image(model, (3, 32, 32)),
        "train_sizes": sizes,
        "train_flops_per_image_at": {str(s): train_flops_per_image(model, (3, s, s)) for s in set(sizes)},
    }
    assert train_pflop(recipe["epochs"] * per_epoch, recipe["batch_size"], per_epoch, resolved) <= budget


def _config(out: Path, **settings: object) -> TrainConfig:
    base = {"model": "resnet20", "dataset": "digits", "train_subset": 256, "batch_size": 32, "iterations": 8,
            "eval_every": 2, "checkpoint_every": 2, "precision": "fp32", "channels_last": False,
            "compile": False, "out": str(out)}  # fmt: skip
    return TrainConfig(**(base | settings))  # type: ignore[arg-type]


@pytest.mark.slow
def test_metrics_carry_the_work_done_and_a_resumed_run_the_same(tmp_path: Path) -> None:
    train(_config(tmp_path / "straight"), progress=False)
    resolved = json.loads((tmp_path / "straight" / "config.json").read_text())["resolved"]
    shape = resolved["image_shape"]
    per_image = train_flops_per_image(create_model("resnet20", num_classes=10, in_channels=shape[0]), shape)
    assert resolved["train_flops_per_image"] == per_image > 0
    rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert [r["train_pflop"] for r in rows] == [s * 32 * per_image / 1e15 for s in (2, 4, 6, 8)]
    train(_config(tmp_path / "stopped"), progress=False, until=3)
    train(_config(tmp_path / "stopped"), resume=True, progress=False)
    again = [json.loads(x) for x in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_pflop"] for r in again if r["step"] != 3] == [r["train_pflop"] for r in rows]


def test_muons_momentum_is_the_runs_setting() -> None:
    # Resuming a Muon run exactly: test_finetune.py::test_adamw_and_muon_train_and_resume_exactly.
    model = create_model("resnet20", num_classes=10)
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon", muon_momentum=0.6), torch.device("cpu"))
    assert {g["momentum"] for g in optimizer.parts["muon"].param_groups} == {0.6}
    assert {g["nesterov"] for g in optimizer.parts["muon"].param_groups} == {True}
    with pytest.raises(ResnetsError, match="muon-momentum"):
        TrainConfig(muon_momentum=1.0).validate()


@pytest.mark.slow
def test_the_train_command_prints_the_work_of_training(tmp_path: Path) -> None:
    proc = run_cli("train", "--model", "resnet20", "--dataset", "digits", "--iterations", "2", "--batch-size",
                   "32", "--quiet", "--out", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "PFLOP of training; run saved in" in proc.stdout.splitlines()[-1]


def test_a_recipes_resizing_plan_skips_images_smaller_than_it_but_a_given_one_is_checked(
    tmp_path: Path,
) -> None:
    # fast-muon grows 24 -> 32 px; the 16 px digits train whole, and --resize-from 24 typed out is an error.
    common = ["--dataset", "digits", "--iterations", "2", "--batch-size", "64", "--quiet"]
    ran = run_cli("train", "--recipe", "fast-muon", *common, "--out", str(tmp_path / "recipe"))
    assert ran.returncode == 0, ran.stderr
    resolved = json.loads((tmp_path / "recipe" / "config.json").read_text())["resolved"]
    assert "train_sizes" not in resolved and "train_flops_per_image_at" not in resolved
    typed = run_cli(
        "train", "--recipe", "fast", "--resize-from", "24", *common, "--out", str(tmp_path / "typed")
    )
    assert typed.returncode != 0 and "larger than the final crop 16" in typed.stderr
