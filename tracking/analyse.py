"""`python -m tracking.analyse RUN_DIR`: the paper's analyses of one finished training run (a folder written by
`python -m clmlf.train --output RUN_DIR` or `python -m tracking.train_run`), written to RUN_DIR/analysis/.

    python -m tracking.analyse runs/demo
    python -m tracking.analyse runs/demo --text-only runs/demo-text --layer 0 --head 2 --tokens happy,dog

The case study (Figure 4) and the cluster plots (Figure 6) compare the run's model with its text-only counterpart:
--text-only names a finished text-only run; without it, the counterpart of the run's config is trained once into
RUN_DIR/analysis/text-only and reused next time. Where the run was logged to MLflow (its mlflow_run.json), the
files go onto that run as artifacts under analysis/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clmlf.config import ConfigError, parse_overrides
from clmlf.data import DataError
from clmlf.encoders import EncoderUnavailable
from clmlf.train import CheckpointMismatch

ANALYSIS_FOLDER = "analysis"
ANALYSIS_ARTIFACTS = "analysis"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking.analyse", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's folder (result.json, checkpoint/)")
    parser.add_argument("--text-only", type=Path, help="a finished text-only run's folder to compare with")
    parser.add_argument("--split", default="test", choices=("dev", "test"), help="the posts analysed (test)")
    parser.add_argument("--layer", type=int, default=-1, help="fusion layer of the attention maps, from 0 (-1: last)")
    parser.add_argument("--head", type=int, default=0, help="attention head of the maps, from 0 (0: the first)")
    parser.add_argument("--tokens", default="", help="comma-separated word pieces to draw (default: per post the ones "
                        "giving the image the largest share)")  # fmt: skip
    parser.add_argument("--posts", type=int, default=8, help="posts in the attention figure (8)")
    parser.add_argument("--data-root", help="folder holding the data set's folder, if not where the run's config says")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    arguments = parser.parse_args(argv)

    from tracking.analyses.outputs import AnalysisSettings, analyse, text_only_counterpart, write

    output = arguments.run_dir / ANALYSIS_FOLDER
    try:
        overrides = parse_overrides(arguments.set)
        if arguments.data_root:
            overrides["data_root"] = arguments.data_root
        settings = AnalysisSettings(
            split=arguments.split,
            layer=arguments.layer,
            head=arguments.head,
            tokens=[token.strip() for token in arguments.tokens.split(",") if token.strip()],
            attention_posts=arguments.posts,
            overrides=overrides,
        )
        text_only = arguments.text_only or text_only_counterpart(arguments.run_dir, output / "text-only", overrides)
        written = write(analyse(arguments.run_dir, text_only, settings), output)
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"analyses of {arguments.run_dir}: {output / 'analysis.html'}")
    for path in written:
        print(f"  {path}")
    log_to_mlflow_run(arguments.run_dir, output)
    return 0


def log_to_mlflow_run(run_dir: Path, output: Path) -> None:
    """The analysis files as artifacts of the MLflow run the training logged to, where it did (mlflow_run.json);
    the text-only counterpart's checkpoint stays out."""
    from tracking.train_run import RUN_FILE

    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        return
    from mlflow.tracking import MlflowClient

    saved = json.loads(run_file.read_text())
    client = MlflowClient(saved["tracking_uri"])
    for path in sorted(output.iterdir()):
        if path.is_file():
            client.log_artifact(saved["run_id"], str(path), ANALYSIS_ARTIFACTS)
    print(f"  logged to MLflow run {saved['run_id']} ({saved['tracking_uri']}) under {ANALYSIS_ARTIFACTS}/")


if __name__ == "__main__":
    sys.exit(main())
