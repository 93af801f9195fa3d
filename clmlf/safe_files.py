"""Reading and writing the files that runs and studies leave behind, safely.

Loading: checkpoints and weight files are read with `torch.load(weights_only=True)`, which builds tensors, dicts,
lists, strings and numbers and nothing else. An unrestricted pickle load can run any code, and checkpoints, resume
files and downloaded weights sit on shared storage that other people can write to. A file that needs more than
those types is refused with an error that names it.

Writing: a file is written to a temporary file in its own folder, flushed to disk, then renamed over its final name
(`os.replace`, atomic within one file system). A reader (`--resume`, the report, a colleague) finds the old file or
the new one, never half a file, even when the writer is killed mid-write.

torch is imported inside the functions: command lines import this module before they parse their arguments.
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# How torch's message begins when a weights_only load fails, whether the file asks for an object or is no pickle.
WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


class UnreadableFile(ValueError):
    """A checkpoint or weights file that is refused or cannot be read; the message names the file and says why."""


def load_tensors(path: str | Path, map_location: Any = "cpu") -> Any:
    """The content of a file written by `torch.save`, read with `weights_only=True`: tensors, dicts, lists, tuples,
    strings, numbers. Anything else in the file (an arbitrary object, a function, a class) is refused, unbuilt."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as error:
        raise UnreadableFile(f"{path}: no such file") from error
    except pickle.UnpicklingError as error:
        raise unpickling_refusal(path, error) from error
    except Exception as error:  # torch raises several types for a truncated or foreign file
        summary = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
        raise UnreadableFile(
            f"{path}: not a PyTorch file, or one cut short ({type(error).__name__}: {summary[:300]})"
        ) from error


def unpickling_refusal(path: str | Path, error: Exception) -> UnreadableFile:
    """The error for a file that a weights_only load stopped at: an object it would have had to build, or no pickle."""
    reason = weights_only_reason(str(error))[:300]
    if "global" in reason.lower():
        return UnreadableFile(
            f"{path}: refused: it holds objects beyond tensors, dicts, lists, strings and numbers, which only an "
            f"unrestricted pickle load builds, and such a load can run any code ({reason}). Load only files from "
            "sources you trust, saved with plain containers (e.g. torch.save(model.state_dict(), ...))."
        )
    return UnreadableFile(f"{path}: not a PyTorch file, or one cut short ({reason})")


def weights_only_reason(message: str) -> str:
    """The line of torch's refusal that says what was wrong (an unsupported global, an unknown opcode); torch wraps
    it in a screen about its defaults and allow-lists."""
    if WEIGHTS_ONLY_REFUSAL not in message:
        return message.strip()
    marker = "WeightsUnpickler error:"
    # Past the first line (torch's paragraph on its defaults), or past its marker where torch gives one.
    details = message.split(marker, 1)[1] if marker in message else message.split("\n", 1)[-1]
    lines = [line.strip() for line in details.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Check the documentation", "Please file"))]
    return useful[0] if useful else "no details"


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path in `path`'s folder to write to; when the block ends without an error, the written file is
    flushed to disk and renamed to `path`, replacing what was there. After an error the temporary file is deleted
    and `path` is as it was. Writers that infer a format from the file name need it given (the temporary name ends
    in .tmp)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a file or link someone placed there; 0o666 less the umask, as open() would give.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomically(path: str | Path, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def save_tensors(content: Any, path: str | Path) -> None:
    """`torch.save` of `content`, atomically. Only what `load_tensors` reads back belongs in it: tensors, dicts,
    lists, tuples, strings, numbers, None (no numpy values, no objects)."""
    import torch

    check_plain(content, str(path))
    with replaced_atomically(path) as temporary:
        torch.save(content, temporary)


def check_plain(content: Any, where: str) -> None:
    """Raise a TypeError naming the first value under `where` that `load_tensors` would refuse. Exact types: a numpy
    float is a Python float subclass, and pickles as a numpy object."""
    import torch

    plain = (str, bytes, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)
    if isinstance(content, torch.Tensor) or type(content) in plain:
        return
    if type(content) in (dict, OrderedDict):
        for key, value in content.items():
            if type(key) not in plain:
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, which load_tensors refuses")
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(content) in (list, tuple):
        for index, value in enumerate(content):
            check_plain(value, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where}: a {type(content).__module__}.{type(content).__name__}, which load_tensors refuses; store it as "
        "tensors, dicts, lists, strings or numbers"
    )
