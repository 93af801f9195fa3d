"""The paths every GPU trial takes, in every precision it may take them, forced on the CPU: training steps in both
phases, cached and uncached, the feature cache's build, checkpoint save and resume with fp16's loss scale, the
analyses, and a smoke study end to end. CPU autocast runs bf16 and fp16 on any x86 CPU (emulated where not native),
so these run everywhere; the data is a few posts with 32-pixel images, since emulated bf16 is slow.

Tolerances are per precision, with their reasons, in tests/tolerances.py.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SMALL_DEMO_SIZES_AND_IMAGE
from mlflow.tracking import MlflowClient
from tolerances import ATTENTION_PADDING_TOLERANCE, PRECISIONS, RELATIVE_TOLERANCE, REPRESENTATION_PADDING_TOLERANCE

from clmlf import device
from clmlf.analysis import analyse_split
from clmlf.config import build_config
from clmlf.device import CPU_BF16_VARIABLE, resolve_device
from clmlf.evaluate import load_checkpoint
from clmlf.precision import resolve_precision
from clmlf.train import CHECKPOINT_FILE, Run, train
from tracking.mlflow_runs import child_runs

IMAGE_SIZE = SMALL_DEMO_SIZES_AND_IMAGE[1]


@pytest.fixture(params=PRECISIONS)
def precision(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def data_root(small_demo_root) -> Path:
    return small_demo_root


def small_config(data_root: Path, precision: str, **overrides: Any):
    """The tiny preset on the small set: one text-frozen and one fine-tuning epoch of two steps each."""
    settings = {
        "data_root": str(data_root),
        "model.image_size": IMAGE_SIZE,
        "max_train_batches": 2,
        "augmented_views": 1,
        "mixed_precision": precision,
        **overrides,
    }
    return build_config("demo", "tiny", settings)


def quiet(message: str) -> None:
    del message


@pytest.fixture(scope="module")
def fp32_losses(data_root, tmp_path_factory) -> dict[bool, list[float]]:
    """The fp32 reference: the training loss of each epoch, uncached and cached."""
    cache = tmp_path_factory.mktemp("fp32-cache")
    return {
        cached: [
            epoch["train/loss"]
            for epoch in train(
                small_config(data_root, "fp32", feature_cache=cached, feature_cache_dir=str(cache)), log=quiet
            ).history
        ]
        for cached in (False, True)
    }


def test_auto_means_native_bf16_fp16_on_gpus_without_it_and_fp32_elsewhere(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv(CPU_BF16_VARIABLE, "native")
    assert resolve_precision("auto", cpu).name == "bf16"
    monkeypatch.setenv(CPU_BF16_VARIABLE, "emulated")
    chosen = resolve_precision("auto", cpu)
    assert chosen.name == "fp32" and "no native bf16" in chosen.reason
    forced = resolve_precision("bf16", cpu)
    assert forced.name == "bf16" and "emulated" in forced.reason
    assert resolve_precision("fp16", cpu).scales_loss and not resolve_precision("bf16", cpu).scales_loss
    # Old configs said true or false.
    assert build_config("demo", "tiny", {"mixed_precision": "true"}).mixed_precision == "auto"
    assert build_config("demo", "tiny", {"mixed_precision": False}).mixed_precision == "fp32"


def test_a_trial_trains_on_the_gpu_ray_assigned_to_it():
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs: the trial's GPU is then index 0 of what it sees, whatever
    # its physical id; without that variable every GPU is visible and the id is the index.
    assert resolve_device("auto", ["3"], visible="3", cuda_available=True) == torch.device("cuda", 0)
    assert resolve_device("auto", ["3"], visible="1,3", cuda_available=True) == torch.device("cuda", 1)
    assert resolve_device("cuda", ["2"], visible="", cuda_available=True) == torch.device("cuda", 2)
    assert resolve_device("cuda:1", ["2"], visible="2", cuda_available=True) == torch.device("cuda", 1)
    assert resolve_device("auto", ["2"], visible="2", cuda_available=False) == torch.device("cpu")
    with pytest.raises(ValueError, match="hides it"):
        resolve_device("auto", ["2"], visible="0,1", cuda_available=True)


def test_the_device_layer_runs_on_a_cpu():
    cpu = torch.device("cpu")
    tensor = torch.ones(3)
    assert not device.pins_memory(cpu) and device.to_device(tensor, cpu) is tensor
    device.synchronize(cpu)
    device.reset_peak_memory(cpu)
    # On a CPU the peak is the process's resident memory; there is no device memory to read.
    assert device.peak_memory_mb(cpu) > 0
    assert math.isnan(device.allocated_memory_mb(cpu)) and math.isnan(device.reserved_memory_mb(cpu))
    device.release_device_memory(cpu)
    assert device.device_name(cpu) == "CPU"
    assert not device.native_bf16(torch.device("meta"))


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_both_phases_train_in_each_precision(data_root, tmp_path, precision, cached, fp32_losses):
    config = small_config(data_root, precision, feature_cache=cached, feature_cache_dir=str(tmp_path))
    result = train(config, log=quiet)
    assert result.precision["name"] == precision
    assert [epoch["train/text_encoder_frozen"] for epoch in result.history] == [1.0, 0.0]
    for epoch in result.history:
        assert epoch["train/precision"] == precision
        assert all(math.isfinite(epoch[key]) for key in ("train/loss", "dev/score", "dev/acc"))
        # Loss scaling exists under fp16 alone; its scale is a power of two that started at 2^16.
        assert ("train/loss_scale" in epoch) == (precision == "fp16")
        if precision == "fp16":
            assert math.log2(epoch["train/loss_scale"]).is_integer() and epoch["train/skipped_steps"] >= 0
    losses = [epoch["train/loss"] for epoch in result.history]
    assert losses[0] == pytest.approx(fp32_losses[cached][0], rel=RELATIVE_TOLERANCE[precision])


def test_the_feature_cache_keeps_each_precisions_features_apart(data_root, tmp_path):
    for precision in PRECISIONS:
        Run(small_config(data_root, precision, feature_cache=True, feature_cache_dir=str(tmp_path)), log=quiet)
    images = sorted(path for path in tmp_path.glob("images-*") if path.is_dir())
    assert len(images) == len(PRECISIONS)
    dev = [np.load(entry / "dev.npy").astype(np.float32) for entry in images]
    scale = np.abs(dev[0]).max()
    for other in dev[1:]:
        # The same backbone on the same images: equal up to each precision's rounding, yet not identical.
        assert np.abs(other - dev[0]).max() <= 0.05 * scale
    assert any(not np.array_equal(other, dev[0]) for other in dev[1:])


def record(config, output: Path, resume_from: Path | None = None) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    train(config, lambda metrics, epoch, _: reports.append(copy.deepcopy(metrics)), output_dir=output,
          resume_from=resume_from, log=quiet)  # fmt: skip
    return reports


def test_a_resumed_run_continues_with_the_same_numbers_in_each_precision(data_root, tmp_path, precision):
    straight = record(small_config(data_root, precision), tmp_path / "straight")
    output = tmp_path / "resumed"
    record(small_config(data_root, precision, finetune_epochs=0), output)
    state = torch.load(output / "checkpoint" / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert state["grad_scaler"].get("scale") == (65536.0 if precision == "fp16" else None)
    continued = record(small_config(data_root, precision), output, resume_from=output / "checkpoint")
    # The same operations in the same order: the precision changes the numbers, not their repeatability.
    for key in ("train/loss", "train/loss_classification", "dev/score"):
        assert continued[0][key] == pytest.approx(straight[1][key], rel=1e-6), key


def test_fp16_skips_a_step_whose_gradients_overflow_and_resumes_with_its_scale(data_root, tmp_path):
    config = small_config(data_root, "fp16")
    run = Run(config, log=quiet)
    run.set_phase(0, training=True)
    batch = next(iter(run.loader("train", 0))).to(run.device)
    # A scale that overflows fp16 gradients at once (|g| * 2^40 > 65504): the step must be skipped and the scale
    # halved; the weights stay as they were.
    run.scaler.load_state_dict({**run.scaler.state_dict(), "scale": 2.0**40})
    before = {name: value.clone() for name, value in run.model.named_parameters() if value.requires_grad}
    with run.autocast:
        loss = run.losses(batch, 0)["total"]
    assert not run.optimizer_step(loss)
    assert run.scaler.get_scale() == 2.0**39 and run.overflows == 1
    assert all(torch.equal(before[name], value) for name, value in run.model.named_parameters() if name in before)
    # Its scale and count travel with the checkpoint.
    resumed = Run(config, log=quiet)
    resumed.load_state(run.state(0, {}, []), tmp_path / CHECKPOINT_FILE)
    assert resumed.scaler.get_scale() == 2.0**39 and resumed.overflows == 1


def test_the_analyses_run_in_each_precision_and_do_not_depend_on_padding(data_root, tmp_path, precision):
    run_dir = tmp_path / "run"
    train(small_config(data_root, precision), output_dir=run_dir, log=quiet)
    run, state = load_checkpoint(run_dir, log=quiet)
    assert run.precision.name == precision
    batched = analyse_split(run, state["epoch"], "test")
    alone_run, _ = load_checkpoint(run_dir, {"eval_batch_size": 1}, log=quiet)
    alone = analyse_split(alone_run, state["epoch"], "test")
    assert len({len(post.tokens) for post in batched.attention}) > 1, "posts of different lengths pad each other"
    for post, single in zip(batched.attention, alone.attention, strict=True):
        # The attention weights are read in fp32 whatever the run's precision.
        np.testing.assert_allclose(post.rows.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(post.rows, single.rows, atol=ATTENTION_PADDING_TOLERANCE[precision])
    np.testing.assert_allclose(
        batched.representations, alone.representations, atol=REPRESENTATION_PADDING_TOLERANCE[precision]
    )


@pytest.mark.slow
def test_a_smoke_study_runs_end_to_end_in_each_precision(data_root, tmp_path, precision, ray_cluster):
    from studies import layer_sweep

    arguments = [
        "--smoke-test", "--fusion-layers", "1", "--image-layers", "1", "--seeds", "1",
        "--data-root", str(data_root), "--set", f"model.image_size={IMAGE_SIZE}", "--set", "augmented_views=1",
        "--set", f"mixed_precision={precision}",
        "--address", ray_cluster.address, "--gpus-per-trial", "0",
        "--storage-path", str(tmp_path / "tune"), "--name", "precise",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    assert layer_sweep.main(arguments) == 0
    study = tmp_path / "tune" / "precise"
    (trial,) = study.glob("trial_*")
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
    assert [row["train/precision"] for row in rows] == [precision] * len(rows) and len(rows) == 2
    parent = json.loads((study / "mlflow_parent_run.json").read_text())["parent_run_id"]
    (child,) = child_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", parent)
    assert child.data.tags["clmlf.precision"] == precision
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(parent).info.status == "FINISHED"
    assert (study / "report").is_dir()
