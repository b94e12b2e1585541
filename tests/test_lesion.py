"""The lesion study: a deleted residual block keeps its shortcut; a plain one passes its input on."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_clean_error, run_cli

from resnets import create_model
from resnets.data import TensorLoader, load_dataset
from resnets.experiments.lesion import deleted, lesion, lesion_verdict, study_lesions


def test_deleting_a_block_whose_branch_is_zero_changes_nothing() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, zero_init_residual=True).eval()
    x = torch.randn(4, 3, 32, 32)
    blocks = model.blocks()
    with torch.no_grad():
        intact = model(x)
        with deleted(blocks, [1, 4, 7]):  # branches are zero at this init: y = relu(0 + x)
            torch.testing.assert_close(model(x), intact, atol=0, rtol=0)
        torch.nn.init.normal_(blocks[4].bn2.weight)  # give block 4 a branch
        changed = model(x)
        with deleted(blocks, [4]):
            torch.testing.assert_close(model(x), intact, atol=1e-6, rtol=0)
        assert not torch.allclose(changed, intact)
        assert torch.equal(model(x), changed)  # the context restored every block


@pytest.mark.slow
def test_plain_blocks_that_change_shape_cannot_be_deleted() -> None:
    data = load_dataset("digits")
    loader = TensorLoader(data.test, 360, data.mean, data.std)
    torch.manual_seed(0)
    plain = create_model("plain20", num_classes=10, in_channels=1)
    result = lesion("plain20", plain, False, loader, draws=2, max_k=3)
    assert [i for i, e in enumerate(result.single) if e is None] == [3, 6]  # layer2.0, layer3.0
    assert [d["k"] for d in result.random_k] == [1, 2, 3] and result.draws == 2
    assert all(d["max"] >= d["mean"] and d["sd"] >= 0 for d in result.random_k)
    res = lesion("resnet20", create_model("resnet20", num_classes=10, in_channels=1), True, loader, draws=1)
    assert None not in res.single and len(res.random_k) == 9


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("lesion")
    for model in ("resnet20", "plain20"):
        args = ["--model", model, "--dataset", "digits", "--epochs", "6", "--batch-size", "64",
                "--schedule", "onecycle", "--lr", "0.05", "--quiet", "--out", str(out / model),
                "--precision", "fp32", "--no-channels-last", "--no-compile"]  # fmt: skip
        proc = run_cli("train", *args)
        assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_a_trained_residual_net_survives_a_deleted_block_and_its_plain_twin_does_not(trained_pair) -> None:
    out = trained_pair
    proc = run_cli("lesion", "--run", str(out / "resnet20"), "--run", str(out / "plain20"), "--draws", "2",
                   "--max-k", "3", "--precision", "fp32", "--out", str(out / "lesion"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res, plain = json.loads((out / "lesion" / "lesion.json").read_text())
    assert (res["model"], plain["model"]) == ("resnet20", "plain20")
    assert (out / "lesion" / "lesion.png").read_bytes().startswith(b"\x89PNG")
    res_errors = sorted(e for e in res["single"][1:] if e is not None)  # the stem-side block aside
    plain_errors = sorted(e for e in plain["single"] if e is not None)
    # Veit et al.: one missing block costs a residual net little, and a plain net nearly all.
    median = len(res_errors) // 2
    assert (
        res_errors[median] - res["baseline_error"]
        < plain_errors[len(plain_errors) // 2] - plain["baseline_error"]
    )
    assert plain_errors[len(plain_errors) // 2] > 0.5 and res_errors[median] < 0.5
    assert "resnet20" in proc.stdout and "plain20" in proc.stdout


@pytest.mark.slow
def test_lesion_errors_are_one_line(tmp_path) -> None:
    assert_clean_error(run_cli("lesion", "--run", str(tmp_path / "none")), "does not exist")
    assert_clean_error(run_cli("lesion", "--run", str(tmp_path), "--draws", "0"), "--draws")


@pytest.mark.slow
def test_cached_lesions_are_measured_again_when_the_draws_change(trained_pair, tmp_path) -> None:
    runs = [trained_pair / "resnet20"]
    first = study_lesions(tmp_path, runs, draws=2, max_k=2)
    stamp = (tmp_path / "lesion.json").stat().st_mtime_ns
    assert study_lesions(tmp_path, runs, draws=2, max_k=2) == first  # the cache answers
    assert (tmp_path / "lesion.json").stat().st_mtime_ns == stamp
    again = study_lesions(tmp_path, runs, draws=3, max_k=2)
    assert again[0].draws == 3 and json.loads((tmp_path / "lesion.json").read_text())[0]["draws"] == 3
    # The verdict says how many draws each k had, so a reader can weigh the curve.
    assert any("3 draws per k" in line for line in lesion_verdict(again))
