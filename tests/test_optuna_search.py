"""The search's stored Optuna study, on a real finished smoke search (conftest's `smoke_search`): the SQLite file in
the study's folder as optuna-dashboard's server and Optuna's own loader open it, one stored trial per Tune trial, the
TPE sampler that ran, a second search warm-started from the first, and the report's importances read from the stored
study. Expected values come from the files Tune wrote (params.json, result.json)."""

from __future__ import annotations

import html
import json
import os
import pickle
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
import ray
from conftest import SMOKE_SEARCH_NAME, FinishedStudy, start_logged, stop_process_group

from report import write_study_report
from studies import search

VENV_BIN = Path(sys.executable).parent
DASHBOARD_START_TIMEOUT_S = 120


def tune_trials(folder: Path) -> dict[str, tuple[dict, dict]]:
    """Trial id -> (its Tune config from params.json, its last row of result.json)."""
    trials = {}
    for trial_dir in folder.glob("trial_*"):
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        trials[trial_dir.name.removeprefix("trial_")] = (json.loads((trial_dir / "params.json").read_text()), rows[-1])
    return trials


def stored_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'optuna.db'}"


@pytest.mark.slow
def test_the_stored_study_holds_one_trial_per_tune_trial(smoke_search: FinishedStudy) -> None:
    folder = smoke_search.folder
    # By default the stored study is SQLite in the study's folder, under the study's name, and the folder says so.
    location = json.loads((folder / "optuna_study.json").read_text())
    assert location == {"storage": stored_url(folder), "study_name": SMOKE_SEARCH_NAME}
    study = optuna.load_study(study_name=SMOKE_SEARCH_NAME, storage=stored_url(folder))
    trials = tune_trials(folder)
    assert len(trials) == search.SMOKE_SAMPLES
    assert len(study.trials) == len(trials)
    assert {trial.state for trial in study.trials} == {optuna.trial.TrialState.COMPLETE}
    # Each stored trial is one Tune trial: the values Tune ran with, the final selected dev score Optuna learnt from.
    stored = sorted((json.dumps(trial.params, sort_keys=True), trial.value) for trial in study.trials)
    ran = sorted((json.dumps(params, sort_keys=True), last["selected/dev/score"]) for params, last in trials.values())
    assert stored == ran
    assert study.user_attrs["clmlf.base_config"] == json.loads((folder / "base_config.json").read_text())
    assert study.user_attrs["clmlf.objective"] == "selected/dev/score"
    # The objective is named, so optuna-dashboard labels its values "selected/dev/score", not "Objective 0".
    assert study.metric_names == ["selected/dev/score"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


@pytest.mark.slow
def test_optuna_dashboard_opens_the_stored_study(smoke_search: FinishedStudy, free_loopback_port, tmp_path) -> None:
    command = [str(VENV_BIN / "optuna-dashboard"), stored_url(smoke_search.folder), "--host", "127.0.0.1",
               "--port", str(free_loopback_port)]  # fmt: skip
    log_path = tmp_path / "dashboard.log"
    dashboard = start_logged(command, log_path, dict(os.environ))
    base = f"http://127.0.0.1:{free_loopback_port}"
    try:
        summaries = None
        deadline = time.monotonic() + DASHBOARD_START_TIMEOUT_S
        while summaries is None and time.monotonic() < deadline:
            assert dashboard.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as response:
                    summaries = json.loads(response.read())["study_summaries"]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert summaries is not None, f"optuna-dashboard did not answer:\n{log_path.read_text()[-3000:]}"
        assert [summary["study_name"] for summary in summaries] == [SMOKE_SEARCH_NAME]
        with urllib.request.urlopen(f"{base}/api/studies/{summaries[0]['study_id']}", timeout=30) as response:
            detail = json.loads(response.read())
    finally:
        stop_process_group(dashboard)
    trials = tune_trials(smoke_search.folder)
    assert len(detail["trials"]) == len(trials)
    assert {trial["state"] for trial in detail["trials"]} == {"Complete"}
    shown = sorted(trial["values"][0] for trial in detail["trials"])
    assert shown == pytest.approx(sorted(last["selected/dev/score"] for _, last in trials.values()))
    # The dashboard names the objective by the study's metric.
    assert detail["objective_names"] == ["selected/dev/score"]


@pytest.mark.slow
def test_tpe_runs_multivariate_with_the_constant_liar(smoke_search: FinishedStudy) -> None:
    # The searcher as Tune saved it with the study: the sampler that proposed every trial.
    (state_file,) = smoke_search.folder.glob("searcher-state-*.pkl")
    state = pickle.loads(state_file.read_bytes())
    sampler = state["_sampler"]
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._constant_liar
    assert state["_study_name"] == SMOKE_SEARCH_NAME


@pytest.mark.slow
def test_a_warm_start_seeds_a_new_search_with_the_finished_trials(smoke_search, ray_cluster, tmp_path) -> None:
    arguments = [
        "--smoke-test", "--no-analyses", "--num-samples", "1",
        "--address", ray_cluster.address,
        "--storage-path", str(tmp_path / "tune"), "--name", "warm",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--warm-start", str(smoke_search.folder),
    ]  # fmt: skip
    assert search.main(arguments) == 0
    source = optuna.load_study(study_name=SMOKE_SEARCH_NAME, storage=stored_url(smoke_search.folder))
    warm_folder = tmp_path / "tune" / "warm"
    study = optuna.load_study(study_name="warm", storage=stored_url(warm_folder))
    seeded = [trial for trial in study.trials if "clmlf.warm_start_from" in trial.user_attrs]
    # Every completed trial of the finished search, as a completed trial with its score and values: not run again.
    assert sorted((trial.user_attrs["clmlf.warm_start_from"], trial.value) for trial in seeded) == sorted(
        (f"{SMOKE_SEARCH_NAME}#{trial.number}", trial.value) for trial in source.trials
    )
    by_origin = {trial.user_attrs["clmlf.warm_start_from"]: trial for trial in seeded}
    for trial in source.trials:
        assert by_origin[f"{SMOKE_SEARCH_NAME}#{trial.number}"].params == trial.params
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in seeded)
    # The new search ran its one sample; the stored study holds it besides the seeded trials.
    ran = [trial for trial in study.trials if trial not in seeded]
    assert len(ran) == len(tune_trials(warm_folder)) == 1
    assert ran[0].value == pytest.approx(next(iter(tune_trials(warm_folder).values()))[1]["selected/dev/score"])


def test_a_warm_start_from_another_base_config_is_refused(smoke_search, tmp_path, capsys) -> None:
    arguments = [
        "--smoke-test", "--storage-path", str(tmp_path / "tune"), "--name", "refused",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--warm-start", str(smoke_search.folder), "--set", "weight_decay=0.5",
    ]  # fmt: skip
    assert search.main(arguments) == 2
    error = capsys.readouterr().err
    assert "--warm-start" in error and "weight_decay" in error
    assert not ray.is_initialized()
    assert not (tmp_path / "tune").exists()


def importance_rows(page: str) -> dict[str, float]:
    section = page[page.index("<h2>Parameter importances (Optuna)</h2>") :].split("<h2>")[1]
    rows = re.findall(r"<tr[^>]*><td[^>]*>([^<]+)</td><td[^>]*>([0-9.]+)</td></tr>", section)
    return {key: float(value) for key, value in rows}


@pytest.mark.slow
def test_the_report_reads_importances_from_the_stored_study(smoke_search: FinishedStudy, tmp_path) -> None:
    study = optuna.load_study(study_name=SMOKE_SEARCH_NAME, storage=stored_url(smoke_search.folder))
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    # The report the study wrote at its end (read from MLflow, which names the stored study on the parent run).
    page = html.unescape((smoke_search.folder / "report" / "demo" / "report.html").read_text())
    assert f"completed trials of the stored Optuna study '{SMOKE_SEARCH_NAME}'" in page
    assert importance_rows(page) == pytest.approx({key: round(value, 4) for key, value in expected.items()}, abs=1e-4)

    # A copy of the study folder whose stored study is gone: importances are rebuilt, and the page says why.
    copy = tmp_path / SMOKE_SEARCH_NAME
    shutil.copytree(smoke_search.folder, copy, ignore=shutil.ignore_patterns("optuna.db", "checkpoint_*"))
    (copy / "optuna_study.json").write_text(json.dumps({"storage": stored_url(copy), "study_name": SMOKE_SEARCH_NAME}))
    folders = write_study_report(tmp_path / "report", tune_dirs=[copy])
    rebuilt = html.unescape((folders["demo"] / "report.html").read_text())
    assert "could not be opened here" in rebuilt and "rebuilt from the trials" in rebuilt
