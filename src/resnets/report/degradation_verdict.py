"""The degradation report's verdict, written from the measured numbers only."""

from __future__ import annotations

import math
import statistics

from ..experiments.degradation import ModelResult

# A deeper net counts as worse when its training error is higher by more than this.
MARGIN = 0.01


def _pct(x: float) -> str:
    return "diverged" if math.isnan(x) else f"{100 * x:.2f}%"


def _ratio(x: float) -> str:
    return f"{x:.0f}x" if x < 1e6 else f"{x:.2g}x"


def _worse(b: ModelResult, a: ModelResult) -> bool:
    """b trains worse than a: more training error, or b diverged where a did not."""
    if b.diverged or a.diverged:
        return bool(b.diverged) and not a.diverged
    return b.train_error > a.train_error + MARGIN


def _by_depth(results: list[ModelResult], residual: bool) -> list[ModelResult]:
    return sorted((r for r in results if r.residual == residual), key=lambda r: r.depth)


def _span(norms: list[float]) -> tuple[float, float]:
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    return (min(finite), max(finite)) if finite else (float("nan"), float("nan"))


def verdict(results: list[ModelResult]) -> list[str]:
    """Paragraphs that say what was measured: degradation, gradients, responses."""
    plain, res = _by_depth(results, False), _by_depth(results, True)
    lines: list[str] = []
    if len(plain) >= 2:
        a, b = plain[0], plain[-1]
        errs = ", ".join(f"{r.model} {_pct(r.train_error)}" for r in plain)
        if b.diverged and not a.diverged:
            lines.append(
                f"**Degradation seen, to the extreme.** {b.model} did not train at all "
                f"({b.diverged.split(';')[0]}), while {a.model} reached {_pct(a.train_error)} training "
                f"error. Plain nets by depth: {errs}."
            )
        elif _worse(b, a):
            lines.append(
                f"**Degradation seen.** The deeper plain net trains worse: {b.model} ends with "
                f"{_pct(b.train_error)} training error against {_pct(a.train_error)} for {a.model} "
                f"(+{100 * (b.train_error - a.train_error):.1f} points). Plain nets by depth: {errs}."
            )
        else:
            lines.append(
                f"**No degradation seen** with this recipe: {b.model} ends with {_pct(b.train_error)} "
                f"training error against {_pct(a.train_error)} for {a.model}. Plain nets by depth: {errs}. "
                "Longer or harder training (a bigger dataset, deeper nets) may be needed to see it."
            )
    if len(res) >= 2:
        a, b = res[0], res[-1]
        errs = ", ".join(f"{r.model} {_pct(r.train_error)}" for r in res)
        worse = _worse(b, a)
        lines.append(
            f"**Residual nets {'do get worse' if worse else 'do not get worse'} with depth**: {b.model} "
            f"{_pct(b.train_error)} training / {_pct(b.test_error)} test error against {a.model} "
            f"{_pct(a.train_error)} / {_pct(a.test_error)}. Residual nets by depth: {errs}."
        )
    if plain and res:
        p, r = plain[-1], next((x for x in res if x.depth == plain[-1].depth), res[-1])
        (pl, ph), (rl, rh) = _span(p.grad_init), _span(r.grad_init)
        # First conv vs last conv (the fc is left out: its gradient has a scale of its own).
        first, last = p.grad_init[0], p.grad_init[-2]
        if not (math.isfinite(first) and math.isfinite(last)):
            shape = (
                f"In the plain net they overflow the float range ({first:.2g} at the first conv, {last:.2g} "
                "at the last): they explode backwards, while the shortcuts keep the residual net's bounded."
            )
        elif ph / pl <= 100:
            shape = (
                "The plain net's gradients neither vanish nor explode at initialisation (BN keeps their "
                "norms healthy, as the paper notes in Sec. 4.1): its trouble is not simply the gradient size."
            )
        elif first > last:
            shape = (
                f"In the plain net they grow toward the input ({first:.2g} at the first conv, {last:.2g} at "
                "the last): they do not vanish, they explode backwards, while the shortcuts keep the "
                "residual net's nearly flat."
            )
        else:
            shape = (
                f"In the plain net they shrink toward the input ({first:.2g} at the first conv, "
                f"{last:.2g} at the last): they vanish, while the shortcuts keep the residual net's "
                "nearly flat."
            )
        lines.append(
            f"**Gradients at initialisation.** {p.model}: weight-gradient norms from {pl:.2g} to {ph:.2g} "
            f"(a {_ratio(ph / pl)} spread); {r.model}: {rl:.2g} to {rh:.2g} ({_ratio(rh / rl)}). " + shape
        )
    trained = [x for x in plain if x.responses]
    if trained and res:
        p = trained[-1]
        r = next((x for x in res if x.depth == p.depth and x.responses), None)
    if trained and res and r is not None:
        pr, rr = statistics.fmean(p.responses), statistics.fmean(r.responses)
        smaller = rr < pr
        lines.append(
            f"**Layer responses after training.** Mean std of the 3x3 layers' responses: {r.model} "
            f"{rr:.3f}, {p.model} {pr:.3f}: the residual net's are "
            + ("smaller, as in the paper's Fig. 7: its layers learn small corrections to the identity."
               if smaller else "not smaller here, unlike the paper's Fig. 7.")
        )  # fmt: skip
    return lines
