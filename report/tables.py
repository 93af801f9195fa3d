"""The report's tables as rows of text, shared by summary.md and report.html."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from results.comparison import interval_text, p_value_text
from results.ranking import Ranking, metric_column
from results.record import RANKING_METRIC, TRIAL_METRICS, TrialRecord, error_summary


def text(value: Any) -> str:
    """A config value as best_config.json spells it (null, true), floats without trailing noise."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# The columns of the comparison with the best, after the dev score's mean ± std.
COMPARISON_HEADER = ["dev score 95% CI", "best − this [95% CI]", "Holm p", "vs best"]
OTHER_METRICS = [metric for metric in TRIAL_METRICS if metric != RANKING_METRIC]


def summary_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    """One row per configuration, best first: its varying settings, n, the dev score's mean ± std and confidence
    interval, its comparison with the best (best minus this on the shared seeds with its interval, the Holm-adjusted
    p, the verdict), then every other metric's mean ± std."""
    header = ["rank", "config", *ranking.varying, "n", metric_column(RANKING_METRIC), *COMPARISON_HEADER]
    header += [metric_column(metric) for metric in OTHER_METRICS]
    rows = []
    for rank, standing in enumerate(ranking.comparison.standings, start=1):
        configuration, comparison = standing.configuration, standing.comparison
        difference = (
            "–"
            if comparison is None
            else f"{comparison.difference:+.4f} {interval_text(comparison.low, comparison.high)}"
        )
        rows.append(
            [
                str(rank),
                configuration.config_id,
                *(text(configuration.config[key]) for key in ranking.varying),
                str(configuration.n),
                configuration.mean_std(RANKING_METRIC),
                interval_text(standing.estimate.low, standing.estimate.high),
                difference,
                "–" if comparison is None else p_value_text(comparison.adjusted_p),
                standing.verdict,
                *(configuration.mean_std(metric) for metric in OTHER_METRICS),
            ]
        )
    return header, rows


def top_group_rows(ranking: Ranking) -> list[int]:
    """The positions of the summary's rows that are in the top group."""
    return [index for index, standing in enumerate(ranking.comparison.standings) if standing.in_top_group]


def failed_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    """One row per failed or unfinished trial; the error column holds the exception line that ended it."""
    header = ["study", "trial", "run id", "seed", "status", "error"]
    rows = [
        [
            trial.study_name,
            trial.trial_id,
            trial.run_id or "–",
            text(trial.seed),
            trial.status,
            error_summary(trial.failure or ""),
        ]
        for trial in ranking.failed
    ]
    return header, rows


def retried_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    """Trials restarted from their last checkpoint (a lost node, an exception), and how they ended."""
    header = ["study", "trial", "retries", "status"]
    return header, [[trial.study_name, trial.trial_id, str(trial.retries), trial.status] for trial in ranking.retried]


def studies_of(trials: Iterable[TrialRecord]) -> list[dict[str, Any]]:
    """The studies the trials come from: kind, name, parent run and where they were read."""
    studies = {(trial.study_kind, trial.study_name, trial.parent_run_id or "", trial.source): None for trial in trials}
    return [
        {"kind": kind, "name": name, "parent_run_id": parent or None, "source": source}
        for kind, name, parent, source in sorted(studies)
    ]
