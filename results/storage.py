"""A study's folder, `<storage>/<name>`: Tune's files and the ones a study writes beside them, read and written
wherever the folder lives (a local or NFS path, or a URI such as s3://bucket/tune/name).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from pathlib import Path
from typing import Any

from clmlf.safe_files import write_text_atomically

# The study's saved arguments (what --resume runs again).
STUDY_FILE = "study.json"
# The flat config that every trial starts from; a trial's Tune config holds only its own values.
BASE_CONFIG_FILE = "base_config.json"
# The study's MLflow parent run (tracking URI, experiment, run id, study kind and name).
PARENT_RUN_FILE = "mlflow_parent_run.json"
BEST_CONFIG_FILE = "best_config.json"
TRIALS_FILE = "trials.csv"
REPORT_FOLDER = "report"
# A race's rounds, drops and top group (--seeds auto; results/race.py).
RACE_FILE = "race.json"
# Created first, exclusively, by a new study: the folder is its own before it writes anything (claim_folder).
CLAIM_FILE = "study.claim"
# Every configuration's interval and comparison with the best, the top group and the study's conclusion.
COMPARISON_FILE = "comparison.json"
# The best model's analyses (analyses/), drawn when the study concludes or by `python -m analyses`.
ANALYSIS_FOLDER = "analysis"


def is_remote(location: str) -> bool:
    return "://" in location


def absolute_location(location: str) -> str:
    """A URI as it is (s3://...), a local path made absolute."""
    return location if is_remote(location) else str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts]) if is_remote(location) else str(Path(location, *parts))


def write_text(location: str, text: str) -> None:
    """The whole file or none of it: locally a temporary file renamed over it (clmlf/safe_files.py); an object
    store's upload only appears when it completes."""
    if is_remote(location):
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode())
        return
    write_text_atomically(location, text)


def claim_folder(location: str) -> dict[str, Any] | None:
    """Claim a new study's folder for this process; None where this call claimed it, else what the holder wrote.

    Locally (and on NFS) the claim is one hard link to the folder's CLAIM_FILE, which fails where that exists: of two
    studies started with one name, exactly one gets it, and the other stops before it writes anything. An object
    store (s3://...) offers no exclusive create here: its claim is a check, then a write."""
    import getpass
    import os
    import socket
    import threading
    import time

    holder = {"host": socket.gethostname(), "pid": os.getpid(), "user": getpass.getuser(), "claimed": time.time()}
    claim = join(location, CLAIM_FILE)
    if is_remote(location):
        existing = read_text(claim)
        if existing is not None:
            return _claim_content(existing)
        write_text(claim, json.dumps(holder))
        return None
    Path(location).mkdir(parents=True, exist_ok=True)
    # The holder is written to a file of this process's own, then hard-linked to the claim's name: the link fails
    # where the name exists, and a loser never reads a claim that its winner has created but not yet filled.
    written = Path(location, f".{CLAIM_FILE}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}")
    written.write_text(json.dumps(holder))
    try:
        os.link(written, claim)
    except FileExistsError:
        return _claim_content(read_text(claim) or "")
    finally:
        written.unlink()
    return None


def release_claim(location: str) -> None:
    """Give back a claim of a study that stopped before it wrote anything: its claim file, and the folder if empty."""
    if is_remote(location):
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(join(location, CLAIM_FILE))
        filesystem.delete_file(path)
        return
    Path(location, CLAIM_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path(location).rmdir()


def describe_claim(holder: dict[str, Any]) -> str:
    """Who holds a claim, for an error message."""
    import time

    claimed = holder.get("claimed")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(claimed)) if isinstance(claimed, (int, float)) else "?"
    return f"process {holder.get('pid', '?')} of {holder.get('user', '?')} on {holder.get('host', '?')}, at {when}"


def _claim_content(text: str) -> dict[str, Any]:
    # A claim being written at this very moment may still be empty.
    try:
        content = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return content if isinstance(content, dict) else {}


def read_text(location: str) -> str | None:
    """The file's text, or None where there is no such file."""
    if is_remote(location):
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        with filesystem.open_input_stream(path) as stream:
            return stream.readall().decode()
    return Path(location).read_text() if Path(location).is_file() else None


def write_json(location: str, content: Any) -> None:
    write_text(location, json.dumps(content, indent=2, default=str))


def read_json_object(location: str) -> dict[str, Any] | None:
    """A JSON object file, or None where there is no such file; anything else is a ValueError naming the file."""
    text = read_text(location)
    if text is None:
        return None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{location}: not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{location}: expected a JSON object, found {type(content).__name__}")
    return content


def hide_password(text: str) -> str:
    """A URL with its password replaced by ***, for MLflow and printed lines; anything else as it is."""
    if "://" not in text:
        return text
    parts = urllib.parse.urlsplit(text)
    if not parts.password:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def with_password(saved: str, given: str) -> str:
    """A URI saved with its password hidden, completed from the URI given now (flag or environment) where that
    names the same store; otherwise `saved` as it is."""
    return given if hide_password(given) == saved else saved
