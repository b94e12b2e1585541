"""The lesion study's figure: test error with blocks of a trained net deleted."""

from __future__ import annotations

from pathlib import Path

from ..experiments.lesion import LesionResult
from .plotting import PLAIN_COLOR, PLAIN_STYLE, RESIDUAL_COLOR, RESIDUAL_STYLE, plt, save_png


def lesion_figure(lesions: list[LesionResult], path: Path) -> Path:
    """Test error with one block deleted (left) and with k random blocks deleted (right)."""
    fig, (one, many) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for r in lesions:
        style = RESIDUAL_STYLE if r.residual else PLAIN_STYLE
        color = RESIDUAL_COLOR if r.residual else PLAIN_COLOR
        xs = [i + 1 for i in r.deletable()]
        one.plot(xs, [100 * r.single[i - 1] for i in xs], marker=".", color=color, label=r.model, **style)
        one.axhline(100 * r.baseline_error, color=color, lw=0.8, alpha=0.6)
        ks = [d["k"] for d in r.random_k]
        sds = [100 * d.get("sd", 0.0) for d in r.random_k]  # no sd in files from before it was kept
        many.errorbar(ks, [100 * d["mean"] for d in r.random_k], yerr=sds, marker=".", capsize=2, color=color,
                      label=r.model, **style)  # fmt: skip
    one.set_xlabel("deleted block (input → output)")
    one.set_ylabel("test error (%)")
    one.set_title("One block deleted (thin lines: nothing deleted)")
    many.set_xlabel("number of random blocks deleted")
    draws = max((r.draws for r in lesions), default=0)
    many.set_title(f"k random blocks deleted (mean ± sd of {draws} draws)" if draws else
                   "k random blocks deleted (mean of draws)")  # fmt: skip
    for ax in (one, many):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_png(fig, path)
