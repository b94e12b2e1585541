"""`resnets remedies`: every arm trained with one recipe, reported, resumable; failures are results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import assert_clean_error, run_cli

from resnets.experiments.remedies import ARM_NAMES, ARMS, GROUPS, RemediesConfig, run_remedies
from resnets.report.remedies import write_remedies_report
from resnets.report.remedies_verdict import verdict

SMALL = {"depths": [20], "epochs": 3, "train_subset": 384, "batch_size": 32}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[RemediesConfig, list]:
    out = tmp_path_factory.mktemp("remedies") / "study"
    cfg = RemediesConfig(out=str(out), arms=["plain", "resnet", "fixup", "tat", "lsuv", "highway"], **SMALL)
    return cfg, run_remedies(cfg, log=lambda line: None)


@pytest.mark.slow
def test_every_arm_is_a_run_with_the_shared_recipe(study) -> None:
    cfg, results = study
    assert [r.arm for r in results] == ["plain", "lsuv", "highway", "resnet", "fixup", "tat"]  # story order
    for r in results:
        saved = json.loads((Path(cfg.out) / f"{r.arm}-20-seed0" / "config.json").read_text())
        assert saved["lr"] == cfg.lr and saved["epochs"] == 3 and saved["train_subset"] == 384
        assert saved["model"] == ("resnet20" if r.arm in ("resnet", "fixup") else "plain20")
        assert saved["model_options"] == next(a.options for a in ARMS if a.name == r.arm)
        assert 0.0 <= r.train_error <= 1.0 and r.seconds > 0 and r.curves
        assert len(r.grad_init) == 20 + (9 if r.arm == "highway" else 0)  # highway gates are convs too
    by = {r.arm: r for r in results}
    assert by["resnet"].train_error < 0.75  # well below chance (90 %) after 36 steps


@pytest.mark.slow
def test_report_has_every_arm_and_the_summary_rows(study) -> None:
    cfg, results = study
    paths = write_remedies_report(results, cfg, "resnets remedies ...")
    rows = json.loads(paths["summary"].read_text())
    assert [row["arm"] for row in rows] == [r.arm for r in results]
    for row in rows:
        keys = {"arm", "group", "depth", "seed", "train_error", "test_error", "seconds", "diverged"}
        assert set(row) == keys
        assert row["group"] in GROUPS
    page = paths["html"].read_text()
    for r in results:
        assert f"<td>{r.arm}</td>" in page
    assert page.count("data:image/png;base64,") == 4  # arms, curves, gradients, signal
    md = paths["markdown"].read_text()
    assert "## Verdict" in md and "The gap at depth 20" in md


@pytest.mark.slow
def test_a_rerun_loads_every_arm_without_training(study) -> None:
    cfg, results = study
    lines: list[str] = []
    again = run_remedies(cfg, log=lines.append)
    assert all("done, loading" in line for line in lines) and len(lines) == len(results)
    assert [r.train_error for r in again] == [r.train_error for r in results]


@pytest.mark.slow
def test_a_study_refuses_another_recipe_in_its_folder(study) -> None:
    cfg, _ = study
    proc = run_cli("remedies", "--arms", "plain", "--depths", "20", "--epochs", "4", "--out", cfg.out)
    assert_clean_error(proc, "--epochs 4 differs from the study")


@pytest.mark.slow
def test_diverged_arms_are_reported_not_fatal(tmp_path: Path) -> None:
    out = tmp_path / "wild"
    proc = run_cli("remedies", "--arms", "tat", "fixup", "--depths", "20", "--epochs", "1",
                   "--train-subset", "256", "--lr", "1e9", "--quiet", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {row["arm"]: row for row in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"tat", "fixup"}  # the study went on after tat diverged
    assert rows["tat"]["train_error"] is None and "loss became nan" in rows["tat"]["diverged"]
    report = (out / "report.md").read_text()
    assert "| tat | 20 | diverged | diverged |" in report
    assert "Did not train** (loss became NaN): tat" in report


def test_verdict_claims_only_beyond_the_seed_spread() -> None:
    from resnets.experiments.remedies import ArmResult

    def result(arm: str, seed: int, error: float) -> ArmResult:
        group = next(a.group for a in ARMS if a.name == arm)
        residual = arm == "resnet"
        return ArmResult(arm, group, 56, seed, residual, "", error, error, 1.0, None, [], [], [], [], [])

    spread = [result("plain", 0, 0.30), result("plain", 1, 0.40), result("resnet", 0, 0.02),
              result("resnet", 1, 0.02), result("elu", 0, 0.28), result("elu", 1, 0.29),
              result("lsuv", 0, 0.02), result("lsuv", 1, 0.03), result("xavier", 0, 0.10),
              result("xavier", 1, 0.11)]  # fmt: skip
    text = " ".join(verdict(spread))
    assert "No effect beyond the margin**: elu" in text  # 6.5 points better, but within 2 std of plain (14)
    assert "Close the gap** (within the margin of the residual net): lsuv" in text
    assert "Help, but leave a gap** (better than the plain net beyond the margin): xavier" in text


@pytest.mark.slow
def test_cli_lists_arms_and_refuses_unknown_ones(tmp_path: Path) -> None:
    proc = run_cli("remedies", "--list")
    assert proc.returncode == 0
    for name in ARM_NAMES:
        assert name in proc.stdout
    proc = run_cli("remedies", "--arms", "plain", "fixupp", "--out", str(tmp_path / "x"))
    assert_clean_error(proc, "fixup")
    proc = run_cli("remedies", "--seeds", "0", "--out", str(tmp_path / "y"))
    assert_clean_error(proc, "seeds must be")


def test_cli_defaults_are_the_configs_and_the_shared_recipes() -> None:
    from resnets.cli import build_parser
    from resnets.experiments import RECIPE

    args, cfg = build_parser().parse_args(["remedies"]), RemediesConfig()
    for name, value in dataclasses.asdict(RECIPE).items():
        if name != "seed":  # the study runs seeds 0, 1, ...: no --seed
            assert getattr(args, name) == getattr(cfg, name) == value, name
    assert not hasattr(args, "seed")
    assert (args.depths, args.seeds, args.out, args.device) == (cfg.depths, cfg.seeds, cfg.out, cfg.device)
