"""Score a checkpoint on dev and test: one written by training, one converted from the original code, or a study's
best model from MLflow (its model registry or its run).

    python -m clmlf.evaluate runs/original --data-root data
    python -m clmlf.evaluate runs/demo/checkpoint --set eval_batch_size=128
    python -m clmlf.evaluate models:/clmlf-layer-sweep-demo/1 --tracking-uri sqlite:///mlflow.db
    python -m clmlf.evaluate runs:/<run id>/model

The config is the one stored in the checkpoint, with --data-root and --set on top. Nothing is selected here: the
numbers are those of the checkpoint as it is. A models:/ or runs:/ URI is downloaded through MLflow first (MLflow is
imported for those alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clmlf.config import ConfigError, TrainConfig, parse_overrides
from clmlf.data import DataError
from clmlf.encoders import EncoderUnavailable
from clmlf.safe_files import UnreadableFile, load_tensors
from clmlf.train import CHECKPOINT_FILE, CheckpointMismatch, Run, headline

SPLITS = ("dev", "test")
# Checkpoints that MLflow holds: a registered model's version, or a run's artifact folder.
MLFLOW_SCHEMES = ("models:/", "runs:/")
# The same precedence as the studies' --tracking-uri: the flag, the project's variable, MLflow's, ./mlflow.db.
TRACKING_URI_VARIABLES = ("CLMLF_TRACKING_URI", "MLFLOW_TRACKING_URI")


def checkpoint_file(folder: Path) -> Path:
    """FOLDER/state.pt, or FOLDER/checkpoint/state.pt for a training run's output folder."""
    for candidate in (folder / CHECKPOINT_FILE, folder / "checkpoint" / CHECKPOINT_FILE):
        if candidate.is_file():
            return candidate
    raise CheckpointMismatch(f"{folder}: no {CHECKPOINT_FILE} in it or in its checkpoint/ folder")


def evaluate_checkpoint(
    folder: Path, overrides: dict[str, Any] | None = None, log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """{split: metrics} of the checkpoint in `folder` on dev and test, each with its `<split>/confusion_matrix`."""
    run, state = load_checkpoint(folder, overrides, log)
    results = {}
    for split in SPLITS:
        metrics, confusion = run.evaluate(split, state["epoch"])
        results[split] = {**metrics, f"{split}/confusion_matrix": confusion}
    return results


def load_checkpoint(
    folder: Path, overrides: dict[str, Any] | None = None, log: Callable[[str], None] = print
) -> tuple[Run, dict[str, Any]]:
    """A run (data, model) built from the config stored in the checkpoint in `folder`, with `overrides` on top and
    the checkpoint's weights loaded; and the checkpoint itself."""
    path = checkpoint_file(folder)
    state = load_tensors(path)
    flat = {**state["config"], "feature_cache": False, **(overrides or {})}
    if any(key.startswith("image_backbone.") for key in state["model"]):
        # The checkpoint holds the image encoder's weights: build it without fetching pretrained ones.
        flat["model.image_weights"] = "none"
    config = TrainConfig.from_flat_dict(flat)
    run = Run(config, log)
    run.load_model_state(state, path)
    return run, state


def download_model(uri: str, tracking_uri: str | None, destination: Path) -> Path:
    """The checkpoint folder of a models:/NAME/VERSION or runs:/RUN/PATH URI, downloaded into `destination`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = tracking_uri or next(
        (os.environ[name] for name in TRACKING_URI_VARIABLES if os.environ.get(name)),
        f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}",
    )
    # A models:/ URI is resolved in the model registry, which MLflow reads from its process-wide registry URI.
    mlflow.set_registry_uri(tracking_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(destination), tracking_uri=tracking_uri))
    except MlflowException as error:
        raise CheckpointMismatch(f"{uri} at {tracking_uri}: {error.message}") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clmlf.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint",
        help="a checkpoint folder (state.pt), a run's output folder, or a models:/NAME/VERSION or runs:/RUN/model URI",
    )
    parser.add_argument("--data-root", help="folder holding the data set's folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI of a models:/ or runs:/ checkpoint (default $CLMLF_TRACKING_URI, else "
        "$MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    arguments = parser.parse_args(argv)
    try:
        overrides: dict[str, Any] = parse_overrides(arguments.set)
        if arguments.data_root:
            overrides["data_root"] = arguments.data_root
        if arguments.checkpoint.startswith(MLFLOW_SCHEMES):
            with tempfile.TemporaryDirectory(prefix="clmlf-model-") as folder:
                checkpoint = download_model(arguments.checkpoint, arguments.tracking_uri, Path(folder))
                print(f"{arguments.checkpoint}: downloaded to {checkpoint}")
                results = evaluate_checkpoint(checkpoint, overrides)
        else:
            results = evaluate_checkpoint(Path(arguments.checkpoint), overrides)
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, UnreadableFile) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, metrics in results.items():
        print(f"{split}: {json.dumps(headline(metrics))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
