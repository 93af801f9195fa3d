"""Classification metrics with stable, namespaced keys (`dev/acc`, `test/f1_weighted`, ...).

F1 is reported both weighted (the MVSA convention) and macro (the HFM convention); which one selects the epoch
and ranks trials is a config field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], classes: int) -> np.ndarray:
    """(classes, classes): rows are true labels, columns predictions."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def classification_metrics(
    labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy, weighted and macro F1, and per-class precision, recall and F1, keyed without a split prefix."""
    matrix = confusion_matrix(labels, predictions, len(label_names))
    true_positives = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    # A class never predicted (or never present) has precision (or recall) 0, as scikit-learn's zero_division=0.
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    total = matrix.sum()
    metrics = {
        "acc": float(true_positives.sum() / total) if total else 0.0,
        "f1_weighted": float((f1 * support).sum() / support.sum()) if total else 0.0,
        "f1_macro": float(f1.mean()),
    }
    for index, name in enumerate(label_names):
        metrics[f"precision/{name}"] = float(precision[index])
        metrics[f"recall/{name}"] = float(recall[index])
        metrics[f"f1/{name}"] = float(f1[index])
    return metrics


def with_prefix(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in metrics.items()}


def majority_class_accuracy(train_labels: Sequence[int], test_labels: Sequence[int]) -> float:
    """The baseline that predicts the training split's most frequent label for every test example."""
    majority = np.bincount(np.asarray(train_labels)).argmax()
    return float(np.mean(np.asarray(test_labels) == majority))
