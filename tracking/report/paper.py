"""The studies next to the paper: the ablation beside its Table 3 and the confirmation runs beside its Table 1.

The paper's numbers are test accuracy and F1 with the model selected on dev; its F1 is weighted for the MVSA sets
and macro for HFM, which is each data set's selection metric here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clmlf.config import VARIANTS
from tracking.report.markup import html_table, note, section
from tracking.results.ranking import Configuration, Ranking, rank_configurations
from tracking.results.record import RANKING_METRIC, f1_metric_of


@dataclass(frozen=True)
class PaperResult:
    row: str
    acc: float
    f1: float


# Tables 1 and 3 of the paper (Li et al., Findings of NAACL 2022): the unimodal baselines, the ablation rows and
# the full model.
PAPER_RESULTS: dict[str, dict[str, PaperResult]] = {
    "mvsa-single": {
        "text-only": PaperResult("BERT", 0.7111, 0.6970),
        "image-only": PaperResult("ResNet-50", 0.6467, 0.6155),
        "mlf": PaperResult("+MLF", 0.7111, 0.7101),
        "mlf-lbcl": PaperResult("+MLF, LBCL", 0.7378, 0.7291),
        "mlf-dbcl": PaperResult("+MLF, DBCL", 0.7356, 0.7276),
        "full": PaperResult("CLMLF", 0.7533, 0.7346),
    },
    "mvsa-multiple": {
        "text-only": PaperResult("BERT", 0.6759, 0.6624),
        "image-only": PaperResult("ResNet-50", 0.6188, 0.6098),
        "mlf": PaperResult("+MLF", 0.7059, 0.6849),
        "mlf-lbcl": PaperResult("+MLF, LBCL", 0.7112, 0.6863),
        "mlf-dbcl": PaperResult("+MLF, DBCL", 0.7153, 0.6832),
        "full": PaperResult("CLMLF", 0.7200, 0.6983),
    },
    "hfm": {
        "text-only": PaperResult("BERT", 0.8389, 0.8326),
        "image-only": PaperResult("ResNet-50", 0.7277, 0.7138),
        "mlf": PaperResult("+MLF", 0.8414, 0.8355),
        "mlf-lbcl": PaperResult("+MLF, LBCL", 0.8489, 0.8446),
        "mlf-dbcl": PaperResult("+MLF, DBCL", 0.8468, 0.8422),
        "full": PaperResult("CLMLF", 0.8543, 0.8487),
    },
}
# Table 3's rows, in its order.
ABLATION_ORDER = ("text-only", "image-only", "mlf", "mlf-lbcl", "mlf-dbcl", "full")


def versus(configuration: Configuration, metric: str, paper: float | None) -> list[str]:
    """Ours (mean ± std), the paper's number and ours minus the paper's."""
    ours = configuration.mean(metric)
    if paper is None:
        return [configuration.mean_std(metric), "–", "–"]
    difference = "–" if math.isnan(ours) else f"{ours - paper:+.4f}"
    return [configuration.mean_std(metric), f"{paper:.4f}", difference]


def ablation_html(ranking: Ranking) -> str:
    heading = "Ablation next to the paper's Table 3"
    trials = ranking.of_kind("ablation")
    if not trials and len({(trial.config or {})["model.variant"] for trial in ranking.completed}) > 1:
        trials = ranking.completed
    if not trials:
        return section(
            heading, note("No ablation study among the inputs and only one model variant: no ablation table.")
        )
    f1 = f1_metric_of(ranking.dataset)
    paper = PAPER_RESULTS.get(ranking.dataset)
    # Per variant, the configuration best on dev, as the paper selects each row on dev.
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
            row.append(result.row if result else "–")
            row += versus(configuration, "selected/test/acc", result.acc if result else None)
            row += versus(configuration, f"selected/test/{f1}", result.f1 if result else None)
        else:
            row += [configuration.mean_std("selected/test/acc"), configuration.mean_std(f"selected/test/{f1}")]
        rows.append(row)
    table = html_table(header, rows, numeric=[2, 3, *range(5 if paper else 4, len(header))])
    if paper:
        explanation = (
            "Each variant's row is its configuration best on dev (mean over seeds); test at the selected epochs; "
            f"Δ = ours − paper. The paper's F1 for this data set is {f1.replace('_', ' ')}."
        )
    else:
        explanation = (
            f"The paper reports no numbers for the {ranking.dataset} data set (only MVSA-Single, MVSA-Multiple "
            "and HFM), so only ours are shown."
        )
    return section(heading, table, note(explanation))


def confirmation_html(ranking: Ranking) -> str:
    heading = "Confirmation runs next to the paper's Table 1 (CLMLF)"
    trials = ranking.of_kind("confirm")
    if not trials:
        return section(heading, note("No confirm study among the inputs for this data set."))
    f1 = f1_metric_of(ranking.dataset)
    paper = PAPER_RESULTS.get(ranking.dataset, {}).get("full")
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
            f"Paper: CLMLF on {ranking.dataset}, accuracy {paper.acc:.4f}, {f1.replace('_', ' ')} {paper.f1:.4f}. "
            "Ours: mean ± std over the confirmation seeds; Δ = ours − paper."
        )
    else:
        explanation = f"The paper reports no numbers for the {ranking.dataset} data set, so only ours are shown."
    return section(heading, table, note(explanation))
