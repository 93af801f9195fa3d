"""Racing seeds against a fixed grid on the demo's fusion-depth sweep: the same sweep (fusion layers 1-6, image layers
1) once with `--seeds auto` and once on a fixed 8 seeds, one after the other on this machine; the trials each used,
the top group of each (configurations not separated from the best, paired t-tests with Holm's correction at 5%), and
whether they agree. The goal: the same top group at no more than half the trials.

    python benchmarks/race_vs_grid.py                  # both, then benchmarks/results/race_vs_grid.json
    python benchmarks/race_vs_grid.py --fixed-seeds 4 --fusion-layers 1,2,3

The studies' folders and their MLflow store stay under runs/race_vs_grid-<time>/. The JSON also keeps the grid's
per-configuration results (n, mean, standard deviation, 95% interval, the paired comparison with the best).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.statistics import compare_with_best, estimate, top_group  # noqa: E402

SCORE = "selected/dev/score"
DEPTH = "model.fusion_layers"
RESULT_FILE = ROOT / "benchmarks" / "results" / "race_vs_grid.json"
# Variables that would point a run at another cluster or tracking store than its own.
CLEARED_VARIABLES = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "CLMLF_TRACKING_URI")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fusion-layers", default="1,2,3,4,5,6")
    parser.add_argument("--fixed-seeds", type=int, default=8)
    parser.add_argument("--race-options", default="", help="extra options of the race, e.g. '--max-seeds 8'")
    parser.add_argument("--output", type=Path, default=RESULT_FILE)
    arguments = parser.parse_args()

    folder = ROOT / "runs" / f"race_vs_grid-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    common = ["--fusion-layers", arguments.fusion_layers, "--image-layers", "1", "--storage-path", str(folder / "tune"),
              "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]  # fmt: skip
    race_run = run_study("race", [*common, "--seeds", "auto", *arguments.race_options.split()], folder)
    grid_run = run_study("grid", [*common, "--seeds", str(arguments.fixed_seeds)], folder)

    race_state = json.loads((folder / "tune" / "race" / "race.json").read_text())
    race_scores = {
        race_state["configurations"][int(index)][DEPTH]: {int(seed): value for seed, value in by_seed.items()}
        for index, by_seed in race_state["scores"].items()
    }
    race_top = sorted(race_state["configurations"][index][DEPTH] for index in race_state["top_group"] or [])
    grid = grid_results(folder / "tune" / "grid" / "trials.csv")
    grid_top = sorted(entry["fusion_layers"] for entry in grid["configurations"] if entry["in_top_group"])
    result = {
        "command": "python studies/layer_sweep.py --fusion-layers "
        f"{arguments.fusion_layers} --image-layers 1, with --seeds auto {arguments.race_options}".strip()
        + f" and with --seeds {arguments.fixed_seeds}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
        "studies": str(folder),
        "race": {
            "trials": race_state["trials_started"],
            "trials_missing": race_state["trials_missing"],
            "wall_s": race_run,
            "settings": race_state["settings"],
            "rounds": len(race_state["rounds"]),
            "ended": race_state["ended"],
            "drops": [
                {
                    "fusion_layers": race_state["configurations"][drop["configuration"]][DEPTH],
                    "round": drop["round"],
                    "after_seeds": drop["seeds"],
                    "adjusted_p": drop["adjusted_p"],
                    "difference_to_leader": drop["difference"],
                }
                for drop in race_state["drops"]
            ],
            "top_group": race_top,
            "scores": {str(depth): scores for depth, scores in race_scores.items()},
        },
        "grid": {"trials": grid["trials"], "wall_s": grid_run, "seeds": arguments.fixed_seeds, **grid},
        "same_top_group": race_top == grid_top,
        "race_top_group_within_grid_top_group": set(race_top) <= set(grid_top),
        "trials_ratio": race_state["trials_started"] / grid["trials"],
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print_result(result)
    print(f"\nwritten: {arguments.output}")
    return 0


def run_study(name: str, options: list[str], folder: Path) -> float:
    """One layer sweep as a user runs it; returns its wall-clock seconds."""
    environment = {key: value for key, value in os.environ.items() if key not in CLEARED_VARIABLES}
    environment["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, str(ROOT / "studies" / "layer_sweep.py"), "--name", name, *options]
    print(f"{time.strftime('%H:%M:%S')} {name}: {' '.join(command[1:])} (load {load_average()})", flush=True)
    started = time.monotonic()
    with (folder / f"{name}.log").open("w") as log:
        completed = subprocess.run(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    print(f"{time.strftime('%H:%M:%S')} {name}: exit {completed.returncode} after {elapsed:.0f} s "
          f"(load {load_average()}); log {folder / f'{name}.log'}", flush=True)  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed (exit {completed.returncode}); see {folder / f'{name}.log'}")
    return round(elapsed, 1)


def grid_results(trials_csv: Path) -> dict:
    """Per fusion depth: n, mean, std, 95% t interval, and the paired comparison with the best (Holm)."""
    with trials_csv.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["status"] == "TERMINATED" and row.get(SCORE)]
    scores: dict[int, dict[int, float]] = {}
    for row in rows:
        scores.setdefault(int(row[DEPTH]), {})[int(row["seed"])] = float(row[SCORE])
    depths = sorted(scores)
    means = {depth: estimate(list(scores[depth].values())).mean for depth in depths}
    best = max(depths, key=lambda depth: means[depth])
    comparisons = compare_with_best([scores[depth] for depth in depths], best=depths.index(best))
    top = set(top_group(comparisons))
    configurations = []
    for position, depth in enumerate(depths):
        interval = estimate(list(scores[depth].values()))
        comparison = comparisons[position]
        configurations.append(
            {
                "fusion_layers": depth,
                "n": interval.n,
                "mean": interval.mean,
                "std": number(interval.std),
                "ci95": [number(interval.low), number(interval.high)],
                "difference_to_best": None if comparison is None else number(comparison.difference),
                "difference_ci95": None if comparison is None else [number(comparison.low), number(comparison.high)],
                "p_value": None if comparison is None else number(comparison.p_value),
                "adjusted_p": None if comparison is None else number(comparison.adjusted_p),
                "in_top_group": position in top,
                "scores": {str(seed): value for seed, value in sorted(scores[depth].items())},
            }
        )
    return {"trials": len(rows), "best": best, "configurations": configurations}


def print_result(result: dict) -> None:
    race, grid = result["race"], result["grid"]
    print(f"\nrace: {race['trials']} trials in {race['rounds']} rounds, {race['wall_s']:.0f} s; ended: {race['ended']}")
    for drop in race["drops"]:
        p = "failed" if drop["adjusted_p"] is None else f"p = {drop['adjusted_p']:.3g}"
        print(f"  dropped {drop['fusion_layers']} fusion layer(s) in round {drop['round']} after "
              f"{drop['after_seeds']} seeds ({p})")  # fmt: skip
    print(f"  top group (fusion layers): {race['top_group']}")
    print(f"grid: {grid['trials']} trials on {grid['seeds']} seeds, {grid['wall_s']:.0f} s")
    print("  fusion  n  mean    std     95% interval      best - it  p (Holm)  top group")
    for entry in grid["configurations"]:
        low, high = entry["ci95"]
        difference = "" if entry["difference_to_best"] is None else f"{entry['difference_to_best']:+.4f}"
        adjusted = "" if entry["adjusted_p"] is None else f"{entry['adjusted_p']:.3g}"
        top = "yes" if entry["in_top_group"] else "no"
        print(f"  {entry['fusion_layers']:>6} {entry['n']:>2}  {entry['mean']:.4f}  {entry['std']:.4f}  "
              f"[{low:.4f}, {high:.4f}]  {difference:>9}  {adjusted:>8}  {top}")  # fmt: skip
    print(f"same top group: {result['same_top_group']}; the race used {result['trials_ratio']:.2f} of the grid's "
          "trials")  # fmt: skip


def number(value: float) -> float | None:
    return None if math.isnan(value) else value


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
