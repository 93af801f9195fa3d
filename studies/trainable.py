"""The trainer as a Tune trial, and the scheduler that judges trials by what they report.

A trial trains the study's base config with its own values, reports every epoch with its checkpoint, and continues
from Tune's checkpoint when it is retried or the study resumed. Only dev metrics may stop a trial.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from clmlf.config import TrainConfig
from results.record import RANKING_MODE, SELECTED_CHECKPOINT
from studies.cli import StudyInputError

# Reported by every trial: the time axis of the phase-aware scheduler. Tune's `training_iteration` counts
# report() calls, which only happens to equal epochs.
EPOCHS_COMPLETED = "epochs_completed"


def train_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """One Tune trial: train the base config with the trial's values, report every epoch with its checkpoint,
    and continue from Tune's checkpoint when the trial is retried or the study resumed."""
    import ray
    from ray import tune

    from clmlf.device import allocated_memory_mb, reserved_memory_mb, resolve_device
    from clmlf.memory import anonymous_memory_mb
    from clmlf.train import train
    from studies.failures import final_errors_end_the_trial

    started_at = time.time()
    with final_errors_end_the_trial():
        train_config = TrainConfig.from_flat_dict({**base, **config})
    # The GPU Ray assigned to this trial (several trials share one under --gpus-per-trial 0.5), not always cuda:0.
    gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
    device = resolve_device(train_config.device, gpu_ids)
    placement = {
        "trial/node": socket.gethostname(),
        "trial/node_ip": ray.util.get_node_ip_address(),
        "trial/node_id": ray.get_runtime_context().get_node_id(),
        "trial/device": str(device),
        "trial/gpu_ids": ",".join(gpu_ids),
        "trial/cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        # Wall-clock start, and each report's time (trial/reported_at): how trials overlapped.
        "trial/started_at": started_at,
        # The worker process: Tune runs several trials in one (reuse_actors), which this makes visible.
        "trial/process": f"{socket.gethostname()}:{os.getpid()}",
        # What earlier trials in this process left behind; trial/worker_rss_anon_mb is the same after each epoch.
        "trial/worker_rss_anon_start_mb": anonymous_memory_mb(),
        # The same on the GPU (NaN on a CPU): a reused worker must start every trial from its baseline.
        "trial/gpu_allocated_start_mb": allocated_memory_mb(device),
        "trial/gpu_reserved_start_mb": reserved_memory_mb(device),
    }

    def report(metrics: dict[str, Any], epoch: int, checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        memory = {"trial/worker_rss_anon_mb": anonymous_memory_mb(), "trial/reported_at": time.time()}
        selected = {SELECTED_CHECKPOINT: float(metrics["selected/epoch"] == epoch)}
        tune.report(
            {**metrics, "epoch": epoch, EPOCHS_COMPLETED: epoch + 1, **placement, **memory, **selected},
            checkpoint=checkpoint,
        )

    checkpoint = tune.get_checkpoint()
    # Tune copies each reported checkpoint to its storage before report() returns, so one scratch folder
    # per trial is enough.
    with (
        tempfile.TemporaryDirectory(prefix="clmlf-trial-") as output,
        checkpoint.as_directory() if checkpoint is not None else nullcontext(None) as resume_from,
        final_errors_end_the_trial(),
    ):
        train(train_config, report, output_dir=output, resume_from=resume_from, device=device)


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def phase_aware_scheduler(
    base: dict[str, Any],
    grace_period: int | None = None,
    metric: str = "dev/score",
    time_attr: str = EPOCHS_COMPLETED,
    reduction_factor: float = 2,
):
    """ASHA that judges a trial only after its text encoder was fine-tuned for at least one epoch.

    The text-frozen phase says little about a configuration: a grace period that ends inside it would stop
    trials before they really start. So the grace period is at least frozen_text_epochs + 1 epochs (its
    default; the whole run when there is no fine-tuning phase), time is counted in epochs, and only dev metrics
    may prune (test never decides anything).
    """
    from ray.tune.schedulers import ASHAScheduler

    config = TrainConfig.from_flat_dict(base)
    # A run without a fine-tuning phase (the demo preset) is text-frozen to its end, and judged there.
    earliest = min(config.frozen_text_epochs + 1, config.epochs)
    grace_period = earliest if grace_period is None else grace_period
    if time_attr != EPOCHS_COMPLETED:
        raise StudyInputError(f"scheduler time_attr {time_attr!r}: ASHA must count epochs ({EPOCHS_COMPLETED!r})")
    if not metric.startswith("dev/"):
        raise StudyInputError(f"scheduler metric {metric!r}: only dev metrics may stop trials (e.g. dev/score)")
    if grace_period < earliest:
        raise StudyInputError(
            f"--grace-period {grace_period}: ends inside the text-frozen phase ({config.frozen_text_epochs} "
            f"epochs); it must be >= frozen_text_epochs + 1, or the whole run without fine-tuning: {earliest}"
        )
    if grace_period > config.epochs:
        raise StudyInputError(f"--grace-period {grace_period}: longer than the whole run ({config.epochs} epochs)")
    return ASHAScheduler(
        time_attr=time_attr,
        metric=metric,
        mode=RANKING_MODE,
        max_t=config.epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )
