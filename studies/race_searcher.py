"""Racing seeds on Ray Tune: a `Searcher` that hands out the race's trials (results/race.py) and feeds their
dev scores back, so that a race runs wherever Tune runs trials, keeps to --max-concurrent and resumes with its study.

Tune asks the searcher for a trial whenever it could start one; within a round the searcher answers with the
round's next (configuration, seed), and between rounds it answers "not now" until every trial of the round is back
(a failed trial counts as back, without a score). Its state (the race and which Tune trial runs which seed) is saved
with Tune's experiment state, so a resumed study goes on from the round it was in. After every round the race is
written to the study folder as race.json.
"""

from __future__ import annotations

import filecmp
import json
import os
import sys
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from results import storage
from results.race import FINISHED, Race, RaceSettings
from results.record import RANKING_METRIC, RANKING_MODE

RACE_FILE = storage.RACE_FILE
# Fault injection for tests of a killed race: the driver exits hard (exit status RACE_EXIT_STATUS) once the race
# has closed this round and the study folder holds a state that Tune saved since (Tune saves its state when a trial
# checkpoints, so that happens during the next round's first trial, which a resume then continues).
EXIT_AFTER_ROUND_VARIABLE = "CLMLF_RACE_EXIT_AFTER_ROUND"
RACE_EXIT_STATUS = 75


class RaceSearcher(Searcher):
    """points: the configurations (flat config values, no seed); seeds: the seeds in the order the race hands them
    out; study_path: the study folder that receives race.json."""

    def __init__(self, points: list[dict[str, Any]], seeds: list[int], settings: RaceSettings, study_path: str):
        super().__init__(metric=RANKING_METRIC, mode=RANKING_MODE)
        self.race = Race(points, seeds, settings)
        self.study_path = study_path
        # Tune trial id -> (configuration, seed); the trials handed out and not back yet.
        self.trials: dict[str, tuple[int, int]] = {}
        self.running: set[str] = set()
        self.max_concurrent = 0
        # Tune's staging folder on the driver, where it saves its state before copying it to the study folder.
        self._staging: str | None = None
        # Whether Tune saved the state since the latest round was closed (for the fault injection).
        self._saved_since_round = False

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        # The race hands out whole points: there is no space to take, and the metric is always the ranking one.
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's `max_concurrent_trials` arrives here (through its ConcurrencyLimiter): the race keeps to it."""
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._exit_due() and self._state_stored():
            print(f"race: exiting in round {len(self.race.rounds)} ({EXIT_AFTER_ROUND_VARIABLE})", flush=True)
            os._exit(RACE_EXIT_STATUS)
        if self.max_concurrent and len(self.running) >= self.max_concurrent:
            return None
        trial = self.race.next_trial()
        if trial == FINISHED:
            return Searcher.FINISHED
        if trial is None:
            return None
        configuration, seed = trial
        self.trials[trial_id] = (configuration, seed)
        self.running.add(trial_id)
        return {**self.race.configurations[configuration], "seed": seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trials:
            return
        self.running.discard(trial_id)
        configuration, seed = self.trials[trial_id]
        score = None if error or not result else result.get(RANKING_METRIC)
        reason = "the trial failed" if error else ("" if score is not None else f"no {RANKING_METRIC} reported")
        rounds, ended = len(self.race.rounds), self.race.finished
        self.race.record(configuration, seed, score, reason)
        if len(self.race.rounds) != rounds or self.race.finished != ended:
            self._saved_since_round = False
            self.write()
            print(round_line(self.race), flush=True)

    def write(self) -> None:
        """race.json in the study folder, and in Tune's staging folder: a resumed Tune copies the study folder's JSON
        files there and later back, which would put an older race.json over a newer one."""
        state = self.race.to_json()
        storage.write_json(storage.join(self.study_path, RACE_FILE), state)
        if self._staging is not None:
            storage.write_json(str(Path(self._staging, RACE_FILE)), state)

    def _exit_due(self) -> bool:
        """With EXIT_AFTER_ROUND_VARIABLE=k in a local study folder: round k is closed and the race goes on."""
        after = os.environ.get(EXIT_AFTER_ROUND_VARIABLE)
        return (
            after is not None
            and not storage.is_remote(self.study_path)
            and not self.race.finished
            and len(self.race.rounds) > int(after)
        )

    def _state_stored(self) -> bool:
        """Tune saved its state since the round was closed, and the study folder holds that very state (so that a
        resume starts exactly there)."""
        if not self._saved_since_round or self._staging is None:
            return False
        saved = [path for path in Path(self._staging).iterdir() if path.is_file() and not path.name.startswith(".")]
        return all(
            Path(self.study_path, path.name).is_file() and filecmp.cmp(path, Path(self.study_path, path.name), False)
            for path in saved
        )

    def get_state(self) -> dict[str, Any]:
        return {"race": self.race.to_json(), "trials": self.trials, "running": sorted(self.running)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.race = Race.from_json(state["race"])
        self.trials = {trial_id: (int(pair[0]), int(pair[1])) for trial_id, pair in state["trials"].items()}
        self.running = set(state["running"])

    def save(self, checkpoint_path: str) -> None:
        # JSON, not pickle: the study folder is shared storage, and a resume must not run what a file says.
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))
        self._staging = str(Path(checkpoint_path).parent)
        self._saved_since_round = True
        self.write()

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))
        self._staging = str(Path(checkpoint_path).parent)
        self.write()


def round_line(race: Race) -> str:
    """One printed line per closed round: what ran, what was dropped, what comes next."""
    closed = race.rounds[-1] if race.finished else race.rounds[-2]
    dropped = ", ".join(
        f"#{drop.configuration} {describe(race.configurations[drop.configuration])} after {drop.seeds} seed(s)"
        + (f" (p = {drop.adjusted_p:.3g})" if drop.adjusted_p is not None else " (no trial succeeded)")
        for drop in race.drops
        if drop.round == closed.number
    )
    line = (
        f"race round {closed.number}: {len(closed.configurations)} configuration(s) on seed(s) {closed.seeds}; "
        f"dropped: {dropped or 'none'}; {race.started} trial(s) so far"
    )
    if race.finished:
        return f"{line}; ended: {race.ended}; top group {[describe(race.configurations[i]) for i in race.top_group]}"
    return f"{line}; next: {len(race.alive)} configuration(s) on seed {race.rounds[-1].seeds}"


def describe(point: Any) -> str:
    if isinstance(point, dict):
        return ", ".join(f"{key}={value}" for key, value in point.items())
    return str(point)


def race_tune_config(
    points: list[dict[str, Any]], seeds: list[int], settings: RaceSettings, study_path: str, max_concurrent: int | None
):
    """Tune's config for a race over `points` (no seed in them): the searcher, the most trials the race can start,
    and --max-concurrent (Tune wraps a Searcher in its ConcurrencyLimiter, which leaves the limit to the race)."""
    from ray import tune

    from studies.runner import TRIAL_PROCESSES

    searcher = RaceSearcher(points, seeds, settings, study_path)
    return tune.TuneConfig(
        search_alg=searcher,
        num_samples=searcher.race.most_trials,
        max_concurrent_trials=max_concurrent,
        **TRIAL_PROCESSES,
    )


def print_race(study_path: str) -> None:
    """The race's outcome for a finished study's printout: its drops and its top group."""
    state = storage.read_json_object(storage.join(study_path, RACE_FILE))
    if state is None:
        return
    race = Race.from_json(state)
    print(f"\nrace ({storage.join(study_path, RACE_FILE)}): {race.started} trial(s) in {len(race.rounds)} round(s)"
          f" of at most {race.most_trials}; ended: {race.ended or 'not yet'}")  # fmt: skip
    for drop in race.drops:
        why = f"p = {drop.adjusted_p:.3g} (Holm) against #{drop.leader}" if drop.adjusted_p is not None else "failed"
        print(f"  dropped #{drop.configuration} {describe(race.configurations[drop.configuration])} in round "
              f"{drop.round}, after {drop.seeds} seed(s): {why}")  # fmt: skip
    missing = state["trials_missing"]
    if missing:
        print(f"  {missing} trial(s) came back without a score (failed), counted as missing", file=sys.stderr)
    if race.finished:
        print(f"  top group: {'; '.join(describe(race.configurations[index]) for index in race.top_group)}")
        print(
            "  (the race's decision, test by test as the rounds went; the table below compares each configuration "
            "with the best once more on all the seeds it ran, where one dropped early has few seeds and its test "
            "little power)"
        )
