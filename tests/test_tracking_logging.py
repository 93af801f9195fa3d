"""MLflow logging of studies and standalone runs against a real `mlflow server` (and the helpers it uses)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from clmlf.config import TrainConfig, build_config
from studies import cli, layer_sweep, search
from tracking import storage, train_run
from tracking.mlflow_logging import classification_report, trainer_metrics
from tracking.results.mlflow_runs import child_runs
from tracking.results.record import error_summary, latest_failure

SMOKE_EPOCHS = cli.SMOKE_OVERRIDES["frozen_text_epochs"] + cli.SMOKE_OVERRIDES["finetune_epochs"]
CHILD_ARTIFACTS = {"config.json", "confusion_matrix_dev.png", "confusion_matrix_test.png", "classification_report.json"}
CHILD_TAGS = ("clmlf.study", "clmlf.study_name", "clmlf.dataset", "clmlf.variant", "clmlf.trial_id", "clmlf.seed",
              "clmlf.node", "clmlf.device", "clmlf.git_commit", "clmlf.status", "clmlf.retries")  # fmt: skip


def artifact_names(client: MlflowClient, run_id: str) -> set[str]:
    return {artifact.path for artifact in client.list_artifacts(run_id)}


def test_only_numeric_trainer_metrics_are_logged():
    result = {
        "dev/acc": 0.5,
        "dev/confusion_matrix": [[1, 0], [0, 1]],
        "train/text_encoder_frozen": True,
        "trial/node": "host",
        "time_total_s": 3.0,
        "selected/epoch": 1,
    }
    assert trainer_metrics(result) == {"dev/acc": 0.5, "train/text_encoder_frozen": 1.0, "selected/epoch": 1.0}


def test_the_error_that_ended_a_trial_is_its_last_failure():
    error_file = (
        "Failure # 1 (occurred at 2026-01-01_10-00-00)\nTraceback ...\nValueError: first\n"
        "Failure # 2 (occurred at 2026-01-01_10-01-00)\nray.exceptions.RayTaskError(EncoderUnavailable): ...\n"
        "  File x.py, line 3\nclmlf.encoders.EncoderUnavailable: model.image_weights: no weights file at /w.pth\n"
    )
    last = latest_failure(error_file)
    assert "first" not in last
    assert error_summary(last) == "clmlf.encoders.EncoderUnavailable: model.image_weights: no weights file at /w.pth"


def test_the_classification_report_holds_every_class_of_both_splits():
    snapshot = {"epoch": 2, "dev/acc": 0.7, "test/acc": 0.6}
    for split in ("dev", "test"):
        for label in ("positive", "neutral", "negative"):
            for measure in ("precision", "recall", "f1"):
                snapshot[f"{split}/{measure}/{label}"] = 0.5
    report = classification_report(snapshot, ["positive", "neutral", "negative"])
    assert report["selected_epoch"] == 2
    assert report["test"]["overall"]["acc"] == 0.6
    assert report["dev"]["per_class"]["neutral"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_an_unreachable_tracking_server_fails_fast_before_ray_starts(
    tmp_path, capsys, clmlf_cache_dir, free_loopback_port
):
    uri = f"http://127.0.0.1:{free_loopback_port}"
    arguments = ["--smoke-test", "--storage-path", str(tmp_path / "tune"), "--name", "offline", "--tracking-uri", uri]
    started = time.monotonic()
    assert layer_sweep.main(arguments) == 2
    assert time.monotonic() - started < 30
    assert uri in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (tmp_path / "tune" / "offline").exists()


@pytest.mark.slow
def test_a_study_logs_a_parent_run_and_one_child_run_per_trial(tmp_path, ray_cluster, mlflow_server):
    arguments = [
        "--smoke-test",
        "--address", ray_cluster.address,
        "--storage-path", str(tmp_path / "tune"),
        "--name", "tracked",
        "--tracking-uri", mlflow_server,
    ]  # fmt: skip
    assert search.main(arguments) == 0
    experiment = tmp_path / "tune" / "tracked"
    client = MlflowClient(mlflow_server)
    assert client.get_experiment_by_name("clmlf/search/demo") is not None
    parent_id = json.loads((experiment / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    assert {key: parent.data.tags[key] for key in ("clmlf.role", "clmlf.study", "clmlf.study_name")} == {
        "clmlf.role": "study",
        "clmlf.study": "search",
        "clmlf.study_name": "tracked",
    }
    assert parent.data.params["study.num_samples"] == "None"
    assert parent.data.params["study.smoke_test"] == "True"
    assert "search_space.json" in artifact_names(client, parent_id)

    trial_params = {
        path.name.removeprefix("trial_"): json.loads((path / "params.json").read_text())
        for path in experiment.glob("trial_*")
    }
    runs = child_runs(mlflow_server, parent_id)
    assert sorted(run.data.tags["clmlf.trial_id"] for run in runs) == sorted(trial_params)
    all_keys = set(TrainConfig().to_flat_dict())
    for run in runs:
        tags = run.data.tags
        assert tags["clmlf.role"] == "trial" and tags["mlflow.parentRunId"] == parent_id
        assert all(key in tags for key in CHILD_TAGS)
        assert (tags["clmlf.status"], tags["clmlf.retries"], tags["clmlf.device"]) == ("TERMINATED", "0", "cpu")
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == all_keys
        for key, value in trial_params[tags["clmlf.trial_id"]].items():
            assert run.data.params[key] == str(value)
        history = client.get_metric_history(run.info.run_id, "dev/score")
        assert sorted(metric.step for metric in history) == list(range(SMOKE_EPOCHS))
        assert artifact_names(client, run.info.run_id) >= CHILD_ARTIFACTS

    # One seed per sampled configuration: the best trial is one with the best dev score (there may be ties).
    scores = {run.data.tags["clmlf.trial_id"]: run.data.metrics["selected/dev/score"] for run in runs}
    best = parent.data.tags["clmlf.best_trial_id"]
    assert scores[best] == max(scores.values())
    assert parent.data.metrics["best/selected/dev/score"] == pytest.approx(scores[best])
    best_run = next(run for run in runs if run.data.tags["clmlf.trial_id"] == best)
    assert parent.data.metrics["best/selected/test/acc"] == pytest.approx(best_run.data.metrics["selected/test/acc"])


@pytest.mark.slow
def test_a_standalone_training_run_is_logged_like_a_trial(tmp_path, mlflow_server, clmlf_cache_dir):
    output = tmp_path / "standalone"
    overrides = [f"--set={key}={value}" for key, value in cli.SMOKE_OVERRIDES.items()]
    status = train_run.main(["--preset", "tiny", *overrides, "--output", str(output), "--tracking-uri", mlflow_server])
    assert status == 0
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("clmlf/standalone/demo")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`clmlf.output` = '{output.resolve()}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["clmlf.status"] == "TERMINATED"
    expected = build_config("demo", "tiny", dict(cli.SMOKE_OVERRIDES)).to_flat_dict()
    assert run.data.params == {key: str(value) for key, value in expected.items()}
    steps = [metric.step for metric in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(SMOKE_EPOCHS))
    assert artifact_names(client, run.info.run_id) >= CHILD_ARTIFACTS
    assert json.loads((Path(output) / train_run.RUN_FILE).read_text())["run_id"] == run.info.run_id
