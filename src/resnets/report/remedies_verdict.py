"""The remedies report's verdict: each arm against the plain and residual nets, beyond the seeds' spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ..experiments.remedies import ArmResult

# A difference counts only when larger than this and than twice the seeds' spread.
MARGIN = 0.01


def seed_stats(values: Sequence[float]) -> tuple[float, float]:
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


def verdict(results: Sequence[ArmResult]) -> list[str]:
    """What the numbers say at the deepest depth, claiming only differences beyond the seed spread."""
    depth = max(r.depth for r in results)
    arms = by_arm(results, depth)
    stats = {name: seed_stats([r.train_error for r in rs]) for name, rs in arms.items()}
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
