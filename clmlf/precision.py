"""The numeric precision a run trains in, and full precision where lower precision would hurt.

`mixed_precision` is one of:
- `auto`: bf16 autocast where the device computes bf16 natively (NVIDIA Ampere and newer, CPUs with AVX512-BF16 or
  AMX); fp16 autocast with loss scaling on CUDA devices without bf16 (V100, T4); fp32 elsewhere.
- `bf16`, `fp16`, `fp32`: that precision on any device. CPU autocast accepts bf16 and fp16 on every x86 CPU (emulated
  where not native, and then slower than fp32), so every path that GPUs run can be exercised on a CPU.

Under either autocast the master weights, the optimiser state, the losses (`in_fp32`), the attention pooling's
softmax and every reported metric stay fp32. fp16's narrow range (|x| <= 65504) makes small gradients underflow, so
its loss is scaled up before backward and the gradients scaled down before the step (`torch.amp.GradScaler`); a step
whose gradients overflowed is skipped and the scale halved.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import torch

from clmlf.config import PRECISIONS
from clmlf.device import device_name, native_bf16

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

Function = TypeVar("Function", bound=Callable[..., torch.Tensor])


@dataclass(frozen=True)
class Precision:
    """The precision a run uses on its device, and why (logged with every run)."""

    name: str  # bf16, fp16 or fp32
    reason: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES.get(self.name, torch.float32)

    @property
    def scales_loss(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> AbstractContextManager:
        """Autocast to bf16 or fp16 around the forward pass and the loss; nothing for fp32."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16; for the other precisions a disabled scaler, whose calls pass straight through."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scales_loss)


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """The precision that `setting` (one of PRECISIONS) means on `device`."""
    name = device_name(device)
    native = native_bf16(device)
    if setting == "auto":
        if native:
            return Precision("bf16", f"auto: {name} computes bf16 natively", device.type)
        if device.type == "cuda":
            return Precision("fp16", f"auto: {name} has no native bf16; fp16 with loss scaling", device.type)
        return Precision("fp32", f"auto: {name} has no native bf16 (AVX512-BF16 or AMX); fp32", device.type)
    if setting == "bf16" and not native:
        return Precision("bf16", f"bf16 as set; emulated on {name}, slower than native", device.type)
    if setting in ("bf16", "fp16", "fp32"):
        return Precision(setting, f"{setting} as set", device.type)
    raise ValueError(f"mixed_precision: {setting!r} is not one of {PRECISIONS}")


def in_fp32(function: Function) -> Function:
    """`function` (a loss, a module) with autocast off and its floating-point tensor arguments cast to float32."""

    @functools.wraps(function)
    def wrapper(*arguments, **keywords):
        device = next(value for value in arguments if isinstance(value, torch.Tensor)).device.type
        arguments = [_float32(value) for value in arguments]
        keywords = {name: _float32(value) for name, value in keywords.items()}
        with torch.autocast(device, enabled=False):
            return function(*arguments, **keywords)

    return wrapper  # type: ignore[return-value]


def _float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value
