"""The best model's analyses on the report page, read from the files that drew them (analysis.json and the figures'
PNGs in a study's `analysis/` folder). The report only reads them: they are drawn when a study concludes, or by
`python -m analyses`, which need a model run; where none are found, the page says how to make them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report.markup import embedded_png, escape, html_table, note

ANALYSIS_FILE = "analysis.json"
FIGURES = ("case_study", "attention", "clusters")
# The commands that draw the analyses (both write <folder>/analysis/).
ANALYSE_STUDY = "python -m analyses <study folder>"
ANALYSE_RUN = "python -m analyses <run folder>"


@dataclass(frozen=True)
class AnalysisFiles:
    """One folder of analyses: what analysis.json holds and each figure's PNG."""

    folder: Path
    data: dict[str, Any]
    pngs: dict[str, bytes]

    @property
    def dataset(self) -> str | None:
        return self.data.get("dataset")


def read_analysis(folder: Path) -> AnalysisFiles | None:
    """The analyses in `folder`, or None where it holds no analysis.json; a figure that is missing is left out."""
    path = Path(folder) / ANALYSIS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    pngs = {name: (folder / f"{name}.png").read_bytes() for name in FIGURES if (folder / f"{name}.png").is_file()}
    return AnalysisFiles(Path(folder), data, pngs)


def analyses_for(dataset: str, found: Sequence[AnalysisFiles], only_dataset: bool) -> list[AnalysisFiles]:
    """The analyses of a data set's models; those that do not name their data set count where the report has one."""
    return [files for files in found if files.dataset == dataset or (files.dataset is None and only_dataset)]


def analysis_fragment(data: Mapping[str, Any], pngs: Mapping[str, bytes], heading_level: int = 2) -> str:
    """The three analyses as HTML with embedded figures: the case study with its table, the attention maps and the
    cluster plots (`data` is analysis.json's content)."""
    h = f"h{heading_level}"
    rows = [[case["id"], case["text"], case["gold"], case["full"], case["text-only"]] for case in data["case_study"]]
    accuracy = data["accuracy"]
    sources = "; ".join(f"{model}: {source}" for model, source in data["models"].items())

    def figure(name: str, description: str) -> str:
        return embedded_png(pngs[name], description) if name in pngs else note(f"{name}.png is missing.")

    return "\n".join(
        [
            f"<{h}>Case study: where full and text-only disagree (the paper's Figure 4)</{h}>",
            f"<p>{len(rows)} of {data['posts']} {escape(data['split'])} posts; accuracy on the split: full "
            f"{accuracy['full']:.3f}, text-only {accuracy['text-only']:.3f}.</p>",
            figure("case_study", "case study"),
            html_table(["post", "text", "gold", "full", "text-only"], rows, table_id="case-study"),
            f"<{h}>Attention maps (the paper's Figure 5)</{h}>",
            figure("attention", "attention maps"),
            note(
                "Each map is one text token's attention row in the chosen fusion layer and head, restricted to the "
                "image regions and renormalised over them; the title gives the share of the row they receive."
            ),
            f"<{h}>Cluster plots (the paper's Figure 6)</{h}>",
            figure("clusters", "cluster plots"),
            note(f"Models: {sources}."),
        ]
    )


def missing_analyses_note(searched: Sequence[Path]) -> str:
    """Why the page has no analyses, and the command that draws them."""
    where = (
        f"No {ANALYSIS_FILE} in {', '.join(str(folder) for folder in searched)}"
        if searched
        else "No analysis folder was given"
    )
    return note(
        f"Not drawn: {where}. The analyses need a model run, so the report does not draw them: a study draws them "
        f"when it concludes, into <study folder>/analysis/. For a study that has none, run `{ANALYSE_STUDY}` (its "
        f"best trial's kept checkpoint), or `{ANALYSE_RUN}` for a training run, then build the report again with "
        "--tune-dir <study folder> or --analysis <folder>/analysis."
    )
