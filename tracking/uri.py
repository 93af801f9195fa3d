"""Where MLflow runs go by default; a module of its own, free of MLflow and Ray, for command lines to import."""

from __future__ import annotations

import os
from pathlib import Path

TRACKING_URI_VARIABLE = "CLMLF_TRACKING_URI"


class TrackingUnavailable(RuntimeError):
    """The tracking URI cannot be used; the message names it."""


def default_tracking_uri() -> str:
    """`$CLMLF_TRACKING_URI`, else a SQLite file `mlflow.db` in the current folder (no server needed)."""
    return os.environ.get(TRACKING_URI_VARIABLE) or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
