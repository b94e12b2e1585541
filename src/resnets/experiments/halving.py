"""Successive halving (Jamieson & Talwalkar 2016): train every candidate briefly, keep the best half, repeat.

The rungs are synchronous: every candidate of a rung is trained to the rung's step before any
is promoted. A candidate promoted to the next rung continues from its checkpoint (exact resume),
so the last survivor ends as the same run it would have been unpruned, and the work is the sum
of each rung's new steps, not of restarts.

Why not Optuna's pruners or Ray Tune's ASHA: both are asynchronous (a trial is promoted as soon
as it beats the rung's quantile of the trials that arrived before it), which suits many workers
finishing in any order; a sweep's members run in a fixed order, so the promotions would depend
on that order. The synchronous rule needs no scheduler service and gives the same answer on any
number of machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")


@dataclass(frozen=True)
class Rung:
    """One round of halving: how many candidates it trains and to which step."""

    index: int
    keep: int  # candidates trained in this rung
    step: int  # they are trained to this step of the full run


def rungs(candidates: int, total_steps: int, eta: int = 2, step_unit: int = 1) -> list[Rung]:
    """The rungs for ``candidates`` over a run of ``total_steps``: 1/eta of them survive each, one the last.

    Rung steps are multiples of ``step_unit`` (an epoch, so a rung ends where the run evaluates
    anyway), at least one unit, and the last rung is the full run.
    """
    if candidates < 1 or total_steps < 1 or eta < 2 or step_unit < 1:
        raise ValueError("candidates, total_steps and step_unit must be >= 1 and eta >= 2")
    count = math.floor(math.log(candidates) / math.log(eta) + 1e-9) + 1
    out = []
    for i in range(count):
        keep = max(1, candidates // eta**i)
        if i == count - 1:
            keep, step = 1, total_steps
        else:
            step = total_steps / eta ** (count - 1 - i)
            step = min(total_steps, max(step_unit, round(step / step_unit) * step_unit))
        out.append(Rung(i, keep, int(step)))
    return out


def promote(scores: dict[K, Sequence[float]], keep: int, order: Sequence[K]) -> list[K]:
    """The ``keep`` best (lowest, compared in order) scores; NaN (diverged) last; ties go by ``order``."""

    def rank(k: K) -> tuple[bool, tuple[float, ...], int]:
        bad = any(math.isnan(v) for v in scores[k])
        return bad, tuple(0.0 for _ in scores[k]) if bad else tuple(scores[k]), order.index(k)

    return sorted(scores, key=rank)[:keep]


def work(schedule: Sequence[Rung], candidates: int) -> int:
    """Steps trained by a halving over ``candidates``: each survivor goes on from where it stopped."""
    done, last = 0, 0
    for rung in schedule:
        done += min(rung.keep, candidates) * (rung.step - last)
        last = rung.step
    return done
