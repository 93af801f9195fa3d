"""The command line every study shares, and the checks of its input that run before Ray starts: a bad argument is
refused with one line that names it (exit code 2) before any compute is spent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clmlf.config import PRESETS, ConfigError, TrainConfig, build_config, parse_overrides
from clmlf.data import DATASETS, DataError, dataset_spec, load_dataset
from clmlf.encoders import EncoderUnavailable
from results import storage
from results.record import ResultsError
from tracking.uri import RAY_ADDRESS_HELP, TRACKING_URI_HELP, TrackingUnavailable, resolve_ray_address

STORAGE_VARIABLE = "CLMLF_STORAGE_PATH"
DEFAULT_STORAGE = "runs/tune"
# Smoke tests (CI) train on a couple of batches: they check the plumbing, not the numbers.
SMOKE_OVERRIDES: dict[str, Any] = {"frozen_text_epochs": 1, "finetune_epochs": 1, "max_train_batches": 2}
# What --resume takes from the command line; everything else comes from the study's saved arguments.
RUNTIME_OPTIONS = ("address", "resume", "resume_errored", "tracking_uri")


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
    parser.add_argument("--dataset", default="demo", help=f"{', '.join(DATASETS)} (default: demo)")
    parser.add_argument("--data-root", help="folder that holds the data set's folder (not needed for demo)")
    parser.add_argument("--image-folder", help="the images' folder, if not the data set's default (docs/data.md)")
    parser.add_argument("--preset", default="demo", help=f"{', '.join(PRESETS)} (default: demo; --smoke-test: tiny)")
    parser.add_argument("--address", help=RAY_ADDRESS_HELP)
    parser.add_argument(
        "--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default: 1 if the cluster has GPUs)"
    )
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: resources)")
    parser.add_argument("--num-samples", type=int, help="number of trials, where the study samples")
    parser.add_argument(
        "--seeds",
        help="a count (3 -> seeds 0,1,2) or a list (0,5,9); default 2 (smoke test: 1); where the study has "
        "--max-seeds, `auto` races seeds (docs/studies.md)",
    )
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
        "--keep-checkpoints",
        action="store_true",
        help="keep every finished trial's checkpoints (the best model's is kept and logged to MLflow anyway)",
    )
    parser.add_argument(
        "--no-analyses",
        action="store_true",
        help="do not draw the best model's analyses at the end (they train a text-only counterpart on the driver); "
        "`python -m analyses <study folder>` draws them later",
    )
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="fixed setting for every trial (repeatable)"
    )
    return parser


def study_question(docstring: str) -> str:
    """What a study page asks: its title line and its `Question:` paragraph, unwrapped (the MLflow experiment's
    description)."""
    paragraphs = [paragraph.strip() for paragraph in docstring.strip().split("\n\n")]
    chosen = [paragraphs[0], *(paragraph for paragraph in paragraphs[1:] if paragraph.startswith("Question:"))]
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in chosen)


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None, kind: str) -> argparse.Namespace:
    """Parse; with --resume, the study's saved arguments replace all but the runtime ones (RUNTIME_OPTIONS)."""
    return resolve_study_arguments(parser.parse_args(argv), kind)


def resolve_study_arguments(arguments: argparse.Namespace, kind: str) -> argparse.Namespace:
    """Absolute storage path, the Ray address (tracking.uri's precedence) and the study's name; with --resume, the
    study's saved arguments."""
    if arguments.max_concurrent is not None and arguments.max_concurrent < 1:
        raise StudyInputError(f"--max-concurrent {arguments.max_concurrent}: must be >= 1")
    arguments.storage_path = storage.absolute_location(arguments.storage_path)
    arguments.address = resolve_ray_address(arguments.address)
    arguments.name = study_name(arguments, kind, arguments.storage_path)
    if arguments.resume:
        location = storage.join(arguments.storage_path, arguments.name)
        saved = storage.read_json_object(storage.join(location, storage.STUDY_FILE))
        if saved is None:
            raise StudyInputError(f"--resume: {location} holds no {kind} study to resume (no {storage.STUDY_FILE})")
        for key, value in saved.items():
            if key not in RUNTIME_OPTIONS:
                setattr(arguments, key, value)
    return arguments


def study_name(arguments: argparse.Namespace, kind: str, storage_path: str) -> str:
    """--name; with --resume and no name, the newest study of this kind and data set in a local storage."""
    if arguments.name:
        if "/" in arguments.name or arguments.name in (".", ".."):
            raise StudyInputError(f"--name {arguments.name!r}: must be a plain folder name")
        return arguments.name
    prefix = f"{kind}-{arguments.dataset or '*'}-"
    if not arguments.resume:
        return prefix + time.strftime("%Y%m%d-%H%M%S")
    if storage.is_remote(storage_path):
        raise StudyInputError("--resume: give --name (the study's folder) for a remote --storage-path")
    candidates = sorted(
        (path for path in Path(storage_path).glob(prefix + "*") if (path / storage.STUDY_FILE).is_file()),
        key=lambda path: path.stat().st_mtime,
    )
    if not candidates:
        raise StudyInputError(f"--resume: no {kind} study ({prefix}*) under {storage_path}; give --name")
    return candidates[-1].name


def saved_arguments(arguments: argparse.Namespace) -> dict[str, Any]:
    """What the study saves of its arguments (study.json) and logs on its parent run."""
    return {key: value for key, value in vars(arguments).items() if key != "resume"}


def parse_seeds(text: str | None, default_count: int) -> list[int]:
    """--seeds: a count (3 -> 0, 1, 2) or a comma-separated list (0,5,9; a single seed is written `7,`)."""
    if text is None:
        return list(range(default_count))
    if text == "auto":
        raise StudyInputError("--seeds auto: this study does not race its seeds; give a count or a list")
    try:
        listed = "," in text
        seeds = [int(part) for part in text.split(",") if part.strip()] if listed else list(range(int(text)))
    except ValueError as error:
        raise StudyInputError(f"--seeds {text!r}: expected a count (3) or a list (0,5,9)") from error
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise StudyInputError(f"--seeds {text!r}: need at least one seed, all >= 0 and distinct")
    return seeds


def add_race_options(parser: argparse.ArgumentParser) -> None:
    """The options of a study that can race its seeds (--seeds auto)."""
    group = parser.add_argument_group(
        "racing seeds (--seeds auto)",
        "Every configuration starts on --initial-seeds seeds; after each round, those that a paired t-test "
        "(Holm-corrected, 5%) separates below the leader are dropped and the others get one more seed, until one "
        "is left, --max-seeds is reached or the next round would exceed --budget trials.",
    )
    group.add_argument("--initial-seeds", type=int, help="seeds of the first round (default 3)")
    group.add_argument("--max-seeds", type=int, help="the most seeds a configuration runs (default 10)")
    group.add_argument("--budget", type=int, help="the most trials the race starts (default: no limit)")


RACE_OPTIONS = ("--initial-seeds", "--max-seeds", "--budget")


def race_settings(arguments: argparse.Namespace, configurations: int):
    """With --seeds auto, the race's settings, checked against the number of configurations; else None (and the
    race's options are refused)."""
    from results.race import DEFAULT_INITIAL_SEEDS, DEFAULT_MAX_SEEDS, RaceError, RaceSettings

    if arguments.seeds != "auto":
        refuse_options(arguments, {option: "races only; add --seeds auto" for option in RACE_OPTIONS})
        return None
    settings = RaceSettings(
        initial_seeds=DEFAULT_INITIAL_SEEDS if arguments.initial_seeds is None else arguments.initial_seeds,
        max_seeds=DEFAULT_MAX_SEEDS if arguments.max_seeds is None else arguments.max_seeds,
        budget=arguments.budget,
    )
    try:
        settings.check(configurations)
    except RaceError as error:
        raise StudyInputError(str(error)) from error
    if configurations < 2:
        raise StudyInputError("--seeds auto: a race needs at least two configurations; give a seed count instead")
    return settings


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
    overrides = common_overrides(arguments)
    try:
        config = build_config(arguments.dataset, preset, overrides)
        # Studies share frozen encoders' outputs between trials (clmlf/features.py) unless --set feature_cache=...
        # says otherwise, or the config's encoders give different outputs at every pass (the original preset).
        if "feature_cache" not in overrides:
            refusal = config.feature_cache_refusal
            if refusal is None:
                config = build_config(arguments.dataset, preset, {**overrides, "feature_cache": True})
            else:
                print(f"This study runs without the feature cache: {refusal}.", file=sys.stderr)
    except ConfigError as error:
        raise StudyInputError(f"--preset/--set: {error}") from error
    return absolute_local_paths(config.to_flat_dict())


def common_overrides(arguments: argparse.Namespace) -> dict[str, Any]:
    """--data-root, --image-folder, the smoke settings and --set, as flat config values."""
    overrides: dict[str, Any] = {}
    if arguments.data_root:
        overrides["data_root"] = str(Path(arguments.data_root).expanduser().resolve())
    if arguments.image_folder:
        overrides["image_folder"] = str(Path(arguments.image_folder).expanduser().resolve())
    if arguments.smoke_test:
        overrides.update(SMOKE_OVERRIDES)
    try:
        overrides.update(parse_overrides(arguments.set))
    except ConfigError as error:
        raise StudyInputError(f"--set: {error}") from error
    return overrides


def absolute_local_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """Trials run in their own working folders (and on other nodes): relative paths must not stay relative."""
    resolved = dict(flat)
    for key in ("data_root", "image_folder", "model.text_encoder", "model.image_weights"):
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


def check_dataset(flat: dict[str, Any]) -> None:
    """The data set must exist under its data root, and its image folder when the base config reads images; images
    are not decoded here (the trials check them)."""
    try:
        dataset = load_dataset(flat["dataset"], flat.get("data_root"), need_images=False, need_translations=False)
    except DataError as error:
        raise StudyInputError(f"--dataset/--data-root: {error}") from error
    if not TrainConfig.from_flat_dict(flat).model.uses_images:
        return
    given = flat.get("image_folder")
    folder = Path(given).expanduser() if given else dataset.spec.default_image_folder(dataset.directory)
    if not folder.is_dir():
        raise StudyInputError(
            f"--image-folder: the {dataset.spec.name} images are not at {folder} (no such folder); give the folder "
            "that holds them, or --set model.variant=text-only for a study without images"
        )


def main_guard(run: Callable[[], int]) -> int:
    """Run a study; bad input (refused before Ray starts) prints one line naming the argument and exits 2."""
    try:
        return run()
    except (StudyInputError, TrackingUnavailable, ConfigError, DataError, EncoderUnavailable, ResultsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
