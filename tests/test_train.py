"""The trainer end to end: both phases, the per-epoch report contract, result.json, resuming, the command line,
and that a short run on the demo set learns something."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures import write_dataset

from clmlf.config import PRESETS, TrainConfig, build_config
from clmlf.data import DataError, load_dataset
from clmlf.demo_data import DemoSizes
from clmlf.metrics import majority_class_accuracy
from clmlf.precision import resolve_precision
from clmlf.train import CHECKPOINT_FILE, CheckpointMismatch, TrainResult, main, train

REPOSITORY = Path(__file__).resolve().parents[1]
LABEL_NAMES = ("positive", "neutral", "negative")
# Two batches per epoch keep a two-phase run on the 600-post demo set at seconds; dev and test stay whole.
FAST = {"max_train_batches": 2}
SUMMARY_KEYS = ("acc", "f1_weighted", "f1_macro")
# Every test here finds the demo set in a private cache (conftest.py).
pytestmark = pytest.mark.usefixtures("demo_cache")


def split_keys(split: str) -> set[str]:
    per_class = {f"{split}/{kind}/{name}" for kind in ("precision", "recall", "f1") for name in LABEL_NAMES}
    return {f"{split}/{key}" for key in (*SUMMARY_KEYS, "score", "confusion_matrix")} | per_class


EPOCH_KEYS = (
    {
        "train/loss",
        "train/loss_classification",
        "train/loss_lbcl",
        "train/loss_dbcl",
        "train/samples_per_second",
        "train/epoch_seconds",
        "train/data_wait_seconds",
        "train/peak_memory_mb",
        "train/text_encoder_frozen",
        "lr/fusion",
        "lr/text_encoder",
        "selected/epoch",
        "selected/dev/score",
    }
    | {f"selected/{split}/{key}" for split in ("dev", "test") for key in SUMMARY_KEYS}
    | split_keys("dev")
)


@dataclass
class RecordedRun:
    config: TrainConfig
    result: TrainResult
    reports: list[tuple[dict[str, Any], int, Path | None]]
    output: Path | None

    @property
    def epochs(self) -> list[int]:
        return [epoch for _, epoch, _ in self.reports]

    def metrics_at(self, epoch: int) -> dict[str, Any]:
        return next(metrics for metrics, reported, _ in self.reports if reported == epoch)


def record_training(config: TrainConfig, output: Path | None = None, resume_from: Path | None = None) -> RecordedRun:
    reports: list[tuple[dict[str, Any], int, Path | None]] = []

    def report(metrics: dict[str, Any], epoch: int, checkpoint_dir: Path | None) -> None:
        reports.append((copy.deepcopy(metrics), epoch, checkpoint_dir))

    result = train(config, report, output_dir=output, resume_from=resume_from, log=lambda message: None)
    return RecordedRun(config, result, reports, output)


@pytest.fixture(scope="module")
def two_epochs(demo_cache, tmp_path_factory) -> RecordedRun:
    """The tiny preset on the demo set: one text-frozen epoch, then one fine-tuning epoch."""
    config = build_config("demo", "tiny", FAST)
    assert (config.frozen_text_epochs, config.finetune_epochs) == (1, 1)
    return record_training(config, tmp_path_factory.mktemp("two-epochs"))


@pytest.fixture
def small_data(tmp_path) -> Path:
    """A 6/3/3-post data set in the demo layout, with images and translations."""
    root = tmp_path / "data"
    write_dataset(root, "demo")
    return root


def test_both_phases_report_every_epoch_with_the_contract_keys(two_epochs):
    assert two_epochs.epochs == [0, 1]
    for metrics, epoch, _ in two_epochs.reports:
        assert set(metrics) >= EPOCH_KEYS, EPOCH_KEYS - set(metrics)
        assert metrics["train/text_encoder_frozen"] == (1.0 if epoch == 0 else 0.0)
        assert metrics["lr/fusion"] == pytest.approx(two_epochs.config.learning_rate)
        assert metrics["lr/text_encoder"] == pytest.approx(two_epochs.config.text_learning_rate)
        # Demo is an MVSA-style set: weighted F1 selects.
        assert metrics["dev/score"] == metrics["dev/f1_weighted"]
        confusion = metrics["dev/confusion_matrix"]
        assert isinstance(confusion, list) and all(isinstance(row, list) for row in confusion)
        assert len(confusion) == 3 and sum(map(sum, confusion)) == DemoSizes().dev
        # The precision and its reason are the only text results; MLflow records them as tags.
        expected = resolve_precision(two_epochs.config.mixed_precision, torch.device("cpu"))
        assert (metrics["train/precision"], metrics["train/precision_reason"]) == (expected.name, expected.reason)
        texts = ("confusion_matrix", "train/precision", "train/precision_reason")
        numbers = {key: value for key, value in metrics.items() if not key.endswith(texts)}
        for key, value in numbers.items():
            assert isinstance(value, int | float) and math.isfinite(value), key
        assert metrics["train/loss"] > 0
        assert metrics["train/samples_per_second"] > 0
        assert 0 < metrics["train/data_wait_seconds"] < metrics["train/epoch_seconds"]
    assert [entry["epoch"] for entry in two_epochs.result.history] == [0, 1]


def test_test_metrics_only_at_epochs_that_became_the_selected_one(two_epochs):
    best_dev = -math.inf
    for metrics, epoch, _ in two_epochs.reports:
        improved = metrics["dev/score"] > best_dev
        best_dev = max(best_dev, metrics["dev/score"])
        assert metrics["selected/dev/score"] == best_dev
        assert (metrics["selected/epoch"] == epoch) == improved
        test_keys = {key for key in metrics if key.startswith("test/")}
        assert test_keys == (split_keys("test") if improved else set())
        selected = two_epochs.metrics_at(metrics["selected/epoch"])
        for key in SUMMARY_KEYS:
            assert metrics[f"selected/test/{key}"] == selected[f"test/{key}"]
            assert metrics[f"selected/dev/{key}"] == selected[f"dev/{key}"]
    # The first epoch is always selected when it ends, so its test numbers are always there.
    assert "test/acc" in two_epochs.metrics_at(0)


def test_result_json_holds_the_selected_epoch(two_epochs):
    written = json.loads((two_epochs.output / "result.json").read_text())
    assert written == json.loads(json.dumps(two_epochs.result.to_json()))
    assert written["config"] == two_epochs.config.to_flat_dict()
    assert TrainConfig.from_flat_dict(written["config"]) == two_epochs.config
    selected_epoch = written["selected_epoch"]
    assert selected_epoch == two_epochs.reports[-1][0]["selected/epoch"]
    selected = two_epochs.metrics_at(selected_epoch)
    for split in ("dev", "test"):
        expected = {
            key: value for key, value in selected.items() if key.startswith(f"{split}/") and "confusion" not in key
        }
        assert written[split] == pytest.approx(expected)
        assert written["confusion_matrices"][split] == selected[f"{split}/confusion_matrix"]
    assert written["selection_metric"] == "f1_weighted"
    assert written["label_names"] == list(LABEL_NAMES)
    assert written["data"] == {"images_skipped": 0, "images_blanked": 0, "translations_replaced": 0}
    assert len(written["history"]) == 2
    assert written["runtime_seconds"] > 0


def test_every_report_points_at_the_checkpoint(two_epochs):
    for _, _, checkpoint_dir in two_epochs.reports:
        assert checkpoint_dir == two_epochs.output / "checkpoint"
        assert (checkpoint_dir / "state.pt").is_file()


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_with_the_same_numbers(two_epochs, tmp_path):
    output = tmp_path / "run"
    interrupted = record_training(build_config("demo", "tiny", {**FAST, "finetune_epochs": 0}), output)
    assert interrupted.epochs == [0]
    # The checkpoint of a one-epoch run, continued under the two-epoch config: only epoch 1 runs.
    resumed = record_training(two_epochs.config, output, resume_from=output / "checkpoint")
    assert resumed.epochs == [1]
    assert resumed.result.selected_epoch == two_epochs.result.selected_epoch
    assert resumed.result.dev == pytest.approx(two_epochs.result.dev)
    assert resumed.result.test == pytest.approx(two_epochs.result.test)
    assert resumed.result.confusion_matrices == two_epochs.result.confusion_matrices
    continued, straight = resumed.metrics_at(1), two_epochs.metrics_at(1)
    for key in ("train/loss", "train/loss_classification", "train/loss_lbcl", "train/loss_dbcl", "dev/score"):
        assert continued[key] == pytest.approx(straight[key], rel=1e-6), key
    # The history carries the first epoch over from the checkpoint.
    assert [entry["epoch"] for entry in resumed.result.history] == [0, 1]
    assert resumed.result.history[0]["train/loss"] == pytest.approx(two_epochs.result.history[0]["train/loss"])


def test_checkpoints_leave_out_untrained_encoders_and_resume_checks_they_rebuild_the_same(two_epochs, tmp_path):
    output = tmp_path / "run"
    record_training(build_config("demo", "tiny", {**FAST, "finetune_epochs": 0}), output)
    frozen_epoch = torch.load(output / "checkpoint" / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert set(frozen_epoch["untrained_encoders"]) == {"text_encoder", "image_backbone"}
    assert not [key for key in frozen_epoch["model"] if key.startswith(("text_encoder.", "image_backbone."))]
    assert any(key.startswith("fusion_transformer.") for key in frozen_epoch["model"])
    # After the fine-tuning epoch the text encoder has been trained and is saved; the image encoder never is.
    last = torch.load(two_epochs.output / "checkpoint" / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert set(last["untrained_encoders"]) == {"image_backbone"}
    assert any(key.startswith("text_encoder.") for key in last["model"])
    # Another seed initialises the random tiny text encoder differently (an image encoder without weights is the
    # same under every seed): resuming must refuse, naming the file.
    other_seed = build_config("demo", "tiny", {**FAST, "seed": 1})
    with pytest.raises(CheckpointMismatch, match=r"state\.pt.*untrained text_encoder.*seed 1"):
        record_training(other_seed, output, resume_from=output / "checkpoint")


@pytest.mark.slow
def test_command_line_trains_the_tiny_preset(demo_cache, tmp_path):
    output = tmp_path / "cli"
    command = [sys.executable, "-m", "clmlf.train", "--preset", "tiny", "--set", "max_train_batches=1"]
    completed = subprocess.run(
        [*command, "--output", str(output)],
        cwd=REPOSITORY,
        env={**os.environ, "CLMLF_CACHE_DIR": str(demo_cache)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = json.loads((output / "result.json").read_text())
    assert written["config"]["dataset"] == "demo"
    assert written["config"]["model.text_encoder"] == "tiny-bert"
    assert written["config"]["max_train_batches"] == 1
    assert len(written["history"]) == 2
    assert str(output / "result.json") in completed.stdout


def test_command_line_rejects_a_bad_setting_naming_the_field(tmp_path, capsys):
    output = tmp_path / "bad"
    assert main(["--preset", "tiny", "--set", "model.fusion_layers=0", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert "model.fusion_layers" in error
    assert not (output / "result.json").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "model.fusion_layers"], "--set"),
        (["--set", "model.fusion_layer=2"], "model.fusion_layer"),
        (["--variant", "audio-only"], "model.variant"),
        (["--preset", "huge"], "preset"),
    ],
)
def test_command_line_errors_exit_2(arguments, message, tmp_path, capsys):
    assert main([*arguments, "--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_command_line_config_and_preset_exclude_each_other(two_epochs, tmp_path, capsys):
    config_file = str(two_epochs.output / "result.json")
    assert main(["--config", config_file, "--preset", "tiny", "--output", str(tmp_path / "out")]) == 2
    assert "--preset" in capsys.readouterr().err
    # --set still applies on top of --config, and is validated.
    assert main(["--config", config_file, "--set", "temperature=0", "--output", str(tmp_path / "out")]) == 2
    assert "temperature" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_config_reruns_the_same_config(two_epochs, tmp_path):
    output = tmp_path / "again"
    assert main(["--config", str(two_epochs.output / "result.json"), "--output", str(output)]) == 0
    written = json.loads((output / "result.json").read_text())
    assert written["config"] == two_epochs.config.to_flat_dict()
    # Same config, same seed: the same selected numbers.
    assert written["selected_epoch"] == two_epochs.result.selected_epoch
    assert written["dev"] == pytest.approx(two_epochs.result.dev)
    assert written["test"] == pytest.approx(two_epochs.result.test)


def test_an_unreachable_text_encoder_fails_at_start_with_a_hint(small_data, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "clmlf.train", "--preset", "tiny", "--data-root", str(small_data)]
    completed = subprocess.run(
        [*command, "--set", "model.text_encoder=no-such-org/no-such-model-xyz", "--output", str(output)],
        cwd=REPOSITORY,
        # Offline, so that the hub client fails at once instead of retrying a network it cannot reach.
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "model.text_encoder" in completed.stderr
    assert "no-such-org/no-such-model-xyz" in completed.stderr
    assert "local Hugging Face model folder" in completed.stderr
    assert not (output / "result.json").exists()


@pytest.mark.slow
def test_a_short_run_on_the_demo_set_beats_the_majority_class():
    # The fusion model without the contrastive tasks: one forward pass per step (DBCL needs two), and the
    # classifier is not competing with two tau = 0.07 losses, so 2 x 30 steps are enough to learn.
    config = build_config("demo", "tiny", {"model.variant": "mlf", "max_train_batches": 30})
    result = train(config, log=lambda message: None)
    dataset = load_dataset("demo", None, need_images=False, need_translations=False)
    train_labels = [post.label for post in dataset.splits["train"]]
    majority = {
        split: majority_class_accuracy(train_labels, [post.label for post in dataset.splits[split]])
        for split in ("dev", "test")
    }
    # The demo's label mix (25% neutral, the rest split between positive and negative) puts the majority near 0.38.
    assert 0.3 < majority["dev"] < 0.45
    assert result.dev["dev/acc"] > majority["dev"] + 0.15
    assert result.test["test/acc"] > majority["test"] + 0.1


def test_a_text_only_run_needs_no_images(tmp_path):
    root = tmp_path / "data"
    directory = write_dataset(root, "demo", images=False)
    assert not (directory / "dataset_image").exists()
    run = record_training(build_config("demo", "tiny", {"data_root": str(root), "model.variant": "text-only"}))
    assert run.epochs == [0, 1]
    assert all(checkpoint_dir is None for _, _, checkpoint_dir in run.reports)
    assert {"train/loss_lbcl", "train/loss_dbcl"}.isdisjoint(run.metrics_at(0))
    assert "dev/acc" in run.result.dev
    # The full model needs the images, and says where they should be.
    with pytest.raises(DataError, match="dataset_image"):
        train(build_config("demo", "tiny", {"data_root": str(root)}), log=lambda message: None)


@pytest.mark.parametrize(
    ("variant", "terms"),
    [
        ("full", {"lbcl", "dbcl"}),
        ("mlf", set()),
        ("mlf-lbcl", {"lbcl"}),
        ("mlf-dbcl", {"dbcl"}),
        ("image-only", set()),
    ],
)
def test_each_variant_trains_its_own_loss_terms(variant, terms, small_data):
    overrides = {
        "data_root": str(small_data),
        "model.variant": variant,
        "finetune_epochs": 0,
        "lbcl_weight": 0.5,
        "dbcl_weight": 2.0,
    }
    metrics = record_training(build_config("demo", "tiny", overrides)).metrics_at(0)
    reported = {name for name in ("lbcl", "dbcl") if f"train/loss_{name}" in metrics}
    assert reported == terms
    # Eq. 11 holds for the epoch means too, since every term is averaged over the same examples.
    expected = (
        metrics["train/loss_classification"]
        + 0.5 * metrics.get("train/loss_lbcl", 0.0)
        + 2.0 * metrics.get("train/loss_dbcl", 0.0)
    )
    assert metrics["train/loss"] == pytest.approx(expected, rel=1e-5)
    assert ("lr/text_encoder" in metrics) == (variant != "image-only")


def test_print_config_shows_every_key_and_where_it_differs_from_the_paper_preset(capsys):
    arguments = ["--preset", "original", "--dataset", "hfm", "--set", "batch_size=16", "--print-config"]
    assert main(arguments) == 0
    listing, _, changes = capsys.readouterr().out.partition("differences from the paper preset on hfm")
    config = build_config("hfm", "original", {"batch_size": 16})
    for key, value in config.to_flat_dict().items():
        assert re.search(rf"^{re.escape(key)} +{re.escape(json.dumps(value))}$", listing, re.MULTILINE), key
    changed = {line.split()[0]: line for line in changes.splitlines()[1:] if line.strip()}
    assert set(changed) == set(PRESETS["original"]) | {"batch_size"}
    assert changed["batch_size"].endswith("128 -> 16")
    assert changed["frozen_encoder_mode"].endswith('"eval" -> "train"')


def test_the_original_preset_trains_on_the_demo_layout(small_data):
    # The original preset on a tiny model: the original's heads are width / 64, its feed-forward width the text
    # encoder's (tiny-bert: 128 = 2 x 64).
    tiny_model = {key: value for key, value in PRESETS["tiny"].items() if key.startswith("model.")}
    overrides = {
        **tiny_model,
        "model.heads": 1,
        "model.feedforward_multiplier": 2,
        "data_root": str(small_data),
        "frozen_text_epochs": 1,
        "finetune_epochs": 1,
        "batch_size": 4,
    }
    run = record_training(build_config("demo", "original", overrides))
    assert run.epochs == [0, 1]
    for metrics, _, _ in run.reports:
        assert all(math.isfinite(metrics[f"train/loss_{name}"]) for name in ("classification", "lbcl", "dbcl"))
        assert sum(map(sum, metrics["dev/confusion_matrix"])) == 3
