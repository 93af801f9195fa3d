"""Full precision where bf16 would hurt: code wrapped in `in_fp32` runs in float32 under any autocast."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

Function = TypeVar("Function", bound=Callable[..., torch.Tensor])


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
