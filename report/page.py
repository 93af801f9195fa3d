"""report.html: one self-contained page per data set, its sections in reading order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from report.analyses import AnalysisFiles, analysis_fragment, missing_analyses_note
from report.figures import importances_html, layer_curves_html, loss_effects_html
from report.markup import PAGE_STYLE, escape, html_table, note, section
from report.paper import ablation_html, confirmation_html, studies_vs_paper_html
from report.race import races_html
from report.tables import failed_rows, retried_rows, studies_of, summary_rows, text, top_group_rows
from results.comparison import METHOD, estimate_text
from results.ranking import RANKING_RULE, Ranking
from results.record import RANKING_METRIC, f1_metric_of


def report_html(
    ranking: Ranking,
    analyses: Sequence[AnalysisFiles] = (),
    searched: Sequence[Path] = (),
    tune_dirs: Sequence[str] = (),
) -> str:
    """The page; `analyses` are the best model's analyses read from their files (`searched`: where they were
    looked for, named on the page when none were found)."""
    title = f"CLMLF study report: {ranking.dataset}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        overview_html(ranking),
        best_config_html(ranking),
        summary_html(ranking),
        races_html(ranking, tune_dirs),
        layer_curves_html(ranking),
        loss_effects_html(ranking),
        importances_html(ranking),
        studies_vs_paper_html(ranking),
        analyses_html(ranking, analyses, searched),
        ablation_html(ranking),
        confirmation_html(ranking),
        failed_html(ranking),
        retried_html(ranking),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def overview_html(ranking: Ranking) -> str:
    rows = [[s["kind"], s["name"], s["parent_run_id"] or "–", s["source"]] for s in studies_of(ranking.trials)]
    return "\n".join(
        [
            f"<p>{len(ranking.trials)} trial(s): {len(ranking.completed)} completed in "
            f"{len(ranking.configurations)} configuration(s), {len(ranking.failed)} failed or unfinished.</p>",
            f"<p>{escape(RANKING_RULE).replace('`', '')}</p>",
            html_table(["study kind", "study name", "parent run", "read from"], rows),
        ]
    )


def best_config_html(ranking: Ranking) -> str:
    best = ranking.best
    if best is None:
        return section(
            "Best configuration",
            note("No trial completed, so there is no best configuration."),
            '<table id="best-config"><tbody><tr><td>none</td></tr></tbody></table>',
        )
    best_trial = best.best_trial()
    f1 = f1_metric_of(ranking.dataset)
    comparison = ranking.comparison
    top = ", ".join(f"{standing.label} ({standing.configuration.config_id})" for standing in comparison.top_group)
    parts = [
        f'<p id="conclusion"><strong>{escape(comparison.sentence())}</strong></p>',
        f'<p id="top-group">Top group, the configurations not separated from the best: {escape(top)}.</p>',
        f"<p>Configuration <code>{best.config_id}</code>: dev score "
        f"{escape(estimate_text(best.estimate(RANKING_METRIC), 4))} (mean [95% confidence interval], seeds "
        f"{escape(best.seeds)}; ± std {escape(best.mean_std(RANKING_METRIC))}); best_config.json carries seed "
        f"{best_trial.seed} (run {escape(best_trial.label)}) and the top group. At the selected epochs, test "
        f"accuracy {escape(estimate_text(best.estimate('selected/test/acc'), 4))} and test {f1} "
        f"{escape(estimate_text(best.estimate(f'selected/test/{f1}'), 4))}.</p>",
    ]
    config = best_trial.config or {}
    rows = [[key, text(value)] for key, value in config.items()]
    varying = [index for index, key in enumerate(config) if key in ranking.varying]
    parts.append(html_table(["setting", "value"], rows, table_id="best-config", highlight_rows=varying))
    if varying:
        parts.append(note("Bold: the settings that vary between the configurations of these studies."))
    return section("Best configuration", *parts)


def summary_html(ranking: Ranking) -> str:
    header, rows = summary_rows(ranking)
    if not rows:
        return section("Configurations", note("No trial completed."))
    numeric = [index for index in range(header.index("n"), len(header)) if header[index] != "vs best"]
    return section(
        "Configurations",
        html_table(header, rows, numeric=numeric, highlight_first=True, top_rows=top_group_rows(ranking)),
        note(
            "Shaded: the top group, the configurations not separated from the best. The dev score's interval is the "
            "95% confidence interval of its mean over seeds (Student t). best − this: the best's dev score minus "
            "this configuration's, averaged over the seeds both ran, with its 95% interval; Holm p: the "
            f"{METHOD} (the intervals are not adjusted). separated: Holm p below 0.05 with the best ahead."
        ),
    )


def failed_html(ranking: Ranking) -> str:
    header, rows = failed_rows(ranking)
    if not rows:
        return section("Failed and unfinished trials", note("None."))
    # The whole error text under each row's one-line summary, folded so that long tracebacks stay readable.
    full_errors = {
        index: trial.failure or ""
        for index, (row, trial) in enumerate(zip(rows, ranking.failed, strict=True))
        if (trial.failure or "").strip() != row[-1]
    }
    return section(
        "Failed and unfinished trials",
        html_table(header, rows, error_column=len(header) - 1, folded_errors=full_errors),
        note("These trials are left out of every mean and of the ranking."),
    )


def retried_html(ranking: Ranking) -> str:
    if not ranking.retried:
        return section("Retried trials", note("None."))
    return section(
        "Retried trials",
        html_table(*retried_rows(ranking)),
        note("Restarted from their last checkpoint after a failure, such as a lost worker node."),
    )


def analyses_html(ranking: Ranking, analyses: Sequence[AnalysisFiles], searched: Sequence[Path]) -> str:
    heading = "The best model's analyses (the paper's Figures 4-6)"
    if not analyses:
        if ranking.best is None:
            return section(heading, note("Not drawn: no trial completed."))
        return section(heading, missing_analyses_note(searched))
    parts = []
    for files in analyses:
        if len(analyses) > 1:
            parts.append(f"<h3>{escape(files.folder)}</h3>")
        parts.append(analysis_fragment(files.data, files.pngs, heading_level=4 if len(analyses) > 1 else 3))
        parts.append(note(f"Read from {files.folder}."))
    return section(heading, *parts)
