"""Where MLflow runs go and which Ray cluster a study joins: the command-line flag, then the project's variable, then
the library's standard one, then the default (tracking/uri.py), as the study command line resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from results.storage import hide_password
from studies import cli, layer_sweep
from tracking.uri import resolve_ray_address, resolve_tracking_uri

VARIABLES = ("CLMLF_TRACKING_URI", "MLFLOW_TRACKING_URI", "CLMLF_RAY_ADDRESS", "RAY_ADDRESS")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_tracking_uri_is_the_flag_then_clmlf_then_mlflow_then_a_local_file(environment, tmp_path):
    environment.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    environment.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert resolve_tracking_uri(None) == "http://team:5000"
    environment.setenv("CLMLF_TRACKING_URI", "http://studies:5000")
    assert resolve_tracking_uri(None) == "http://studies:5000"
    assert resolve_tracking_uri("http://flag:5000") == "http://flag:5000"
    # An empty variable counts as unset.
    environment.setenv("CLMLF_TRACKING_URI", "")
    assert resolve_tracking_uri(None) == "http://team:5000"


def test_the_ray_address_is_the_flag_then_clmlf_then_ray_then_a_local_ray(environment, tmp_path):
    parser = cli.study_parser(layer_sweep.KIND, layer_sweep.__doc__)
    arguments = ["--storage-path", str(tmp_path), "--name", "settings"]

    def address(*extra: str) -> str | None:
        return cli.resolve_study_arguments(parser.parse_args([*arguments, *extra]), layer_sweep.KIND).address

    assert address() is None and resolve_ray_address(None) is None
    environment.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert address() == "10.0.0.1:6379"
    environment.setenv("CLMLF_RAY_ADDRESS", "auto")
    assert address() == "auto"
    assert address("--address", "10.0.0.2:6379") == "10.0.0.2:6379"


def test_passwords_in_urls_are_hidden_where_they_are_shown():
    assert hide_password("postgresql://optuna:s3cret@db:5432/studies") == "postgresql://optuna:***@db:5432/studies"
    assert hide_password("sqlite:////runs/tune/a/optuna.db") == "sqlite:////runs/tune/a/optuna.db"
    assert hide_password(str(Path("runs"))) == "runs"
