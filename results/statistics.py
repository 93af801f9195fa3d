"""What a study's numbers support: a configuration's mean over seeds with its confidence interval, each configuration
compared with the best on the seeds they share, and the top group of configurations that the data cannot tell from
the best.

Seeds are the unit of replication. Configurations of one study run on the same seeds, so a comparison pairs them
seed by seed (a paired t-test on the differences): seed-to-seed noise that both share cancels. The comparisons of
every configuration with the best are one family, corrected together by Holm's step-down method, so that "separated"
holds at the stated level for all of them at once. Distributions come from scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
# Family-wise error rate of the comparisons with the best (Holm-corrected).
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class Estimate:
    """The mean of n values with its Student-t confidence interval; low and high are NaN below two values."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean, sample standard deviation (n - 1) and the two-sided t interval of the mean."""
    count = len(values)
    if count == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    if count == 1:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(values)
    half = stats.t.ppf((1 + confidence) / 2, count - 1) * std / math.sqrt(count)
    return Estimate(count, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """The best configuration against another on their shared seeds.

    difference: mean over shared seeds of (best - other), so positive means the best scored higher; low/high its
    confidence interval; p_value the two-sided paired t-test's; adjusted_p after Holm over the family; separated (below
    the best) when adjusted_p < alpha and the difference is positive. Fewer than two shared seeds cannot separate
    anything (p is NaN).
    """

    seeds: tuple[int, ...]
    difference: float
    low: float
    high: float
    p_value: float
    adjusted_p: float = math.nan
    separated: bool = False

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired_comparison(
    best: Mapping[int, float], other: Mapping[int, float], confidence: float = CONFIDENCE
) -> Comparison:
    """`best` and `other` (seed -> value) on the seeds they share; uncorrected p (see `holm`)."""
    seeds = tuple(sorted(set(best) & set(other)))
    differences = [best[seed] - other[seed] for seed in seeds]
    interval = estimate(differences, confidence)
    if len(differences) < 2:
        return Comparison(seeds, interval.mean, interval.low, interval.high, math.nan)
    if interval.std == 0:
        # Identical differences on every seed: no noise to test against; any difference at all is systematic.
        p_value = 1.0 if interval.mean == 0 else 0.0
    else:
        p_value = float(stats.ttest_rel([best[seed] for seed in seeds], [other[seed] for seed in seeds]).pvalue)
    return Comparison(seeds, interval.mean, interval.low, interval.high, p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order; NaN stays NaN and does not count in the family.

    The i-th smallest of m p-values is multiplied by (m - i), adjusted values never decrease along the sorted order,
    and none exceeds 1. A hypothesis is rejected at family-wise level alpha when its adjusted p is below alpha.
    """
    present = sorted((value, index) for index, value in enumerate(p_values) if not math.isnan(value))
    family = len(present)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (value, index) in enumerate(present):
        running = max(running, min(1.0, (family - rank) * value))
        adjusted[index] = running
    return adjusted


def compare_with_best(
    values: Sequence[Mapping[int, float]], best: int = 0, alpha: float = ALPHA, confidence: float = CONFIDENCE
) -> list[Comparison | None]:
    """Each configuration's values (seed -> value) against those of `values[best]`, Holm-corrected as one family;
    None at the best's own position."""
    raw = [None if index == best else paired_comparison(values[best], other, confidence) for index, other in
           enumerate(values)]  # fmt: skip
    adjusted = holm([math.nan if comparison is None else comparison.p_value for comparison in raw])
    return [
        None
        if comparison is None
        else Comparison(
            comparison.seeds,
            comparison.difference,
            comparison.low,
            comparison.high,
            comparison.p_value,
            adjusted[index],
            # Separated below the best: a configuration that scored higher on the shared seeds is never dropped.
            comparison.difference > 0 and not math.isnan(adjusted[index]) and adjusted[index] < alpha,
        )
        for index, comparison in enumerate(raw)
    ]


def top_group(comparisons: Sequence[Comparison | None]) -> list[int]:
    """The positions not separated from the best (the best's own None included), in their order."""
    return [index for index, comparison in enumerate(comparisons) if comparison is None or not comparison.separated]
