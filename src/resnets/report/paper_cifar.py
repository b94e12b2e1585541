"""The paper beside ours: He et al. 2015's Table 6 and Figure 6 for a study trained with `paper-cifar`.

Shown when a depth study runs on CIFAR-10 with the `paper-cifar` recipe (training/recipes.py):
the paper's test error of each ResNet beside our mean over the seeds, and the error curves in
the paper's Figure 6 layout (plain nets left, ResNets right, x in 10^4 iterations, training error
dashed, test error bold, one colour per depth, the y axis cut at 20 % as in the paper).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..experiments.degradation import StudyConfig
from ..training.recipes import RECIPES
from .plotting import plt, save_png

PAPER_RECIPE = "paper-cifar"
# He et al. 2015, Table 6 (CIFAR-10): depth -> (parameters in millions, ResNet test error %).
PAPER_TABLE6 = {20: (0.27, 8.75), 32: (0.46, 7.51), 44: (0.66, 7.17), 56: (0.85, 6.97), 110: (1.7, 6.43),
                1202: (19.4, 7.93)}  # fmt: skip
# ResNet-110's 6.43 is the best of 5 runs; the paper gives their mean and std too ("6.61±0.16").
PAPER_MEAN = {110: (6.61, 0.16, 5)}
PAPER_TOP = 20.0  # Figure 6's y axis: 0-20 % (plain-110, above 60 %, "not displayed")
# One colour per depth, the same in both panels (Okabe-Ito, readable with colour-blindness).
DEPTH_COLORS = {20: "#e69f00", 32: "#56b4e9", 44: "#009e73", 56: "#d55e00", 110: "#000000",
                1202: "#cc79a7"}  # fmt: skip
# What still differs from Sec. 4.2 (the recipe's comment in training/recipes.py says the same).
PAPER_DIFFERENCES = (
    "Differences from the paper's Sec. 4.2 that remain: images are normalised by the per-channel mean "
    "and std, not by subtracting the per-pixel mean; the 400-step warm-up at lr 0.01 (depth >= 110) is "
    "fixed, where the paper's ran until the training error fell below 80 %; He initialisation is by "
    "fan-out (as torchvision's; the paper's reference allows fan-in or fan-out); a run may train in bf16 "
    "autocast (fp32 weights and optimiser) where that measured faster on its machine — each run's "
    'precision is in its config.json (the status page\'s "started on").'
)
TABLE6_TITLE = "He et al. 2015, Table 6, beside ours (CIFAR-10 test error)"
TABLE6_NOTE = (
    "Paper: single runs, except ResNet-110 (6.43 % is the best of 5 runs; their mean is 6.61 ± 0.16 %, "
    "and the difference is taken from that mean). Ours: mean ± sample standard deviation of the final "
    "test error over the seeds that finished (n), the final weights evaluated once on the 10,000 test "
    "images. Difference: ours − paper in percentage points (negative: ours lower). " + PAPER_DIFFERENCES
)
FIGURE6_TITLE = "Figure 6 (He et al. 2015 layout)"
FIGURE6_CAPTION = (
    "Training on CIFAR-10, first seed: dashed lines are the training error (the running average over "
    "each epoch's augmented batches), bold lines the test error; plain nets left, ResNets right. As in "
    "the paper the axis stops at 20 %; a net whose test error ends above it is named in the legend with "
    "its final error."
)


class Curve(NamedTuple):
    """One run's error curves: its model and its metrics.jsonl rows."""

    model: str
    depth: int
    residual: bool
    rows: list[dict[str, Any]]


def is_paper_study(cfg: StudyConfig) -> bool:
    """Whether the study is the paper's CIFAR-10 experiment, so its report sets the paper beside it."""
    return cfg.dataset == "cifar10" and cfg.recipe == PAPER_RECIPE


def recipe_changes(cfg: StudyConfig) -> list[str]:
    """The study's settings that differ from its named recipe ("iterations 400 (the recipe's 64000)")."""
    if cfg.recipe is None:
        return []
    run = cfg.run_config("resnet20")
    changes = []
    for key, value in RECIPES[cfg.recipe].items():
        if key == "model" or getattr(run, key) == value:
            continue
        if key == "iterations" and run.iterations is None:
            changes.append(f"epochs {run.epochs} (the recipe's {value} iterations)")
        else:
            changes.append(f"{key} {getattr(run, key)} (the recipe's {value})")
    if cfg.train_subset:
        changes.append(f"train_subset {cfg.train_subset} (the recipe's: the whole training set)")
    return changes


def paper_name(model: str, depth: int, residual: bool) -> str:
    """The paper's name of a net: ResNet-20, plain-20 (others by their own name)."""
    if model in (f"resnet{depth}", f"plain{depth}"):
        return f"ResNet-{depth}" if residual else f"plain-{depth}"
    return model


def _percent(x: float) -> str:
    return f"{x:.2f}%"


def table6(rows: Sequence[tuple[int, int, Sequence[float]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table 6 block, from (depth, parameters, finished seeds' test errors) per ResNet.

    Test errors are fractions, as the runs record them; the cells are in percent.
    """
    header = ["depth", "params (ours / paper)", "paper: test error", "ours: test error", "ours − paper"]
    out = []
    for depth, params, errors in sorted(rows):
        paper_params, paper_error = PAPER_TABLE6.get(depth, (None, None))
        mean = PAPER_MEAN.get(depth)
        paper = "—" if paper_error is None else _percent(paper_error)
        if mean is not None:
            paper += f" (mean of {mean[2]}: {mean[0]:.2f} ± {mean[1]:.2f}%)"
        ours, diff = "— (n=0)", "—"
        if errors:
            values = [100 * e for e in errors]
            ours = _percent(statistics.fmean(values))
            if len(values) > 1:
                ours = f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}%"
            ours += f" (n={len(values)})"
            reference = mean[0] if mean is not None else paper_error
            if reference is not None:
                diff = f"{statistics.fmean(values) - reference:+.2f}"
        size = f"{params / 1e6:.2f}M / " + ("—" if paper_params is None else f"{paper_params:g}M")
        out.append([str(depth), size, paper, ours, diff])
    return header, out


def _points(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(iterations in 10^4, error in %) of the rows that have ``key``."""
    kept = [r for r in rows if isinstance(r.get(key), int | float) and isinstance(r.get("step"), int | float)]
    return [r["step"] / 1e4 for r in kept], [100 * r[key] for r in kept]


def _color(depth: int, index: int) -> Any:
    return DEPTH_COLORS.get(depth, plt.get_cmap("tab10")(index % 10))


def figure6(curves: Sequence[Curve], path: Path, total_steps: int | None = None) -> Path:
    """The paper's Figure 6 from our curves: plain (left) and ResNet (right) panels, x in 10^4 iterations."""
    finals = [_points(c.rows, "test_error")[1][-1] for c in curves if _points(c.rows, "test_error")[1]]
    # The paper's 0-20 % where any net ends inside it; a short run whose nets all end above it, in full.
    top = PAPER_TOP if any(f <= PAPER_TOP for f in finals) else 100.0
    steps = [x for c in curves for x in _points(c.rows, "train_error")[0]]
    right = (total_steps or 0) / 1e4 or max(steps, default=6.4)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, residual in zip(axes, (False, True), strict=True):
        mine = sorted((c for c in curves if c.residual == residual), key=lambda c: c.depth)
        for i, c in enumerate(mine):
            color, label = _color(c.depth, i), paper_name(c.model, c.depth, c.residual)
            x, y = _points(c.rows, "test_error")
            if y and y[-1] > top:
                label += f" (off the scale: {y[-1]:.1f}% test)"
            ax.plot(*_points(c.rows, "train_error"), "--", color=color, lw=1.0)
            ax.plot(x, y, "-", color=color, lw=2.2, label=label)
        if not mine:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes, color="#888")
        ax.set_title("plain" if not residual else "ResNet")
        ax.set_xlabel("iter. (1e4)")
        ax.set_xlim(0, right)
        ax.grid(alpha=0.3)
        if mine:
            ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylim(0, top)
    axes[0].set_ylabel("error (%)")
    fig.suptitle("CIFAR-10: training (dashed) and test (bold) error, He et al. 2015 Fig. 6 layout")
    return save_png(fig, path)
