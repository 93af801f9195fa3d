"""Racing seeds: run every configuration on a few seeds, drop those that a paired test separates below the leader,
give the survivors one more seed each, and repeat (iterated racing in the F-race / irace sense, with a seed as the
instance).

A round hands out its trials, waits for all of them (a failed trial is a missing value, never a wait), then decides:
the leader is the configuration with the best mean dev score; every other one is compared with it on the seeds they
share (paired t-test, Holm-corrected over the round's comparisons, `results.statistics`), and those
separated below it are dropped. The race ends when one configuration is left, when the survivors have run
`max_seeds` seeds, or when the next round would take the trials past the budget. The survivors are the race's top
group: no test separated them from the leader.

This module is pure (no Ray, no files): `Race` is a state machine that the Tune searcher (studies/race_searcher.py)
and the simulation (benchmarks/race_simulation.py) drive, and that round-trips through JSON (race.json, a resumed
study's searcher state).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from results.statistics import ALPHA, compare_with_best

# What a race is told to do when nothing is left to run.
FINISHED = "FINISHED"
# Why a race ended (race.json's "ended").
ONE_LEFT = "one configuration left"
MAX_SEEDS = "the survivors ran the maximum number of seeds"
BUDGET = "the next round would exceed the trial budget"
ALL_FAILED = "no configuration has a successful trial"
DEFAULT_INITIAL_SEEDS = 3
DEFAULT_MAX_SEEDS = 10


class RaceError(ValueError):
    """Race settings that cannot work; the message names the setting."""


@dataclass(frozen=True)
class RaceSettings:
    """initial_seeds: seeds every configuration runs in the first round (a paired t-test needs two, and three give
    it one more degree of freedom); max_seeds: the most seeds any configuration runs; budget: the most trials the
    race may start (None: no limit); alpha: the family-wise level of each round's comparisons with the leader."""

    initial_seeds: int = DEFAULT_INITIAL_SEEDS
    max_seeds: int = DEFAULT_MAX_SEEDS
    budget: int | None = None
    alpha: float = ALPHA

    def check(self, configurations: int) -> None:
        """Refuses settings under which the race could not run its first round or never test anything."""
        if self.initial_seeds < 2:
            raise RaceError(f"--initial-seeds {self.initial_seeds}: a paired comparison needs at least 2 seeds")
        if self.max_seeds < self.initial_seeds:
            raise RaceError(f"--max-seeds {self.max_seeds}: must be >= --initial-seeds ({self.initial_seeds})")
        first_round = configurations * self.initial_seeds
        if self.budget is not None and self.budget < first_round:
            raise RaceError(
                f"--budget {self.budget}: the first round alone runs {first_round} trials ({configurations} "
                f"configuration(s) x {self.initial_seeds} initial seeds)"
            )
        if not 0 < self.alpha < 1:
            raise RaceError(f"alpha {self.alpha}: must be between 0 and 1")


@dataclass
class Comparison:
    """A configuration against the round's leader on their shared seeds: mean difference (leader - it), its raw and
    Holm-adjusted p-values (None below two shared seeds), and whether it was separated below the leader."""

    configuration: int
    seeds: int
    difference: float | None
    p_value: float | None
    adjusted_p: float | None
    separated: bool


@dataclass
class Round:
    """One round: the configurations that ran, the seeds they ran, the trials that came back without a score, and
    the decision taken when all of its trials were back."""

    number: int
    configurations: list[int]
    seeds: list[int]
    missing: list[dict[str, Any]] = field(default_factory=list)
    leader: int | None = None
    means: dict[int, float] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)


@dataclass
class Drop:
    """A configuration that left the race: after its `seeds`-th seed with a score, at `adjusted_p` against `leader`
    (None where it was dropped because none of its trials succeeded)."""

    configuration: int
    round: int
    seeds: int
    leader: int | None
    difference: float | None
    p_value: float | None
    adjusted_p: float | None


class Race:
    """The state of one race over `configurations` (any JSON-able descriptions; the race uses their positions) on
    `seeds` (the order in which seeds are handed out; at least max_seeds of them)."""

    def __init__(self, configurations: Sequence[Any], seeds: Sequence[int], settings: RaceSettings) -> None:
        settings.check(len(configurations))
        if len(seeds) < settings.max_seeds or len(set(seeds)) != len(seeds):
            raise RaceError(f"seeds {list(seeds)}: need {settings.max_seeds} distinct seeds (--max-seeds)")
        self.configurations = list(configurations)
        self.seeds = list(seeds)[: settings.max_seeds]
        self.settings = settings
        # configuration -> seed -> dev score
        self.scores: dict[int, dict[int, float]] = {index: {} for index in range(len(configurations))}
        self.alive: list[int] = list(range(len(configurations)))
        self.rounds: list[Round] = []
        self.drops: list[Drop] = []
        # The current round's trials: not yet handed out, and handed out without an outcome yet.
        self.queue: list[tuple[int, int]] = []
        self.pending: list[tuple[int, int]] = []
        self.started = 0
        self.ended: str | None = None
        self._open_round(self.seeds[: settings.initial_seeds])

    @property
    def finished(self) -> bool:
        return self.ended is not None

    @property
    def seeds_run(self) -> int:
        """Seeds handed to the survivors so far (the current round's included)."""
        return sum(len(round_.seeds) for round_ in self.rounds)

    @property
    def most_trials(self) -> int:
        """The most trials this race can start: every configuration on every seed, or the budget."""
        full = len(self.configurations) * len(self.seeds)
        return full if self.settings.budget is None else min(full, self.settings.budget)

    def next_trial(self) -> tuple[int, int] | str | None:
        """(configuration, seed) to run next; None while the round waits for its trials; FINISHED at the end."""
        if self.finished:
            return FINISHED
        if not self.queue:
            return None
        trial = self.queue.pop(0)
        self.pending.append(trial)
        self.started += 1
        return trial

    def record(self, configuration: int, seed: int, score: float | None, reason: str = "") -> None:
        """The outcome of a handed-out trial: its dev score, or None with the reason it has none (a failed trial).
        The last outcome of the round closes it. A score for a trial of an earlier round (a failed trial retried
        after a resume) counts from the next decision on, where its configuration still runs."""
        trial = (configuration, seed)
        valid = score is not None and math.isfinite(score)
        if trial in self.pending:
            self.pending.remove(trial)
            if valid:
                self.scores[configuration][seed] = float(score)
            else:
                self.rounds[-1].missing.append({"configuration": configuration, "seed": seed, "reason": reason})
            if not self.queue and not self.pending:
                self._close_round()
        elif valid and configuration in self.alive and seed in self.seeds:
            self.scores[configuration][seed] = float(score)

    def means(self, configurations: Sequence[int]) -> dict[int, float]:
        return {index: statistics.fmean(self.scores[index].values()) for index in configurations if self.scores[index]}

    def _open_round(self, seeds: list[int]) -> None:
        self.rounds.append(Round(len(self.rounds) + 1, list(self.alive), list(seeds)))
        # Seed by seed, so that a round cut short (a killed driver) has every configuration on its earlier seeds.
        self.queue = [(configuration, seed) for seed in seeds for configuration in self.alive]

    def _close_round(self) -> None:
        current = self.rounds[-1]
        scored = [index for index in self.alive if self.scores[index]]
        for index in [index for index in self.alive if not self.scores[index]]:
            # Every trial of this configuration failed: nothing to compare, and more seeds would likely fail too.
            self._drop(Drop(index, current.number, 0, None, None, None, None))
        current.means = self.means(scored)
        if not scored:
            self.ended = ALL_FAILED
            return
        leader = max(scored, key=lambda index: (current.means[index], -index))
        current.leader = leader
        ordered = [leader, *(index for index in scored if index != leader)]
        compared = compare_with_best([self.scores[index] for index in ordered], best=0, alpha=self.settings.alpha)
        for index, comparison in zip(ordered[1:], compared[1:], strict=True):
            assert comparison is not None
            current.comparisons.append(
                Comparison(
                    index,
                    comparison.n,
                    _number(comparison.difference),
                    _number(comparison.p_value),
                    _number(comparison.adjusted_p),
                    comparison.separated,
                )
            )
            if comparison.separated:
                self._drop(
                    Drop(index, current.number, len(self.scores[index]), leader, comparison.difference,
                         comparison.p_value, comparison.adjusted_p)
                )  # fmt: skip
        if len(self.alive) == 1:
            self.ended = ONE_LEFT
        elif self.seeds_run >= len(self.seeds):
            self.ended = MAX_SEEDS
        elif self.settings.budget is not None and self.started + len(self.alive) > self.settings.budget:
            self.ended = BUDGET
        else:
            self._open_round([self.seeds[self.seeds_run]])

    def _drop(self, drop: Drop) -> None:
        self.alive.remove(drop.configuration)
        self.rounds[-1].dropped.append(drop.configuration)
        self.drops.append(drop)

    @property
    def top_group(self) -> list[int]:
        """The configurations still in the race, best mean first: none was separated from the leader."""
        means = self.means(self.alive)
        return sorted(self.alive, key=lambda index: (-means.get(index, -math.inf), index))

    def to_json(self) -> dict[str, Any]:
        """The whole state (race.json, and what a resumed study restores)."""
        return {
            "settings": asdict(self.settings),
            "configurations": self.configurations,
            "seeds": self.seeds,
            "scores": {
                str(index): {str(seed): value for seed, value in by_seed.items()}
                for index, by_seed in self.scores.items()
            },
            "alive": self.alive,
            "rounds": [asdict(round_) for round_ in self.rounds],
            "drops": [asdict(drop) for drop in self.drops],
            "queue": [list(trial) for trial in self.queue],
            "pending": [list(trial) for trial in self.pending],
            "trials_started": self.started,
            "trials_scored": sum(len(by_seed) for by_seed in self.scores.values()),
            "trials_missing": sum(len(round_.missing) for round_ in self.rounds),
            "most_trials": self.most_trials,
            "ended": self.ended,
            "top_group": self.top_group if self.finished else None,
        }

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> Race:
        race = cls.__new__(cls)
        race.settings = RaceSettings(**state["settings"])
        race.configurations = list(state["configurations"])
        race.seeds = [int(seed) for seed in state["seeds"]]
        race.scores = {
            int(index): {int(seed): float(value) for seed, value in by_seed.items()}
            for index, by_seed in state["scores"].items()
        }
        race.alive = [int(index) for index in state["alive"]]
        race.rounds = [_round_from_json(round_) for round_ in state["rounds"]]
        race.drops = [Drop(**drop) for drop in state["drops"]]
        race.queue = [(int(configuration), int(seed)) for configuration, seed in state["queue"]]
        race.pending = [(int(configuration), int(seed)) for configuration, seed in state["pending"]]
        race.started = int(state["trials_started"])
        race.ended = state["ended"]
        return race


def _round_from_json(state: dict[str, Any]) -> Round:
    return Round(
        number=state["number"],
        configurations=list(state["configurations"]),
        seeds=list(state["seeds"]),
        missing=list(state["missing"]),
        leader=state["leader"],
        means={int(index): value for index, value in state["means"].items()},
        comparisons=[Comparison(**comparison) for comparison in state["comparisons"]],
        dropped=list(state["dropped"]),
    )


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined statistic is None."""
    return None if math.isnan(value) else float(value)
