"""GPU check: the paper preset on generated data of MVSA-Single's size, a few hundred steps in each phase.

Prints training throughput (samples/s), peak GPU memory and model FLOP utilisation (MFU: FLOPs of one training
step, counted by torch's FlopCounterMode, times steps per second, over the GPU's dense bf16 peak) for the
text-frozen phase and the fine-tuning phase, with and without the feature cache. Sized to finish in under
8 minutes on one H100-class GPU.

The hub is not reachable on the machines this runs on, so the text encoder is `bert-base-shape` (bert-base's
shape, random weights) and ResNet-50 has random weights: the compute is the paper's, the accuracy is not.

    python benchmarks/gpu_check.py                        # on a GPU machine
    python benchmarks/gpu_check.py --steps 2 --small      # wiring check on a CPU (minutes)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from clmlf.config import build_config
from clmlf.demo_data import DemoSizes, generate_demo_dataset
from clmlf.loading import Batch
from clmlf.train import Run

# Dense bf16 tensor-core peaks (no sparsity), in FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10": 125e12, "L4": 121e12, "RTX 3090": 71e12}
MVSA_SINGLE_SIZES = DemoSizes(train=3611, dev=450, test=450)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def training_step(run: Run, batch: Batch, epoch: int) -> None:
    with run.autocast:
        terms = run.losses(batch, epoch)
    run.optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    run.optimizer.step()


def measure_phase(run: Run, epoch: int, steps: int) -> dict:
    """Steps/s, samples/s, peak memory and MFU of `steps` training steps in the phase that `epoch` is in."""
    run.set_phase(epoch, training=True)
    batches = iter(run.loader("train", epoch))
    batch = next(batches).to(run.device)
    with FlopCounterMode(display=False) as counter:
        training_step(run, batch, epoch)
    flops_per_step = counter.get_total_flops()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
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
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = peak_flops(run.device)
    return {
        "phase": "text-frozen" if run.text_frozen(epoch) else "fine-tune",
        "steps": steps,
        "samples_per_second": samples / seconds,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if run.device.type == "cuda" else None,
        "flops_per_step": flops_per_step,
        "mfu": flops_per_step * steps / seconds / peak if peak else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per phase")
    parser.add_argument("--small", action="store_true", help="tiny data and encoders: checks the wiring on a CPU")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    arguments = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    with tempfile.TemporaryDirectory() as workspace:
        root = Path(workspace) / "data"
        sizes = DemoSizes(train=64, dev=16, test=16) if arguments.small else MVSA_SINGLE_SIZES
        generate_demo_dataset(root, sizes=sizes, image_size=64 if arguments.small else 256)
        overrides = {
            "data_root": str(root),
            "device": device,
            "num_workers": 0 if arguments.small else 8,
            "feature_cache_dir": str(Path(workspace) / "features"),
            "frozen_text_epochs": 1,
            "finetune_epochs": 1,
        }
        if arguments.small:
            preset = "tiny"
        else:
            preset = "paper"
            overrides.update({"model.text_encoder": "bert-base-shape", "model.image_weights": "none"})
        for cache in (False, True):
            build_started = time.perf_counter()
            run = Run(build_config("demo", preset, {**overrides, "feature_cache": cache}), log=print)
            setup_seconds = time.perf_counter() - build_started
            for epoch in (0, 1):
                row = {"cache": cache, "setup_seconds": setup_seconds, **measure_phase(run, epoch, arguments.steps)}
                results.append(row)
                print(json.dumps(row))
            del run
            if device == "cuda":
                torch.cuda.empty_cache()

    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\n{gpu}, preset {'tiny (wiring check)' if arguments.small else 'paper (MVSA-Single size)'}")
    print(f"{'phase':12} {'cache':5} {'samples/s':>10} {'peak GB':>8} {'MFU':>6}")
    for row in results:
        memory = f"{row['peak_memory_gb']:8.1f}" if row["peak_memory_gb"] is not None else f"{'-':>8}"
        mfu = f"{row['mfu']:6.1%}" if row["mfu"] is not None else f"{'-':>6}"
        print(f"{row['phase']:12} {'on' if row['cache'] else 'off':5} {row['samples_per_second']:10.1f} {memory} {mfu}")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps({"device": gpu, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
