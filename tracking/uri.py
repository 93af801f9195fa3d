"""Where MLflow runs go and which Ray cluster a study joins, by one precedence rule; a module of its own, free of
MLflow and Ray, for command lines to import.

Every setting that can come from the environment is looked up in the same order: the command-line flag, then the
project's own variable (CLMLF_...), then the library's standard one (MLFLOW_TRACKING_URI, RAY_ADDRESS), then the
default. The project's variable comes first so that a cluster's setup can point studies somewhere without changing
what other tools on the same machine use.
"""

from __future__ import annotations

import os
from pathlib import Path

TRACKING_URI_VARIABLES = ("CLMLF_TRACKING_URI", "MLFLOW_TRACKING_URI")
RAY_ADDRESS_VARIABLES = ("CLMLF_RAY_ADDRESS", "RAY_ADDRESS")


class TrackingUnavailable(RuntimeError):
    """The tracking URI cannot be used; the message names it."""


def setting(flag: str | None, variables: tuple[str, ...], default: str | None) -> str | None:
    """The flag, else the first of the variables that is set and not empty, else the default."""
    if flag:
        return flag
    return next((os.environ[name] for name in variables if os.environ.get(name)), default)


def local_tracking_uri() -> str:
    """A SQLite file `mlflow.db` in the current folder: MLflow without a server."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def local_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Where a new experiment of a SQLite store without a server keeps its artifacts: `mlruns/<experiment name>`
    beside the database file. MLflow's own default, ./mlruns of whichever folder the creating process ran in, would
    part a store from its artifacts whenever a study runs elsewhere than the database. None for other stores (a
    server has its own artifact root)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve()
    return (database.parent / "mlruns" / experiment_name).as_uri()


def resolve_tracking_uri(flag: str | None = None) -> str:
    """--tracking-uri, else $CLMLF_TRACKING_URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return setting(flag, TRACKING_URI_VARIABLES, None) or local_tracking_uri()


def resolve_ray_address(flag: str | None = None) -> str | None:
    """--address, else $CLMLF_RAY_ADDRESS, else $RAY_ADDRESS, else None (a local Ray started by the command)."""
    return setting(flag, RAY_ADDRESS_VARIABLES, None)


TRACKING_URI_HELP = "MLflow tracking URI (default $CLMLF_TRACKING_URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db)"
RAY_ADDRESS_HELP = (
    "Ray cluster to join ('auto', host:port); default $CLMLF_RAY_ADDRESS, else $RAY_ADDRESS, else a local Ray started "
    "here"
)
