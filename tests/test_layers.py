"""The packages stack in one order, each importing only those below it: clmlf (model, trainer, data), results (what
a study produced), tracking (MLflow), report (renders), analyses (draws a model's analyses), studies (Ray Tune
scripts). Every import counts, at module level or inside a function; a test fails on the first one that runs back
up, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["clmlf", "results", "tracking", "report", "analyses", "studies"]
# Modules that run a model: a report renders files and results, so it never imports these.
TRAINING_MODULES = ("clmlf.train", "clmlf.model", "clmlf.analysis", "clmlf.evaluate", "analyses")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative imports resolved against its package."""
    package = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def files_of(layer: str) -> list[Path]:
    return sorted((PROJECT_ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_each_package_imports_only_the_packages_below_it(layer):
    assert files_of(layer), f"no package {layer}/"
    below = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = [
        f"{path.relative_to(PROJECT_ROOT)}:{line} imports {module}"
        for path in files_of(layer)
        for line, module in imports_of(path)
        if module.split(".")[0] in LAYERS and module.split(".")[0] not in below
    ]
    assert upward == []


def test_the_report_imports_nothing_that_runs_a_model():
    reaching = [
        f"{path.relative_to(PROJECT_ROOT)}:{line} imports {module}"
        for path in files_of("report")
        for line, module in imports_of(path)
        if module.startswith(TRAINING_MODULES)
    ]
    assert reaching == []


def test_tracking_keeps_to_mlflow_and_results_to_files():
    # MLflow lives in tracking/ (and clmlf.evaluate, which downloads a models:/ or runs:/ checkpoint before scoring
    # it); Ray Tune in results/ only reads Tune's folder.
    using_mlflow = {
        str(path.relative_to(PROJECT_ROOT))
        for layer in ("clmlf", "results", "report")
        for path in files_of(layer)
        if any(module.split(".")[0] == "mlflow" for _, module in imports_of(path))
    }
    assert using_mlflow == {"clmlf/evaluate.py"}
    results_ray = {module for path in files_of("results") for _, module in imports_of(path) if module.startswith("ray")}
    assert results_ray <= {"ray.tune", "ray.tune.Checkpoint", "ray.tune.ExperimentAnalysis", "ray.tune.Tuner"}


def test_a_module_that_imports_upward_is_found(tmp_path, monkeypatch):
    # The scan itself: an import inside a function of a lower package is reported with its line.
    package = tmp_path / "results"
    package.mkdir()
    (package / "late.py").write_text("def f():\n    from studies import runner\n    return runner\n")
    monkeypatch.setattr(__import__(__name__), "PROJECT_ROOT", tmp_path)
    assert imports_of(package / "late.py") == [(2, "studies"), (2, "studies.runner")]
