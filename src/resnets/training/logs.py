"""Where a run's numbers go: metrics.jsonl and gradients.jsonl always, TensorBoard and MLflow on request."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from .errors import Interrupted
from .rundir import CONFIG_FILE, GRADIENTS_FILE, METRICS_FILE, append_line, rewrite_log

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlflow"  # the run's own MLflow store: mlflow.db (SQLite) and artifacts/
MLFLOW_EXPERIMENT = "resnets"
MLFLOW_BATCH, MLFLOW_PARAMS = 1000, 100  # metrics and params per log_batch call: MLflow's limits


class RunLogs:
    """Appends records to the run's JSONL logs (rank 0 only) and mirrors metrics to TensorBoard and MLflow."""

    def __init__(self, run_dir: Path, step: int, enabled: bool, loggers: list[str]) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.board = None
        self.mlflow: MlflowRun | None = None
        if not enabled:
            return
        for log in (METRICS_FILE, GRADIENTS_FILE):  # a resumed run keeps the lines up to its step
            rewrite_log(run_dir / log, step)
        if "tensorboard" in loggers:
            self.board = _summary_writer(run_dir / TENSORBOARD_DIR, step)
        if "mlflow" in loggers:
            self.mlflow = MlflowRun(run_dir)

    def metrics(self, record: dict[str, Any]) -> None:
        """One evaluation's record."""
        if not self.enabled:
            return
        append_line(self.run_dir / METRICS_FILE, record)
        if self.board is not None:
            for key, value in _scalars(record).items():
                self.board.add_scalar(key, value, record["step"])
            self.board.flush()
        if self.mlflow is not None:
            self.mlflow.log([record])

    def gradients(self, step: int, names: list[str], norms: list[float]) -> None:
        """Per-layer gradient norms of one step."""
        if self.enabled:
            append_line(self.run_dir / GRADIENTS_FILE, {"step": step, "layers": names, "norms": norms})

    def close(self) -> None:
        """Flush and close TensorBoard's event file; end the MLflow run."""
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.mlflow is not None:
            self.mlflow.close()
            self.mlflow = None


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics row's numbers, less its step and epoch (the x axes)."""
    return {
        k: v for k, v in record.items()
        if k not in ("step", "epoch") and isinstance(v, int | float) and not isinstance(v, bool)
    }  # fmt: skip


def check_loggers(loggers: list[str]) -> None:
    """Fail before any work when a requested logger's package is missing."""
    if "tensorboard" in loggers:
        _tensorboard()
    if "mlflow" in loggers:
        _mlflow()


def _tensorboard():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ResnetsError(
            "--log tensorboard needs the tensorboard package: pip install 'resnets[tensorboard]'"
        ) from None
    return SummaryWriter


def _summary_writer(folder: Path, step: int):
    writer = _tensorboard()
    # purge_step drops what a killed run logged after its last checkpoint (step), as rewrite_log does.
    return writer(str(folder), purge_step=step + 1 if step else None)


def _mlflow():
    try:
        import alembic  # noqa: F401  (MLflow's SQLite store: its schema migrations)
        import sqlalchemy  # noqa: F401
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ResnetsError(
            "--log mlflow needs mlflow-skinny, sqlalchemy and alembic: pip install 'resnets[mlflow]'"
        ) from None
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its "Creating ... tables" lines
    return MlflowClient, Metric, Param


def mlflow_uri(run_dir: Path) -> str:
    """The tracking URI of a run's MLflow store: SQLite, in RUN/mlflow/mlflow.db."""
    return f"sqlite:///{(run_dir / MLFLOW_DIR / 'mlflow.db').resolve()}"


class MlflowRun:
    """The run in an MLflow store of its own under the run directory: its settings and metrics.jsonl's rows.

    The store is MLflow's SQLite one (MLflow 3 refuses its file store unless told otherwise). MLflow can
    neither delete a metric row nor change a param, while a resumed run drops the rows logged after its
    checkpoint (rewrite_log) and may change its length, so a resumed run does not append to the MLflow
    run it started: that one is deleted (`mlflow gc` removes it for good) and a new one gets the
    settings and the rows metrics.jsonl kept, then the rows to come. The active run holds each row once.
    """

    def __init__(self, run_dir: Path) -> None:
        client_type, self._metric, param = _mlflow()
        folder = run_dir / MLFLOW_DIR
        folder.mkdir(exist_ok=True)
        self.client = client_type(tracking_uri=mlflow_uri(run_dir))
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is None:
            artifacts = (folder / "artifacts").resolve().as_uri()  # not MLflow's default, ./mlruns of the cwd
            experiment_id = self.client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
            for old in self.client.search_runs([experiment_id]):  # active runs: the one a resume replaces
                self.client.delete_run(old.info.run_id)
        tags = {"resnets.run_dir": str(run_dir.resolve())}
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
        config = run_dir / CONFIG_FILE
        if config.exists():
            settings = {k: v for k, v in json.loads(config.read_text()).items() if k != "resolved"}
            params = [param(k, v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                      for k, v in settings.items()]  # fmt: skip
            for start in range(0, len(params), MLFLOW_PARAMS):
                self.client.log_batch(self.run_id, params=params[start : start + MLFLOW_PARAMS])
            self.client.log_artifact(self.run_id, str(config))  # the resolved record too, as a file
        metrics = run_dir / METRICS_FILE
        if metrics.exists():
            self.log([json.loads(line) for line in metrics.read_text().splitlines() if line.strip()])

    def log(self, records: list[dict[str, Any]]) -> None:
        """Metrics rows, each number at the row's step."""
        now = int(time.time() * 1000)
        rows = [self._metric(k, float(v), now, int(r["step"]))
                for r in records for k, v in _scalars(r).items()]  # fmt: skip
        for start in range(0, len(rows), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=rows[start : start + MLFLOW_BATCH])

    def close(self) -> None:
        """End the run: FINISHED, or KILLED (Ctrl-C) and FAILED (an error) when closed by an exception."""
        error = sys.exc_info()[1]  # in the trainer's `finally`, the exception that is ending the loop
        status = "FINISHED" if error is None else "FAILED"
        if isinstance(error, Interrupted | KeyboardInterrupt):
            status = "KILLED"
        self.client.set_terminated(self.run_id, status)
