"""The search's Optuna side: the stored study that Ray Tune's OptunaSearch asks and tells, its TPE sampler, and the
warm start that seeds a new search with a finished search's completed trials.

The stored study is created here, with the study's base config, objective and search space as its attributes, and
then handed to OptunaSearch by name and storage (OptunaSearch loads a study of that name when one exists). One Tune
trial is one Optuna trial; trials seeded by a warm start carry the attribute `clmlf.warm_start_from`.

A warm start adds the finished study's completed trials to the new study as completed trials (`Study.add_trials`),
rather than enqueueing their parameters (`Study.enqueue_trial`): their dev scores were measured under the same base
config, so TPE learns from them at once and no compute is spent on measuring them again. Only trials that are
evaluations of this search are seeded: a trial whose config differs outside this search's space (another data
set, preset or --set value) or whose values lie outside this search's ranges is skipped, and the skipped trials
are counted by reason.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from results import optuna_study, storage
from results.optuna_study import StoredStudy
from results.record import RANKING_METRIC, RANKING_MODE
from results.storage import hide_password
from studies.cli import StudyInputError

# Settings that say where and how fast a run goes, not what it measures; the seed is noise, not a setting (a search
# runs each configuration on one seed). A warm start ignores them when it compares configs.
WARM_START_IGNORED_KEYS = ("data_root", "device", "num_workers", "eval_batch_size", "feature_cache",
                           "feature_cache_dir", "seed")  # fmt: skip
DIRECTION = "maximize" if RANKING_MODE == "max" else "minimize"


def stored_study_of(arguments: argparse.Namespace, study_path: str) -> StoredStudy:
    """--optuna-storage or the default storage, under the study's name; a new search refuses a name that the storage
    already holds (it would continue someone else's study)."""
    url = arguments.optuna_storage or optuna_study.default_storage(study_path, arguments.name)
    if not optuna_study.is_storage_url(url):
        raise StudyInputError(f"--optuna-storage {url!r}: expected a database URL (sqlite:///..., postgresql://...)")
    stored = StoredStudy(url, arguments.name)
    if not arguments.resume:
        try:
            names = optuna_study.study_names(url)
        except Exception as error:  # the database's driver decides what it raises
            raise StudyInputError(f"--optuna-storage {hide_password(url)}: {error}") from error
        if arguments.name in names:
            raise StudyInputError(
                f"--name {arguments.name}: {hide_password(url)} already holds an Optuna study of that "
                "name; pick another name, or add --resume"
            )
    return stored


def warm_start_trials(arguments: argparse.Namespace, base: dict[str, Any], space: dict[str, Any]) -> list:
    """The completed trials of --warm-start's study that are evaluations of this search, as trials of the new study."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    source = warm_start_source(arguments)
    try:
        study = optuna_study.load(source)
    except (KeyError, ValueError) as error:
        raise StudyInputError(f"--warm-start: cannot load the Optuna study {source.shown}: {error}") from error
    source_base = study.user_attrs.get(optuna_study.BASE_CONFIG_ATTRIBUTE)
    if source_base is None or study.user_attrs.get(optuna_study.OBJECTIVE_ATTRIBUTE) != RANKING_METRIC:
        raise StudyInputError(f"--warm-start: {source.shown} is not a study of studies/search.py (no base config)")
    if study.direction.name.lower() != DIRECTION:
        raise StudyInputError(f"--warm-start: {source.shown} does not {DIRECTION} {RANKING_METRIC}")
    distributions = OptunaSearch.convert_search_space(space)
    seeded, skipped = [], Counter()
    completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    for trial in completed:
        config = {**source_base, **trial.params}
        differing = [
            key
            for key in sorted(set(config) | set(base))
            if key not in space and key not in WARM_START_IGNORED_KEYS and config.get(key) != base.get(key)
        ]
        if differing:
            skipped[f"ran with other {', '.join(differing)}"] += 1
            continue
        try:
            seeded.append(
                optuna.trial.create_trial(
                    params={key: config[key] for key in distributions},
                    distributions=distributions,
                    value=trial.value,
                    user_attrs={optuna_study.WARM_START_ATTRIBUTE: f"{source.name}#{trial.number}"},
                )
            )
        except ValueError:
            skipped["values outside this search's ranges"] += 1
    described = "; ".join(f"{count} {reason}" for reason, count in skipped.items())
    if not seeded:
        raise StudyInputError(
            f"--warm-start: none of the {len(completed)} completed trial(s) of {source.shown} is an evaluation of "
            f"this search ({described or 'it has none'})"
        )
    print(
        f"warm start: {len(seeded)} of the {len(completed)} completed trial(s) of {source.shown} seed this search"
        + (f"; skipped: {described}" if skipped else "")
    )
    return seeded


def warm_start_source(arguments: argparse.Namespace) -> StoredStudy:
    """--warm-start: a finished search's folder (its optuna_study.json names its stored study), or a storage URL with
    --warm-start-study naming the study (optional where the storage holds one study)."""
    given = arguments.warm_start
    if optuna_study.is_storage_url(given):
        names = optuna_study.study_names(given)
        name = arguments.warm_start_study or (names[0] if len(names) == 1 else None)
        if name is None or name not in names:
            raise StudyInputError(
                f"--warm-start {hide_password(given)}: holds the studies {names}; name one with --warm-start-study"
            )
        return StoredStudy(given, name)
    location = optuna_study.recorded_location(storage.absolute_location(given))
    if location is None:
        raise StudyInputError(
            f"--warm-start {given}: not the folder of a search (no {optuna_study.OPTUNA_STUDY_FILE}), nor a "
            "database URL"
        )
    if ":***@" in location.storage:
        raise StudyInputError(
            f"--warm-start {given}: its study is in {location.storage}, whose password the folder does not keep; "
            f"give the URL with it (--warm-start URL --warm-start-study {location.name})"
        )
    return location


def stored_search(
    stored: StoredStudy,
    base: dict[str, Any],
    described_space: dict[str, Any],
    seeded: list,
    sampler_seed: int,
):
    """Create the stored study (its attributes, the warm-start trials) and the OptunaSearch that continues it.

    TPE runs multivariate (it models the searched keys jointly, not one at a time) and with the constant liar: trials
    still running count as if they had scored badly, so that trials started at the same time do not all sample the
    same promising region.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna_storage = optuna_study.open_storage(stored.storage)
    study = optuna.create_study(storage=optuna_storage, study_name=stored.name, direction=DIRECTION)
    optuna_study.name_objective(study, RANKING_METRIC)
    study.set_user_attr(optuna_study.BASE_CONFIG_ATTRIBUTE, base)
    study.set_user_attr(optuna_study.OBJECTIVE_ATTRIBUTE, RANKING_METRIC)
    study.set_user_attr(optuna_study.SEARCH_SPACE_ATTRIBUTE, described_space)
    study.add_trials(seeded)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, multivariate=True, constant_liar=True)
    return OptunaSearch(
        metric=RANKING_METRIC, mode=RANKING_MODE, sampler=sampler, study_name=stored.name, storage=optuna_storage
    )
