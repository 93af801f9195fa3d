"""The losses against values worked out by hand, and the properties that make them per-example means."""

from __future__ import annotations

import math

import pytest
import torch

from clmlf.losses import (
    classification_loss,
    data_based_contrastive_loss,
    label_based_contrastive_loss,
    total_loss,
)

# Three samples with 2-d projections r and labels [0, 0, 1], so z = r r^T is small enough to do by hand:
#   r = [[1, 0], [0, 1], [1, 1]]  ->  z = [[1, 0, 1], [0, 1, 1], [1, 1, 2]]
# The positive pairs (same label, the anchor itself included) are (0,0), (0,1), (1,0), (1,1), (2,2): five.
PROJECTION = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
LABELS = torch.tensor([0, 0, 1])
TEMPERATURE = 0.5


def test_lbcl_paper_variant_by_hand():
    # "paper": log_softmax(z / tau). z / 0.5 = [[2, 0, 2], [0, 2, 2], [2, 2, 4]].
    # Rows 0 and 1 have logsumexp log(e^2 + e^0 + e^2) = log(1 + 2e^2), row 2 has log(e^2 + e^2 + e^4).
    rows_0_1 = math.log(1 + 2 * math.exp(2))
    row_2 = math.log(2 * math.exp(2) + math.exp(4))
    positive_log_probabilities = [
        2 - rows_0_1,  # (0, 0)
        0 - rows_0_1,  # (0, 1)
        0 - rows_0_1,  # (1, 0)
        2 - rows_0_1,  # (1, 1)
        4 - row_2,  # (2, 2)
    ]
    expected = -sum(positive_log_probabilities) / 5
    loss = label_based_contrastive_loss(PROJECTION, LABELS, TEMPERATURE, "paper")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_lbcl_original_variant_by_hand():
    # "original": log_softmax(z) / tau. Rows 0 and 1: logsumexp(1, 0, 1) = log(1 + 2e), row 2: logsumexp(1, 1, 2)
    # = log(2e + e^2); the mean is then divided by tau = 0.5.
    rows_0_1 = math.log(1 + 2 * math.e)
    row_2 = math.log(2 * math.e + math.exp(2))
    positive_log_probabilities = [1 - rows_0_1, 0 - rows_0_1, 0 - rows_0_1, 1 - rows_0_1, 2 - row_2]
    expected = -sum(positive_log_probabilities) / 5 / TEMPERATURE
    loss = label_based_contrastive_loss(PROJECTION, LABELS, TEMPERATURE, "original")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_lbcl_variants_differ_except_at_unit_temperature():
    paper = label_based_contrastive_loss(PROJECTION, LABELS, TEMPERATURE, "paper")
    original = label_based_contrastive_loss(PROJECTION, LABELS, TEMPERATURE, "original")
    assert abs(paper.item() - original.item()) > 0.5
    # At tau = 1 both are log_softmax(z); "original" only rescales by 1 / tau, "paper" changes the distribution.
    at_one = label_based_contrastive_loss(PROJECTION, LABELS, 1.0, "original")
    assert label_based_contrastive_loss(PROJECTION, LABELS, 1.0, "paper").item() == pytest.approx(at_one.item())
    assert original.item() == pytest.approx(at_one.item() / TEMPERATURE, rel=1e-6)
    assert paper.item() != pytest.approx(at_one.item() / TEMPERATURE, rel=1e-3)


def test_lbcl_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="lbcl_variant"):
        label_based_contrastive_loss(PROJECTION, LABELS, TEMPERATURE, "supcon")


def test_lbcl_does_not_depend_on_the_order_of_the_batch():
    generator = torch.Generator().manual_seed(0)
    projection = torch.randn(7, 5, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 2])
    order = torch.randperm(7, generator=generator)
    for variant in ("paper", "original"):
        loss = label_based_contrastive_loss(projection, labels, 0.07, variant)
        permuted = label_based_contrastive_loss(projection[order], labels[order], 0.07, variant)
        assert permuted.item() == pytest.approx(loss.item(), rel=1e-5)


def test_dbcl_by_hand():
    # r = [[1, 0], [0, 1]], r_aug = [[2, 0], [1, 1]], tau = 0.5: logits r r_aug^T / tau = [[4, 2], [0, 2]].
    # Row 0 (target 0): logsumexp(4, 2) - 4 = log(1 + e^-2); row 1 (target 1): logsumexp(0, 2) - 2 = log(1 + e^-2).
    projection = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    augmented = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    expected = (math.log(math.exp(4) + math.exp(2)) - 4 + math.log(1 + math.exp(2)) - 2) / 2
    assert data_based_contrastive_loss(projection, augmented, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # The anchor side is the original view: swapping the views gives logits [[4, 0], [2, 2]] and another value,
    # (log(e^4 + 1) - 4 + log(2e^2) - 2) / 2.
    swapped = (math.log(math.exp(4) + 1) - 4 + math.log(2 * math.exp(2)) - 2) / 2
    assert data_based_contrastive_loss(augmented, projection, 0.5).item() == pytest.approx(swapped, rel=1e-6)


def logsumexp(values: list[float]) -> float:
    largest = max(values)
    return largest + math.log(sum(math.exp(value - largest) for value in values))


def lbcl_by_definition(projection: list[list[float]], labels: list[int], temperature: float, variant: str) -> float:
    """Algorithm 1 written out in float64 loops: every (anchor, positive) pair's log-probability, averaged."""
    size = len(projection)
    similarities = [[sum(a * b for a, b in zip(projection[i], projection[j], strict=True)) for j in range(size)]
                    for i in range(size)]  # fmt: skip
    pair_log_probabilities = []
    for i in range(size):
        row = [value / temperature for value in similarities[i]] if variant == "paper" else similarities[i]
        for j in range(size):
            if labels[i] == labels[j]:
                log_probability = row[j] - logsumexp(row)
                pair_log_probabilities.append(log_probability if variant == "paper" else log_probability / temperature)
    return -sum(pair_log_probabilities) / len(pair_log_probabilities)


def dbcl_by_definition(projection: list[list[float]], augmented: list[list[float]], temperature: float) -> float:
    """Algorithm 2 in float64 loops: minus the log-probability of each sample's own augmented view."""
    size = len(projection)
    losses = []
    for i in range(size):
        row = [sum(a * b for a, b in zip(projection[i], augmented[j], strict=True)) / temperature for j in range(size)]
        losses.append(logsumexp(row) - row[i])
    return sum(losses) / size


@pytest.mark.parametrize("variant", ["paper", "original"])
def test_lbcl_matches_its_definition_on_random_batches(variant):
    generator = torch.Generator().manual_seed(3)
    for size, classes, temperature in [(6, 2, 0.5), (9, 3, 0.07), (5, 5, 1.3)]:
        projection = torch.randn(size, 4, generator=generator)
        labels = torch.randint(0, classes, (size,), generator=generator)
        expected = lbcl_by_definition(projection.double().tolist(), labels.tolist(), temperature, variant)
        loss = label_based_contrastive_loss(projection, labels, temperature, variant)
        assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_dbcl_matches_its_definition_on_random_batches():
    generator = torch.Generator().manual_seed(1)
    for size, temperature in [(5, 0.07), (8, 0.5)]:
        projection = torch.randn(size, 3, generator=generator)
        augmented = torch.randn(size, 3, generator=generator)
        expected = dbcl_by_definition(projection.double().tolist(), augmented.double().tolist(), temperature)
        assert data_based_contrastive_loss(projection, augmented, temperature).item() == pytest.approx(
            expected, rel=1e-4
        )


def test_dbcl_does_not_depend_on_the_order_of_the_batch():
    generator = torch.Generator().manual_seed(2)
    projection = torch.randn(6, 4, generator=generator)
    augmented = torch.randn(6, 4, generator=generator)
    order = torch.randperm(6, generator=generator)
    loss = data_based_contrastive_loss(projection, augmented, 0.2)
    assert data_based_contrastive_loss(projection[order], augmented[order], 0.2).item() == pytest.approx(
        loss.item(), rel=1e-5
    )


def test_classification_loss_by_hand_and_a_mean_over_examples():
    # logits [[2, 0], [0, 0]] with labels [0, 1]: -(2 - log(e^2 + 1)) and -(0 - log 2), averaged.
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    expected = ((math.log(math.exp(2) + 1) - 2) + math.log(2)) / 2
    assert classification_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # The same examples twice: a per-example mean does not move (the original's second division by B would).
    doubled = classification_loss(torch.cat([logits, logits]), torch.cat([labels, labels]))
    assert doubled.item() == pytest.approx(expected, rel=1e-6)


def test_total_loss_weights_each_term():
    classification = torch.tensor(1.5)
    label_based = torch.tensor(0.25)
    data_based = torch.tensor(2.0)
    # 1.5 + 0.5 * 0.25 + 3 * 2.0 = 7.625
    assert total_loss(classification, label_based, data_based, 0.5, 3.0).item() == pytest.approx(7.625)
    # Absent terms count as zero whatever their weight.
    assert total_loss(classification, None, data_based, 0.5, 3.0).item() == pytest.approx(7.5)
    assert total_loss(classification, label_based, None, 0.5, 3.0).item() == pytest.approx(1.625)
    assert total_loss(classification, None, None, 0.5, 3.0).item() == pytest.approx(1.5)


def test_losses_are_float32_under_half_precision_inputs():
    # The trainer runs under bf16 autocast on GPUs; the losses upcast so the softmax is taken in fp32.
    projection = PROJECTION.to(torch.bfloat16)
    assert label_based_contrastive_loss(projection, LABELS, TEMPERATURE).dtype == torch.float32
    assert data_based_contrastive_loss(projection, projection, TEMPERATURE).dtype == torch.float32
    assert classification_loss(projection, torch.tensor([0, 1, 1])).dtype == torch.float32
