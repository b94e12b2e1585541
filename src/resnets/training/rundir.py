"""The files of a run directory: config.json, the JSONL logs, and the guard against overwriting."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..io import atomic_write_text
from .checkpoint import WEIGHTS_FILE, list_checkpoints
from .config import TrainConfig

METRICS_FILE = "metrics.jsonl"
GRADIENTS_FILE = "gradients.jsonl"
CONFIG_FILE = "config.json"


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a finished or resumable run unless resuming it."""
    if not resume and (list_checkpoints(run_dir) or (run_dir / WEIGHTS_FILE).exists()):
        raise ResnetsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def write_config(run_dir: Path, cfg: TrainConfig, resolved: dict[str, Any]) -> None:
    """config.json: every setting, plus what was derived from them under "resolved"."""
    record = json.loads(cfg.to_json()) | {"resolved": resolved}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_resolved(run_dir: Path) -> dict[str, Any] | None:
    """The "resolved" record of a run's config.json, or None where there is none to read."""
    try:
        record = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    resolved = record.get("resolved") if isinstance(record, dict) else None
    return resolved if isinstance(resolved, dict) else None


def last_metrics(run_dir: Path, step: int) -> dict[str, Any]:
    """metrics.jsonl's last record where it is of ``step`` (a finished run's result), else {}."""
    path = run_dir / METRICS_FILE
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()] if path.exists() else []
    try:
        record = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) and record.get("step") == step else {}


def rewrite_log(path: Path, up_to_step: int) -> None:
    """Keep the log lines a resumed run has already produced (a kill may cut a line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= up_to_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and make it durable before the run goes on."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ResnetsError(f"cannot write {path}: {e.strerror or e}; is the disk full?") from None
