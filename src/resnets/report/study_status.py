"""Where a long depth study stands, read from its folder alone: each run done, at step k, or not started.

A study trained piecewise (a GPU lent for minutes at a time, `--resume` between) needs a page that
says how far it got without training or loading anything: this reads each run's metrics.jsonl,
config.json, checkpoint names and diagnostics.json, and the newest checkpoint only where it is
later than the last metrics row (a run stopped mid-epoch), for its training time. With the
`paper-cifar` recipe on CIFAR-10 the page also sets the paper's Table 6 and Figure 6 beside ours,
from the runs finished so far.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..experiments.degradation import STUDY_FILE, StudyConfig, run_folder
from ..experiments.measure import DIAGNOSTICS_FILE
from ..io import atomic_write_text
from ..training.checkpoint import WEIGHTS_FILE, list_checkpoints, load_checkpoint
from ..training.rundir import CONFIG_FILE, METRICS_FILE, read_resolved
from .degradation import _recipe
from .page import markdown_table
from .paper_cifar import (
    FIGURE6_CAPTION,
    FIGURE6_TITLE,
    TABLE6_NOTE,
    TABLE6_TITLE,
    Curve,
    figure6,
    is_paper_study,
    table6,
)

NOT_STARTED, TRAINING, DONE, DIVERGED = "not started", "training", "done", "diverged"
STEP_IN_NAME = re.compile(r"step-(\d+)\.pt$")


@dataclass
class RunStatus:
    """One (model, seed) of a study: how far its training got and what it measured."""

    model: str
    depth: int
    residual: bool
    seed: int
    state: str = NOT_STARTED
    step: int = 0  # steps trained: the newest checkpoint's or metrics row's, whichever is later
    total: int | None = None  # the run's planned steps (config.json), once it has started
    test_error: float | None = None  # done: the final weights' (diagnostics.json); else the last evaluation's
    error_step: int | None = None  # the step of that last evaluation (a run still training)
    seconds: float = 0.0  # training-step time so far (metrics.jsonl "time", or the checkpoint's)
    params: int | None = None
    diverged: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    trained_on: str | None = None  # the machine it started on, its precision, compiled or eager

    def speed_cell(self) -> str:
        """Training images per second between its last two evaluations (the latest metrics row), or a dash."""
        rate = self.rows[-1].get("images_per_s") if self.rows else None
        return f"{rate:,.0f}" if isinstance(rate, int | float) and math.isfinite(rate) else "—"

    def trained_on_cell(self) -> str:
        """Where and how the run started (a resume keeps precision and compile), or a dash before then."""
        return self.trained_on or "—"

    def state_cell(self) -> str:
        """The state as the page says it: done, at step k of N (p %), diverged at step k, not started."""
        if self.state == TRAINING:
            if not self.total:
                return f"at step {self.step:,}"
            return f"at step {self.step:,} of {self.total:,} ({100 * self.step / self.total:.0f}%)"
        if self.state == DIVERGED:
            where = re.search(r"at step (\d+)", self.diverged or "")
            return f"diverged at step {int(where.group(1)):,}" if where else "diverged"
        return self.state

    def error_cell(self) -> str:
        """The final test error of a finished run, the latest one (and its step) of a run in training."""
        if self.test_error is None or not math.isfinite(self.test_error):
            return "—"
        if self.state == DONE:
            return f"{100 * self.test_error:.2f}%"
        return f"{100 * self.test_error:.2f}% (step {self.error_step:,})"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The readable rows of a JSONL file (a kill mid-write may leave a cut last line: skipped)."""
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_status(run_dir: Path, model: str, depth: int, residual: bool, seed: int) -> RunStatus:
    """The status of one run folder (which need not exist)."""
    status = RunStatus(model, depth, residual, seed)
    rows = _jsonl(run_dir / METRICS_FILE)
    checkpoints = list_checkpoints(run_dir)
    if not rows and not checkpoints and not (run_dir / CONFIG_FILE).exists():
        return status
    status.rows = rows
    resolved = read_resolved(run_dir) or {}
    status.total = resolved.get("total_steps")
    status.trained_on = _trained_on(resolved)
    last = rows[-1] if rows else {}
    status.step, status.seconds = int(last.get("step", 0)), float(last.get("time", 0.0))
    newest = int(STEP_IN_NAME.search(checkpoints[0].name).group(1)) if checkpoints else 0  # type: ignore[union-attr]
    if newest > status.step:  # stopped between evaluations: the checkpoint knows the time spent
        status.step = newest
        with contextlib.suppress(ResnetsError, KeyError, TypeError, ValueError):  # unreadable: metrics' time
            status.seconds = max(status.seconds, float(load_checkpoint(checkpoints[0])["elapsed"]))
    evals = [r for r in rows if isinstance(r.get("test_error"), int | float)]
    if evals:
        status.test_error, status.error_step = float(evals[-1]["test_error"]), int(evals[-1]["step"])
    diagnostics = _json(run_dir / DIAGNOSTICS_FILE)
    status.params = diagnostics.get("params")
    if diagnostics.get("diverged"):
        status.state, status.diverged, status.test_error = DIVERGED, str(diagnostics["diverged"]), None
    elif (run_dir / WEIGHTS_FILE).exists():
        status.state = DONE
        if isinstance(diagnostics.get("test_error"), int | float):  # the study's measurement of the weights
            status.test_error = float(diagnostics["test_error"])
    else:
        status.state = TRAINING
    return status


def _trained_on(resolved: dict[str, Any]) -> str | None:
    """Where and how a run trains, e.g. "NVIDIA H200, bf16, compiled", from its resolved settings."""
    key = (resolved.get("fast_path") or {}).get("key")
    machine = resolved.get("machine") or (key.split(" | ")[0] if isinstance(key, str) else None)
    if not machine and not resolved.get("precision"):
        return None
    parts = [machine or str(resolved.get("device", "?")), str(resolved.get("precision", "?"))]
    mode = "compiled + CUDA graphs" if resolved.get("cuda_graphs") else "compiled"
    return ", ".join([*parts, mode if resolved.get("compile") else "eager"])


def read_study(out: Path) -> StudyConfig | None:
    """The study's settings as its folder records them (study.json), or None before it started."""
    saved = _json(out / STUDY_FILE)
    if not saved:
        return None
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    return StudyConfig(**{k: v for k, v in saved.items() if k in known} | {"out": str(out)})


def study_status(cfg: StudyConfig) -> list[RunStatus]:
    """Every (model, seed) the study plans, seed by seed, each with its status."""
    out = Path(cfg.out)
    return [
        run_status(run_folder(out, name, seed), name, depth, residual, seed)
        for seed in cfg.seed_list()
        for name, depth, residual in cfg.model_names()
    ]


def duration(seconds: float) -> str:
    """Seconds as "1 h 02 min", "8 min 26 s" or "42 s"."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _params(status: RunStatus) -> int:
    """A net's parameters: as its run measured them, else counted on a model built without memory."""
    if status.params:
        return int(status.params)
    import torch

    from ..models import count_params, create_model

    with torch.device("meta"):
        return count_params(create_model(status.model))


def _table6(statuses: list[RunStatus]) -> tuple[list[str], list[list[str]]]:
    """The Table 6 block from the finished residual runs; every planned depth has a row."""
    by_depth: dict[int, tuple[int, list[float]]] = {}
    for s in statuses:
        if not s.residual:
            continue
        if s.depth not in by_depth:
            by_depth[s.depth] = (_params(s), [])
        errors = by_depth[s.depth][1]
        if s.state == DONE and s.test_error is not None:
            errors.append(s.test_error)
    return table6([(depth, params, errors) for depth, (params, errors) in by_depth.items()])


def status_markdown(cfg: StudyConfig, statuses: list[RunStatus], figure: Path | None, written: str) -> str:
    """The status page as Markdown; ``figure`` is linked as figures/<name> beside the page."""
    paper = is_paper_study(cfg)
    counts = {state: sum(s.state == state for s in statuses) for state in (DONE, TRAINING, DIVERGED)}
    seconds = sum(s.seconds for s in statuses)
    title = "He et al. 2015 on CIFAR-10 (Table 6, Figure 6): status" if paper else "Depth study: status"
    summary = (
        f"**{counts[DONE]} of {len(statuses)} runs done**, {counts[TRAINING]} under way, "
        f"{len(statuses) - sum(counts.values())} not started"
        + (f", {counts[DIVERGED]} diverged" if counts[DIVERGED] else "")
        + f". Device time so far: **{duration(seconds)}** ({seconds:,.0f} s), the sum over the runs of "
        "their training-step time (metrics.jsonl `time`, or the newest checkpoint's where that is later); "
        "evaluations, measurements and work lost to a kill after the last checkpoint are not counted."
    )
    md = [f"# {title}", "", summary, "", f"Study folder `{cfg.out}`; {_recipe(cfg)}", ""]
    md += [f"Written {written}.", ""]
    rows = [
        [s.model, str(s.seed), s.state_cell(), s.error_cell(), duration(s.seconds) if s.seconds else "—",
         s.speed_cell(), s.trained_on_cell()]
        for s in statuses
    ]  # fmt: skip
    header = ["model", "seed", "state", "test error", "device time", "img/s", "started on"]
    md += ["## Runs", "", *markdown_table(header, rows), ""]
    md += [
        "Test error: a finished run's final weights on the whole test set; a run in training, its latest "
        "evaluation and the step it was made at.",
        "",
    ]
    if paper:
        header, table = _table6(statuses)
        md += [f"## {TABLE6_TITLE}", "", *markdown_table(header, table), "", TABLE6_NOTE, ""]
    if figure is not None:
        md += [f"## {FIGURE6_TITLE}", "", f"![{FIGURE6_TITLE}](figures/{figure.name})", ""]
        md += [FIGURE6_CAPTION, ""]
    return "\n".join(md)


def write_status(cfg: StudyConfig, page: Path) -> Path:
    """Write the status page of the study ``cfg`` names (and, for the paper's study, its Figure 6)."""
    statuses = study_status(cfg)
    figure = None
    first = [s for s in statuses if s.seed == cfg.seed and s.rows]
    if is_paper_study(cfg) and first:
        curves = [Curve(s.model, s.depth, s.residual, s.rows) for s in first]
        total = cfg.run_config("resnet20").iterations
        figure = figure6(curves, page.parent / "figures" / "figure6.png", total)
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    atomic_write_text(page, status_markdown(cfg, statuses, figure, written))
    return page
