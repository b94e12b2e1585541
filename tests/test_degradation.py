"""The degradation study and its report: files, self-contained HTML, resume, verdict logic."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_GUARD, assert_clean_error, run_cli
from PIL import Image

from resnets.errors import ResnetsError
from resnets.experiments import ModelResult, StudyConfig, run_study
from resnets.experiments.degradation import run_folder
from resnets.io import exclusive
from resnets.report import write_report
from resnets.report.degradation import _checkpointing_note, _recipe, table_rows
from resnets.report.degradation_figures import final_errors
from resnets.report.degradation_verdict import verdict

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, list[ModelResult], dict]:
    out = tmp_path_factory.mktemp("study")
    cfg = StudyConfig(depths=[20, 32], iterations=6, batch_size=32, out=str(out))
    results = run_study(cfg, progress=False, log=lambda s: None)
    return cfg, results, write_report(results, cfg, "resnets degradation --depths 20 32")


@pytest.mark.slow
def test_study_trains_every_model_with_one_recipe(tiny_study) -> None:
    cfg, results, _ = tiny_study
    models = [("plain20", False), ("plain32", False), ("resnet20", True), ("resnet32", True)]
    # Every model at the first seed, then every model at the next.
    assert [(r.model, r.residual, r.seed) for r in results] == [(*m, s) for s in (0, 1) for m in models]
    configs = [json.loads((run_folder(Path(cfg.out), r.model, r.seed) / "config.json").read_text())
               for r in results]  # fmt: skip
    assert [c["seed"] for c in configs] == [r.seed for r in results]
    recipe_keys = ("lr", "schedule", "batch_size", "weight_decay", "iterations", "dataset")
    assert len({tuple(c[k] for k in recipe_keys) for c in configs}) == 1
    for r in results:
        assert len(r.grad_init) == r.depth == len(r.grad_final)  # every conv + fc, by depth
        assert len(r.responses) == r.depth - 1  # every 3x3 conv (all but the fc)
        assert 0 <= r.train_error <= 1 and 0 <= r.test_error <= 1


@pytest.mark.slow
def test_summary_json_contract(tiny_study) -> None:
    _, results, paths = tiny_study
    summary = json.loads(paths["summary"].read_text())
    assert [(s["model"], s["seed"]) for s in summary] == [(r.model, r.seed) for r in results]
    for s in summary:
        assert {"model", "depth", "residual", "seed", "train_error", "test_error"} <= set(s)
        assert isinstance(s["residual"], bool) and 0 <= s["train_error"] <= 1


@pytest.mark.slow
def test_html_report_is_self_contained_with_every_plot(tiny_study) -> None:
    _, results, paths = tiny_study
    page = paths["html"].read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 5
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data.startswith(PNG) and len(data) > 10_000
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    for r in results:
        assert r.model in page
    md = paths["markdown"].read_text()
    for name in re.findall(r"\(figures/([^)]+)\)", md):
        assert (paths["html"].parent / "figures" / name).read_bytes().startswith(PNG)


@pytest.mark.slow
def test_study_resumes_without_retraining(tiny_study) -> None:
    cfg, results, _ = tiny_study
    out = Path(cfg.out)

    def stamps(rs: list[ModelResult]) -> dict[tuple[str, int], int]:
        return {(r.model, r.seed): (run_folder(out, r.model, r.seed) / "model.safetensors").stat().st_mtime_ns
                for r in rs}  # fmt: skip

    stamp = stamps(results)
    # As if killed after training, before measuring.
    (run_folder(out, "resnet32", 0) / "diagnostics.json").unlink()
    logs: list[str] = []
    again = run_study(cfg, progress=False, log=logs.append)
    assert all("done, loading" in line for line in logs if "resnet32 seed 0" not in line)
    assert stamps(again) == stamp
    assert [r.summary() for r in again] == [r.summary() for r in results]


def _result(
    model: str, depth: int, residual: bool, train_error: float, seed: int = 0, seconds: float = 1.0
) -> ModelResult:
    return ModelResult(
        model=model, depth=depth, residual=residual, seed=seed, params=1, train_error=train_error,
        test_error=train_error,
        train_loss=0.0, test_loss=0.0, seconds=seconds, curves=[], layers=["a", "b"], grad_init=[1.0, 0.5],
        grad_final=[1.0, 1.0], response_layers=["a"], responses=[0.5 if residual else 1.0],
        signal_variance=[1.0], signal_branch_variance=[float("nan")],
    )  # fmt: skip


def _seeds(model: str, depth: int, residual: bool, *errors: float) -> list[ModelResult]:
    """One model's results at seeds 0, 1, ...: one training error each."""
    return [_result(model, depth, residual, e, seed=seed) for seed, e in enumerate(errors)]


def _diverge(r: ModelResult, step: int) -> ModelResult:
    r.diverged = f"loss became nan at step {step}; lower the learning rate"
    r.train_error = r.test_error = float("nan")
    r.responses = []
    return r


def test_verdict_reports_degradation_only_when_measured() -> None:
    text = " ".join(verdict([
        *_seeds("plain20", 20, False, 0.01, 0.03), *_seeds("plain56", 56, False, 0.70, 0.68),
        *_seeds("resnet20", 20, True, 0.01, 0.012), *_seeds("resnet56", 56, True, 0.005, 0.004),
    ]))  # fmt: skip
    assert "**Degradation seen.** Every seed of plain56 trains worse than every seed of plain20" in text
    assert "plain56 ends with 69.00 ± 1.41% training error; plain20 ends with 2.00 ± 1.41%" in text
    assert "+67.0 points between the means" in text
    assert "**Residual nets do not get worse with depth**: every seed of resnet56 trains better" in text
    assert "smaller, as in the paper" in text and "(seed 0)" in text
    assert "neither vanish nor explode" in text  # a 2x spread of gradient norms
    assert "every seed of the other (the seed ranges do not overlap), with at least 2 seeds each" in text
    better = verdict([*_seeds("plain20", 20, False, 0.05, 0.06), *_seeds("plain56", 56, False, 0.02, 0.03)])
    assert "No degradation seen" in " ".join(better)


def test_verdict_claims_nothing_within_the_seed_spread() -> None:
    text = " ".join(verdict([
        *_seeds("plain20", 20, False, 0.30, 0.50), *_seeds("plain56", 56, False, 0.40, 0.60),
        *_seeds("resnet20", 20, True, 0.10, 0.20), *_seeds("resnet56", 56, True, 0.15, 0.05),
    ]))  # fmt: skip
    assert "Degradation seen" not in text and "No degradation seen" not in text
    assert "**Degradation not claimed**: the difference is within the seed spread" in text
    assert "plain56 ends with 50.00 ± 14.14% training error; plain20 ends with 40.00 ± 14.14%" in text
    assert (
        "**The deeper residual net is not worse beyond the seed spread** (resnet56's and resnet20's" in text
    )
    assert "do not get worse" not in text and "do get worse" not in text


def test_single_seed_verdict_says_so_and_claims_nothing() -> None:
    text = " ".join(verdict([
        _result("plain20", 20, False, 0.01), _result("plain56", 56, False, 0.70),
        _result("resnet20", 20, True, 0.01), _result("resnet56", 56, True, 0.005),
    ]))  # fmt: skip
    assert "The figures are single-seed: the verdict is not tested against seed spread" in text
    assert "**Degradation not tested against seed spread** (one seed)" in text
    assert "Degradation seen" not in text and "Seed rule" not in text
    assert "ends with 70.00% training error; plain20 ends with 1.00% training error (+69.0 points)" in text
    assert "**Residual nets by depth, not tested against seed spread** (one seed)" in text


def test_table_has_one_row_per_model_with_mean_and_sd_over_seeds() -> None:
    results = [_result("plain20", 20, False, 0.47, seed=0, seconds=10.0), _result("resnet20", 20, True, 0.1),
               _result("plain20", 20, False, 0.51, seed=1, seconds=20.0),
               _result("resnet20", 20, True, 0.1, seed=1)]  # fmt: skip
    header, rows = table_rows(results, "digits")
    assert header == ["model", "depth", "seeds", "params", "train error", "test error", "train time"]
    assert rows == [["plain20", "20", "2/2", "0.00M", "49.00 ± 2.83%", "49.00 ± 2.83%", "15 s"],
                    ["resnet20", "20", "2/2", "0.00M", "10.00 ± 0.00%", "10.00 ± 0.00%", "1 s"]]  # fmt: skip
    _, single = table_rows([_result("plain20", 20, False, 0.4899)], "digits")
    assert single[0][2:6] == ["1/1", "0.00M", "48.99%", "48.99%"]  # one seed: the plain value


def test_a_diverged_seed_is_named_and_left_out_of_the_mean() -> None:
    failed = _diverge(_result("plain56", 56, False, 0.0, seed=1, seconds=99.0), step=40)
    deep = [_result("plain56", 56, False, 0.6, seconds=10.0), failed]
    _, rows = table_rows(deep, "digits")
    assert rows[0][2:] == ["1/2 (1 of 2 diverged, seed 1 at step 40)", "0.00M", "60.00%", "60.00%", "10 s"]
    # The diverged seed counts as worse than any that finished: every seed of plain56 is above plain20's.
    text = " ".join(verdict([*_seeds("plain20", 20, False, 0.1, 0.12), *deep]))
    assert "**Degradation seen.**" in text
    assert "plain56 ends with 60.00% training error (1 of 2 diverged, seed 1 at step 40)" in text
    assert "+49.0 points between the means" in text


def test_verdict_names_vanishing_and_exploding_gradients_from_the_convs() -> None:
    def plain(grads: list[float]) -> ModelResult:
        r = _result("plain56", 56, False, 0.5)
        r.grad_init = grads
        return r

    # The last entry is the classifier's, left out of the first-conv/last-conv comparison.
    explode = " ".join(verdict([plain([1000.0, 10.0, 2.0, 77.0]), _result("resnet56", 56, True, 0.01)]))
    assert "grow toward the input (1e+03 at the first conv, 2 at the last)" in explode
    assert "explode backwards" in explode and "500x spread" in explode
    vanish = " ".join(verdict([plain([0.001, 0.1, 2.0, 77.0]), _result("resnet56", 56, True, 0.01)]))
    assert "shrink toward the input (0.001 at the first conv, 2 at the last)" in vanish
    assert "they vanish" in vanish and "77000x spread" in vanish


def test_cli_defaults_are_the_configs_and_the_shared_recipes() -> None:
    from resnets.cli import build_parser
    from resnets.experiments import RECIPE

    cfg = StudyConfig()
    for argv in (["degradation"], ["diagnose", "--model", "resnet20"]):
        args = build_parser().parse_args(argv)
        for name, value in dataclasses.asdict(RECIPE).items():
            assert getattr(args, name, value) == getattr(cfg, name) == value, name  # diagnose has no --epochs
    args = build_parser().parse_args(["degradation"])
    assert (args.depths, args.family, args.out, args.device) == (cfg.depths, cfg.family, cfg.out, cfg.device)


@pytest.mark.slow
def test_degradation_cli_rejects_bad_depths(tmp_path: Path) -> None:
    assert_clean_error(
        run_cli("degradation", "--depths", "21", "--out", str(tmp_path)), "unknown model 'resnet21'"
    )
    assert_clean_error(run_cli("degradation", "--depths", "20", "20", "--out", str(tmp_path)), "repeat")


@pytest.mark.slow
def test_diagnose_cli_compares_model_and_twin(tmp_path: Path) -> None:
    proc = run_cli("diagnose", "--model", "resnet20", "--steps", "3", "--batch-size", "32", "--quiet",
                   "--out", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "resnet20" in proc.stdout and "plain20" in proc.stdout and "spread" in proc.stdout
    assert (tmp_path / "figures" / "gradients.png").read_bytes().startswith(PNG)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(page: Path, png: Path, profile: Path) -> np.ndarray:
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1200,4000",
         f"--screenshot={png}", page.as_uri()],
        capture_output=True, timeout=HANG_GUARD, check=True,
    )  # fmt: skip
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_every_plot_in_a_real_browser(tiny_study, tmp_path: Path) -> None:
    _, _, paths = tiny_study
    shot = _screenshot(paths["html"], tmp_path / "report.png", tmp_path / "profile")
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<img [^>]*>", "", paths["html"].read_text()))
    shot_bare = _screenshot(bare, tmp_path / "bare.png", tmp_path / "profile2")

    def coloured(img: np.ndarray) -> int:  # plot lines are saturated; text and tables are grey
        return int(((img.max(-1) - img.min(-1)) > 60).sum())

    assert coloured(shot) > 20_000, "the plots did not render"
    assert coloured(shot_bare) < coloured(shot) / 10


@pytest.mark.slow
def test_rerun_with_another_recipe_is_refused_naming_the_setting(tiny_study) -> None:
    cfg, _, _ = tiny_study
    other = StudyConfig(**{**dataclasses.asdict(cfg), "lr": 0.2})
    with pytest.raises(ResnetsError, match=r"--lr 0.2 differs from the study .* \(0.05\)"):
        run_study(other, progress=False, log=lambda s: None)
    # A study folder holding a model trained with other settings is not reused silently.
    alien = Path(cfg.out) / "alien"
    shutil.copytree(run_folder(Path(cfg.out), "resnet20", 0), run_folder(alien, "resnet20", 1))
    moved = StudyConfig(**{**dataclasses.asdict(cfg), "out": str(alien), "seed": 1, "seeds": 1,
                           "depths": [20]})  # fmt: skip
    with pytest.raises(ResnetsError, match="trained with seed=0, not 1"):
        run_study(moved, progress=False, log=lambda s: None)


@pytest.mark.slow
def test_a_study_folder_has_one_writer(tmp_path: Path) -> None:
    out = tmp_path / "study"
    with exclusive(out, "study"):  # this test process holds it, as a first `resnets degradation` would
        proc = run_cli("degradation", "--depths", "20", "--epochs", "1", "--out", str(out))
    assert_clean_error(proc, f"{out} is being written by another study (pid {os.getpid()} on ")
    assert not (out / "study.json").exists()


def test_a_diverged_plain_net_is_degradation_to_the_extreme() -> None:
    deep = [_diverge(r, 2 + r.seed) for r in _seeds("plain1202", 1202, False, 0.0, 0.0)]
    for r in deep:
        r.grad_init = [float("nan"), 1e19, 0.3, 1.0]
    results = [*_seeds("plain20", 20, False, 0.1, 0.12), *deep, *_seeds("resnet20", 20, True, 0.01, 0.01),
               *_seeds("resnet1202", 1202, True, 0.02, 0.03)]  # fmt: skip
    text = " ".join(verdict(results))
    assert "to the extreme.** plain1202 did not train on any seed (loss became nan at step 2)" in text
    assert "overflow the float range" in text  # not "vanish": the first conv's norm is NaN
    assert "Layer responses" in text and "plain20" in text  # compared where both nets trained
    _, rows = table_rows(results, "digits")
    assert rows[1][2] == "0/2 (2 of 2 diverged, seed 0 at step 2, seed 1 at step 3)"
    assert rows[1][4:6] == ["diverged (step 2)", "diverged (step 2)"]
    assert deep[0].summary()["train_error"] is None
    assert deep[0].summary()["diverged"].startswith("loss became nan")


def test_intro_names_the_seeds_and_reads_each_seeds_run_folder(tmp_path: Path) -> None:
    assert "seeds 0, 1; the same recipe for every model" in _recipe(StudyConfig(seeds=2))
    assert "seed 3; the same recipe for every model" in _recipe(StudyConfig(seed=3, seeds=1))
    config = {"resolved": {"checkpointing": {"auto": True, "activation_gib": 12.0}}}
    for seed in (0, 1):
        run_folder(tmp_path, "resnet1202", seed).mkdir()
        (run_folder(tmp_path, "resnet1202", seed) / "config.json").write_text(json.dumps(config))
    note = _checkpointing_note(_seeds("resnet1202", 1202, True, 0.1, 0.1), tmp_path)
    assert note.count("resnet1202 (12.0 GiB of activations estimated)") == 1  # named once, not per seed


def test_final_error_figure_has_a_dot_per_finished_seed_and_a_line_of_means(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from resnets.report.degradation_figures import _seeds_and_mean
    from resnets.report.degradation_verdict import by_model

    results = [*_seeds("plain20", 20, False, 0.1, 0.3), *_seeds("plain56", 56, False, 0.5, 0.0)]
    _diverge(results[-1], 7)
    fig, ax = plt.subplots()
    _seeds_and_mean(ax, by_model(results), "train_error", residual=False)
    assert ax.collections[0].get_offsets().tolist() == [[20, 10.0], [20, 30.0], [56, 50.0]]
    assert [list(xy) for xy in ax.lines[0].get_xydata()] == [[20, 20.0], [56, 50.0]]
    plt.close(fig)
    assert final_errors(results, tmp_path / "final.png").read_bytes().startswith(PNG)
