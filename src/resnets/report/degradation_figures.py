"""Matplotlib figures of the degradation study, each written as a PNG."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes

from ..experiments.degradation import ModelResult
from ..experiments.lesion import LesionResult
from .degradation_verdict import by_model, finished, first_seed
from .lesion_figures import lesion_figure
from .plotting import PLAIN_COLOR, PLAIN_STYLE, RESIDUAL_COLOR, RESIDUAL_STYLE, plt, save_png


def _colors(depths: Sequence[int]) -> dict[int, tuple[float, ...]]:
    cmap = plt.get_cmap("viridis")
    ordered = sorted(set(depths))
    return {d: cmap(0.1 + 0.75 * i / max(1, len(ordered) - 1)) for i, d in enumerate(ordered)}


def _seed(runs: Sequence[ModelResult]) -> str:
    return f"seed {runs[0].seed}" if runs else "no runs"


def error_curves(results: list[ModelResult], path: Path) -> Path:
    """Fig. 6 layout, first seed: plain (left) and residual (right); dashed training, solid test error."""
    results = first_seed(results)
    colors = _colors([r.depth for r in results])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, residual in zip(axes, (False, True), strict=True):
        for r in (r for r in results if r.residual == residual):
            epochs = [c["epoch"] for c in r.curves]
            c = colors[r.depth]
            ax.plot(epochs, [100 * c_["train_error"] for c_ in r.curves], "--", color=c, lw=1.2)
            ax.plot(
                epochs, [100 * c_["test_error"] for c_ in r.curves], "-", color=c, lw=2, label=f"{r.model}"
            )
        ax.set_title("plain" if not residual else "residual")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)   dashed: training, solid: test")
    top = max((100 * c["train_error"] for r in results for c in r.curves), default=100)
    axes[0].set_ylim(0, min(100, top * 1.05 + 1))
    fig.suptitle(f"Training and test error by depth, {_seed(results)} (He et al. 2015, Fig. 6 layout)")
    return save_png(fig, path)


def gradient_flow(results: list[ModelResult], path: Path) -> Path:
    """Weight-gradient norm by layer depth, log scale, first seed: at initialisation and after training."""
    results = first_seed(results)
    colors = _colors([r.depth for r in results])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in zip(
        axes, ("grad_init", "grad_final"), ("at initialisation", "after training"), strict=True
    ):
        for r in results:
            norms = getattr(r, key)
            ax.plot(range(1, len(norms) + 1), norms, color=colors[r.depth], lw=1.4,
                    label=r.model, **(RESIDUAL_STYLE if r.residual else PLAIN_STYLE))  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("layer (input → output)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖∂L/∂W‖ of each conv / fc layer")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Gradient flow: plain (dashed) vs residual (solid), {_seed(results)}")
    return save_png(fig, path)


def layer_responses(results: list[ModelResult], path: Path) -> Path:
    """Fig. 7 layout, first seed: std of 3x3 layer responses in layer order (top) and sorted (bottom)."""
    results = first_seed(results)
    colors = _colors([r.depth for r in results])
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5))
    for r in results:
        style = {
            "color": colors[r.depth],
            "lw": 1.3,
            "label": r.model,
            **(RESIDUAL_STYLE if r.residual else PLAIN_STYLE),
        }
        axes[0].plot(range(1, len(r.responses) + 1), r.responses, **style)
        axes[1].plot(range(1, len(r.responses) + 1), sorted(r.responses, reverse=True), **style)
    axes[0].set_xlabel("3×3 layer index (original order)")
    axes[1].set_xlabel("layer index (sorted by magnitude)")
    for ax in axes:
        ax.set_ylabel("std of response")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4)
    fig.suptitle(
        f"Layer responses after training, {_seed(results)}: after BN, before ReLU/addition (Fig. 7 layout)"
    )
    fig.tight_layout()
    return save_png(fig, path)


def signal_propagation(results: list[ModelResult], path: Path) -> Path:
    """Per-block activation variance at initialisation (and the residual branch's), first seed."""
    results = first_seed(results)
    colors = _colors([r.depth for r in results])
    fig, ax = plt.subplots(figsize=(10, 4))
    for r in results:
        ax.plot(range(1, len(r.signal_variance) + 1), r.signal_variance, color=colors[r.depth], lw=1.4,
                label=f"{r.model} output", **(RESIDUAL_STYLE if r.residual else PLAIN_STYLE))  # fmt: skip
        branch = [v for v in r.signal_branch_variance if not math.isnan(v)]
        if branch:
            ax.plot(
                range(1, len(branch) + 1),
                branch,
                ":",
                color=colors[r.depth],
                lw=1,
                label=f"{r.model} branch F(x)",
            )
    ax.set_yscale("log")
    ax.set_xlabel("block (input → output)")
    ax.set_ylabel("average channel variance")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(f"Signal propagation at initialisation (BN in training mode), {_seed(results)}")
    return save_png(fig, path)


def _seeds_and_mean(ax: Axes, groups: list[list[ModelResult]], key: str, residual: bool) -> None:
    """One family's final errors against depth: a dot per finished seed, a line through the means."""
    color = RESIDUAL_COLOR if residual else PLAIN_COLOR
    done = [(g[0].depth, [100 * getattr(r, key) for r in finished(g)]) for g in groups]
    dots = [(d, v) for d, values in done for v in values]
    if dots:
        ax.scatter(*zip(*dots, strict=True), color=color, s=16, alpha=0.6, zorder=3)
    means = [(d, statistics.fmean(values)) for d, values in done if values]
    if means:
        ax.plot(*zip(*means, strict=True), color=color, lw=1.6, label="residual" if residual else "plain",
                **(RESIDUAL_STYLE if residual else PLAIN_STYLE))  # fmt: skip


def final_errors(results: list[ModelResult], path: Path) -> Path:
    """Final training and test error against depth: each seed a dot, the mean over seeds a line."""
    groups = sorted(by_model(results), key=lambda g: g[0].depth)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in zip(axes, ("train_error", "test_error"), ("training", "test"), strict=True):
        for residual in (False, True):
            _seeds_and_mean(ax, [g for g in groups if g[0].residual == residual], key, residual)
        ax.set_title(f"final {title} error")
        ax.set_xlabel("depth")
        ax.set_xticks(sorted({g[0].depth for g in groups}))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Final error by depth (dots: seeds; line: mean over the seeds that finished)")
    return save_png(fig, path)


def all_figures(
    results: list[ModelResult], folder: Path, lesions: list[LesionResult] | None = None
) -> dict[str, Path]:
    """Every figure of the report, by key."""
    figures = {
        "errors": error_curves(results, folder / "errors.png"),
        "final": final_errors(results, folder / "final.png"),
        "gradients": gradient_flow(results, folder / "gradients.png"),
        "responses": layer_responses(results, folder / "responses.png"),
        "signal": signal_propagation(results, folder / "signal.png"),
    }
    if lesions:
        figures["lesion"] = lesion_figure(lesions, folder / "lesion.png")
    return figures
