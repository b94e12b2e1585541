"""The paper's CIFAR recipe: its settings, and BatchNorm over 64-image halves as on two GPUs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.cli import build_parser
from resnets.commands.train import config_from_args
from resnets.errors import ResnetsError
from resnets.training import TrainConfig
from resnets.training.ghost_bn import GhostBatchNorm2d, use_ghost_batchnorm
from resnets.training.schedules import default_warmup, lr_at
from resnets.training.setup import plan_run


def test_ghost_batchnorm_equals_two_separate_calls_on_the_halves() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(8)
    nn.init.uniform_(plain.weight)
    nn.init.uniform_(plain.bias)
    ghost = use_ghost_batchnorm(nn.Sequential(copy.deepcopy(plain)), 64)[0]
    assert isinstance(ghost, GhostBatchNorm2d)
    x = torch.randn(128, 8, 4, 4) * 2 + 0.5
    reference = torch.cat([plain(x[:64]), plain(x[64:])])  # two calls, as two GPUs' layers
    out = ghost(x)
    assert torch.allclose(out, reference, atol=1e-6)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ghost, name).float(), getattr(plain, name).float()), name
    whole = copy.deepcopy(plain)
    whole(x)  # one call over all 128 images normalises differently
    assert not torch.allclose(whole.running_var, ghost.running_var)
    ghost.eval(), plain.eval()
    assert torch.equal(ghost(x), plain(x))  # evaluation is the usual BN


def test_ghost_batchnorm_keeps_the_weights_layout() -> None:
    model = create_model("resnet20")
    keys = list(model.state_dict())
    use_ghost_batchnorm(model, 64)
    assert list(model.state_dict()) == keys
    assert sum(isinstance(m, GhostBatchNorm2d) for m in model.modules()) == 19


def test_paper_cifar_recipe_is_section_4_2() -> None:
    args = build_parser().parse_args(["train", "--recipe", "paper-cifar", "--model", "resnet110"])
    cfg, _, _ = config_from_args(args)
    assert (cfg.iterations, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (
        64000,
        128,
        0.1,
        0.9,
        1e-4,
    )
    assert cfg.bn_group == 64 and cfg.dataset == "cifar10" and cfg.model == "resnet110"
    plan = plan_run(cfg, steps_per_epoch=390)
    assert plan.total == 64000 and plan.warmup == 400 == default_warmup("paper", 110, 64000)
    rates = [lr_at(s, 64000, 0.1, "paper", 400) for s in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)]
    assert rates == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert plan_run(TrainConfig(**{**vars(cfg), "model": "resnet56"}), 390).warmup == 0


def test_a_group_that_does_not_divide_the_batch_is_refused(tmp_path) -> None:
    from resnets.training import train

    cfg = TrainConfig(model="resnet20", batch_size=96, bn_group=64, iterations=1, out=str(tmp_path / "r"))
    with pytest.raises(ResnetsError, match="--bn-group 64 must divide the 96 images"):
        train(cfg, progress=False)
    with pytest.raises(ResnetsError, match="opposite"):
        TrainConfig(bn_group=64, sync_bn=True).validate()


@pytest.mark.slow
def test_a_run_with_bn_groups_trains_in_groups_and_saves_the_usual_layout(tmp_path) -> None:
    from safetensors.torch import load_file

    from resnets.training import train

    common = {"model": "resnet20", "dataset": "digits", "batch_size": 32, "iterations": 3,
              "precision": "fp32", "channels_last": False}  # fmt: skip
    grouped = train(TrainConfig(**common, bn_group=16, out=str(tmp_path / "g")), progress=False)
    whole = train(TrainConfig(**common, out=str(tmp_path / "w")), progress=False)
    a, b = load_file(tmp_path / "g" / "model.safetensors"), load_file(tmp_path / "w" / "model.safetensors")
    assert a.keys() == b.keys()
    assert not torch.allclose(a["bn1.running_var"], b["bn1.running_var"])  # statistics of 16-image groups
    assert int(a["bn1.num_batches_tracked"]) == 2 * int(b["bn1.num_batches_tracked"]) == 6
    assert grouped.steps == whole.steps == 3
