"""What a finished study prints: its configurations best first with their intervals and their comparison with the
best, the top group and the sentence that says how sure the study is, the failed and retried trials, the best trial.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

from results.comparison import interval_text, p_value_text
from results.ranking import RANKING_RULE, Ranking, mean_std_text, metric_column, short, summary_frame
from results.record import RANKING_METRIC, f1_metric_of


def print_summary(
    kind: str, dataset: str, base: dict[str, Any], ranking: Ranking, table_keys: list[str], show_trials: bool
) -> None:
    """The configurations best first (RANKING_RULE) with n, mean ± std, the interval of the mean and the comparison
    with the best; the top group and the conclusion; the failed and retried trials, the exported trial."""
    import pandas as pd

    table = summary_frame(ranking, keys=table_keys)
    print(f"\n{kind} on {dataset}: {len(ranking.trials)} trials, {len(ranking.completed)} succeeded")
    print(textwrap.fill(RANKING_RULE.replace("`", ""), width=120))
    if not table.empty:
        f1 = f1_metric_of(dataset)
        shown = {"trial": table["run_ids"].str.replace(";", ",")} if show_trials else {}
        shown.update({key: table[key].map(short) for key in table_keys})
        shown["n"] = table["n"]
        for metric in (RANKING_METRIC, "selected/test/acc", f"selected/test/{f1}"):
            column = metric_column(metric)
            means, stds = table[f"{column}_mean"], table[f"{column}_std"]
            # "dev score", "test acc", "test f1_weighted"
            shown[column.replace("_", " ", 1)] = [
                mean_std_text(mean, std) for mean, std in zip(means, stds, strict=True)
            ]
            if metric == RANKING_METRIC:
                shown["dev 95% CI"] = [
                    interval_text(low, high) for low, high in zip(table[f"{column}_ci_low"],
                                                                  table[f"{column}_ci_high"], strict=True)
                ]  # fmt: skip
                shown["best - this [95% CI]"] = [
                    comparison_text(difference, low, high)
                    for difference, low, high in zip(table["vs_best_difference"], table["vs_best_ci_low"],
                                                     table["vs_best_ci_high"], strict=True)
                ]  # fmt: skip
                shown["Holm p"] = table["vs_best_p_holm"].map(p_value_text)
                shown["vs best"] = table["vs_best"]
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(pd.DataFrame(shown).to_string(index=False))
        comparison = ranking.comparison
        print(f"\ntop group (not separated from the best): {', '.join(s.label for s in comparison.top_group)}")
        print(textwrap.fill(comparison.sentence(), width=120))
    failed = [record for record in ranking.trials if record.status == "ERROR"]
    if failed:
        print(f"\nfailed trials ({len(failed)}):")
        for record in failed:
            varied = {key: (record.config or {}).get(key) for key in [*table_keys, "seed"]}
            print(f"  {record.trial_id} {varied}: {record.error}")
    if ranking.retried:
        print(f"\nretried trials ({len(ranking.retried)}), restarted from their last checkpoint:")
        for record in ranking.retried:
            print(f"  {record.trial_id}: {record.retries} retries, ended {record.status}")
    if ranking.best is not None:
        best = ranking.best.best_trial()
        differing = {key: short(value) for key, value in (best.config or {}).items() if base.get(key) != value}
        print(
            f"exported trial (the best configuration's best seed): {best.trial_id} {differing}: dev score "
            f"{best.metrics[RANKING_METRIC]:.4f}, test acc {best.metrics.get('selected/test/acc', math.nan):.4f}"
        )


def comparison_text(difference: float, low: float, high: float) -> str:
    """`+0.0532 [0.0121, 0.0943]`: the best minus this configuration on their shared seeds; `–` for the best."""
    if math.isnan(difference):
        return "–"
    return f"{difference:+.4f} {interval_text(low, high)}"
