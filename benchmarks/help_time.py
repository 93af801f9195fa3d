"""How long each command takes to answer --help: every console script of pyproject.toml, called through its entry
point as the installed wrapper calls it, each in a fresh process, the median of --repeat runs.

    python benchmarks/help_time.py                       # this checkout
    python benchmarks/help_time.py --root /path/to/other/checkout --repeat 5

With --root, the commands of another checkout are timed (in their `python studies/...` and `python -m ...` forms
where it has no console scripts), for a before/after comparison on one machine. Times on a loaded machine are
noisy: compare two checkouts in one run (--root, then without), side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The form of each command that works without console scripts.
SCRIPT_FORMS = {
    "clmlf-train": ["-m", "clmlf.train"],
    "clmlf-train-run": ["-m", "tracking.train_run"],
    "clmlf-layer-sweep": ["studies/layer_sweep.py"],
    "clmlf-search": ["studies/search.py"],
    "clmlf-ablation": ["studies/ablation.py"],
    "clmlf-confirm": ["studies/confirm.py"],
    "clmlf-report": ["-m", "report"],
    "clmlf-convert": ["-m", "clmlf.convert"],
}
ENTRY_POINT = "import sys, importlib; m, f = sys.argv[1].split(':'); sys.argv = [sys.argv[2], '--help']; " \
    "getattr(importlib.import_module(m), f)()"  # fmt: skip


def command_of(root: Path, name: str) -> list[str]:
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("scripts", {})
    if name in scripts:
        return [sys.executable, "-c", ENTRY_POINT, scripts[name], name]
    return [sys.executable, *SCRIPT_FORMS[name], "--help"]


def seconds(command: list[str], root: Path, usage: bool = True) -> float:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0 or (usage and "usage:" not in completed.stdout):
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose commands are timed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (the median is printed)")
    arguments = parser.parse_args()
    root = arguments.root.resolve()
    start_up = [sys.executable, "-c", "pass"]
    baseline = statistics.median(seconds(start_up, root, usage=False) for _ in range(arguments.repeat))
    print(f"{root}: python start-up alone {baseline:.2f} s")
    for name in SCRIPT_FORMS:
        command = command_of(root, name)
        median = statistics.median(seconds(command, root) for _ in range(arguments.repeat))
        form = command[3] if command[1] == "-c" else " ".join(command[1:])
        print(f"{name:20} {median:6.2f} s   ({form})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
