"""The artifacts of a training run's selected epoch: its confusion matrices as figures and its classification
report (per-class precision, recall and F1, and the overall metrics, on dev and test)."""

from __future__ import annotations

from typing import Any

from results.record import OVERALL_METRICS, SELECTED_SPLITS


def label_names_of(dataset: str, snapshot: dict[str, Any]) -> list[str]:
    """Class names in label-index order (the confusion matrix's order)."""
    from clmlf.data import dataset_spec

    try:
        return list(dataset_spec(dataset).label_names)
    except ValueError:
        matrix = snapshot.get("dev/confusion_matrix") or []
        return [str(index) for index in range(len(matrix))]


def classification_report(snapshot: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """Per-class precision/recall/F1 and the overall metrics on dev and test at the selected epoch."""
    report: dict[str, Any] = {"selected_epoch": snapshot.get("epoch"), "labels": label_names}
    for split in SELECTED_SPLITS:
        per_class = {
            label: {measure: snapshot.get(f"{split}/{measure}/{label}") for measure in ("precision", "recall", "f1")}
            for label in label_names
        }
        overall = {name: snapshot.get(f"{split}/{name}") for name in (*OVERALL_METRICS, "score")}
        report[split] = {"overall": overall, "per_class": per_class}
    return report


def confusion_matrix_figure(matrix: list[list[int]], label_names: list[str], title: str):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 3.6), dpi=120)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(label_names))
    axes.set_xticks(ticks, label_names, rotation=30, ha="right")
    axes.set_yticks(ticks, label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    largest = max((value for row in matrix for value in row), default=0)
    for row_index, row in enumerate(matrix):
        for column_index, value in enumerate(row):
            colour = "white" if largest and value > largest / 2 else "black"
            axes.text(column_index, row_index, str(value), ha="center", va="center", color=colour)
    figure.tight_layout()
    return figure
