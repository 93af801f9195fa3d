"""MLflow logging of studies and standalone runs against a real `mlflow server` (and the helpers it uses)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray
import torch
from conftest import SMOKE_SEARCH_NAME, SMOKE_SEARCH_PASSWORD
from mlflow.tracking import MlflowClient

from clmlf import evaluate
from clmlf.config import TrainConfig, build_config
from results import storage
from results.record import describe_values, error_summary, latest_failure
from studies import cli, layer_sweep, search
from tracking import train_run
from tracking.mlflow_logging import registered_model_name, runs_page, trainer_metrics
from tracking.mlflow_runs import child_runs
from tracking.run_artifacts import classification_report

SMOKE_EPOCHS = cli.SMOKE_OVERRIDES["frozen_text_epochs"] + cli.SMOKE_OVERRIDES["finetune_epochs"]
CHILD_ARTIFACTS = {"config.json", "confusion_matrix_dev.png", "confusion_matrix_test.png", "classification_report.json"}
CHILD_TAGS = ("clmlf.study", "clmlf.study_name", "clmlf.dataset", "clmlf.variant", "clmlf.trial_id", "clmlf.seed",
              "clmlf.node", "clmlf.device", "clmlf.status", "clmlf.retries", "mlflow.source.name",
              "mlflow.source.type", "mlflow.user")  # fmt: skip
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


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


def download(tracking_uri: str, destination: Path, **which: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(dst_path=str(destination), tracking_uri=tracking_uri, **which))


def trial_files(experiment: Path) -> dict[str, tuple[dict, list[dict]]]:
    """Trial id -> (its Tune config from params.json, its rows of result.json)."""
    return {
        path.name.removeprefix("trial_"): (
            json.loads((path / "params.json").read_text()),
            [json.loads(line) for line in (path / "result.json").read_text().splitlines() if line.strip()],
        )
        for path in experiment.glob("trial_*")
    }


@pytest.mark.slow
def test_a_server_named_in_mlflow_tracking_uri_receives_a_study_run_on_the_ray_address(
    smoke_search, mlflow_server, ray_cluster
):
    # The driver had no --tracking-uri and no --address: only MLFLOW_TRACKING_URI and RAY_ADDRESS named them.
    parent = json.loads((smoke_search.folder / storage.PARENT_RUN_FILE).read_text())
    assert parent["tracking_uri"] == mlflow_server.replace("://", "://clmlf:***@", 1)
    assert not (smoke_search.cwd / "mlflow.db").exists()
    runs = child_runs(mlflow_server, parent["parent_run_id"])
    trials = trial_files(smoke_search.folder)
    assert sorted(run.data.tags["clmlf.trial_id"] for run in runs) == sorted(trials) and len(trials) == 3
    for _, rows in trials.values():
        assert {row["trial/node_id"] for row in rows} <= set(ray_cluster.gpu_node_ids)


@pytest.mark.slow
def test_a_study_logs_a_parent_run_and_one_child_run_per_trial(smoke_search, mlflow_server):
    experiment = smoke_search.folder
    client = MlflowClient(mlflow_server)
    mlflow_experiment = client.get_experiment_by_name("clmlf/search/demo")
    assert mlflow_experiment is not None
    parent_id = json.loads((experiment / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.run_name == SMOKE_SEARCH_NAME and parent.info.status == "FINISHED"
    assert {key: parent.data.tags[key] for key in ("clmlf.role", "clmlf.study", "clmlf.study_name")} == {
        "clmlf.role": "study",
        "clmlf.study": "search",
        "clmlf.study_name": SMOKE_SEARCH_NAME,
    }
    assert parent.data.params["study.num_samples"] == "None"
    assert parent.data.params["study.smoke_test"] == "True"

    trials = trial_files(experiment)
    runs = child_runs(mlflow_server, parent_id)
    assert sorted(run.data.tags["clmlf.trial_id"] for run in runs) == sorted(trials)
    all_keys = set(TrainConfig().to_flat_dict())
    for run in runs:
        tags = run.data.tags
        assert tags["clmlf.role"] == "trial" and tags["mlflow.parentRunId"] == parent_id
        assert all(key in tags for key in CHILD_TAGS)
        assert (tags["clmlf.status"], tags["clmlf.retries"], tags["clmlf.device"]) == ("TERMINATED", "0", "cpu")
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == all_keys
        params, _ = trials[tags["clmlf.trial_id"]]
        for key, value in params.items():
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
def test_runs_are_named_by_what_they_try_and_carry_mlflow_source_tags(smoke_search, mlflow_server):
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("clmlf/search/demo")
    # The UI's experiment kind for training runs, the primary metric, and the study page's question as description.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.experiment.primaryMetric.name"] == "selected/dev/score"
    question = next(paragraph for paragraph in search.__doc__.split("\n\n") if paragraph.startswith("Question:"))
    assert " ".join(question.split()) in experiment.tags["mlflow.note.content"]
    assert search.__doc__.splitlines()[0] in experiment.tags["mlflow.note.content"]

    parent_id = json.loads((smoke_search.folder / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]
    trials = trial_files(smoke_search.folder)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    for run in [client.get_run(parent_id), *child_runs(mlflow_server, parent_id)]:
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "studies/search.py" and tags["mlflow.source.type"] == "LOCAL"
        if commit.returncode == 0:
            assert tags["mlflow.source.git.commit"] == commit.stdout.strip()
        assert "clmlf.git_commit" not in tags
        if run.info.run_id != parent_id:
            params, _ = trials[tags["clmlf.trial_id"]]
            # e.g. "tau=0.117 lbcl=1.43 ... fusion=6 image=2 dropout=0.238 lbcl_variant=original", in the search
            # space's order (params.json has Tune's sorted keys).
            assert sorted(run.info.run_name.split()) == sorted(describe_values(params).split())
            assert f"fusion={params['model.fusion_layers']}" in run.info.run_name


@pytest.mark.slow
def test_the_parent_run_holds_the_study_outputs_and_the_best_model_loads(smoke_search, mlflow_server, tmp_path):
    from clmlf.train import Run

    folder = smoke_search.folder
    client = MlflowClient(mlflow_server)
    parent_id = json.loads((folder / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]
    parent = client.get_run(parent_id)
    assert artifact_names(client, parent_id) >= {"best_config.json", "trials.csv", "search_space.json", "report"}
    report = {artifact.path for artifact in client.list_artifacts(parent_id, "report/demo")}
    assert report >= {
        f"report/demo/{name}" for name in ("report.html", "summary.csv", "summary.md", "best_config.json")
    }
    downloaded = Path(
        mlflow.artifacts.download_artifacts(
            run_id=parent_id, dst_path=str(tmp_path / "parent"), tracking_uri=mlflow_server
        )
    )
    assert json.loads((downloaded / "best_config.json").read_text()) == json.loads(
        (folder / storage.BEST_CONFIG_FILE).read_text()
    )
    assert (downloaded / "trials.csv").read_text() == (folder / storage.TRIALS_FILE).read_text()

    # The best trial's model: its checkpoint at the selected epoch, in its child run, with a README beside it.
    best = parent.data.tags["clmlf.best_trial_id"]
    (best_run,) = [run for run in child_runs(mlflow_server, parent_id) if run.data.tags["clmlf.trial_id"] == best]
    assert parent.data.tags["clmlf.best_model"] == f"runs:/{best_run.info.run_id}/model"
    model_uri = parent.data.tags["clmlf.best_model"]
    model = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=str(tmp_path / "model"), tracking_uri=mlflow_server
        )
    )
    assert "python -m clmlf.evaluate" in (model / "README.md").read_text()
    state = torch.load(model / "state.pt", map_location="cpu", weights_only=True)
    _, rows = trial_files(folder)[best]
    assert state["epoch"] == rows[-1]["selected/epoch"]
    assert state["config"] == {
        **json.loads((folder / storage.BASE_CONFIG_FILE).read_text()),
        **trial_files(folder)[best][0],
    }
    # Loaded into the trainer, it scores on dev what the trial reported for its selected epoch.
    run = Run(TrainConfig.from_flat_dict(state["config"]), log=lambda line: None)
    run.load_state(state, model / "state.pt")
    dev, _ = run.evaluate("dev", state["epoch"])
    assert dev["dev/score"] == pytest.approx(best_run.data.metrics["selected/dev/score"], abs=1e-6)
    # Only that checkpoint is left in the study folder (finished trials' others are deleted).
    assert [path.parent.name for path in folder.glob("trial_*/checkpoint_*")] == [f"trial_{best}"]


@pytest.mark.slow
def test_the_password_in_the_tracking_uri_is_never_printed_written_or_logged(smoke_search, mlflow_server, tmp_path):
    # The study's driver had MLFLOW_TRACKING_URI=http://clmlf:<password>@...; the server took the study's runs.
    assert SMOKE_SEARCH_PASSWORD not in smoke_search.log and "clmlf:***@" in smoke_search.log
    written = [path for path in smoke_search.cwd.rglob("*") if path.is_file()]
    assert any(path.name == storage.PARENT_RUN_FILE for path in written)
    assert [path for path in written if SMOKE_SEARCH_PASSWORD.encode() in path.read_bytes()] == []
    client = MlflowClient(mlflow_server)
    parent_id = json.loads((smoke_search.folder / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]
    runs = [client.get_run(parent_id), *child_runs(mlflow_server, parent_id)]
    for run in runs:
        assert SMOKE_SEARCH_PASSWORD not in json.dumps([run.data.params, run.data.tags])
    uploaded = [
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id),
                                                 tracking_uri=mlflow_server))
        for run in runs
    ]  # fmt: skip
    files = [path for folder in uploaded for path in folder.rglob("*") if path.is_file()]
    assert any(path.name == "README.md" for path in files)  # the best model's, which names the tracking URI
    assert [path for path in files if SMOKE_SEARCH_PASSWORD.encode() in path.read_bytes()] == []


@pytest.mark.slow
def test_the_best_model_is_registered_and_clmlf_evaluate_scores_it_from_the_registry(
    smoke_search, mlflow_server, capsys
):
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    folder = smoke_search.folder
    parent = client.get_run(json.loads((folder / storage.PARENT_RUN_FILE).read_text())["parent_run_id"])
    # One registered model per study kind and data set; this study's version is its best trial's logged model.
    name = registered_model_name("search", "demo")
    assert name == "clmlf-search-demo" and registered_model_name("layer_sweep", "mvsa-single") == (
        "clmlf-layer-sweep-mvsa_single")  # fmt: skip
    best = parent.data.tags["clmlf.best_trial_id"]
    runs = child_runs(mlflow_server, parent.info.run_id)
    (best_run,) = [run for run in runs if run.data.tags["clmlf.trial_id"] == best]
    # Other searches on the session's server add their own versions; this study added one, of its best trial.
    versions = client.search_model_versions(f"name = '{name}'")
    (version,) = [version for version in versions if version.tags.get("clmlf.study_name") == SMOKE_SEARCH_NAME]
    assert parent.data.tags["clmlf.registered_model"] == f"models:/{name}/{version.version}"
    assert version.run_id == best_run.info.run_id
    assert (version.tags["clmlf.trial_id"], version.tags["clmlf.study_name"]) == (best, SMOKE_SEARCH_NAME)
    # Its description says how sure the study is: the conclusion, the top group, the best configuration's interval.
    comparison = json.loads((folder / storage.COMPARISON_FILE).read_text())
    assert comparison["conclusion"] in version.description
    assert "Top group (not separated from the best)" in version.description
    assert "[95% confidence interval]" in version.description
    assert f"models:/{name}/{version.version}" in smoke_search.log
    # Scored from the registry and from the run, it gives what the trial reported for its selected epoch.
    for uri in (f"models:/{name}/{version.version}", parent.data.tags["clmlf.best_model"]):
        capsys.readouterr()
        assert evaluate.main([uri, "--tracking-uri", mlflow_server]) == 0
        dev = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dev: "))[5:])
        assert dev["dev/score"] == pytest.approx(best_run.data.metrics["selected/dev/score"], abs=1e-4)
    assert evaluate.main([f"models:/{name}/99", "--tracking-uri", mlflow_server]) == 2
    assert f"models:/{name}/99 at {mlflow_server}" in capsys.readouterr().err


def test_scoring_a_checkpoint_folder_imports_no_mlflow():
    program = "import sys, clmlf.evaluate; print('mlflow' in sys.modules)"
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=environment,
                               timeout=300, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "False"


@pytest.mark.slow
def test_the_mlflow_ui_opens_the_study_on_its_training_runs(smoke_search, mlflow_server, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; CI installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("clmlf/search/demo")
    link = runs_page(mlflow_server, experiment.experiment_id)
    assert f"its training runs: {link}" in smoke_search.log
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=30000", "--dump-dom", link,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    page = html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", result.stdout, flags=re.S)))
    page = " ".join(page.split())
    assert page, f"no DOM dumped; chromium said: {result.stderr[-2000:]}"
    # The runs table of the experiment: the parent run and its child runs, under the study's question.
    assert f"Runs - Experiment {experiment.experiment_id} - MLflow" in page
    parents = client.search_runs([experiment.experiment_id], "tags.`clmlf.role` = 'study'")
    children = client.search_runs([experiment.experiment_id], "tags.`clmlf.role` = 'trial'")
    assert f"{len(parents) + len(children)} matching runs" in page
    assert SMOKE_SEARCH_NAME in page
    assert search.__doc__.splitlines()[0] in page
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


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


def test_a_sqlite_store_keeps_its_artifacts_beside_it_wherever_the_run_started(tmp_path, monkeypatch, clmlf_cache_dir):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    overrides = [f"--set={key}={value}" for key, value in cli.SMOKE_OVERRIDES.items()]
    assert (
        train_run.main(["--preset", "tiny", *overrides, "--output", str(tmp_path / "run"), "--tracking-uri", uri]) == 0
    )
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("clmlf/standalone/demo")
    beside = store / "mlruns" / "clmlf" / "standalone" / "demo"
    assert experiment.artifact_location == beside.as_uri()
    (run,) = client.search_runs([experiment.experiment_id])
    assert {path.name for path in (beside / run.info.run_id / "artifacts").iterdir()} >= CHILD_ARTIFACTS
    assert list(elsewhere.iterdir()) == []
