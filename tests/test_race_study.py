"""Racing seeds (--seeds auto) on a real local Ray cluster: the race's options refused before Ray starts, a race
whose failing configuration leaves it, and a race whose driver exits after a round and resumes there, keeping to
--max-concurrent."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_trials_csv, result_rows, study_arguments

from results import storage
from results.race import MAX_SEEDS, ONE_LEFT
from studies import ablation, layer_sweep
from studies.race_searcher import EXIT_AFTER_ROUND_VARIABLE, RACE_EXIT_STATUS

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "extra", "named"),
    [
        (layer_sweep, ["--initial-seeds", "4"], "--initial-seeds: races only; add --seeds auto"),
        (ablation, ["--seeds", "3", "--budget", "10"], "--budget: races only"),
        (layer_sweep, ["--seeds", "auto", "--initial-seeds", "1"], "--initial-seeds 1"),
        (layer_sweep, ["--seeds", "auto", "--budget", "5"], "--budget 5: the first round alone runs 9 trials"),
        (ablation, ["--seeds", "auto", "--variants", "full"], "at least two configurations"),
    ],
)
def test_race_options_that_cannot_work_are_refused_before_ray_starts(tmp_path, capsys, script, extra, named):
    assert script.main(study_arguments(tmp_path, "refused", *extra)) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "tune").exists()


@pytest.mark.slow
def test_a_configuration_whose_every_trial_fails_leaves_the_race_and_the_race_ends(tmp_path, ray_cluster, capfd):
    # image-only meets a missing weights file when its model is built (text-only never builds the image encoder):
    # its trials fail, and the race must neither wait for them nor keep it.
    arguments = study_arguments(
        tmp_path,
        "failing",
        "--address", ray_cluster.address,
        "--variants", "text-only,image-only",
        "--set", "model.image_weights=/nonexistent/weights.pth",
        "--seeds", "auto", "--initial-seeds", "2", "--max-seeds", "4",
    )  # fmt: skip
    assert ablation.main(arguments) == 0
    printed = capfd.readouterr()
    race = json.loads((tmp_path / "tune" / "failing" / storage.RACE_FILE).read_text())
    image_only = next(index for index, point in enumerate(race["configurations"])
                      if point["model.variant"] == "image-only")  # fmt: skip
    assert race["ended"] == ONE_LEFT and race["trials_started"] == 4 and race["trials_missing"] == 2
    assert [(drop["configuration"], drop["round"], drop["seeds"], drop["adjusted_p"]) for drop in race["drops"]] == [
        (image_only, 1, 0, None)
    ]
    assert {entry["reason"] for entry in race["rounds"][0]["missing"]} == {"the trial failed"}
    assert "2 trial(s) came back without a score" in printed.err
    rows = read_trials_csv(tmp_path / "tune" / "failing")
    assert sorted(row["status"] for row in rows) == ["ERROR", "ERROR", "TERMINATED", "TERMINATED"]
    page = next((tmp_path / "tune" / "failing" / storage.REPORT_FOLDER).glob("*/report.html")).read_text()
    assert "Racing seeds" in page and "no trial succeeded" not in page and "2 trial(s) failed" in page


def started_seed(trial_folder: Path) -> int | None:
    # The driver may exit while Tune writes the next trial's params.json: that trial has no seed on disk yet.
    params = trial_folder / "params.json"
    text = params.read_text() if params.is_file() else ""
    return int(json.loads(text)["seed"]) if text.strip() else None


@pytest.mark.slow
def test_a_race_whose_driver_exits_after_a_round_resumes_there_one_trial_at_a_time(tmp_path, ray_cluster):
    # Three configurations on 2 initial seeds, at most 3: the driver exits once round 1 is closed and Tune saved its
    # state since, which happens while the next round's first trial runs.
    arguments = study_arguments(
        tmp_path,
        "raced",
        "--address", ray_cluster.address,
        "--seeds", "auto", "--initial-seeds", "2", "--max-seeds", "3",
        "--max-concurrent", "1",
    )  # fmt: skip
    script = str(PROJECT_ROOT / "studies" / "layer_sweep.py")
    experiment = tmp_path / "tune" / "raced"
    first = subprocess.run(
        [sys.executable, script, *arguments], env={**os.environ, EXIT_AFTER_ROUND_VARIABLE: "1"},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert first.returncode == RACE_EXIT_STATUS, first.stdout[-3000:] + first.stderr[-3000:]
    before = json.loads((experiment / storage.RACE_FILE).read_text())
    assert [round_["number"] for round_ in before["rounds"]] == [1, 2] and before["ended"] is None
    round_one = {path.name: result_rows(path) for path in experiment.glob("trial_*") if started_seed(path) in (0, 1)}
    assert len(round_one) == 6

    resumed = subprocess.run(
        [sys.executable, script, "--resume", "--name", "raced", "--storage-path", str(tmp_path / "tune"),
         "--address", ray_cluster.address],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    printed = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, printed[-3000:]
    assert "will be ignored" not in printed
    race = json.loads((experiment / storage.RACE_FILE).read_text())
    # Round 1 as it was decided before the exit; round 2 ran its one seed for the survivors, and nothing twice.
    assert race["rounds"][0] == before["rounds"][0]
    survivors = before["rounds"][1]["configurations"]
    assert race["ended"] == MAX_SEEDS and race["trials_started"] == 6 + len(survivors)
    rows = read_trials_csv(experiment)
    assert len(rows) == race["trials_started"] and {row["status"] for row in rows} == {"TERMINATED"}
    points = {(row["model.fusion_layers"], row["model.image_layers"], row["seed"]) for row in rows}
    assert len(points) == len(rows)
    assert {row["seed"] for row in rows} == {"0", "1", "2"}
    for name, results in round_one.items():
        assert result_rows(experiment / name) == results
    # --max-concurrent 1 (saved with the study): no two trials overlapped.
    intervals = sorted(
        (rows_[0]["trial/started_at"], rows_[-1]["trial/reported_at"])
        for rows_ in (result_rows(path) for path in experiment.glob("trial_*"))
    )
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(intervals))
    page = next((experiment / storage.REPORT_FOLDER).glob("*/report.html")).read_text()
    assert "Racing seeds" in page and f"{race['trials_started']} trial(s) in 2 round(s)" in page
    # --no-analyses was saved with the study: the resumed driver drew none either, and the page says how to.
    assert f"analysis: not drawn (--no-analyses); draw it with: python -m analyses {experiment}" in printed
    assert not (experiment / storage.ANALYSIS_FOLDER).exists() and "Not drawn" in page
    # best_config.json names the race's own top group beside the comparison's.
    best = json.loads((experiment / storage.BEST_CONFIG_FILE).read_text())
    assert best["race"]["top_group"] == [race["configurations"][index] for index in race["top_group"]]
    assert best["race"]["trials"] == race["trials_started"] and "the race's decision" in printed
