"""Do a study's best configurations hold up on fresh seeds, and what are their test numbers?

Question: a study ranks configurations on dev over a few seeds, so its winner is partly luck. This re-runs the
top --top-k configurations of a finished study (ranked by their mean selected/dev/score over the seeds they ran
on, compared at equal n) on --seeds N fresh seeds that the study never used, and reports dev and test mean and
spread for each.
Test numbers for a report come from here, never from the study that chose the configurations.

Data: the study's (its configs name the data set); --data-root points at the data on this machine, --set
overrides a setting of every configuration (e.g. device=cuda).

Run:
  python studies/confirm.py --study runs/tune/layer_sweep-demo-20260101-120000 --top-k 3 --seeds 5
  python studies/confirm.py --study runs/tune/layer_sweep-demo-20260101-120000 --top-k 4 --seeds auto
  python studies/confirm.py --parent-run 5ad9c4ccf7a349dc99e3b10d905eccc4 --tracking-uri http://mlflow:5000
  python studies/confirm.py --study runs/tune/search-demo-... --smoke-test      # one tiny trial (CI)
"""

from __future__ import annotations

import math
import sys
from typing import Any

from results import storage
from results.ranking import Configuration, rank_configurations, short, varying_keys
from results.record import RANKING_METRIC, TEST_METRICS, ResultsError, TrialRecord
from studies import cli

KIND = "confirm"
SUMMARY_FILE = "confirm_summary.json"
PLAN_FILE = "confirm_plan.json"
REPORTED_METRICS = (RANKING_METRIC, *TEST_METRICS)


def main(argv: list[str] | None = None) -> int:
    parser = cli.study_parser(KIND, __doc__)
    parser.set_defaults(dataset=None, preset=None)
    parser.add_argument("--study", help="the finished study's Tune folder (<storage>/<name>)")
    parser.add_argument("--parent-run", help="the finished study's MLflow parent run id (at --tracking-uri)")
    parser.add_argument("--top-k", type=int, default=3, help="how many of the best configurations (default 3)")
    cli.add_race_options(parser)
    return cli.main_guard(lambda: run(parser.parse_args(argv)))


def run(arguments) -> int:
    # Ray and the trainer are imported once the arguments are parsed.
    from ray import tune

    from studies.race_searcher import print_race, race_tune_config
    from studies.runner import Study, points_space, points_tune_config

    cli.refuse_options(
        arguments,
        {
            "--num-samples": "each configuration runs once per fresh seed; use --seeds",
            "--dataset": "the data set is the study's",
            "--preset": "the configurations are the study's; change single settings with --set",
        },
    )
    if arguments.resume:
        arguments = cli.resolve_study_arguments(arguments, KIND)
        plan = storage.read_json_object(storage.join(arguments.storage_path, arguments.name, PLAN_FILE))
        if plan is None:
            raise cli.StudyInputError(f"--resume: {arguments.name} has no {PLAN_FILE}; not a confirm study")
    else:
        plan = confirmation_plan(arguments)
        arguments.dataset = plan["base"]["dataset"]
        arguments = cli.resolve_study_arguments(arguments, KIND)
    points = plan["points"]
    race = cli.race_settings(arguments, len(plan["top"]))

    with Study(KIND, arguments, plan["base"], described_space=plan, question=__doc__) as study:
        if arguments.resume:
            tuner = study.restore()
        elif race:
            storage.write_json(storage.join(study.path, PLAN_FILE), plan)
            # Seeds raced over the fresh seeds: the configurations are the points of the first one.
            configurations = [{key: value for key, value in point.items() if key != "seed"}
                              for point in points if point["seed"] == plan["seeds"][0]]  # fmt: skip
            tune_config = race_tune_config(configurations, plan["seeds"], race, study.path, arguments.max_concurrent)
            tuner = tune.Tuner(study.trainable, tune_config=tune_config, run_config=study.run_config())
        else:
            storage.write_json(storage.join(study.path, PLAN_FILE), plan)
            tuner = tune.Tuner(
                study.trainable,
                param_space=points_space(points),
                # One trial per (configuration, fresh seed) point.
                tune_config=points_tune_config(points, arguments.max_concurrent),
                run_config=study.run_config(),
            )
        tuner.fit()
        print_race(study.path)
        # Configurations differ in `varying`; a single one is labelled by a key that all trials share.
        status = study.conclude(table_keys=plan["varying"] or ["dataset"])
        if status in (0, 1):
            write_summary(study.path, study.records, plan)
        return status


def confirmation_plan(arguments) -> dict[str, Any]:
    """The top-k configurations, the fresh seeds and the points (one per configuration and seed)."""
    if arguments.top_k < 1:
        raise cli.StudyInputError(f"--top-k {arguments.top_k}: must be >= 1")
    records = study_trials(arguments)
    top = rank_configurations(records)[: arguments.top_k]
    if not top:
        raise cli.StudyInputError("--study/--parent-run: the study has no successful trial to confirm")
    seeds = fresh_seeds(arguments, {record.seed for record in records if record.seed is not None})
    overrides = cli.common_overrides(arguments)
    base = {**top[0].config, **overrides}
    varying = [key for key in varying_keys([configuration.config for configuration in top]) if key not in overrides]
    points = [
        {**{key: configuration.config[key] for key in varying}, "seed": seed} for configuration in top for seed in seeds
    ]
    cli.check_points(base, points, "--top-k/--set")
    ranked = [
        {
            "config": configuration.config,
            "dev": configuration.values(RANKING_METRIC),
            "seeds": configuration.seeds,
            "study_dev_mean": configuration.mean(RANKING_METRIC),
        }
        for configuration in top
    ]
    return {"base": base, "varying": varying, "points": points, "seeds": seeds, "top": ranked}


def study_trials(arguments) -> list[TrialRecord]:
    """The finished study's trials, from its Tune folder and/or its MLflow parent run (a trial once)."""
    from mlflow.exceptions import MlflowException

    from results.ranking import without_duplicates
    from results.tune_folder import read_study_folder
    from tracking.mlflow_runs import read_mlflow_trials
    from tracking.uri import resolve_tracking_uri

    if not arguments.study and not arguments.parent_run:
        raise cli.StudyInputError("--study/--parent-run: name the study to confirm (its Tune folder or run id)")
    records: list[TrialRecord] = []
    if arguments.study:
        location = storage.absolute_location(arguments.study)
        if storage.read_text(storage.join(location, storage.BASE_CONFIG_FILE)) is None:
            raise cli.StudyInputError(f"--study {arguments.study}: not a study folder (no {storage.BASE_CONFIG_FILE})")
        records += read_study_folder(location)
    if arguments.parent_run:
        tracking_uri = resolve_tracking_uri(arguments.tracking_uri)
        try:
            records += read_mlflow_trials(tracking_uri, parent_run_ids=[arguments.parent_run])
        except (ResultsError, MlflowException) as error:
            raise cli.StudyInputError(f"--parent-run {arguments.parent_run} at {tracking_uri}: {error}") from error
    records, _ = without_duplicates(records)
    if not records:
        raise cli.StudyInputError("--study/--parent-run: the study has no trials")
    return records


def fresh_seeds(arguments, used: set[int]) -> list[int]:
    """--seeds fresh seeds (a race: --max-seeds of them), the smallest ones the study did not use; a given list must
    be fresh."""
    if arguments.seeds == "auto":
        from results.race import DEFAULT_MAX_SEEDS

        requested = list(range(arguments.max_seeds or DEFAULT_MAX_SEEDS))
    else:
        requested = cli.parse_seeds(arguments.seeds, default_count=1 if arguments.smoke_test else 3)
    if arguments.seeds is not None and "," in arguments.seeds:
        reused = sorted(set(requested) & used)
        if reused:
            raise cli.StudyInputError(f"--seeds: {reused} were used by the study; confirmation needs fresh seeds")
        return requested
    seeds, candidate = [], 0
    while len(seeds) < len(requested):
        if candidate not in used:
            seeds.append(candidate)
        candidate += 1
    return seeds


def write_summary(experiment_path: str, records: list[TrialRecord], plan: dict[str, Any]) -> None:
    """Per configuration: the study's dev scores, and dev and test mean and spread on the fresh seeds."""
    confirmed = rank_configurations(records)
    entries = []
    print("\nconfirmation on fresh seeds (test read here, never used to choose):")
    for rank, group in enumerate(plan["top"], start=1):
        point = {key: group["config"][key] for key in plan["varying"]}
        # The confirmation trials of this configuration: its values of the varying keys (JSON may change types).
        trials = [
            trial
            for configuration in confirmed
            if all(str(configuration.config.get(key)) == str(value) for key, value in point.items())
            for trial in configuration.trials
        ]
        fresh = Configuration(str(rank), trials)
        spread = {
            metric: {
                "mean": None if math.isnan(fresh.mean(metric)) else fresh.mean(metric),
                "std": None if math.isnan(fresh.std(metric)) else fresh.std(metric),
                "n": len(fresh.values(metric)),
            }
            for metric in REPORTED_METRICS
        }
        entries.append({"rank": rank, "config": group["config"], "study_dev": group["dev"],
                        "fresh_seeds": fresh.seeds, "metrics": spread})  # fmt: skip
        described = ", ".join(f"{key}={short(value)}" for key, value in point.items()) or "the best config"
        numbers = ", ".join(
            f"{metric.removeprefix('selected/')} {fresh.mean_std(metric)}"
            for metric in REPORTED_METRICS
            if fresh.values(metric)
        )
        print(f"  #{rank} {described} (study dev {group['study_dev_mean']:.4f}), seeds {fresh.seeds}: {numbers}")
    storage.write_json(storage.join(experiment_path, SUMMARY_FILE), entries)
    print(f"summary: {storage.join(experiment_path, SUMMARY_FILE)}")


if __name__ == "__main__":
    sys.exit(main())
