"""The Tune callback that logs a study's trials to MLflow, one nested child run per trial under the study's parent
run. It runs on the driver and turns the results that Tune already collects into runs, so trials on worker nodes
need no MLflow access and a local SQLite store never has two writers.

The callback only writes records to the study's MLflow backlog (tracking/mlflow_backlog.py), whose sender thread
sends them: a slow or stopped server never holds up Tune's loop, and so never the trials.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from results.record import describe_values
from tracking.failpoints import failpoint
from tracking.mlflow_backlog import Backlog, BacklogSender, opened, register
from tracking.mlflow_logging import TEXT_RESULT_TAGS, StudyRun, params_of, source_tags, study_source, trainer_metrics


class MlflowStudyCallback(Callback):
    """Driver-side Tune callback: one nested MLflow child run per trial, found again by tag on resume.

    backlog_file: the study's backlog; the study's driver opens it and its sender (`Study`), and a callback that
    finds none open opens its own.
    """

    def __init__(self, study_run: StudyRun, base_config: dict[str, Any], backlog_file: Path):
        self.study_run = study_run
        self.base_config = dict(base_config)
        self.backlog_file = Path(backlog_file)
        self._backlog: Backlog | None = None
        self._sender: BacklogSender | None = None
        self._retries: dict[str, int] = {}
        self._placement: dict[str, tuple[str, str]] = {}
        # Per trial, the dev and test results of the latest epoch that became the selected one (the only results
        # that carry test metrics and the confusion matrices): the trial's end logs them.
        self._selected: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config (tuner.pkl); the backlog and its sender belong to one driver.
        return {"study_run": self.study_run, "base_config": self.base_config, "backlog_file": str(self.backlog_file)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["study_run"], state["base_config"], Path(state["backlog_file"]))

    def _append(self, op: str, **fields: Any) -> None:
        if self._backlog is None:
            found = opened(self.backlog_file)
            if found is None:
                backlog = Backlog(self.backlog_file)
                sender = BacklogSender(backlog, self.study_run)
                register(backlog, sender)
                sender.start()
                found = (backlog, sender)
            self._backlog, self._sender = found
        self._backlog.append(op, **fields)
        assert self._sender is not None
        self._sender.notify()

    def get_state(self) -> dict[str, Any]:
        return {"selected": self._selected, "retries": dict(self._retries)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._retries = dict(state.get("retries", {}))
        self._selected = dict(state.get("selected", {}))
        # Saved by earlier versions of this callback.
        for trial_id, saved in state.get("recorders", {}).items():
            self._selected.setdefault(trial_id, dict(saved.get("selected") or {}))

    def full_config(self, trial) -> dict[str, Any]:
        """The trial's Tune config holds only its searched values; the base config holds the rest."""
        return {**self.base_config, **trial.config}

    def _start(self, trial) -> None:
        self._append(
            "trial_start",
            **trial_start_fields(self.study_run, trial.trial_id, trial.config, self.full_config(trial),
                                 self._retries.get(trial.trial_id, 0)),
        )  # fmt: skip

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        failpoint("trial_start")
        self._start(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        failpoint("trial_result")
        placement = (str(result.get("trial/node", "")), str(result.get("trial/device", "")))
        if placement != self._placement.get(trial.trial_id):
            self._append("trial_tags", trial_id=trial.trial_id, tags={"clmlf.node": placement[0],
                                                                      "clmlf.device": placement[1]})  # fmt: skip
            self._placement[trial.trial_id] = placement
        epoch = int(result.get("epoch", result.get("training_iteration", 1) - 1))
        if "test/confusion_matrix" in result:
            self._selected[trial.trial_id] = selected_snapshot(result, epoch)
        self._append("epoch", **epoch_fields(trial.trial_id, result, epoch))

    def _end(self, trial, status: str, error: str | None = None) -> None:
        self._append(
            "trial_end",
            trial_id=trial.trial_id,
            dataset=self.study_run.dataset,
            config=self.full_config(trial),
            selected=self._selected.get(trial.trial_id, {}),
            status=status,
            error=error,
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FAILED", trial_error_text(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._retries[trial.trial_id] = self._retries.get(trial.trial_id, 0) + 1
        self._append("trial_tags", trial_id=trial.trial_id, tags={"clmlf.retries": str(self._retries[trial.trial_id])})


def trial_start_fields(
    study_run: StudyRun, trial_id: str, searched: dict[str, Any], config: dict[str, Any], retries: int
) -> dict[str, Any]:
    """A trial_start record: the child run's name and tags, and its params (every key of the full flat config)."""
    return {
        "trial_id": trial_id,
        "run_name": describe_values(searched) or trial_id,
        "tags": {
            **source_tags(study_source(study_run.study), study_run.git_commit),
            "mlflow.parentRunId": study_run.parent_run_id,
            "clmlf.role": "trial",
            "clmlf.study": study_run.study,
            "clmlf.study_name": study_run.study_name,
            "clmlf.dataset": study_run.dataset,
            "clmlf.variant": str(config.get("model.variant", "")),
            "clmlf.trial_id": trial_id,
            "clmlf.seed": str(config.get("seed", "")),
            "clmlf.status": "RUNNING",
            "clmlf.retries": str(retries),
        },
        "params": params_of(config),
    }


def epoch_fields(trial_id: str, result: dict[str, Any], epoch: int) -> dict[str, Any]:
    """An epoch record: the trainer's numeric metrics (step = epoch), its text results as tags, when it was logged."""
    return {
        "trial_id": trial_id,
        "epoch": epoch,
        "timestamp": int(time.time() * 1000),
        "metrics": trainer_metrics(result),
        "tags": {tag: str(result[key]) for key, tag in TEXT_RESULT_TAGS.items() if key in result},
    }


def selected_snapshot(result: dict[str, Any], epoch: int) -> dict[str, Any]:
    return {**{key: value for key, value in result.items() if key.startswith(("dev/", "test/"))}, "epoch": epoch}


def trial_error_text(trial) -> str:
    """The trial's error file as Tune wrote it on the driver (every failure, oldest first)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    # With remote storage the driver's staging copy may be gone; Tune also keeps it with the trial.
    return trial.get_error() or "unknown error (Tune wrote no error file)"
