"""Matplotlib figures of the remedies study, each written as a PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..experiments.remedies import GROUPS, ArmResult, Search
from .plotting import PLAIN_COLOR, RESIDUAL_COLOR, plt, save_png

GROUP_COLORS = dict(zip(GROUPS, plt.get_cmap("tab10").colors, strict=False))


def _deepest_first_seed(results: Sequence[ArmResult]) -> list[ArmResult]:
    depth = max(r.depth for r in results)
    return [r for r in results if r.depth == depth and r.seed == 0]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan  # NaN when a seed diverged


def arms_figure(results: Sequence[ArmResult], path: Path) -> Path:
    """Horizontal bars: each arm's final training error at the deepest depth, seeds as ticks."""
    depth = max(r.depth for r in results)
    names: list[str] = []
    for r in results:
        if r.depth == depth and r.arm not in names:
            names.append(r.arm)
    fig, ax = plt.subplots(figsize=(9, 0.34 * len(names) + 1.6))
    ref = {n: _mean([r.train_error for r in results if r.arm == n and r.depth == depth]) for n in names}
    if "plain" in ref and not math.isnan(ref["plain"]):
        ax.axvline(100 * ref["plain"], color=PLAIN_COLOR, lw=6, alpha=0.18)
    if "resnet" in ref and not math.isnan(ref["resnet"]):
        ax.axvline(100 * ref["resnet"], color=RESIDUAL_COLOR, lw=1.2)
    top = max([100 * v for v in ref.values() if not math.isnan(v)], default=100)
    for y, name in enumerate(names):
        runs = [r for r in results if r.arm == name and r.depth == depth]
        color = GROUP_COLORS.get(runs[0].group, "grey")
        if math.isnan(ref[name]):
            ax.text(0.5, y, "diverged", va="center", color="#a00", fontsize=8)
            continue
        ax.barh(y, 100 * ref[name], color=color, alpha=0.85)
        ax.plot([100 * r.train_error for r in runs], [y] * len(runs), "|", color="black", ms=9)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, min(100, top * 1.1 + 1))
    ax.set_xlabel(f"final training error (%), depth {depth}")
    present = [g for g in GROUPS if g in {r.group for r in results}]
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLORS[g]) for g in present]
    ax.legend(handles, present, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("Training error by arm (shaded band: plain net; blue line: residual net)")
    return save_png(fig, path)


def depth_figure(results: Sequence[ArmResult], path: Path) -> Path:
    """Each arm's final training error (mean over seeds) against depth."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    depths = sorted({r.depth for r in results})
    for name in dict.fromkeys(r.arm for r in results):
        runs = [r for r in results if r.arm == name]
        at = [[100 * r.train_error for r in runs if r.depth == d] for d in depths]
        ys = [_mean(v) for v in at]
        low = [y - min(v, default=y) for y, v in zip(ys, at, strict=True)]
        high = [max(v, default=y) - y for y, v in zip(ys, at, strict=True)]
        style = {"lw": 2.4, "color": PLAIN_COLOR if name == "plain" else RESIDUAL_COLOR} if name in (
            "plain", "resnet") else {"lw": 1, "color": GROUP_COLORS.get(runs[0].group, "grey")}  # fmt: skip
        ax.errorbar(depths, ys, yerr=[low, high], marker="o", capsize=3, label=name, **style)
    ax.set_xscale("log")
    ax.minorticks_off()  # a log axis labels its minor ticks (3x10^1) between two depths
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("depth")
    ax.set_ylabel("final training error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(
        "Training error against depth, by arm (mean, min to max over seeds; diverged runs leave gaps)"
    )
    return save_png(fig, path)


def curves_figure(results: Sequence[ArmResult], path: Path) -> Path:
    """One panel per group: training error by epoch of its arms' seeds, plain and residual for reference."""
    depth = max(r.depth for r in results)
    runs = [r for r in results if r.depth == depth]
    groups = [
        g for g in GROUPS if any(r.group == g for r in runs) and g not in ("baseline", "identity shortcuts")
    ]
    cols = 3
    rows = max(1, math.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), sharey=True, squeeze=False)
    refs = [r for r in runs if r.arm in ("plain", "resnet")]
    colors = plt.get_cmap("tab10").colors
    for ax, group in zip(axes.flat, groups, strict=False):
        for ref in refs:
            color = PLAIN_COLOR if ref.arm == "plain" else RESIDUAL_COLOR
            ax.plot([c["epoch"] for c in ref.curves], [100 * c["train_error"] for c in ref.curves],
                    color=color, lw=2.2, alpha=0.5, label=ref.arm if ref.seed == 0 else None)  # fmt: skip
        members = list(dict.fromkeys(r.arm for r in runs if r.group == group))
        for r in (r for r in runs if r.group == group):
            label = r.arm + (" (diverged)" if r.diverged else "") if r.seed == 0 or r.diverged else None
            ax.plot([c["epoch"] for c in r.curves], [100 * c["train_error"] for c in r.curves], lw=1.2,
                    color=colors[(members.index(r.arm) + 2) % 10], label=label)  # fmt: skip
        ax.set_title(group, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("training error (%)")
    fig.suptitle(f"Training curves by group (depth {depth}, every seed at the chosen rate)")
    fig.tight_layout()
    return save_png(fig, path)


def _per_layer(
    results: Sequence[ArmResult], path: Path, key: str, ylabel: str, xlabel: str, title: str
) -> Path:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in _deepest_first_seed(results):
        values = getattr(r, key)
        special = {"plain": (PLAIN_COLOR, 2.4), "resnet": (RESIDUAL_COLOR, 2.4)}
        color, lw = special.get(r.arm, (GROUP_COLORS.get(r.group, "grey"), 0.9))
        ax.plot(range(1, len(values) + 1), values, color=color, lw=lw, label=r.arm)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=4)
    ax.set_title(title)
    return save_png(fig, path)


def lr_figure(searches: Sequence[Search], path: Path) -> Path:
    """One panel per depth: each arm's validation error against learning rate, the chosen rate ringed."""
    depths = sorted({s.depth for s in searches})
    fig, axes = plt.subplots(1, len(depths), figsize=(6 * len(depths), 4.5), sharey=True, squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=True):
        for s in (s for s in searches if s.depth == depth):
            special = {"plain": (PLAIN_COLOR, 2.4), "resnet": (RESIDUAL_COLOR, 2.4)}
            color, lw = special.get(s.arm, (GROUP_COLORS.get(_group(s.arm), "grey"), 1.0))
            scored = ((r["lr"], r.get("score", r.get("val_error"))) for r in s.rows)
            points = [(lr, 100 * v) for lr, v in scored if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", color=color, lw=lw, label=s.arm)
            chosen = [p for p in points if p[0] == s.lr]
            if chosen:
                ax.plot(*chosen[0], "o", ms=9, mfc="none", color=color)
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"depth {depth}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("validation error (%), seed 0")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)


def _group(arm: str) -> str:
    from ..experiments.remedy_arms import get_arm

    return get_arm(arm).group


def remedy_figures(results: Sequence[ArmResult], searches: Sequence[Search], folder: Path) -> dict[str, Path]:
    """Every figure of the remedies report, by key."""
    figures = {"arms": arms_figure(results, folder / "arms.png")}
    if len({r.depth for r in results}) > 1:
        figures["depth"] = depth_figure(results, folder / "depth.png")
    if any(len(s.rows) > 1 for s in searches):
        figures["lr"] = lr_figure(searches, folder / "lr.png")
    figures["curves"] = curves_figure(results, folder / "curves.png")
    figures["gradients"] = _per_layer(
        results, folder / "gradients.png", "grad_init", "‖∂L/∂W‖", "layer (input → output)",
        "Gradient flow at initialisation: plain (orange), residual (blue), remedies (by group colour)",
    )  # fmt: skip
    figures["signal"] = _per_layer(
        results, folder / "signal.png", "signal_variance", "average channel variance",
        "block (input → output)", "Signal propagation at initialisation (block outputs)",
    )  # fmt: skip
    return figures
