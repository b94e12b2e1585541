"""The remedies study's report: table by group, verdict within the seed spread, figures."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..experiments.remedies import GROUPS, ArmResult, RemediesConfig
from ..io import atomic_write_text
from .page import html_page, html_table, markdown_table, sgd_recipe
from .remedy_figures import remedy_figures

# A difference counts only when larger than this and than twice the seeds' spread.
MARGIN = 0.01

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


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one seed); NaN (diverged) when any seed diverged."""
    if any(math.isnan(v) for v in values):
        return math.nan, 0.0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def by_arm(results: Sequence[ArmResult], depth: int) -> dict[str, list[ArmResult]]:
    """Results at one depth, grouped by arm in the study's order."""
    out: dict[str, list[ArmResult]] = {}
    for r in results:
        if r.depth == depth:
            out.setdefault(r.arm, []).append(r)
    return out


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
                train_m, train_s = _stats([r.train_error for r in rs])
                test_m, test_s = _stats([r.test_error for r in rs])
                secs = statistics.fmean(r.seconds for r in rs)
                rows.append([name, str(depth), _pct(train_m, train_s, len(rs)), _pct(test_m, test_s, len(rs)),
                             f"{secs:.0f} s", rs[0].what])  # fmt: skip
                diverged = math.isnan(train_m)
                classes.append("failed" if diverged else "residual" if rs[0].residual else "plain")
    return header, rows, classes


def verdict(results: Sequence[ArmResult]) -> list[str]:
    """What the numbers say at the deepest depth, claiming only differences beyond the seed spread."""
    depth = max(r.depth for r in results)
    arms = by_arm(results, depth)
    stats = {name: _stats([r.train_error for r in rs]) for name, rs in arms.items()}
    lines = []
    plain, resnet = stats.get("plain"), stats.get("resnet")
    if plain and resnet and not math.isnan(plain[0]) and not math.isnan(resnet[0]):
        gap = plain[0] - resnet[0]
        lines.append(
            f"**The gap at depth {depth}:** the plain net ends at {100 * plain[0]:.2f}% training error, "
            f"the residual net at {100 * resnet[0]:.2f}% ({100 * gap:+.1f} points for the plain net)."
        )
    failed = [name for name, (mean, _) in stats.items() if math.isnan(mean)]
    if not plain or math.isnan(plain[0]):
        lines.append("No trained plain net to compare with: the verdict measures each arm against it.")
        if failed:
            lines.append("**Did not train** (loss became NaN): " + ", ".join(failed) + ".")
        return lines
    closes, helps, nothing, worse = [], [], [], []
    for name, (mean, spread) in stats.items():
        if name in ("plain", "resnet") or math.isnan(mean):
            continue
        margin = max(MARGIN, 2 * max(spread, plain[1]))
        near = resnet and not math.isnan(resnet[0])
        if near and mean <= resnet[0] + max(MARGIN, 2 * max(spread, resnet[1])):
            closes.append(f"{name} {100 * mean:.2f}%")
        elif mean < plain[0] - margin:
            helps.append(f"{name} {100 * mean:.2f}%")
        elif mean > plain[0] + margin:
            worse.append(f"{name} {100 * mean:.2f}%")
        else:
            nothing.append(f"{name} {100 * mean:.2f}%")
    if closes:
        lines.append("**Close the gap** (within the margin of the residual net): " + ", ".join(closes) + ".")
    if helps:
        lines.append(
            "**Help, but leave a gap** (better than the plain net beyond the margin): "
            + ", ".join(helps)
            + "."
        )
    if nothing:
        lines.append("**No effect beyond the margin**: " + ", ".join(nothing) + ".")
    if worse:
        lines.append("**Worse than the plain net**: " + ", ".join(worse) + ".")
    if failed:
        lines.append("**Did not train** (loss became NaN): " + ", ".join(failed) + ".")
    seeds = max(len(rs) for rs in arms.values())
    lines.append(
        f"Margin: {100 * MARGIN:.0f} point or twice the seeds' std, whichever is larger"
        + (
            f" ({seeds} seeds)."
            if seeds > 1
            else "; one seed, so no spread is known: run --seeds 3 to see it."
        )
    )
    return lines


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
    findings = verdict(results)
    summary: list[dict[str, Any]] = [r.summary() for r in results]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    title = "What a deep plain net gets from other remedies, against identity shortcuts"
    md = [f"# {title}", "", _intro(cfg), ""] + (["```", command, "```", ""] if command else [])
    md += ["## Verdict", ""] + [f"- {line}" for line in findings] + ["", "## Results", ""]
    md += [*markdown_table(header, rows), "", TABLE_NOTE, ""]
    for key, path in figures.items():
        md += [f"## {TITLES[key]}", "", f"![{TITLES[key]}](figures/{path.name})", "", CAPTIONS[key], ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    page = html_page(
        title, [_intro(cfg)], command, findings, html_table(header, rows, classes), TABLE_NOTE,
        [(TITLES[k], p, CAPTIONS[k]) for k, p in figures.items()],
    )  # fmt: skip
    atomic_write_text(out / "report.html", page)
    return {
        "html": out / "report.html",
        "markdown": out / "report.md",
        "summary": out / "summary.json",
        **figures,
    }
