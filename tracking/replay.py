"""`python -m tracking.replay --study <folder>`: send what a study could not log to MLflow, and make its MLflow runs
agree with its Tune folder.

A study whose MLflow server did not answer at its end leaves its records in `mlflow_backlog.jsonl` in its folder and
prints this command. It sends them in order, each once, then compares MLflow with the Tune folder
(tracking/study_reconcile.py): runs of trials that Tune does not have are marked KILLED and deleted, finished trials
get what their runs lack, runs of unfinished trials are marked KILLED. It refuses while a driver of the study runs
(that driver sends its backlog itself). A `--resume` of the study does the same on its way.
"""

from __future__ import annotations

import argparse
import sys

EXIT_UNSENT = 1
EXIT_REFUSED = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="the study's Tune folder (<storage path>/<name>)")
    parser.add_argument(
        "--tracking-uri",
        help="the study's tracking URI with its password, where it has one (the study folder keeps it without); "
        "default $CLMLF_TRACKING_URI, else $MLFLOW_TRACKING_URI",
    )
    arguments = parser.parse_args(argv)

    from results import storage
    from results.storage import with_password
    from tracking.mlflow_backlog import (
        ATTEMPTS_PER_RECORD,
        Backlog,
        BacklogBusy,
        BacklogSender,
        backlog_path,
        use_short_client_requests,
    )
    from tracking.mlflow_logging import StudyRun
    from tracking.study_reconcile import reconcile
    from tracking.uri import resolve_tracking_uri

    folder = storage.absolute_location(arguments.study)
    try:
        saved = storage.read_json_object(storage.join(folder, storage.PARENT_RUN_FILE))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    if saved is None:
        print(f"error: --study {folder}: no {storage.PARENT_RUN_FILE}, so not a study's folder", file=sys.stderr)
        return EXIT_REFUSED
    study_run = StudyRun(
        **{**saved, "tracking_uri": with_password(saved["tracking_uri"], resolve_tracking_uri(arguments.tracking_uri))}
    )
    use_short_client_requests()
    try:
        backlog = Backlog(backlog_path(folder))
    except BacklogBusy as error:
        print(f"error: {error}; a running driver sends its own backlog", file=sys.stderr)
        return EXIT_REFUSED
    messages: list[str] = []
    sender = BacklogSender(backlog, study_run, announce=messages.append)
    lines: list[str] = []
    try:
        waiting = len(backlog)
        sent = send_all(sender, ATTEMPTS_PER_RECORD)
        if sent:
            try:
                lines = reconcile(folder, study_run, backlog, driver_goes_on=False).lines()
            except Exception as error:  # the store or Tune's files decide what they raise
                print(f"error: MLflow was not compared with the Tune folder {folder}: {type(error).__name__}: "
                      f"{str(error)[:300]}", file=sys.stderr)  # fmt: skip
                return EXIT_UNSENT
            sent = send_all(sender, ATTEMPTS_PER_RECORD)
        for message in messages:
            if message.startswith("warning: MLflow") and "refused" in message:
                print(message, file=sys.stderr)
        if not sent:
            print(f"MLflow at {study_run.shown} does not answer; {len(backlog)} record(s) still wait in "
                  f"{backlog.path}. Run this again once it answers.", file=sys.stderr)  # fmt: skip
            return EXIT_UNSENT
        print(f"MLflow: {waiting} waiting record(s) of study {study_run.study_name} sent")
        for line in lines:
            print(f"MLflow: {line}")
        return 0
    finally:
        backlog.close()


def send_all(sender, attempts: int) -> bool:
    """Send until nothing waits; a record MLflow refuses is tried `attempts` times, then skipped."""
    for _ in range(attempts + 1):
        if sender.send_pending():
            return True
        if sender.outage_started is not None:
            return False
    return sender.send_pending()


if __name__ == "__main__":
    sys.exit(main())
