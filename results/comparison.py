"""How sure a study is of its best configuration: each configuration's mean dev score with its confidence interval,
each compared with the best on the seeds they share, the top group the data cannot tell from the best, and the one
sentence that says so. The printed summary, summary.csv/.md, best_config.json, the report, the MLflow parent run
and the registered model's description all take their numbers and their sentence from here.

The statistics themselves (Student-t intervals, paired t-tests, Holm's correction) are `statistics`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from results.record import RANKING_METRIC, describe_values
from results.statistics import (
    ALPHA,
    CONFIDENCE,
    Comparison,
    Estimate,
    compare_with_best,
    estimate,
)

if TYPE_CHECKING:
    from results.ranking import Configuration

# How the comparisons are made, in words: the sentence, the report and the docs say it the same way.
METHOD = "paired t-test on the seeds both ran, Holm-adjusted over the comparisons with the best"
# What a configuration is, compared with the best (`Standing.verdict`).
BEST, NOT_SEPARATED, SEPARATED, TOO_FEW_SEEDS = "best", "not separated", "separated", "fewer than 2 shared seeds"
# Config keys named in words when they are the only one that varies: "2 fusion layers".
LAYER_WORDS = {"model.fusion_layers": "fusion layer", "model.image_layers": "image layer"}
# Longer lists in the sentence end with "and N others".
LISTED_AT_MOST = 6


@dataclass(frozen=True)
class Standing:
    """One configuration's place: its estimate and, except for the best, its comparison with the best."""

    configuration: Configuration
    label: str
    estimate: Estimate
    # None for the best itself.
    comparison: Comparison | None

    @property
    def verdict(self) -> str:
        if self.comparison is None:
            return BEST
        if self.comparison.n < 2:
            return TOO_FEW_SEEDS
        return SEPARATED if self.comparison.separated else NOT_SEPARATED

    @property
    def in_top_group(self) -> bool:
        """Not separated from the best; a configuration that shares fewer than two seeds with it cannot be told
        apart from it either."""
        return self.verdict != SEPARATED

    def to_json(self) -> dict[str, Any]:
        configuration, interval = self.configuration, self.estimate
        entry: dict[str, Any] = {
            "label": self.label,
            "config_id": configuration.config_id,
            "n": interval.n,
            "seeds": configuration.seeds,
            "mean": json_number(interval.mean),
            "std": json_number(interval.std),
            "ci_low": json_number(interval.low),
            "ci_high": json_number(interval.high),
            "verdict": self.verdict,
        }
        comparison = self.comparison
        if comparison is not None:
            entry["vs_best"] = {
                "shared_seeds": list(comparison.seeds),
                "best_minus_this": json_number(comparison.difference),
                "ci_low": json_number(comparison.low),
                "ci_high": json_number(comparison.high),
                "p": json_number(comparison.p_value),
                "p_holm": json_number(comparison.adjusted_p),
            }
        return entry


@dataclass(frozen=True)
class StudyComparison:
    """Every configuration's standing, in the ranking's order (best first)."""

    standings: list[Standing]
    metric: str = RANKING_METRIC
    confidence: float = CONFIDENCE
    alpha: float = ALPHA

    @property
    def best(self) -> Standing | None:
        return self.standings[0] if self.standings else None

    @property
    def top_group(self) -> list[Standing]:
        return [standing for standing in self.standings if standing.in_top_group]

    @property
    def compared(self) -> bool:
        """Whether any configuration could be tested against the best (two or more shared seeds)."""
        return any(standing.comparison is not None and standing.comparison.n >= 2 for standing in self.standings)

    def sentence(self) -> str:
        return conclusion(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "confidence": self.confidence,
            "alpha": self.alpha,
            "method": METHOD,
            "conclusion": self.sentence(),
            "top_group": [standing.label for standing in self.top_group],
            "configurations": [standing.to_json() for standing in self.standings],
        }


def compare_configurations(
    configurations: Sequence[Configuration], varying: Sequence[str], metric: str = RANKING_METRIC
) -> StudyComparison:
    """The configurations (ranked, best first) against the first, on `metric` by seed."""
    by_seed = [
        {trial.seed: trial.metrics[metric] for trial in configuration.trials if metric in trial.metrics}
        for configuration in configurations
    ]
    comparisons = compare_with_best(by_seed) if configurations else []
    standings = [
        Standing(configuration, configuration_label(configuration, varying), estimate(list(values.values())), compared)
        for configuration, values, compared in zip(configurations, by_seed, comparisons, strict=True)
    ]
    return StudyComparison(standings, metric)


def configuration_label(configuration: Configuration, varying: Sequence[str]) -> str:
    """What tells the configuration apart: `2 fusion layers` where one layer count varies, the variant's name where
    only the variant does, else `fusion=2 image=1`; its id where nothing varies."""
    config = configuration.config
    if not varying:
        return f"configuration {configuration.config_id}"
    if len(varying) == 1:
        key = varying[0]
        value = config.get(key)
        if key in LAYER_WORDS:
            return f"{value} {LAYER_WORDS[key]}{'' if value == 1 else 's'}"
        if key == "model.variant":
            return str(value)
    return describe_values({key: config.get(key) for key in varying})


def estimate_text(interval: Estimate, digits: int = 3) -> str:
    """`0.843 [0.820, 0.866], 8 seeds`; `0.843, 1 seed` where there is no interval."""
    seeds = f"{interval.n} seed{'' if interval.n == 1 else 's'}"
    if math.isnan(interval.low):
        return f"{interval.mean:.{digits}f}, {seeds}"
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}], {seeds}"


def interval_text(low: float, high: float, digits: int = 4) -> str:
    """`[0.8200, 0.8660]`, or `–` where there is no interval (a single value)."""
    return "–" if math.isnan(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def p_value_text(p_value: float) -> str:
    """`0.003`, `<0.001`, or `–` where no test was possible: for a table's cell."""
    if math.isnan(p_value):
        return "–"
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def p_text(p_value: float) -> str:
    """`p = 0.003`, `p < 0.001`, or `p: none` where no test was possible: for a sentence."""
    if math.isnan(p_value):
        return "no test possible"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def listing(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`; past LISTED_AT_MOST items, `a, b, ... and N others`."""
    items = list(items)
    if len(items) > LISTED_AT_MOST:
        items = [*items[: LISTED_AT_MOST - 1], f"{len(items) - LISTED_AT_MOST + 1} others"]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _are(items: Sequence[Any]) -> str:
    return "is" if len(items) == 1 else "are"


def conclusion(comparison: StudyComparison) -> str:
    """The sentence that says how sure the study is of its best configuration, e.g. "2 fusion layers has the best mean
    dev score (0.843 [0.820, 0.866], 8 seeds); 1 fusion layer and 3 fusion layers are not separated from it;
    4 fusion layers is worse (p = 0.003) (paired t-test on the seeds both ran, Holm-adjusted over the comparisons
    with the best, alpha 0.05)."."""
    best = comparison.best
    metric = comparison.metric.removeprefix("selected/").replace("/", " ")
    if best is None:
        return "No configuration completed, so there is nothing to compare."
    others = comparison.standings[1:]
    if not others:
        return f"{best.label} is the only configuration ({metric} {estimate_text(best.estimate)}); nothing to compare."
    leader = f"{best.label} has the best mean {metric} ({estimate_text(best.estimate)})"
    if not comparison.compared:
        single = all(standing.estimate.n <= 1 for standing in comparison.standings)
        why = "with one seed per configuration" if single else "with fewer than two seeds shared with it"
        return (
            f"{leader}; {why} no comparison is possible, and the order of the configurations may be seed noise "
            "(more seeds, --seeds, make it testable)."
        )
    parts = [leader]
    close = [standing.label for standing in others if standing.verdict == NOT_SEPARATED]
    worse = [standing for standing in others if standing.verdict == SEPARATED]
    untested = [standing.label for standing in others if standing.verdict == TOO_FEW_SEEDS]
    if close:
        parts.append(f"{listing(close)} {_are(close)} not separated from it")
    if worse:
        described = [
            f"{standing.label} ({p_text(standing.comparison.adjusted_p if standing.comparison else math.nan)})"
            for standing in worse
        ]
        parts.append(f"{listing(described)} {_are(worse)} worse")
    if untested:
        parts.append(f"{listing(untested)} cannot be compared with it (fewer than two shared seeds)")
    return "; ".join(parts) + f" ({METHOD}, alpha {comparison.alpha:g})."


def run_summary(comparison: StudyComparison) -> dict[str, float]:
    """The numbers an MLflow parent run carries of its study's comparison: the best configuration's mean, standard
    deviation, interval and seeds, the sizes of the top group and of the field."""
    best = comparison.best
    if best is None:
        return {"summary/configurations": 0.0}
    metric = comparison.metric.removeprefix("selected/").replace("/", "_")
    interval = best.estimate
    return {
        f"summary/best_{metric}_mean": interval.mean,
        f"summary/best_{metric}_std": interval.std,
        f"summary/best_{metric}_ci_low": interval.low,
        f"summary/best_{metric}_ci_high": interval.high,
        "summary/best_seeds": float(interval.n),
        "summary/top_group_size": float(len(comparison.top_group)),
        "summary/configurations": float(len(comparison.standings)),
    }


def top_group_text(comparison: StudyComparison) -> str:
    """`2 fusion layers (3f2a9c1e), 1 fusion layer (77b0d2aa)`: the top group with its configuration ids."""
    return ", ".join(f"{standing.label} ({standing.configuration.config_id})" for standing in comparison.top_group)


def json_number(value: float) -> float | None:
    return None if math.isnan(value) else value
