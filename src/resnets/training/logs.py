"""Where a run's numbers go: metrics.jsonl and gradients.jsonl always, TensorBoard on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from .rundir import GRADIENTS_FILE, METRICS_FILE, append_line, rewrite_log

TENSORBOARD_DIR = "tensorboard"


class RunLogs:
    """Appends records to the run's JSONL logs (rank 0 only) and mirrors metrics to TensorBoard."""

    def __init__(self, run_dir: Path, step: int, enabled: bool, loggers: list[str]) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.board = None
        if not enabled:
            return
        for log in (METRICS_FILE, GRADIENTS_FILE):  # a resumed run keeps the lines up to its step
            rewrite_log(run_dir / log, step)
        if "tensorboard" in loggers:
            self.board = _summary_writer(run_dir / TENSORBOARD_DIR, step)

    def metrics(self, record: dict[str, Any]) -> None:
        """One evaluation's record."""
        if not self.enabled:
            return
        append_line(self.run_dir / METRICS_FILE, record)
        if self.board is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    self.board.add_scalar(key, value, record["step"])
            self.board.flush()

    def gradients(self, step: int, names: list[str], norms: list[float]) -> None:
        """Per-layer gradient norms of one step."""
        if self.enabled:
            append_line(self.run_dir / GRADIENTS_FILE, {"step": step, "layers": names, "norms": norms})

    def close(self) -> None:
        """Flush and close TensorBoard's event file."""
        if self.board is not None:
            self.board.close()
            self.board = None


def check_loggers(loggers: list[str]) -> None:
    """Fail before any work when a requested logger's package is missing."""
    if "tensorboard" in loggers:
        _tensorboard()


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
