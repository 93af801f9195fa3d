"""Score a checkpoint on dev and test: one written by training, or one converted from the original code.

    python -m clmlf.evaluate runs/original --data-root data
    python -m clmlf.evaluate runs/demo/checkpoint --set eval_batch_size=128

The config is the one stored in the checkpoint, with --data-root and --set on top. Nothing is selected here: the
numbers are those of the checkpoint as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clmlf.config import ConfigError, TrainConfig, parse_overrides
from clmlf.data import DataError
from clmlf.encoders import EncoderUnavailable
from clmlf.safe_files import UnreadableFile, load_tensors
from clmlf.train import CHECKPOINT_FILE, CheckpointMismatch, Run, headline

SPLITS = ("dev", "test")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clmlf.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder (state.pt) or a run's output folder")
    parser.add_argument("--data-root", help="folder holding the data set's folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    arguments = parser.parse_args(argv)
    try:
        overrides: dict[str, Any] = parse_overrides(arguments.set)
        if arguments.data_root:
            overrides["data_root"] = arguments.data_root
        results = evaluate_checkpoint(arguments.checkpoint, overrides)
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, UnreadableFile) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, metrics in results.items():
        print(f"{split}: {json.dumps(headline(metrics))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
