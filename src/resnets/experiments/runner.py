"""The loop every study runs: one writer per folder, its recipe kept on resume, each run in turn with an ETA.

A study folder holds a settings file (the study's config as JSON) beside one run folder per
job. A re-run with the same recipe loads what is finished and trains the rest; a re-run with
another recipe is refused, naming the setting.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..data import Dataset, load_dataset
from ..errors import ResnetsError
from ..io import atomic_write_text, exclusive
from ..training import TrainConfig
from ..training.device import resolve_device
from .measure import curves, finished, train_and_measure

R = TypeVar("R")
Log = Callable[[str], None]

# Settings every model of a study shares; a re-run may add depths or move devices, not change these.
RECIPE_KEYS = (
    "dataset", "recipe", "family", "epochs", "iterations", "batch_size", "lr", "schedule", "weight_decay",
    "precision", "channels_last", "train_subset", "seed",
)  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """One trained and measured run: its diagnostics, its metrics rows and its training time."""

    diagnostics: dict[str, Any]
    curves: list[dict[str, Any]]
    seconds: float


@dataclass(frozen=True)
class Job(Generic[R]):
    """One run of a study: its name in the log, its recipe, how its result is made, its share of the time."""

    label: str
    recipe: TrainConfig
    result: Callable[[Measured], R]
    cost: float = 1.0


@dataclass(frozen=True)
class StudyKind:
    """What sets one kind of study apart in its folder: the writer's name, settings file and ETA."""

    what: str  # a second writer is told the folder "is being written by another {what}"
    settings_file: str
    eta_label: str
    # The depth study counts loaded runs as done in its ETA; the remedies study counts trained ones only.
    eta_counts_loaded: bool


def say(text: str) -> None:
    """The studies' default log: one line to stdout, at once."""
    print(text, flush=True)


def check_study(path: Path, cfg: Any) -> None:
    """A study folder re-run with other recipe settings is refused, naming the setting."""
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = type(e).__name__
        raise ResnetsError(f"{path} is damaged ({why}); remove it or use another --out") from None
    if not isinstance(saved, dict):
        raise ResnetsError(f"{path} is damaged (not a JSON object); remove it or use another --out")
    for key, value in dataclasses.asdict(cfg).items():
        if key in RECIPE_KEYS and key in saved and saved[key] != value:
            flag = f"--{key.replace('_', '-')}"
            raise ResnetsError(
                f"{f'no {flag}' if value is None else f'{flag} {value}'} differs from the study in "
                f"{path.parent} ({saved[key]!r}); a resumed study keeps its recipe: use another --out"
            )


def run_jobs(
    cfg: Any, kind: StudyKind, plan: Callable[[], Sequence[Job[R]]], progress: bool, log: Log
) -> list[R]:
    """Hold ``cfg.out``, check and save the settings, then train (or load) and measure every job."""
    out = Path(cfg.out)
    with exclusive(out, kind.what):  # the same study started twice: the second stops, naming the first
        check_study(out / kind.settings_file, cfg)
        atomic_write_text(out / kind.settings_file, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        data = load_dataset(cfg.dataset, cfg.data_dir)
        # Planned once the folder is held: a second writer is refused before any model is sized.
        jobs = plan()
        return _run_each(jobs, data, resolve_device(cfg.device), kind, progress, log)


def _run_each(
    jobs: Sequence[Job[R]], data: Dataset, device: Any, kind: StudyKind, progress: bool, log: Log
) -> list[R]:
    eta = _Eta(sum(job.cost for job in jobs), kind)
    results = []
    for i, job in enumerate(jobs, 1):
        run_dir = Path(job.recipe.out)
        loaded = finished(run_dir)
        log(f"[{i}/{len(jobs)}] {job.label}: {'done, loading' if loaded else 'training'}{eta.text()}")
        diagnostics = train_and_measure(job.recipe, data, device, progress)
        rows = curves(run_dir)
        results.append(job.result(Measured(diagnostics, rows, rows[-1]["time"] if rows else 0.0)))
        eta.done(job.cost, loaded)
    return results


class _Eta:
    """Time left in a study: the time so far per unit of cost done, times the cost still to go."""

    def __init__(self, total: float, kind: StudyKind) -> None:
        self.total, self.kind = total, kind
        self.passed = self.counted = 0.0  # cost of the jobs behind us; of those the rate is measured on
        self.start = time.perf_counter()

    def text(self) -> str:
        if not self.counted:
            return ""
        left = (time.perf_counter() - self.start) / self.counted * (self.total - self.passed)
        return f", {self.kind.eta_label} {int(left // 60)}m{int(left % 60):02d}s"

    def done(self, cost: float, loaded: bool) -> None:
        self.passed += cost
        if self.kind.eta_counts_loaded or not loaded:
            self.counted += cost
