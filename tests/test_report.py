"""The study report against real MLflow stores (sqlite, written with the real client in the layout the studies log)
holding planned numbers, so that the ranking and every table can be checked against values worked out by hand;
the page is checked in a real headless Chromium. Reports of a real study's Tune folder are in test_results.py."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from PIL import Image
from scipy import stats

from clmlf.config import build_config, load_config_file
from report import write_study_report
from report.cli import main
from report.figures import BAND_LABEL, layer_curves_figure
from results.ranking import rank_configurations
from results.record import CONFIG_KEYS, ResultsError, TrialRecord

CHROMIUM = Path("/usr/bin/chromium")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
OOM_ERROR = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (trial fusion_layers=4)"


@dataclass
class PlannedTrial:
    trial_id: str
    overrides: dict[str, Any]
    seed: int
    dev_score: float = 0.0
    test_acc: float = 0.0
    error: str | None = None

    def final_metrics(self) -> dict[str, float]:
        d, t = self.dev_score, self.test_acc
        return {
            "selected/dev/score": d,
            "selected/dev/acc": d + 0.01,
            "selected/dev/f1_weighted": d,
            "selected/dev/f1_macro": d - 0.02,
            "selected/test/acc": t,
            "selected/test/f1_weighted": t - 0.01,
            "selected/test/f1_macro": t - 0.03,
        }

    def epoch_rows(self) -> list[dict[str, float]]:
        """Two epochs (the tiny preset's 1 + 1); the first one is worse, so only the last epoch gives the plan."""
        rows = []
        for epoch, offset in ((0, -0.05), (1, 0.0)):
            row = {key: value + offset for key, value in self.final_metrics().items()}
            row |= {
                "train/loss": 1.2 - 0.3 * epoch,
                "train/text_encoder_frozen": 1.0 - epoch,
                "dev/acc": row["selected/dev/acc"],
                "dev/f1_weighted": row["selected/dev/f1_weighted"],
                "dev/f1_macro": row["selected/dev/f1_macro"],
                "dev/score": row["selected/dev/score"],
                "selected/epoch": float(epoch),
            }
            rows.append(row)
        return rows


@dataclass
class PlannedStudy:
    kind: str
    dataset: str
    name: str
    trials: list[PlannedTrial] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return f"clmlf/{self.kind}/{self.dataset}"

    def config(self, trial: PlannedTrial) -> dict[str, Any]:
        return build_config(self.dataset, "tiny", {**trial.overrides, "seed": trial.seed}).to_flat_dict()


def _layer_sweep() -> PlannedStudy:
    # Fusion 1 has the best single dev run and the best test numbers; fusion 2 has the best dev mean over seeds:
    # ranking by test, or by the best single run, picks fusion 1; ranking by the dev mean picks fusion 2.
    study = PlannedStudy("layer_sweep", "demo", "sweep-demo")
    plan = {1: ([0.60, 0.62, 0.76], [0.80, 0.82, 0.84]), 2: ([0.70, 0.72, 0.71], [0.50, 0.52, 0.51])}
    for layers, (dev_scores, test_accs) in plan.items():
        for seed, (dev, test) in enumerate(zip(dev_scores, test_accs, strict=True)):
            study.trials.append(
                PlannedTrial(f"5a1f0_{len(study.trials):05d}", {"model.fusion_layers": layers}, seed, dev, test)
            )
    study.trials.append(PlannedTrial("5a1f0_00006", {"model.fusion_layers": 3}, 0, 0.68, 0.60))
    study.trials.append(PlannedTrial("5a1f0_00007", {"model.fusion_layers": 4}, 0, error=OOM_ERROR))
    return study


def _search() -> PlannedStudy:
    study = PlannedStudy("search", "demo", "search-demo")
    points = [(0.05, 0.5, 0.55), (0.1, 1.0, 0.58), (0.2, 0.5, 0.57), (0.5, 1.0, 0.52)]
    for index, (temperature, lbcl_weight, dev) in enumerate(points):
        overrides = {"temperature": temperature, "lbcl_weight": lbcl_weight}
        study.trials.append(PlannedTrial(f"c0ffe_{index:05d}", overrides, 0, dev, 0.90))
    return study


def _ablation() -> PlannedStudy:
    study = PlannedStudy("ablation", "demo", "ablation-demo")
    for index, (variant, dev) in enumerate([("text-only", 0.50), ("image-only", 0.40), ("mlf", 0.60), ("full", 0.65)]):
        overrides = {"model.variant": variant, "model.dropout": 0.2}
        study.trials.append(PlannedTrial(f"ab1a7_{index:05d}", overrides, 0, dev, dev - 0.05))
    return study


def _confirm() -> PlannedStudy:
    study = PlannedStudy("confirm", "mvsa-single", "confirm-mvsa-single")
    study.trials.append(PlannedTrial("f1a2b_00000", {}, 0, 0.70, 0.74))
    return study


def log_study(client: MlflowClient, study: PlannedStudy, artifact_root: Path) -> str:
    """One study as the contract's MLflow layout: a parent run and one child run per trial."""
    experiment = client.get_experiment_by_name(study.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(study.experiment, artifact_location=(artifact_root / study.kind).as_uri())
    )
    common = {"clmlf.study": study.kind, "clmlf.study_name": study.name, "clmlf.dataset": study.dataset}
    parent = client.create_run(
        experiment_id,
        run_name=study.name,
        tags={**common, "clmlf.role": "study", "clmlf.git_commit": "0123abc"},
    )
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param("study.preset", "tiny"), Param("study.seeds", "3")])
    client.log_text(parent_id, json.dumps({"model.fusion_layers": [1, 2, 3, 4]}), "search_space.json")
    clock = int(time.time() * 1000)
    for trial in study.trials:
        config = study.config(trial)
        tags = {
            **common,
            "mlflow.parentRunId": parent_id,
            "clmlf.role": "trial",
            "clmlf.variant": config["model.variant"],
            "clmlf.trial_id": trial.trial_id,
            "clmlf.seed": str(trial.seed),
            "clmlf.node": "node-0",
            "clmlf.device": "cpu",
            "clmlf.git_commit": "0123abc",
            "clmlf.status": "ERROR" if trial.error else "TERMINATED",
            "clmlf.retries": "0",
        }
        if trial.error:
            tags["clmlf.error"] = trial.error
        child = client.create_run(experiment_id, run_name=trial.trial_id, tags=tags)
        run_id = child.info.run_id
        params = [Param(key, str(value)) for key, value in config.items()]
        if trial.error:
            # Failed during the first epoch: some training numbers, no evaluation.
            metrics = [Metric("train/loss", 1.3, clock, 0)]
        else:
            metrics = [
                Metric(key, value, clock + epoch, epoch)
                for epoch, row in enumerate(trial.epoch_rows())
                for key, value in row.items()
            ]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.log_text(run_id, json.dumps(config), "config.json")
        client.set_terminated(run_id, "FAILED" if trial.error else "FINISHED")
    best = max((t for t in study.trials if not t.error), key=lambda t: t.dev_score)
    client.log_batch(
        parent_id,
        metrics=[Metric("best/selected/dev/score", best.dev_score, clock, 0)],
        tags=[RunTag("clmlf.best_trial_id", best.trial_id)],
    )
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    studies = {study.kind: study for study in (_layer_sweep(), _search(), _ablation(), _confirm())}
    parents = {kind: log_study(client, study, root / "artifacts") for kind, study in studies.items()}
    return {"uri": uri, "studies": studies, "parents": parents}


@pytest.fixture(scope="module")
def report(store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    output = tmp_path_factory.mktemp("report")
    return write_study_report(
        output, tracking_uri=store["uri"], experiment_names=[study.experiment for study in store["studies"].values()]
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


EXPECTED_FILES = ("best_config.json", "best_config.provenance.json", "summary.csv", "summary.md", "report.html")


def test_every_file_is_written_per_data_set(report: dict[str, Path]) -> None:
    assert sorted(report) == ["demo", "mvsa-single"]
    for folder in report.values():
        for name in EXPECTED_FILES:
            assert (folder / name).stat().st_size > 0, f"{folder / name} missing or empty"


def test_best_config_is_the_best_dev_mean_not_the_best_test_nor_best_single_run(report: dict[str, Path]) -> None:
    best = json.loads((report["demo"] / "best_config.json").read_text())["config"]
    # Fusion 2 with seed 1: its dev mean (0.71) is the best; fusion 1 wins on test and on the single best dev run.
    assert best == build_config("demo", "tiny", {"model.fusion_layers": 2, "seed": 1}).to_flat_dict()
    assert list(best) == list(CONFIG_KEYS)
    provenance = json.loads((report["demo"] / "best_config.provenance.json").read_text())
    assert provenance["dev_score_mean"] == pytest.approx(0.71)
    assert provenance["dev_score_std"] == pytest.approx(0.01)
    assert provenance["seeds"] == [0, 1, 2]
    assert provenance["best_seed"] == 1
    assert len(provenance["run_ids"]) == 3
    assert {study["name"] for study in provenance["studies"]} == {"sweep-demo"}
    assert "best_config" not in json.dumps(best)


def test_best_config_loads_back_into_the_trainer_unchanged(report: dict[str, Path]) -> None:
    for folder in report.values():
        path = folder / "best_config.json"
        exported = json.loads(path.read_text())["config"]
        assert load_config_file(path).to_flat_dict() == exported
        assert type(exported["seed"]) is int
        assert type(exported["learning_rate"]) is float
        assert type(exported["augment_original_images"]) is bool
        assert exported["data_root"] is None


def test_summary_gives_mean_and_std_over_three_seeds(report: dict[str, Path]) -> None:
    rows = _csv_rows(report["demo"] / "summary.csv")
    by_layers = {
        (row["model.fusion_layers"], row["model.variant"], row["temperature"], row["model.dropout"]): row
        for row in rows
    }
    fusion_two = by_layers[("2", "full", "0.07", "0.1")]
    assert fusion_two["rank"] == "1"
    assert int(fusion_two["n"]) == 3
    assert float(fusion_two["dev_score_mean"]) == pytest.approx(0.71)
    assert float(fusion_two["dev_score_std"]) == pytest.approx(statistics.stdev([0.70, 0.72, 0.71]))
    assert float(fusion_two["test_acc_mean"]) == pytest.approx(0.51)
    assert float(fusion_two["test_f1_macro_mean"]) == pytest.approx(0.48)
    assert float(fusion_two["dev_acc_mean"]) == pytest.approx(0.72)
    fusion_one = by_layers[("1", "full", "0.07", "0.1")]
    assert float(fusion_one["dev_score_std"]) == pytest.approx(statistics.stdev([0.60, 0.62, 0.76]))
    single = by_layers[("3", "full", "0.07", "0.1")]
    assert int(single["n"]) == 1 and single["dev_score_std"] == ""
    # Compared at equal n: the two three-seed configurations first, then the single-seed ones; each group sorted by
    # its dev mean, and the ranking column counts up.
    assert [int(row["n"]) for row in rows] == [3, 3] + [1] * 9
    for group in (rows[:2], rows[2:]):
        means = [float(row["dev_score_mean"]) for row in group]
        assert means == sorted(means, reverse=True)
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, len(rows) + 1)]
    # 3 + 3 + 1 sweep configurations (the failed one is not), 4 search points, 4 ablation variants.
    assert len(rows) == 11
    assert "seed" not in rows[0]


def test_failed_trial_is_listed_with_its_error_and_left_out_of_the_means(report: dict[str, Path]) -> None:
    summary_md = (report["demo"] / "summary.md").read_text()
    page = (report["demo"] / "report.html").read_text()
    assert "5a1f0_00007" in summary_md and OOM_ERROR in summary_md
    assert "5a1f0_00007" in page and "CUDA out of memory" in page
    rows = _csv_rows(report["demo"] / "summary.csv")
    assert all(row["model.fusion_layers"] != "4" for row in rows)
    assert all("5a1f0_00007" not in row["run_ids"] for row in rows)


def test_single_trial_data_set_compares_with_the_paper(report: dict[str, Path]) -> None:
    folder = report["mvsa-single"]
    assert json.loads((folder / "best_config.json").read_text())["config"]["dataset"] == "mvsa-single"
    page = (folder / "report.html").read_text()
    # Table 1's CLMLF on MVSA-Single and our differences (0.74 - 0.7533, 0.73 - 0.7346).
    assert "0.7533" in page and "0.7346" in page
    assert "-0.0133" in page and "-0.0046" in page


def test_page_has_every_section_and_no_external_resource(report: dict[str, Path]) -> None:
    page = (report["demo"] / "report.html").read_text()
    assert 'id="best-config"' in page
    for heading in ("Figure 3", "tau and the loss weights", "importances", "Table 3", "Table 1", "Failed"):
        assert heading in page
    assert "The paper reports no numbers for the demo data set" in page
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)
    assert "<link" not in page and "@import" not in page


def test_ranking_never_reads_the_test_split() -> None:
    def trial(trial_id: str, seed: int, dev: float, test: float) -> TrialRecord:
        config = build_config("demo", "tiny", {"seed": seed, "model.fusion_layers": 1 + trial_id.startswith("b")})
        metrics = {"selected/dev/score": dev, "selected/test/acc": test, "selected/test/f1_weighted": test}
        return TrialRecord(trial_id, "demo", "TERMINATED", config.to_flat_dict(), metrics)

    better_dev = [trial("a0", 0, 0.70, 0.10), trial("a1", 1, 0.70, 0.20)]
    better_test = [trial("b0", 0, 0.69, 0.99), trial("b1", 1, 0.69, 0.98)]
    ranked = rank_configurations(better_test + better_dev)
    assert [[t.trial_id for t in configuration.trials] for configuration in ranked] == [["a0", "a1"], ["b0", "b1"]]
    # Changing every test number changes nothing.
    for member in better_dev + better_test:
        member.metrics["selected/test/acc"] = 1.0 - member.metrics["selected/test/acc"]
    ranked_again = rank_configurations(better_dev + better_test)
    assert [c.config_id for c in ranked_again] == [c.config_id for c in ranked]


def test_ties_go_to_more_seeds_and_failed_trials_never_count() -> None:
    def trial(trial_id: str, layers: int, seed: int, dev: float, status: str = "TERMINATED") -> TrialRecord:
        config = build_config("demo", "tiny", {"seed": seed, "model.fusion_layers": layers}).to_flat_dict()
        failure = None if status == "TERMINATED" else "RuntimeError: lost"
        return TrialRecord(trial_id, "demo", status, config, {"selected/dev/score": dev}, failure)

    # Fusion 1: one seed at 0.6. Fusion 2: two seeds with the same mean. Fusion 3: a failed trial at 0.9.
    trials = [trial("f1", 1, 0, 0.6), trial("f2a", 2, 0, 0.5), trial("f2b", 2, 1, 0.7), trial("f3", 3, 0, 0.9, "ERROR")]
    ranked = rank_configurations(trials)
    assert [configuration.config["model.fusion_layers"] for configuration in ranked] == [2, 1]
    assert ranked[0].mean("selected/dev/score") == pytest.approx(0.6)
    assert ranked[0].best_trial().trial_id == "f2b"


def test_configurations_are_compared_at_equal_n(report: dict[str, Path]) -> None:
    def trial(trial_id: str, layers: int, seed: int, dev: float) -> TrialRecord:
        config = build_config("demo", "tiny", {"seed": seed, "model.fusion_layers": layers}).to_flat_dict()
        return TrialRecord(trial_id, "demo", "TERMINATED", config, {"selected/dev/score": dev})

    # Fusion 1 and 3 ran on two seeds; fusion 2 and 4 on one (their second seed failed). A plain mean would put
    # fusion 2's single lucky seed first.
    trials = [
        trial("a", 1, 0, 0.55), trial("b", 1, 1, 0.65),
        trial("c", 2, 0, 0.90),
        trial("d", 3, 0, 0.60), trial("e", 3, 1, 0.70),
        trial("f", 4, 1, 0.70),
    ]  # fmt: skip
    ranked = rank_configurations(trials)
    assert [configuration.config["model.fusion_layers"] for configuration in ranked] == [3, 1, 2, 4]
    # The rule is stated where the ranking is shown.
    for folder in report.values():
        assert "compared at equal n" in (folder / "summary.md").read_text()
        assert "compared at equal n" in (folder / "report.html").read_text()


def test_command_line_writes_the_report_and_rejects_an_unknown_experiment(
    tmp_path: Path, store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "cli"
    code = main(["--tracking-uri", store["uri"], "--experiment", "clmlf/confirm/mvsa-single", "--output", str(output)])
    assert code == 0
    assert (output / "mvsa-single" / "best_config.json").exists()
    assert str(output / "mvsa-single" / "report.html") in capsys.readouterr().out
    assert main(["--tracking-uri", store["uri"], "--experiment", "clmlf/nope/demo", "--output", str(output)]) == 2
    assert "clmlf/nope/demo" in capsys.readouterr().err
    missing = tmp_path / "elsewhere" / "mlflow.db"
    assert main(["--tracking-uri", f"sqlite:///{missing}", "--output", str(output)]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not missing.exists()


CHECKER = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  const table = document.getElementById("best-config");
  document.body.dataset.bestConfigRows = table ? table.querySelectorAll("tbody tr").length : -1;
  document.body.dataset.checked = "yes";
});
</script>
"""


def test_page_renders_in_headless_chromium(tmp_path: Path, report: dict[str, Path]) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; CI installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    checked = tmp_path / "checked.html"
    checked.write_text((report["demo"] / "report.html").read_text().replace("</body>", CHECKER + "</body>"))
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        checked.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, f"no DOM dumped; chromium said: {result.stderr[-2000:]}"
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attributes.get("checked") == "yes"
    assert int(attributes["images-total"]) >= 3
    assert attributes["images-loaded"] == attributes["images-total"]
    assert int(attributes["best-config-rows"]) == len(CONFIG_KEYS)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_a_data_set_without_a_completed_trial_still_gets_its_summary_and_page(tmp_path: Path) -> None:
    study = PlannedStudy("search", "demo", "search-broken")
    study.trials.append(PlannedTrial("dead0_00000", {}, 0, error="ValueError: model.heads: 384 is not divisible by 5"))
    study.trials.append(PlannedTrial("dead0_00001", {"model.fusion_layers": 2}, 0, dev_score=math.nan))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_study(MlflowClient(uri), study, tmp_path / "artifacts")
    folders = write_study_report(tmp_path / "out", tracking_uri=uri, experiment_names=[study.experiment])
    folder = folders["demo"]
    assert not (folder / "best_config.json").exists()
    summary_md = (folder / "summary.md").read_text()
    assert "not divisible by 5" in summary_md
    assert "selected/dev/score is nan" in summary_md
    assert 'id="best-config"' in (folder / "report.html").read_text()
    assert _csv_rows(folder / "summary.csv") == []


def test_a_store_without_trials_is_an_error_not_an_empty_report(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("clmlf/search/demo")
    with pytest.raises(ResultsError, match="no trials found"):
        write_study_report(tmp_path / "out", tracking_uri=uri)
    assert not (tmp_path / "out").exists()


def test_each_configuration_has_its_interval_and_its_paired_comparison_with_the_best(report: dict[str, Path]) -> None:
    rows = {row["config_id"]: row for row in _csv_rows(report["demo"] / "summary.csv")}
    ranked = [row for row in _csv_rows(report["demo"] / "summary.csv")]
    best, fusion_one = ranked[0], ranked[1]
    assert best["model.fusion_layers"] == "2" and fusion_one["model.fusion_layers"] == "1"
    low, high = stats.t.interval(0.95, 2, loc=0.71, scale=statistics.stdev([0.70, 0.72, 0.71]) / math.sqrt(3))
    assert (float(best["dev_score_ci_low"]), float(best["dev_score_ci_high"])) == pytest.approx((low, high))
    assert (best["vs_best"], best["top_group"], best["vs_best_p_holm"]) == ("best", "True", "")
    # Fusion 1 against fusion 2 on their three shared seeds: best minus it is 0.10, 0.10, -0.05 seed by seed. It is
    # the only configuration with two or more shared seeds, so Holm's family has one member and leaves p as it is.
    p_value = stats.ttest_rel([0.70, 0.72, 0.71], [0.60, 0.62, 0.76]).pvalue
    assert int(fusion_one["vs_best_shared_seeds"]) == 3
    assert float(fusion_one["vs_best_difference"]) == pytest.approx(0.05)
    low, high = stats.t.interval(0.95, 2, loc=0.05, scale=statistics.stdev([0.10, 0.10, -0.05]) / math.sqrt(3))
    assert (float(fusion_one["vs_best_ci_low"]), float(fusion_one["vs_best_ci_high"])) == pytest.approx((low, high))
    assert float(fusion_one["vs_best_p"]) == pytest.approx(p_value)
    assert float(fusion_one["vs_best_p_holm"]) == pytest.approx(p_value)
    assert (fusion_one["vs_best"], fusion_one["top_group"]) == ("not separated", "True")
    # A configuration on one seed shares at most one with the best: no test, no interval, never dropped.
    single = next(row for row in rows.values() if row["model.fusion_layers"] == "3")
    assert (single["vs_best"], single["top_group"], single["dev_score_ci_low"]) == (
        "fewer than 2 shared seeds", "True", "")  # fmt: skip
    summary_md = (report["demo"] / "summary.md").read_text()
    page = (report["demo"] / "report.html").read_text()
    for column in ("dev score 95% CI", "best − this [95% CI]", "Holm p", "vs best"):
        assert column in summary_md and html.escape(column) in page
    assert f"{p_value:.3f}" in summary_md


def test_best_config_names_the_top_group_and_says_how_sure_the_study_is(report: dict[str, Path]) -> None:
    document = json.loads((report["demo"] / "best_config.json").read_text())
    best = document["best"]
    assert (best["n"], best["seeds"], best["best_seed"]) == (3, [0, 1, 2], 1)
    assert best["mean"] == pytest.approx(0.71)
    assert best["ci_low"] < 0.70 and best["ci_high"] > 0.72
    # Nothing is separated from the best: every configuration is in the top group, the best first.
    rows = _csv_rows(report["demo"] / "summary.csv")
    assert [entry["config_id"] for entry in document["top_group"]] == [row["config_id"] for row in rows]
    conclusion = document["conclusion"]
    assert conclusion.startswith(f"{best['label']} has the best mean dev score (0.710 [")
    assert "3 seeds)" in conclusion and "is not separated from it" in conclusion
    assert "cannot be compared with it (fewer than two shared seeds)" in conclusion
    # The same sentence wherever the result is shown.
    assert json.loads((report["demo"] / "best_config.provenance.json").read_text())["conclusion"] == conclusion
    assert json.loads((report["demo"] / "comparison.json").read_text())["conclusion"] == conclusion
    assert conclusion in (report["demo"] / "summary.md").read_text()
    assert html.escape(conclusion) in (report["demo"] / "report.html").read_text()
    # A single configuration has nothing to be compared with.
    single = json.loads((report["mvsa-single"] / "best_config.json").read_text())
    assert "is the only configuration" in single["conclusion"] and len(single["top_group"]) == 1


def test_the_figure_3_bands_are_the_confidence_intervals_and_the_legend_says_so() -> None:
    trials = []
    for layers, scores in {1: [0.60, 0.62, 0.76], 2: [0.70, 0.72, 0.71], 3: [0.68]}.items():
        for seed, score in enumerate(scores):
            config = build_config("demo", "tiny", {"seed": seed, "model.fusion_layers": layers}).to_flat_dict()
            metrics = {
                f"selected/{split}/{name}": score for split in ("dev", "test") for name in ("acc", "f1_weighted")
            }
            trials.append(TrialRecord(f"{layers}{seed}", "demo", "TERMINATED", config, metrics))
    figure = layer_curves_figure("demo", trials, "model.fusion_layers")
    assert figure is not None and layer_curves_figure("demo", trials, "model.image_layers") is None
    axis = figure.axes[0]
    assert BAND_LABEL in [text.get_text() for text in axis.get_legend().get_texts()]
    assert "95% confidence interval" in BAND_LABEL
    band = next(collection for collection in axis.collections if len(collection.get_paths()))
    vertices = np.concatenate([path.vertices for path in band.get_paths()])
    for layers, scores in {1: [0.60, 0.62, 0.76], 2: [0.70, 0.72, 0.71]}.items():
        low, high = stats.t.interval(
            0.95, len(scores) - 1, loc=statistics.fmean(scores), scale=statistics.stdev(scores) / math.sqrt(3)
        )
        at = vertices[np.isclose(vertices[:, 0], layers), 1]
        assert at.min() == pytest.approx(low) and at.max() == pytest.approx(high)
    # The single-seed point has no interval, so the band stops before it.
    assert not np.isclose(vertices[:, 0], 3).any()


REPORT_MODULES = ("report", "report.cli", "report.files", "report.page",
                  "report.figures", "report.paper", "report.analyses",
                  "results.ranking", "results.comparison", "tracking.mlflow_runs",
                  "results.tune_folder")  # fmt: skip


def test_building_a_report_imports_neither_the_trainer_nor_torch_nor_the_studies(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # In a fresh interpreter: import every module of the report and the results layer, build a report (lazy imports
    # included), and list what was imported.
    experiments = [study.experiment for study in store["studies"].values()]
    program = (
        "import json, sys\n"
        f"import {', '.join(REPORT_MODULES)}\n"
        "from report import write_study_report\n"
        f"write_study_report({str(tmp_path / 'out')!r}, tracking_uri={store['uri']!r},\n"
        f"                   experiment_names={experiments!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=environment,
                               cwd=tmp_path, timeout=300, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    imported = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert (tmp_path / "out" / "demo" / "report.html").is_file()
    assert "report.files" in imported and "results.comparison" in imported
    # Ray is read (Tune's folders, through ray.tune.ExperimentAnalysis); nothing that trains or runs a model is.
    assert not {"clmlf.train", "clmlf.model", "clmlf.evaluate", "clmlf.analysis", "torch"} & imported
    assert not [name for name in imported if name == "studies" or name.startswith(("studies.", "analyses"))]


def test_a_report_without_analysis_files_renders_and_names_the_command(report: dict[str, Path]) -> None:
    page = (report["demo"] / "report.html").read_text()
    section = page[page.index("The best model&#x27;s analyses") :]
    section = section[: section.index("<h2>")] if "<h2>" in section else section
    assert "Not drawn" in section
    assert html.escape("python -m analyses <study folder>") in section
    assert "case-study" not in page


def test_the_report_shows_analyses_read_from_their_files(store: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "study" / "analysis"
    folder.mkdir(parents=True)
    images = {}
    for index, name in enumerate(("case_study", "attention", "clusters")):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (index * 80, 10, 10)).save(buffer, format="PNG")
        images[name] = buffer.getvalue()
        (folder / f"{name}.png").write_bytes(images[name])
    case = {"id": "post-17", "text": "a sunny day", "gold": "positive", "full": "positive", "text-only": "neutral"}
    analysis = {"dataset": "mvsa-single", "split": "test", "posts": 450, "accuracy": {"full": 0.75, "text-only": 0.7},
                "models": {"full": "trial_f1a2b_00000/checkpoint_000001", "text-only": "analysis/text-only"},
                "case_study": [case]}  # fmt: skip
    (folder / "analysis.json").write_text(json.dumps(analysis))
    output = tmp_path / "out"
    assert main(["--tracking-uri", store["uri"], "--experiment", "clmlf/confirm/mvsa-single", "--analysis",
                 str(folder), "--output", str(output)]) == 0  # fmt: skip
    page = (output / "mvsa-single" / "report.html").read_text()
    assert 'id="case-study"' in page and "post-17" in page and "a sunny day" in page
    for png in images.values():
        assert base64.b64encode(png).decode("ascii") in page
    assert "1 of 450 test posts" in page and "Not drawn" not in page
