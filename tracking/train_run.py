"""One training run outside any study, logged to MLflow like a study's trial.

`python -m tracking.train_run <the arguments of python -m clmlf.train> [--tracking-uri URI]` trains exactly as
`clmlf.train` does and logs one run in the experiment `clmlf/standalone/<dataset>`: the same tags, params
(the full flat config), per-epoch metrics (step = epoch) and artifacts as a study's child run. With --resume
the run continues in the same MLflow run (its id is kept in OUTPUT/mlflow_run.json).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from clmlf.config import ConfigError
from clmlf.data import DataError
from clmlf.encoders import EncoderUnavailable
from clmlf.safe_files import write_text_atomically
from clmlf.train_command import parse_arguments
from results.storage import hide_password
from tracking.uri import TRACKING_URI_HELP, TrackingUnavailable, resolve_tracking_uri

RUN_FILE = "mlflow_run.json"
STUDY = "standalone"


def main(argv: list[str] | None = None) -> int:
    tracking_parser = argparse.ArgumentParser(add_help=False)
    tracking_parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    tracking_arguments, rest = tracking_parser.parse_known_args(argv)
    if {"-h", "--help"} & set(rest):
        print("python -m tracking.train_run: the options of clmlf.train below, and")
        print(f"  --tracking-uri URI  {TRACKING_URI_HELP}\n")
    arguments = parse_arguments(rest)
    # The trainer and MLflow are imported once the arguments are parsed.
    from clmlf.safe_files import UnreadableFile
    from clmlf.train import CHECKPOINT_FILE, CheckpointMismatch, config_from_arguments, train
    from tracking.mlflow_logging import check_tracking_uri, experiment_name

    tracking_uri = resolve_tracking_uri(tracking_arguments.tracking_uri)
    try:
        config = config_from_arguments(arguments)
        check_tracking_uri(tracking_uri)
    except (ConfigError, TrackingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(arguments.output)
    checkpoint = output / "checkpoint"
    resume_from = checkpoint if arguments.resume and (checkpoint / CHECKPOINT_FILE).is_file() else None
    recorder = open_run(tracking_uri, config.to_flat_dict(), output, resume=resume_from is not None)
    experiment = experiment_name(STUDY, config.dataset)
    print(f"MLflow: {hide_password(tracking_uri)}, experiment {experiment}, run {recorder.run_id}")

    def report(metrics: dict[str, Any], epoch: int, checkpoint_dir: Path | None) -> None:
        recorder.log_epoch(metrics, epoch)

    try:
        result = train(config, report, output_dir=output, resume_from=resume_from, progress=True)
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, UnreadableFile) as error:
        recorder.close(config.to_flat_dict(), error=str(error), status="FAILED")
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        recorder.close(config.to_flat_dict(), error="interrupted", status="KILLED")
        raise
    except Exception:
        recorder.close(config.to_flat_dict(), error=traceback.format_exc(), status="FAILED")
        raise
    recorder.close(result.config)
    print(f"selected epoch {result.selected_epoch + 1}: dev score {result.dev['dev/score']:.4f}")
    return 0


def open_run(tracking_uri: str, flat_config: dict[str, Any], output: Path, resume: bool):
    """A new run (a RunRecorder), or with --resume the run that the output folder's earlier training logged to."""
    from mlflow.tracking import MlflowClient

    from clmlf.device import resolve_device
    from tracking.mlflow_logging import RunRecorder, ensure_experiment, experiment_name, git_commit, source_tags

    client = MlflowClient(tracking_uri)
    dataset = flat_config["dataset"]
    run_file = output / RUN_FILE
    if resume and run_file.is_file():
        saved = json.loads(run_file.read_text())
        if saved.get("tracking_uri") == hide_password(tracking_uri):
            return RunRecorder.reopen(client, saved["run_id"], dataset)
    description = (
        f"Standalone training runs of CLMLF on {dataset} (`python -m tracking.train_run`), each logged like a "
        f"study's trial. The epoch is selected on `dev/score`; test numbers are those of the selected epoch."
    )
    experiment_id = ensure_experiment(client, experiment_name(STUDY, dataset), description)
    run = client.create_run(
        experiment_id,
        run_name=output.resolve().name,
        tags={
            **source_tags("tracking/train_run.py", git_commit()),
            "clmlf.role": STUDY,
            "clmlf.study": STUDY,
            "clmlf.study_name": output.resolve().name,
            "clmlf.dataset": dataset,
            "clmlf.variant": str(flat_config["model.variant"]),
            "clmlf.trial_id": output.resolve().name,
            "clmlf.seed": str(flat_config["seed"]),
            "clmlf.node": socket.gethostname(),
            "clmlf.device": str(resolve_device(flat_config["device"])),
            "clmlf.status": "RUNNING",
            "clmlf.retries": "0",
            "clmlf.output": str(output.resolve()),
        },
    )
    recorder = RunRecorder(client, run.info.run_id, dataset)
    recorder.log_params(flat_config)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomically(
        run_file, json.dumps({"tracking_uri": hide_password(tracking_uri), "run_id": run.info.run_id}, indent=2)
    )
    return recorder


if __name__ == "__main__":
    sys.exit(main())
