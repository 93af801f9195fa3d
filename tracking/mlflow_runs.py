"""Trials from MLflow: the child runs of study parent runs, or the trial runs of whole experiments.

A study is one experiment `clmlf/<study>/<dataset>` with one parent run per study execution and one child run per
trial; a child run's params are the trial's full flat config and its tags say its study, status and retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from results.optuna_study import STORAGE_TAG
from results.record import ResultsError, TrialRecord, make_record
from results.storage import hide_password

# MLflow's run status in Tune's words, for runs without the clmlf.status tag.
_TUNE_STATUS_OF_RUN = {"FINISHED": "TERMINATED", "FAILED": "ERROR", "KILLED": "ERROR"}


def search_all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """Every run that matches, all pages. The client, not `mlflow.search_runs`: the latter reads the process-wide
    tracking URI, which a study reading its results at its end has set for its own logging."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def child_runs(tracking_uri: str, parent_run_id: str) -> list[Any]:
    """Every trial run nested under a study's parent run."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return search_all_runs(client, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def read_mlflow_trials(
    tracking_uri: str, experiment_names: list[str] | None = None, parent_run_ids: list[str] | None = None
) -> list[TrialRecord]:
    """The trial runs of the named parent runs and experiments, or of every `clmlf/` experiment when neither is
    named."""
    sqlite_file = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
    if sqlite_file is not None and not Path(sqlite_file).exists():
        # MLflow would create an empty store there; a report of nothing hides a wrong path.
        raise ResultsError(f"{hide_password(tracking_uri)}: no MLflow store at {sqlite_file}")
    client = MlflowClient(tracking_uri)
    experiments: dict[str, str] = {}
    for name in experiment_names or []:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise ResultsError(f"{hide_password(tracking_uri)}: no experiment named {name!r}")
        experiments[experiment.experiment_id] = experiment.name
    if not experiment_names and not parent_run_ids:
        for experiment in client.search_experiments(filter_string="name LIKE 'clmlf/%'"):
            experiments[experiment.experiment_id] = experiment.name

    runs = []
    for experiment_id in experiments:
        runs += search_all_runs(client, [experiment_id], "tags.`clmlf.role` = 'trial'")
    for parent_run_id in parent_run_ids or []:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as error:
            raise ResultsError(
                f"{hide_password(tracking_uri)}: no parent run {parent_run_id!r}: {error.message}"
            ) from error
        experiment_id = parent.info.experiment_id
        experiments.setdefault(experiment_id, client.get_experiment(experiment_id).name)
        runs += search_all_runs(client, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")

    parents: dict[str, Any] = {}
    trials: dict[str, TrialRecord] = {}
    for run in runs:
        if run.info.run_id in trials:
            continue
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id and parent_id not in parents:
            try:
                parents[parent_id] = client.get_run(parent_id)
            except MlflowException:
                parents[parent_id] = None
        parent = parents.get(parent_id) if parent_id else None
        trials[run.info.run_id] = _trial_from_run(run, parent, experiments[run.info.experiment_id], tracking_uri)
    return list(trials.values())


def _trial_from_run(run: Any, parent: Any, experiment_name: str, tracking_uri: str) -> TrialRecord:
    tags = run.data.tags
    parent_tags = parent.data.tags if parent is not None else {}
    # Experiments are named clmlf/<study kind>/<data set>.
    name_parts = experiment_name.split("/") if experiment_name.count("/") == 2 else ["", "unknown", "unknown"]
    status = (
        "ERROR"
        if run.info.status in ("FAILED", "KILLED")
        else tags.get("clmlf.status") or _TUNE_STATUS_OF_RUN.get(run.info.status, run.info.status)
    )
    return make_record(
        trial_id=tags.get("clmlf.trial_id") or run.info.run_name or run.info.run_id,
        dataset=tags.get("clmlf.dataset") or run.data.params.get("dataset") or name_parts[2],
        status=status,
        flat_config=run.data.params,
        metrics=run.data.metrics,
        error_text=tags.get("clmlf.error") or f"run status {run.info.status}, no clmlf.error tag",
        where=f"run {run.info.run_id}",
        retries=int(tags.get("clmlf.retries") or 0),
        study_kind=tags.get("clmlf.study") or parent_tags.get("clmlf.study") or name_parts[1],
        study_name=tags.get("clmlf.study_name")
        or parent_tags.get("clmlf.study_name")
        or (parent.info.run_name if parent is not None else experiment_name),
        parent_run_id=tags.get("mlflow.parentRunId"),
        run_id=run.info.run_id,
        source=f"MLflow {hide_password(tracking_uri)}, experiment {experiment_name}",
        optuna_storage=parent_tags.get(STORAGE_TAG),
    )
