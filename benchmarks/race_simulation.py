"""The race's logic (results/race.py) on simulated configurations with known mean dev scores and seed
noise, no training: how often the truly best configuration ends in the race's top group, and how many trials a race
takes against a fixed grid that runs every configuration on the maximum seeds (judged by the same tests).

A simulated seed moves every configuration alike (data order and initialisation are the seed's: the shared part) and
each configuration by its own noise on top. The default noise is of the size measured on the demo data (8 seeds per
fusion depth: a standard deviation over seeds of 0.025-0.053).

    python benchmarks/race_simulation.py                 # every scenario, 1000 races each (about a minute)
    python benchmarks/race_simulation.py --races 200 --shared-sd 0.02 --own-sd 0.03
    python benchmarks/race_simulation.py --alpha 0.00625   # 0.05 spread over the 8 rounds a race can have
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.race import FINISHED, Race, RaceSettings  # noqa: E402
from results.statistics import compare_with_best, top_group  # noqa: E402

RESULT_FILE = ROOT / "benchmarks" / "results" / "race_simulation.json"
# True mean dev scores of six configurations. demo-like: fusion depths 1-4 as measured on 8 seeds, 5 and 6 below.
SCENARIOS = {
    "demo-like": [0.838, 0.843, 0.824, 0.776, 0.765, 0.750],
    "one clearly best": [0.850, 0.800, 0.800, 0.800, 0.800, 0.800],
    "a ladder of 1-point steps": [0.840, 0.830, 0.820, 0.810, 0.800, 0.790],
    "all equal": [0.800] * 6,
}


def simulate(means: list[float], settings: RaceSettings, shared_sd: float, own_sd: float, rng) -> dict:
    """One race and, on the same draws, the fixed grid on max_seeds seeds."""
    seeds = settings.max_seeds
    scores = np.asarray(means)[:, None] + rng.normal(0, shared_sd, seeds)[None, :]
    scores = scores + rng.normal(0, own_sd, (len(means), seeds))
    race = Race(list(range(len(means))), list(range(seeds)), settings)
    while (trial := race.next_trial()) != FINISHED:
        while trial not in (None, FINISHED):
            configuration, seed = trial
            race.record(configuration, seed, float(scores[configuration, seed]))
            trial = race.next_trial()
        if trial == FINISHED:
            break
    best = [index for index, mean in enumerate(means) if mean == max(means)]
    grid_values = [{seed: float(scores[index, seed]) for seed in range(seeds)} for index in range(len(means))]
    grid_leader = int(np.argmax(scores.mean(axis=1)))
    grid_top = top_group(compare_with_best(grid_values, best=grid_leader, alpha=settings.alpha))
    return {
        "trials": race.started,
        "best_in_top": any(index in race.top_group for index in best),
        "all_best_in_top": all(index in race.top_group for index in best),
        "top_size": len(race.top_group),
        "grid_best_in_top": any(index in grid_top for index in best),
        "grid_all_best_in_top": all(index in grid_top for index in best),
        "grid_top_size": len(grid_top),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--races", type=int, default=1000, help="races per scenario (default 1000)")
    parser.add_argument("--shared-sd", type=float, default=0.02, help="the seed's effect shared by all (0.02)")
    parser.add_argument("--own-sd", type=float, default=0.03, help="each configuration's own seed noise (0.03)")
    parser.add_argument("--initial-seeds", type=int, default=3)
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=RaceSettings().alpha, help="each round's level (0.05)")
    parser.add_argument("--random-seed", type=int, default=2022)
    parser.add_argument("--output", type=Path, default=RESULT_FILE)
    arguments = parser.parse_args()
    settings = RaceSettings(initial_seeds=arguments.initial_seeds, max_seeds=arguments.max_seeds, alpha=arguments.alpha)
    rng = np.random.default_rng(arguments.random_seed)

    started = time.monotonic()
    results = {}
    print(f"{arguments.races} races per scenario; seed noise: shared sd {arguments.shared_sd}, own sd "
          f"{arguments.own_sd}; race: {settings.initial_seeds} initial seeds, at most {settings.max_seeds}, Holm at "
          f"{settings.alpha:.3g}; grid: every configuration on {settings.max_seeds} seeds, the same tests")  # fmt: skip
    print(f"{'scenario':<26} {'best in top group':>18} {'trials':>7} {'grid':>5} {'top size':>9} "
          f"{'grid: best in top':>18}")  # fmt: skip
    for name, means in SCENARIOS.items():
        runs = [simulate(means, settings, arguments.shared_sd, arguments.own_sd, rng) for _ in range(arguments.races)]
        grid_trials = len(means) * settings.max_seeds
        summary = {
            "means": means,
            "best_in_top_group": statistics.fmean(run["best_in_top"] for run in runs),
            # With several equally best configurations: every one of them kept (no false drop at all).
            "every_best_in_top_group": statistics.fmean(run["all_best_in_top"] for run in runs),
            "mean_trials": statistics.fmean(run["trials"] for run in runs),
            "grid_trials": grid_trials,
            "mean_top_group_size": statistics.fmean(run["top_size"] for run in runs),
            "grid_best_in_top_group": statistics.fmean(run["grid_best_in_top"] for run in runs),
            "grid_every_best_in_top_group": statistics.fmean(run["grid_all_best_in_top"] for run in runs),
            "grid_mean_top_group_size": statistics.fmean(run["grid_top_size"] for run in runs),
        }
        results[name] = summary
        print(f"{name:<26} {summary['best_in_top_group']:>18.3f} {summary['mean_trials']:>7.1f} {grid_trials:>5} "
              f"{summary['mean_top_group_size']:>9.2f} {summary['grid_best_in_top_group']:>18.3f}")  # fmt: skip
        if means.count(max(means)) > 1:
            print(f"{'':<26} every equally best one kept: race {summary['every_best_in_top_group']:.3f}, grid "
                  f"{summary['grid_every_best_in_top_group']:.3f}")  # fmt: skip
    output = {
        "races_per_scenario": arguments.races,
        "shared_sd": arguments.shared_sd,
        "own_sd": arguments.own_sd,
        "settings": {"initial_seeds": settings.initial_seeds, "max_seeds": settings.max_seeds, "alpha": settings.alpha},
        "random_seed": arguments.random_seed,
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": results,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(output, indent=2) + "\n")
    print(f"{output['seconds']:.0f} s; written: {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
