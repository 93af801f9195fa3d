"""One trial of a study as read back, from its Tune folder or from MLflow, and the rules that decide whether it
counts: a trial counts when it finished, its full config could be rebuilt and it reported a finite dev score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from clmlf.config import ConfigError, TrainConfig
from clmlf.data import DATASETS

# Trials are ranked on the data set's selection metric on dev at the epoch selected on dev; test never ranks.
RANKING_METRIC = "selected/dev/score"
RANKING_MODE = "max"
# The metrics a trial reports for the epoch selected on dev all start with this.
SELECTED_PREFIX = "selected/"
# The splits evaluated at the selected epoch, and the overall metrics of each.
SELECTED_SPLITS = ("dev", "test")
OVERALL_METRICS = ("acc", "f1_weighted", "f1_macro")
DEV_METRICS = (RANKING_METRIC, *(f"selected/dev/{name}" for name in OVERALL_METRICS))
TEST_METRICS = tuple(f"selected/test/{name}" for name in OVERALL_METRICS)
TRIAL_METRICS = DEV_METRICS + TEST_METRICS
STUDY_KINDS = ("layer_sweep", "search", "ablation", "confirm")
# Reported by every trial with each epoch: 1 when the epoch's checkpoint holds the model of the epoch selected on dev
# so far, else 0. Tune keeps each trial's checkpoint with the highest value (ties: the later one, i.e. the latest
# selection) besides its latest one, so a finished trial still has the model that its selected metrics describe.
SELECTED_CHECKPOINT = "trial/selected_checkpoint"
# Error texts kept in MLflow tags and reports are cut to their end, where the exception is.
ERROR_TEXT_LIMIT = 5000
CONFIG_KEYS = tuple(TrainConfig().to_flat_dict())


class ResultsError(ValueError):
    """A study's results cannot be read; the message names the store or file and the record."""


@dataclass
class TrialRecord:
    """One trial: its full typed flat config and its selected metrics at the last reported epoch."""

    trial_id: str
    dataset: str
    # In Tune's words: TERMINATED, ERROR, RUNNING, PENDING, PAUSED.
    status: str
    # None when the full config could not be rebuilt (`failure` says why).
    config: dict[str, Any] | None = None
    # The numeric `selected/...` metrics.
    metrics: dict[str, float] = field(default_factory=dict)
    # Why the trial is left out of every mean and of the ranking (None: it counts).
    failure: str | None = None
    # Restarts from the trial's last checkpoint after a failure (a lost worker node, an exception).
    retries: int = 0
    study_kind: str = "unknown"
    study_name: str = ""
    parent_run_id: str | None = None
    # The trial's MLflow child run, when it was read from MLflow.
    run_id: str | None = None
    source: str = ""
    # A search's stored Optuna study (its storage URL; the Optuna study has the study's name), where it has one.
    optuna_storage: str | None = None

    @property
    def completed(self) -> bool:
        return self.failure is None

    @property
    def seed(self) -> int | None:
        return None if self.config is None else self.config["seed"]

    @property
    def label(self) -> str:
        return self.run_id or self.trial_id

    @property
    def error(self) -> str:
        """The exception line that ended a failed trial ("" for any other trial)."""
        return error_summary(self.failure or "") if self.status == "ERROR" else ""


def make_record(
    *,
    trial_id: str,
    dataset: str,
    status: str,
    flat_config: dict[str, Any],
    metrics: dict[str, Any],
    error_text: str,
    where: str,
    **details: Any,
) -> TrialRecord:
    """A record with its config typed and its failure judged. `error_text` is used for failed trials only;
    `where` names the record in messages; `details` are the record's other fields."""
    config, config_problem = None, None
    try:
        config = typed_config(flat_config, where)
    except ConfigError as error:
        config_problem = str(error)
    selected = {key: value for key, value in metrics.items() if key.startswith(SELECTED_PREFIX) and _is_number(value)}
    failure = failure_of(status, error_text, config_problem, selected)
    return TrialRecord(trial_id, config["dataset"] if config else dataset, status, config, selected, failure, **details)


def failure_of(status: str, error_text: str, config_problem: str | None, metrics: dict[str, float]) -> str | None:
    """Why a trial does not count, or None: failed, unfinished, no config, or no finite dev score (a NaN would
    break any ordering)."""
    if status == "ERROR":
        return clean_error(latest_failure(error_text))
    if status != "TERMINATED":
        return f"unfinished (status {status})"
    if config_problem is not None:
        return config_problem
    if RANKING_METRIC not in metrics:
        return f"no {RANKING_METRIC} was reported"
    if not math.isfinite(metrics[RANKING_METRIC]):
        return f"{RANKING_METRIC} is {metrics[RANKING_METRIC]}"
    return None


def typed_config(flat_config: dict[str, Any], where: str) -> dict[str, Any]:
    """The trainer's full flat config, typed as `TrainConfig.to_flat_dict()` writes it (MLflow keeps strings)."""
    missing = [key for key in CONFIG_KEYS if key not in flat_config]
    if missing:
        raise ConfigError(f"{where}: the params lack config keys {missing}")
    try:
        return TrainConfig.from_flat_dict({key: flat_config[key] for key in CONFIG_KEYS}).to_flat_dict()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def latest_failure(error_text: str) -> str:
    """Tune appends a `Failure # n (occurred at ...)` section per failure; the last one ended the trial."""
    section = error_text[max(error_text.rfind("Failure # "), 0) :]
    header, _, body = section.partition("\n")
    return body.strip() if header.startswith("Failure # ") else section.strip()


def error_summary(error_text: str) -> str:
    """The last `SomeError: message` line of a traceback, else its last line (for a table cell or a tag)."""
    lines = [line.strip() for line in error_text.splitlines() if line.strip()]
    for line in reversed(lines):
        name = line.split(":", 1)[0]
        if " " not in name and name.endswith(("Error", "Exception", "Unavailable", "Interrupt", "Exit")):
            return line
    return lines[-1] if lines else ""


_TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean_error(error_text: str) -> str:
    """Without the colour codes Ray puts in tracebacks for terminals, and at most ERROR_TEXT_LIMIT characters."""
    text = _TERMINAL_COLOURS.sub("", error_text).strip() or "failed without an error text"
    return text[-ERROR_TEXT_LIMIT:]


# Short names of the config keys that studies vary, for run names and the live view; other keys go by their last
# dotted part.
SHORT_KEY_NAMES = {
    "model.fusion_layers": "fusion",
    "model.image_layers": "image",
    "temperature": "tau",
    "lbcl_weight": "lbcl",
    "dbcl_weight": "dbcl",
    "batch_size": "batch",
    "learning_rate": "lr",
    "text_learning_rate": "text_lr",
    "image_learning_rate": "image_lr",
}


def describe_values(values: dict[str, Any]) -> str:
    """What a trial tries, e.g. `fusion=3 image=2 seed=1` or `tau=0.0734 lbcl=1.2 batch=32` (floats to 3 digits)."""
    parts = []
    for key, value in values.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{SHORT_KEY_NAMES.get(key, key.rsplit('.', 1)[-1])}={shown}")
    return " ".join(parts)


def f1_metric_of(dataset: str) -> str:
    """The F1 that tables show for a data set: its selection metric where that is an F1 (the paper's choice for
    each data set), else weighted F1."""
    spec = DATASETS.get(dataset)
    return spec.selection_metric if spec is not None and spec.selection_metric.startswith("f1") else "f1_weighted"


def trials_frame(records: list[TrialRecord]):
    """One row per trial: id, status, retries, error, the full flat config and the selected metrics."""
    import pandas as pd

    rows = []
    for record in records:
        row: dict[str, Any] = {
            "trial_id": record.trial_id,
            "status": record.status,
            "retries": record.retries,
            "error": record.error,
        }
        row.update(record.config or {})
        row.update(record.metrics)
        rows.append(row)
    return pd.DataFrame(rows)
