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
from resnets.io import exclusive
from resnets.report import write_report
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
    assert [(r.model, r.residual) for r in results] == [
        ("plain20", False),
        ("plain32", False),
        ("resnet20", True),
        ("resnet32", True),
    ]
    configs = [json.loads((Path(cfg.out) / r.model / "config.json").read_text()) for r in results]
    recipe_keys = ("lr", "schedule", "batch_size", "seed", "weight_decay", "iterations", "dataset")
    assert len({tuple(c[k] for k in recipe_keys) for c in configs}) == 1
    for r in results:
        assert len(r.grad_init) == r.depth == len(r.grad_final)  # every conv + fc, by depth
        assert len(r.responses) == r.depth - 1  # every 3x3 conv (all but the fc)
        assert 0 <= r.train_error <= 1 and 0 <= r.test_error <= 1


@pytest.mark.slow
def test_summary_json_contract(tiny_study) -> None:
    _, results, paths = tiny_study
    summary = json.loads(paths["summary"].read_text())
    assert [s["model"] for s in summary] == [r.model for r in results]
    for s in summary:
        assert {"model", "depth", "residual", "train_error", "test_error"} <= set(s)
        assert isinstance(s["residual"], bool) and 0 <= s["train_error"] <= 1


@pytest.mark.slow
def test_html_report_is_self_contained_with_every_plot(tiny_study) -> None:
    _, results, paths = tiny_study
    page = paths["html"].read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 4
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
    stamp = {r.model: (out / r.model / "model.safetensors").stat().st_mtime_ns for r in results}
    (out / "resnet32" / "diagnostics.json").unlink()  # as if killed after training, before measuring
    logs: list[str] = []
    again = run_study(cfg, progress=False, log=logs.append)
    assert all("done, loading" in line for line in logs if "resnet32" not in line)
    assert {r.model: (out / r.model / "model.safetensors").stat().st_mtime_ns for r in again} == stamp
    assert [r.summary() for r in again] == [r.summary() for r in results]


def _result(model: str, depth: int, residual: bool, train_error: float) -> ModelResult:
    return ModelResult(
        model=model, depth=depth, residual=residual, params=1, train_error=train_error,
        test_error=train_error,
        train_loss=0.0, test_loss=0.0, seconds=1.0, curves=[], layers=["a", "b"], grad_init=[1.0, 0.5],
        grad_final=[1.0, 1.0], response_layers=["a"], responses=[0.5 if residual else 1.0],
        signal_variance=[1.0], signal_branch_variance=[float("nan")],
    )  # fmt: skip


def test_verdict_reports_degradation_only_when_measured() -> None:
    seen = verdict([_result("plain20", 20, False, 0.01), _result("plain56", 56, False, 0.70),
                    _result("resnet20", 20, True, 0.01), _result("resnet56", 56, True, 0.005)])  # fmt: skip
    text = " ".join(seen)
    assert "Degradation seen" in text and "70.00%" in text and "+69.0 points" in text
    assert "do not get worse" in text
    assert "smaller, as in the paper" in text
    assert "neither vanish nor explode" in text  # a 2x spread of gradient norms
    none = " ".join(verdict([_result("plain20", 20, False, 0.05), _result("plain56", 56, False, 0.05)]))
    assert "No degradation seen" in none


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
    shutil.copytree(Path(cfg.out) / "resnet20", alien / "resnet20")
    moved = StudyConfig(**{**dataclasses.asdict(cfg), "out": str(alien), "seed": 1, "depths": [20]})
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
    from resnets.report.degradation import table_rows

    deep = _result("plain1202", 1202, False, float("nan"))
    deep.diverged = "loss became nan at step 2; lower the learning rate"
    deep.grad_init, deep.responses = [float("nan"), 1e19, 0.3, 1.0], []
    results = [_result("plain20", 20, False, 0.1), deep, _result("resnet20", 20, True, 0.01),
               _result("resnet1202", 1202, True, 0.02)]  # fmt: skip
    text = " ".join(verdict(results))
    assert "to the extreme.** plain1202 did not train at all (loss became nan at step 2)" in text
    assert "overflow the float range" in text  # not "vanish": the first conv's norm is NaN
    assert "Layer responses" in text and "plain20" in text  # compared where both nets trained
    _, rows = table_rows(results, "digits")
    assert rows[1][3:5] == ["diverged (step 2)", "diverged (step 2)"]
    assert deep.summary()["train_error"] is None and deep.summary()["diverged"].startswith("loss became nan")
