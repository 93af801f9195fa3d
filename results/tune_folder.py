"""Trials from a study's Tune folder (`<storage>/<name>`, local or remote), read with Ray's `ExperimentAnalysis`.

A trial's Tune config holds only its searched values (or its point); the study's base config, saved beside Tune's
files, holds the rest. The study's kind and parent run come from its saved parent-run file.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Checkpoint, ExperimentAnalysis, Tuner

from results import storage
from results.optuna_study import recorded_location
from results.record import SELECTED_CHECKPOINT, STUDY_KINDS, ResultsError, TrialRecord, make_record


def read_tune_trials(location: str | Path) -> list[TrialRecord]:
    """Every trial of a study folder, or of every study folder directly inside a local folder."""
    location = storage.absolute_location(str(location))
    if Tuner.can_restore(location):
        return read_study_folder(location)
    if not storage.is_remote(location) and Path(location).is_dir():
        studies = sorted(str(path) for path in Path(location).iterdir() if path.is_dir() and Tuner.can_restore(path))
        if studies:
            return [trial for study in studies for trial in read_study_folder(study)]
    raise ResultsError(f"{location}: not a Tune study folder (no tuner.pkl), nor a folder that holds study folders")


def read_study_folder(location: str) -> list[TrialRecord]:
    try:
        base = storage.read_json_object(storage.join(location, storage.BASE_CONFIG_FILE)) or {}
        parent = storage.read_json_object(storage.join(location, storage.PARENT_RUN_FILE)) or {}
        stored = recorded_location(location)
        analysis = ExperimentAnalysis(location)
    except ValueError as error:
        raise ResultsError(f"{location}: cannot read the study's Tune results: {error}") from error
    name = parent.get("study_name") or location.rstrip("/").rsplit("/", 1)[-1]
    kind = parent.get("study") or next(
        (kind for kind in STUDY_KINDS if name == kind or name.startswith((f"{kind}-", f"{kind}_"))), "unknown"
    )
    without_base = "" if base else f" (no {storage.BASE_CONFIG_FILE} beside it holds the rest of the config)"
    return [
        make_record(
            trial_id=trial.trial_id,
            dataset=str(base.get("dataset") or trial.config.get("dataset") or "unknown"),
            status=trial.status,
            flat_config={**base, **trial.config},
            metrics=trial.last_result or {},
            error_text=(trial.get_error() or "Tune wrote no error file") if trial.status == "ERROR" else "",
            where=f"Tune trial {trial.trial_id} in {location}{without_base}",
            # Tune counts the failure that ended an errored trial too; retries are the restarts.
            retries=max(trial.num_failures - (1 if trial.status == "ERROR" else 0), 0),
            study_kind=kind,
            study_name=name,
            parent_run_id=parent.get("parent_run_id"),
            source=f"Tune folder {location}",
            optuna_storage=stored.storage if stored else None,
        )
        # Trial ids count up within a study: in id order, trials are in the order Tune created them.
        for trial in sorted(analysis.trials, key=lambda trial: trial.trial_id)
    ]


def selected_checkpoint(analysis: ExperimentAnalysis, trial_id: str) -> Checkpoint | None:
    """A trial's checkpoint of the epoch selected on dev (Tune keeps it by SELECTED_CHECKPOINT), or None."""
    trial = next((trial for trial in analysis.trials if trial.trial_id == trial_id), None)
    return analysis.get_best_checkpoint(trial, SELECTED_CHECKPOINT, "max") if trial is not None else None
