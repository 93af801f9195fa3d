"""The race's logic without Ray: rounds, drops with their seed counts and p-values, the stopping rules, failed
trials, and its state through JSON."""

from __future__ import annotations

import json

import pytest

from results.race import (
    ALL_FAILED,
    BUDGET,
    FINISHED,
    MAX_SEEDS,
    ONE_LEFT,
    Race,
    RaceError,
    RaceSettings,
)
from results.statistics import compare_with_best

# Configuration -> seed -> dev score. A seed moves every configuration alike (its shared part), as data order and
# initialisation do; on top of it each configuration has its own small noise.
SEED_EFFECT = [0.00, 0.03, -0.02, 0.01, -0.01, 0.02, 0.00, -0.03, 0.01, 0.02]
OWN_NOISE = [
    [0.004, -0.003, 0.002, -0.001, 0.003, -0.004, 0.001, 0.002, -0.002, 0.000],
    [-0.002, 0.004, -0.003, 0.002, -0.001, 0.003, -0.004, 0.000, 0.001, -0.002],
    [0.003, -0.001, 0.004, -0.003, 0.002, 0.000, -0.002, 0.001, -0.004, 0.003],
]


def score(means: list[float], configuration: int, seed: int) -> float:
    return means[configuration] + SEED_EFFECT[seed] + OWN_NOISE[configuration % 3][seed]


def run_race(race: Race, means: list[float], fail: set[tuple[int, int]] = frozenset()) -> list[tuple[int, int]]:
    """Drive the race to its end, a whole round at a time; returns the trials in the order they were handed out."""
    handed_out = []
    while True:
        round_trials = []
        while (trial := race.next_trial()) not in (None, FINISHED):
            round_trials.append(trial)
        if trial == FINISHED:
            return handed_out
        handed_out += round_trials
        for configuration, seed in round_trials:
            value = None if (configuration, seed) in fail else score(means, configuration, seed)
            race.record(configuration, seed, value, reason="worker lost" if value is None else "")


def test_a_configuration_separated_below_the_leader_is_dropped_after_the_first_round_with_its_p_value():
    means = [0.80, 0.70, 0.80]
    race = Race([{"layers": 1}, {"layers": 2}, {"layers": 3}], list(range(10)), RaceSettings())
    first = [race.next_trial() for _ in range(9)]
    # Three initial seeds, each configuration on each, seed by seed; then the round waits for its trials.
    assert first == [(configuration, seed) for seed in range(3) for configuration in range(3)]
    assert race.next_trial() is None
    for configuration, seed in first:
        race.record(configuration, seed, score(means, configuration, seed))
    dropped = race.drops[0]
    assert (dropped.configuration, dropped.round, dropped.seeds, dropped.leader) == (1, 1, 3, 2)
    # The leader (best mean) against the others, Holm-corrected over the two comparisons.
    expected = compare_with_best([{seed: score(means, index, seed) for seed in range(3)} for index in (2, 0, 1)])
    assert dropped.adjusted_p == pytest.approx(expected[2].adjusted_p) and dropped.adjusted_p < 0.05
    assert not expected[1].separated and len(race.drops) == 1
    assert dropped.difference == pytest.approx(0.10, abs=0.01)
    # The survivors get one more seed each: the fourth.
    assert [race.next_trial(), race.next_trial(), race.next_trial()] == [(0, 3), (2, 3), None]
    assert race.alive == [0, 2] and race.rounds[-1].seeds == [3]


def test_the_race_ends_when_one_configuration_is_left_and_that_is_the_top_group():
    means = [0.70, 0.80, 0.795]
    race = Race(["a", "b", "c"], list(range(10)), RaceSettings())
    handed_out = run_race(race, means)
    assert race.ended == ONE_LEFT and race.top_group == [1]
    assert race.next_trial() == FINISHED
    assert race.started == len(handed_out) < 3 * 10
    # Every drop names its round and how many seeds it had; the dropped ones ran no later round.
    for drop in race.drops:
        later = [trial for trial in handed_out if trial[0] == drop.configuration]
        assert len(later) == drop.seeds == 3 + drop.round - 1
        assert drop.adjusted_p < 0.05


def test_configurations_the_data_cannot_separate_run_to_the_maximum_seeds():
    means = [0.80, 0.80, 0.80]
    race = Race(["a", "b", "c"], list(range(12)), RaceSettings(initial_seeds=3, max_seeds=6))
    handed_out = run_race(race, means)
    assert race.ended == MAX_SEEDS and not race.drops
    assert race.started == len(handed_out) == 3 * 6
    assert sorted(race.top_group) == [0, 1, 2]
    assert [len(round_.seeds) for round_ in race.rounds] == [3, 1, 1, 1]
    # Every round's comparisons are recorded, with p-values where two seeds are shared.
    assert all(len(round_.comparisons) == 2 for round_ in race.rounds)
    assert all(comparison.adjusted_p is not None for round_ in race.rounds for comparison in round_.comparisons)


def test_the_race_stops_before_a_round_that_the_budget_cannot_hold():
    race = Race(["a", "b", "c"], list(range(10)), RaceSettings(budget=13))
    run_race(race, [0.8, 0.8, 0.8])
    # 9 trials in the first round, 3 in the second; a third round of 3 would make 15 > 13.
    assert race.ended == BUDGET and race.started == 12


def test_a_failed_trial_is_missing_and_never_holds_up_its_round():
    means = [0.80, 0.80, 0.80]
    # Configuration 2 fails on every seed; configuration 0 loses one seed of the first round.
    fail = {(2, seed) for seed in range(10)} | {(0, 1)}
    race = Race(["a", "b", "c"], list(range(10)), RaceSettings(max_seeds=4))
    run_race(race, means, fail)
    first = race.rounds[0]
    assert {(entry["configuration"], entry["seed"]) for entry in first.missing} == {(2, 0), (2, 1), (2, 2), (0, 1)}
    assert all(entry["reason"] == "worker lost" for entry in first.missing)
    # The configuration without any score leaves after the first round; the one with a gap is compared on the
    # seeds it shares with the leader.
    assert [(drop.configuration, drop.seeds, drop.adjusted_p) for drop in race.drops] == [(2, 0, None)]
    assert race.ended == MAX_SEEDS and sorted(race.scores[0]) == [0, 2, 3]
    assert race.to_json()["trials_missing"] == 4


def test_a_race_whose_every_trial_fails_ends_with_no_top_group():
    race = Race(["a", "b"], list(range(10)), RaceSettings())
    run_race(race, [0.8, 0.8], fail={(configuration, seed) for configuration in range(2) for seed in range(10)})
    assert race.ended == ALL_FAILED and race.top_group == []


def test_the_state_goes_through_json_in_the_middle_of_a_round_and_the_race_goes_on_alike():
    means = [0.80, 0.70, 0.79, 0.795]
    uninterrupted = Race(["a", "b", "c", "d"], list(range(10)), RaceSettings())
    run_race(uninterrupted, means)

    race = Race(["a", "b", "c", "d"], list(range(10)), RaceSettings())
    handed = [race.next_trial() for _ in range(5)]
    for configuration, seed in handed[:3]:
        race.record(configuration, seed, score(means, configuration, seed))
    restored = Race.from_json(json.loads(json.dumps(race.to_json())))
    assert restored.pending == handed[3:] and len(restored.queue) == 12 - 5
    for configuration, seed in handed[3:]:
        restored.record(configuration, seed, score(means, configuration, seed))
    run_race(restored, means)
    assert restored.to_json() == uninterrupted.to_json()


def test_a_late_score_of_a_running_configuration_counts_from_the_next_decision():
    race = Race(["a", "b"], list(range(10)), RaceSettings(max_seeds=5))
    run_race(race, [0.8, 0.8], fail={(1, 0)})
    assert 0 not in race.scores[1]
    race.record(1, 0, 0.81)
    assert race.scores[1][0] == 0.81


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (RaceSettings(initial_seeds=1), "--initial-seeds"),
        (RaceSettings(initial_seeds=4, max_seeds=3), "--max-seeds"),
        (RaceSettings(budget=8), "--budget 8: the first round alone runs 9 trials"),
    ],
)
def test_settings_that_cannot_race_are_refused_with_the_option_named(settings, named):
    with pytest.raises(RaceError, match=named):
        Race(["a", "b", "c"], list(range(10)), settings)


def test_too_few_seeds_for_the_maximum_are_refused():
    with pytest.raises(RaceError, match="need 10 distinct seeds"):
        Race(["a", "b"], list(range(5)), RaceSettings())
