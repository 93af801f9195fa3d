"""Which trial failures Tune retries: a failure that a retry cannot fix ends the trial at once; the rest are retried.

Tune retries every failed trial up to FailureConfig(max_failures) times, whatever the error. An invalid config, bad
data, an encoder that cannot be had, a checkpoint that does not fit or is refused (ConfigError, DataError,
EncoderUnavailable, CheckpointMismatch, UnreadableFile) fail the same way on every retry, so a trial that meets one
of them fails once, with its message. A lost node, a killed worker process or any other error is retried from the
trial's last checkpoint as before.

Tune decides whether to retry from the trial's `max_failures` the moment the failure reaches the driver, and no
callback runs in between. So the trial says it first: before it raises, it reports its id to this study's
`FinalFailures` actor and waits until the driver's `RetryPolicy` callback has taken it and set that trial's
`max_failures` to the failures it already had (no retry left); only then does it raise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

# How often the driver looks for trials that reported a final failure, and how long a trial waits for it.
POLL_INTERVAL_S = 0.2
ACKNOWLEDGE_TIMEOUT_S = 60.0


def actor_name(experiment_name: str) -> str:
    return f"clmlf-final-failures/{experiment_name}"


@ray.remote(num_cpus=0)
class FinalFailures:
    """The trials of one study that met an error a retry cannot fix: reported by the trials, taken by the driver."""

    def __init__(self) -> None:
        self.reported: list[str] = []
        self.taken: set[str] = set()

    def report(self, trial_id: str) -> None:
        self.reported.append(trial_id)

    def take(self) -> list[str]:
        taken, self.reported = self.reported, []
        self.taken.update(taken)
        return taken

    def was_taken(self, trial_id: str) -> bool:
        return trial_id in self.taken


class RetryPolicy(tune.Callback):
    """Driver side: takes the trials that reported a final failure and leaves them no retry."""

    def __init__(self, experiment_name: str, retries: int):
        self.experiment_name = experiment_name
        self.retries = retries
        self._actor = None
        self._last_poll = 0.0

    def __getstate__(self) -> dict:
        # Tune pickles the run config; the actor belongs to one driver and is created again after a restore.
        return {"experiment_name": self.experiment_name, "retries": self.retries}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["experiment_name"], state["retries"])

    def setup(self, **info) -> None:
        # On the driver's own node: a worker node may be lost mid-study (a spot instance, a failed machine), and the
        # driver must not lose its record of final failures with it.
        driver_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._actor = FinalFailures.options(
            name=actor_name(self.experiment_name), get_if_exists=True, scheduling_strategy=driver_node
        ).remote()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        # The study's retry budget, also for a trial that --resume-errored runs again after a final failure.
        trial.max_failures = self.retries

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self._actor is None or time.monotonic() - self._last_poll < POLL_INTERVAL_S:
            return
        self._last_poll = time.monotonic()
        final = set(ray.get(self._actor.take.remote()))
        for trial in trials:
            if trial.trial_id in final:
                # Tune retries while failures <= max_failures; the coming failure makes it one more than this.
                trial.max_failures = trial.num_failures


@contextmanager
def final_errors_end_the_trial() -> Iterator[None]:
    """In a trial: an error that a retry cannot fix, raised inside, is reported to the driver before it propagates."""
    # Imported here: the driver imports this module too, and needs neither the trainer nor torch.
    from clmlf.config import ConfigError
    from clmlf.data import DataError
    from clmlf.encoders import EncoderUnavailable
    from clmlf.safe_files import UnreadableFile
    from clmlf.train import CheckpointMismatch

    try:
        yield
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, UnreadableFile):
        context = tune.get_context()
        report_final_failure(context.get_trial_id(), context.get_experiment_name())
        raise


def report_final_failure(trial_id: str, experiment_name: str) -> None:
    """Called by a trial before it raises an error that a retry cannot fix; returns once the driver has taken it (or
    after ACKNOWLEDGE_TIMEOUT_S, when the trial is retried as any other)."""
    try:
        actor = ray.get_actor(actor_name(experiment_name))
    except ValueError:
        return  # not run by a study's driver
    ray.get(actor.report.remote(trial_id))
    deadline = time.monotonic() + ACKNOWLEDGE_TIMEOUT_S
    while time.monotonic() < deadline and not ray.get(actor.was_taken.remote(trial_id)):
        time.sleep(POLL_INTERVAL_S)
