"""`python -m analyses FOLDER`: the paper's analyses of one finished training run (a folder written by
`python -m clmlf.train --output FOLDER` or `python -m tracking.train_run`) or of a finished study's best model (its
folder, `<storage>/<name>`: the checkpoint it kept of its best trial's selected epoch), written to FOLDER/analysis/.

    python -m analyses runs/demo
    python -m analyses runs/demo --text-only runs/demo-text --layer 0 --head 2 --tokens happy,dog
    python -m analyses runs/tune/layer_sweep-demo-20261128-081114

The case study (Figure 4) and the cluster plots (Figure 6) compare the model with its text-only counterpart:
--text-only names a finished text-only run; without it, the counterpart of the model's config is trained once into
FOLDER/analysis/text-only and reused next time. Where the run or the study was logged to MLflow (mlflow_run.json,
mlflow_parent_run.json), the files go onto that run as artifacts under analysis/. A study's report shows them
(`python -m report --tune-dir FOLDER`); the report itself never trains.
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
from results.storage import ANALYSIS_FOLDER, PARENT_RUN_FILE, hide_password, with_password
from tracking.uri import resolve_tracking_uri

ANALYSIS_ARTIFACTS = "analysis"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analyses", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dir", type=Path, help="a finished run's folder (result.json, checkpoint/) or a finished study's folder"
    )
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

    from analyses.outputs import AnalysisSettings, analyse, text_only_counterpart, write
    from analyses.study import best_trial_checkpoint, is_study_folder

    output = arguments.run_dir / ANALYSIS_FOLDER
    study = is_study_folder(arguments.run_dir)
    try:
        checkpoint = arguments.run_dir
        if study:
            trial_id, checkpoint = best_trial_checkpoint(arguments.run_dir)
            print(f"analysis: the best trial {trial_id} of study {arguments.run_dir}, checkpoint {checkpoint}")
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
        text_only = arguments.text_only or text_only_counterpart(checkpoint, output / "text-only", overrides)
        written = write(analyse(checkpoint, text_only, settings), output)
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"analyses of {arguments.run_dir}: {output / 'analysis.html'}")
    for path in written:
        print(f"  {path}")
    if study:
        print(f"the study's report shows them: python -m report --tune-dir {arguments.run_dir} --output ...")
    log_to_mlflow_run(arguments.run_dir, output, study)
    return 0


def log_to_mlflow_run(run_dir: Path, output: Path, study: bool = False) -> None:
    """The analysis files as artifacts of the MLflow run the training logged to (mlflow_run.json), or of a study's
    parent run (mlflow_parent_run.json), where there is one; the text-only counterpart's checkpoint stays out."""
    from tracking.train_run import RUN_FILE

    run_file = run_dir / (PARENT_RUN_FILE if study else RUN_FILE)
    if not run_file.is_file():
        return
    from mlflow.tracking import MlflowClient

    saved = json.loads(run_file.read_text())
    run_id = saved["parent_run_id" if study else "run_id"]
    client = MlflowClient(with_password(saved["tracking_uri"], resolve_tracking_uri(None)))
    for path in sorted(output.iterdir()):
        if path.is_file():
            client.log_artifact(run_id, str(path), ANALYSIS_ARTIFACTS)
    print(f"  logged to MLflow run {run_id} ({hide_password(saved['tracking_uri'])}) under {ANALYSIS_ARTIFACTS}/")


if __name__ == "__main__":
    sys.exit(main())
