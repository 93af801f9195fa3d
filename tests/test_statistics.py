"""The statistics behind every summary: t intervals, paired comparisons with the best, Holm's correction and the top
group, checked against values worked out by hand and against scipy; and the sentence that says how sure a study is."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from clmlf.config import build_config
from results.comparison import listing, p_text
from results.ranking import rank
from results.record import TrialRecord
from results.statistics import compare_with_best, estimate, holm, paired_comparison, top_group


def test_the_interval_is_students_t_around_the_mean():
    interval = estimate([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764; sd = sqrt(2.5); half width = 2.7764 * 1.5811 / sqrt(5) = 1.9632.
    assert (interval.n, interval.mean) == (5, 3.0)
    assert interval.std == pytest.approx(math.sqrt(2.5))
    assert (interval.low, interval.high) == pytest.approx((3 - 1.9632, 3 + 1.9632), abs=1e-4)
    single = estimate([0.7])
    assert single.mean == 0.7 and math.isnan(single.low) and math.isnan(single.std)
    assert estimate([]).n == 0


def test_holm_multiplies_by_the_remaining_family_and_never_decreases():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.02, math.nan, 0.01])
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)


def test_a_paired_comparison_uses_the_shared_seeds_only():
    best = {0: 0.80, 1: 0.85, 2: 0.82, 3: 0.90}
    other = {0: 0.75, 1: 0.81, 2: 0.80, 5: 0.99}
    comparison = paired_comparison(best, other)
    assert comparison.seeds == (0, 1, 2)
    assert comparison.difference == pytest.approx((0.05 + 0.04 + 0.02) / 3)
    assert comparison.p_value == pytest.approx(stats.ttest_rel([0.80, 0.85, 0.82], [0.75, 0.81, 0.80]).pvalue)
    assert comparison.low < comparison.difference < comparison.high
    assert math.isnan(paired_comparison({0: 1.0}, {0: 0.5}).p_value)


def test_the_top_group_keeps_what_the_family_cannot_separate_from_the_best():
    seeds = range(8)
    noise = [0.010, -0.020, 0.015, -0.005, 0.000, 0.020, -0.010, -0.012]
    best = {seed: 0.85 + noise[seed] for seed in seeds}
    close = {seed: 0.848 + noise[(seed + 3) % 8] for seed in seeds}
    far = {seed: 0.70 + noise[seed] / 2 for seed in seeds}
    comparisons = compare_with_best([best, close, far])
    assert comparisons[0] is None
    assert not comparisons[1].separated and comparisons[2].separated
    assert comparisons[2].adjusted_p == pytest.approx(min(1.0, 2 * comparisons[2].p_value))
    assert top_group(comparisons) == [0, 1]
    # A configuration that scored higher on the shared seeds is never separated below the best.
    higher = {seed: value + 0.1 for seed, value in best.items()}
    assert not compare_with_best([best, higher])[1].separated


def _sweep(scores: dict[int, list[float]]) -> list[TrialRecord]:
    """Completed layer-sweep trials: fusion layers -> dev score by seed."""
    trials = []
    for layers, by_seed in scores.items():
        for seed, score in enumerate(by_seed):
            config = build_config("demo", "tiny", {"seed": seed, "model.fusion_layers": layers}).to_flat_dict()
            trials.append(TrialRecord(f"{layers}_{seed}", "demo", "TERMINATED", config, {"selected/dev/score": score}))
    return trials


def test_the_conclusion_names_the_best_its_interval_the_top_group_and_what_is_worse():
    best = [0.80, 0.82, 0.81, 0.83]
    close = [0.79, 0.825, 0.80, 0.82]
    far = [0.75, 0.78, 0.76, 0.77]
    comparison = rank("demo", _sweep({1: close, 2: best, 3: far})).comparison
    p_close = stats.ttest_rel(best, close).pvalue
    p_far = stats.ttest_rel(best, far).pvalue
    adjusted_far = holm([p_close, p_far])[1]
    low, high = stats.t.interval(0.95, 3, loc=0.815, scale=statistics.stdev(best) / 2)
    assert [standing.label for standing in comparison.top_group] == ["2 fusion layers", "1 fusion layer"]
    assert [standing.verdict for standing in comparison.standings] == ["best", "not separated", "separated"]
    assert comparison.sentence() == (
        f"2 fusion layers has the best mean dev score (0.815 [{low:.3f}, {high:.3f}], 4 seeds); 1 fusion layer is not "
        f"separated from it; 3 fusion layers (p = {adjusted_far:.3f}) is worse (paired t-test on the seeds both ran, "
        "Holm-adjusted over the comparisons with the best, alpha 0.05)."
    )
    document = comparison.to_json()
    assert document["top_group"] == ["2 fusion layers", "1 fusion layer"]
    assert document["configurations"][2]["vs_best"]["p_holm"] == pytest.approx(adjusted_far)


def test_with_one_seed_per_configuration_no_comparison_is_possible():
    comparison = rank("demo", _sweep({1: [0.70], 2: [0.90], 3: [0.50]})).comparison
    # Nothing can be separated from the best, so every configuration stays in the top group.
    assert len(comparison.top_group) == 3 and not comparison.compared
    assert comparison.sentence() == (
        "2 fusion layers has the best mean dev score (0.900, 1 seed); with one seed per configuration no comparison "
        "is possible, and the order of the configurations may be seed noise (more seeds, --seeds, make it testable)."
    )
    assert rank("demo", []).comparison.sentence() == "No configuration completed, so there is nothing to compare."
    only = rank("demo", _sweep({2: [0.8, 0.9]})).comparison.sentence()
    assert only.startswith("configuration ") and "is the only configuration" in only


def test_long_lists_in_the_conclusion_are_cut_and_p_values_are_written_plainly():
    assert listing(["a"]) == "a" and listing(["a", "b", "c"]) == "a, b and c"
    assert listing([str(index) for index in range(9)]) == "0, 1, 2, 3, 4 and 4 others"
    assert (p_text(0.0004), p_text(0.0312), p_text(math.nan)) == ("p < 0.001", "p = 0.031", "no test possible")
