"""The remedies report's verdict: per arm, does depth still hurt, does it beat the plain net; by a test.

Every claim is Welch's t-test over seeds on the final training error (experiments/stats.py):
one-sided for degradation (is the deep net worse?), two-sided against the plain and residual nets.
A seed that diverged counts at chance error: it did not train. Per arm, at the deepest depth D
and the shallowest S:

- degradation **not shown to remain**: the deep net is not significantly worse than the shallow one,
  *and* it is significantly better than the plain net at D (so the test is not merely blind); it is
  not an equivalence test, so it never says "removed"; **remains**:
  the deep net is significantly worse than the shallow one; else **not shown either way**;
- against the plain net at D: **closes the gap** (significantly better, and not significantly worse
  than the residual net), **helps** (significantly better, the residual net still better),
  **no different**, or **hurts**; **never trains** where the error stays within NEVER points of chance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ..experiments.remedies import ArmResult, Study
from ..experiments.stats import LEVEL, TEST, Comparison, welch

NEVER = 0.05  # final training error this close to chance: the net never trained


@dataclass(frozen=True)
class ArmVerdict:
    """One arm's tests at the deepest depth: against its shallow self, the plain net and the residual net."""

    arm: str
    deep: list[float]
    shallow: list[float]  # empty when the study ran one depth
    depth_effect: Comparison  # deep - shallow, one-sided (deep worse)
    vs_plain: Comparison  # arm - plain, at the deepest depth
    vs_resnet: Comparison  # arm - resnet, at the deepest depth
    degradation: str  # not shown to remain, remains, not shown either way, untested (one depth)
    against_plain: str  # closes the gap, helps, no different, hurts, never trains (or "reference")


def errors(results: Sequence[ArmResult], arm: str, depth: int, chance: float) -> list[float]:
    """Final training errors of an arm's seeds at one depth; a diverged seed at chance."""
    return [chance if math.isnan(r.train_error) else r.train_error
            for r in results if r.arm == arm and r.depth == depth]  # fmt: skip


def mean(values: Sequence[float]) -> float:
    """The mean, NaN for no values."""
    return statistics.fmean(values) if values else math.nan


def judge(study: Study) -> list[ArmVerdict]:
    """Every arm's verdict, in the study's order."""
    results, chance = study.results, study.chance
    depths = sorted({r.depth for r in results})
    deep, shallow = depths[-1], depths[0]
    plain, resnet = errors(results, "plain", deep, chance), errors(results, "resnet", deep, chance)
    out = []
    for arm in dict.fromkeys(r.arm for r in results):
        d = errors(results, arm, deep, chance)
        s = errors(results, arm, shallow, chance) if shallow != deep else []
        effect, vp, vr = welch(d, s, greater=True), welch(d, plain), welch(d, resnet)
        better_than_plain = vp.significant and vp.diff < 0
        if not s:
            degradation = "untested (one depth)"
        elif effect.significant:
            degradation = "remains"
        elif arm == "plain":
            degradation = "not shown"
        else:
            degradation = "not shown to remain" if better_than_plain else "not shown either way"
        if arm in ("plain", "resnet"):
            against = "reference"
        elif d and mean(d) >= chance - NEVER:
            against = "never trains"
        elif better_than_plain:
            resnet_better = vr.significant and vr.diff > 0
            against = "helps" if resnet_better and arm != "resnet" else "closes the gap"
        elif vp.significant:
            against = "hurts"
        else:
            against = "no different"
        out.append(ArmVerdict(arm, d, s, effect, vp, vr, degradation, against))
    return out


def _names(verdicts: Sequence[ArmVerdict], key: str, value: str) -> list[str]:
    return [v.arm for v in verdicts if getattr(v, key) == value and v.arm not in ("plain", "resnet")]


def _reference(v: ArmVerdict | None, name: str, deep: int, shallow: int) -> str | None:
    if v is None:
        return None
    if not v.shallow:
        return f"**{name}{deep}** ends at {100 * mean(v.deep):.2f}% training error."
    said = {"remains": "deeper is worse: degradation shown",
            "not shown to remain": "deeper not shown to be worse, and better than the plain net"}  # fmt: skip
    reading = said.get(v.degradation, "no difference shown at this level")
    return (
        f"**{name}{deep} against {name}{shallow}**: {100 * mean(v.deep):.2f}% vs "
        f"{100 * mean(v.shallow):.2f}% training error, {v.depth_effect.text()}: {reading}."
    )


def verdict(study: Study) -> list[str]:
    """The report's findings, each backed by the stated test."""
    verdicts = judge(study)
    by = {v.arm: v for v in verdicts}
    depths = sorted({r.depth for r in study.results})
    deep, shallow = depths[-1], depths[0]
    lines = [line for line in (_reference(by.get("plain"), "plain", deep, shallow),
                               _reference(by.get("resnet"), "resnet", deep, shallow)) if line]  # fmt: skip
    if "plain" not in by:
        lines.append("No plain net in this study: every verdict compares an arm with it, so none is given.")
        return lines
    if shallow != deep:
        for value, title in (
            ("not shown to remain", f"No degradation shown at depth {deep}** (not significantly worse than "
                                    f"at {shallow}, and better than plain{deep})"),
            ("remains", f"Degradation remains** (depth {deep} worse than {shallow})"),
            ("not shown either way", "Degradation neither shown nor ruled out** (no significant difference "
                                     f"from depth {shallow}, nor from plain{deep})"),
        ):  # fmt: skip
            names = _names(verdicts, "degradation", value)
            if names:
                lines.append(f"**{title}: {', '.join(names)}.")
    for value, title in (
        ("closes the gap", f"Close the gap** (better than plain{deep}, not worse than resnet{deep})"),
        ("helps", f"Help, but leave a gap** (better than plain{deep}, worse than resnet{deep})"),
        ("no different", f"No different from plain{deep}**"),
        ("hurts", f"Worse than plain{deep}**"),
        ("never trains", f"Never train** (training error within {100 * NEVER:.0f} points of chance)"),
    ):
        named = [f"{v.arm} ({v.vs_plain.text()})" for v in verdicts
                 if v.against_plain == value and v.arm not in ("plain", "resnet")]  # fmt: skip
        if named:
            lines.append(f"**{title}: {', '.join(named)}.")
    edge = [f"{s.arm} at depth {s.depth} (lr {s.lr:g})" for s in study.searches if s.at_edge]
    if edge:
        lines.append(
            "**Chosen at the edge of the grid** (the best rate may lie beyond it): " + ", ".join(edge) + "."
        )
    seeds = max((len(v.deep) for v in verdicts), default=0)
    lines.append(
        f"Test: {TEST} (p < {LEVEL:g}) on the final training error, one-sided for degradation (deeper "
        "worse), two-sided against the plain and residual nets; a diverged seed counts at chance "
        f"({100 * study.chance:.0f}%). {seeds} seed(s) per arm"
        + (": with so few, only large, steady differences can pass the test." if seeds < 4 else ".")
    )
    return lines
