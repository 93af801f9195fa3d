"""The files of one data set's report: best_config.json (loadable by the trainer, with the top group and the
sentence that says how sure the study is) with its provenance, comparison.json, summary.csv, summary.md and
report.html.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clmlf.safe_files import write_text_atomically
from report.analyses import AnalysisFiles, analyses_for
from report.page import report_html
from report.tables import failed_rows, retried_rows, studies_of, summary_rows
from results.comparison import estimate_text
from results.ranking import RANKING_RULE, RERUN, Ranking, best_config_document, summary_frame
from results.record import CONFIG_KEYS, RANKING_METRIC, TEST_METRICS

BEST_CONFIG = "best_config.json"
PROVENANCE = "best_config.provenance.json"
COMPARISON = "comparison.json"


def write_dataset_report(
    ranking: Ranking,
    folder: Path,
    analyses: Sequence[AnalysisFiles] = (),
    searched: Sequence[Path] = (),
    only_dataset: bool = True,
    tune_dirs: Sequence[str] = (),
) -> list[Path]:
    """The report files in `folder`. The page shows the analyses among `analyses` that belong to this data set's
    models (read from files, never drawn here); without any, it names the folders `searched` and the command that
    draws them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if ranking.best is not None:
        written += write_best_config(ranking, folder)
    else:
        # Nothing completed: there is no configuration to export; the summary and the page say so.
        for stale in (folder / BEST_CONFIG, folder / PROVENANCE):
            stale.unlink(missing_ok=True)
    write_text_atomically(folder / COMPARISON, json.dumps(ranking.comparison.to_json(), indent=2) + "\n")
    write_text_atomically(folder / "summary.csv", summary_frame(ranking).to_csv(index=False))
    write_text_atomically(folder / "summary.md", summary_markdown(ranking))
    shown = analyses_for(ranking.dataset, analyses, only_dataset)
    write_text_atomically(folder / "report.html", report_html(ranking, shown, searched, tune_dirs))
    return [*written, folder / COMPARISON, folder / "summary.csv", folder / "summary.md", folder / "report.html"]


def write_best_config(ranking: Ranking, folder: Path) -> list[Path]:
    best = ranking.best
    document = best_config_document(ranking)
    assert best is not None and document is not None
    best_trial = best.best_trial()
    config = best_trial.config or {}
    assert list(config) == list(CONFIG_KEYS), "the exported config must hold exactly the trainer's flat keys"
    interval = best.estimate(RANKING_METRIC)
    provenance = {
        "dataset": ranking.dataset,
        "config_id": best.config_id,
        "ranked_by": f"mean of {RANKING_METRIC} over seeds (dev split; the test split never ranks)",
        "dev_score_mean": best.mean(RANKING_METRIC),
        "dev_score_std": _json_number(best.std(RANKING_METRIC)),
        "dev_score_ci": [_json_number(interval.low), _json_number(interval.high)],
        "top_group": [standing.configuration.config_id for standing in ranking.comparison.top_group],
        "conclusion": ranking.comparison.sentence(),
        "seeds": best.seeds,
        "n": best.n,
        "best_seed": best_trial.seed,
        "best_run_id": best_trial.run_id,
        "best_trial_id": best_trial.trial_id,
        "run_ids": [trial.run_id for trial in best.trials],
        "trial_ids": [trial.trial_id for trial in best.trials],
        "studies": studies_of(best.trials),
        "test_at_selection_mean": {metric: _json_number(best.mean(metric)) for metric in TEST_METRICS},
        "rerun": RERUN,
    }
    config_path = folder / BEST_CONFIG
    provenance_path = folder / PROVENANCE
    write_text_atomically(config_path, json.dumps(document, indent=2) + "\n")
    write_text_atomically(provenance_path, json.dumps(provenance, indent=2) + "\n")
    return [config_path, provenance_path]


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def summary_markdown(ranking: Ranking) -> str:
    lines = [f"# Study summary: {ranking.dataset}", "", RANKING_RULE, ""]
    lines += [
        f"{len(ranking.completed)} completed trial(s) in {len(ranking.configurations)} configuration(s); "
        f"{len(ranking.failed)} failed or unfinished trial(s), left out of every mean.",
        "",
    ]
    if ranking.best is not None:
        best = ranking.best
        comparison = ranking.comparison
        top = ", ".join(f"{standing.label} (`{standing.configuration.config_id}`)" for standing in comparison.top_group)
        lines += [
            f"**{comparison.sentence()}**",
            "",
            f"Best configuration: `{best.config_id}` (dev score {estimate_text(best.estimate(RANKING_METRIC), 4)}, "
            f"mean ± std {best.mean_std(RANKING_METRIC)}; seed {best.best_trial().seed} in best_config.json).",
            "",
            f"Top group (not separated from the best): {top}.",
            "",
        ]
    else:
        lines += ["No trial completed, so there is no best configuration.", ""]
    lines += ["## Configurations", "", *markdown_table(*summary_rows(ranking)), ""]
    lines += ["## Failed trials", ""]
    header, rows = failed_rows(ranking)
    if rows:
        lines += [*markdown_table(header, rows), "", "Full error texts are in report.html.", ""]
    else:
        lines += ["None.", ""]
    lines += ["## Retried trials", "", *(markdown_table(*retried_rows(ranking)) if ranking.retried else ["None."]), ""]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines
