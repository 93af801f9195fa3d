"""Do a study's best configurations hold up on fresh seeds, and what are their test numbers?

Question: a study ranks configurations on dev over a few seeds, so its winner is partly luck. This re-runs the
top --top-k configurations of a finished study (ranked by their mean selected/dev/score over the seeds they ran
on) on --seeds N fresh seeds that the study never used, and reports dev and test mean and spread for each.
Test numbers for a report come from here, never from the study that chose the configurations.

Data: the study's (its configs name the data set); --data-root points at the data on this machine, --set
overrides a setting of every configuration (e.g. device=cuda).

Run:
  python studies/confirm.py --study runs/tune/layer_sweep-demo-20260101-120000 --top-k 3 --seeds 5
  python studies/confirm.py --parent-run 5ad9c4ccf7a349dc99e3b10d905eccc4 --tracking-uri http://mlflow:5000
  python studies/confirm.py --study runs/tune/search-demo-... --smoke-test      # one tiny trial (CI)
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from studies import common
from tracking.mlflow_logging import child_runs, typed_flat_config
from tracking.uri import default_tracking_uri

KIND = "confirm"
SUMMARY_FILE = "confirm_summary.json"
PLAN_FILE = "confirm_plan.json"
REPORTED_METRICS = ("selected/dev/score", "selected/test/acc", "selected/test/f1_weighted", "selected/test/f1_macro")


def study_trials(arguments) -> list[common.TrialRecord]:
    """The finished study's trials, from its Tune folder and/or its MLflow parent run (a trial once)."""
    if not arguments.study and not arguments.parent_run:
        raise common.StudyInputError("--study/--parent-run: name the study to confirm (its Tune folder or run id)")
    records: dict[str, common.TrialRecord] = {}
    if arguments.study:
        location = common.absolute_location(arguments.study)
        if common.read_text(common.join(location, common.BASE_CONFIG_FILE)) is None:
            raise common.StudyInputError(
                f"--study {arguments.study}: not a study folder (no {common.BASE_CONFIG_FILE})"
            )
        records.update({record.trial_id: record for record in common.load_trials(location)})
    if arguments.parent_run:
        tracking_uri = arguments.tracking_uri or default_tracking_uri()
        try:
            runs = child_runs(tracking_uri, arguments.parent_run)
        except Exception as error:  # MLflow raises its own exception kinds for unknown runs and stores
            raise common.StudyInputError(f"--parent-run {arguments.parent_run} at {tracking_uri}: {error}") from error
        for run in runs:
            tags = run.data.tags
            trial_id = tags.get("clmlf.trial_id", run.info.run_name)
            status = tags.get("clmlf.status", "TERMINATED" if run.info.status == "FINISHED" else run.info.status)
            metrics = dict(run.data.metrics)
            records.setdefault(
                trial_id, common.TrialRecord(trial_id, status, tags.get("clmlf.error", ""), run.data.params, metrics)
            )
    if not records:
        raise common.StudyInputError("--study/--parent-run: the study has no trials")
    return list(records.values())


def configuration_key(config: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in config.items() if key != "seed"}, sort_keys=True, default=str)


def ranked_configurations(records: list[common.TrialRecord]) -> list[dict[str, Any]]:
    """Configurations (flat, without seed) of the successful trials, best mean dev score first."""
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        if not record.succeeded:
            continue
        config = typed_flat_config(record.config)
        group = groups.setdefault(configuration_key(config), {"config": config, "dev": [], "seeds": []})
        group["dev"].append(float(record.metrics[common.RANKING_METRIC]))
        group["seeds"].append(config["seed"])
    ranked = sorted(groups.values(), key=lambda group: statistics.fmean(group["dev"]), reverse=True)
    return [{**group, "study_dev_mean": statistics.fmean(group["dev"])} for group in ranked]


def fresh_seeds(arguments, used: set[int]) -> list[int]:
    requested = common.parse_seeds(arguments.seeds, default_count=1 if arguments.smoke_test else 3)
    if arguments.seeds is not None and "," in arguments.seeds:
        reused = sorted(set(requested) & used)
        if reused:
            raise common.StudyInputError(f"--seeds: {reused} were used by the study; confirmation needs fresh seeds")
        return requested
    seeds, candidate = [], 0
    while len(seeds) < len(requested):
        if candidate not in used:
            seeds.append(candidate)
        candidate += 1
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = common.study_parser(KIND, __doc__)
    parser.set_defaults(dataset=None, preset=None)
    parser.add_argument("--study", help="the finished study's Tune folder (<storage>/<name>)")
    parser.add_argument("--parent-run", help="the finished study's MLflow parent run id (at --tracking-uri)")
    parser.add_argument("--top-k", type=int, default=3, help="how many of the best configurations (default 3)")

    def run() -> int:
        arguments = parser.parse_args(argv)
        common.refuse_options(
            arguments,
            {
                "--num-samples": "each configuration runs once per fresh seed; use --seeds",
                "--dataset": "the data set is the study's",
                "--preset": "the configurations are the study's; change single settings with --set",
            },
        )
        if arguments.resume:
            arguments = common.resolve_study_arguments(arguments, KIND)
            text = common.read_text(common.join(arguments.storage_path, arguments.name, PLAN_FILE))
            if text is None:
                raise common.StudyInputError(f"--resume: {arguments.name} has no {PLAN_FILE}; not a confirm study")
            plan = json.loads(text)
        else:
            plan = confirmation_plan(arguments)
            arguments.dataset = plan["base"]["dataset"]
            arguments = common.resolve_study_arguments(arguments, KIND)
        study = common.Study(
            kind=KIND,
            arguments=arguments,
            base=plan["base"],
            points=plan["points"],
            # Configurations differ in `varying`; a single one is grouped by a key that all trials share.
            group_by=plan["varying"] or ["dataset"],
            described_space=plan,
        )
        if not arguments.resume:
            common.write_text(
                common.join(arguments.storage_path, arguments.name, PLAN_FILE), json.dumps(plan, indent=2)
            )
        status = common.run_study(study)
        if status in (0, 1):
            write_summary(study, plan)
        return status

    return common.main_guard(run)


def confirmation_plan(arguments) -> dict[str, Any]:
    """The top-k configurations, the fresh seeds and the points (one per configuration and seed)."""
    if arguments.top_k < 1:
        raise common.StudyInputError(f"--top-k {arguments.top_k}: must be >= 1")
    records = study_trials(arguments)
    ranked = ranked_configurations(records)
    if not ranked:
        raise common.StudyInputError("--study/--parent-run: the study has no successful trial to confirm")
    top = ranked[: arguments.top_k]
    used = {int(typed_flat_config(record.config).get("seed", -1)) for record in records}
    seeds = fresh_seeds(arguments, used)
    overrides = confirm_overrides(arguments)
    base = {**top[0]["config"], **overrides}
    varying = [key for key in base if key not in overrides and len({str(group["config"][key]) for group in top}) > 1]
    points = [{**{key: group["config"][key] for key in varying}, "seed": seed} for group in top for seed in seeds]
    common.check_points(base, points, "--top-k/--set")
    return {"base": base, "varying": varying, "points": points, "seeds": seeds, "top": top}


def confirm_overrides(arguments) -> dict[str, Any]:
    from clmlf.config import ConfigError, parse_overrides

    overrides: dict[str, Any] = {}
    if arguments.data_root:
        overrides["data_root"] = common.absolute_local_paths({"data_root": arguments.data_root})["data_root"]
    if arguments.smoke_test:
        overrides.update(common.SMOKE_OVERRIDES)
    try:
        overrides.update(parse_overrides(arguments.set))
    except ConfigError as error:
        raise common.StudyInputError(f"--set: {error}") from error
    return overrides


def write_summary(study: common.Study, plan: dict[str, Any]) -> None:
    """Per configuration: the study's dev scores, and dev and test mean and spread on the fresh seeds."""
    experiment_path = common.join(study.arguments.storage_path, study.arguments.name)
    records = common.load_trials(experiment_path)
    entries = []
    print("\nconfirmation on fresh seeds (test read here, never used to choose):")
    for rank, group in enumerate(plan["top"], start=1):
        point = {key: group["config"][key] for key in plan["varying"]}
        runs = [
            record
            for record in records
            if record.succeeded and all(str(record.config.get(key)) == str(value) for key, value in point.items())
        ]
        measured = {
            metric: [float(record.metrics[metric]) for record in runs if metric in record.metrics]
            for metric in REPORTED_METRICS
        }
        spread = {
            metric: {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
            for metric, values in measured.items()
        }
        seeds = sorted(record.config.get("seed") for record in runs)
        entries.append({"rank": rank, "config": group["config"], "study_dev": group["dev"], "fresh_seeds": seeds,
                        "metrics": spread})  # fmt: skip
        described = ", ".join(f"{key}={common.short(value)}" for key, value in point.items()) or "the best config"
        numbers = ", ".join(
            f"{metric.removeprefix('selected/')} {values['mean']:.4f}"
            + (f" ± {values['std']:.4f}" if values["std"] is not None else "")
            for metric, values in spread.items()
            if values["mean"] is not None
        )
        print(f"  #{rank} {described} (study dev {statistics.fmean(group['dev']):.4f}), seeds {seeds}: {numbers}")
    common.write_text(common.join(experiment_path, SUMMARY_FILE), json.dumps(entries, indent=2, default=str))
    print(f"summary: {common.join(experiment_path, SUMMARY_FILE)}")


if __name__ == "__main__":
    sys.exit(main())
