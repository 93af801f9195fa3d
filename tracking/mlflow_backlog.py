"""A study's MLflow backlog: what the study logs goes to a file first and reaches MLflow from a sender thread, so an
MLflow outage neither stalls the trials nor loses what they report.

The driver's Tune callback never waits for MLflow. Each thing it logs (a trial's start with its params, an epoch's
metrics, tags, a trial's end) is a record appended to `mlflow_backlog.jsonl` in the study folder and written to disk
before the callback returns. A sender thread sends the records in order and marks each one sent. While the server
does not answer, the records wait in the file, the trials go on, and the sender tries again every few seconds; the
study prints one warning when the server goes away and one when the backlog is drained. Records left at the end of
the study are sent by a resumed study or by `python -m tracking.replay --study <folder>`.

Exactly once: every record has an id, sent ones are marked in the file, and sending a record again changes nothing:
a trial's child run is found by its tags before one is created, params are logged where missing, an epoch is logged
unless its step is in the run's history, tags and a run's end are the same when set twice.

The file holds one JSON object a line: records (`{"id": 7, "op": "epoch", ...}`) and marks (`{"sent": 7}`: every
record up to 7 was sent). Once nothing waits, the file is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results import storage
from tracking.failpoints import failpoint

BACKLOG_FILE = "mlflow_backlog.jsonl"
# MLflow's client retries a failed request 7 times with backoff factor 2 (about 4 minutes) and waits 120 s for an
# answer. The study's requests give up within seconds instead: what they carry waits in the backlog, not in a request.
CLIENT_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# How long a request to a stopped server takes with these settings: three tries, 0 s and 2 s apart, plus up to 1 s of
# jitter per retry.
RETRY_WINDOW_S = 4.0
# The sender's pause after a failed attempt grows from the first to the last.
RESEND_DELAYS_S = (2.0, 4.0, 8.0, 15.0)
# A record that fails while the server answers other requests is tried this often, then skipped with a warning (the
# Tune folder still holds what it carried, and the study's end fills it in from there).
ATTEMPTS_PER_RECORD = 3
REPLAY_COMMAND = "python -m tracking.replay --study {folder}"


class BacklogBusy(RuntimeError):
    """Another process (a study's driver, or a replay) holds the study's backlog."""


def backlog_path(study_folder: str) -> Path:
    """The backlog file of a study: in its folder, or for a remote folder (s3://...) in ./mlflow_backlog/<name>/."""
    if storage.is_remote(study_folder):
        return Path("mlflow_backlog", study_folder.rstrip("/").rsplit("/", 1)[-1], BACKLOG_FILE).resolve()
    return Path(study_folder, BACKLOG_FILE)


def replay_command(study_folder: str) -> str:
    return REPLAY_COMMAND.format(folder=study_folder)


def use_short_client_requests() -> None:
    """MLflow requests of this process give up within seconds (settings the user made in the environment stay)."""
    for name, value in CLIENT_SETTINGS.items():
        os.environ.setdefault(name, value)


class Backlog:
    """The records not yet sent, in the order they were written, kept in a file that survives the process.

    One process at a time holds a study's backlog (an exclusive lock on `<file>.lock`), so a replay never sends
    while a driver does.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_file = self.path.with_name(self.path.name + ".lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self._lock_file.close()
            raise BacklogBusy(f"{self.path}: another process (a driver of this study, or a replay) holds it") from error
        self._pending, self._next_id, torn = read_records(self.path)
        if torn:
            # A driver killed mid-write left half a line; the next record must not be appended to it.
            self._rewrite()

    def close(self) -> None:
        """Let go of the backlog; with nothing waiting, no file of it stays in the study folder."""
        with self._lock:
            if not self._pending:
                Path(self._lock_file.name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pending)

    def append(self, op: str, **fields: Any) -> dict[str, Any]:
        """Write a record to disk (flushed and synced) and queue it; returns it with its id."""
        with self._lock:
            record = {"id": self._next_id, "op": op, **fields}
            self._write_lines([record])
            self._next_id += 1
            self._pending.append(record)
            return record

    def mark_sent(self, record_id: int) -> None:
        """The record and every one before it were sent; the file goes once nothing waits."""
        with self._lock:
            self._pending = [record for record in self._pending if record["id"] > record_id]
            if self._pending:
                self._write_lines([{"sent": record_id}])
            else:
                self.path.unlink(missing_ok=True)

    def drop(self, unwanted: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the waiting records that `unwanted` picks (records of trials that Tune no longer has); returns how
        many."""
        with self._lock:
            kept = [record for record in self._pending if not unwanted(record)]
            dropped = len(self._pending) - len(kept)
            if dropped:
                self._pending = kept
                self._rewrite()
            return dropped

    def _write_lines(self, lines: list[dict[str, Any]]) -> None:
        with self.path.open("a") as handle:
            for line in lines:
                handle.write(json.dumps(line, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _rewrite(self) -> None:
        if not self._pending:
            self.path.unlink(missing_ok=True)
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as handle:
            for record in self._pending:
                handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)


def read_records(path: Path) -> tuple[list[dict[str, Any]], int, bool]:
    """The records of a backlog file not yet marked sent, the next free id, and whether a line was torn."""
    if not path.is_file():
        return [], 1, False
    records: list[dict[str, Any]] = []
    sent, torn, last_id = 0, False, 0
    for number, line in enumerate(path.read_text().splitlines(keepends=True), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            torn = True
            print(f"warning: {path}, line {number}: not a whole record (a write was cut off); skipped", file=sys.stderr)
            continue
        if not line.endswith("\n"):
            torn = True
        if "sent" in entry:
            sent = max(sent, int(entry["sent"]))
        else:
            records.append(entry)
            last_id = max(last_id, int(entry["id"]))
    return [record for record in records if record["id"] > sent], max(last_id, sent) + 1, torn


class Unsent(Exception):
    """MLflow did not take a record: the server does not answer (`reachable` False), or it refused this record."""

    def __init__(self, message: str, reachable: bool):
        super().__init__(message)
        self.reachable = reachable


def error_summary(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text if len(text) <= 200 else text[:200] + '...'}"


class BacklogSender:
    """Sends a study's backlog to MLflow, in order: from a thread during the study (`start`), or in one call
    (`send_pending`) at a replay. `announce` prints what the study says about outages (stderr by default)."""

    def __init__(self, backlog: Backlog, study_run, announce: Callable[[str], None] | None = None):
        from mlflow.tracking import MlflowClient

        self.backlog = backlog
        self.study_run = study_run
        self.client = MlflowClient(study_run.tracking_uri)
        self.announce = announce or (lambda text: print(text, file=sys.stderr, flush=True))
        self.outage_started: float | None = None
        self.failed_attempts = 0
        self.sent_in_outage = 0
        self._attempts: dict[int, int] = {}
        self._runs: dict[str, str] = {}
        self._steps: dict[tuple[str, str], set[int]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._attempt_done = threading.Condition()
        self._attempts_begun = 0
        self._attempts_ended = 0
        self._thread: threading.Thread | None = None

    # The thread.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mlflow-backlog-sender", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A record was appended."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def drain(self, timeout_s: float) -> bool:
        """Wait until the backlog is empty, or an attempt begun after this call failed, or `timeout_s` passed;
        returns whether it is empty. Without the thread, sends here."""
        if self._thread is None or not self._thread.is_alive():
            return self.send_pending()
        deadline = time.monotonic() + timeout_s
        with self._attempt_done:
            begun_before = self._attempts_begun
            self._wake.set()
            while len(self.backlog) and time.monotonic() < deadline:
                if self._attempts_ended > begun_before and self.outage_started is not None:
                    break
                self._attempt_done.wait(min(0.5, max(deadline - time.monotonic(), 0.01)))
        return not len(self.backlog)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if not len(self.backlog):
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._wake.clear()
            with self._attempt_done:
                self._attempts_begun += 1
                attempt = self._attempts_begun
            self.send_pending()
            with self._attempt_done:
                self._attempts_ended = attempt
                self._attempt_done.notify_all()
            if len(self.backlog):
                self._wake.wait(RESEND_DELAYS_S[min(self.failed_attempts, len(RESEND_DELAYS_S)) - 1])

    # Sending.

    def send_pending(self) -> bool:
        """Send the waiting records in order until one does not go; returns whether none waits."""
        for record in self.backlog.pending():
            if self._stopping.is_set():
                return False
            try:
                self._send(record)
            except Unsent as error:
                if not error.reachable:
                    self._went_away(str(error))
                    return False
                self._attempts[record["id"]] = self._attempts.get(record["id"], 0) + 1
                if self._attempts[record["id"]] < ATTEMPTS_PER_RECORD:
                    self.failed_attempts = max(self.failed_attempts, 1)
                    return False
                self.announce(
                    f"warning: MLflow at {self.study_run.shown} refused {describe(record)} "
                    f"{ATTEMPTS_PER_RECORD} times ({error}); skipped (the Tune folder keeps what it carried)"
                )
            self.backlog.mark_sent(record["id"])
            if self.outage_started is not None:
                self.sent_in_outage += 1
        if self.outage_started is not None:
            seconds = time.monotonic() - self.outage_started
            self.announce(
                f"MLflow at {self.study_run.shown} answers again: the {self.sent_in_outage} record(s) that "
                f"waited in {self.backlog.path} during {seconds:.0f} s were sent"
            )
            self.outage_started = None
        self.failed_attempts = 0
        return True

    def _went_away(self, error: str) -> None:
        self.failed_attempts += 1
        if self.outage_started is None:
            self.outage_started = time.monotonic()
            self.sent_in_outage = 0
            self.announce(
                f"warning: MLflow at {self.study_run.shown} does not answer ({error}). The study goes on; what "
                f"it logs waits in {self.backlog.path} until the server is back"
            )

    def _send(self, record: dict[str, Any]) -> None:
        try:
            OPERATIONS[record["op"]](self, record)
        except Unsent:
            raise
        except Exception as error:  # the store decides what it raises: HTTP, SQL, file system
            raise Unsent(error_summary(error), reachable=self._answers()) from error

    def _answers(self) -> bool:
        try:
            self.client.search_experiments(max_results=1)
        except Exception:  # any failure of the cheapest request means the server is not there
            return False
        return True

    # The child run of a trial.

    def run_of(self, trial_id: str) -> str | None:
        """The trial's child run, found by its tags (None if it has none)."""
        from tracking.mlflow_logging import trial_run_id

        if trial_id not in self._runs:
            run_id = trial_run_id(self.study_run, trial_id)
            if run_id is None:
                return None
            self._runs[trial_id] = run_id
        return self._runs[trial_id]

    def create_run(self, start: dict[str, Any]) -> str:
        """A new child run for a trial_start record, with the tags that find it again."""
        run = self.client.create_run(self.study_run.experiment_id, run_name=start["run_name"], tags=start["tags"])
        self._runs[start["trial_id"]] = run.info.run_id
        failpoint("trial_run_created")
        return run.info.run_id

    def model_uri(self, trial_id: str) -> str | None:
        """Where the best model of the study went (the trial's child run), once the backlog was sent."""
        from tracking.mlflow_logging import MODEL_ARTIFACT

        try:
            run_id = self.run_of(trial_id)
        except Exception:  # the store decides what it raises; the URI is only printed
            return None
        return f"runs:/{run_id}/{MODEL_ARTIFACT}" if run_id else None

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        if (run_id, key) not in self._steps:
            self._steps[(run_id, key)] = {int(metric.step) for metric in self.client.get_metric_history(run_id, key)}
        return self._steps[(run_id, key)]

    def forget_run(self, run_id: str) -> None:
        self._runs = {trial: run for trial, run in self._runs.items() if run != run_id}
        self._steps = {key: steps for key, steps in self._steps.items() if key[0] != run_id}


def describe(record: dict[str, Any]) -> str:
    trial = f" of trial {record['trial_id']}" if "trial_id" in record else ""
    epoch = f", epoch {record['epoch']}" if "epoch" in record else ""
    return f"record {record['id']} ({record['op']}{trial}{epoch})"


def _require_run(sender: BacklogSender, record: dict[str, Any]) -> str:
    run_id = sender.run_of(record["trial_id"])
    if run_id is None:
        raise Unsent(f"no child run of trial {record['trial_id']} (its start was never logged)", reachable=True)
    return run_id


def send_trial_start(sender: BacklogSender, record: dict[str, Any]) -> None:
    """The trial's child run, created or found and marked running again, with every param it lacks."""
    from mlflow.entities import RunTag

    run_id = sender.run_of(record["trial_id"])
    if run_id is None:
        run_id = sender.create_run(record)
    else:
        sender.client.update_run(run_id, status="RUNNING")
        reopened = {key: record["tags"][key] for key in ("clmlf.status", "clmlf.retries")}
        sender.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in reopened.items()])
    log_missing_params(sender, run_id, record["params"])


def send_trial_fill(sender: BacklogSender, record: dict[str, Any]) -> None:
    """A finished trial's child run, created if it has none, with every param it lacks (its status stays)."""
    run_id = sender.run_of(record["trial_id"]) or sender.create_run(record)
    log_missing_params(sender, run_id, record["params"])


def log_missing_params(sender: BacklogSender, run_id: str, params: dict[str, str]) -> None:
    """Params once: MLflow refuses to log a param again with another value."""
    from mlflow.entities import Param

    logged = sender.client.get_run(run_id).data.params
    missing = [Param(key, value) for key, value in params.items() if key not in logged]
    for start in range(0, len(missing), 100):
        sender.client.log_batch(run_id, params=missing[start : start + 100])


def send_epoch(sender: BacklogSender, record: dict[str, Any]) -> None:
    from mlflow.entities import Metric, RunTag

    run_id = _require_run(sender, record)
    tags = [RunTag(key, value) for key, value in record.get("tags", {}).items()]
    metrics = record["metrics"]
    if not metrics:
        if tags:
            sender.client.log_batch(run_id, tags=tags)
        return
    steps = sender.logged_steps(run_id, min(metrics))
    epoch = int(record["epoch"])
    if epoch in steps:
        return
    logged = [Metric(key, value, record["timestamp"], epoch) for key, value in metrics.items()]
    # log_batch takes at most 1000 metrics per call.
    for start in range(0, len(logged), 1000):
        sender.client.log_batch(run_id, metrics=logged[start : start + 1000], tags=tags if start == 0 else [])
    steps.add(epoch)


def send_trial_tags(sender: BacklogSender, record: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    run_id = _require_run(sender, record)
    sender.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in record["tags"].items()])


def send_trial_end(sender: BacklogSender, record: dict[str, Any]) -> None:
    """The outcome (config.json, the selected epoch's figures and report), the status tags, the run's end."""
    from tracking.mlflow_logging import RunRecorder

    run_id = _require_run(sender, record)
    recorder = RunRecorder(sender.client, run_id, record["dataset"], selected=dict(record.get("selected") or {}))
    recorder.close(record["config"], error=record.get("error"), status=record["status"])


def send_run_abandoned(sender: BacklogSender, record: dict[str, Any]) -> None:
    """A child run that no trial will finish: KILLED, with why; `delete` moves it to MLflow's deleted runs (a run of
    a trial that Tune does not know, which must not count as one of the study's trials)."""
    from mlflow.entities import RunTag

    run_id = record["run_id"]
    tags = [RunTag("clmlf.status", record["tune_status"]), RunTag("clmlf.error", record["reason"])]
    sender.client.log_batch(run_id, tags=tags)
    run = sender.client.get_run(run_id)
    if run.info.status not in ("FINISHED", "FAILED", "KILLED"):
        sender.client.set_terminated(run_id, status="KILLED")
    if record.get("delete") and run.info.lifecycle_stage != "deleted":
        sender.client.delete_run(run_id)
    sender.forget_run(run_id)


def send_study_outputs(sender: BacklogSender, record: dict[str, Any]) -> None:
    from tracking.mlflow_logging import log_study_outputs

    folders = {name: Path(folder) for name, folder in record.get("folders", {}).items() if Path(folder).is_dir()}
    files = {
        name: [Path(path) for path in paths if Path(path).is_file()] for name, paths in record.get("files", {}).items()
    }
    log_study_outputs(sender.study_run, record.get("texts", {}), folders, files)


def send_study_model(sender: BacklogSender, record: dict[str, Any]) -> None:
    from tracking.mlflow_logging import log_best_model

    checkpoint = Path(record["checkpoint"])
    if not checkpoint.is_dir():
        raise Unsent(f"the checkpoint {checkpoint} is gone", reachable=True)
    readme = record["readme"]
    log_best_model(sender.study_run, record["trial_id"], checkpoint, lambda uri: readme.replace(MODEL_URI_TOKEN, uri))


def send_study_end(sender: BacklogSender, record: dict[str, Any]) -> None:
    from tracking.mlflow_logging import finish_study_run

    finish_study_run(
        sender.study_run,
        record.get("best_trial_id"),
        record.get("metrics") or {},
        record["status"],
        summary_metrics=record.get("summary_metrics"),
        summary_tags=record.get("summary_tags"),
    )


# Stands for the model's runs:/ URI in a model README written before the model's run is known.
MODEL_URI_TOKEN = "<model-uri>"
OPERATIONS: dict[str, Callable[[BacklogSender, dict[str, Any]], None]] = {
    "trial_start": send_trial_start,
    "trial_fill": send_trial_fill,
    "epoch": send_epoch,
    "trial_tags": send_trial_tags,
    "trial_end": send_trial_end,
    "run_abandoned": send_run_abandoned,
    "study_outputs": send_study_outputs,
    "study_model": send_study_model,
    "study_end": send_study_end,
}
STUDY_OPERATIONS = ("study_outputs", "study_model", "study_end")


# The sender of each open study in this process, by its backlog file: the Tune callback, rebuilt from Tune's saved
# state on --resume, finds it here.
_open: dict[Path, tuple[Backlog, BacklogSender]] = {}


def register(backlog: Backlog, sender: BacklogSender) -> None:
    _open[backlog.path.resolve()] = (backlog, sender)


def unregister(backlog: Backlog) -> None:
    _open.pop(backlog.path.resolve(), None)


def opened(path: Path) -> tuple[Backlog, BacklogSender] | None:
    return _open.get(Path(path).resolve())
