"""The test behind every claim of a study: Welch's t-test over seeds, at a stated level.

Seeds give each arm a small sample of final errors; two arms differ only where Welch's
t-test (unequal variances, Welch-Satterthwaite degrees of freedom; the same as scipy's
``ttest_ind(equal_var=False)``) rejects equal means at ``LEVEL``: two-sided where either arm may
be better, one-sided where the claim has a direction (degradation: the deeper net is worse). With
2 seeds a side the test has about 1-2 degrees of freedom and finds only large, steady
differences: that is the honest reading of 2 seeds, and the report says so instead of calling
smaller gaps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.05
TEST = f"Welch's t-test over seeds at the {LEVEL:g} level"


@dataclass(frozen=True)
class Comparison:
    """Sample a against sample b: the difference of means (a - b), and its p-value (None: untestable)."""

    diff: float
    p: float | None
    one_sided: bool = False  # the alternative is a > b, not a != b

    @property
    def significant(self) -> bool:
        """The test rejects equal means at LEVEL."""
        return self.p is not None and self.p < LEVEL

    def text(self) -> str:
        """e.g. '+12.3 points (p = 0.004)' for errors in [0, 1]."""
        if math.isnan(self.diff):
            return "-"
        p = "no test: one seed" if self.p is None else f"p = {self.p:.2g}" if self.p >= 1e-4 else "p < 1e-4"
        return f"{100 * self.diff:+.1f} points ({p}{', one-sided' if self.one_sided and self.p else ''})"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def welch(a: Sequence[float], b: Sequence[float], greater: bool = False) -> Comparison:
    """Welch's t-test of mean(a) = mean(b) against a != b (a > b: ``greater``); p None under 2 values a side.

    Where neither sample varies (say, two arms stuck at chance on every seed), the t statistic is
    undefined: equal means give p = 1, different ones p = 0 (no seed overlaps the other sample).
    """
    if not a or not b:
        return Comparison(math.nan, None, greater)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, greater)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return Comparison(diff, 0.0 if diff > 0 or (diff and not greater) else 1.0, greater)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    from scipy.stats import t as student

    p = student.sf(t, df) if greater else 2 * student.sf(abs(t), df)
    return Comparison(diff, float(p), greater)
