"""Named failure points in a study's driver, for fault tests that stop it at a moment they choose.

`CLMLF_FAILPOINTS` lists the points to arm, comma-separated, each `point[@n]=action`: at the n-th time the driver
passes the point (default the first), `kill` ends the driver with SIGKILL, as a lost machine or an out-of-memory
kill would, and `pause` stops it there until the test lets it go on. A paused driver creates the file
`<point>.paused` in `$CLMLF_FAILPOINTS_DIR` and waits until the file `<point>.resume` appears there. Unset, every
point is a dictionary lookup on an empty dict.

The points (where the driver passes them):
- `trial_start`: Tune starts a trial (its callback's on_trial_start), before anything of it is logged.
- `trial_result`: Tune hands the driver a trial's epoch result, before it is logged.
- `trial_run_created`: a trial's MLflow child run was just created, before its params are logged.
- `study_end`: Tune's fit() returned, before the study sends what it has not sent and concludes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

VARIABLE = "CLMLF_FAILPOINTS"
FOLDER_VARIABLE = "CLMLF_FAILPOINTS_DIR"
POINTS = ("trial_start", "trial_result", "trial_run_created", "study_end")
ACTIONS = ("kill", "pause")
PAUSE_POLL_S = 0.1


class FailpointError(ValueError):
    """CLMLF_FAILPOINTS does not parse; the message names the entry."""


def parse(text: str) -> dict[str, tuple[int, str]]:
    """`point[@n]=action,...` -> point -> (n, action)."""
    armed: dict[str, tuple[int, str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        where, equals, action = entry.partition("=")
        point, at, count = where.strip().partition("@")
        if not equals or point not in POINTS or action.strip() not in ACTIONS:
            raise FailpointError(
                f"{VARIABLE}: {entry!r} is not point[@n]=action with a point among {POINTS} and an action among "
                f"{ACTIONS}"
            )
        if at and not (count.isdigit() and int(count) >= 1):
            raise FailpointError(f"{VARIABLE}: {entry!r}: the count after @ must be a whole number >= 1")
        armed[point] = (int(count) if at else 1, action.strip())
    return armed


_ARMED = parse(os.environ.get(VARIABLE, ""))
_passes: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(point: str) -> None:
    """Pass the named point: nothing unless CLMLF_FAILPOINTS arms it."""
    if point not in _ARMED:
        return
    count, action = _ARMED[point]
    with _lock:
        _passes[point] = _passes.get(point, 0) + 1
        if _passes[point] != count:
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    pause(point)


def pause(point: str) -> None:
    folder = os.environ.get(FOLDER_VARIABLE)
    if not folder:
        raise FailpointError(f"{VARIABLE}: {point}=pause needs ${FOLDER_VARIABLE}, where it waits for {point}.resume")
    Path(folder, f"{point}.paused").touch()
    while not Path(folder, f"{point}.resume").exists():
        time.sleep(PAUSE_POLL_S)
