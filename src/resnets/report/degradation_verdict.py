"""The degradation report's verdict, from the measured numbers only, claiming only what the seeds bear out.

Rule: one net trains worse than another only when every seed of it ends with higher training error
than every seed of the other (the seed ranges do not overlap), with two seeds at least each; a
diverged seed counts as higher than any that finished. The gradient and response sentences use
the first seed's runs.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

from ..experiments.degradation import ModelResult

Runs = Sequence[ModelResult]  # one model's runs, one per seed


def by_model(results: Runs) -> list[list[ModelResult]]:
    """Each model's runs in seed order, the models in the order they first appear."""
    groups: dict[str, list[ModelResult]] = {}
    for r in results:
        groups.setdefault(r.model, []).append(r)
    return [sorted(runs, key=lambda r: r.seed) for runs in groups.values()]


def first_seed(results: Runs) -> list[ModelResult]:
    """The runs of the study's first seed: those the gradient, response and signal findings show."""
    seed = min((r.seed for r in results), default=0)
    return [r for r in results if r.seed == seed]


def finished(runs: Runs) -> list[ModelResult]:
    """The runs that did not diverge."""
    return [r for r in runs if not r.diverged]


def spread(values: Sequence[float]) -> str:
    """Mean ± sample sd in percent ("48.99 ± 3.10%"); the mean alone for one value."""
    if not values:
        return "diverged"
    mean = f"{100 * statistics.fmean(values):.2f}"
    return f"{mean}%" if len(values) < 2 else f"{mean} ± {100 * statistics.stdev(values):.2f}%"


def diverged_note(runs: Runs) -> str:
    """Which seeds diverged and where ("1 of 2 diverged, seed 1 at step 40"); "" when none did."""
    failed = [r for r in runs if r.diverged]
    if not failed:
        return ""
    where = []
    for r in failed:
        step = re.search(r"at step (\d+)", r.diverged or "")
        where.append(f"seed {r.seed}" + (f" at step {step.group(1)}" if step else ""))
    return f"{len(failed)} of {len(runs)} diverged, " + ", ".join(where)


def _stats(runs: Runs, key: str = "train_error") -> str:
    note = diverged_note(runs)
    return spread([getattr(r, key) for r in finished(runs)]) + (f" ({note})" if note else "")


def _ranges(a: Runs, b: Runs) -> str:
    """How b's seeds stand against a's: "higher", "lower", "overlap", or "single" (under two seeds)."""
    if min(len(a), len(b)) < 2:
        return "single"
    # A diverged seed ends above any finished one: it never got a training error at all.
    ea, eb = ([math.inf if r.diverged else r.train_error for r in runs] for runs in (a, b))
    if min(eb) > max(ea):
        return "higher"
    return "lower" if max(eb) < min(ea) else "overlap"


def _ends(runs: Runs) -> str:
    if finished(runs):
        note = diverged_note(runs)
        errors = spread([r.train_error for r in finished(runs)])
        return f"ends with {errors} training error" + (f" ({note})" if note else "")
    reason = (runs[0].diverged or "").split(";")[0]
    return f"did not train at all ({reason})" if len(runs) == 1 else f"did not train on any seed ({reason})"


def _gap(a: Runs, b: Runs) -> str:
    done_a, done_b = finished(a), finished(b)
    if not (done_a and done_b):
        return ""
    mb, ma = (statistics.fmean(r.train_error for r in runs) for runs in (done_b, done_a))
    means = " between the means" if max(len(done_a), len(done_b)) > 1 else ""
    return f" ({100 * (mb - ma):+.1f} points{means})"


def _by_depth(groups: list[list[ModelResult]], residual: bool) -> list[list[ModelResult]]:
    return sorted((g for g in groups if g[0].residual == residual), key=lambda g: g[0].depth)


def _listing(groups: list[list[ModelResult]]) -> str:
    return ", ".join(f"{g[0].model} {_stats(g)}" for g in groups)


def _rule(results: Runs) -> str:
    seeds = sorted({r.seed for r in results})
    named = ", ".join(map(str, seeds))
    if len(seeds) < 2:
        return (
            f"**Single seed (seed {named}).** The figures are single-seed: the verdict is not tested "
            "against seed spread, so no difference in training error is claimed (run --seeds 2 or more)."
        )
    return (
        f"**Seed rule** (seeds {named}). A net is said to train worse than another only when every seed "
        "of it ends with higher training error than every seed of the other (the seed ranges do not "
        "overlap), with at least 2 seeds each; a diverged seed counts as higher than any that finished. "
        "Otherwise the difference is within the seed spread and not claimed. Errors: mean ± sample sd "
        "over the seeds that finished."
    )


def _plain(plain: list[list[ModelResult]]) -> str:
    a, b = plain[0], plain[-1]
    na, nb = a[0].model, b[0].model
    compared = f"{nb} {_ends(b)}; {na} {_ends(a)}{_gap(a, b)}. Plain nets by depth: {_listing(plain)}."
    order = _ranges(a, b)
    if order == "single":
        return f"**Degradation not tested against seed spread** (one seed): {compared}"
    if order == "higher" and not finished(b):
        return f"**Degradation seen, to the extreme.** {compared}"
    if order == "higher":
        return f"**Degradation seen.** Every seed of {nb} trains worse than every seed of {na}: {compared}"
    if order == "lower":
        return (
            f"**No degradation seen** with this recipe: every seed of {nb} trains better than every seed "
            f"of {na}: {compared} Longer or harder training (a bigger dataset, deeper nets) may be needed."
        )
    return (
        f"**Degradation not claimed**: the difference is within the seed spread (the seed ranges "
        f"overlap). {compared}"
    )


def _residual(res: list[list[ModelResult]]) -> str:
    a, b = res[0], res[-1]
    na, nb = a[0].model, b[0].model
    compared = (
        f"{nb} {_stats(b)} training / {_stats(b, 'test_error')} test error against {na} "
        f"{_stats(a)} / {_stats(a, 'test_error')}. Residual nets by depth: {_listing(res)}."
    )
    heads = {
        "single": "**Residual nets by depth, not tested against seed spread** (one seed): ",
        "higher": f"**Residual nets do get worse with depth**: every seed of {nb} trains worse than "
        f"every seed of {na}: ",
        "lower": f"**Residual nets do not get worse with depth**: every seed of {nb} trains better than "
        f"every seed of {na}: ",
        "overlap": f"**The deeper residual net is not worse beyond the seed spread** ({nb}'s and {na}'s "
        "seed ranges overlap; neither a gain nor a loss with depth is claimed): ",
    }
    return heads[_ranges(a, b)] + compared


def _ratio(x: float) -> str:
    return f"{x:.0f}x" if x < 1e6 else f"{x:.2g}x"


def _span(norms: list[float]) -> tuple[float, float]:
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    return (min(finite), max(finite)) if finite else (float("nan"), float("nan"))


def _gradient_shape(p: ModelResult) -> str:
    """What the plain net's gradient norms do from the last conv back to the first."""
    pl, ph = _span(p.grad_init)
    # First conv vs last conv (the fc is left out: its gradient has a scale of its own).
    first, last = p.grad_init[0], p.grad_init[-2]
    if not (math.isfinite(first) and math.isfinite(last)):
        return (
            f"In the plain net they overflow the float range ({first:.2g} at the first conv, {last:.2g} "
            "at the last): they explode backwards, while the shortcuts keep the residual net's bounded."
        )
    if ph / pl <= 100:
        return (
            "The plain net's gradients neither vanish nor explode at initialisation (BN keeps their "
            "norms healthy, as the paper notes in Sec. 4.1): its trouble is not simply the gradient size."
        )
    if first > last:
        return (
            f"In the plain net they grow toward the input ({first:.2g} at the first conv, {last:.2g} at "
            "the last): they do not vanish, they explode backwards, while the shortcuts keep the "
            "residual net's nearly flat."
        )
    return (
        f"In the plain net they shrink toward the input ({first:.2g} at the first conv, "
        f"{last:.2g} at the last): they vanish, while the shortcuts keep the residual net's nearly flat."
    )


def _gradients(plain: list[ModelResult], res: list[ModelResult]) -> str:
    p = plain[-1]
    r = next((x for x in res if x.depth == p.depth), res[-1])
    (pl, ph), (rl, rh) = _span(p.grad_init), _span(r.grad_init)
    return (
        f"**Gradients at initialisation** (seed {p.seed}). {p.model}: weight-gradient norms from {pl:.2g} "
        f"to {ph:.2g} (a {_ratio(ph / pl)} spread); {r.model}: {rl:.2g} to {rh:.2g} ({_ratio(rh / rl)}). "
        + _gradient_shape(p)
    )


def _responses(plain: list[ModelResult], res: list[ModelResult]) -> str | None:
    trained = [x for x in plain if x.responses]  # a diverged net has no responses
    if not trained:
        return None
    p = trained[-1]
    r = next((x for x in res if x.depth == p.depth and x.responses), None)
    if r is None:
        return None
    pr, rr = statistics.fmean(p.responses), statistics.fmean(r.responses)
    return (
        f"**Layer responses after training** (seed {p.seed}). Mean std of the 3x3 layers' responses: "
        f"{r.model} {rr:.3f}, {p.model} {pr:.3f}: the residual net's are "
        + ("smaller, as in the paper's Fig. 7: its layers learn small corrections to the identity."
           if rr < pr else "not smaller here, unlike the paper's Fig. 7.")
    )  # fmt: skip


def verdict(results: Runs) -> list[str]:
    """Paragraphs that say what was measured: the seed rule, degradation, gradients, responses."""
    groups = by_model(results)
    plain, res = _by_depth(groups, False), _by_depth(groups, True)
    lines = [_rule(results)]
    if len(plain) >= 2:
        lines.append(_plain(plain))
    if len(res) >= 2:
        lines.append(_residual(res))
    # These describe single runs, the first seed's: the ones the gradient and response figures show.
    first = first_seed(results)
    first_plain = sorted((r for r in first if not r.residual), key=lambda r: r.depth)
    first_res = sorted((r for r in first if r.residual), key=lambda r: r.depth)
    if first_plain and first_res:
        lines.append(_gradients(first_plain, first_res))
        responses = _responses(first_plain, first_res)
        if responses:
            lines.append(responses)
    return lines
