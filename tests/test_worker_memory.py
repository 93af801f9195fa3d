"""A reused trial worker gives back what each trial allocated: several trials run one after another in one Ray
worker process (Tune's reuse_actors, as every study runs them), and the process's anonymous memory at the start
of each trial stays near where it was after the first trial."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from clmlf.memory import anonymous_memory_mb, release_memory
from studies import layer_sweep

PROJECT_ROOT = Path(__file__).resolve().parents[1]

TRIALS = 5
# The first trial warms the process up for good (lazy imports, the tokenizer, thread pools, allocator arenas), so
# growth is counted from the second trial's start on. A run of the tiny preset that stays alive holds about 80 MB
# (model, optimiser state, data), so a worker that kept each trial's run would grow by several times this bound.
GROWTH_BOUND_MB = 60


def trial_rows(experiment: Path) -> list[dict]:
    """The last result row of each trial, in the order the trials started."""
    rows = []
    for result_file in experiment.glob("trial_*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        rows.append(lines[-1])
    return sorted(rows, key=lambda row: row["timestamp"])


@pytest.fixture
def one_cpu_cluster(clmlf_cache_dir, monkeypatch) -> str:
    """A Ray cluster of one node with one CPU: Tune runs one trial at a time, all in one reused worker."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        yield cluster.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_reused_worker_returns_to_its_baseline_between_trials(tmp_path, one_cpu_cluster):
    arguments = [
        "--address", one_cpu_cluster,
        "--smoke-test", "--no-analyses",
        "--fusion-layers", f"1-{TRIALS}",
        "--image-layers", "1",
        "--seeds", "1",
        "--storage-path", str(tmp_path / "tune"),
        "--name", "memory",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    assert layer_sweep.main(arguments) == 0

    rows = trial_rows(tmp_path / "tune" / "memory")
    assert len(rows) == TRIALS
    assert len({row["trial/process"] for row in rows}) == 1, "the trials did not run in one reused worker"
    starts = [row["trial/worker_rss_anon_start_mb"] for row in rows]
    print("worker anonymous memory at each trial's start (MB):", [round(value) for value in starts])
    print("... and after each trial's last epoch (MB):", [round(row["trial/worker_rss_anon_mb"]) for row in rows])
    assert max(starts[1:]) - starts[1] < GROWTH_BOUND_MB, f"the worker kept what its trials allocated: {starts}"


def test_anonymous_memory_counts_what_the_process_allocates_and_frees():
    before = anonymous_memory_mb()
    block = np.ones(2**23)  # 64 MiB, every page written
    held = anonymous_memory_mb()
    del block
    release_memory()
    after = anonymous_memory_mb()
    assert held - before > 48
    assert held - after > 48
