"""The Tune callback that logs a study's trials to MLflow, one nested child run per trial under the study's parent
run. It runs on the driver and turns the results that Tune already collects into runs, so trials on worker nodes
need no MLflow access and a local SQLite store never has two writers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from tracking.failpoints import failpoint
from tracking.mlflow_logging import RunRecorder, StudyRun, source_tags, study_source, trial_run_id
from tracking.results.record import describe_values


class MlflowStudyCallback(Callback):
    """Driver-side Tune callback: one nested MLflow child run per trial, found again by tag on resume.

    Logging problems are reported on stderr and never stop the study: losing a metric must not lose a trial.
    """

    def __init__(self, study_run: StudyRun, base_config: dict[str, Any]):
        self.study_run = study_run
        self.base_config = dict(base_config)
        self._client: MlflowClient | None = None
        self._recorders: dict[str, RunRecorder] = {}
        self._retries: dict[str, int] = {}
        self._placement: dict[str, tuple[str, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config (tuner.pkl); clients and recorders are rebuilt after a restore.
        return {"study_run": self.study_run, "base_config": self.base_config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["study_run"], state["base_config"])

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.study_run.tracking_uri)
        return self._client

    def get_state(self) -> dict[str, Any]:
        return {
            "recorders": {
                trial_id: {
                    "run_id": recorder.run_id,
                    "logged_epochs": sorted(recorder.logged_epochs),
                    "selected": recorder.selected,
                }
                for trial_id, recorder in self._recorders.items()
            },
            "retries": dict(self._retries),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._retries = dict(state.get("retries", {}))
        for trial_id, saved in state.get("recorders", {}).items():
            self._recorders[trial_id] = RunRecorder(
                self.client,
                saved["run_id"],
                self.study_run.dataset,
                set(saved["logged_epochs"]),
                dict(saved["selected"]),
            )

    def full_config(self, trial) -> dict[str, Any]:
        """The trial's Tune config holds only its searched values; the base config holds the rest."""
        return {**self.base_config, **trial.config}

    def _guarded(self, what: str, trial, action) -> None:
        try:
            action()
        except Exception as error:  # tracking must never take a study down
            print(
                f"warning: MLflow logging failed ({what}, trial {trial.trial_id}, {self.study_run.tracking_uri}): "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
            )

    def _recorder(self, trial) -> RunRecorder:
        recorder = self._recorders.get(trial.trial_id)
        if recorder is not None:
            return recorder
        study_run = self.study_run
        existing = trial_run_id(study_run, trial.trial_id)
        if existing is not None:
            recorder = RunRecorder.reopen(self.client, existing, study_run.dataset)
        else:
            config = self.full_config(trial)
            run = self.client.create_run(
                study_run.experiment_id,
                run_name=describe_values(trial.config) or trial.trial_id,
                tags={
                    **source_tags(study_source(study_run.study), study_run.git_commit),
                    "mlflow.parentRunId": study_run.parent_run_id,
                    "clmlf.role": "trial",
                    "clmlf.study": study_run.study,
                    "clmlf.study_name": study_run.study_name,
                    "clmlf.dataset": study_run.dataset,
                    "clmlf.variant": str(config.get("model.variant", "")),
                    "clmlf.trial_id": trial.trial_id,
                    "clmlf.seed": str(config.get("seed", "")),
                    "clmlf.status": "RUNNING",
                    "clmlf.retries": str(self._retries.get(trial.trial_id, 0)),
                },
            )
            recorder = RunRecorder(self.client, run.info.run_id, study_run.dataset)
            failpoint("trial_run_created")
            recorder.log_params(config)
        self._recorders[trial.trial_id] = recorder
        return recorder

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        failpoint("trial_start")
        self._guarded("start", trial, lambda: self._recorder(trial))

    def on_trial_restore(self, iteration: int, trials: list, trial, **info) -> None:
        self._guarded("restore", trial, lambda: self._recorder(trial))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        failpoint("trial_result")

        def log() -> None:
            recorder = self._recorder(trial)
            placement = (str(result.get("trial/node", "")), str(result.get("trial/device", "")))
            if placement != self._placement.get(trial.trial_id):
                recorder.set_tags({"clmlf.node": placement[0], "clmlf.device": placement[1]})
                self._placement[trial.trial_id] = placement
            recorder.log_epoch(result, int(result.get("epoch", result.get("training_iteration", 1) - 1)))

        self._guarded("result", trial, log)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._guarded("complete", trial, lambda: self._recorder(trial).close(self.full_config(trial)))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        def fail() -> None:
            self._recorder(trial).close(self.full_config(trial), error=trial_error_text(trial), status="FAILED")

        self._guarded("error", trial, fail)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._retries[trial.trial_id] = self._retries.get(trial.trial_id, 0) + 1

        def count() -> None:
            self._recorder(trial).set_tags({"clmlf.retries": str(self._retries[trial.trial_id])})

        self._guarded("recover", trial, count)


def trial_error_text(trial) -> str:
    """The trial's error file as Tune wrote it on the driver (every failure, oldest first)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    # With remote storage the driver's staging copy may be gone; Tune also keeps it with the trial.
    return trial.get_error() or "unknown error (Tune wrote no error file)"
