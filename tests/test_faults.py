"""Faults injected at points the test chooses (tracking/failpoints.py), on real study drivers, a real Ray cluster
and a real MLflow server: an MLflow outage during a study, and drivers killed at a trial's start and resumed. After
each, MLflow must hold exactly one FINISHED child run per Tune trial with all its params and every epoch once, no
run may be left RUNNING, no trial folder may be orphaned, and the report, best_config.json and trials.csv agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import MlflowServer, read_trials_csv, result_rows
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis

from clmlf.config import TrainConfig, build_config
from results import storage
from studies import cli
from tracking import failpoints
from tracking.mlflow_backlog import BACKLOG_FILE, RETRY_WINDOW_S

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMOKE_EPOCHS = cli.SMOKE_OVERRIDES["frozen_text_epochs"] + cli.SMOKE_OVERRIDES["finetune_epochs"]
PARAMS_PER_RUN = len(build_config("demo", "tiny").to_flat_dict())
# Generous bounds for a loaded machine: how long a driver may take to reach a point, or to finish.
EVENT_TIMEOUT_S = 300
STUDY_TIMEOUT_S = 600


class Driver:
    """A study script run as a user runs it, in a subprocess, with failure points armed; its output in a file."""

    def __init__(self, folder: Path, script: str, arguments: list[str], armed: str = "", log_name: str = "driver"):
        self.points = folder / "failpoints"
        self.points.mkdir(exist_ok=True)
        self.log_path = folder / f"{log_name}.log"
        environment = {
            **os.environ,
            failpoints.VARIABLE: armed,
            failpoints.FOLDER_VARIABLE: str(self.points),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        }
        for name in ("CLMLF_TRACKING_URI", "MLFLOW_TRACKING_URI", "CLMLF_RAY_ADDRESS", "RAY_ADDRESS"):
            environment.pop(name, None)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "studies" / script), *arguments],
                stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=folder,
            )  # fmt: skip

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, condition, what: str) -> None:
        """Wait until `condition()` holds; fail if the driver ends first or after EVENT_TIMEOUT_S."""
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the driver ended ({self.process.returncode}) before {what}:\n{self.log[-5000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {EVENT_TIMEOUT_S} s:\n{self.log[-5000:]}")
            time.sleep(0.2)

    def wait_for_pause(self, point: str) -> None:
        self.wait_for((self.points / f"{point}.paused").exists, f"a pause at failure point {point}")

    def go_on(self, point: str) -> None:
        (self.points / f"{point}.resume").touch()

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=STUDY_TIMEOUT_S)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


def sweep_arguments(
    tmp_path: Path, name: str, tracking_uri: str, address: str, data_root: Path, *extra: str
) -> list[str]:
    """The smoke layer sweep's two quick trials on the small demo set."""
    return [
        "--smoke-test", "--fusion-layers", "1,2", "--image-layers", "1", "--seeds", "1",
        "--data-root", str(data_root), "--address", address,
        "--storage-path", str(tmp_path / "tune"), "--name", name, "--tracking-uri", tracking_uri, *extra,
    ]  # fmt: skip


def resume_arguments(tmp_path: Path, name: str, address: str) -> list[str]:
    return ["--resume", "--name", name, "--storage-path", str(tmp_path / "tune"), "--address", address]


def study_counts(experiment: Path) -> dict:
    """What the closing note of a fault gives: Tune's trials, the child runs by status, params and steps per run."""
    parent = json.loads((experiment / storage.PARENT_RUN_FILE).read_text())
    client = MlflowClient(parent["tracking_uri"])
    runs = client.search_runs(
        [parent["experiment_id"]], f"tags.`mlflow.parentRunId` = '{parent['parent_run_id']}'",
        run_view_type=ViewType.ALL,
    )  # fmt: skip
    trials = {trial.trial_id: trial.status for trial in ExperimentAnalysis(str(experiment)).trials}
    return {
        "tune_trials": trials,
        "runs": [
            {
                "trial_id": run.data.tags.get("clmlf.trial_id"),
                "status": run.info.status,
                "deleted": run.info.lifecycle_stage == "deleted",
                "params": len(run.data.params),
                "steps": {
                    key: sorted(metric.step for metric in client.get_metric_history(run.info.run_id, key))
                    for key in ("train/loss", "dev/score")
                },
                "run": run,
            }
            for run in runs
        ],
        "folders": sorted(path.name for path in experiment.glob("trial_*") if path.is_dir()),
    }


def describe(counts: dict) -> str:
    runs = [{key: value for key, value in run.items() if key != "run"} for run in counts["runs"]]
    return json.dumps({"tune_trials": counts["tune_trials"], "runs": runs, "folders": counts["folders"]}, indent=1)


def assert_one_truth(experiment: Path, log: str, epochs: int = SMOKE_EPOCHS) -> dict:
    """Exactly one FINISHED child run per Tune trial, with every param (the trial's values) and every epoch once;
    nothing RUNNING; no orphaned folder; trials.csv, best_config.json and the report agree with Tune."""
    counts = study_counts(experiment)
    shown = describe(counts)
    trials = counts["tune_trials"]
    assert set(trials.values()) == {"TERMINATED"}, shown
    assert not [run for run in counts["runs"] if run["status"] == "RUNNING"], shown
    active = [run for run in counts["runs"] if not run["deleted"]]
    assert sorted(run["trial_id"] for run in active) == sorted(trials), shown
    analysis = ExperimentAnalysis(str(experiment))
    for run in active:
        assert run["status"] == "FINISHED", shown
        assert run["params"] == PARAMS_PER_RUN, shown
        assert run["steps"] == {"train/loss": list(range(epochs)), "dev/score": list(range(epochs))}, shown
        config = next(trial.config for trial in analysis.trials if trial.trial_id == run["trial_id"])
        for key, value in config.items():
            assert run["run"].data.params[key] == str(value), shown
    assert counts["folders"] == sorted(f"trial_{trial_id}" for trial_id in trials), shown
    rows = read_trials_csv(experiment)
    assert sorted(row["trial_id"] for row in rows) == sorted(trials)
    assert f"report demo: {len(trials)} completed and 0 failed trial(s)" in log
    best = json.loads((experiment / storage.BEST_CONFIG_FILE).read_text())
    assert json.loads((experiment / storage.REPORT_FOLDER / "demo" / storage.BEST_CONFIG_FILE).read_text()) == best
    assert TrainConfig.from_flat_dict(best["config"]) and best["top_group"]
    assert not (experiment / BACKLOG_FILE).exists()
    return counts


@pytest.mark.slow
def test_an_mlflow_outage_neither_stalls_the_trials_nor_loses_what_they_report(
    tmp_path, ray_cluster, small_demo_root, stoppable_mlflow_server: MlflowServer
):
    server = stoppable_mlflow_server
    experiment = tmp_path / "tune" / "outage"
    arguments = sweep_arguments(tmp_path, "outage", server.uri, ray_cluster.address, small_demo_root)
    driver = Driver(tmp_path, "layer_sweep.py", arguments, armed="trial_result=pause,study_end=pause")
    try:
        # The first epoch result reached the driver: the server goes away.
        driver.wait_for_pause("trial_result")
        server.stop()
        stopped_at = time.time()
        driver.go_on("trial_result")
        # Tune's fit() returned. The server stays away until the study has said that it does not answer, that is,
        # until a request has used up the client's retries.
        driver.wait_for_pause("study_end")
        driver.wait_for(lambda: "does not answer" in driver.log, "the warning that MLflow does not answer")
        waiting = (experiment / BACKLOG_FILE).read_text()
        server.start()
        restarted_at = time.time()
        driver.go_on("study_end")
        returncode = driver.finish()
    finally:
        driver.stop()
    log = driver.log
    assert returncode == 0, log[-5000:]
    # One warning naming the backlog when the server went away, one when it was drained; Tune never waited on the
    # callback (it says so when a callback takes long).
    assert log.count("does not answer") == 1 and str(experiment / BACKLOG_FILE) in log
    assert log.count("answers again") == 1
    assert "operation took" not in log
    assert '"op": "epoch"' in waiting
    # The trials went on while the server was down: each reported at most its first epoch before.
    reported = [row["trial/reported_at"] for folder in experiment.glob("trial_*") for row in result_rows(folder)]
    during = [moment for moment in reported if stopped_at < moment < restarted_at]
    trials = len(list(experiment.glob("trial_*")))
    assert trials == 2 and len(during) >= len(reported) - trials
    assert restarted_at - stopped_at > RETRY_WINDOW_S
    assert_one_truth(experiment, log)


@pytest.mark.slow
def test_a_driver_killed_between_a_runs_creation_and_its_params_resumes_with_every_param(
    tmp_path, ray_cluster, small_demo_root, mlflow_server
):
    experiment = tmp_path / "tune" / "params"
    arguments = sweep_arguments(
        tmp_path, "params", mlflow_server, ray_cluster.address, small_demo_root, "--no-analyses"
    )
    killed = Driver(tmp_path, "layer_sweep.py", arguments, armed="trial_run_created@2=kill", log_name="killed")
    assert killed.finish() == -signal.SIGKILL, killed.log[-5000:]
    # The second trial's run exists without its params.
    counts = study_counts(experiment)
    assert sorted(run["params"] for run in counts["runs"]) == [0, PARAMS_PER_RUN], describe(counts)

    resumed = Driver(tmp_path, "layer_sweep.py", resume_arguments(tmp_path, "params", ray_cluster.address),
                     log_name="resumed")  # fmt: skip
    assert resumed.finish() == 0, resumed.log[-5000:]
    assert_one_truth(experiment, resumed.log)


@pytest.mark.slow
def test_a_search_whose_driver_is_killed_as_a_trial_starts_resumes_to_one_run_per_trial(
    tmp_path, ray_cluster, small_demo_root, mlflow_server
):
    experiment = tmp_path / "tune" / "killed-search"
    arguments = [
        "--smoke-test", "--no-analyses", "--max-concurrent", "1", "--data-root", str(small_demo_root),
        "--address", ray_cluster.address, "--storage-path", str(tmp_path / "tune"), "--name", "killed-search",
        "--tracking-uri", mlflow_server,
    ]  # fmt: skip
    killed = Driver(tmp_path, "search.py", arguments, armed="trial_run_created@2=kill", log_name="killed")
    assert killed.finish() == -signal.SIGKILL, killed.log[-5000:]
    before = study_counts(experiment)
    # The killed driver had started the second trial: its child run exists, without params; Tune may or may not have
    # made its folder yet (that depends on the worker, not on the driver).
    assert len(before["runs"]) == 2 and len(before["folders"]) in (1, 2), describe(before)
    assert sorted(run["params"] for run in before["runs"]) == [0, PARAMS_PER_RUN], describe(before)
    # What Tune had saved as finished when the driver was killed (the second trial may have reported by then).
    finished = {
        f"trial_{trial_id}": result_rows(experiment / f"trial_{trial_id}")
        for trial_id, status in before["tune_trials"].items() if status == "TERMINATED"
    }  # fmt: skip
    assert finished and all(len(rows) == SMOKE_EPOCHS for rows in finished.values()), describe(before)

    resumed = Driver(tmp_path, "search.py", resume_arguments(tmp_path, "killed-search", ray_cluster.address),
                     log_name="resumed")  # fmt: skip
    assert resumed.finish() == 0, resumed.log[-5000:]
    after = assert_one_truth(experiment, resumed.log)
    assert len(after["tune_trials"]) == 3
    # The finished trials were not run again.
    for name, rows in finished.items():
        assert result_rows(experiment / name) == rows
    # The stored Optuna study went on with the searcher: one completed trial per Tune trial with its score, none left
    # running (a trial the killed driver asked for and never ran is marked failed).
    study = optuna.load_study(study_name="killed-search", storage=f"sqlite:///{experiment / 'optuna.db'}")
    completed = [trial.value for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    scores = [float(row["selected/dev/score"]) for row in read_trials_csv(experiment)]
    assert sorted(completed) == pytest.approx(sorted(scores))
    assert {trial.state for trial in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    # Finished trials need no checkpoint once the study is over, but for the best model's.
    parent = json.loads((experiment / storage.PARENT_RUN_FILE).read_text())
    best_trial = MlflowClient(mlflow_server).get_run(parent["parent_run_id"]).data.tags["clmlf.best_trial_id"]
    assert [path.parent.name for path in experiment.glob("trial_*/checkpoint_*")] == [f"trial_{best_trial}"]
