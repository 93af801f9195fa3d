"""`python -m report`: write the report of finished studies from MLflow and/or their Tune folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracking.uri import TRACKING_URI_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m report",
        description="Write per data set best_config.json, summary.csv/.md and report.html from finished studies.",
    )
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument(
        "--experiment", action="append", default=[], help="an MLflow experiment, e.g. clmlf/search/demo"
    )
    parser.add_argument("--parent-run-id", action="append", default=[], help="a study's parent run id")
    parser.add_argument(
        "--tune-dir", action="append", default=[], type=Path, help="a study's Tune folder, or a folder that holds them"
    )
    parser.add_argument(
        "--analysis",
        action="append",
        default=[],
        type=Path,
        help="a folder of analyses already drawn (python -m analyses writes <folder>/analysis): shows them; "
        "a --tune-dir study's own analysis/ is read without it",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for <dataset>/ report folders")
    args = parser.parse_args(argv)

    from report import write_study_report
    from results.record import ResultsError

    try:
        write_study_report(
            args.output,
            tracking_uri=args.tracking_uri,
            parent_run_ids=args.parent_run_id or None,
            experiment_names=args.experiment or None,
            tune_dirs=args.tune_dir or None,
            analysis_dirs=args.analysis or None,
        )
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
