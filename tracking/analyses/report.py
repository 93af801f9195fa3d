"""The analyses of a study's best model for its report: drawn from the checkpoint the study kept of the best trial's
selected epoch, against its text-only counterpart."""

from __future__ import annotations

import sys
from pathlib import Path

from tracking.analyses.outputs import AnalysisSettings, analyse, fragment, text_only_counterpart, write
from tracking.report.markup import note


def best_model_analyses(checkpoint: Path, folder: Path, text_only_dir: Path | None) -> tuple[str, list[Path]]:
    """(HTML for the report, files written to `folder`); the counterpart is trained once into `text_only_dir`
    (default: `folder/text-only`). A failure is shown on the page and printed, and the rest of the report stands."""
    try:
        text_only = text_only_counterpart(checkpoint, text_only_dir or folder / "text-only")
        analyses = analyse(checkpoint, text_only, AnalysisSettings())
        files = write(analyses, folder)
        return fragment(analyses, heading_level=3), files
    except Exception as error:  # data, encoders or the model may be missing where the report is written
        message = f"the analyses were not drawn: {type(error).__name__}: {error}"
        print(f"warning: {message}", file=sys.stderr)
        return note(message), []
