"""The training losses as pure functions of tensors (Eq. 10, Algorithm 1, Algorithm 2, Eq. 11).

Every loss is a per-example (or per-pair) mean, so its value does not depend on the batch size; the original
code divides by the batch size a second time, which made losses incomparable across batch sizes.

Every loss runs in fp32 whatever autocast is active around it: the contrastive logits are similarities divided by
tau (0.07 in the paper), and bf16 would round them before the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clmlf.precision import in_fp32


@in_fp32
def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 10, L_sc: cross-entropy of logits (B, classes) against labels (B,), mean over the batch."""
    return F.cross_entropy(logits, labels)


@in_fp32
def label_based_contrastive_loss(
    projection: torch.Tensor, labels: torch.Tensor, temperature: float, variant: str = "paper"
) -> torch.Tensor:
    """Algorithm 1, LBCL: a supervised contrastive loss inside the batch.

    projection (B, D) is the LBCL head's output r; similarities z = r r^T (B, B). The positives of anchor i are
    every j with the same label, i itself included. The loss is minus the mean log-probability of the positive
    pairs under a row-wise log-softmax.

    variant "paper": log_softmax(z / tau), tau inside the softmax as in the paper.
    variant "original": log_softmax(z) / tau, as the original code; tau then only rescales the loss.
    """
    similarities = projection @ projection.T  # (B, B)
    if variant == "paper":
        log_probabilities = torch.log_softmax(similarities / temperature, dim=-1)
    elif variant == "original":
        log_probabilities = torch.log_softmax(similarities, dim=-1) / temperature
    else:
        raise ValueError(f"lbcl_variant: {variant!r} is not 'paper' or 'original'")
    positives = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B), diagonal included
    return -log_probabilities[positives].mean()


@in_fp32
def data_based_contrastive_loss(
    projection: torch.Tensor, augmented_projection: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Algorithm 2, DBCL: each sample's positive is its own augmented view.

    projection (B, D) is the LBCL head on the original inputs, augmented_projection (B, D) the DBCL head on the
    augmented inputs; logits r r_aug^T / tau (B, B), cross-entropy against the diagonal.
    """
    logits = projection @ augmented_projection.T / temperature  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets)


def total_loss(
    classification: torch.Tensor,
    label_based: torch.Tensor | None,
    data_based: torch.Tensor | None,
    lbcl_weight: float,
    dbcl_weight: float,
) -> torch.Tensor:
    """Eq. 11: L = L_sc + lambda_lbcl * L_lbcl + lambda_dbcl * L_dbcl (absent terms count as zero)."""
    loss = classification
    if label_based is not None:
        loss = loss + lbcl_weight * label_based
    if data_based is not None:
        loss = loss + dbcl_weight * data_based
    return loss
