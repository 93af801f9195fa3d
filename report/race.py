"""The report's race section: for every study among the trials that raced its seeds (--seeds auto), the rounds,
which configuration was dropped after how many seeds and at what p-value, the top group the race ended with, and
the trials it used against a fixed grid on the maximum seeds.

A race is read from the study's race.json in its Tune folder: the one its trials were read from, or the one among
the report's Tune folders that belongs to its parent run (the study also logs race.json to that run).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from report.markup import escape, html_table, note, section
from report.tables import studies_of
from results import storage
from results.ranking import Ranking
from results.record import TrialRecord

TUNE_SOURCE = "Tune folder "


def races_html(ranking: Ranking, tune_dirs: Sequence[str] = ()) -> str:
    """The section, or "" where no study raced."""
    races = study_races(ranking.trials, tune_dirs)
    if not races:
        return ""
    parts = [
        note(
            "Racing seeds: every configuration starts on the initial seeds; after each round, a configuration that "
            "a paired t-test on the shared seeds (Holm-corrected over the round's comparisons with the leader) "
            "separates below the leader is dropped, and the others get one more seed. The configurations left at "
            "the end are the race's top group: none was separated from the leader."
        )
    ]
    for name, race in races:
        parts.append(race_html(name, race))
    return section("Racing seeds", *parts)


def race_html(study_name: str, race: dict[str, Any]) -> str:
    """One race (a race.json's content)."""
    settings = race["settings"]
    configurations = race["configurations"]
    ended = race["ended"] or "not yet (the study did not finish)"
    grid = len(configurations) * len(race["seeds"])
    budget = f", a budget of {settings['budget']} trials" if settings.get("budget") else ""
    parts = [
        f"<h3>{escape(study_name)}</h3>",
        f"<p>{len(configurations)} configuration(s), {settings['initial_seeds']} initial seeds, at most "
        f"{settings['max_seeds']}{escape(budget)}. {race['trials_started']} trial(s) in {len(race['rounds'])} "
        f"round(s), against {grid} for every configuration on {settings['max_seeds']} seeds. Ended: "
        f"{escape(ended)}.</p>",
    ]
    if race.get("top_group") is not None:
        top = "; ".join(describe(configurations[index]) for index in race["top_group"])
        parts.append(f"<p>Top group: {escape(top)}.</p>")
    drops = [
        [
            describe(configurations[drop["configuration"]]),
            str(drop["round"]),
            str(drop["seeds"]),
            describe(configurations[drop["leader"]]) if drop["leader"] is not None else "–",
            number(drop["difference"]),
            number(drop["adjusted_p"], "{:.3g}"),
        ]
        for drop in race["drops"]
    ]
    if drops:
        header = ["dropped", "round", "after seeds", "leader", "leader − it (dev)", "p (Holm)"]
        parts.append(html_table(header, drops, numeric=(1, 2, 4, 5), table_id=f"race-drops-{study_name}"))
    else:
        parts.append(note("No configuration was dropped."))
    rounds = [
        [
            str(round_["number"]),
            ", ".join(str(seed) for seed in round_["seeds"]),
            str(len(round_["configurations"])),
            describe(configurations[round_["leader"]]) if round_["leader"] is not None else "–",
            str(len(round_["missing"])),
            "; ".join(describe(configurations[index]) for index in round_["dropped"]) or "–",
        ]
        for round_ in race["rounds"]
    ]
    header = ["round", "seeds run", "configurations", "leader", "missing (failed)", "dropped"]
    parts.append(html_table(header, rounds, numeric=(0, 2, 4)))
    if race.get("trials_missing"):
        parts.append(note(f"{race['trials_missing']} trial(s) failed; the race counted them as missing values."))
    return "\n".join(parts)


def describe(point: Any) -> str:
    if isinstance(point, dict):
        return ", ".join(f"{key}={value}" for key, value in point.items())
    return str(point)


def number(value: float | None, template: str = "{:.4f}") -> str:
    return "–" if value is None else template.format(value)


def study_races(trials: Iterable[TrialRecord], tune_dirs: Sequence[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(study name, race.json's content) for every study among the trials that has one, each study once."""
    by_parent_run = {}
    for folder in tune_dirs:
        parent = storage.read_json_object(storage.join(folder, storage.PARENT_RUN_FILE)) or {}
        if parent.get("parent_run_id"):
            by_parent_run[parent["parent_run_id"]] = folder
    races: dict[str, dict[str, Any]] = {}
    for study in studies_of(trials):
        if study["name"] in races:
            continue
        if study["source"].startswith(TUNE_SOURCE):
            folder = study["source"].removeprefix(TUNE_SOURCE)
        else:
            folder = by_parent_run.get(study["parent_run_id"])
        race = storage.read_json_object(storage.join(folder, storage.RACE_FILE)) if folder else None
        if race is not None:
            races[study["name"]] = race
    return sorted(races.items())
