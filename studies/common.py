"""What every study shares: the command line, the Tune adapter around the trainer, resources, storage, the Tuner
(new or restored), the MLflow parent run, the result table and the export. A study script only says what it asks
(points or Tune domains in the config's flat keys, a table grouping, maybe a searcher and a scheduler); bad input
is refused here before Ray starts (exit code 2), and trials are ranked on `selected/dev/score` only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from clmlf.config import PRESETS, ConfigError, TrainConfig, build_config, parse_overrides
from clmlf.data import DataError, dataset_spec, load_dataset
from clmlf.encoders import EncoderUnavailable
from tracking.mlflow_logging import (
    MlflowStudyCallback,
    StudyRun,
    TrackingUnavailable,
    check_tracking_uri,
    error_summary,
    finish_study_run,
    latest_failure,
    reopen_study_run,
    start_study_run,
)
from tracking.uri import default_tracking_uri

RANKING_METRIC = "selected/dev/score"
RANKING_MODE = "max"
# Reported by every trial: the time axis of the phase-aware scheduler. Tune's `training_iteration` counts
# report() calls, which only happens to equal epochs.
EPOCHS_COMPLETED = "epochs_completed"
ADDRESS_VARIABLE = "CLMLF_RAY_ADDRESS"
STORAGE_VARIABLE = "CLMLF_STORAGE_PATH"
DEFAULT_STORAGE = "runs/tune"
# Passed to every trial's worker process, so that a cluster's nodes use the driver's data and caches.
FORWARDED_VARIABLES = ("CLMLF_CACHE_DIR", "CLMLF_DATA_ROOT", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                       "TORCH_HOME")  # fmt: skip
STUDY_FILE = "study.json"
BASE_CONFIG_FILE = "base_config.json"
PARENT_RUN_FILE = "mlflow_parent_run.json"
BEST_CONFIG_FILE = "best_config.json"
TRIALS_FILE = "trials.csv"
# Smoke tests (CI) train on a couple of batches: they check the plumbing, not the numbers.
SMOKE_OVERRIDES: dict[str, Any] = {"frozen_text_epochs": 1, "finetune_epochs": 1, "max_train_batches": 2}
RETRIES_PER_TRIAL = 2
# What --resume takes from the command line; everything else comes from the study's saved arguments.
RUNTIME_OPTIONS = ("address", "resume", "resume_errored", "tracking_uri")
FINISHED_STATUSES = ("TERMINATED", "ERROR")


class StudyInputError(ValueError):
    """A study argument that cannot work; the message names the argument."""


def study_parser(kind: str, docstring: str) -> argparse.ArgumentParser:
    """The options every study has; a script adds its own."""
    parser = argparse.ArgumentParser(
        prog=f"python studies/{kind}.py",
        description=docstring.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=docstring.split("\n\n", 1)[1] if "\n\n" in docstring else None,
    )
    parser.add_argument("--dataset", default="demo", help="mvsa-single, mvsa-multiple, hfm or demo (default: demo)")
    parser.add_argument("--data-root", help="folder that holds the data set's folder (not needed for demo)")
    parser.add_argument("--preset", default="demo", help=f"{', '.join(PRESETS)} (default: demo; --smoke-test: tiny)")
    parser.add_argument(
        "--address",
        default=os.environ.get(ADDRESS_VARIABLE),
        help=f"Ray cluster to join ('auto', host:port); default ${ADDRESS_VARIABLE}, else a local Ray started here",
    )
    parser.add_argument(
        "--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default: 1 if the cluster has GPUs)"
    )
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: resources)")
    parser.add_argument("--num-samples", type=int, help="number of trials, where the study samples")
    parser.add_argument("--seeds", help="a count (3 -> seeds 0,1,2) or a list (0,5,9); default 2 (smoke test: 1)")
    parser.add_argument(
        "--storage-path",
        default=os.environ.get(STORAGE_VARIABLE, DEFAULT_STORAGE),
        help=f"Tune's storage: a local folder, NFS or s3://... (default ${STORAGE_VARIABLE}, else {DEFAULT_STORAGE})",
    )
    parser.add_argument("--name", help=f"study name (default {kind}-<dataset>-<time>); its folder under storage")
    parser.add_argument(
        "--resume", action="store_true", help="continue the study --name (default: the latest one of this kind)"
    )
    parser.add_argument("--resume-errored", action="store_true", help="with --resume: also retry failed trials")
    parser.add_argument("--smoke-test", action="store_true", help="a handful of tiny trials (CI)")
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="keep finished trials' last checkpoints (the trained models)"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default $CLMLF_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="fixed setting for every trial (repeatable)"
    )
    return parser


def parse_seeds(text: str | None, default_count: int) -> list[int]:
    """--seeds: a count (3 -> 0, 1, 2) or a comma-separated list (0,5,9; a single seed is written `7,`)."""
    if text is None:
        return list(range(default_count))
    try:
        listed = "," in text
        seeds = [int(part) for part in text.split(",") if part.strip()] if listed else list(range(int(text)))
    except ValueError as error:
        raise StudyInputError(f"--seeds {text!r}: expected a count (3) or a list (0,5,9)") from error
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise StudyInputError(f"--seeds {text!r}: need at least one seed, all >= 0 and distinct")
    return seeds


def int_list(text: str) -> list[int]:
    """argparse type for `1,2,3` or a range `1-6` (inclusive)."""
    values: list[int] = []
    try:
        for part in text.split(","):
            if not part.strip():
                continue
            low, separator, high = part.partition("-")
            values.extend(range(int(low), int(high) + 1) if separator else [int(low)])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1,2,3 or a range 1-6") from error
    return values


def refuse_options(arguments: argparse.Namespace, options: dict[str, str]) -> None:
    """Options that this study does not use are refused rather than ignored."""
    for option, reason in options.items():
        if getattr(arguments, option.removeprefix("--").replace("-", "_"), None) is not None:
            raise StudyInputError(f"{option}: {reason}")


def base_config(arguments: argparse.Namespace) -> dict[str, Any]:
    """The flat config every trial starts from: the preset's, then --data-root, smoke settings and --set."""
    try:
        dataset_spec(arguments.dataset)
    except ValueError as error:
        raise StudyInputError(f"--dataset: {error}") from error
    preset = "tiny" if arguments.smoke_test else arguments.preset
    # Studies share frozen encoders' outputs between trials (clmlf/features.py); --set feature_cache=false
    # turns it off.
    overrides: dict[str, Any] = {"feature_cache": True}
    if arguments.data_root:
        overrides["data_root"] = str(Path(arguments.data_root).expanduser().resolve())
    if arguments.smoke_test:
        overrides.update(SMOKE_OVERRIDES)
    try:
        overrides.update(parse_overrides(arguments.set))
        flat = build_config(arguments.dataset, preset, overrides).to_flat_dict()
    except ConfigError as error:
        raise StudyInputError(f"--preset/--set: {error}") from error
    return absolute_local_paths(flat)


def absolute_local_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """Trials run in their own working folders (and on other nodes): relative paths must not stay relative."""
    resolved = dict(flat)
    for key in ("data_root", "model.text_encoder", "model.image_weights"):
        value = resolved.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
            resolved[key] = str(Path(value).resolve())
    return resolved


def check_points(base: dict[str, Any], points: list[dict[str, Any]], option: str) -> None:
    """Build and validate the config of every point; an empty list is an empty search space."""
    if not points:
        raise StudyInputError(f"{option}: the search space is empty, there is nothing to run")
    for point in points:
        try:
            TrainConfig.from_flat_dict({**base, **point})
        except ConfigError as error:
            described = ", ".join(f"{key}={value}" for key, value in point.items())
            raise StudyInputError(f"{option}: the point ({described}) is not a valid config: {error}") from error


def check_space(base: dict[str, Any], space: dict[str, Any], option: str) -> None:
    """A searched space: every key at both ends of its range and in each of its categories must validate."""
    if not space:
        raise StudyInputError(f"{option}: the search space is empty, there is nothing to search")
    check_points(base, [{key: value} for key, domain in space.items() for value in domain_extremes(domain)], option)


def domain_extremes(domain: Any) -> list[Any]:
    from ray.tune.search.sample import Categorical, Float, Integer

    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Integer):
        # Tune's randint and lograndint exclude the upper bound.
        return [domain.lower, domain.upper - 1]
    if isinstance(domain, Float):
        return [domain.lower, domain.upper]
    return [domain]


def check_dataset(flat: dict[str, Any]) -> None:
    """The data set must exist under its data root; images are not decoded here (the trials check them)."""
    try:
        load_dataset(flat["dataset"], flat.get("data_root"), need_images=False, need_translations=False)
    except DataError as error:
        raise StudyInputError(f"--dataset/--data-root: {error}") from error


def phase_aware_scheduler(
    base: dict[str, Any],
    grace_period: int | None = None,
    metric: str = "dev/score",
    time_attr: str = EPOCHS_COMPLETED,
    reduction_factor: float = 2,
):
    """ASHA that judges a trial only after its text encoder was fine-tuned for at least one epoch.

    The text-frozen phase says little about a configuration: a grace period that ends inside it would stop
    trials before they really start. So the grace period is at least frozen_text_epochs + 1 epochs (its
    default), time is counted in epochs, and only dev metrics may prune (test never decides anything).
    """
    from ray.tune.schedulers import ASHAScheduler

    config = TrainConfig.from_flat_dict(base)
    earliest = config.frozen_text_epochs + 1
    grace_period = earliest if grace_period is None else grace_period
    if time_attr != EPOCHS_COMPLETED:
        raise StudyInputError(f"scheduler time_attr {time_attr!r}: ASHA must count epochs ({EPOCHS_COMPLETED!r})")
    if not metric.startswith("dev/"):
        raise StudyInputError(f"scheduler metric {metric!r}: only dev metrics may stop trials (e.g. dev/score)")
    if grace_period < earliest:
        raise StudyInputError(
            f"--grace-period {grace_period}: ends inside the text-frozen phase ({config.frozen_text_epochs} "
            f"epochs); it must be >= frozen_text_epochs + 1 = {earliest}"
        )
    if grace_period > config.epochs:
        raise StudyInputError(f"--grace-period {grace_period}: longer than the whole run ({config.epochs} epochs)")
    return ASHAScheduler(
        time_attr=time_attr,
        metric=metric,
        mode=RANKING_MODE,
        max_t=config.epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )


def train_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """One Tune trial: train the base config with the trial's values, report every epoch with its checkpoint,
    and continue from Tune's checkpoint when the trial is retried or the study resumed."""
    import ray
    from ray import tune

    from clmlf.memory import anonymous_memory_mb
    from clmlf.train import resolve_device, train

    train_config = TrainConfig.from_flat_dict({**base, **config})
    placement = {
        "trial/node": socket.gethostname(),
        "trial/node_ip": ray.util.get_node_ip_address(),
        "trial/node_id": ray.get_runtime_context().get_node_id(),
        "trial/device": str(resolve_device(train_config.device)),
        # The worker process: Tune runs several trials in one (reuse_actors), which this makes visible.
        "trial/process": f"{socket.gethostname()}:{os.getpid()}",
        # What earlier trials in this process left behind; trial/worker_rss_anon_mb is the same after each epoch.
        "trial/worker_rss_anon_start_mb": anonymous_memory_mb(),
    }

    def report(metrics: dict[str, Any], epoch: int, checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        memory = {"trial/worker_rss_anon_mb": anonymous_memory_mb()}
        tune.report(
            {**metrics, "epoch": epoch, EPOCHS_COMPLETED: epoch + 1, **placement, **memory}, checkpoint=checkpoint
        )

    checkpoint = tune.get_checkpoint()
    # Tune copies each reported checkpoint to its storage before report() returns, so one scratch folder
    # per trial is enough.
    with (
        tempfile.TemporaryDirectory(prefix="clmlf-trial-") as output,
        checkpoint.as_directory() if checkpoint is not None else nullcontext(None) as resume_from,
    ):
        train(train_config, report, output_dir=output, resume_from=resume_from)


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


@dataclass
class TrialRecord:
    trial_id: str
    status: str
    error: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    # Restarts from the last checkpoint after a failure (a lost node, an exception), as Tune counted them.
    retries: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status == "TERMINATED" and RANKING_METRIC in self.metrics


def load_trials(experiment_path: str) -> list[TrialRecord]:
    """Every trial of a study's Tune folder: status, error, full flat config (base + trial) and last result."""
    from ray.tune import ExperimentAnalysis

    base = load_base_config(experiment_path)
    analysis = ExperimentAnalysis(experiment_path)
    records = []
    for trial in analysis.trials:
        error = ""
        if trial.status == "ERROR":
            error_text = trial.get_error() or "unknown error"
            error = error_summary(latest_failure(error_text))
        config = {**base, **trial.config}
        records.append(
            TrialRecord(trial.trial_id, trial.status, error, config, trial.last_result or {}, trial.num_failures)
        )
    return records


def load_base_config(experiment_path: str) -> dict[str, Any]:
    text = read_text(join(experiment_path, BASE_CONFIG_FILE))
    if text is None:
        raise StudyInputError(f"{experiment_path}: no {BASE_CONFIG_FILE}; not a folder written by these studies")
    return json.loads(text)


def best_trial(records: list[TrialRecord]) -> TrialRecord | None:
    """The successful trial with the highest dev score (ties: the earlier trial)."""
    succeeded = [record for record in records if record.succeeded]
    return max(succeeded, key=lambda record: record.metrics[RANKING_METRIC], default=None)


@dataclass
class Study:
    """One study: what it runs (a param space, and points or a searcher) and how its table is grouped.

    base: the flat config every trial starts from (saved as base_config.json). space: Tune domains for the
    searched keys; a trial's Tune config (params.json) holds only those, or only its point's keys. points:
    explicit flat overrides, one trial each (layer sweep, ablation, confirm). group_by: config keys whose
    trials are averaged over seeds in the table (empty: one row per trial); shown: config keys printed in the
    one-row-per-trial table.
    """

    kind: str
    arguments: argparse.Namespace
    base: dict[str, Any]
    space: dict[str, Any] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    time_budget_s: float | None = None
    group_by: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    described_space: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.base["dataset"]


def describe_domain(value: Any) -> Any:
    """A JSON-able description of a Tune domain (for search_space.json); constants are returned as they are."""
    from ray.tune.search.sample import Domain

    if not isinstance(value, Domain):
        return value
    description: dict[str, Any] = {"domain": type(value).__name__, "sampler": type(value.get_sampler()).__name__}
    for attribute in ("lower", "upper", "categories"):
        if hasattr(value, attribute):
            description[attribute] = getattr(value, attribute)
    return description


def absolute_location(location: str) -> str:
    """A URI as it is (s3://...), a local path made absolute."""
    return location if "://" in location else str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts]) if "://" in location else str(Path(location, *parts))


def write_text(location: str, text: str) -> None:
    if "://" in location:
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode())
        return
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    Path(location).write_text(text)


def read_text(location: str) -> str | None:
    if "://" in location:
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        with filesystem.open_input_stream(path) as stream:
            return stream.readall().decode()
    return Path(location).read_text() if Path(location).is_file() else None


def study_name(arguments: argparse.Namespace, kind: str, storage: str) -> str:
    """--name; with --resume and no name, the newest study of this kind and data set in a local storage."""
    if arguments.name:
        if "/" in arguments.name or arguments.name in (".", ".."):
            raise StudyInputError(f"--name {arguments.name!r}: must be a plain folder name")
        return arguments.name
    prefix = f"{kind}-{arguments.dataset or '*'}-"
    if not arguments.resume:
        return prefix + time.strftime("%Y%m%d-%H%M%S")
    if "://" in storage:
        raise StudyInputError("--resume: give --name (the study's folder) for a remote --storage-path")
    candidates = sorted(
        (path for path in Path(storage).glob(prefix + "*") if (path / STUDY_FILE).is_file()),
        key=lambda path: path.stat().st_mtime,
    )
    if not candidates:
        raise StudyInputError(f"--resume: no {kind} study ({prefix}*) under {storage}; give --name")
    return candidates[-1].name


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None, kind: str) -> argparse.Namespace:
    """Parse; with --resume, the study's saved arguments replace all but the runtime ones (RUNTIME_OPTIONS)."""
    return resolve_study_arguments(parser.parse_args(argv), kind)


def resolve_study_arguments(arguments: argparse.Namespace, kind: str) -> argparse.Namespace:
    """Absolute storage path and the study's name; with --resume, the study's saved arguments."""
    arguments.storage_path = absolute_location(arguments.storage_path)
    arguments.name = study_name(arguments, kind, arguments.storage_path)
    if arguments.resume:
        saved = read_text(join(arguments.storage_path, arguments.name, STUDY_FILE))
        if saved is None:
            location = join(arguments.storage_path, arguments.name)
            raise StudyInputError(f"--resume: {location} holds no {kind} study to resume (no {STUDY_FILE})")
        for key, value in json.loads(saved).items():
            if key not in RUNTIME_OPTIONS:
                setattr(arguments, key, value)
    return arguments


def run_study(study: Study) -> int:
    """Check everything, run (or resume) the study on Ray Tune, log to MLflow, print the table and export."""
    arguments = study.arguments
    storage, name = arguments.storage_path, arguments.name
    experiment_path = join(storage, name)
    saved = read_text(join(experiment_path, PARENT_RUN_FILE))
    if arguments.resume and saved is None:
        raise StudyInputError(f"--resume: {experiment_path} holds no study to resume (no {PARENT_RUN_FILE})")
    if not arguments.resume and (saved is not None or read_text(join(experiment_path, "tuner.pkl")) is not None):
        raise StudyInputError(f"--name {name}: {experiment_path} already holds a study; add --resume or pick a name")
    study_run = StudyRun(**json.loads(saved)) if saved is not None else None
    tracking_uri = study_run.tracking_uri if study_run else arguments.tracking_uri or default_tracking_uri()
    if study_run and arguments.tracking_uri and arguments.tracking_uri != tracking_uri:
        print(f"note: --resume logs to the study's own tracking URI {tracking_uri}, not {arguments.tracking_uri}")
    if arguments.resume:
        # The trials that ran used the saved base config, whatever the presets say today.
        study.base = load_base_config(experiment_path)
    else:
        check_dataset(study.base)
    check_tracking_uri(tracking_uri)

    # With one checkpoint kept per trial, Tune saves its state at every checkpoint on purpose (see new_tuner).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    start_ray(arguments.address)
    try:
        resources = trial_resources(arguments)
        trainable = tune.with_resources(tune.with_parameters(train_trial, base=study.base), resources)
        if study_run is None:
            study_run = start_study_run(
                tracking_uri,
                study.kind,
                name,
                study.dataset,
                study_arguments(arguments),
                study.described_space,
            )
            write_text(join(experiment_path, PARENT_RUN_FILE), json.dumps(study_run.to_json(), indent=2))
            write_text(join(experiment_path, STUDY_FILE), json.dumps(study_arguments(arguments), indent=2))
            write_text(join(experiment_path, BASE_CONFIG_FILE), json.dumps(study.base, indent=2))
            tuner = new_tuner(study, trainable, name, storage, study_run)
        else:
            if not tune.Tuner.can_restore(experiment_path):
                raise StudyInputError(f"--resume: {experiment_path} has no Tune state to restore")
            reopen_study_run(study_run)
            tuner = tune.Tuner.restore(experiment_path, trainable, resume_errored=arguments.resume_errored)
        print(
            f"study {name}: Tune folder {experiment_path}; MLflow {tracking_uri} (parent run {study_run.parent_run_id})"
        )
        tuner.fit()
        records = load_trials(experiment_path)
        return conclude(study, records, experiment_path, study_run)
    finally:
        ray.shutdown()


def start_ray(address: str | None) -> None:
    import ray

    env_vars = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(address="local", runtime_env=runtime_env, include_dashboard=False)


def trial_resources(arguments: argparse.Namespace) -> dict[str, float]:
    """CPUs and GPUs per trial; GPUs default to 1 where the cluster has any. Refuses what no node can hold."""
    import ray

    gpus = arguments.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    cpus = arguments.cpus_per_trial
    if cpus <= 0 or gpus < 0:
        raise StudyInputError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    fits = any(node["Resources"].get("CPU", 0) >= cpus and node["Resources"].get("GPU", 0) >= gpus for node in nodes)
    if not fits:
        offered = ", ".join(
            f"{node['Resources'].get('CPU', 0):g} CPU/{node['Resources'].get('GPU', 0):g} GPU" for node in nodes
        )
        message = f"--cpus-per-trial {cpus:g} / --gpus-per-trial {gpus:g}: no node offers that (nodes: {offered})"
        if not arguments.address:
            raise StudyInputError(message)
        print(f"warning: {message}; trials wait until the cluster scales up", file=sys.stderr)
    return {"cpu": cpus, "gpu": gpus}


def study_arguments(arguments: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(arguments).items() if key != "resume"}


class DropFinishedCheckpoints(Callback):
    """At the end of a study, deletes the checkpoints of its finished trials.

    Checkpoints are there to continue unfinished trials; a study keeps configs and metrics, not models
    (best_config.json trains the best one again), and a paper-sized trial's checkpoint is over a gigabyte.
    Failed trials keep theirs for --resume-errored.
    """

    def on_experiment_end(self, trials: list, **info) -> None:
        for trial in trials:
            checkpoint = trial.checkpoint
            if trial.status == "TERMINATED" and checkpoint is not None:
                checkpoint.filesystem.delete_dir(checkpoint.path)


def new_tuner(study: Study, trainable, name: str, storage: str, study_run: StudyRun):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search_alg, num_samples, space = study.search_alg, study.num_samples, dict(study.space)
    if study.points:
        # One trial per point, with the point's values under the config's own keys (a grid search over a
        # `point` key would hide them in a nested dict, and a grid over each key is a product, not a list).
        search_alg = BasicVariantGenerator(points_to_evaluate=[dict(point) for point in study.points])
        num_samples = len(study.points)
        space = points_space(study.points)
    arguments = study.arguments
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=study.scheduler,
            num_samples=num_samples,
            max_concurrent_trials=arguments.max_concurrent,
            time_budget_s=study.time_budget_s,
            trial_dirname_creator=trial_dirname,
            # A finished trial's process runs the next trial: no new worker importing torch and transformers
            # (about 5 s a trial on a 2-core machine), and the feature cache and encoder files stay warm.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[MlflowStudyCallback(study_run, study.base)]
            + ([] if arguments.keep_checkpoints else [DropFinishedCheckpoints()]),
            failure_config=tune.FailureConfig(max_failures=RETRIES_PER_TRIAL),
            # One checkpoint per trial: Tune then saves its experiment state with every checkpoint, so a
            # killed driver never leaves a state that points at a deleted checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )


def points_space(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Each point key as a choice of the values the points give it: Tune only presets keys of its space."""
    from ray import tune

    keys = list(dict.fromkeys(key for point in points for key in point))
    return {key: tune.choice(list(dict.fromkeys(point.get(key) for point in points))) for key in keys}


def conclude(study: Study, records: list[TrialRecord], experiment_path: str, study_run: StudyRun) -> int:
    """Print the table, failures and best config; export; close the parent run. Exit status for the script."""
    print_summary(study, records)
    unfinished = [record for record in records if record.status not in FINISHED_STATUSES]
    best = best_trial(records)
    if best is not None:
        write_text(join(experiment_path, BEST_CONFIG_FILE), json.dumps(full_config(best.config), indent=2))
    write_text(join(experiment_path, TRIALS_FILE), trials_table(records).to_csv(index=False))
    best_metrics = {key: value for key, value in (best.metrics if best else {}).items() if key.startswith("selected/")}
    status = "KILLED" if unfinished else "FINISHED"
    finish_study_run(study_run, best.trial_id if best else None, best_metrics, status=status)
    export_report(experiment_path, study_run)
    print(f"\nexported: {join(experiment_path, BEST_CONFIG_FILE) if best else '(no best config)'}, "
          f"{join(experiment_path, TRIALS_FILE)}")  # fmt: skip
    print(
        f"MLflow: {study_run.tracking_uri}, experiment clmlf/{study_run.study}/{study_run.dataset}, "
        f"parent run {study_run.parent_run_id} ({study_run.study_name})"
    )
    if study_run.tracking_uri.startswith("sqlite:"):
        print(f"  open the UI: mlflow ui --backend-store-uri {study_run.tracking_uri}")
    if unfinished:
        print(
            f"\n{len(unfinished)} trial(s) did not finish (interrupted); continue with: "
            f"python studies/{study.kind}.py --resume --name {study_run.study_name}"
        )
        return 130
    return 0 if best is not None else 1


def full_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config as `TrainConfig.to_flat_dict()` writes it (every key, typed values)."""
    return TrainConfig.from_flat_dict(config).to_flat_dict()


def trials_table(records: list[TrialRecord]):
    """One row per trial: id, status, error, the flat config, and the final selected metrics."""
    import pandas as pd

    rows = []
    for record in records:
        row: dict[str, Any] = {
            "trial_id": record.trial_id,
            "status": record.status,
            "retries": record.retries,
            "error": record.error,
        }
        row.update(record.config)
        row.update({key: value for key, value in record.metrics.items() if key.startswith("selected/")})
        rows.append(row)
    return pd.DataFrame(rows)


def selection_metric_name(dataset: str) -> str:
    return dataset_spec(dataset).selection_metric


def summary_frame(records: list[TrialRecord], group_by: list[str], dataset: str, shown: list[str] = ()):
    """Successful trials grouped by `group_by` (seeds averaged; no grouping: one row per trial with the `shown`
    config keys): mean and std of the dev score and the test metrics, best dev first."""
    import pandas as pd

    f1 = f"selected/test/{selection_metric_name(dataset)}"
    metrics = {"dev score": RANKING_METRIC, "test acc": "selected/test/acc", f"test {f1.rsplit('/', 1)[1]}": f1}
    rows = []
    for record in records:
        if not record.succeeded:
            continue
        row = {key: record.config.get(key) for key in group_by}
        row["trial"] = record.trial_id
        if not group_by:
            row.update({key: short(record.config.get(key)) for key in shown})
        row["seed"] = record.config.get("seed")
        row.update({label: record.metrics.get(key, math.nan) for label, key in metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = group_by or ["trial", *shown]
    grouped = frame.groupby(keys, sort=True, dropna=False)
    table = grouped["seed"].apply(lambda seeds: ",".join(str(seed) for seed in sorted(seeds))).to_frame("seeds")
    for label in metrics:
        table[label] = [
            f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values.mean():.4f}"
            for _, values in grouped[label]
        ]
        table[f"_{label}"] = grouped[label].mean()
    return table.sort_values("_dev score", ascending=False).reset_index()


def short(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def print_summary(study: Study, records: list[TrialRecord]) -> None:
    import pandas as pd

    table = summary_frame(records, study.group_by, study.dataset, study.shown)
    succeeded = sum(record.succeeded for record in records)
    print(
        f"\n{study.kind} on {study.dataset}: {len(records)} trials, {succeeded} succeeded; ranked on dev "
        f"({RANKING_METRIC}, mean ± std over seeds); test is reported, never ranked on"
    )
    if not table.empty:
        visible = table[[column for column in table.columns if not column.startswith("_")]]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(visible.to_string(index=False))
        if study.group_by:
            described = ", ".join(f"{key}={short(table[key].iloc[0])}" for key in study.group_by)
            print(f"\nbest by dev (mean over seeds): {described}: dev score {table['dev score'].iloc[0]}")
    failed = [record for record in records if record.status == "ERROR"]
    if failed:
        print(f"\nfailed trials ({len(failed)}):")
        for record in failed:
            varied = {key: record.config.get(key) for key in [*study.group_by, "seed"]}
            print(f"  {record.trial_id} {varied}: {record.error}")
    retried = [record for record in records if record.retries]
    if retried:
        print(f"\nretried trials ({len(retried)}), restarted from their last checkpoint:")
        for record in retried:
            print(f"  {record.trial_id}: {record.retries} retries, ended {record.status}")
    best = best_trial(records)
    if best is not None:
        differing = {key: short(value) for key, value in best.config.items() if study.base.get(key) != value}
        print(
            f"best trial by dev: {best.trial_id} {differing}: dev score {best.metrics[RANKING_METRIC]:.4f}, "
            f"test acc {best.metrics.get('selected/test/acc', math.nan):.4f}"
        )


def export_report(experiment_path: str, study_run: StudyRun) -> None:
    """The study report (tracking/report.py) next to the Tune folder, or under ./reports for remote storage."""
    from tracking.report import write_study_report

    output = Path(experiment_path, "report") if "://" not in experiment_path else Path("reports", study_run.study_name)
    try:
        write_study_report(output, tracking_uri=study_run.tracking_uri, parent_run_ids=[study_run.parent_run_id])
    except Exception as error:  # the study's results are exported already; a report problem must not hide them
        print(f"warning: the study report was not written: {type(error).__name__}: {error}", file=sys.stderr)


def main_guard(run: Callable[[], int]) -> int:
    """Run a study; bad input (refused before Ray starts) prints one line naming the argument and exits 2."""
    try:
        return run()
    except (StudyInputError, TrackingUnavailable, ConfigError, DataError, EncoderUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
