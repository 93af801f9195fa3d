"""MLflow logging of studies and training runs.

A study is one experiment `clmlf/<study>/<dataset>` holding one parent run per study execution and one nested
child run per Tune trial (written by `tracking.study_callback` from the driver); a standalone training run is one
run in `clmlf/standalone/<dataset>`. `RunRecorder` logs one training run, a trial's child run or a standalone run,
in the same way: the full flat config as params, per-epoch metrics (step = epoch), the selected epoch's artifacts.

What the MLflow UI reads is set the way MLflow sets it: the experiment-kind tag, the description
(`mlflow.note.content`), the primary metric, and the standard source tags of every run (`mlflow.source.name`,
`.type`, `.git.commit`, `mlflow.user`). `runs_page` is the address that opens an experiment on its training runs.
"""

from __future__ import annotations

import getpass
import math
import os
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag, SourceType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_EXPERIMENT_PRIMARY_METRIC_GREATER_IS_BETTER,
    MLFLOW_EXPERIMENT_PRIMARY_METRIC_NAME,
    MLFLOW_GIT_COMMIT,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

from results.record import (
    RANKING_METRIC,
    RANKING_MODE,
    SELECTED_SPLITS,
    clean_error,
    latest_failure,
)
from results.storage import hide_password
from tracking.run_artifacts import classification_report, confusion_matrix_figure, label_names_of
from tracking.uri import TrackingUnavailable, local_artifact_location

# The trainer namespaces every metric; Tune's own bookkeeping keys (time_total_s, pid, ...) are not logged.
TRAINER_METRIC_PREFIXES = ("train/", "lr/", "dev/", "test/", "selected/")
# MLflow refuses longer parameter values; the flat config never comes near it, study arguments might.
PARAM_VALUE_CHARACTERS = 6000
# The experiment tag that says what an experiment holds: the value is the UI's "Machine learning" kind (MLflow 3.x
# UIs without the per-browser view switch open such an experiment on its runs; see runs_page for 3.17).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The best trial's model: its checkpoint at the epoch selected on dev, an artifact folder of its child run.
MODEL_ARTIFACT = "model"
# Text the trainer reports with every epoch, kept as tags of the run: the precision it trained in, and why.
TEXT_RESULT_TAGS = {"train/precision": "clmlf.precision", "train/precision_reason": "clmlf.precision_reason"}


@contextmanager
def _environment(**variables: str) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_tracking_uri(tracking_uri: str, timeout_seconds: int = 5) -> None:
    """Raise `TrackingUnavailable` unless the store answers within a few seconds (one request, no retries); with a
    password in the URI, keep MLflow from printing it.

    Called before Ray starts, so that a study with a wrong or stopped server costs seconds, not a scheduled
    study whose results are then lost.
    """
    if hide_password(tracking_uri) != tracking_uri:
        # MLflow prints a "View run at <URI>" line when a run ends, password and all; the study prints its own links.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    started = time.monotonic()
    with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_seconds)):
        try:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
        except Exception as error:  # the store's kind decides what it raises (HTTP, SQL, file system)
            seconds = time.monotonic() - started
            summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrackingUnavailable(
                f"--tracking-uri {hide_password(tracking_uri)}: the MLflow tracking store does not answer "
                f"({type(error).__name__} after {seconds:.1f} s: {summary[:300]}). Start the server "
                "(mlflow server --host ... --port ...), fix the URI, or leave --tracking-uri out to log into "
                "./mlflow.db."
            ) from error


def experiment_name(study: str, dataset: str) -> str:
    return f"clmlf/{study}/{dataset}"


def git_commit() -> str:
    """The commit of the checkout the code runs from, or "unknown" (an installed copy, no git)."""
    project = Path(__file__).resolve().parents[1]
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() if completed.returncode == 0 else "unknown"


def source_tags(source_name: str, commit: str) -> dict[str, str]:
    """MLflow's standard source tags: the code that ran (a path in the repository), how, at which commit (from
    `git_commit`), by whom."""
    tags = {
        MLFLOW_SOURCE_NAME: source_name,
        MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
        MLFLOW_USER: getpass.getuser(),
    }
    if commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def ensure_experiment(client: MlflowClient, name: str, description: str) -> str:
    """The experiment (created, or restored if deleted), marked as one of training runs and described."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=local_artifact_location(client.tracking_uri, name)
        )
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    tags = {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        MLFLOW_RUN_NOTE: description,
        MLFLOW_EXPERIMENT_PRIMARY_METRIC_NAME: RANKING_METRIC,
        MLFLOW_EXPERIMENT_PRIMARY_METRIC_GREATER_IS_BETTER: str(RANKING_MODE == "max"),
    }
    for key, value in tags.items():
        client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def runs_page(tracking_uri: str, experiment_id: str) -> str:
    """The UI's page of an experiment's training runs, under the server's address (for a local store, under that of
    `mlflow ui`). MLflow 3.17's UI chooses between its GenAI and its model-training views per browser (`workflowType`,
    remembered from the switch at the top of its sidebar), not per experiment: the link names the view."""
    parts = urllib.parse.urlsplit(tracking_uri)
    # A browser logs in by itself: the link carries no credentials.
    server = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"
    server = server if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def study_description(study: str, dataset: str, question: str) -> str:
    """An experiment's description (Markdown): what its study asks, on which data set, and how its runs are laid out."""
    return (
        f"{question.strip()}\n\nData set: {dataset}. One parent run per execution of `studies/{study}.py` (its "
        "report, best config and summaries are its artifacts), one child run per trial, named by the values it "
        f"tries. Runs are ranked on `{RANKING_METRIC}`; test numbers never rank anything."
    )


def trainer_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numeric trainer metrics of one reported epoch (confusion matrices and strings left out)."""
    metrics = {}
    for key, value in result.items():
        if not key.startswith(TRAINER_METRIC_PREFIXES) or isinstance(value, (list, dict, str)) or value is None:
            continue
        metrics[key] = float(value)
    return metrics


def typed_flat_config(flat_config: dict[str, Any]) -> dict[str, Any]:
    """The flat config as `TrainConfig.to_flat_dict()` writes it (every key, typed values), or as it is where it
    does not validate: a failed trial's run still shows what it ran with."""
    from clmlf.config import ConfigError, TrainConfig

    try:
        return TrainConfig.from_flat_dict(flat_config).to_flat_dict()
    except ConfigError:
        return dict(flat_config)


def params_of(flat_config: dict[str, Any]) -> dict[str, str]:
    """Every key of the full flat config, as strings: what a child run logs as params."""
    return {key: str(value)[:PARAM_VALUE_CHARACTERS] for key, value in typed_flat_config(flat_config).items()}


@dataclass
class RunRecorder:
    """Logs one training run into an existing MLflow run: per-epoch metrics, then the selected epoch's artifacts.

    `logged_epochs` makes logging idempotent: an epoch reported again after a resume is not logged twice.
    `selected` keeps the result of the latest epoch that became the selected one (the only results that carry
    test metrics and the test confusion matrix).
    """

    client: MlflowClient
    run_id: str
    dataset: str
    logged_epochs: set[int] = field(default_factory=set)
    selected: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def reopen(cls, client: MlflowClient, run_id: str, dataset: str) -> RunRecorder:
        """Continue an existing run (a resumed trial or training): the epochs it logged are not logged again."""
        logged = {int(metric.step) for metric in client.get_metric_history(run_id, RANKING_METRIC)}
        client.update_run(run_id, status="RUNNING")
        return cls(client, run_id, dataset, logged)

    def log_epoch(self, result: dict[str, Any], epoch: int) -> None:
        if "test/confusion_matrix" in result:
            self.selected = {key: value for key, value in result.items() if key.startswith(("dev/", "test/"))}
            self.selected["epoch"] = epoch
        if epoch in self.logged_epochs:
            return
        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, value, timestamp, epoch) for key, value in trainer_metrics(result).items()]
        tags = [RunTag(tag, str(result[key])) for key, tag in TEXT_RESULT_TAGS.items() if key in result]
        # log_batch takes at most 1000 metrics per call.
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000], tags=tags if start == 0 else [])
        self.logged_epochs.add(epoch)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_params(self, flat_config: dict[str, Any]) -> None:
        """Params once: MLflow refuses to log a param again with another value, and a resumed run is the same."""
        existing = self.client.get_run(self.run_id).data.params
        params = [Param(key, value) for key, value in params_of(flat_config).items() if key not in existing]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log_outcome(self, flat_config: dict[str, Any]) -> None:
        """config.json always; the confusion matrices and the classification report once an epoch was selected."""
        self.client.log_dict(self.run_id, typed_flat_config(flat_config), "config.json")
        if not self.selected:
            return
        label_names = label_names_of(self.dataset, self.selected)
        epoch = self.selected.get("epoch")
        for split in SELECTED_SPLITS:
            matrix = self.selected.get(f"{split}/confusion_matrix")
            if matrix:
                title = f"{split}, selected epoch {epoch}"
                figure = confusion_matrix_figure(matrix, label_names, title)
                self.client.log_figure(self.run_id, figure, f"confusion_matrix_{split}.png")
        self.client.log_dict(
            self.run_id, classification_report(self.selected, label_names), "classification_report.json"
        )

    def close(self, flat_config: dict[str, Any], error: str | None = None, status: str = "FINISHED") -> None:
        """The outcome (`log_outcome`), the clmlf.status tag (TERMINATED, or ERROR with the error's text) and the
        run's end status (FINISHED, FAILED or KILLED)."""
        self.log_outcome(flat_config)
        if error is None:
            self.set_tags({"clmlf.status": "TERMINATED"})
        else:
            self.set_tags({"clmlf.status": "ERROR", "clmlf.error": clean_error(latest_failure(error))})
        self.client.set_terminated(self.run_id, status=status)


# In this process: each tracking URI with a password, by its shown form (StudyRun.shown).
_FULL_TRACKING_URIS: dict[str, str] = {}


@dataclass
class StudyRun:
    """Where a study's runs go: the parent run and what every child run is tagged with."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    study: str
    study_name: str
    dataset: str
    git_commit: str

    def __post_init__(self) -> None:
        if self.shown != self.tracking_uri:
            _FULL_TRACKING_URIS[self.shown] = self.tracking_uri

    # Tune pickles the study's callbacks, and with them this, into the study folder (tuner.pkl): the pickle holds the
    # URI without its password, and unpickling in the driver that knows the password puts it back.
    def __getstate__(self) -> dict[str, str]:
        return {**self.__dict__, "tracking_uri": self.shown}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__dict__.update(
            {**state, "tracking_uri": _FULL_TRACKING_URIS.get(state["tracking_uri"], state["tracking_uri"])}
        )

    @property
    def shown(self) -> str:
        """The tracking URI with its password (if any) replaced by ***: what is printed, written and logged."""
        return hide_password(self.tracking_uri)

    def to_json(self) -> dict[str, str]:
        # The study folder is shared storage: the password stays with the user (flag or environment), and a resume
        # takes it from there again.
        return {**self.__dict__, "tracking_uri": self.shown}


def start_study_run(
    tracking_uri: str,
    study: str,
    study_name: str,
    dataset: str,
    arguments: dict[str, Any],
    search_space: dict[str, Any],
    question: str,
) -> StudyRun:
    """Create the experiment (if new) and the study's parent run, with its arguments and search space."""
    client = MlflowClient(tracking_uri)
    description = study_description(study, dataset, question)
    experiment_id = ensure_experiment(client, experiment_name(study, dataset), description)
    commit = git_commit()
    run = client.create_run(
        experiment_id,
        run_name=study_name,
        tags={
            **source_tags(study_source(study), commit),
            "clmlf.role": "study",
            "clmlf.study": study,
            "clmlf.study_name": study_name,
            "clmlf.dataset": dataset,
        },
    )
    # A database or server URL in the arguments may hold a password; an MLflow server shows params to everyone.
    params = [
        Param(f"study.{key}", hide_password(str(value))[:PARAM_VALUE_CHARACTERS])
        for key, value in sorted(arguments.items())
    ]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    client.log_dict(run.info.run_id, search_space, "search_space.json")
    return StudyRun(tracking_uri, experiment_id, run.info.run_id, study, study_name, dataset, commit)


def study_source(study: str) -> str:
    """The study page that ran, as `mlflow.source.name` (whether started as a script or a console command)."""
    return f"studies/{study}.py"


def tag_study_run(study_run: StudyRun, tags: dict[str, str]) -> None:
    MlflowClient(study_run.tracking_uri).log_batch(
        study_run.parent_run_id, tags=[RunTag(key, value) for key, value in tags.items()]
    )


def reopen_study_run(study_run: StudyRun) -> None:
    """Mark a resumed study's parent run as running again."""
    MlflowClient(study_run.tracking_uri).update_run(study_run.parent_run_id, status="RUNNING")


def trial_run_id(study_run: StudyRun, trial_id: str) -> str | None:
    """The child run of a trial of the study, or None."""
    runs = MlflowClient(study_run.tracking_uri).search_runs(
        [study_run.experiment_id],
        filter_string=(
            f"tags.`clmlf.trial_id` = '{trial_id}' and tags.`mlflow.parentRunId` = '{study_run.parent_run_id}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_study_outputs(
    study_run: StudyRun,
    texts: dict[str, str],
    folders: dict[str, Path],
    files: dict[str, Sequence[Path]] | None = None,
) -> None:
    """The study's outputs as artifacts of its parent run: files given by their text, whole folders, and files
    under an artifact folder (the analyses without their text-only counterpart's checkpoint)."""
    client = MlflowClient(study_run.tracking_uri)
    for artifact_file, text in texts.items():
        client.log_text(study_run.parent_run_id, text, artifact_file)
    for artifact_path, folder in folders.items():
        client.log_artifacts(study_run.parent_run_id, str(folder), artifact_path)
    for artifact_path, paths in (files or {}).items():
        for path in paths:
            client.log_artifact(study_run.parent_run_id, str(path), artifact_path)


def log_best_model(study_run: StudyRun, trial_id: str, checkpoint: Path, readme: Callable[[str], str]) -> str | None:
    """The best trial's checkpoint with a README that says how to load it (`readme` of the model's URI), as the
    folder `model` of the trial's child run; the parent run's tag `clmlf.best_model` points at it. Returns the URI
    (runs:/<run>/model)."""
    run_id = trial_run_id(study_run, trial_id)
    if run_id is None:
        return None
    client = MlflowClient(study_run.tracking_uri)
    uri = f"runs:/{run_id}/{MODEL_ARTIFACT}"
    client.log_artifacts(run_id, str(checkpoint), MODEL_ARTIFACT)
    client.log_text(run_id, readme(uri), f"{MODEL_ARTIFACT}/README.md")
    client.set_tag(study_run.parent_run_id, "clmlf.best_model", uri)
    return uri


def registered_model_name(study: str, dataset: str) -> str:
    """One registered model per study kind and data set, e.g. `clmlf-layer-sweep-mvsa_single`: the kind's words
    joined by dashes, the data set's by underscores, so that the name splits back into the two."""
    return f"clmlf-{study.replace('_', '-')}-{dataset.replace('-', '_')}"


def register_best_model(
    study_run: StudyRun, model_uri: str, description: str, tags: dict[str, str] | None = None
) -> tuple[str, str]:
    """The best trial's logged model (`runs:/<run>/model`) as a new version of the study kind's registered model on
    this data set, described by `description` (the conclusion, the top group, the interval); a study concluded again
    (resumed) updates its version instead of adding one. Returns (name, version); `models:/<name>/<version>` loads it.
    """
    client = MlflowClient(study_run.tracking_uri, registry_uri=study_run.tracking_uri)
    name = registered_model_name(study_run.study, study_run.dataset)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(
            name,
            description=f"The best model of each `studies/{study_run.study}.py` study on {study_run.dataset}, one "
            "version per study: the best seed of the configuration with the best mean dev score. Each version's "
            "description says how sure its study is.",
        )
    run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = existing[0].version
        client.update_model_version(name, version, description=description)
    else:
        version = client.create_model_version(name, model_uri, run_id=run_id, description=description).version
    for key, value in {**(tags or {}), "clmlf.study_name": study_run.study_name}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_tag(study_run.parent_run_id, "clmlf.registered_model", f"models:/{name}/{version}")
    return name, str(version)


# Parent-run tags of the comparison: the sentence that says how sure the study is, and the top group.
CONCLUSION_TAG = "clmlf.conclusion"
TOP_GROUP_TAG = "clmlf.top_group"
# MLflow keeps tag values up to this length.
TAG_VALUE_CHARACTERS = 8000


def finish_study_run(
    study_run: StudyRun,
    best_trial_id: str | None,
    best_metrics: dict[str, float],
    status: str = "FINISHED",
    summary_metrics: dict[str, float] | None = None,
    summary_tags: dict[str, str] | None = None,
) -> None:
    """Record the best trial (ranked on dev) on the parent run, with the study's summary numbers (the best
    configuration's mean and interval, the top group's size) and tags (its conclusion), and close it."""
    client = MlflowClient(study_run.tracking_uri)
    if best_trial_id is not None:
        client.set_tag(study_run.parent_run_id, "clmlf.best_trial_id", best_trial_id)
    timestamp = int(time.time() * 1000)
    numbers = {**{f"best/{key}": value for key, value in best_metrics.items()}, **(summary_metrics or {})}
    metrics = [
        Metric(key, float(value), timestamp, 0)
        for key, value in numbers.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))
    ]
    tags = [RunTag(key, value[:TAG_VALUE_CHARACTERS]) for key, value in (summary_tags or {}).items()]
    if metrics or tags:
        client.log_batch(study_run.parent_run_id, metrics=metrics, tags=tags)
    client.set_terminated(study_run.parent_run_id, status=status)
