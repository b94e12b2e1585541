"""The degradation study's report: the Table-6-style results, the verdict, the figures, as one document."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from ..experiments.degradation import ModelResult, StudyConfig, run_folder
from ..experiments.lesion import LesionResult, lesion_verdict
from ..training.recipes import RECIPES
from .degradation_figures import all_figures
from .degradation_verdict import Runs, by_model, diverged_note, finished, first_seed, spread, verdict
from .page import Document, Table, sgd_recipe, write_documents
from .paper_cifar import (
    FIGURE6_CAPTION,
    FIGURE6_TITLE,
    PAPER_TABLE6,
    TABLE6_NOTE,
    TABLE6_TITLE,
    Curve,
    figure6,
    is_paper_study,
    recipe_changes,
    table6,
)

# He et al. 2015, Table 6: CIFAR-10 test error (%) of the residual nets.
PAPER_CIFAR10 = {depth: error for depth, (_, error) in PAPER_TABLE6.items()}

TITLE = "Plain vs residual: the degradation study"
CAPTIONS = {
    "figure6": FIGURE6_CAPTION,
    "errors": "Training (dashed, running average over each epoch, augmented) and test (solid) error, "
    "first seed.",
    "final": "Final training error (whole training set, no augmentation) and test error by depth: each dot "
    "is one seed, the line joins the means over the seeds that finished (a diverged seed is left out).",
    "gradients": "Norm of the loss gradient of every conv/fc weight, input to output, on one fixed batch "
    "(first seed).",
    "responses": "Std of each 3×3 layer's response on a test batch, after BN and before ReLU/addition "
    "(first seed).",
    "signal": "Average channel variance of each block's output (and of the residual branch) at "
    "initialisation (first seed).",
    "lesion": "Test error of the deepest nets with one block deleted (the residual net keeps the block's "
    "shortcut; a plain block passes its input on, where the shape allows), and with k random blocks deleted.",
}
TABLE_NOTE = (
    "Train error: the final model on the whole training set, no augmentation. Errors: mean ± sample "
    "standard deviation over the seeds that finished; train time: their mean. Seeds: finished / trained; "
    "a diverged seed is named and left out of the means."
)
TITLES = {"figure6": FIGURE6_TITLE, "errors": "Error curves", "final": "Final error by depth",
          "gradients": "Gradient flow", "responses": "Layer responses", "signal": "Signal propagation",
          "lesion": "Lesion study (Veit et al. 2016)"}  # fmt: skip


def table_rows(results: list[ModelResult], dataset: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table-6-style results table: one row per model, over its seeds."""
    header = ["model", "depth", "seeds", "params", "train error", "test error", "train time"]
    if dataset == "cifar10":
        header.append("paper test error (CIFAR-10)")
    return header, [_row(runs, dataset) for runs in by_model(results)]


def _row(runs: Runs, dataset: str) -> list[str]:
    r, done = runs[0], finished(runs)
    seconds = statistics.fmean(x.seconds for x in done or runs)
    row = [r.model, str(r.depth), seeds_cell(runs), f"{r.params / 1e6:.2f}M", _errors(runs, "train_error"),
           _errors(runs, "test_error"), f"{seconds:.0f} s"]  # fmt: skip
    if dataset == "cifar10":
        paper = PAPER_CIFAR10.get(r.depth) if r.residual else None
        row.append(f"{paper:.2f}%" if paper else "—")
    return row


def seeds_cell(runs: Runs) -> str:
    """Seeds finished / trained, naming any that diverged ("1/2 (1 of 2 diverged, seed 1 at step 40)")."""
    note = diverged_note(runs)
    return f"{len(finished(runs))}/{len(runs)}" + (f" ({note})" if note else "")


def _errors(runs: Runs, key: str) -> str:
    done = finished(runs)
    return spread([getattr(r, key) for r in done]) if done else error_cell(math.nan, runs[0].diverged)


def error_cell(error: float, diverged: str | None) -> str:
    """An error as a table cell; a diverged run says where it stopped."""
    if diverged:
        step = re.search(r"at step (\d+)", diverged)
        return f"diverged (step {step.group(1)})" if step else "diverged"
    return f"{100 * error:.2f}%"


def _recipe(cfg: StudyConfig) -> str:
    seeds = cfg.seed_list()
    named = ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds))
    return (
        f"{sgd_recipe(cfg)}, {named}; the same recipe for every model{_named_recipe(cfg)}. Shortcuts: "
        "option A (parameter-free), so each plain net has exactly its residual twin's parameters."
    )


def _named_recipe(cfg: StudyConfig) -> str:
    """What a named recipe adds to the runs, and what the study changed of it (for the intro)."""
    if cfg.recipe is None:
        return ""
    run, fields = cfg.run_config("resnet20"), {f.name for f in dataclasses.fields(StudyConfig)}
    extra = [f"{k} {getattr(run, k)}" for k in RECIPES[cfg.recipe] if k not in fields and k != "model"]
    if run.warmup_steps is None and run.schedule == "paper":
        extra.append("the paper's 400-step warm-up at lr/10 for depth >= 110")
    changed = recipe_changes(cfg)
    said = f", from the recipe `{cfg.recipe}`" + (f" ({', '.join(extra)})" if extra else "")
    return said + (f"; changed from the recipe: {', '.join(changed)}" if changed else "")


def _checkpointing(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "config.json").read_text())["resolved"].get("checkpointing", {})
    except (OSError, ValueError, KeyError):
        return {}


def _checkpointing_note(results: list[ModelResult], out: Path) -> str:
    """Which models checkpointed their activations by themselves (too big for memory otherwise)."""
    auto: dict[str, str] = {}
    for r in results:
        info = _checkpointing(run_folder(out, r.model, r.seed))
        if info.get("auto") and r.model not in auto:  # named once: its seeds share one activation size
            auto[r.model] = f"{r.model} ({info['activation_gib']:.1f} GiB of activations estimated)"
    if not auto:
        return ""
    return (
        "Activation checkpointing was turned on by itself for " + "; ".join(auto.values()) + ": the same "
        "training, recomputing each segment of blocks in the backward pass instead of keeping it."
    )


def write_report(
    results: list[ModelResult], cfg: StudyConfig, command: str = "", lesions: list[LesionResult] | None = None
) -> dict[str, Path]:
    """Write figures/, report.md, report.html and summary.json into the study folder."""
    out = Path(cfg.out)
    figures = all_figures(results, out / "figures", lesions)
    header, rows = table_rows(results, cfg.dataset)
    more = []
    if is_paper_study(cfg):  # the paper's Table 6 and Figure 6 beside ours
        more.append(Table(TABLE6_TITLE, *_table6(results), note=TABLE6_NOTE))
        curves = [Curve(r.model, r.depth, r.residual, r.curves) for r in first_seed(results)]
        total = cfg.run_config("resnet20").iterations
        figures = {"figure6": figure6(curves, out / "figures" / "figure6.png", total), **figures}
    doc = Document(
        title=TITLE, intro=[_recipe(cfg), _checkpointing_note(results, out)], command=command,
        findings=verdict(results) + lesion_verdict(lesions or []), header=header, rows=rows,
        classes=["residual" if g[0].residual else "plain" for g in by_model(results)], table_note=TABLE_NOTE,
        figures=figures, titles=TITLES, captions=CAPTIONS, page_title=f"{TITLE} ({cfg.dataset})",
        more_tables=more,
    )  # fmt: skip
    return write_documents(out, doc, [r.summary() for r in results])


def _table6(results: list[ModelResult]) -> tuple[list[str], list[list[str]], list[str]]:
    """The Table 6 block of the residual nets: header, rows and row styles."""
    runs = [g for g in by_model(results) if g[0].residual]
    header, rows = table6([(g[0].depth, g[0].params, [r.test_error for r in finished(g)]) for g in runs])
    return header, rows, ["residual"] * len(rows)
