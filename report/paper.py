"""The studies next to the paper: the ablation beside its Table 3 (Table 6 for the aspect-based Twitter sets), the
confirmation runs beside its CLMLF row (Table 1; Table 6), and every study's best configurations beside the rows of
their model variants.

The paper's numbers (clmlf/paper_results.py) are test accuracy and F1 with the model selected on dev; its F1 is each
data set's selection metric here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clmlf.config import VARIANTS
from clmlf.paper_results import PAPER_RESULTS, PaperResult, tables_label
from report.markup import html_table, note, section
from results.ranking import Configuration, Ranking, rank_configurations
from results.record import RANKING_METRIC, TrialRecord, f1_metric_of

# Table 3's rows, in its order.
ABLATION_ORDER = ("text-only", "image-only", "mlf", "mlf-lbcl", "mlf-dbcl", "full")


def versus(configuration: Configuration, metric: str, paper: float | None) -> list[str]:
    """Ours (mean ± std), the paper's number and ours minus the paper's."""
    ours = configuration.mean(metric)
    if paper is None:
        return [configuration.mean_std(metric), "–", "–"]
    difference = "–" if math.isnan(ours) else f"{ours - paper:+.4f}"
    return [configuration.mean_std(metric), f"{paper:.4f}", difference]


def tables_of(results: Sequence[PaperResult], default: str) -> str:
    """The tables that all of `results` are printed in ("Table 3"), else every table any of them is in."""
    if not results:
        return default
    common = set.intersection(*(set(result.tables) for result in results))
    return tables_label(sorted(common or {table for result in results for table in result.tables}))


def no_paper_numbers(dataset: str) -> str:
    return f"The paper reports no numbers for the {dataset} data set, so only ours are shown."


def best_per_variant_html(dataset: str, trials: list[TrialRecord], paper: dict[str, PaperResult] | None) -> str:
    """Per model variant, the configuration best on dev (mean over seeds) beside the paper's row for it."""
    f1 = f1_metric_of(dataset)
    best: dict[str, Configuration] = {}
    for configuration in rank_configurations(trials):
        best.setdefault(configuration.config["model.variant"], configuration)
    header = ["variant", "config", "n", "dev score"]
    if paper:
        header += ["paper row", "test acc", "paper acc", "Δ acc", f"test {f1}", "paper F1", "Δ F1"]
    else:
        header += ["test acc", f"test {f1}"]
    rows = []
    for variant in sorted(best, key=lambda v: ABLATION_ORDER.index(v) if v in ABLATION_ORDER else len(VARIANTS)):
        configuration = best[variant]
        row = [variant, configuration.config_id, str(configuration.n), configuration.mean_std(RANKING_METRIC)]
        if paper:
            result = paper.get(variant)
            row.append(f"{result.row} ({result.source})" if result else "–")
            row += versus(configuration, "selected/test/acc", result.acc if result else None)
            row += versus(configuration, f"selected/test/{f1}", result.f1 if result else None)
        else:
            row += [configuration.mean_std("selected/test/acc"), configuration.mean_std(f"selected/test/{f1}")]
        rows.append(row)
    return html_table(header, rows, numeric=[2, 3, *range(5 if paper else 4, len(header))])


def ablation_html(ranking: Ranking) -> str:
    paper = PAPER_RESULTS.get(ranking.dataset)
    heading = f"Ablation next to the paper's {tables_of(list((paper or {}).values()), 'Table 3')}"
    trials = ranking.of_kind("ablation")
    if not trials and len({(trial.config or {})["model.variant"] for trial in ranking.completed}) > 1:
        trials = ranking.completed
    if not trials:
        return section(
            heading, note("No ablation study among the inputs and only one model variant: no ablation table.")
        )
    f1 = f1_metric_of(ranking.dataset)
    if paper:
        explanation = (
            "Each variant's row is its configuration best on dev (mean over seeds); test at the selected epochs; "
            f"Δ = ours − paper. The paper's F1 for this data set is {f1.replace('_', ' ')}."
        )
    else:
        explanation = no_paper_numbers(ranking.dataset)
    return section(heading, best_per_variant_html(ranking.dataset, trials, paper), note(explanation))


def studies_vs_paper_html(ranking: Ranking) -> str:
    """Every study's trials together: what the best configuration of each variant reaches against the paper's row
    for it (the only comparison with the paper that a layer sweep or a search gets)."""
    paper = PAPER_RESULTS.get(ranking.dataset)
    variants = {(trial.config or {}).get("model.variant") for trial in ranking.completed}
    shown = [result for variant, result in (paper or {}).items() if variant in variants]
    heading = f"Best configurations of all studies next to the paper's {tables_of(shown, 'results')}"
    if not ranking.completed:
        return section(heading, note("No trial completed."))
    if not paper:
        return section(heading, note(no_paper_numbers(ranking.dataset)))
    f1 = f1_metric_of(ranking.dataset)
    return section(
        heading,
        best_per_variant_html(ranking.dataset, ranking.completed, paper),
        note(
            "Per variant, the configuration best on dev (mean over seeds) among the trials of every study here, with "
            "test at the selected epochs beside the paper's row for that variant; Δ = ours − paper. The paper's F1 "
            f"for this data set is {f1.replace('_', ' ')}."
        ),
    )


def confirmation_html(ranking: Ranking) -> str:
    paper = PAPER_RESULTS.get(ranking.dataset, {}).get("full")
    heading = f"Confirmation runs next to the paper's {paper.tables[0] if paper else 'Table 1'} (CLMLF)"
    trials = ranking.of_kind("confirm")
    if not trials:
        return section(heading, note("No confirm study among the inputs for this data set."))
    f1 = f1_metric_of(ranking.dataset)
    header = ["config", "variant", "n", "seeds", "dev score"]
    if paper:
        header += ["test acc", "paper acc", "Δ acc", f"test {f1}", "paper F1", "Δ F1"]
    else:
        header += ["test acc", f"test {f1}"]
    rows = []
    for configuration in rank_configurations(trials):
        row = [
            configuration.config_id,
            str(configuration.config["model.variant"]),
            str(configuration.n),
            ",".join(str(seed) for seed in configuration.seeds),
            configuration.mean_std(RANKING_METRIC),
        ]
        if paper:
            row += versus(configuration, "selected/test/acc", paper.acc)
            row += versus(configuration, f"selected/test/{f1}", paper.f1)
        else:
            row += [configuration.mean_std("selected/test/acc"), configuration.mean_std(f"selected/test/{f1}")]
        rows.append(row)
    table = html_table(header, rows, numeric=[2, *range(4, len(header))], highlight_first=True)
    if paper:
        explanation = (
            f"Paper: CLMLF on {ranking.dataset} ({paper.source}), accuracy {paper.acc:.4f}, "
            f"{f1.replace('_', ' ')} {paper.f1:.4f}. Ours: mean ± std over the confirmation seeds; Δ = ours − paper."
        )
    else:
        explanation = no_paper_numbers(ranking.dataset)
    return section(heading, table, note(explanation))
