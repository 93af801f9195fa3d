"""Classification metrics against hand-computed values and, where installed, scikit-learn."""

from __future__ import annotations

import pytest

from clmlf.metrics import classification_metrics, confusion_matrix, majority_class_accuracy, with_prefix

NAMES = ("positive", "neutral", "negative")
# Rows true, columns predicted:
#   positive: 2 right, 1 called neutral   -> [2, 1, 0]
#   neutral:  1 right, 1 called negative  -> [0, 1, 1]
#   negative: 1 right                     -> [0, 0, 1]
LABELS = [0, 0, 0, 1, 1, 2]
PREDICTIONS = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_true_labels():
    assert confusion_matrix(LABELS, PREDICTIONS, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_metrics_by_hand():
    metrics = classification_metrics(LABELS, PREDICTIONS, NAMES)
    # Precision = diagonal / column sums [2, 2, 2]; recall = diagonal / row sums [3, 2, 1].
    precision = {"positive": 2 / 2, "neutral": 1 / 2, "negative": 1 / 2}
    recall = {"positive": 2 / 3, "neutral": 1 / 2, "negative": 1 / 1}
    # F1 = 2PR / (P + R): positive 2 * 1 * 2/3 / (5/3) = 0.8, neutral 0.5, negative 2 * 0.5 / 1.5 = 2/3.
    f1 = {"positive": 0.8, "neutral": 0.5, "negative": 2 / 3}
    for name in NAMES:
        assert metrics[f"precision/{name}"] == pytest.approx(precision[name])
        assert metrics[f"recall/{name}"] == pytest.approx(recall[name])
        assert metrics[f"f1/{name}"] == pytest.approx(f1[name])
    assert metrics["acc"] == pytest.approx(4 / 6)
    # Weighted by support [3, 2, 1]: (0.8 * 3 + 0.5 * 2 + 2/3 * 1) / 6 ~= 0.67778.
    assert metrics["f1_weighted"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)
    # Macro: (0.8 + 0.5 + 2/3) / 3 ~= 0.65556.
    assert metrics["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert set(metrics) == {"acc", "f1_weighted", "f1_macro"} | {
        f"{kind}/{name}" for kind in ("precision", "recall", "f1") for name in NAMES
    }


def test_a_class_never_predicted_scores_zero_not_nan():
    # Nothing is predicted "negative": its precision is 0/0, counted as 0 like scikit-learn's zero_division=0.
    # Rows [1, 0, 0], [0, 1, 0], [1, 1, 0]: positive and neutral have precision 1/2, recall 1, F1 2/3.
    metrics = classification_metrics([0, 1, 2, 2], [0, 1, 1, 0], NAMES)
    assert metrics["precision/negative"] == 0.0
    assert metrics["recall/negative"] == 0.0
    assert metrics["f1/negative"] == 0.0
    assert metrics["f1/positive"] == pytest.approx(2 / 3)
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    cases = [
        (LABELS, PREDICTIONS),
        ([0, 1, 2, 2], [0, 1, 1, 0]),
        ([0, 0, 1, 1, 1, 0, 2, 2, 2, 2, 1, 0], [0, 1, 1, 2, 1, 0, 2, 0, 2, 2, 1, 1]),
        # A class absent from both labels and predictions.
        ([0, 1, 0, 1], [0, 1, 1, 1]),
    ]
    for labels, predictions in cases:
        metrics = classification_metrics(labels, predictions, NAMES)
        common = {"y_true": labels, "y_pred": predictions, "labels": [0, 1, 2], "zero_division": 0}
        assert metrics["acc"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predictions))
        assert metrics["f1_weighted"] == pytest.approx(sklearn_metrics.f1_score(average="weighted", **common))
        assert metrics["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(average="macro", **common))
        per_class = sklearn_metrics.precision_recall_fscore_support(average=None, **common)
        for index, name in enumerate(NAMES):
            assert metrics[f"precision/{name}"] == pytest.approx(per_class[0][index])
            assert metrics[f"recall/{name}"] == pytest.approx(per_class[1][index])
            assert metrics[f"f1/{name}"] == pytest.approx(per_class[2][index])


def test_binary_labels_use_their_own_names():
    metrics = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], ("not-sarcastic", "sarcastic"))
    assert metrics["recall/sarcastic"] == pytest.approx(0.5)
    assert metrics["precision/not-sarcastic"] == pytest.approx(2 / 3)
    assert "f1/neutral" not in metrics


def test_with_prefix_namespaces_every_key():
    assert with_prefix("dev", {"acc": 0.5, "f1/positive": 0.25}) == {"dev/acc": 0.5, "dev/f1/positive": 0.25}


def test_majority_class_accuracy():
    # The training split's most frequent label is 2; the test split has two 2s in five.
    assert majority_class_accuracy([2, 2, 0, 1, 2], [2, 0, 1, 2, 1]) == pytest.approx(2 / 5)
