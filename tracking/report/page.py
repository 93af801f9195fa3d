"""report.html: one self-contained page per data set, its sections in reading order."""

from __future__ import annotations

from tracking.report.figures import importances_html, layer_curves_html, loss_effects_html
from tracking.report.markup import PAGE_STYLE, escape, html_table, note, section
from tracking.report.paper import ablation_html, confirmation_html, studies_vs_paper_html
from tracking.report.race import races_html
from tracking.report.tables import failed_rows, retried_rows, studies_of, summary_rows, text
from tracking.results.ranking import RANKING_RULE, Ranking
from tracking.results.record import RANKING_METRIC, TRIAL_METRICS, f1_metric_of


def report_html(ranking: Ranking, analyses: str | None = None) -> str:
    """The page; `analyses` is the HTML of the best model's analyses (tracking/analyses/report.py), if any."""
    title = f"CLMLF study report: {ranking.dataset}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        overview_html(ranking),
        best_config_html(ranking),
        summary_html(ranking),
        races_html(ranking),
        layer_curves_html(ranking),
        loss_effects_html(ranking),
        importances_html(ranking),
        studies_vs_paper_html(ranking),
        analyses_html(ranking, analyses),
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
    parts = [
        f"<p>Configuration <code>{best.config_id}</code>: dev score {escape(best.mean_std(RANKING_METRIC))} over "
        f"{best.n} seed(s) {escape(best.seeds)}; best_config.json carries seed {best_trial.seed} "
        f"(run {escape(best_trial.label)}). At the selected epochs, test accuracy "
        f"{escape(best.mean_std('selected/test/acc'))} and test {f1} "
        f"{escape(best.mean_std(f'selected/test/{f1}'))}.</p>"
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
    numeric = range(len(header) - len(TRIAL_METRICS) - 1, len(header))
    return section("Configurations", html_table(header, rows, numeric=numeric, highlight_first=True))


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


def analyses_html(ranking: Ranking, analyses: str | None) -> str:
    if analyses is None:
        given = "the best trial's checkpoint was not given (--best-checkpoint)"
        why = "no trial completed" if ranking.best is None else given
        return section("The best model's analyses (the paper's Figures 4-6)", note(f"Not drawn: {why}."))
    return section("The best model's analyses (the paper's Figures 4-6)", analyses)
