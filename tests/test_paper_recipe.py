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


# The depth study with --recipe paper-cifar (issue 25): the recipe reaches every run, flags override it.


def _study(*flags: str):
    from resnets.commands.study import study_config

    argv = ["degradation", "--recipe", "paper-cifar", "--dataset", "cifar10", *flags]
    args = build_parser().parse_args(argv)
    args.argv = argv
    return study_config(args)


def test_a_study_with_the_paper_recipe_trains_every_run_with_it() -> None:
    study = _study("--depths", "20", "32", "44", "56", "110", "--seeds", "2")
    assert study.recipe == "paper-cifar" and study.seeds == 2
    deep, shallow = study.run_config("resnet110", seed=1), study.run_config("plain56")
    for cfg in (deep, shallow):
        assert (cfg.iterations, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (
            64000, None, 128, 0.1, 0.9, 1e-4,
        )  # fmt: skip
        assert (cfg.schedule, cfg.bn_group, cfg.dataset) == ("paper", 64, "cifar10")
        assert cfg.recipe == "paper-cifar"
    assert (deep.model, deep.seed, shallow.model, shallow.seed) == ("resnet110", 1, "plain56", 0)
    assert plan_run(deep, steps_per_epoch=390).warmup == 400  # the paper's warm-up, depth >= 110 only
    assert plan_run(shallow, steps_per_epoch=390).warmup == 0


def test_flags_given_to_the_study_override_the_recipe() -> None:
    # 0.05 is also the study's own default lr: given on the command line, it still wins over the recipe's.
    study = _study("--lr", "0.05", "--epochs", "3", "--batch-size", "64", "--depths", "20")
    cfg = study.run_config("resnet20")
    assert (cfg.lr, cfg.epochs, cfg.iterations, cfg.batch_size) == (0.05, 3, None, 64)
    assert (cfg.bn_group, cfg.momentum, cfg.weight_decay, cfg.schedule) == (64, 0.9, 1e-4, "paper")
    assert _study("--iterations", "4").run_config("resnet20").iterations == 4
    with pytest.raises(ResnetsError, match="--epochs or --iterations, not both"):
        _study("--iterations", "4", "--epochs", "2")
    plain = build_parser().parse_args(["degradation", "--lr", "0.2"])
    plain.argv = ["degradation", "--lr", "0.2"]
    from resnets.commands.study import study_config

    without = study_config(plain).run_config("resnet20")  # no recipe: the study's own, as before
    assert (without.recipe, without.lr, without.schedule, without.bn_group) == (None, 0.2, "onecycle", None)


def test_a_resumed_study_refuses_another_recipe(tmp_path) -> None:
    import dataclasses
    import json

    from resnets.experiments.runner import check_study

    study = _study("--out", str(tmp_path))
    (tmp_path / "study.json").write_text(json.dumps(dataclasses.asdict(study)))
    check_study(tmp_path / "study.json", study)  # the same recipe: resumes
    with pytest.raises(ResnetsError, match=r"no --recipe differs from the study in .* \('paper-cifar'\)"):
        check_study(tmp_path / "study.json", dataclasses.replace(study, recipe=None))
    with pytest.raises(ResnetsError, match="--recipe fast differs"):
        check_study(tmp_path / "study.json", dataclasses.replace(study, recipe="fast"))


def test_table6_sets_the_papers_error_of_each_depth_beside_ours() -> None:
    from resnets.report.paper_cifar import table6

    header, rows = table6([(110, 1_730_714, [0.0650, 0.0640]), (56, 855_770, [0.0710, 0.0730]),
                           (20, 272_474, [])])  # fmt: skip
    assert header[2:] == ["paper: test error", "ours: test error", "ours − paper"]
    assert rows[0] == ["20", "0.27M / 0.27M", "8.75%", "— (n=0)", "—"]
    assert rows[1] == ["56", "0.86M / 0.85M", "6.97%", "7.20 ± 0.14% (n=2)", "+0.23"]
    # ResNet-110: the paper's best of 5 shown, our mean compared with their mean of 5 (6.61).
    assert rows[2] == ["110", "1.73M / 1.7M", "6.43% (mean of 5: 6.61 ± 0.16%)", "6.45 ± 0.07% (n=2)",
                       "-0.16"]  # fmt: skip


def _result(model: str, depth: int, residual: bool, seed: int, error: float):
    from resnets.experiments import ModelResult

    curves = [{"step": s, "epoch": s // 390, "train_error": error + 0.5 / s, "test_error": error + 1 / s}
              for s in (390, 32000, 64000)]  # fmt: skip
    return ModelResult(
        model=model, depth=depth, residual=residual, seed=seed, params=272_474, train_error=error / 2,
        test_error=error, train_loss=0.1, test_loss=0.3, seconds=100.0, curves=curves, layers=["a", "b"],
        grad_init=[1.0, 0.5], grad_final=[1.0, 1.0], response_layers=["a"], responses=[0.5],
        signal_variance=[1.0], signal_branch_variance=[1.0],
    )  # fmt: skip


@pytest.mark.slow
def test_the_paper_study_report_has_table6_and_figure6(tmp_path) -> None:
    from resnets.report import write_report

    study = _study("--depths", "20", "--out", str(tmp_path))
    results = [_result("plain20", 20, False, s, 0.10) for s in (0, 1)]
    results += [_result("resnet20", 20, True, 0, 0.0800), _result("resnet20", 20, True, 1, 0.0820)]
    paths = write_report(results, study, "resnets degradation --recipe paper-cifar")
    md = paths["markdown"].read_text()
    assert "## He et al. 2015, Table 6, beside ours (CIFAR-10 test error)" in md
    assert "| 20 | 0.27M / 0.27M | 8.75% | 8.10 ± 0.14% (n=2) | -0.65 |" in md
    assert "64000 iterations of SGD" in md
    assert "from the recipe `paper-cifar` (momentum 0.9, bn_group 64" in md
    assert md.index("figures/figure6.png") < md.index("figures/errors.png")
    assert paths["figure6"].read_bytes().startswith(b"\x89PNG")
    digits = _study("--depths", "20", "--dataset", "digits", "--out", str(tmp_path / "d"))
    other = write_report(results, digits)["markdown"].read_text()  # not the paper's dataset: no block
    assert "Table 6" not in other and "figure6" not in other
    assert "changed from the recipe: dataset digits (the recipe's cifar10)" in other


def _fake_run(folder, metrics: list[dict], *, checkpoint: int | None = None, elapsed: float = 0.0,
              done: dict | None = None, resolved: dict | None = None) -> None:  # fmt: skip
    """A run folder as a study leaves it: config.json, metrics.jsonl, a checkpoint, the final weights."""
    import json

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"resolved": {"total_steps": 64000} | (resolved or {})}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 12')
    if checkpoint is not None:
        (folder / "checkpoint").mkdir()
        torch.save({"model": {}, "step": checkpoint, "elapsed": elapsed},
                   folder / "checkpoint" / f"step-{checkpoint:08d}.pt")  # fmt: skip
    if done is not None:
        (folder / "model.safetensors").write_bytes(b"")
        (folder / "diagnostics.json").write_text(json.dumps(done))


def test_the_status_page_gives_each_runs_step_error_and_device_time(tmp_path) -> None:
    from resnets.experiments.degradation import StudyConfig
    from resnets.report.study_status import write_status

    study = StudyConfig.from_recipe("paper-cifar", dataset="cifar10", depths=[20, 56], seeds=2,
                                    out=str(tmp_path))  # fmt: skip
    rows = [{"step": s, "train_error": 0.5, "test_error": 0.2 - s / 1e6, "time": s / 100,
             "images_per_s": 1234.4} for s in (390, 780)]  # fmt: skip
    _fake_run(tmp_path / "resnet20-seed0", [*rows, {"step": 64000, "test_error": 0.0799, "time": 500.0}],
              checkpoint=64000, elapsed=500.0, done={"params": 272_474, "test_error": 0.0812},
              resolved={"machine": "NVIDIA H200", "precision": "bf16", "compile": True,
                        "cuda_graphs": True})  # fmt: skip
    key = "AMD EPYC (family 25, model 1) | torch"
    old = {"precision": "fp32", "compile": False, "fast_path": {"key": key}}
    _fake_run(tmp_path / "plain56-seed0", rows, checkpoint=1000, elapsed=12.5, resolved=old)  # between evals
    _fake_run(tmp_path / "resnet56-seed0", rows)  # killed before its first checkpoint
    page = write_status(study, tmp_path / "docs" / "report.md").read_text()
    assert "**1 of 8 runs done**, 2 under way, 5 not started" in page
    # the study's measurement of the weights; where and how each run trains (a run from before "machine"
    # was recorded: its fast-path trial's device)
    h200 = "NVIDIA H200, bf16, compiled + CUDA graphs"
    assert f"| resnet20 | 0 | done | 8.12% | 8 min 20 s | — | {h200} |" in page
    plain56 = "| plain56 | 0 | at step 1,000 of 64,000 (2%) | 19.92% (step 780) | 12 s |"
    assert f"{plain56} 1,234 | AMD EPYC (family 25, model 1), fp32, eager |" in page
    assert "| resnet56 | 0 | at step 780 of 64,000 (1%) | 19.92% (step 780) | 8 s | 1,234 | — |" in page
    assert "| plain20 | 1 | not started | — | — | — | — |" in page
    assert "Device time so far: **8 min 40 s** (520 s)" in page  # 500 + 12.5 + 7.8
    assert "| 20 | 0.27M / 0.27M | 8.75% | 8.12% (n=1) | -0.63 |" in page
    assert "| 56 | 0.85M / 0.85M | 6.97% | — (n=0) | — |" in page  # counted: 853,018
    assert (tmp_path / "docs" / "figures" / "figure6.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_tiny_paper_study_records_the_recipe_in_each_run_and_its_status(tmp_path) -> None:
    import dataclasses
    import json

    from resnets.experiments import run_study
    from resnets.experiments.degradation import StudyConfig
    from resnets.report.study_status import write_status

    study = StudyConfig.from_recipe("paper-cifar", dataset="digits", models=["resnet20"], seeds=1,
                                    iterations=2, precision="fp32", device="cpu",
                                    out=str(tmp_path / "study"))  # fmt: skip
    (result,) = run_study(study, progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "study" / "resnet20-seed0" / "config.json").read_text())
    assert (saved["recipe"], saved["bn_group"], saved["momentum"], saved["iterations"]) == (
        "paper-cifar",
        64,
        0.9,
        2,
    )
    assert json.loads((tmp_path / "study" / "study.json").read_text())["recipe"] == "paper-cifar"
    page = write_status(study, tmp_path / "status.md").read_text()
    assert f"| resnet20 | 0 | done | {100 * result.test_error:.2f}% |" in page
    machine = saved["resolved"]["machine"]
    assert f"| {machine}, fp32, eager |" in page and "family" in machine
    with pytest.raises(ResnetsError, match="no --recipe differs from the study"):
        run_study(dataclasses.replace(study, recipe=None), progress=False, log=lambda s: None)
