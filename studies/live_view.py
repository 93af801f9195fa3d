"""The live view of a study on the console: Tune's progress table, made to answer what a study's user watches for.

Each update is one table, one row per trial, whose first columns are the dev score of the trial's latest epoch, the
epoch and the training phase (text-frozen or fine-tune), then the best dev score so far (the selected epoch's) and
what the trial tries; above it, one line names the best trial so far by its selected dev score. Test numbers are
not shown: they never choose anything.

Ray Tune 2.60 prints its own table unless RAY_AIR_NEW_OUTPUT=0; a study sets that (unless the user set it), so
that this reporter (a `ProgressReporter`, Tune's public reporter interface) is the one that prints.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import ProgressReporter

from results.record import RANKING_METRIC, describe_values
from studies.trainable import EPOCHS_COMPLETED

DEV_SCORE = "dev/score"
STATUS_ORDER = ("RUNNING", "PENDING", "PAUSED", "TERMINATED", "ERROR")


class StudyProgress(ProgressReporter):
    """Tune's progress reporter for studies: an update when trials report or change status, at most every
    `interval_s` seconds, and always at the end."""

    def __init__(self, base: dict[str, Any], interval_s: float = 30.0, max_rows: int = 30):
        self.base = dict(base)
        self.interval_s = interval_s
        self.max_rows = max_rows
        self._last_state: tuple = ()
        self._last_time = -math.inf

    def should_report(self, trials: list, done: bool = False) -> bool:
        state = tuple(
            (trial.trial_id, trial.status, (trial.last_result or {}).get(EPOCHS_COMPLETED)) for trial in trials
        )
        if state == self._last_state and not done:
            return False
        if not done and time.monotonic() - self._last_time < self.interval_s:
            return False
        self._last_state, self._last_time = state, time.monotonic()
        return True

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        print(self.render(trials), flush=True)

    def render(self, trials: list) -> str:
        counts = {status: sum(trial.status == status for trial in trials) for status in STATUS_ORDER}
        lines = ["", "trials: " + ", ".join(f"{count} {status}" for status, count in counts.items() if count)]
        lines.append(best_trial_line(trials))
        ordered = sorted(trials, key=lambda trial: (STATUS_ORDER.index(trial.status), trial.trial_id))
        rows = [self.row(trial) for trial in ordered[: self.max_rows]]
        header = ["trial", "status", "dev score", "epoch", "phase", "best dev", "tries"]
        widths = [max(len(str(cells[column])) for cells in [header, *rows]) for column in range(len(header))]
        for cells in [header, *rows]:
            lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        if len(ordered) > self.max_rows:
            lines.append(f"... {len(ordered) - self.max_rows} more trial(s)")
        return "\n".join(lines)

    def row(self, trial) -> list[str]:
        result = trial.last_result or {}
        config = {**self.base, **trial.config}
        epochs = config["frozen_text_epochs"] + config["finetune_epochs"]
        completed = result.get(EPOCHS_COMPLETED)
        phase = "–"
        if completed:
            phase = "text-frozen" if completed <= config["frozen_text_epochs"] else "fine-tune"
        return [
            trial.trial_id,
            trial.status,
            number(result.get(DEV_SCORE)),
            f"{completed}/{epochs}" if completed else f"–/{epochs}",
            phase,
            number(result.get(RANKING_METRIC)),
            describe_values(trial.config),
        ]


def best_trial_line(trials: list) -> str:
    """The best trial so far by its selected dev score (running trials included), or that none has reported."""
    scored = [trial for trial in trials if is_number((trial.last_result or {}).get(RANKING_METRIC))]
    if not scored:
        return "best so far: no trial has reported a dev score yet"
    best = max(scored, key=lambda trial: (trial.last_result[RANKING_METRIC], trial.trial_id))
    result = best.last_result
    return (
        f"best so far: trial {best.trial_id} ({describe_values(best.config)}), dev score "
        f"{result[RANKING_METRIC]:.4f} at epoch {int(result.get('selected/epoch', -1)) + 1}, {best.status}"
    )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any) -> str:
    return f"{value:.4f}" if is_number(value) else "–"
