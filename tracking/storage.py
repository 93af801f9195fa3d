"""A study's folder, `<storage>/<name>`: Tune's files and the ones a study writes beside them, read and written
wherever the folder lives (a local or NFS path, or a URI such as s3://bucket/tune/name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The study's saved arguments (what --resume runs again).
STUDY_FILE = "study.json"
# The flat config that every trial starts from; a trial's Tune config holds only its own values.
BASE_CONFIG_FILE = "base_config.json"
# The study's MLflow parent run (tracking URI, experiment, run id, study kind and name).
PARENT_RUN_FILE = "mlflow_parent_run.json"
BEST_CONFIG_FILE = "best_config.json"
TRIALS_FILE = "trials.csv"
REPORT_FOLDER = "report"
# A race's rounds, drops and top group (--seeds auto; tracking/results/race.py).
RACE_FILE = "race.json"


def is_remote(location: str) -> bool:
    return "://" in location


def absolute_location(location: str) -> str:
    """A URI as it is (s3://...), a local path made absolute."""
    return location if is_remote(location) else str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts]) if is_remote(location) else str(Path(location, *parts))


def write_text(location: str, text: str) -> None:
    if is_remote(location):
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode())
        return
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    Path(location).write_text(text)


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
