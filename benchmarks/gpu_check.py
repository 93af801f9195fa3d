"""GPU acceptance: what every GPU trial relies on, measured on one GPU in one run (under 8 minutes on an H100/H200).

1. Throughput: the paper preset on generated data of MVSA-Single's size, in bf16 and in fp16 (with loss scaling),
   with and without the feature cache, in the text-frozen and the fine-tuning phase: samples/s, peak GPU memory and
   model FLOP utilisation (FLOPs of one training step, counted by torch's FlopCounterMode, times steps per second,
   over the GPU's dense bf16/fp16 peak); and the cache's speed-up in the text-frozen phase.
2. GPU sharing: a 4-trial layer sweep at --gpus-per-trial 0.25 on the one GPU: how many trials ran at once (from
   the trials' own start and report times), and that each trained on the GPU Ray assigned.
3. Reused workers: a 3-trial sweep at --max-concurrent 1, so one worker process runs all three: the GPU memory held
   at the start of each trial, which must return to the first trial's baseline.

The hub is not reachable on the machines this runs on, so the text encoder is `bert-base-shape` (bert-base's shape,
random weights) and ResNet-50 has random weights: the compute is the paper's, the accuracy is not.

    python benchmarks/gpu_check.py                   # on a GPU machine; writes benchmarks/results/gpu.json
    python benchmarks/gpu_check.py --small           # wiring check on a CPU (tiny data and encoders, an advertised GPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from clmlf.config import build_config
from clmlf.demo_data import DemoSizes, generate_demo_dataset
from clmlf.device import (
    device_name,
    peak_memory_mb,
    release_device_memory,
    reset_peak_memory,
    resolve_device,
    synchronize,
)
from clmlf.loading import Batch
from clmlf.train import Run

ROOT = Path(__file__).resolve().parents[1]
# Dense tensor-core peaks (no sparsity) for bf16 and fp16, which are the same on these GPUs, in FLOP/s.
PEAK_HALF_PRECISION = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10": 125e12, "L4": 121e12,
                       "RTX 3090": 71e12}  # fmt: skip
MVSA_SINGLE_SIZES = DemoSizes(train=3611, dev=450, test=450)
SMALL_SIZES = DemoSizes(train=16, dev=8, test=8)
PRECISIONS = ("bf16", "fp16")
# Two resident workers allocate nothing between trials; a few MiB of slack covers the CUDA context's own buffers.
BASELINE_SLACK_MB = 16.0


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_HALF_PRECISION.items() if key in name), None)


def training_step(run: Run, batch: Batch, epoch: int) -> None:
    with run.autocast:
        terms = run.losses(batch, epoch)
    run.optimizer_step(terms["total"])


def measure_phase(run: Run, epoch: int, steps: int) -> dict[str, Any]:
    """Steps/s, samples/s, peak memory and MFU of `steps` training steps in the phase that `epoch` is in."""
    run.set_phase(epoch, training=True)
    batches = iter(run.loader("train", epoch))
    batch = next(batches).to(run.device)
    with FlopCounterMode(display=False) as counter:
        training_step(run, batch, epoch)
    flops_per_step = counter.get_total_flops()
    synchronize(run.device)
    reset_peak_memory(run.device)
    samples = 0
    started = time.perf_counter()
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(run.loader("train", epoch))
            batch = next(batches)
        batch = batch.to(run.device)
        training_step(run, batch, epoch)
        samples += len(batch)
    synchronize(run.device)
    seconds = time.perf_counter() - started
    peak = peak_flops(run.device)
    return {
        "phase": "text-frozen" if run.text_frozen(epoch) else "fine-tune",
        "steps": steps,
        "samples_per_second": samples / seconds,
        "peak_memory_mb": peak_memory_mb(run.device) if run.device.type == "cuda" else None,
        "flops_per_step": flops_per_step,
        "mfu": flops_per_step * steps / seconds / peak if peak else None,
    }


def throughput(data_root: Path, workspace: Path, small: bool, steps: int) -> list[dict[str, Any]]:
    overrides: dict[str, Any] = {
        "data_root": str(data_root),
        "num_workers": 0 if small else 8,
        "feature_cache_dir": str(workspace / "features"),
        "frozen_text_epochs": 1,
        "finetune_epochs": 1,
    }
    preset = "tiny" if small else "paper"
    if small:
        overrides.update({"model.image_size": 32, "augmented_views": 1})
    else:
        overrides.update({"model.text_encoder": "bert-base-shape", "model.image_weights": "none"})
    rows = []
    for precision in PRECISIONS:
        for cache in (False, True):
            config = build_config("demo", preset, {**overrides, "feature_cache": cache, "mixed_precision": precision})
            started = time.perf_counter()
            run = Run(config, log=lambda message: None)
            setup_seconds = time.perf_counter() - started
            for epoch in (0, 1):
                row = {"precision": run.precision.name, "cache": cache, "setup_seconds": setup_seconds,
                       **measure_phase(run, epoch, steps)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
            device = run.device
            del run
            release_device_memory(device)
    return rows


def cache_speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per precision: text-frozen samples/s with the cache over without it."""
    frozen = {
        (row["precision"], row["cache"]): row["samples_per_second"] for row in rows if row["phase"] == "text-frozen"
    }
    return {precision: frozen[(precision, True)] / frozen[(precision, False)] for precision in PRECISIONS}


def sweep(name: str, workspace: Path, data_root: Path, small: bool, extra: list[str]) -> list[dict[str, Any]]:
    """A layer sweep as a user runs it (its own local Ray); returns each trial's result rows."""
    settings = ["frozen_text_epochs=1", "finetune_epochs=1", f"max_train_batches={2 if small else 30}"]
    if small:
        settings += ["model.image_size=32", "augmented_views=1"]
    else:
        settings += ["model.text_encoder=bert-base-shape", "model.image_weights=none"]
    command = [
        sys.executable, str(ROOT / "studies" / "layer_sweep.py"),
        "--dataset", "demo", "--data-root", str(data_root), "--preset", "tiny" if small else "paper",
        "--image-layers", "1", "--seeds", "1", "--no-analyses",
        "--storage-path", str(workspace / "tune"), "--name", name,
        "--tracking-uri", f"sqlite:///{workspace / 'mlflow.db'}",
        *(argument for setting in settings for argument in ("--set", setting)), *extra,
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for variable in ("RAY_ADDRESS", "CLMLF_RAY_ADDRESS", "MLFLOW_TRACKING_URI", "CLMLF_TRACKING_URI"):
        environment.pop(variable, None)
    if small:
        # No GPU on this machine: one advertised, so that fractional GPUs are scheduled as on a GPU machine.
        environment["RAY_OVERRIDE_RESOURCES"] = json.dumps({"GPU": 1, "CPU": 4})
    log = workspace / f"{name}.log"
    with log.open("w") as handle:
        completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=environment, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"the {name} sweep failed ({completed.returncode}):\n{log.read_text()[-4000:]}")
    trials = []
    for trial_dir in sorted((workspace / "tune" / name).glob("trial_*")):
        lines = (trial_dir / "result.json").read_text().splitlines()
        trials.append([json.loads(line) for line in lines if line.strip()])
    return trials


def most_at_once(trials: list[list[dict[str, Any]]]) -> int:
    """The most trials running at one moment, from each trial's start and last report."""
    events = sorted(
        [(rows[0]["trial/started_at"], 1) for rows in trials] + [(rows[-1]["trial/reported_at"], -1) for rows in trials]
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def sharing(workspace: Path, data_root: Path, small: bool) -> dict[str, Any]:
    cpus = "1" if small else str(max(1, (os.cpu_count() or 4) // 4))
    trials = sweep("sharing", workspace, data_root, small,
                   ["--fusion-layers", "1,2,3,4", "--gpus-per-trial", "0.25", "--cpus-per-trial", cpus])  # fmt: skip
    return {
        "trials": len(trials),
        "most_at_once": most_at_once(trials),
        "devices": sorted({rows[0]["trial/device"] for rows in trials}),
        "gpu_ids": sorted({rows[0]["trial/gpu_ids"] for rows in trials}),
        "processes": len({rows[0]["trial/process"] for rows in trials}),
    }


def reuse(workspace: Path, data_root: Path, small: bool) -> dict[str, Any]:
    trials = sweep("reuse", workspace, data_root, small,
                   ["--fusion-layers", "1,2,3", "--gpus-per-trial", "1", "--max-concurrent", "1"])  # fmt: skip
    trials.sort(key=lambda rows: rows[0]["trial/started_at"])
    starts = [rows[0]["trial/gpu_allocated_start_mb"] for rows in trials]
    rss = [rows[0]["trial/worker_rss_anon_start_mb"] for rows in trials]
    measured = [value for value in starts if value is not None and not math.isnan(value)]
    baseline = measured[0] if measured else None
    # The first trial's start is the worker's baseline; later trials must start from it again.
    returns = None if baseline is None else all(value <= baseline + BASELINE_SLACK_MB for value in measured)
    return {
        "trials": len(trials),
        "processes": len({rows[0]["trial/process"] for rows in trials}),
        "gpu_allocated_start_mb": starts,
        "gpu_reserved_start_mb": [rows[0]["trial/gpu_reserved_start_mb"] for rows in trials],
        "worker_rss_anon_start_mb": rss,
        "returns_to_baseline": returns,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help="timed steps per phase (default 200; --small: 2)")
    parser.add_argument("--small", action="store_true", help="tiny data and encoders: checks the wiring on a CPU")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    arguments = parser.parse_args(argv)
    steps = arguments.steps or (2 if arguments.small else 200)
    device = resolve_device("auto")
    if device.type != "cuda" and not arguments.small:
        parser.error("no CUDA device: run on a GPU machine, or add --small for the wiring check")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder)
        data_root = workspace / "data"
        generate_demo_dataset(data_root, sizes=SMALL_SIZES if arguments.small else MVSA_SINGLE_SIZES,
                              image_size=32 if arguments.small else 256)  # fmt: skip
        rows = throughput(data_root, workspace, arguments.small, steps)
        shared = sharing(workspace, data_root, arguments.small)
        reused = reuse(workspace, data_root, arguments.small)
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "small": arguments.small,
        "seconds": time.perf_counter() - started,
        "throughput": rows,
        "cache_speedup_text_frozen": cache_speedups(rows),
        "sharing": shared,
        "reuse": reused,
    }
    print(f"\n{report['device']}, preset {'tiny (wiring check)' if arguments.small else 'paper (MVSA-Single size)'}")
    print(f"{'precision':9} {'phase':12} {'cache':5} {'samples/s':>10} {'peak MB':>8} {'MFU':>6}")
    for row in rows:
        memory = f"{row['peak_memory_mb']:8.0f}" if row["peak_memory_mb"] is not None else f"{'-':>8}"
        mfu = f"{row['mfu']:6.1%}" if row["mfu"] is not None else f"{'-':>6}"
        cache = "on" if row["cache"] else "off"
        print(f"{row['precision']:9} {row['phase']:12} {cache:5} {row['samples_per_second']:10.1f} {memory} {mfu}")
    speedups = ", ".join(f"{name} {value:.2f}x" for name, value in report["cache_speedup_text_frozen"].items())
    print(f"feature cache, text-frozen phase: {speedups}")
    print(f"GPU sharing: {shared['trials']} trials at 0.25 GPU, at most {shared['most_at_once']} at once, "
          f"devices {shared['devices']}, Ray GPU ids {shared['gpu_ids']}")  # fmt: skip
    print(f"reused worker: {reused['processes']} process(es) for {reused['trials']} trials; GPU memory at each "
          f"trial's start {reused['gpu_allocated_start_mb']} MB; "
          f"back to baseline: {reused['returns_to_baseline']}")  # fmt: skip
    print(f"total {report['seconds']:.0f} s")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
