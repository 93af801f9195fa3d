"""The report's figures: accuracy and F1 against the layer counts (the paper's Figure 3), the dev score against tau
and the loss weights, and Optuna's parameter importances for the dev score (from each search's stored Optuna study).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from report.markup import escape, figure_image, html_table, note
from results import optuna_study
from results.optuna_study import StoredStudy
from results.ranking import Ranking, varying_keys
from results.record import RANKING_METRIC, TrialRecord, f1_metric_of
from results.statistics import CONFIDENCE, estimate

LOSS_PARAMETERS = ("temperature", "lbcl_weight", "dbcl_weight")
LAYER_PARAMETERS = {"model.fusion_layers": "fusion layers", "model.image_layers": "image layers"}


# What the Figure 3 bands are, in the legend.
BAND_LABEL = f"band: {CONFIDENCE:.0%} confidence interval of the mean over seeds (Student t)"


def layer_curves_html(ranking: Ranking) -> str:
    parts = ["<h2>Accuracy and F1 against the layer counts (the paper's Figure 3)</h2>"]
    # A layer sweep holds everything else fixed; other studies' trials would mix in unrelated settings.
    trials = ranking.of_kind("layer_sweep") or ranking.completed
    drawn = False
    for key, name in LAYER_PARAMETERS.items():
        figure = layer_curves_figure(ranking.dataset, trials, key)
        if figure is None:
            parts.append(note(f"The {name} do not vary in these trials: no curve."))
            continue
        parts.append(figure_image(figure, f"accuracy and F1 against {name}"))
        drawn = True
    if drawn:
        parts.append(
            note(
                "Solid: test at the epoch selected on dev; dashed: dev. Points: the mean over seeds; bands: the "
                f"{CONFIDENCE:.0%} confidence interval of that mean (Student t; none at a point run on a single seed). "
                "Trials of layer-sweep studies when there are any, else all completed trials."
            )
        )
    return "\n".join(parts)


def layer_curves_figure(dataset: str, trials: list[TrialRecord], key: str) -> Figure | None:
    """Accuracy and F1 against the layer count `key`, one curve per split and value of the other layer count: the
    mean over seeds with its confidence interval as a band (the legend says so); None where `key` does not vary."""
    values = sorted({trial.config[key] for trial in trials if trial.config})
    if len(values) < 2:
        return None
    f1 = f1_metric_of(dataset)
    other = next(k for k in LAYER_PARAMETERS if k != key)
    figure = Figure(figsize=(11, 3.8))
    axes = figure.subplots(1, 2)
    for axis, (measure, label) in zip(axes, (("acc", "accuracy"), (f1, f1.replace("_", " "))), strict=True):
        for other_value in sorted({trial.config[other] for trial in trials if trial.config}):
            for split, style in (("test", "-"), ("dev", "--")):
                metric = f"selected/{split}/{measure}"
                points = []
                for x in values:
                    ys = [
                        t.metrics[metric]
                        for t in trials
                        if t.config and t.config[key] == x and t.config[other] == other_value and metric in t.metrics
                    ]
                    if ys:
                        points.append((x, estimate(ys)))
                if not points:
                    continue
                xs = [x for x, _ in points]
                line = axis.plot(
                    xs,
                    [interval.mean for _, interval in points],
                    style,
                    marker="o",
                    label=f"{split}, {LAYER_PARAMETERS[other]} = {other_value}",
                )[0]
                # A point on a single seed has no interval (NaN): the band leaves it out.
                axis.fill_between(
                    xs,
                    [interval.low for _, interval in points],
                    [interval.high for _, interval in points],
                    color=line.get_color(),
                    alpha=0.15,
                )
        axis.set_xlabel(LAYER_PARAMETERS[key])
        axis.set_ylabel(label)
        axis.set_xticks(values)
        axis.grid(alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        handles.append(Patch(color="grey", alpha=0.25))
        labels.append(BAND_LABEL)
        axis.legend(handles, labels, fontsize=7)
    figure.suptitle(f"{dataset}: mean over seeds; band: {CONFIDENCE:.0%} confidence interval of the mean")
    return figure


def loss_effects_html(ranking: Ranking) -> str:
    parts = ["<h2>Effect of tau and the loss weights</h2>"]
    trials = [trial for trial in ranking.completed if trial.config]
    varying = [key for key in LOSS_PARAMETERS if len({trial.config[key] for trial in trials}) > 1]
    if not varying:
        parts.append(note("Neither tau (temperature) nor the loss weights vary in these trials."))
        return "\n".join(parts)
    figure = Figure(figsize=(4.2 * len(varying), 3.6))
    axes = figure.subplots(1, len(varying), squeeze=False)[0]
    for axis, key in zip(axes, varying, strict=True):
        for variant in sorted({trial.config["model.variant"] for trial in trials}):
            chosen = [trial for trial in trials if trial.config["model.variant"] == variant]
            axis.scatter(
                [trial.config[key] for trial in chosen],
                [trial.metrics[RANKING_METRIC] for trial in chosen],
                label=variant,
                alpha=0.75,
            )
        values = [trial.config[key] for trial in trials]
        if min(values) > 0 and max(values) / min(values) >= 20:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel("dev score")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, title="variant", title_fontsize=7)
    parts.append(figure_image(figure, "dev score against tau and the loss weights"))
    parts.append(note("One point per trial (every seed); dev score = selected/dev/score."))
    return "\n".join(parts)


def parameter_importances(trials: list[TrialRecord]) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the varying config keys for the dev score, from a study rebuilt out of the trials' configs
    (for a search without a stored Optuna study), or None and why they were skipped."""
    completed = [trial for trial in trials if trial.completed and trial.config]
    if len(completed) < 3:
        return None, f"{len(completed)} completed search trial(s); importances need at least 3."
    configs = [trial.config or {} for trial in completed]
    varying = varying_keys(configs, include_seed=True)
    if not varying:
        return None, "No parameter varies across the search trials."
    distributions = {key: _distribution([config[key] for config in configs]) for key in varying}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        for trial, config in zip(completed, configs, strict=True):
            study.add_trial(
                optuna.trial.create_trial(
                    params={key: config[key] for key in varying},
                    distributions=distributions,
                    value=trial.metrics[RANKING_METRIC],
                )
            )
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    if any(math.isnan(value) for value in importances.values()):
        return None, "The dev score does not vary across the search trials."
    return importances, f"fANOVA over {len(completed)} completed search trial(s), target selected/dev/score."


def _distribution(values: list[Any]) -> optuna.distributions.BaseDistribution:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return optuna.distributions.IntDistribution(min(values), max(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))
    return optuna.distributions.CategoricalDistribution(sorted(set(values), key=repr))


def stored_importances(stored: StoredStudy) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of a search's stored Optuna study, computed by Optuna on the loaded study."""
    study = optuna_study.load(stored)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 3:
        return None, f"{len(completed)} completed trial(s) in the stored study {stored.shown}; importances need 3."
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not importances or any(math.isnan(value) for value in importances.values()):
        return None, f"The objective does not vary across the completed trials of {stored.shown}."
    seeded = sum(1 for trial in completed if optuna_study.WARM_START_ATTRIBUTE in trial.user_attrs)
    warm = f", {seeded} of them seeded by a warm start" if seeded else ""
    return importances, (
        f"fANOVA (optuna.importance) over the {len(completed)} completed trials of the stored Optuna study "
        f"{stored.shown}{warm}; target {study.user_attrs.get(optuna_study.OBJECTIVE_ATTRIBUTE, 'its objective')}."
    )


def search_importances(name: str, storage_url: str | None, trials: list[TrialRecord]) -> tuple[dict | None, str]:
    """A search's importances from its stored Optuna study; from its trials' configs only where it has none (a
    search made before studies were stored) or it cannot be opened here."""
    if storage_url is None:
        importances, explanation = parameter_importances(trials)
        return importances, f"{explanation} No stored Optuna study: rebuilt from the trials' configs."
    try:
        return stored_importances(StoredStudy(storage_url, name))
    except Exception as error:  # the storage's database driver decides what it raises
        importances, explanation = parameter_importances(trials)
        return importances, (
            f"{explanation} The stored Optuna study {name!r} in {storage_url} could not be opened here "
            f"({type(error).__name__}: {error}); rebuilt from the trials' configs."
        )


def importances_html(ranking: Ranking) -> str:
    parts = ["<h2>Parameter importances (Optuna)</h2>"]
    searches: dict[tuple[str, str | None], list[TrialRecord]] = {}
    for trial in ranking.trials:
        if trial.study_kind == "search":
            searches.setdefault((trial.study_name, trial.optuna_storage), []).append(trial)
    if not searches:
        parts.append(note("No search study among the inputs for this data set."))
        return "\n".join(parts)
    for (name, storage_url), trials in sorted(searches.items(), key=lambda item: item[0][0]):
        if len(searches) > 1:
            parts.append(f"<h3>{escape(name)}</h3>")
        importances, explanation = search_importances(name, storage_url, trials)
        if importances is None:
            parts.append(note(f"Skipped: {explanation}"))
            continue
        names = list(importances)
        figure = Figure(figsize=(7, 0.45 * len(names) + 1.2))
        axis = figure.subplots()
        axis.barh(names[::-1], [importances[name] for name in names[::-1]], color="#4c72b0")
        axis.set_xlabel("importance (normalised)")
        axis.grid(alpha=0.3, axis="x")
        parts.append(figure_image(figure, "parameter importances"))
        rows = [[key, f"{importances[key]:.4f}"] for key in names]
        parts.append(html_table(["parameter", "importance"], rows, numeric=[1]))
        parts.append(note(explanation))
    return "\n".join(parts)
