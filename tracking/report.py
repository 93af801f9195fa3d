"""Study reports: read finished studies from MLflow (one parent run, one child run per trial) and from Ray Tune's
result folders, group the trials by configuration, rank the configurations by their mean dev score over seeds
(never by test), and write per data set the best configuration (loadable by the trainer), a summary table and one
self-contained HTML page with the layer curves, the loss-weight effects, Optuna's parameter importances, the
ablation next to the paper's Table 3 and the confirmation runs next to its Table 1.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clmlf.config import VARIANTS, ConfigError, TrainConfig
from clmlf.data import DATASETS
from tracking.uri import TRACKING_URI_VARIABLE, default_tracking_uri

# The ranking metric: the data set's selection metric on dev at the epoch selected on dev. Test never ranks.
RANKING_METRIC = "selected/dev/score"
DEV_METRICS = ("selected/dev/score", "selected/dev/acc", "selected/dev/f1_weighted", "selected/dev/f1_macro")
TEST_METRICS = ("selected/test/acc", "selected/test/f1_weighted", "selected/test/f1_macro")
TRIAL_METRICS = DEV_METRICS + TEST_METRICS
STUDY_KINDS = ("layer_sweep", "search", "ablation", "confirm")
ERROR_TEXT_LIMIT = 5000
# A Tune study whose search space holds only the searched keys can leave the rest of the config here.
TUNE_BASE_CONFIG_FILE = "base_config.json"
CONFIG_KEYS = tuple(TrainConfig().to_flat_dict())
LOSS_PARAMETERS = ("temperature", "lbcl_weight", "dbcl_weight")
LAYER_PARAMETERS = {"model.fusion_layers": "fusion layers", "model.image_layers": "image layers"}


@dataclass(frozen=True)
class PaperResult:
    row: str
    acc: float
    f1: float


# DESIGN.md section 1 (the paper's Tables 1 and 3): test accuracy and F1, model selected on dev.
PAPER_RESULTS: dict[str, dict[str, PaperResult]] = {
    "mvsa-single": {
        "text-only": PaperResult("BERT", 0.7111, 0.6970),
        "image-only": PaperResult("ResNet-50", 0.6467, 0.6155),
        "mlf": PaperResult("+MLF", 0.7111, 0.7101),
        "mlf-lbcl": PaperResult("+MLF, LBCL", 0.7378, 0.7291),
        "mlf-dbcl": PaperResult("+MLF, DBCL", 0.7356, 0.7276),
        "full": PaperResult("CLMLF", 0.7533, 0.7346),
    },
    "mvsa-multiple": {
        "text-only": PaperResult("BERT", 0.6759, 0.6624),
        "image-only": PaperResult("ResNet-50", 0.6188, 0.6098),
        "mlf": PaperResult("+MLF", 0.7059, 0.6849),
        "mlf-lbcl": PaperResult("+MLF, LBCL", 0.7112, 0.6863),
        "mlf-dbcl": PaperResult("+MLF, DBCL", 0.7153, 0.6832),
        "full": PaperResult("CLMLF", 0.7200, 0.6983),
    },
    "hfm": {
        "text-only": PaperResult("BERT", 0.8389, 0.8326),
        "image-only": PaperResult("ResNet-50", 0.7277, 0.7138),
        "mlf": PaperResult("+MLF", 0.8414, 0.8355),
        "mlf-lbcl": PaperResult("+MLF, LBCL", 0.8489, 0.8446),
        "mlf-dbcl": PaperResult("+MLF, DBCL", 0.8468, 0.8422),
        "full": PaperResult("CLMLF", 0.8543, 0.8487),
    },
}
# The paper's F1 is weighted for the MVSA sets and macro for HFM.
PAPER_F1 = {"mvsa-single": "f1_weighted", "mvsa-multiple": "f1_weighted", "hfm": "f1_macro"}


class ReportError(ValueError):
    """A study's records cannot be read; the message names the store or file and the record."""


@dataclass
class Trial:
    """One trial of a study as read back: its typed flat config and its metrics at the last reported epoch."""

    source: str
    study_kind: str
    study_name: str
    trial_id: str
    dataset: str
    run_id: str | None = None
    parent_run_id: str | None = None
    config: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "TERMINATED"
    # Why the trial is left out of every mean (None: it counts); shown in the failed-trials table.
    failure: str | None = None
    # Restarts from the trial's last checkpoint (a lost worker node, an exception); MLflow tag clmlf.retries.
    retries: int = 0

    @property
    def completed(self) -> bool:
        return self.failure is None

    @property
    def seed(self) -> int | None:
        return None if self.config is None else self.config["seed"]

    @property
    def label(self) -> str:
        return self.run_id or self.trial_id


@dataclass
class Configuration:
    """The completed trials that share one flat config apart from the seed."""

    config_id: str
    trials: list[Trial]

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[0].config or {}

    @property
    def n(self) -> int:
        return len(self.trials)

    @property
    def seeds(self) -> list[int]:
        return sorted(trial.seed for trial in self.trials if trial.seed is not None)

    def values(self, metric: str) -> list[float]:
        return [trial.metrics[metric] for trial in self.trials if metric in trial.metrics]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (n - 1); undefined for a single seed."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else math.nan

    def best_trial(self) -> Trial:
        # Dev only; ties go to the smaller seed, then the trial id, so the choice is reproducible.
        return min(self.trials, key=lambda t: (-t.metrics[RANKING_METRIC], t.seed or 0, t.trial_id))


@dataclass
class DatasetReport:
    dataset: str
    trials: list[Trial]
    configurations: list[Configuration]
    varying: list[str]

    @property
    def completed(self) -> list[Trial]:
        return [trial for trial in self.trials if trial.completed]

    @property
    def failed(self) -> list[Trial]:
        return [trial for trial in self.trials if not trial.completed]

    @property
    def retried(self) -> list[Trial]:
        return [trial for trial in self.trials if trial.retries]

    @property
    def best(self) -> Configuration | None:
        return self.configurations[0] if self.configurations else None

    def of_kind(self, kind: str) -> list[Trial]:
        return [trial for trial in self.completed if trial.study_kind == kind]


def write_study_report(
    output_dir: Path,
    *,
    tracking_uri: str | None = None,
    parent_run_ids: list[str] | None = None,
    experiment_names: list[str] | None = None,
    tune_dirs: list[Path] | None = None,
) -> dict[str, Path]:
    """Read the studies, write `<output_dir>/<dataset>/` for every data set among them; returns dataset -> folder.

    MLflow is read when a tracking URI, parent runs or experiments are given, or when no Tune folder is: the
    named parent runs' children and the named experiments' trial runs, or, when neither is named, every
    `clmlf/...` experiment at the tracking URI (default `$CLMLF_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`).
    """
    trials: list[Trial] = []
    wants_mlflow = bool(parent_run_ids or experiment_names or tracking_uri or not tune_dirs)
    if wants_mlflow:
        trials += read_mlflow_trials(tracking_uri or default_tracking_uri(), experiment_names, parent_run_ids)
    for tune_dir in tune_dirs or []:
        trials += read_tune_trials(Path(tune_dir))
    trials, duplicates = _without_duplicates(trials)
    if duplicates:
        print(f"report: {duplicates} trial(s) found both in MLflow and in a Tune folder were counted once")
    if not trials:
        raise ReportError("no trials found in the given studies (check the experiment names, run ids and folders)")

    folders: dict[str, Path] = {}
    for dataset in sorted({trial.dataset for trial in trials}):
        report = build_dataset_report(dataset, [trial for trial in trials if trial.dataset == dataset])
        folder = Path(output_dir) / _safe_name(dataset)
        written = write_dataset_report(report, folder)
        folders[dataset] = folder
        print(
            f"report {dataset}: {len(report.completed)} completed and {len(report.failed)} failed trial(s) in "
            f"{len(report.configurations)} configuration(s)"
        )
        for path in written:
            print(f"  {path}")
    return folders


# Reading MLflow


def read_mlflow_trials(
    tracking_uri: str, experiment_names: list[str] | None, parent_run_ids: list[str] | None
) -> list[Trial]:
    """The trial (child) runs of the named parent runs and experiments, or of every `clmlf/` experiment."""
    sqlite_file = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
    if sqlite_file is not None and not Path(sqlite_file).exists():
        # MLflow would create an empty store there; a report of nothing hides a wrong path.
        raise ReportError(f"{tracking_uri}: no MLflow store at {sqlite_file}")
    client = MlflowClient(tracking_uri)
    experiments: dict[str, str] = {}
    for name in experiment_names or []:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise ReportError(f"{tracking_uri}: no experiment named {name!r}")
        experiments[experiment.experiment_id] = experiment.name
    if not experiment_names and not parent_run_ids:
        for experiment in client.search_experiments(filter_string="name LIKE 'clmlf/%'"):
            experiments[experiment.experiment_id] = experiment.name

    runs = []
    for experiment_id in experiments:
        runs += _search_all(client, [experiment_id], "tags.`clmlf.role` = 'trial'")
    for parent_run_id in parent_run_ids or []:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as error:
            raise ReportError(f"{tracking_uri}: no parent run {parent_run_id!r}: {error.message}") from error
        experiment_id = parent.info.experiment_id
        experiments.setdefault(experiment_id, client.get_experiment(experiment_id).name)
        runs += _search_all(client, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")

    parents: dict[str, Any] = {}
    trials: dict[str, Trial] = {}
    for run in runs:
        if run.info.run_id in trials:
            continue
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id and parent_id not in parents:
            try:
                parents[parent_id] = client.get_run(parent_id)
            except MlflowException:
                parents[parent_id] = None
        trials[run.info.run_id] = _trial_from_run(
            run, parents.get(parent_id) if parent_id else None, experiments[run.info.experiment_id], tracking_uri
        )
    return list(trials.values())


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    # The client instead of mlflow.search_runs: the latter reads the process-wide tracking URI, which a study
    # calling this at its end has set for its own logging.
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


# MLflow's run status in Tune's words, for runs that lack the clmlf.status tag.
_TUNE_STATUS_OF_RUN = {"FINISHED": "TERMINATED", "FAILED": "ERROR", "KILLED": "ERROR"}


def _trial_from_run(run: Any, parent: Any, experiment_name: str, tracking_uri: str) -> Trial:
    tags = run.data.tags
    parent_tags = parent.data.tags if parent is not None else {}
    name_parts = experiment_name.split("/")
    run_id = run.info.run_id
    trial = Trial(
        source=f"MLflow {tracking_uri}, experiment {experiment_name}",
        study_kind=tags.get("clmlf.study")
        or parent_tags.get("clmlf.study")
        or (name_parts[1] if len(name_parts) == 3 else "unknown"),
        study_name=tags.get("clmlf.study_name")
        or parent_tags.get("clmlf.study_name")
        or (parent.info.run_name if parent is not None else experiment_name),
        trial_id=tags.get("clmlf.trial_id") or run.info.run_name or run_id,
        dataset=tags.get("clmlf.dataset")
        or run.data.params.get("dataset")
        or (name_parts[2] if len(name_parts) == 3 else "unknown"),
        run_id=run_id,
        parent_run_id=tags.get("mlflow.parentRunId"),
        metrics={key: float(value) for key, value in run.data.metrics.items() if key in TRIAL_METRICS},
        status=tags.get("clmlf.status") or _TUNE_STATUS_OF_RUN.get(run.info.status, run.info.status),
        retries=int(tags.get("clmlf.retries") or 0),
    )
    try:
        trial.config = _typed_config(run.data.params, f"run {run_id}")
    except ConfigError as error:
        trial.failure = str(error)
    if trial.status == "ERROR" or run.info.status in ("FAILED", "KILLED"):
        error_text = tags.get("clmlf.error") or f"run status {run.info.status}, no clmlf.error tag"
        trial.failure = _clean_error(error_text)
    elif run.info.status in ("RUNNING", "SCHEDULED") and trial.status != "TERMINATED":
        trial.failure = f"unfinished (run status {run.info.status})"
    elif trial.failure is None:
        trial.failure = _metrics_problem(trial.metrics)
    return trial


def _metrics_problem(metrics: dict[str, float]) -> str | None:
    """Why a finished trial cannot be ranked: no dev score, or a NaN one (which would break any ordering)."""
    if RANKING_METRIC not in metrics:
        return f"no {RANKING_METRIC} was reported"
    if not math.isfinite(metrics[RANKING_METRIC]):
        return f"{RANKING_METRIC} is {metrics[RANKING_METRIC]}"
    return None


def _typed_config(params: dict[str, Any], record: str) -> dict[str, Any]:
    """The trainer's flat config from logged params (strings in MLflow), typed as the trainer writes it."""
    missing = [key for key in CONFIG_KEYS if key not in params]
    if missing:
        raise ConfigError(f"{record}: the params lack config keys {missing}")
    try:
        return TrainConfig.from_flat_dict({key: params[key] for key in CONFIG_KEYS}).to_flat_dict()
    except ConfigError as error:
        raise ConfigError(f"{record}: {error}") from error


# Reading Ray Tune's result folders


def read_tune_trials(tune_dir: Path) -> list[Trial]:
    """Trials of a Tune experiment folder (`<storage_path>/<name>/`) or of every experiment folder inside one."""
    if not tune_dir.is_dir():
        raise ReportError(f"{tune_dir}: not a folder")
    if _trial_folders(tune_dir):
        return _read_tune_experiment(tune_dir)
    experiments = sorted(folder for folder in tune_dir.iterdir() if folder.is_dir() and _trial_folders(folder))
    if not experiments:
        raise ReportError(f"{tune_dir}: no Tune trial folders (with params.json) in it or in its subfolders")
    return [trial for experiment in experiments for trial in _read_tune_experiment(experiment)]


def _trial_folders(folder: Path) -> list[Path]:
    return sorted(path.parent for path in folder.glob("*/params.json"))


def _read_tune_experiment(experiment_dir: Path) -> list[Trial]:
    states = _tune_trial_states(experiment_dir)
    base = _tune_base_config(experiment_dir)
    study_name = experiment_dir.name
    study_kind = next(
        (kind for kind in STUDY_KINDS if study_name == kind or study_name.startswith((f"{kind}-", f"{kind}_"))),
        "unknown",
    )
    trials = [
        _read_tune_trial(folder, states.get(folder.name), base, study_kind, study_name)
        for folder in _trial_folders(experiment_dir)
    ]
    # A trial whose config could not be rebuilt still belongs to its study's data set.
    known = {trial.dataset for trial in trials if trial.dataset != "unknown"}
    for trial in trials:
        if trial.dataset == "unknown" and len(known) == 1:
            trial.dataset = next(iter(known))
    return trials


def _tune_trial_states(experiment_dir: Path) -> dict[str, tuple[str, int, str]]:
    """Trial folder name -> (status, failures, trial id) from Tune's newest experiment state file, if any."""
    state_files = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not state_files:
        return {}
    try:
        state = json.loads(state_files[-1].read_text())
        states = {}
        for trial_json, runtime_json in state["trial_data"]:
            trial_data, runtime = json.loads(trial_json), json.loads(runtime_json)
            states[trial_data["relative_logdir"]] = (
                trial_data["status"],
                int(runtime.get("num_failures", 0)),
                str(trial_data["trial_id"]),
            )
        return states
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReportError(f"{state_files[-1]}: not a Tune experiment state file: {error!r}") from error


def _tune_base_config(experiment_dir: Path) -> dict[str, Any]:
    path = experiment_dir / TUNE_BASE_CONFIG_FILE
    if not path.exists():
        return {}
    try:
        base = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: cannot read the study's base config: {error}") from error
    if not isinstance(base, dict):
        raise ReportError(f"{path}: expected a JSON object of flat config keys")
    return base.get("config", base)


def _read_tune_trial(
    folder: Path, state: tuple[str, int, str] | None, base: dict[str, Any], study_kind: str, study_name: str
) -> Trial:
    params_file = folder / "params.json"
    try:
        params = json.loads(params_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{params_file}: cannot read the trial's params: {error}") from error
    if not isinstance(params, dict):
        raise ReportError(f"{params_file}: expected a JSON object")
    rows = _tune_result_rows(folder / "result.json")
    # Restored trials append rows again from the restored iteration: the last row of the highest one counts.
    last = max(reversed(rows), key=lambda row: row.get("training_iteration", 0)) if rows else {}
    error_file = folder / "error.txt"
    if state is not None:
        status = state[0]
    elif error_file.exists():
        status = "ERROR"
    else:
        status = "TERMINATED" if rows else "PENDING"
    trial = Trial(
        source=f"Tune folder {folder.parent}",
        study_kind=study_kind,
        study_name=study_name,
        trial_id=str(last.get("trial_id") or (state[2] if state else None) or _trial_id_in_name(folder.name)),
        dataset=str(params.get("dataset") or base.get("dataset") or "unknown"),
        metrics={
            key: float(value)
            for key, value in last.items()
            if key in TRIAL_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
        },
        status=status,
    )
    try:
        trial.config = _typed_config({**base, **params}, f"Tune trial {folder}")
        trial.dataset = trial.config["dataset"]
    except ConfigError as error:
        trial.failure = f"{error} (write the study's full flat config to {TUNE_BASE_CONFIG_FILE} or the search space)"
    if status == "ERROR":
        error_text = _latest_failure(error_file.read_text(errors="replace")) if error_file.exists() else ""
        trial.failure = _clean_error(error_text or f"Tune status ERROR, no error text in {error_file}")
    elif status != "TERMINATED":
        trial.failure = f"unfinished (Tune status {status})"
    elif trial.failure is None:
        trial.failure = _metrics_problem(trial.metrics)
    return trial


def _latest_failure(error_text: str) -> str:
    """Tune appends a `Failure # n (occurred at ...)` section per failure; the last one ended the trial."""
    section = error_text[max(error_text.rfind("Failure # "), 0) :]
    header, _, body = section.partition("\n")
    return body.strip() if header.startswith("Failure # ") else section.strip()


def _trial_id_in_name(folder_name: str) -> str:
    """Tune names trial folders `<trainable>_<trial id>_<index>_<tag>_<date>`, trial ids `<5 hex>_<5 digits>`."""
    match = re.search(r"(?:^|_)([0-9a-f]{5}_\d{5})(?:_|$)", folder_name)
    return match.group(1) if match else folder_name


def _tune_result_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReportError(f"{path}, line {number}: not a JSON result row: {error}") from error
        if not isinstance(row, dict):
            raise ReportError(f"{path}, line {number}: expected a JSON object")
        rows.append(row)
    return rows


def _without_duplicates(trials: list[Trial]) -> tuple[list[Trial], int]:
    """A study read both from MLflow and from its Tune folder lists each trial twice; MLflow's copy is kept.

    Tune's trial ids are unique per experiment, and the MLflow child carries the same id (`clmlf.trial_id`).
    """
    logged = {(trial.dataset, trial.trial_id) for trial in trials if trial.run_id is not None}
    unique = [trial for trial in trials if trial.run_id is not None or (trial.dataset, trial.trial_id) not in logged]
    return unique, len(trials) - len(unique)


# Grouping and ranking


def build_dataset_report(dataset: str, trials: list[Trial]) -> DatasetReport:
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        if trial.completed:
            groups.setdefault(configuration_id(trial.config or {}), []).append(trial)
    configurations = rank_configurations(
        [
            Configuration(config_id, sorted(members, key=lambda t: (t.seed or 0, t.trial_id)))
            for config_id, members in groups.items()
        ]
    )
    varying = varying_keys([configuration.config for configuration in configurations])
    return DatasetReport(dataset, trials, configurations, varying)


def configuration_id(config: dict[str, Any]) -> str:
    return hashlib.sha1(_configuration_key(config).encode()).hexdigest()[:8]


def _configuration_key(config: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in config.items() if key != "seed"}, sort_keys=True, default=str)


def rank_configurations(configurations: list[Configuration]) -> list[Configuration]:
    """Best first by the mean dev score over seeds; ties: more seeds, then the config itself (deterministic).

    The test split is deliberately absent from this key: test numbers are read at the chosen configuration,
    they never choose it.
    """
    return sorted(
        configurations,
        key=lambda c: (-c.mean(RANKING_METRIC), -c.n, _configuration_key(c.config)),
    )


def varying_keys(configs: Sequence[dict[str, Any]], *, include_seed: bool = False) -> list[str]:
    """Config keys with more than one value among the configs, in the config's own key order."""
    return [
        key
        for key in CONFIG_KEYS
        if (include_seed or key != "seed") and len({json.dumps(config.get(key)) for config in configs}) > 1
    ]


def f1_metric_of(dataset: str) -> str:
    if dataset in PAPER_F1:
        return PAPER_F1[dataset]
    spec = DATASETS.get(dataset)
    return spec.selection_metric if spec is not None and spec.selection_metric.startswith("f1") else "f1_weighted"


# Writing


def write_dataset_report(report: DatasetReport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if report.best is not None:
        written += _write_best_config(report, folder)
    else:
        # Nothing completed: there is no configuration to export; the summary and the page say so.
        for stale in (folder / "best_config.json", folder / "best_config.provenance.json"):
            stale.unlink(missing_ok=True)
    summary = summary_frame(report)
    summary.to_csv(folder / "summary.csv", index=False)
    (folder / "summary.md").write_text(summary_markdown(report))
    (folder / "report.html").write_text(report_html(report))
    return [*written, folder / "summary.csv", folder / "summary.md", folder / "report.html"]


def _write_best_config(report: DatasetReport, folder: Path) -> list[Path]:
    best = report.best
    assert best is not None
    best_trial = best.best_trial()
    config = best_trial.config or {}
    assert list(config) == list(CONFIG_KEYS), "the exported config must hold exactly the trainer's flat keys"
    provenance = {
        "dataset": report.dataset,
        "config_id": best.config_id,
        "ranked_by": f"mean of {RANKING_METRIC} over seeds (dev split; the test split never ranks)",
        "dev_score_mean": best.mean(RANKING_METRIC),
        "dev_score_std": _json_number(best.std(RANKING_METRIC)),
        "seeds": best.seeds,
        "n": best.n,
        "best_seed": best_trial.seed,
        "best_run_id": best_trial.run_id,
        "best_trial_id": best_trial.trial_id,
        "run_ids": [trial.run_id for trial in best.trials],
        "trial_ids": [trial.trial_id for trial in best.trials],
        "studies": _studies(best.trials),
        "test_at_selection_mean": {metric: _json_number(best.mean(metric)) for metric in TEST_METRICS},
        "rerun": "python -m clmlf.train --config best_config.json --output <folder>",
    }
    config_path = folder / "best_config.json"
    provenance_path = folder / "best_config.provenance.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    provenance_path.write_text(json.dumps(provenance, indent=2) + "\n")
    return [config_path, provenance_path]


def _studies(trials: Iterable[Trial]) -> list[dict[str, Any]]:
    studies = {(trial.study_kind, trial.study_name, trial.parent_run_id or "", trial.source): None for trial in trials}
    return [
        {"kind": kind, "name": name, "parent_run_id": parent or None, "source": source}
        for kind, name, parent, source in sorted(studies)
    ]


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _column(metric: str) -> str:
    return metric.removeprefix("selected/").replace("/", "_")


def summary_frame(report: DatasetReport) -> pd.DataFrame:
    rows = []
    for rank, configuration in enumerate(report.configurations, start=1):
        row: dict[str, Any] = {"rank": rank, "config_id": configuration.config_id}
        row.update({key: configuration.config[key] for key in report.varying})
        row["n"] = configuration.n
        for metric in TRIAL_METRICS:
            row[f"{_column(metric)}_mean"] = configuration.mean(metric)
            row[f"{_column(metric)}_std"] = configuration.std(metric)
        row["seeds"] = ";".join(str(seed) for seed in configuration.seeds)
        row["studies"] = ";".join(sorted({trial.study_name for trial in configuration.trials}))
        row["run_ids"] = ";".join(trial.label for trial in configuration.trials)
        rows.append(row)
    columns = ["rank", "config_id", *report.varying, "n"]
    columns += [f"{_column(m)}_{s}" for m in TRIAL_METRICS for s in ("mean", "std")]
    return pd.DataFrame(rows, columns=[*columns, "seeds", "studies", "run_ids"])


def _mean_std(configuration: Configuration, metric: str) -> str:
    mean, std = configuration.mean(metric), configuration.std(metric)
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _summary_rows(report: DatasetReport) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "config", *report.varying, "n", *(_column(metric) for metric in TRIAL_METRICS)]
    rows = [
        [
            str(rank),
            configuration.config_id,
            *(_text(configuration.config[key]) for key in report.varying),
            str(configuration.n),
            *(_mean_std(configuration, metric) for metric in TRIAL_METRICS),
        ]
        for rank, configuration in enumerate(report.configurations, start=1)
    ]
    return header, rows


def _failed_rows(report: DatasetReport) -> tuple[list[str], list[list[str]]]:
    """One row per failed trial; the error column holds the exception line that ended it."""
    header = ["study", "trial", "run id", "seed", "status", "error"]
    rows = [
        [
            trial.study_name,
            trial.trial_id,
            trial.run_id or "–",
            _text(trial.seed),
            trial.status,
            error_summary(trial.failure or ""),
        ]
        for trial in report.failed
    ]
    return header, rows


def error_summary(error_text: str) -> str:
    """The last `SomeError: message` line of a traceback, else its last line (for a one-line table cell)."""
    lines = [line.strip() for line in error_text.splitlines() if line.strip()]
    for line in reversed(lines):
        name = line.split(":", 1)[0]
        if " " not in name and name.endswith(("Error", "Exception", "Unavailable", "Interrupt", "Exit")):
            return line
    return lines[-1] if lines else ""


_TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _clean_error(error_text: str) -> str:
    # Ray colours its tracebacks for terminals; the escape codes are noise in files and pages.
    return _TERMINAL_COLOURS.sub("", error_text)[:ERROR_TEXT_LIMIT]


def _text(value: Any) -> str:
    """A config value as best_config.json spells it (null, true), floats without trailing noise."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


RANKING_NOTE = (
    f"Configurations are ranked by the mean over seeds of `{RANKING_METRIC}` (the dev split at the epoch selected "
    "on dev); ± is the sample standard deviation over seeds. Test numbers are read at the selected epoch of each "
    "run and never rank anything."
)


def summary_markdown(report: DatasetReport) -> str:
    lines = [f"# Study summary: {report.dataset}", "", RANKING_NOTE, ""]
    lines += [
        f"{len(report.completed)} completed trial(s) in {len(report.configurations)} configuration(s); "
        f"{len(report.failed)} failed or unfinished trial(s), left out of every mean.",
        "",
    ]
    if report.best is not None:
        best = report.best
        lines += [
            f"Best configuration: `{best.config_id}` (dev score {_mean_std(best, RANKING_METRIC)}, n = {best.n}, "
            f"seed {best.best_trial().seed} in best_config.json).",
            "",
        ]
    else:
        lines += ["No trial completed, so there is no best configuration.", ""]
    lines += ["## Configurations", "", *_markdown_table(*_summary_rows(report)), ""]
    lines += ["## Failed trials", ""]
    header, rows = _failed_rows(report)
    if rows:
        lines += [*_markdown_table(header, rows), "", "Full error texts are in report.html.", ""]
    else:
        lines += ["None.", ""]
    lines += ["## Retried trials", "", *(_markdown_table(*_retried_rows(report)) if report.retried else ["None."]), ""]
    return "\n".join(lines)


def _retried_rows(report: DatasetReport) -> tuple[list[str], list[list[str]]]:
    """Trials restarted from their last checkpoint (a lost node, an exception), and how they ended."""
    header = ["study", "trial", "retries", "status"]
    return header, [[trial.study_name, trial.trial_id, str(trial.retries), trial.status] for trial in report.retried]


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


# The HTML page


PAGE_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr.best td { background: #eaf6ea; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.error { font-family: monospace; white-space: pre-wrap; max-width: 60em; font-size: 0.95em; }
tr.varying td { font-weight: bold; } div.wide { overflow-x: auto; max-width: 100%; }
p.note { color: #555; font-style: italic; } img { max-width: 100%; display: block; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def report_html(report: DatasetReport) -> str:
    title = f"CLMLF study report: {report.dataset}"
    sections = [
        f"<h1>{_escape(title)}</h1>",
        _overview_html(report),
        _best_config_html(report),
        _summary_html(report),
        _layer_curves_html(report),
        _loss_effects_html(report),
        _importances_html(report),
        _ablation_html(report),
        _confirmation_html(report),
        _failed_html(report),
        _retried_html(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_escape(title)}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(
    header: list[str],
    rows: list[list[str]],
    *,
    table_id: str | None = None,
    numeric: Sequence[int] = (),
    error_column: int | None = None,
    highlight_first: bool = False,
    highlight_rows: Sequence[int] = (),
    folded_errors: dict[int, str] | None = None,
) -> str:
    attributes = f' id="{table_id}"' if table_id else ""
    parts = [
        f"<table{attributes}>",
        "<thead><tr>" + "".join(f"<th>{_escape(h)}</th>" for h in header) + "</tr></thead>",
    ]
    parts.append("<tbody>")
    for index, row in enumerate(rows):
        row_class = (
            ' class="best"' if highlight_first and index == 0 else ' class="varying"' if index in highlight_rows else ""
        )
        cells = []
        for column, value in enumerate(row):
            cell_class = ' class="number"' if column in numeric else ' class="error"' if column == error_column else ""
            folded = (folded_errors or {}).get(index) if column == error_column else None
            details = f"<details><summary>full error</summary>{_escape(folded)}</details>" if folded else ""
            cells.append(f"<td{cell_class}>{_escape(value)}{details}</td>")
        parts.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    # Wide tables scroll inside the page instead of widening it.
    return '<div class="wide">\n' + "\n".join(parts) + "\n</div>"


def _note(text: str) -> str:
    return f'<p class="note">{_escape(text)}</p>'


def _overview_html(report: DatasetReport) -> str:
    studies = _studies(report.trials)
    rows = [[s["kind"], s["name"], s["parent_run_id"] or "–", s["source"]] for s in studies]
    return "\n".join(
        [
            f"<p>{len(report.trials)} trial(s): {len(report.completed)} completed in "
            f"{len(report.configurations)} configuration(s), {len(report.failed)} failed or unfinished.</p>",
            f"<p>{_escape(RANKING_NOTE).replace('`', '')}</p>",
            _html_table(["study kind", "study name", "parent run", "read from"], rows),
        ]
    )


def _best_config_html(report: DatasetReport) -> str:
    parts = ["<h2>Best configuration</h2>"]
    best = report.best
    if best is None:
        parts.append(_note("No trial completed, so there is no best configuration."))
        parts.append('<table id="best-config"><tbody><tr><td>none</td></tr></tbody></table>')
        return "\n".join(parts)
    best_trial = best.best_trial()
    f1 = f1_metric_of(report.dataset)
    parts.append(
        f"<p>Configuration <code>{best.config_id}</code>: dev score {_escape(_mean_std(best, RANKING_METRIC))} over "
        f"{best.n} seed(s) {_escape(best.seeds)}; best_config.json carries seed {best_trial.seed} "
        f"(run {_escape(best_trial.label)}). At the selected epochs, test accuracy "
        f"{_escape(_mean_std(best, 'selected/test/acc'))} and test {f1} "
        f"{_escape(_mean_std(best, f'selected/test/{f1}'))}.</p>"
    )
    config = best_trial.config or {}
    rows = [[key, _text(value)] for key, value in config.items()]
    varying = [index for index, key in enumerate(config) if key in report.varying]
    parts.append(_html_table(["setting", "value"], rows, table_id="best-config", highlight_rows=varying))
    if varying:
        parts.append(_note("Bold: the settings that vary between the configurations of these studies."))
    return "\n".join(parts)


def _summary_html(report: DatasetReport) -> str:
    header, rows = _summary_rows(report)
    if not rows:
        return "<h2>Configurations</h2>\n" + _note("No trial completed.")
    numeric = range(len(header) - len(TRIAL_METRICS) - 1, len(header))
    return "<h2>Configurations</h2>\n" + _html_table(header, rows, numeric=numeric, highlight_first=True)


def _figure_image(figure: Figure, description: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_escape(description)}" src="data:image/png;base64,{encoded}">'


def _mean_and_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _layer_curves_html(report: DatasetReport) -> str:
    parts = ["<h2>Accuracy and F1 against the layer counts (the paper's Figure 3)</h2>"]
    # A layer sweep holds everything else fixed; other studies' trials would mix in unrelated settings.
    trials = report.of_kind("layer_sweep") or report.completed
    f1 = f1_metric_of(report.dataset)
    drawn = False
    for key, name in LAYER_PARAMETERS.items():
        values = sorted({trial.config[key] for trial in trials if trial.config})
        if len(values) < 2:
            parts.append(_note(f"The {name} do not vary in these trials: no curve."))
            continue
        other = next(k for k in LAYER_PARAMETERS if k != key)
        figure = Figure(figsize=(11, 3.8))
        axes = figure.subplots(1, 2)
        for axis, (measure, label) in zip(axes, (("acc", "accuracy"), (f1, f1.replace("_", " "))), strict=True):
            for other_value in sorted({trial.config[other] for trial in trials if trial.config}):
                for split, style in (("test", "-"), ("dev", "--")):
                    points = []
                    for x in values:
                        ys = [
                            t.metrics[f"selected/{split}/{measure}"]
                            for t in trials
                            if t.config
                            and t.config[key] == x
                            and t.config[other] == other_value
                            and f"selected/{split}/{measure}" in t.metrics
                        ]
                        if ys:
                            points.append((x, *_mean_and_std(ys)))
                    if not points:
                        continue
                    xs, means, stds = zip(*points, strict=True)
                    line = axis.plot(
                        xs, means, style, marker="o", label=f"{split}, {LAYER_PARAMETERS[other]} = {other_value}"
                    )[0]
                    axis.fill_between(
                        xs,
                        [m - s for m, s in zip(means, stds, strict=True)],
                        [m + s for m, s in zip(means, stds, strict=True)],
                        color=line.get_color(),
                        alpha=0.15,
                    )
            axis.set_xlabel(name)
            axis.set_ylabel(label)
            axis.set_xticks(values)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.suptitle(f"{report.dataset}: mean over seeds, band = ± std")
        parts.append(_figure_image(figure, f"accuracy and F1 against {name}"))
        drawn = True
    if drawn:
        parts.append(
            _note(
                "Solid: test at the epoch selected on dev; dashed: dev. Trials of layer-sweep studies when there are "
                "any, else all completed trials."
            )
        )
    return "\n".join(parts)


def _loss_effects_html(report: DatasetReport) -> str:
    parts = ["<h2>Effect of tau and the loss weights</h2>"]
    trials = [trial for trial in report.completed if trial.config]
    varying = [key for key in LOSS_PARAMETERS if len({trial.config[key] for trial in trials}) > 1]
    if not varying:
        parts.append(_note("Neither tau (temperature) nor the loss weights vary in these trials."))
        return "\n".join(parts)
    figure = Figure(figsize=(4.2 * len(varying), 3.6))
    axes = figure.subplots(1, len(varying), squeeze=False)[0]
    for axis, key in zip(axes, varying, strict=True):
        for variant in sorted({trial.config["model.variant"] for trial in trials}):
            chosen = [trial for trial in trials if trial.config["model.variant"] == variant]
            axis.scatter(
                [trial.config[key] for trial in chosen],
                [trial.metrics[RANKING_METRIC] for trial in chosen],
                label=variant,
                alpha=0.75,
            )
        values = [trial.config[key] for trial in trials]
        if min(values) > 0 and max(values) / min(values) >= 20:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel("dev score")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, title="variant", title_fontsize=7)
    parts.append(_figure_image(figure, "dev score against tau and the loss weights"))
    parts.append(_note("One point per trial (every seed); dev score = selected/dev/score."))
    return "\n".join(parts)


def parameter_importances(trials: list[Trial]) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the varying config keys for the dev score, or None and why they were skipped."""
    completed = [trial for trial in trials if trial.completed and trial.config]
    if len(completed) < 3:
        return None, f"{len(completed)} completed search trial(s); importances need at least 3."
    configs = [trial.config or {} for trial in completed]
    varying = varying_keys(configs, include_seed=True)
    if not varying:
        return None, "No parameter varies across the search trials."
    distributions = {key: _distribution([config[key] for config in configs]) for key in varying}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        for trial, config in zip(completed, configs, strict=True):
            study.add_trial(
                optuna.trial.create_trial(
                    params={key: config[key] for key in varying},
                    distributions=distributions,
                    value=trial.metrics[RANKING_METRIC],
                )
            )
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    if any(math.isnan(value) for value in importances.values()):
        return None, "The dev score does not vary across the search trials."
    return importances, f"fANOVA over {len(completed)} completed search trial(s), target selected/dev/score."


def _distribution(values: list[Any]) -> optuna.distributions.BaseDistribution:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return optuna.distributions.IntDistribution(min(values), max(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))
    return optuna.distributions.CategoricalDistribution(sorted(set(values), key=repr))


def _importances_html(report: DatasetReport) -> str:
    parts = ["<h2>Parameter importances (Optuna)</h2>"]
    search_trials = [trial for trial in report.trials if trial.study_kind == "search"]
    if not search_trials:
        parts.append(_note("No search study among the inputs for this data set."))
        return "\n".join(parts)
    importances, note = parameter_importances(search_trials)
    if importances is None:
        parts.append(_note(f"Skipped: {note}"))
        return "\n".join(parts)
    names = list(importances)
    figure = Figure(figsize=(7, 0.45 * len(names) + 1.2))
    axis = figure.subplots()
    axis.barh(names[::-1], [importances[name] for name in names[::-1]], color="#4c72b0")
    axis.set_xlabel("importance (normalised)")
    axis.grid(alpha=0.3, axis="x")
    parts.append(_figure_image(figure, "parameter importances"))
    parts.append(_html_table(["parameter", "importance"], [[n, f"{importances[n]:.4f}"] for n in names], numeric=[1]))
    parts.append(_note(note))
    return "\n".join(parts)


def _best_per_variant(trials: list[Trial]) -> dict[str, Configuration]:
    by_variant: dict[str, list[Trial]] = {}
    for trial in trials:
        by_variant.setdefault((trial.config or {})["model.variant"], []).append(trial)
    best = {}
    for variant, members in by_variant.items():
        groups: dict[str, list[Trial]] = {}
        for trial in members:
            groups.setdefault(configuration_id(trial.config or {}), []).append(trial)
        # Per variant, the configuration best on dev, as the paper selects each row on dev.
        best[variant] = rank_configurations([Configuration(cid, group) for cid, group in groups.items()])[0]
    return best


ABLATION_ORDER = ("text-only", "image-only", "mlf", "mlf-lbcl", "mlf-dbcl", "full")


def _versus(configuration: Configuration, metric: str, paper: float | None) -> list[str]:
    """Ours (mean ± std), the paper's number and ours minus the paper's."""
    ours = configuration.mean(metric)
    if paper is None:
        return [_mean_std(configuration, metric), "–", "–"]
    difference = "–" if math.isnan(ours) else f"{ours - paper:+.4f}"
    return [_mean_std(configuration, metric), f"{paper:.4f}", difference]


def _ablation_html(report: DatasetReport) -> str:
    parts = ["<h2>Ablation next to the paper's Table 3</h2>"]
    trials = report.of_kind("ablation")
    if not trials and len({(trial.config or {})["model.variant"] for trial in report.completed}) > 1:
        trials = report.completed
    if not trials:
        parts.append(_note("No ablation study among the inputs and only one model variant: no ablation table."))
        return "\n".join(parts)
    f1 = f1_metric_of(report.dataset)
    paper = PAPER_RESULTS.get(report.dataset)
    best = _best_per_variant(trials)
    header = ["variant", "config", "n", "dev score"]
    if paper:
        header += ["paper row", "test acc", "paper acc", "Δ acc", f"test {f1}", "paper F1", "Δ F1"]
    else:
        header += ["test acc", f"test {f1}"]
    rows = []
    for variant in sorted(best, key=lambda v: ABLATION_ORDER.index(v) if v in ABLATION_ORDER else len(VARIANTS)):
        configuration = best[variant]
        row = [variant, configuration.config_id, str(configuration.n), _mean_std(configuration, RANKING_METRIC)]
        if paper:
            result = paper.get(variant)
            row.append(result.row if result else "–")
            row += _versus(configuration, "selected/test/acc", result.acc if result else None)
            row += _versus(configuration, f"selected/test/{f1}", result.f1 if result else None)
        else:
            row += [_mean_std(configuration, "selected/test/acc"), _mean_std(configuration, f"selected/test/{f1}")]
        rows.append(row)
    parts.append(_html_table(header, rows, numeric=[2, 3, *range(5 if paper else 4, len(header))]))
    if paper:
        parts.append(
            _note(
                "Each variant's row is its configuration best on dev (mean over seeds); test at the selected epochs; "
                f"Δ = ours − paper. The paper's F1 for this data set is {f1.replace('_', ' ')}."
            )
        )
    else:
        parts.append(
            _note(
                f"The paper reports no numbers for the {report.dataset} data set (only MVSA-Single, MVSA-Multiple "
                "and HFM), so only ours are shown."
            )
        )
    return "\n".join(parts)


def _confirmation_html(report: DatasetReport) -> str:
    parts = ["<h2>Confirmation runs next to the paper's Table 1 (CLMLF)</h2>"]
    trials = report.of_kind("confirm")
    if not trials:
        parts.append(_note("No confirm study among the inputs for this data set."))
        return "\n".join(parts)
    f1 = f1_metric_of(report.dataset)
    paper = PAPER_RESULTS.get(report.dataset, {}).get("full")
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(configuration_id(trial.config or {}), []).append(trial)
    configurations = rank_configurations([Configuration(cid, group) for cid, group in groups.items()])
    header = ["config", "variant", "n", "seeds", "dev score"]
    if paper:
        header += ["test acc", "paper acc", "Δ acc", f"test {f1}", "paper F1", "Δ F1"]
    else:
        header += ["test acc", f"test {f1}"]
    rows = []
    for configuration in configurations:
        row = [
            configuration.config_id,
            str(configuration.config["model.variant"]),
            str(configuration.n),
            ",".join(str(seed) for seed in configuration.seeds),
            _mean_std(configuration, RANKING_METRIC),
        ]
        if paper:
            row += _versus(configuration, "selected/test/acc", paper.acc)
            row += _versus(configuration, f"selected/test/{f1}", paper.f1)
        else:
            row += [_mean_std(configuration, "selected/test/acc"), _mean_std(configuration, f"selected/test/{f1}")]
        rows.append(row)
    parts.append(_html_table(header, rows, numeric=[2, *range(4, len(header))], highlight_first=True))
    if paper:
        parts.append(
            _note(
                f"Paper: CLMLF on {report.dataset}, accuracy {paper.acc:.4f}, {f1.replace('_', ' ')} {paper.f1:.4f}. "
                "Ours: mean ± std over the confirmation seeds; Δ = ours − paper."
            )
        )
    else:
        parts.append(_note(f"The paper reports no numbers for the {report.dataset} data set, so only ours are shown."))
    return "\n".join(parts)


def _failed_html(report: DatasetReport) -> str:
    header, rows = _failed_rows(report)
    parts = ["<h2>Failed and unfinished trials</h2>"]
    if not rows:
        parts.append(_note("None."))
        return "\n".join(parts)
    # The whole error text under each row's one-line summary, folded so that long tracebacks stay readable.
    full_errors = {
        index: trial.failure or ""
        for index, (row, trial) in enumerate(zip(rows, report.failed, strict=True))
        if (trial.failure or "").strip() != row[-1]
    }
    parts.append(_html_table(header, rows, error_column=len(header) - 1, folded_errors=full_errors))
    parts.append(_note("These trials are left out of every mean and of the ranking."))
    return "\n".join(parts)


def _retried_html(report: DatasetReport) -> str:
    parts = ["<h2>Retried trials</h2>"]
    if not report.retried:
        parts.append(_note("None."))
        return "\n".join(parts)
    parts.append(_html_table(*_retried_rows(report)))
    parts.append(_note("Restarted from their last checkpoint after a failure, such as a lost worker node."))
    return "\n".join(parts)


def _safe_name(dataset: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in dataset)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.report",
        description="Write per data set best_config.json, summary.csv/.md and report.html from finished studies.",
    )
    parser.add_argument("--tracking-uri", help=f"MLflow tracking URI (default ${TRACKING_URI_VARIABLE} or ./mlflow.db)")
    parser.add_argument(
        "--experiment", action="append", default=[], help="an MLflow experiment, e.g. clmlf/search/demo"
    )
    parser.add_argument("--parent-run-id", action="append", default=[], help="a study's parent run id")
    parser.add_argument("--tune-dir", action="append", default=[], type=Path, help="a Tune result folder")
    parser.add_argument("--output", required=True, type=Path, help="folder for <dataset>/ report folders")
    args = parser.parse_args(argv)
    try:
        write_study_report(
            args.output,
            tracking_uri=args.tracking_uri,
            parent_run_ids=args.parent_run_id or None,
            experiment_names=args.experiment or None,
            tune_dirs=args.tune_dir or None,
        )
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
