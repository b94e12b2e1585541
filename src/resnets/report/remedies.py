"""The remedies study's report: the table by group, the verdict, the figures, written as one document."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..experiments.remedies import GROUPS, ArmResult, RemediesConfig
from .page import Document, sgd_recipe, write_documents
from .remedies_figures import remedy_figures
from .remedies_verdict import by_arm, seed_stats, verdict

TITLES = {
    "arms": "Training error by arm",
    "depth": "Training error against depth",
    "curves": "Training curves",
    "gradients": "Gradient flow at initialisation",
    "signal": "Signal propagation at initialisation",
}
CAPTIONS = {
    "arms": "Final training error of each arm (the final model on the whole training set, no augmentation); "
    "bars: mean over seeds, ticks: each seed. Shaded band: the plain net; blue line: the residual net.",
    "depth": "Final training error of each arm at each depth studied.",
    "curves": "Training error (running average over each epoch, augmented) of every arm, by group; "
    "the plain (orange) and residual (blue) nets in every panel for reference.",
    "gradients": "Norm of the loss gradient of every conv/fc weight at initialisation, input to output, "
    "on one fixed batch (seed 0, deepest depth).",
    "signal": "Average channel variance of each block's output at initialisation (seed 0, deepest depth).",
}
TABLE_NOTE = "Train error: the final model on the whole training set, no augmentation. ± : std over seeds."


def _pct(mean: float, spread: float, seeds: int) -> str:
    if math.isnan(mean):
        return "diverged"
    return f"{100 * mean:.2f}%" + (f" ± {100 * spread:.2f}" if seeds > 1 else "")


def table(results: Sequence[ArmResult]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and row classes: one row per arm and depth, under a row per group."""
    header = ["arm", "depth", "train error", "test error", "time", "what it is"]
    rows: list[list[str]] = []
    classes: list[str] = []
    for depth in sorted({r.depth for r in results}):
        arms = by_arm(results, depth)
        for group in GROUPS:
            members = [(name, rs) for name, rs in arms.items() if rs[0].group == group]
            if not members:
                continue
            rows.append([group, "", "", "", "", ""])
            classes.append("group")
            for name, rs in members:
                train_m, train_s = seed_stats([r.train_error for r in rs])
                test_m, test_s = seed_stats([r.test_error for r in rs])
                secs = statistics.fmean(r.seconds for r in rs)
                rows.append([name, str(depth), _pct(train_m, train_s, len(rs)), _pct(test_m, test_s, len(rs)),
                             f"{secs:.0f} s", rs[0].what])  # fmt: skip
                diverged = math.isnan(train_m)
                classes.append("failed" if diverged else "residual" if rs[0].residual else "plain")
    return header, rows, classes


def _intro(cfg: RemediesConfig) -> str:
    return (
        f"Depth {', '.join(map(str, cfg.depths))}; {sgd_recipe(cfg)}; {cfg.seeds} seed(s): one recipe for "
        "every arm. Each arm changes one thing of the plain net (or of the residual net, for the units "
        "without BN)."
    )


def write_remedies_report(
    results: list[ArmResult], cfg: RemediesConfig, command: str = ""
) -> dict[str, Path]:
    """figures/, report.md, report.html and summary.json in the study folder."""
    out = Path(cfg.out)
    figures = remedy_figures(results, out / "figures")
    header, rows, classes = table(results)
    doc = Document(
        title="What a deep plain net gets from other remedies, against identity shortcuts",
        intro=[_intro(cfg)], command=command, findings=verdict(results), header=header, rows=rows,
        classes=classes, table_note=TABLE_NOTE, figures=figures, titles=TITLES, captions=CAPTIONS,
    )  # fmt: skip
    return write_documents(out, doc, [r.summary() for r in results])
