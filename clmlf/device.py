"""Everything that depends on the accelerator, in one place: the device a run uses (in a Ray trial, the GPU Ray
assigned to it), whether that device computes bf16 natively, pinned memory and non-blocking copies, memory
readings, and handing memory back between trials that share a worker process.

Every function runs on a CPU as well, where the CUDA-only parts do nothing, so the tests call them all.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch

CPU_INFO = Path("/proc/cpuinfo")


def visible_index(gpu_id: str, visible: str | None) -> int:
    """The CUDA index of the GPU with the physical id `gpu_id` in this process.

    Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned to the worker, so CUDA numbers them from 0 in that order: the
    index is the id's position in the list. Where Ray leaves the variable alone (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_
    DEVICES), every GPU is visible and the index is the id itself."""
    if visible is None or not visible.strip():
        return int(gpu_id)
    listed = [entry.strip() for entry in visible.split(",")]
    if gpu_id not in listed:
        raise ValueError(f"GPU {gpu_id} was assigned to this process, but CUDA_VISIBLE_DEVICES={visible} hides it")
    return listed.index(gpu_id)


def resolve_device(
    requested: str,
    assigned_gpus: Sequence[str] = (),
    visible: str | None = None,
    cuda_available: bool | None = None,
) -> torch.device:
    """The device a run trains on.

    requested: the config's `device` (auto, cpu, cuda, cuda:N). assigned_gpus: the physical GPU ids a scheduler gave
    this process (`ray.get_gpu_ids()` in a trial); with them, auto and cuda mean the first assigned GPU, never simply
    cuda:0. visible: CUDA_VISIBLE_DEVICES (read from the environment when None). An explicit cuda:N is kept."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == "cpu" or (requested == "auto" and not available):
        return torch.device("cpu")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    if not assigned_gpus:
        return torch.device("cuda")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    return torch.device("cuda", visible_index(str(assigned_gpus[0]), visible))


CPU_BF16_VARIABLE = "CLMLF_CPU_BF16"


@cache
def _cpu_flags() -> str:
    try:
        return CPU_INFO.read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products run several times faster than fp32; without them bf16 is emulated.

    CLMLF_CPU_BF16=native or =emulated overrides what /proc/cpuinfo says: for virtual machines that hide the flags,
    and to run anything (the tests included) as it runs on the other kind of CPU."""
    override = os.environ.get(CPU_BF16_VARIABLE, "").strip().lower()
    if override in ("native", "emulated"):
        return override == "native"
    if override:
        raise ValueError(f"{CPU_BF16_VARIABLE}={override!r}: expected native or emulated")
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matrix products natively (NVIDIA: Ampere and newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


def pins_memory(device: torch.device) -> bool:
    """Loaders pin host memory only for a CUDA device: page-locked buffers make host-to-GPU copies asynchronous."""
    return device.type == "cuda"


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy on `device`; from pinned memory to a GPU it does not wait for the copy to finish."""
    return tensor.to(device, non_blocking=device.type == "cuda")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings end here); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """The most memory held since the last reset: tensors on a GPU; on a CPU, the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def allocated_memory_mb(device: torch.device) -> float:
    """The device memory held by tensors now (GPU); NaN on a CPU, where the process's memory says it
    (clmlf.memory.anonymous_memory_mb)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return float("nan")


def reserved_memory_mb(device: torch.device) -> float:
    """The device memory PyTorch's caching allocator holds now, used or not (GPU); NaN on a CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_reserved(device) / 2**20
    return float("nan")


def release_device_memory(device: torch.device | None) -> None:
    """Hand cached device memory back after a run, so the next trial in the same worker starts from the baseline."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
