"""One truth per study: the study's MLflow child runs made to agree with its Tune folder, after any kills and resumes.

Tune's folder says what the study did: its saved experiment state lists the trials, each trial's result.json holds
every epoch it reported. What MLflow lacks or holds besides is settled through the study's backlog
(tracking/mlflow_backlog.py), so it reaches MLflow in order and once:

- a child run of a trial that Tune does not know (the driver stopped as it started the trial, before Tune saved its
  state) is marked KILLED and moved to MLflow's deleted runs; so is a second run of one trial. Such a trial's folder
  `trial_<id>/` is removed.
- every finished trial gets from its folder what its run lacks: the run itself, params, epochs, its end.
- where no driver goes on with the study (its end, a replay), the runs of unfinished trials are marked KILLED; a
  resumed study opens them again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results import storage
from tracking.mlflow_backlog import STUDY_OPERATIONS, Backlog
from tracking.mlflow_logging import StudyRun, params_of, trainer_metrics
from tracking.study_callback import selected_snapshot, trial_start_fields

FINISHED_RUN_STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}
ORPHAN_REASON = (
    "Tune has no trial {trial_id}: the study's driver stopped as the trial started, before Tune saved it, and the "
    "resumed study ran its own trials instead"
)
DUPLICATE_REASON = "a second child run of trial {trial_id}; run {kept} is the trial's"
INTERRUPTED_REASON = "the study stopped before this trial finished (Tune status {status}); --resume continues it"


@dataclass
class Reconciliation:
    """What was found to settle, by kind (child run ids, trial ids or folders)."""

    orphan_runs: list[str] = field(default_factory=list)
    duplicate_runs: list[str] = field(default_factory=list)
    orphan_folders: list[str] = field(default_factory=list)
    filled: dict[str, list[str]] = field(default_factory=dict)
    interrupted_runs: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = []
        if self.orphan_runs:
            lines.append(f"{len(self.orphan_runs)} child run(s) of trials that Tune does not have (a driver stopped "
                         f"as they started) marked KILLED and deleted: {', '.join(self.orphan_runs)}")  # fmt: skip
        if self.duplicate_runs:
            lines.append(f"{len(self.duplicate_runs)} second child run(s) of one trial marked KILLED and deleted: "
                         f"{', '.join(self.duplicate_runs)}")  # fmt: skip
        if self.orphan_folders:
            lines.append(f"{len(self.orphan_folders)} trial folder(s) of trials that Tune does not have removed: "
                         f"{', '.join(self.orphan_folders)}")  # fmt: skip
        for trial_id, what in self.filled.items():
            lines.append(f"trial {trial_id}: MLflow lacked {', '.join(what)}; logged from the Tune folder")
        if self.interrupted_runs:
            lines.append(f"{len(self.interrupted_runs)} child run(s) of unfinished trials marked KILLED (--resume "
                         f"opens them again): {', '.join(self.interrupted_runs)}")  # fmt: skip
        return lines


def tune_trials(study_folder: str) -> list[Any]:
    """The trials in Tune's newest saved experiment state."""
    from ray.tune import ExperimentAnalysis

    # Tune warns about every trial that has reported nothing yet; here only the trials themselves are wanted.
    analysis_logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_logger.level
    analysis_logger.setLevel(logging.ERROR)
    try:
        return list(ExperimentAnalysis(storage.absolute_location(study_folder)).trials)
    finally:
        analysis_logger.setLevel(level)


def drop_records_of_unknown_trials(backlog: Backlog, trial_ids: set[str]) -> int:
    """Before a resumed study: the waiting records of trials Tune no longer has, and those of the earlier driver's
    end (this driver's end sends its own), leave the backlog."""

    def unwanted(record: dict[str, Any]) -> bool:
        return record["op"] in STUDY_OPERATIONS or ("trial_id" in record and record["trial_id"] not in trial_ids)

    return backlog.drop(unwanted)


def reconcile(study_folder: str, study_run: StudyRun, backlog: Backlog, driver_goes_on: bool) -> Reconciliation:
    """Compare MLflow with the Tune folder and append to the backlog what settles the difference (see the module);
    the caller sends it. Reads MLflow, so the server must answer."""
    from tracking.mlflow_runs import child_runs

    base = storage.read_json_object(storage.join(study_folder, storage.BASE_CONFIG_FILE)) or {}
    trials = {trial.trial_id: trial for trial in tune_trials(study_folder)}
    done = Reconciliation()
    runs: dict[str, list[Any]] = {}
    for run in child_runs(study_run.tracking_uri, study_run.parent_run_id):
        runs.setdefault(run.data.tags.get("clmlf.trial_id", ""), []).append(run)
    kept: dict[str, Any] = {}
    for trial_id, group in runs.items():
        if trial_id not in trials:
            for run in group:
                abandon(backlog, run.info.run_id, "UNKNOWN", ORPHAN_REASON.format(trial_id=trial_id), delete=True)
                done.orphan_runs.append(run.info.run_id)
            continue
        # The run with most of the trial's data is the trial's; others are leftovers of a lost create_run answer.
        group = sorted(group, key=lambda run: (run.info.status == "FINISHED", len(run.data.metrics),
                                               len(run.data.params), -run.info.start_time), reverse=True)  # fmt: skip
        kept[trial_id] = group[0]
        for run in group[1:]:
            reason = DUPLICATE_REASON.format(trial_id=trial_id, kept=group[0].info.run_id)
            abandon(backlog, run.info.run_id, "UNKNOWN", reason, delete=True)
            done.duplicate_runs.append(run.info.run_id)
    done.orphan_folders = remove_orphan_folders(study_folder, set(trials))
    for trial_id, trial in sorted(trials.items()):
        run = kept.get(trial_id)
        if trial.status in FINISHED_RUN_STATUS:
            missing = fill_finished_trial(study_folder, study_run, backlog, trial, {**base, **trial.config}, run)
            if missing:
                done.filled[trial_id] = missing
        elif not driver_goes_on and run is not None and run.info.status == "RUNNING":
            abandon(backlog, run.info.run_id, trial.status, INTERRUPTED_REASON.format(status=trial.status), False)
            done.interrupted_runs.append(run.info.run_id)
    return done


def abandon(backlog: Backlog, run_id: str, tune_status: str, reason: str, delete: bool) -> None:
    backlog.append("run_abandoned", run_id=run_id, tune_status=tune_status, reason=reason, delete=delete)


def fill_finished_trial(
    study_folder: str, study_run: StudyRun, backlog: Backlog, trial, config: dict[str, Any], run
) -> list[str]:
    """Append what a finished trial's run lacks; returns what that was, in words."""
    from mlflow.tracking import MlflowClient

    missing = []
    params = params_of(config)
    if run is None:
        missing.append("its child run")
    elif set(params) - set(run.data.params):
        missing.append(f"{len(set(params) - set(run.data.params))} param(s)")
    if missing:
        backlog.append("trial_fill", **trial_start_fields(study_run, trial.trial_id, trial.config, config, 0))
    rows = result_rows(study_folder, trial)
    epochs: dict[int, dict[str, Any]] = {}
    for row in rows:
        epochs.setdefault(int(row.get("epoch", row.get("training_iteration", 1) - 1)), row)
    logged: set[int] = set()
    first_metrics = trainer_metrics(next(iter(epochs.values()))) if epochs else {}
    if run is not None and first_metrics:
        history = MlflowClient(study_run.tracking_uri).get_metric_history(run.info.run_id, min(first_metrics))
        logged = {int(metric.step) for metric in history}
    unlogged = sorted(set(epochs) - logged)
    if unlogged:
        missing.append(f"epoch(s) {', '.join(str(epoch) for epoch in unlogged)}")
    for epoch in unlogged:
        row = epochs[epoch]
        timestamp = int(float(row.get("timestamp", 0)) * 1000)
        backlog.append("epoch", trial_id=trial.trial_id, epoch=epoch, timestamp=timestamp, metrics=trainer_metrics(row))
    expected = FINISHED_RUN_STATUS[trial.status]
    ended = run is not None and run.info.status == expected and run.data.tags.get("clmlf.status") == trial.status
    if missing or not ended:
        if not ended:
            missing.append(f"its end (status {run.info.status if run is not None else 'none'}, Tune {trial.status})")
        selected = next((row for row in reversed(rows) if "test/confusion_matrix" in row), None)
        backlog.append(
            "trial_end",
            trial_id=trial.trial_id,
            dataset=study_run.dataset,
            config=config,
            selected=selected_snapshot(selected, int(selected.get("epoch", 0))) if selected else {},
            status=expected,
            error=(trial.get_error() or "Tune wrote no error file") if trial.status == "ERROR" else None,
        )
    return missing


def result_rows(study_folder: str, trial) -> list[dict[str, Any]]:
    """The trial's reported results, oldest first, from its result.json."""
    import json

    text = storage.read_text(storage.join(study_folder, trial.storage.trial_dir_name, "result.json")) or ""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut off by a kill
    return rows


def remove_orphan_folders(study_folder: str, trial_ids: set[str]) -> list[str]:
    """Remove the `trial_<id>` folders of trials that Tune does not have; returns their names."""
    if storage.is_remote(study_folder):
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(study_folder)
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
        folders = [entry.base_name for entry in entries if entry.type == pyarrow.fs.FileType.Directory]
        orphans = [name for name in folders if name.startswith("trial_") and name[len("trial_") :] not in trial_ids]
        for name in orphans:
            filesystem.delete_dir(f"{path.rstrip('/')}/{name}")
        return orphans
    orphans = [
        path.name
        for path in sorted(Path(study_folder).glob("trial_*"))
        if path.is_dir() and path.name[len("trial_") :] not in trial_ids
    ]
    for name in orphans:
        shutil.rmtree(Path(study_folder, name))
    return orphans
