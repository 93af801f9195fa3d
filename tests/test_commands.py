"""The command line: every console script of pyproject.toml answers --help at once (it prints its usage without
importing torch, Ray, MLflow, transformers, pandas or Optuna, which take seconds), the `python studies/...` and
`python -m ...` forms keep working, and long loops show progress bars on a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import tomllib
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY_MODULES = ("torch", "ray", "mlflow", "transformers", "pandas", "optuna")
# Calls a console script's entry point as the installed wrapper does, then says which heavy modules were imported.
ENTRY_POINT_RUNNER = """
import importlib, sys
entry, name, heavy_modules = sys.argv[1:4]
module, function = entry.split(":")
sys.argv = [name, "--help"]
try:
    status = getattr(importlib.import_module(module), function)()
except SystemExit as exit:
    status = exit.code
loaded = [heavy for heavy in heavy_modules.split(",") if heavy in sys.modules]
print("exit status:", status or 0)
print("imported:", ",".join(loaded) or "nothing heavy")
"""


def environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }


def test_every_study_and_tool_has_a_console_script():
    assert {"clmlf-train", "clmlf-train-run", "clmlf-layer-sweep", "clmlf-search", "clmlf-ablation", "clmlf-confirm",
            "clmlf-report", "clmlf-convert"} <= set(SCRIPTS)  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_prints_usage_without_importing_heavy_libraries(name):
    command = [sys.executable, "-c", ENTRY_POINT_RUNNER, SCRIPTS[name], name, ",".join(HEAVY_MODULES)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment(), check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "usage:" in completed.stdout, completed.stdout[-3000:]
    assert "exit status: 0" in completed.stdout
    assert "imported: nothing heavy" in completed.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["studies/layer_sweep.py"], ["studies/search.py"], ["studies/ablation.py"], ["studies/confirm.py"],
        ["-m", "report"], ["-m", "clmlf.convert"],
    ],
)  # fmt: skip
def test_the_script_and_module_forms_keep_working(command):
    completed = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120,
                               cwd=PROJECT_ROOT, env=environment(), check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("usage:")


def run_in_terminal(command: list[str], cwd: Path) -> str:
    """The output of a command whose stdout and stderr are a terminal (a pseudo-terminal), as a user sees it."""
    controller, terminal = pty.openpty()
    # A terminal has a size (a new pseudo-terminal's is 0 x 0, in which a progress bar has no room to draw).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, cwd=cwd, env=environment())
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=600)
    os.close(controller)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bars_show_on_a_terminal_for_the_data_check_the_feature_cache_and_a_conversion(tmp_path):
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from fixtures import write_dataset
    from test_convert import balanced_single_release

    write_dataset(tmp_path / "data", "mvsa-single")
    training = run_in_terminal(
        [sys.executable, "-m", "clmlf.train", "--dataset", "mvsa-single", "--data-root", str(tmp_path / "data"),
         "--preset", "tiny", "--set", "feature_cache=true", "--set", f"feature_cache_dir={tmp_path / 'cache'}",
         "--set", "frozen_text_epochs=1", "--set", "finetune_epochs=1", "--set", "max_train_batches=1",
         "--output", str(tmp_path / "run")],
        tmp_path,
    )  # fmt: skip
    for description in ("checking images", "image features", "text states"):
        assert re.search(rf"{description}:\s+\d+%\|", training), training[-3000:]
    raw = balanced_single_release(tmp_path / "raw", positives=10, neutrals=10, negatives=10)
    conversion = run_in_terminal(
        [sys.executable, "-m", "clmlf.convert", "mvsa", "--name", "MVSA-single", "--raw", str(raw),
         "--out", str(tmp_path / "converted")],
        tmp_path,
    )  # fmt: skip
    for description in ("reading MVSA-single", "placing images"):
        assert re.search(rf"{description}:\s+\d+%\|", conversion), conversion[-3000:]
    # Off a terminal (a log, CI, a trial's output) there is no bar.
    piped = subprocess.run(
        [sys.executable, "-m", "clmlf.convert", "mvsa", "--name", "MVSA-single", "--raw", str(raw),
         "--out", str(tmp_path / "piped")],
        capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=300, check=False,
    )  # fmt: skip
    assert piped.returncode == 0 and not re.search(r"\d+%\|", piped.stdout + piped.stderr)
