"""A search's stored Optuna study: where it is kept, how a study folder and an MLflow parent run name it, and what is
read back from it (by optuna-dashboard, a warm start and the report's parameter importances).

A search keeps its Optuna study in an RDB storage, under the study's name: by default a SQLite file `optuna.db` in
the study's folder; for a remote --storage-path (s3://..., which SQLite cannot open) a local file
`optuna/<name>.db` in the current folder of the driver, the only process that writes to it; or the URL given with
--optuna-storage (e.g. a PostgreSQL server that several searches and a dashboard share). The study folder's
`optuna_study.json` and the parent run's tags `clmlf.optuna_storage` and `clmlf.optuna_study` say where it is.

Optuna is imported inside the functions: command lines import this module before they parse their arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results import storage
from results.storage import hide_password

OPTUNA_STUDY_FILE = "optuna_study.json"
OPTUNA_DATABASE = "optuna.db"
# Where the stored study of a search with a remote storage path goes (relative to the driver's current folder).
LOCAL_OPTUNA_FOLDER = "optuna"
STORAGE_TAG = "clmlf.optuna_storage"
STUDY_TAG = "clmlf.optuna_study"
# Attributes of the stored study that make it self-describing: a warm start checks what its trials were run with.
BASE_CONFIG_ATTRIBUTE = "clmlf.base_config"
OBJECTIVE_ATTRIBUTE = "clmlf.objective"
SEARCH_SPACE_ATTRIBUTE = "clmlf.search_space"
# On a trial seeded from another study by a warm start: that study's name and its trial's number.
WARM_START_ATTRIBUTE = "clmlf.warm_start_from"


@dataclass(frozen=True)
class StoredStudy:
    """An Optuna study in an RDB storage: the storage's URL and the study's name."""

    storage: str
    name: str

    def to_json(self) -> dict[str, str]:
        # Without the password: the study folder is shared storage (a resume and a warm start are given the URL).
        return {"storage": hide_password(self.storage), "study_name": self.name}

    @property
    def shown(self) -> str:
        return f"{self.name!r} in {hide_password(self.storage)}"


def default_storage(study_path: str, name: str) -> str:
    """SQLite in the study's folder; for a remote folder, a local file under ./optuna."""
    if storage.is_remote(study_path):
        return f"sqlite:///{(Path.cwd() / LOCAL_OPTUNA_FOLDER / f'{name}.db').resolve()}"
    return f"sqlite:///{Path(study_path, OPTUNA_DATABASE)}"


def is_storage_url(text: str) -> bool:
    """An SQLAlchemy database URL (sqlite:///..., postgresql://..., mysql+pymysql://...) rather than a folder."""
    scheme = text.partition("://")[0]
    return "://" in text and scheme.split("+")[0] in ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle")


def record_location(study_path: str, stored: StoredStudy) -> None:
    storage.write_json(storage.join(study_path, OPTUNA_STUDY_FILE), stored.to_json())


def recorded_location(study_path: str) -> StoredStudy | None:
    """The stored study a study folder names, or None (not a search, or one made before studies were stored)."""
    saved = storage.read_json_object(storage.join(study_path, OPTUNA_STUDY_FILE))
    return StoredStudy(saved["storage"], saved["study_name"]) if saved else None


def open_storage(url: str):
    """An RDB storage; a local SQLite file's folder is created. SQLite waits for a reader (a dashboard) to let go
    instead of failing at once."""
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def study_names(url: str) -> list[str]:
    """The studies a storage holds; a SQLite file that does not exist holds none (and is not created)."""
    import optuna

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []
    return optuna.study.get_all_study_names(storage=open_storage(url))


def load(stored: StoredStudy):
    """The stored study, through Optuna's own loader (what optuna-dashboard opens)."""
    import optuna

    if stored.storage.startswith("sqlite:///") and not Path(stored.storage.removeprefix("sqlite:///")).is_file():
        # SQLAlchemy would create an empty database there and Optuna then report a missing study.
        raise ValueError(f"no Optuna storage at {stored.storage.removeprefix('sqlite:///')}")
    return optuna.load_study(study_name=stored.name, storage=open_storage(stored.storage))


def name_objective(study, metric: str) -> None:
    """The objective's name in the stored study, so that optuna-dashboard and Optuna's plots label its values with the
    metric ("selected/dev/score") instead of "Objective 0". Optuna marks set_metric_names experimental; the name is
    only a label, so its warning is not shown."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])


def run_trials(study) -> list:
    """The trials the search itself ran (one per Tune trial), without those a warm start seeded."""
    return [trial for trial in study.trials if WARM_START_ATTRIBUTE not in trial.user_attrs]


def close_unstarted_trials(stored: StoredStudy) -> int:
    """Once every Tune trial of a search has finished, a stored trial still running was asked for by a driver that
    was interrupted before Tune recorded the trial; it never ran. It is marked failed; returns how many."""
    import optuna

    study = load(stored)
    unstarted = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.RUNNING]
    for trial in unstarted:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(unstarted)
