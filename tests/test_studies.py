"""The study scripts end to end on a real local multi-node Ray cluster (smoke mode, tiny preset): placement on
nodes and GPUs, the search space reaching the trainer, a failing trial, a killed and resumed study, and bad
input refused before Ray starts."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path

import pytest
import ray
import torch
from conftest import read_trials_csv, result_rows, start_logged, stop_process_group, study_arguments

from clmlf.config import TrainConfig, build_config, load_config_file
from results import storage
from results.tune_folder import read_tune_trials
from studies import ablation, cli, confirm, layer_sweep, search, trainable
from tracking.mlflow_runs import child_runs, read_mlflow_trials

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMOKE_EPOCHS = cli.SMOKE_OVERRIDES["frozen_text_epochs"] + cli.SMOKE_OVERRIDES["finetune_epochs"]


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(path for path in experiment.glob("trial_*") if path.is_dir())


def parent_run_id(experiment: Path) -> str:
    return json.loads((experiment / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]


@pytest.mark.parametrize(
    ("script", "extra", "named"),
    [
        (layer_sweep, ["--dataset", "no-such-set"], "--dataset"),
        (layer_sweep, ["--fusion-layers", "0,1"], "model.fusion_layers"),
        (layer_sweep, ["--set", "model.image_layers=-1"], "model.image_layers"),
        (layer_sweep, ["--num-samples", "4"], "--num-samples"),
        (search, ["--search-keys", "temperature", "--set", "temperature=0.1"], "search space is empty"),
        (search, ["--grace-period", "1"], "--grace-period"),
        (ablation, ["--variants", "mlf,no-such-variant"], "--variants"),
    ],
)
def test_bad_arguments_are_refused_before_ray_starts(tmp_path, capsys, script, extra, named):
    assert script.main(study_arguments(tmp_path, "refused", *extra)) == 2
    assert named in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (tmp_path / "tune").exists()


def test_a_data_root_without_the_data_set_is_refused(tmp_path, capsys):
    empty_root = tmp_path / "data"
    empty_root.mkdir()
    arguments = study_arguments(tmp_path, "refused", "--dataset", "mvsa-single", "--data-root", str(empty_root))
    assert layer_sweep.main(arguments) == 2
    error = capsys.readouterr().err
    assert "--data-root" in error and str(empty_root) in error
    assert not ray.is_initialized()


def test_the_sweep_runs_the_shared_point_once():
    pairs = layer_sweep.layer_pairs([1, 2, 3], [1, 2], fixed_fusion=2, fixed_image=1, grid=False)
    assert pairs == [(1, 1), (2, 1), (3, 1), (2, 2)]
    assert len(layer_sweep.layer_pairs([1, 2, 3], [1, 2], 2, 1, grid=True)) == 6


def test_ablation_points_are_the_table3_rows_with_every_changed_key_set():
    base = build_config("demo", "demo").to_flat_dict()
    points = ablation.table3_points(base, ["text-only", "image-only", "full"], seeds=[0, 1])
    assert [(point["model.variant"], point["seed"]) for point in points] == [
        (row, seed) for row in ("text-only", "image-only", "full") for seed in (0, 1)
    ]
    # Tune draws a key a point lacks from the other points' values: every point must set the same keys.
    assert len({tuple(sorted(point)) for point in points}) == 1
    by_row = {point["model.variant"]: TrainConfig.from_flat_dict({**base, **point}) for point in points}
    epochs = by_row["full"].epochs
    assert by_row["text-only"].frozen_text_epochs == 0 and by_row["text-only"].finetune_epochs == epochs
    assert not by_row["image-only"].model.freeze_image_encoder and by_row["image-only"].model.image_layers == 0
    # The multimodal rows change the variant alone (the demo preset's own variant is full).
    mlf = ablation.table3_points(base, ["mlf"], seeds=[0])[0]
    changed = {key for key, value in {**base, **mlf}.items() if base[key] != value}
    assert changed == {"model.variant"}
    full = by_row["full"].to_flat_dict()
    assert {key for key, value in full.items() if base[key] != value} <= {"seed"}


def test_a_study_on_the_original_preset_runs_uncached_and_says_so_once(tmp_path, capsys):
    parser = cli.study_parser("layer_sweep", "doc")
    arguments = cli.parse_arguments(parser, ["--preset", "original", "--name", "x"], "layer_sweep")
    base = cli.base_config(arguments)
    assert base["feature_cache"] is False and base["frozen_encoder_mode"] == "train"
    assert capsys.readouterr().err.count("without the feature cache") == 1
    assert cli.base_config(cli.parse_arguments(parser, ["--name", "x"], "layer_sweep"))["feature_cache"] is True
    asked = cli.parse_arguments(parser, ["--preset", "original", "--set", "feature_cache=true"], "layer_sweep")
    with pytest.raises(cli.StudyInputError, match="frozen_encoder_mode"):
        cli.base_config(asked)


def first_rung(scheduler) -> int:
    """ASHA's first rung: the earliest epoch at which it may stop a trial, the end of the grace period."""
    return min(milestone for milestone, _ in scheduler._brackets[0]._rungs)


def test_the_scheduler_never_judges_inside_the_text_frozen_phase():
    base = build_config("demo", "demo", {"frozen_text_epochs": 3, "finetune_epochs": 2}).to_flat_dict()
    frozen = base["frozen_text_epochs"]
    scheduler = trainable.phase_aware_scheduler(base)
    assert first_rung(scheduler) == frozen + 1
    assert (scheduler._time_attr, scheduler._metric) == (trainable.EPOCHS_COMPLETED, "dev/score")
    with pytest.raises(cli.StudyInputError, match="--grace-period"):
        trainable.phase_aware_scheduler(base, grace_period=frozen)
    with pytest.raises(cli.StudyInputError, match="only dev metrics"):
        trainable.phase_aware_scheduler(base, metric="test/score")
    with pytest.raises(cli.StudyInputError, match="count epochs"):
        trainable.phase_aware_scheduler(base, time_attr="time_total_s")
    # Without a fine-tuning phase (the demo preset) the text encoder is frozen to the end: only the end judges.
    frozen_only = build_config("demo", "demo", {"frozen_text_epochs": 3, "finetune_epochs": 0}).to_flat_dict()
    assert first_rung(trainable.phase_aware_scheduler(frozen_only)) == 3
    with pytest.raises(cli.StudyInputError, match="--grace-period"):
        trainable.phase_aware_scheduler(frozen_only, grace_period=2)


@pytest.mark.slow
def test_layer_sweep_places_gpu_trials_on_gpu_nodes_and_passes_its_points_to_the_trainer(smoke_sweep, ray_cluster):
    experiment = smoke_sweep / "tune" / "sweep"
    dirs = trial_dirs(experiment)
    # tiny preset: fusion 1 and image 1 fixed; smoke sweeps 1-2 each, the shared point (1, 1) once; two seeds each.
    chosen = set()
    nodes = set()
    processes = set()
    for trial_dir in dirs:
        params = json.loads((trial_dir / "params.json").read_text())
        rows = result_rows(trial_dir)
        assert len(rows) == SMOKE_EPOCHS
        for row in rows:
            assert row["trial/node_id"] in ray_cluster.gpu_node_ids
            assert row["trial/device"] == "cpu"
            assert row["config"]["model.fusion_layers"] == params["model.fusion_layers"]
        nodes.add(rows[-1]["trial/node_id"])
        processes.add(rows[-1]["trial/process"])
        # What the trainer itself ran with, as saved in its checkpoint.
        checkpoint = max(trial_dir.glob("checkpoint_*"))
        trained = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)["config"]
        assert (trained["model.fusion_layers"], trained["model.image_layers"], trained["seed"]) == (
            params["model.fusion_layers"],
            params["model.image_layers"],
            params["seed"],
        )
        chosen.add((params["model.fusion_layers"], params["model.image_layers"], params["seed"]))
    assert chosen == {(fusion, image, seed) for fusion, image in [(1, 1), (2, 1), (1, 2)] for seed in (0, 1)}
    assert len(nodes) > 1
    # Four slots (two GPUs, half a GPU each) for six trials: later trials run in the processes that finished trials
    # leave behind.
    assert len(processes) == 4

    rows = read_trials_csv(experiment)
    assert [row["status"] for row in rows] == ["TERMINATED"] * 6
    best = load_config_file(experiment / storage.BEST_CONFIG_FILE)
    # The best configuration by its mean dev score over the two seeds, and in it the seed with the better score.
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        pair = (row["model.fusion_layers"], row["model.image_layers"])
        scores.setdefault(pair, {})[row["seed"]] = float(row["selected/dev/score"])
    best_scores = scores[(str(best.model.fusion_layers), str(best.model.image_layers))]
    assert sum(best_scores.values()) == pytest.approx(max(sum(seeds.values()) for seeds in scores.values()))
    assert best_scores[str(best.seed)] == max(best_scores.values())

    runs = child_runs(f"sqlite:///{smoke_sweep / 'mlflow.db'}", parent_run_id(experiment))
    by_trial = {run.data.tags["clmlf.trial_id"]: run for run in runs}
    assert len(runs) == len(by_trial) == 6
    for trial_dir in dirs:
        params = json.loads((trial_dir / "params.json").read_text())
        run = by_trial[trial_dir.name.removeprefix("trial_")]
        for key in ("model.fusion_layers", "model.image_layers", "seed"):
            assert run.data.params[key] == str(params[key])


def trial_intervals(experiment: Path) -> list[tuple[float, float, str]]:
    """(start, last report, node id) of every trial, from what it reported."""
    intervals = []
    for trial_dir in trial_dirs(experiment):
        rows = result_rows(trial_dir)
        intervals.append((rows[0]["trial/started_at"], rows[-1]["trial/reported_at"], rows[0]["trial/node_id"]))
    return intervals


def most_at_once(intervals: list[tuple[float, float, str]]) -> int:
    """The most intervals that cover one moment."""
    events = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.slow
def test_two_trials_share_each_gpu_never_three_each_on_the_gpu_ray_assigned(smoke_sweep, ray_cluster):
    experiment = smoke_sweep / "tune" / "sweep"
    intervals = trial_intervals(experiment)
    for node in ray_cluster.gpu_node_ids:
        assert most_at_once([interval for interval in intervals if interval[2] == node]) <= 2
    # More trials at once than there are GPUs: they shared them.
    assert most_at_once(intervals) > len(ray_cluster.gpu_node_ids)
    for trial_dir in trial_dirs(experiment):
        for row in result_rows(trial_dir):
            # The GPU Ray assigned reached the trial's process as its CUDA_VISIBLE_DEVICES.
            assert row["trial/gpu_ids"] and row["trial/gpu_ids"] == row["trial/cuda_visible_devices"]


def concurrency_arguments(kind: str, sweep: Path, data_root: Path) -> list[str]:
    """Two quick trials of each study, on the small demo set."""
    return {
        "layer_sweep": ["--fusion-layers", "1,2", "--image-layers", "1", "--seeds", "1"],
        "ablation": ["--variants", "mlf,full", "--seeds", "1"],
        "search": ["--num-samples", "2"],
        "confirm": ["--study", str(sweep), "--top-k", "2", "--seeds", "1"],
    }[kind] + ["--data-root", str(data_root)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["layer_sweep", "ablation", "search", "confirm"])
def test_every_study_keeps_to_max_concurrent(kind, smoke_sweep, small_demo_root, ray_cluster, tmp_path, capfd):
    # Two GPU nodes would run both trials at once; --max-concurrent 1 must run them one after the other.
    script = {"layer_sweep": layer_sweep, "ablation": ablation, "search": search, "confirm": confirm}[kind]
    extra = concurrency_arguments(kind, smoke_sweep / "tune" / "sweep", small_demo_root)
    arguments = study_arguments(tmp_path, "limited", "--address", ray_cluster.address, "--max-concurrent", "1", *extra)
    assert script.main(arguments) == 0
    printed = capfd.readouterr()
    assert "will be ignored" not in printed.out + printed.err
    intervals = trial_intervals(tmp_path / "tune" / "limited")
    assert len(intervals) == 2 and most_at_once(intervals) == 1


@pytest.mark.slow
def test_confirm_reruns_the_best_configurations_on_fresh_seeds(smoke_sweep, ray_cluster, tmp_path):
    sweep = smoke_sweep / "tune" / "sweep"
    arguments = [
        "--study", str(sweep),
        "--top-k", "2",
        "--seeds", "1",
        "--smoke-test",
        "--address", ray_cluster.address,
        "--storage-path", str(tmp_path / "tune"),
        "--name", "confirmed",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    assert confirm.main(arguments) == 0
    # The two configurations with the best mean dev score over the sweep's seeds (ties may pick either).
    scores: dict[tuple[str, str], list[float]] = {}
    for row in read_trials_csv(sweep):
        scores.setdefault((row["model.fusion_layers"], row["model.image_layers"]), []).append(
            float(row["selected/dev/score"])
        )
    means = {pair: statistics.fmean(values) for pair, values in scores.items()}
    rows = read_trials_csv(tmp_path / "tune" / "confirmed")
    confirmed = {(row["model.fusion_layers"], row["model.image_layers"]) for row in rows}
    assert len(confirmed) == 2
    assert min(means[pair] for pair in confirmed) >= max(means[pair] for pair in set(means) - confirmed)
    # The sweep ran seeds 0 and 1: the first fresh seed is 2.
    assert {row["seed"] for row in rows} == {"2"}
    summary = json.loads((tmp_path / "tune" / "confirmed" / confirm.SUMMARY_FILE).read_text())
    assert [entry["fresh_seeds"] for entry in summary] == [[2], [2]]
    assert all(entry["metrics"]["selected/test/acc"]["n"] == 1 for entry in summary)
    for entry in summary:
        pair = (str(entry["config"]["model.fusion_layers"]), str(entry["config"]["model.image_layers"]))
        assert sorted(entry["study_dev"]) == pytest.approx(sorted(scores[pair]))


def first_row(trial_dir: Path) -> dict | None:
    try:
        rows = result_rows(trial_dir)
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being written
        return None
    return rows[0] if rows else None


@pytest.mark.slow
def test_a_final_error_fails_its_trial_once_and_a_killed_worker_is_retried(tmp_path, ray_cluster):
    # image-only meets a missing weights file when its model is built: EncoderUnavailable, which no retry can fix
    # (text-only never builds the image encoder). text-only's worker process is killed after its first epoch, as a
    # lost node takes it: that is retried from the trial's checkpoint.
    arguments = study_arguments(
        tmp_path,
        "faulty",
        "--address", ray_cluster.address,
        "--variants", "text-only,image-only",
        "--set", "model.image_weights=/nonexistent/weights.pth",
        "--set", "finetune_epochs=3",
    )  # fmt: skip
    experiment = tmp_path / "tune" / "faulty"
    log_path = tmp_path / "driver.log"
    driver = start_logged([sys.executable, str(PROJECT_ROOT / "studies" / "ablation.py"), *arguments], log_path,
                          dict(os.environ))  # fmt: skip
    try:
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and driver.poll() is None and time.monotonic() < deadline:
            for trial_dir in trial_dirs(experiment):
                try:
                    params = json.loads((trial_dir / "params.json").read_text())
                except (FileNotFoundError, json.JSONDecodeError):  # Tune makes the folder before it writes the file
                    continue
                row = first_row(trial_dir) if params["model.variant"] == "text-only" else None
                if row is not None:
                    os.kill(int(row["trial/process"].rsplit(":", 1)[1]), signal.SIGKILL)
                    killed = trial_dir.name.removeprefix("trial_")
            time.sleep(0.2)
        assert killed is not None, (
            f"text-only reported no epoch before the study ended:\n{log_path.read_text()[-3000:]}"
        )
        driver.wait(timeout=600)
    finally:
        stop_process_group(driver)
    printed = log_path.read_text()
    assert driver.returncode == 0, printed[-3000:]
    rows = {row["model.variant"]: row for row in read_trials_csv(experiment)}
    assert (rows["text-only"]["status"], rows["text-only"]["retries"]) == ("TERMINATED", "1")
    assert (rows["image-only"]["status"], rows["image-only"]["retries"]) == ("ERROR", "0")
    assert "/nonexistent/weights.pth" in rows["image-only"]["error"]
    assert "failed trials (1)" in printed and rows["image-only"]["trial_id"] in printed
    # The failed trial ran once: Tune recorded one failure.
    error_file = (experiment / f"trial_{rows['image-only']['trial_id']}" / "error.txt").read_text()
    assert error_file.count("Failure # ") == 1
    # The killed trial went on from its checkpoint: every epoch reported once, the last ones by a new process.
    text_rows = result_rows(experiment / f"trial_{killed}")
    assert [row["epoch"] for row in text_rows] == list(range(4))
    assert len({row["trial/process"] for row in text_rows}) == 2

    runs = child_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", parent_run_id(experiment))
    tags = {run.data.tags["clmlf.trial_id"]: (run.info.status, run.data.tags) for run in runs}
    failed_status, failed_tags = tags[rows["image-only"]["trial_id"]]
    assert failed_status == "FAILED" and failed_tags["clmlf.status"] == "ERROR"
    assert "EncoderUnavailable" in failed_tags["clmlf.error"] and failed_tags["clmlf.retries"] == "0"
    assert tags[killed][0] == "FINISHED" and tags[killed][1]["clmlf.retries"] == "1"

    # Read back, from the Tune folder and from MLflow alike: the same statuses, retries and errors.
    logged = {trial.trial_id: trial for trial in read_mlflow_trials(f"sqlite:///{tmp_path / 'mlflow.db'}")}
    for trial in read_tune_trials(experiment):
        assert (trial.status, trial.retries, trial.completed) == (logged[trial.trial_id].status,
                                                                   logged[trial.trial_id].retries,
                                                                   logged[trial.trial_id].completed)  # fmt: skip
        assert trial.error == logged[trial.trial_id].error
    failed_record = logged[rows["image-only"]["trial_id"]]
    assert "/nonexistent/weights.pth" in failed_record.failure and "Failure #" not in failed_record.failure


@pytest.mark.slow
def test_the_live_view_shows_dev_score_epoch_and_phase_first_and_names_the_best_trial(smoke_search):
    # Every update of the live view in the search's printed output: a status line, the best trial so far, a table.
    lines = smoke_search.log.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("trials: ")]
    assert starts, smoke_search.log[-3000:]
    for start in starts:
        assert lines[start + 1].startswith("best so far: ")
        assert lines[start + 2].split()[:6] == ["trial", "status", "dev", "score", "epoch", "phase"]
    # At the end: every trial finished both phases, and the best one is the trial with the best dev score.
    final = lines[starts[-1] : starts[-1] + 3 + search.SMOKE_SAMPLES]
    rows = read_trials_csv(smoke_search.folder)
    best_score = max(float(row["selected/dev/score"]) for row in rows)
    best_ids = {row["trial_id"] for row in rows if float(row["selected/dev/score"]) == best_score}
    assert re.match(r"best so far: trial (\S+) \(", final[1]).group(1) in best_ids
    assert f"dev score {best_score:.4f}" in final[1]
    shown = {}
    for row in final[3:]:
        trial_id, status, dev_score, epoch, phase = row.split()[:5]
        assert (status, epoch, phase) == ("TERMINATED", f"{SMOKE_EPOCHS}/{SMOKE_EPOCHS}", "fine-tune")
        shown[trial_id] = float(dev_score)
    # The dev score column is each trial's last epoch's dev score.
    last_scores = {row["trial_id"]: result_rows(smoke_search.folder / f"trial_{row['trial_id']}")[-1] for row in rows}
    assert shown == pytest.approx({trial_id: last["dev/score"] for trial_id, last in last_scores.items()}, abs=1e-4)
    # Test numbers are not shown while trials run.
    assert "test" not in "\n".join(lines[start + 2] for start in starts)
