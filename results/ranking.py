"""Configurations (the completed trials that differ only in the seed), the one rule that ranks them, and the
summary table that the study scripts print and the report writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from results.comparison import METHOD, StudyComparison, compare_configurations
from results.record import CONFIG_KEYS, RANKING_METRIC, RANKING_MODE, TRIAL_METRICS, TrialRecord
from results.statistics import CONFIDENCE, Estimate, estimate

if TYPE_CHECKING:
    import pandas as pd


def configuration_key(config: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in config.items() if key != "seed"}, sort_keys=True, default=str)


def configuration_id(config: dict[str, Any]) -> str:
    return hashlib.sha1(configuration_key(config).encode()).hexdigest()[:8]


# The ranking rule in words, for the printed summary, the report and the docs.
RANKING_RULE = (
    f"Configurations are ranked by the mean over seeds of `{RANKING_METRIC}` (the dev split at the epoch selected on "
    "dev), compared at equal n: those run on the most seeds come first, then those on fewer seeds (a failed seed, "
    "a shorter study), each group by its mean. ± is the sample standard deviation over seeds, the interval the "
    f"{CONFIDENCE:.0%} confidence interval of the mean (Student t). Each configuration is compared with the best on "
    "the seeds both ran (paired t-test, Holm-adjusted over the comparisons with the best); the top group is the "
    "configurations not separated from the best. Test numbers are read at the selected epoch of each run and never "
    "rank anything."
)


def _better_first(value: float) -> float:
    """A sort key that puts the better value of the ranking metric first."""
    return -value if RANKING_MODE == "max" else value


@dataclass
class Configuration:
    """The completed trials that share one flat config apart from the seed, ordered by seed."""

    config_id: str
    trials: list[TrialRecord]

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[0].config or {}

    @property
    def n(self) -> int:
        return len(self.trials)

    @property
    def seeds(self) -> list[int]:
        return sorted(trial.seed for trial in self.trials if trial.seed is not None)

    def values(self, metric: str) -> list[float]:
        return [trial.metrics[metric] for trial in self.trials if metric in trial.metrics]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (n - 1); undefined for a single seed."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else math.nan

    def mean_std(self, metric: str) -> str:
        return mean_std_text(self.mean(metric), self.std(metric))

    def estimate(self, metric: str) -> Estimate:
        """Mean, standard deviation and the confidence interval of the mean over seeds."""
        return estimate(self.values(metric))

    def best_trial(self) -> TrialRecord:
        """The seed whose config a best config carries: the best dev score; ties go to the smaller seed, then the
        trial id, so that the choice is reproducible."""
        return min(self.trials, key=lambda t: (_better_first(t.metrics[RANKING_METRIC]), t.seed or 0, t.trial_id))


def rank_configurations(trials: Iterable[TrialRecord]) -> list[Configuration]:
    """The completed trials grouped into configurations, best first, by the one ranking rule of every study, of
    confirm and of the report (RANKING_RULE): configurations are compared at equal n. Those run on the most seeds
    come first, ranked by their mean dev score over seeds; then those on fewer seeds (a seed that failed, a study
    merged with a shorter one), ranked the same way among themselves. A mean over fewer seeds is noisier, and a
    plain mean would let one lucky seed outrank a configuration measured on several. Ties go to the config itself,
    so that every reader of a study ranks it the same way. The test split is deliberately absent: test numbers are
    read at the chosen configuration, they never choose it.
    """
    groups: dict[str, list[TrialRecord]] = {}
    for trial in trials:
        if trial.completed:
            groups.setdefault(configuration_key(trial.config or {}), []).append(trial)
    configurations = [
        Configuration(
            configuration_id(members[0].config or {}), sorted(members, key=lambda t: (t.seed or 0, t.trial_id))
        )
        for members in groups.values()
    ]
    return sorted(
        configurations,
        key=lambda c: (-c.n, _better_first(c.mean(RANKING_METRIC)), configuration_key(c.config)),
    )


@dataclass
class Ranking:
    """The trials of one data set, and their configurations best first."""

    dataset: str
    trials: list[TrialRecord]
    configurations: list[Configuration]
    # The config keys (seed aside) whose values differ between the configurations.
    varying: list[str]

    @property
    def completed(self) -> list[TrialRecord]:
        return [trial for trial in self.trials if trial.completed]

    @property
    def failed(self) -> list[TrialRecord]:
        return [trial for trial in self.trials if not trial.completed]

    @property
    def retried(self) -> list[TrialRecord]:
        return [trial for trial in self.trials if trial.retries]

    @property
    def best(self) -> Configuration | None:
        return self.configurations[0] if self.configurations else None

    def of_kind(self, kind: str) -> list[TrialRecord]:
        return [trial for trial in self.completed if trial.study_kind == kind]

    @cached_property
    def comparison(self) -> StudyComparison:
        """Every configuration against the best on the ranking metric, and the top group."""
        return compare_configurations(self.configurations, self.varying)


# How best_config.json is trained again; its `config` is what the trainer loads.
RERUN = "python -m clmlf.train --config best_config.json --output <folder>"


def best_config_document(ranking: Ranking) -> dict[str, Any] | None:
    """best_config.json: the best seed of the best configuration as the trainer's flat config (`config`, what
    `python -m clmlf.train --config` loads), with the sentence that says how sure the study is and the top group
    (the configurations not separated from the best), each with its interval. None where nothing completed."""
    comparison = ranking.comparison
    best = comparison.best
    if best is None:
        return None
    best_trial = best.configuration.best_trial()
    return {
        "conclusion": comparison.sentence(),
        "dataset": ranking.dataset,
        "ranked_by": f"mean of {RANKING_METRIC} over seeds (dev split; the test split never ranks)",
        "best": {**best.to_json(), "best_seed": best_trial.seed},
        "top_group": [standing.to_json() for standing in comparison.top_group],
        "method": f"{CONFIDENCE:.0%} Student-t intervals of the mean; {METHOD}, alpha {comparison.alpha:g}",
        "rerun": RERUN,
        "config": best_trial.config,
    }


def rank(dataset: str, trials: list[TrialRecord]) -> Ranking:
    configurations = rank_configurations(trials)
    return Ranking(dataset, trials, configurations, varying_keys([c.config for c in configurations]))


def varying_keys(configs: Sequence[dict[str, Any]], *, include_seed: bool = False) -> list[str]:
    """Config keys with more than one value among the configs, in the config's own key order."""
    return [
        key
        for key in CONFIG_KEYS
        if (include_seed or key != "seed") and len({json.dumps(config.get(key)) for config in configs}) > 1
    ]


def without_duplicates(trials: list[TrialRecord]) -> tuple[list[TrialRecord], int]:
    """A study read both from MLflow and from its Tune folder lists each trial twice; MLflow's copy is kept.

    Tune's trial ids are unique within a study, and the MLflow child run carries the same id.
    """
    logged = {(trial.study_name, trial.trial_id) for trial in trials if trial.run_id is not None}
    unique = [trial for trial in trials if trial.run_id is not None or (trial.study_name, trial.trial_id) not in logged]
    return unique, len(trials) - len(unique)


def metric_column(metric: str) -> str:
    return metric.removeprefix("selected/").replace("/", "_")


# The comparison with the best in summary.csv: best minus this configuration on their shared seeds, with its
# interval, the paired t-test's p before and after Holm's correction, the verdict and membership of the top group.
COMPARISON_COLUMNS = ("vs_best_shared_seeds", "vs_best_difference", "vs_best_ci_low", "vs_best_ci_high", "vs_best_p",
                      "vs_best_p_holm", "vs_best", "top_group")  # fmt: skip


def summary_frame(ranking: Ranking, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration, best first: rank, config id, the config keys that tell the rows apart (default:
    the varying ones), the number of seeds n, mean, std and confidence interval of the mean over seeds of every dev
    and test metric, the comparison with the best on the dev score (COMPARISON_COLUMNS), the seeds, the studies and
    the trials (MLflow run ids where read from MLflow, else Tune's trial ids)."""
    import pandas as pd

    keys = list(ranking.varying if keys is None else keys)
    columns = ["rank", "config_id", *keys, "n"]
    columns += [
        f"{metric_column(metric)}_{statistic}"
        for metric in TRIAL_METRICS
        for statistic in ("mean", "std", "ci_low", "ci_high")
    ]
    columns += [*COMPARISON_COLUMNS, "seeds", "studies", "run_ids"]
    rows = []
    standings = ranking.comparison.standings
    for rank_number, (configuration, standing) in enumerate(zip(ranking.configurations, standings, strict=True), 1):
        row: dict[str, Any] = {"rank": rank_number, "config_id": configuration.config_id}
        row.update({key: configuration.config.get(key) for key in keys})
        row["n"] = configuration.n
        for metric in TRIAL_METRICS:
            interval = configuration.estimate(metric)
            column = metric_column(metric)
            row[f"{column}_mean"], row[f"{column}_std"] = interval.mean, interval.std
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = interval.low, interval.high
        comparison = standing.comparison
        if comparison is not None:
            row["vs_best_shared_seeds"] = comparison.n
            row["vs_best_difference"] = comparison.difference
            row["vs_best_ci_low"], row["vs_best_ci_high"] = comparison.low, comparison.high
            row["vs_best_p"], row["vs_best_p_holm"] = comparison.p_value, comparison.adjusted_p
        row["vs_best"] = standing.verdict
        row["top_group"] = standing.in_top_group
        row["seeds"] = ";".join(str(seed) for seed in configuration.seeds)
        row["studies"] = ";".join(sorted({trial.study_name for trial in configuration.trials}))
        row["run_ids"] = ";".join(trial.label for trial in configuration.trials)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    # A count, empty on the best's own row.
    frame["vs_best_shared_seeds"] = frame["vs_best_shared_seeds"].astype("Int64")
    return frame


def mean_std_text(mean: float, std: float) -> str:
    """`0.7100 ± 0.0100`; the mean alone for a single seed; `–` for no value."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def short(value: Any) -> Any:
    """A float with four significant digits, for tables printed on a console; anything else as it is."""
    return float(f"{value:.4g}") if isinstance(value, float) else value
