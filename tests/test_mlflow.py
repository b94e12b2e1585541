"""--log mlflow: a store under the run directory holding the config and every metrics.jsonl row once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_clean_error

from resnets.errors import ResnetsError
from resnets.training import TrainConfig, train
from resnets.training.checkpoint import list_checkpoints
from resnets.training.logs import check_loggers, mlflow_uri


def _hide_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "mlflow" or n.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if uninstalled


def test_a_missing_mlflow_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_mlflow(monkeypatch)
    with pytest.raises(ResnetsError) as caught:
        check_loggers(["mlflow"])
    message = str(caught.value)
    assert "\n" not in message and "pip install 'resnets[mlflow]'" in message
    check_loggers(["tensorboard"] if _has("tensorboard") else [])  # the others are not affected


def _has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.slow
def test_train_log_mlflow_without_the_package_exits_2_before_any_work(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "train", "--dataset", "digits", "--iterations", "2",
         "--log", "mlflow", "--quiet", "--out", str(run)], capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert_clean_error(proc, "--log mlflow needs mlflow-skinny", "pip install 'resnets[mlflow]'")
    assert not (run / "config.json").exists()


@pytest.mark.slow
def test_a_resumed_run_holds_each_metrics_row_once(tmp_path: Path) -> None:
    for name in ("mlflow", "sqlalchemy", "alembic"):
        pytest.importorskip(name, reason="the mlflow extra is not installed (pip install 'resnets[mlflow]')")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    cfg = TrainConfig(
        model="resnet20", dataset="digits", train_subset=256, batch_size=32, iterations=8, eval_every=4,
        log_every=1, checkpoint_every=2, precision="fp32", channels_last=False, compile=False, log=["mlflow"],
        out=str(out),
    )  # fmt: skip
    train(cfg, progress=False, until=6)
    # As if killed after logging step 6 but before its checkpoint: the run resumes from step 4, so
    # metrics.jsonl drops the rows of steps 5 and 6 and the MLflow run must not keep them twice.
    newest = list_checkpoints(out)[0]
    assert int(newest.stem.split("-")[1]) == 6
    newest.unlink()
    result = train(cfg, resume=True, progress=False)
    assert result.steps == 8
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))

    client = MlflowClient(tracking_uri=mlflow_uri(out))
    (experiment,) = [e for e in client.search_experiments() if e.name == "resnets"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model"] == "resnet20" and run.data.params["log"] == '["mlflow"]'
    assert json.loads(run.data.params["iterations"]) == 8
    for key in ("train_loss", "train_error", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 9)), key
        by_step = {m.step: m.value for m in history}
        assert all(by_step[r["step"]] == pytest.approx(r[key]) for r in rows), key
    tested = client.get_metric_history(run.info.run_id, "test_error")
    assert sorted(m.step for m in tested) == [4, 8]
