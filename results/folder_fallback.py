"""A study read both from MLflow and from its Tune folder: one record per trial, MLflow's unless it lacks something
that the folder has.

MLflow can lack part of a study: a trial whose child run was never created or lost its params, epochs or end to an
outage or a killed driver (until the backlog is replayed), a server that does not answer at all. Tune's folder is
what the study's trials.csv and best_config.json are made from, so the report takes the folder's record there and
says so. A child run of a trial that the study's folder does not have (a driver stopped as it started the trial) is
left out.
"""

from __future__ import annotations

from dataclasses import replace

from results.record import TrialRecord


def what_mlflow_lacks(logged: TrialRecord, folder: TrialRecord) -> list[str]:
    """What the folder's record of a trial has and MLflow's has not, in words (empty: MLflow's is complete)."""
    lacks = []
    if logged.config is None and folder.config is not None:
        lacks.append("params")
    if (folder.status == "TERMINATED") != (logged.status == "TERMINATED"):
        lacks.append(f"its status (MLflow {logged.status}, Tune {folder.status})")
    missing = sorted(set(folder.metrics) - set(logged.metrics))
    if missing:
        lacks.append(f"{len(missing)} selected metric(s) such as {missing[0]}")
    return lacks


def merge_with_folders(
    logged: list[TrialRecord], from_folders: list[TrialRecord]
) -> tuple[list[TrialRecord], int, list[str]]:
    """The trials, each once; how many were found in both; notes on what came from the folders instead of MLflow.

    A study's trials are matched by study name and trial id (the child run carries Tune's trial id)."""
    folder_of = {(trial.study_name, trial.trial_id): trial for trial in from_folders}
    folder_studies = {trial.study_name for trial in from_folders}
    logged_studies = {trial.study_name for trial in logged}
    trials: list[TrialRecord] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    for trial in logged:
        key = (trial.study_name, trial.trial_id)
        folder = folder_of.get(key)
        if folder is None:
            if trial.study_name in folder_studies:
                notes.append(f"study {trial.study_name}: MLflow run {trial.run_id} of trial {trial.trial_id}, which "
                             "its Tune folder does not have, is left out")  # fmt: skip
            else:
                trials.append(trial)
            continue
        seen.add(key)
        lacks = what_mlflow_lacks(trial, folder)
        if lacks:
            trials.append(replace(folder, source=f"{folder.source}, where MLflow lacks a trial's data"))
            notes.append(f"study {trial.study_name}: MLflow lacks {', '.join(lacks)} of trial {trial.trial_id} "
                         f"(run {trial.run_id}); the Tune folder's record is used")  # fmt: skip
        else:
            trials.append(trial)
    for key, folder in folder_of.items():
        if key in seen:
            continue
        if folder.study_name in logged_studies:
            notes.append(f"study {folder.study_name}: MLflow has no child run of trial {folder.trial_id}; the Tune "
                         "folder's record is used")  # fmt: skip
            folder = replace(folder, source=f"{folder.source}, where MLflow lacks a trial's data")
        trials.append(folder)
    return trials, len(seen), notes
