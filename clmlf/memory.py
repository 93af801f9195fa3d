"""A process's own memory: what it holds, and giving back what a finished run allocated.

Tune runs many trials one after another in one reused worker process, so whatever a run leaves behind adds up
over a study. `release_memory` returns a process to its baseline after a run: it collects reference cycles
(collection of the oldest generation is rare in a process that holds millions of long-lived objects, such as a
worker that imported torch, transformers and Ray), hands freed heap pages back to the system (glibc keeps them
otherwise) and empties the CUDA caching allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
from functools import cache
from pathlib import Path

import torch

from clmlf.device import release_device_memory

STATUS_FILE = Path("/proc/self/status")


def anonymous_memory_mb() -> float:
    """The process's resident anonymous memory (heap, tensors, stacks; not mapped files such as the feature
    cache), in MiB; NaN where the kernel does not report it (not Linux)."""
    try:
        lines = STATUS_FILE.read_text().splitlines()
    except OSError:
        return math.nan
    for line in lines:
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    return math.nan


@cache
def _glibc_malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # another C library (musl, macOS) has no malloc_trim
        return None


def release_memory(device: torch.device | None = None) -> None:
    """Free what a finished run left: unreachable reference cycles, freed heap pages and the CUDA cache."""
    gc.collect()
    release_device_memory(device)
    malloc_trim = _glibc_malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)
