"""`benchmarks/gpu_check.py --small`: the GPU acceptance script's wiring on a CPU, with tiny data and encoders and
one advertised GPU, so that what it runs on a GPU machine is known to run to its end and write what it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_every_part_and_writes_its_report(tmp_path):
    output = tmp_path / "gpu.json"
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_check.py"), "--small", "--output", str(output)],
        capture_output=True, text=True, env=environment, timeout=1500, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["small"] and report["device"] == "CPU"
    # Both precisions GPUs train in, with and without the cache, in both phases.
    measured = {(row["precision"], row["cache"], row["phase"]) for row in report["throughput"]}
    assert measured == {
        (precision, cache, phase)
        for precision in ("bf16", "fp16")
        for cache in (False, True)
        for phase in ("text-frozen", "fine-tune")
    }
    assert all(row["samples_per_second"] > 0 and row["flops_per_step"] > 0 for row in report["throughput"])
    assert set(report["cache_speedup_text_frozen"]) == {"bf16", "fp16"}
    # Four trials at a quarter GPU each ran at once on the one (advertised) GPU, which Ray assigned to each.
    assert report["sharing"]["trials"] == 4 and report["sharing"]["most_at_once"] == 4
    assert report["sharing"]["gpu_ids"] == ["0"]
    # One reused worker ran the three trials of the limited sweep; on a CPU there is no GPU memory to judge.
    assert (report["reuse"]["trials"], report["reuse"]["processes"]) == (3, 1)
    assert report["reuse"]["returns_to_baseline"] is None
    assert "GPU sharing: 4 trials at 0.25 GPU, at most 4 at once" in completed.stdout
