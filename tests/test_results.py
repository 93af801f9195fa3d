"""The results layer on a real finished study: the smoke layer sweep (two seeds per point, run once per session on
a local Ray cluster) read back from its Tune folder and from its MLflow runs. Expected values come from the raw
files Tune wrote (params.json, result.json) and from the study's own files, read here without the results layer.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from report import write_study_report
from results.ranking import rank, summary_frame
from results.record import ResultsError, TrialRecord
from results.tune_folder import read_tune_trials
from tracking.mlflow_runs import read_mlflow_trials

RECORD_FIELDS = ("status", "config", "metrics", "failure", "retries", "study_kind", "study_name", "dataset")


def study_folder(smoke_sweep: Path) -> Path:
    return smoke_sweep / "tune" / "sweep"


def tracking_uri(smoke_sweep: Path) -> str:
    return f"sqlite:///{smoke_sweep / 'mlflow.db'}"


def parent_run_id(smoke_sweep: Path) -> str:
    return json.loads((study_folder(smoke_sweep) / "mlflow_parent_run.json").read_text())["parent_run_id"]


def best_trial_id(folder: Path) -> str:
    """The study's best trial, from the provenance its report wrote."""
    return json.loads((folder / "report" / "demo" / "best_config.provenance.json").read_text())["best_trial_id"]


def raw_trials(folder: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Trial id -> (its Tune config from params.json, its last row of result.json)."""
    trials = {}
    for trial_dir in folder.glob("trial_*"):
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        trials[trial_dir.name.removeprefix("trial_")] = (json.loads((trial_dir / "params.json").read_text()), rows[-1])
    return trials


def dev_scores_by_layers(folder: Path) -> dict[tuple[int, int], dict[int, float]]:
    """(fusion layers, image layers) -> seed -> final selected/dev/score, from the raw files."""
    scores: dict[tuple[int, int], dict[int, float]] = {}
    for params, last in raw_trials(folder).values():
        pair = (params["model.fusion_layers"], params["model.image_layers"])
        scores.setdefault(pair, {})[params["seed"]] = last["selected/dev/score"]
    return scores


@pytest.fixture(scope="module")
def from_tune(smoke_sweep: Path) -> list[TrialRecord]:
    return read_tune_trials(study_folder(smoke_sweep))


@pytest.fixture(scope="module")
def from_mlflow(smoke_sweep: Path) -> list[TrialRecord]:
    return read_mlflow_trials(tracking_uri(smoke_sweep), parent_run_ids=[parent_run_id(smoke_sweep)])


@pytest.mark.slow
def test_the_tune_folder_gives_every_trial_with_its_full_config_and_final_metrics(smoke_sweep, from_tune):
    folder = study_folder(smoke_sweep)
    raw = raw_trials(folder)
    base = json.loads((folder / "base_config.json").read_text())
    assert sorted(trial.trial_id for trial in from_tune) == sorted(raw) and len(raw) == 6
    for trial in from_tune:
        params, last = raw[trial.trial_id]
        assert (trial.status, trial.failure, trial.retries, trial.completed) == ("TERMINATED", None, 0, True)
        assert trial.config == {**base, **params}
        assert trial.metrics == {key: value for key, value in last.items() if key.startswith("selected/")}
        assert (trial.study_kind, trial.study_name, trial.dataset) == ("layer_sweep", "sweep", "demo")
        assert trial.parent_run_id == parent_run_id(smoke_sweep)
        assert trial.run_id is None and trial.error == ""


@pytest.mark.slow
def test_mlflow_and_the_tune_folder_agree_on_every_trial(smoke_sweep, from_tune, from_mlflow):
    logged = {trial.trial_id: trial for trial in from_mlflow}
    assert sorted(logged) == sorted(trial.trial_id for trial in from_tune)
    for trial in from_tune:
        run = logged[trial.trial_id]
        assert run.run_id is not None and run.parent_run_id == trial.parent_run_id
        for name in RECORD_FIELDS:
            assert getattr(run, name) == getattr(trial, name), (trial.trial_id, name)
    # So both rank the configurations alike and give the same summary (bar the trial labels: run ids in MLflow).
    from_tune_frame = summary_frame(rank("demo", from_tune)).drop(columns="run_ids")
    from_mlflow_frame = summary_frame(rank("demo", from_mlflow)).drop(columns="run_ids")
    assert from_tune_frame.equals(from_mlflow_frame)


@pytest.mark.slow
def test_configurations_are_ranked_by_their_dev_mean_over_seeds(smoke_sweep, from_tune):
    scores = dev_scores_by_layers(study_folder(smoke_sweep))
    ranking = rank("demo", from_tune)
    frame = summary_frame(ranking)
    assert ranking.varying == ["model.fusion_layers", "model.image_layers"]
    rows = {(row["model.fusion_layers"], row["model.image_layers"]): row for row in frame.to_dict("records")}
    assert set(rows) == set(scores) == {(1, 1), (2, 1), (1, 2)}
    for pair, by_seed in scores.items():
        row = rows[pair]
        assert (row["n"], row["seeds"]) == (2, "0;1")
        assert row["dev_score_mean"] == pytest.approx(statistics.fmean(by_seed.values()))
        assert row["dev_score_std"] == pytest.approx(statistics.stdev(by_seed.values()))
    assert list(frame["rank"]) == [1, 2, 3]
    means = list(frame["dev_score_mean"])
    assert means == sorted(means, reverse=True)


@pytest.mark.slow
def test_the_study_exported_the_best_seed_of_the_best_configuration(smoke_sweep):
    folder = study_folder(smoke_sweep)
    scores = dev_scores_by_layers(folder)
    best = json.loads((folder / "best_config.json").read_text())["config"]
    by_seed = scores[(best["model.fusion_layers"], best["model.image_layers"])]
    assert statistics.fmean(by_seed.values()) == max(statistics.fmean(seeds.values()) for seeds in scores.values())
    assert by_seed[best["seed"]] == max(by_seed.values())
    # The report the study wrote into its folder ranks with the same rule and exports the same config.
    assert json.loads((folder / "report" / "demo" / "best_config.json").read_text())["config"] == best
    with (folder / "trials.csv").open() as handle:
        assert sorted(row["trial_id"] for row in csv.DictReader(handle)) == sorted(raw_trials(folder))


@pytest.mark.slow
def test_reports_from_mlflow_from_the_tune_folder_and_from_both_agree(smoke_sweep, tmp_path, capsys):
    folder = study_folder(smoke_sweep)
    uri, parent = tracking_uri(smoke_sweep), parent_run_id(smoke_sweep)
    from_tune = write_study_report(tmp_path / "tune", tune_dirs=[folder])["demo"]
    from_mlflow = write_study_report(tmp_path / "mlflow", tracking_uri=uri, parent_run_ids=[parent])["demo"]
    capsys.readouterr()
    from_both = write_study_report(tmp_path / "both", tracking_uri=uri, parent_run_ids=[parent], tune_dirs=[folder])
    assert "6 trial(s) found both in MLflow and in a Tune folder were counted once" in capsys.readouterr().out
    for report in (from_tune, from_both["demo"]):
        assert (report / "best_config.json").read_text() == (from_mlflow / "best_config.json").read_text()
        with (report / "summary.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert [row["n"] for row in rows] == ["2", "2", "2"]
    # A folder that holds study folders is read study by study.
    assert sorted(trial.trial_id for trial in read_tune_trials(folder.parent)) == sorted(raw_trials(folder))


@pytest.mark.slow
def test_a_tune_folder_without_its_base_config_is_reported_not_guessed(smoke_sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(study_folder(smoke_sweep), copy, ignore=shutil.ignore_patterns("checkpoint_*", "report"))
    (copy / "base_config.json").unlink()
    trials = read_tune_trials(copy)
    assert len(trials) == 6 and not any(trial.completed for trial in trials)
    for trial in trials:
        assert trial.config is None
        assert "the params lack config keys" in trial.failure and "base_config.json" in trial.failure

    (copy / "base_config.json").write_text("{not json")
    with pytest.raises(ResultsError, match=re.escape(str(copy / "base_config.json"))):
        read_tune_trials(copy)


def test_a_folder_without_a_study_is_refused_with_its_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match=re.escape(f"{tmp_path / 'empty'}: not a Tune study folder")):
        read_tune_trials(tmp_path / "empty")


@pytest.mark.slow
def test_the_study_draws_its_best_models_analyses_and_the_report_reads_them(smoke_sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    folder = study_folder(smoke_sweep)
    report = folder / "report" / "demo"
    page = (report / "report.html").read_text()
    for heading in ("Case study", "Attention maps", "Cluster plots"):
        assert heading in page
    assert 'id="case-study"' in page
    # Drawn when the study concluded, into the study folder; the report holds no analysis files of its own.
    analysis = folder / "analysis"
    written = json.loads((analysis / "analysis.json").read_text())
    assert written["dataset"] == "demo"
    assert len(written["clusters"]["full"]) == len(written["clusters"]["text-only"]) == written["posts"]
    assert not (report / "analysis").exists()
    # The model analysed is the checkpoint the study kept of its best trial.
    best_trial = json.loads((report / "best_config.provenance.json").read_text())["best_trial_id"]
    assert best_trial in written["models"]["full"]
    assert (analysis / "text-only" / "checkpoint" / "state.pt").is_file()
    # On the parent run: the analysis files, without the counterpart's checkpoint.
    client = MlflowClient(tracking_uri(smoke_sweep))
    logged = {item.path for item in client.list_artifacts(parent_run_id(smoke_sweep), "analysis")}
    assert {f"analysis/{name}" for name in ("analysis.json", "clusters.png", "attention.svg")} <= logged
    assert "analysis/text-only" not in logged
    # A report built later from the study folder reads the same files, and draws nothing.
    rebuilt = write_study_report(tmp_path / "rebuilt", tune_dirs=[folder])["demo"]
    assert (
        base64.b64encode((analysis / "clusters.png").read_bytes()).decode("ascii")
        in (rebuilt / "report.html").read_text()
    )


@pytest.mark.slow
def test_the_study_exports_its_comparison_and_the_parent_run_carries_it(smoke_sweep):
    from mlflow.tracking import MlflowClient

    folder = study_folder(smoke_sweep)
    comparison = json.loads((folder / "comparison.json").read_text())
    best_config = json.loads((folder / "best_config.json").read_text())
    scores = dev_scores_by_layers(folder)
    assert len(comparison["configurations"]) == len(scores) == 3
    assert best_config["conclusion"] == comparison["conclusion"]
    assert [entry["label"] for entry in best_config["top_group"]] == comparison["top_group"]
    assert comparison["configurations"][0]["n"] == 2
    parent = MlflowClient(tracking_uri(smoke_sweep)).get_run(parent_run_id(smoke_sweep))
    assert parent.data.tags["clmlf.conclusion"] == comparison["conclusion"]
    assert parent.data.tags["mlflow.note.content"] == comparison["conclusion"]
    best = comparison["configurations"][0]
    assert parent.data.metrics["summary/best_dev_score_mean"] == pytest.approx(best["mean"])
    assert parent.data.metrics["summary/best_dev_score_ci_low"] == pytest.approx(best["ci_low"])
    assert parent.data.metrics["summary/top_group_size"] == len(comparison["top_group"])


@pytest.mark.slow
def test_a_study_folder_is_analysed_by_the_command_reusing_its_counterpart(smoke_sweep, tmp_path, capsys):
    from analyses.cli import main as analyse

    copy = tmp_path / "sweep"
    shutil.copytree(study_folder(smoke_sweep), copy)
    (copy / "analysis" / "analysis.json").unlink()
    counterpart = copy / "analysis" / "text-only" / "checkpoint" / "state.pt"
    stamp = counterpart.stat().st_mtime_ns
    capsys.readouterr()
    assert analyse([str(copy)]) == 0
    printed = capsys.readouterr().out
    assert f"the best trial {best_trial_id(copy)} of study {copy}" in printed
    assert "reusing the text-only counterpart" in printed
    assert counterpart.stat().st_mtime_ns == stamp
    # The checkpoint analysed is the best trial's in the copy, the one the study kept.
    written = json.loads((copy / "analysis" / "analysis.json").read_text())
    assert str(copy / f"trial_{best_trial_id(copy)}") in written["models"]["full"]
