"""Throughput with and without the feature cache: per phase, per preset, and for the whole default layer sweep.

Each measurement runs in its own process (so peak memory is that run's own) on the demo data set: one epoch
with the text encoder frozen, then one fine-tuning epoch. "cached" runs find their features already built (the
build is timed separately: a study pays it once, every later trial reuses it). On a GPU the `paper` preset is
measured too. The sweep figure is the wall time of `studies/layer_sweep.py` with its defaults, once with a
fresh (empty) cache and once with the cache off.

    python benchmarks/throughput.py                  # presets tiny and demo, plus the layer sweep
    python benchmarks/throughput.py --skip-sweep     # per-phase figures only (a few minutes)

Prints a table and writes benchmarks/results/throughput.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# Runs train() as is; the frozen encoders' forward passes in training steps (Run.encoded, where they run
# without autograd when nothing is cached) are timed on the side, per epoch.
MEASURE = """
import json, sys, time
import torch
from clmlf.config import build_config
from clmlf.train import Run, train
preset, overrides = sys.argv[1], json.loads(sys.argv[2])
encoder_seconds = {}
encoded = Run.encoded

def synchronize(run):
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)

def timed_encoded(run, inputs, epoch):
    if not run.model.training:
        return encoded(run, inputs, epoch)
    synchronize(run)
    started = time.perf_counter()
    inputs = encoded(run, inputs, epoch)
    synchronize(run)
    encoder_seconds[epoch] = encoder_seconds.get(epoch, 0.0) + time.perf_counter() - started
    return inputs

Run.encoded = timed_encoded
config = build_config("demo", preset, overrides)
started = time.perf_counter()
result = train(config, log=lambda message: None)
seconds = time.perf_counter() - started
print(json.dumps({"history": result.history, "encoder_seconds": encoder_seconds, "seconds": seconds}))
"""


def run_training(preset: str, overrides: dict, environment: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, preset, json.dumps(overrides)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{preset} {overrides} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_preset(preset: str, environment: dict, train_batches: int) -> list[dict]:
    """One epoch per phase, uncached then cached (after a build whose time is recorded on its own)."""
    phases = {"frozen_text_epochs": 1, "finetune_epochs": 1, "max_train_batches": train_batches}
    rows = []
    uncached = run_training(preset, {**phases, "feature_cache": False}, environment)
    build_started = time.perf_counter()
    build_run = {"frozen_text_epochs": 1, "finetune_epochs": 0, "max_train_batches": 1, "feature_cache": True}
    run_training(preset, build_run, environment)
    build_seconds = time.perf_counter() - build_started
    cached = run_training(preset, {**phases, "feature_cache": True}, environment)
    for label, measured in (("off", uncached), ("on", cached)):
        for epoch in measured["history"]:
            seconds = epoch["train/epoch_seconds"]
            removable = epoch["train/data_wait_seconds"] + measured["encoder_seconds"].get(str(epoch["epoch"]), 0.0)
            rows.append(
                {
                    "preset": preset,
                    "cache": label,
                    "phase": "text-frozen" if epoch["train/text_encoder_frozen"] else "fine-tune",
                    "samples_per_second": epoch["train/samples_per_second"],
                    "peak_memory_mb": epoch["train/peak_memory_mb"],
                    "epoch_seconds": seconds,
                    "data_wait_seconds": epoch["train/data_wait_seconds"],
                    "frozen_encoder_seconds": measured["encoder_seconds"].get(str(epoch["epoch"]), 0.0),
                    # Amdahl: the uncached epoch over what is left of it when loading and frozen encoders cost nothing.
                    # An estimate: a cached run also touches less memory, so it can come out slightly above.
                    "cache_speedup_bound": seconds / (seconds - removable) if label == "off" else None,
                    "cache_build_seconds": build_seconds if label == "on" else None,
                }
            )
    return rows


def measure_sweep(environment: dict, cache: bool) -> float:
    name = f"benchmark-sweep-{'cache' if cache else 'nocache'}-{int(time.time())}"
    with tempfile.TemporaryDirectory() as storage:
        command = [
            sys.executable,
            "studies/layer_sweep.py",
            "--name",
            name,
            "--storage-path",
            storage,
            "--tracking-uri",
            f"sqlite:///{storage}/mlflow.db",
            "--set",
            f"feature_cache={str(cache).lower()}",
        ]
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=environment, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "demo"])
    parser.add_argument("--train-batches", type=int, default=0, help="bound the batches per epoch (0: all)")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "throughput.json")
    arguments = parser.parse_args(argv)

    presets = list(arguments.presets)
    if torch.cuda.is_available() and "paper" not in presets:
        presets.append("paper")
    with tempfile.TemporaryDirectory() as cache:
        # A fresh cache folder: the demo data set is generated once in it, and no feature is reused from earlier.
        environment = {**os.environ, "CLMLF_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        rows = [row for preset in presets for row in measure_preset(preset, environment, arguments.train_batches)]
        sweep = {}
        if not arguments.skip_sweep:
            sweep["without_cache_seconds"] = measure_sweep(environment, cache=False)
            environment["CLMLF_CACHE_DIR"] = tempfile.mkdtemp(dir=cache)
            sweep["with_cache_seconds"] = measure_sweep(environment, cache=True)
            sweep["speedup"] = sweep["without_cache_seconds"] / sweep["with_cache_seconds"]

    print(
        f"{'preset':8} {'phase':12} {'cache':5} {'samples/s':>10} {'peak MB':>9} {'loading s':>10} "
        f"{'encoders s':>11} {'speed-up':>9} {'bound':>7}"
    )
    for row in rows:
        baseline = next(
            other
            for other in rows
            if other["preset"] == row["preset"] and other["phase"] == row["phase"] and other["cache"] == "off"
        )
        print(
            f"{row['preset']:8} {row['phase']:12} {row['cache']:5} {row['samples_per_second']:10.1f} "
            f"{row['peak_memory_mb']:9.0f} {row['data_wait_seconds']:10.2f} {row['frozen_encoder_seconds']:11.2f} "
            f"{row['samples_per_second'] / baseline['samples_per_second']:8.2f}x "
            f"{baseline['cache_speedup_bound']:6.2f}x"
        )
    print(
        "loading s / encoders s: seconds of the epoch spent waiting for batches / in frozen encoders' forward passes; "
        "bound: the uncached epoch over what is left of it without those (Amdahl's estimate of what a cache can give)"
    )
    for row in rows:
        if row["cache_build_seconds"] is not None and row["phase"] == "text-frozen":
            print(
                f"first cached run ({row['preset']}: start-up, cache build, one batch): "
                f"{row['cache_build_seconds']:.1f} s, once per study and node"
            )
    if sweep:
        print(
            f"default layer sweep: {sweep['without_cache_seconds']:.0f} s without the cache, "
            f"{sweep['with_cache_seconds']:.0f} s with it ({sweep['speedup']:.2f}x)"
        )
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps({"machine": machine, "phases": rows, "layer_sweep": sweep}, indent=2))
    print(f"written: {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
