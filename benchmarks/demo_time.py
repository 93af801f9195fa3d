"""How long `make demo` takes: the default layer sweep (`python studies/layer_sweep.py`, report included) of an
older revision and of this checkout, run one after the other on the same machine, each from scratch.

    python benchmarks/demo_time.py                   # 3eddb7b against this checkout's working tree
    python benchmarks/demo_time.py --revision main   # any revision git knows
    python benchmarks/demo_time.py --only current    # this checkout alone

Each side gets its own temporary copy of the code (the revision from `git archive`; this checkout's tracked and
untracked, not ignored files as they are on disk), a fresh CLMLF_CACHE_DIR (so the demo data and the feature cache
are built inside the timed run, as on a newcomer's machine), a fresh MLflow database in its folder and a fresh Ray
temporary folder. Both run with this interpreter. The machine's load average is printed with each time: on a
shared machine absolute times are noisy, the ratio of two runs made side by side less so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The tree on which the demo took 776 s on a 2-core CPU without AVX-512.
DEFAULT_REVISION = "3eddb7b"
# Variables that would point a run at another cluster, tracking store or cache than its own fresh ones.
CLEARED_VARIABLES = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "CLMLF_CACHE_DIR", "PYTHONPATH")


def export_revision(revision: str, destination: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {revision}: {archive.stderr.decode(errors='replace').strip()}")
    archive_path = destination.with_suffix(".tar")
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(destination, filter="data")
    archive_path.unlink()


def copy_working_tree(destination: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def time_demo(code: Path, label: str, keep_log: Path | None) -> float:
    """Seconds of one default layer sweep run in `code`, with every cache and store fresh."""
    cache = code / "cache"
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-demo-"))  # short: Ray's socket paths must stay under 108 bytes
    environment = {key: value for key, value in os.environ.items() if key not in CLEARED_VARIABLES}
    environment.update(PYTHONPATH=str(code), CLMLF_CACHE_DIR=str(cache), RAY_TMPDIR=str(ray_tmp))
    log_path = code / "demo.log"
    print(f"{label}: running the default layer sweep in {code} (load average {load_average()})", flush=True)
    try:
        with log_path.open("w") as log:
            started = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, "studies/layer_sweep.py"], cwd=code, env=environment, stdout=log, stderr=log
            )
            elapsed = time.perf_counter() - started
        if keep_log is not None:
            shutil.copy(log_path, keep_log / f"demo-{label}.log")
        if completed.returncode != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{label}: the layer sweep exited with {completed.returncode}:\n{tail}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"{label}: {elapsed:.1f} s (load average after: {load_average()})", flush=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revision", default=DEFAULT_REVISION, help=f"the older tree (default {DEFAULT_REVISION})")
    parser.add_argument("--only", choices=["both", "revision", "current"], default="both", help="which side to run")
    parser.add_argument("--logs", type=Path, help="copy each run's output here as demo-<side>.log")
    arguments = parser.parse_args()
    if arguments.logs is not None:
        arguments.logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demo-time-") as scratch:
        times: dict[str, float] = {}
        if arguments.only in ("both", "revision"):
            older = Path(scratch) / "revision"
            older.mkdir()
            export_revision(arguments.revision, older)
            times[arguments.revision] = time_demo(older, arguments.revision, arguments.logs)
        if arguments.only in ("both", "current"):
            current = Path(scratch) / "current"
            current.mkdir()
            copy_working_tree(current)
            times["current"] = time_demo(current, "current", arguments.logs)
    for label, seconds in times.items():
        print(f"{label:>12}: {seconds:7.1f} s")
    if len(times) == 2:
        ratio = times[arguments.revision] / times["current"]
        print(f"{'ratio':>12}: {ratio:7.2f}x faster ({arguments.revision} / current)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
