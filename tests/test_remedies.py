"""`resnets remedies`: each arm as its paper builds it, at its own lr chosen on held-out images, seeds."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_error, run_cli
from torch import nn

from resnets.data import load_dataset
from resnets.experiments.remedies import (
    ARM_NAMES,
    ARMS,
    ArmResult,
    RemediesConfig,
    Search,
    Study,
    run_remedies,
    widen,
)
from resnets.experiments.remedy_arms import DEFAULT_ARMS, GROUPS, REPRESENTATIVES, get_arm
from resnets.experiments.stats import welch
from resnets.report.remedies import write_remedies_report
from resnets.report.remedies_verdict import judge, verdict
from resnets.training.build import build_model
from resnets.training.step import make_optimizer

SMALL = {
    "depths": [20, 32],
    "epochs": 2,
    "train_subset": 256,
    "batch_size": 32,
    "lrs": [0.02, 0.2],
    "seeds": 2,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    out = tmp_path_factory.mktemp("remedies") / "study"
    cfg = RemediesConfig(out=str(out), arms=["plain", "resnet", "fixup"], **SMALL)
    return run_remedies(cfg, log=lambda line: None)


@pytest.mark.slow
def test_each_arm_gets_its_own_lr_chosen_on_held_out_images_then_every_seed(study: Study) -> None:
    out = Path(study.cfg.out)
    fast = json.loads((out / "fast-path.json").read_text())
    assert study.val_split == len(load_dataset("digits").train) // 5
    for search in study.searches:
        sweep = json.loads((out / f"{search.arm}-{search.depth}" / "sweep.json").read_text())
        searched = {r["lr"] for r in sweep["members"] if r["seed"] == 0}
        assert {0.02, 0.2} <= searched  # the grid at seed 0, widened only past its ends
        assert all(lr in (0.02, 0.2) or lr < 0.02 or lr > 0.2 for lr in searched)
        assert search.lr == sweep["chosen"]["lr"] and search.lr in searched
        # Chosen on its score at seed 0 (held-out images, BN statistics recomputed): the lowest there.
        scores = {r["lr"]: r["score"] for r in search.rows if r["score"] is not None}
        assert scores[search.lr] == min(scores.values())
        finals = [r for r in study.results if r.arm == search.arm and r.depth == search.depth]
        assert [r.seed for r in finals] == [0, 1] and all(r.lr == search.lr for r in finals)
        for r in finals:
            run = out / f"{r.arm}-{r.depth}" / f"lr{search.lr:g}_wd0.0005_seed{r.seed}"
            config = json.loads((run / "config.json").read_text())
            assert config["val_split"] == study.val_split and config["train_subset"] == 256
            # One precision and layout for every arm, decided once for the study.
            assert config["resolved"]["precision"] == fast["precision"]
            assert config["resolved"]["channels_last"] == fast["channels_last"]
            assert config["model_options"] == get_arm(r.arm).options
            assert 0.0 <= r.train_error <= 1.0 and r.curves
    lr = next(s.lr for s in study.searches if s.arm == "fixup" and s.depth == 20)
    fixup = json.loads((out / "fixup-20" / f"lr{lr:g}_wd0.0005_seed0" / "config.json").read_text())
    assert fixup["lr_scale_for"] == {"*bias*": 0.1, "*scale*": 0.1}  # Fixup's own rule, not the shared one
    deep = [r for r in study.results if r.depth == 32]
    assert all(len(r.grad_init) > 0 for r in deep)  # gradients at initialisation, deepest depth


@pytest.mark.slow
def test_report_states_the_test_and_puts_depth_first(study: Study) -> None:
    paths = write_remedies_report(study, "resnets remedies ...")
    rows = json.loads(paths["summary"].read_text())
    assert len(rows) == 3 * 2 * 2  # arms x depths x seeds
    assert set(rows[0]) == {"arm", "group", "depth", "seed", "lr", "train_error", "test_error", "val_error",
                            "seconds", "diverged"}  # fmt: skip
    md = paths["markdown"].read_text()
    depth_at, versus_at = (
        md.index("## Depth as the yardstick: 32 against 20"),
        md.index("## Against the plain"),
    )
    assert depth_at < versus_at
    assert "Welch's t-test over seeds at the 0.05 level, one-sided: is the deeper net worse?" in md
    assert "chosen on the validation error of 287 training images held out (never the test set)" in md
    for arm in ("plain", "resnet", "fixup"):
        assert f"| {arm} | " in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 6  # arms, depth, lr, curves, gradients, signal


@pytest.mark.slow
def test_a_rerun_trains_nothing_and_another_recipe_is_refused(study: Study, monkeypatch) -> None:
    import resnets.experiments.sweep as sweep_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished study trained again")

    monkeypatch.setattr(sweep_module, "train", no_training)
    again = run_remedies(study.cfg, log=lambda line: None)
    assert [r.summary() for r in again.results] == [r.summary() for r in study.results]
    with pytest.raises(Exception, match="--seeds 3 differs from the study"):
        run_remedies(dataclasses.replace(study.cfg, seeds=3), log=lambda line: None)


def test_the_grid_widens_one_step_past_the_end_the_best_rate_sits_at() -> None:
    cfg = RemediesConfig(lrs=[0.0125, 0.05, 0.2])
    grid, plain = [0.0125, 0.05, 0.2], get_arm("plain")
    assert cfg.grid(plain) == grid and cfg.grid(get_arm("lsuv")) == [0.003125, 0.0125, 0.05]  # no BN: lower
    assert widen(grid, 0.05, cfg, plain) is None
    assert widen(grid, 0.2, cfg, plain) == [*grid, 0.8]
    assert widen([*grid, 0.8], 0.8, cfg, plain) == [*grid, 0.8, 3.2]
    assert widen([*grid, 0.8, 3.2], 3.2, cfg, plain) is None  # two steps past an end at most
    assert widen(grid, 0.0125, cfg, plain) == [*grid, 0.003125]
    assert widen(grid, None, cfg, plain) == [*grid, 0.003125]  # every rate diverged: try a smaller one
    assert widen(grid, 0.2, dataclasses.replace(cfg, search="halving"), plain) is None


def test_every_arm_is_built_as_its_paper_says() -> None:
    data = load_dataset("digits")
    for arm in ARMS:
        cfg = RemediesConfig(arms=[arm.name]).base(arm, 20, {"precision": "fp32", "val_split": 100})
        model = build_model(cfg, data)
        batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        no_bn = arm.options.get("norm") == "none" or arm.name in ("fixup", "skipinit")
        assert bool(batchnorms) != no_bn, arm.name
        logits = model(torch.randn(4, *data.image_shape))
        assert logits.shape == (4, 10) and torch.isfinite(logits).all(), arm.name
        assert arm.paper and arm.line().startswith(arm.what), arm.name
    for name in ("lsuv", "selu", "elu", "delta-orthogonal"):  # the methods made to replace BN run without it
        assert get_arm(name).options["norm"] == "none" and f"{name}-bn" in ARM_NAMES
    assert get_arm("rezero").options.get("norm") is None and get_arm("rezero-no-bn").options["norm"] == "none"
    assert "diracnet" in ARM_NAMES and "dirac-init" in ARM_NAMES
    assert set(DEFAULT_ARMS) == set(REPRESENTATIVES) and {get_arm(a).group for a in DEFAULT_ARMS} == set(
        GROUPS
    )


def test_fixup_scalars_learn_at_a_tenth_of_the_rate() -> None:
    data = load_dataset("digits")
    cfg = RemediesConfig().base(get_arm("fixup"), 20, {"precision": "fp32", "val_split": 100})
    model = build_model(cfg, data)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    scale_of = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.1 if ("bias" in name or "scale" in name) else 1.0  # the official script's rule
        assert scale_of[id(p)] == expected, name
    scalars = [n for n, p in model.named_parameters() if p.ndim == 0]
    assert len(scalars) == 5 * 9 + 2  # four biases and a multiplier per block, two around the net


def _result(arm: str, seed: int, depth: int, error: float) -> ArmResult:
    a = get_arm(arm)
    return ArmResult(arm, a.group, depth, seed, a.residual, a.what, 0.1, error, error, error, 1.0, None, [])


def _study(errors: dict[tuple[str, int], list[float]]) -> Study:
    results = [
        _result(arm, seed, depth, e) for (arm, depth), es in errors.items() for seed, e in enumerate(es)
    ]
    searches = [Search(arm, depth, [], 0.1, False) for arm, depth in errors]
    cfg = RemediesConfig(arms=list(dict.fromkeys(a for a, _ in errors)), depths=[20, 56], seeds=3)
    return Study(results, searches, {"precision": "fp32"}, 0.9, 300, cfg)


def test_verdict_claims_only_what_welchs_test_supports() -> None:
    study = _study({
        ("plain", 20): [0.05, 0.06, 0.055], ("plain", 56): [0.40, 0.42, 0.41],
        ("resnet", 20): [0.04, 0.05, 0.045], ("resnet", 56): [0.03, 0.035, 0.032],
        ("lsuv", 20): [0.05, 0.06, 0.05], ("lsuv", 56): [0.03, 0.036, 0.033],  # as good as resnet56
        ("selu", 20): [0.10, 0.12, 0.11], ("selu", 56): [0.20, 0.22, 0.21],  # better than plain, gap left
        ("dropout", 20): [0.05, 0.06, 0.05], ("dropout", 56): [0.10, 0.70, 0.45],  # noisy: no claim
        ("highway", 20): [0.06, 0.06, 0.07], ("highway", 56): [0.60, 0.62, 0.61],  # worse than plain
        ("tat", 20): [0.89, 0.9, 0.9], ("tat", 56): [0.9, 0.9, 0.89],  # never trains
    })  # fmt: skip
    by = {v.arm: v for v in judge(study)}
    assert by["plain"].degradation == "remains"
    assert (by["lsuv"].degradation, by["lsuv"].against_plain) == ("not shown to remain", "closes the gap")
    assert (by["selu"].degradation, by["selu"].against_plain) == ("remains", "helps")
    assert (by["dropout"].degradation, by["dropout"].against_plain) == (
        "not shown either way",
        "no different",
    )
    assert by["highway"].against_plain == "hurts" and by["tat"].against_plain == "never trains"
    assert by["resnet"].degradation == "not shown to remain"
    # The p-values are Welch's, as scipy computes them.
    from scipy.stats import ttest_ind

    expected = ttest_ind([0.20, 0.22, 0.21], [0.40, 0.42, 0.41], equal_var=False).pvalue
    assert by["selu"].vs_plain.p == pytest.approx(expected, rel=1e-9)
    text = " ".join(verdict(study))
    assert (
        "Welch's t-test over seeds at the 0.05 level (p < 0.05)" in text
        and "one-sided for degradation" in text
    )
    assert "No different from plain56**: dropout" in text


def test_welch_needs_two_seeds_a_side_and_handles_no_spread() -> None:
    assert welch([0.1], [0.2, 0.3]).p is None and not welch([0.1], [0.2, 0.3]).significant
    assert welch([0.9, 0.9], [0.9, 0.9]).p == 1.0
    assert welch([0.9, 0.9], [0.1, 0.1]).significant


def test_a_diverged_seed_counts_at_chance() -> None:
    study = _study({("plain", 20): [0.05, 0.06], ("plain", 56): [math.nan, math.nan],
                    ("resnet", 56): [0.1, 0.1], ("resnet", 20): [0.1, 0.12]})  # fmt: skip
    v = {v.arm: v for v in judge(study)}["plain"]
    assert v.deep == [0.9, 0.9] and v.degradation == "remains"


@pytest.mark.slow
def test_diverged_arms_are_reported_not_fatal(tmp_path: Path) -> None:
    out = tmp_path / "wild"
    proc = run_cli("remedies", "--arms", "plain", "tat", "--depths", "20", "--epochs", "1", "--seeds", "1",
                   "--train-subset", "256", "--lrs", "1e9", "--quiet", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {row["arm"]: row for row in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"plain", "tat"}  # the study went on after the first diverged
    assert rows["tat"]["train_error"] is None and "loss became nan" in rows["tat"]["diverged"]
    assert "| tat | all diverged | diverged |" in (out / "report.md").read_text()


def test_cli_lists_arms_and_refuses_nonsense(tmp_path: Path) -> None:
    proc = run_cli("remedies", "--list")
    assert proc.returncode == 0
    for arm in ARMS:
        assert arm.name in proc.stdout and arm.paper in proc.stdout
    for args, message in (
        (["--arms", "plain", "fixupp"], "fixup"),
        (["--seeds", "0"], "seeds must be"),
        (["--lrs", "0.1", "0.1"], "distinct learning rates"),
        (["--val-split", "0"], "--val-split must be"),
    ):
        assert_clean_error(run_cli("remedies", *args, "--out", str(tmp_path / "x")), message)


def test_cli_defaults_are_the_configs_and_quick_is_the_old_screen() -> None:
    from resnets.cli import build_parser

    args, cfg = build_parser().parse_args(["remedies"]), RemediesConfig()
    for name in ("depths", "seeds", "lrs", "search", "epochs", "batch_size", "weight_decay", "out", "device"):
        assert getattr(args, name) == getattr(cfg, name), name
    assert cfg.depths == [20, 56] and len(cfg.lrs) >= 3 and cfg.seeds >= 2
    quick = RemediesConfig(quick=True)
    assert (quick.lrs, quick.seeds, quick.depths) == ([0.05], 1, [56])
