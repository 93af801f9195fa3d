"""Batches: uniform training batches have the label mix of random samples, length-grouped ones do not; evaluation
batches cover the split once; the typed batch carries both views to the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import write_dataset

from clmlf.config import build_config
from clmlf.loading import Batch, LengthSortedBatches, ShuffledBatches
from clmlf.train import Run

SPLIT_SIZE = 2000
BATCH_SIZE = 32
EPOCHS = 10


@pytest.fixture(scope="module")
def correlated_split() -> tuple[np.ndarray, np.ndarray]:
    """Text lengths and labels where longer posts are more often of a later label, as in real tweets (sarcastic
    HFM posts run longer): what makes length-grouped batches skew their label mix."""
    generator = np.random.default_rng(0)
    lengths = generator.integers(5, 65, SPLIT_SIZE)
    labels = np.digitize(lengths, [25, 45])  # 0, 1, 2 by length band
    relabelled = generator.random(SPLIT_SIZE) < 0.3
    labels[relabelled] = generator.integers(0, 3, relabelled.sum())
    return lengths, labels


def label_count_variance_ratio(sampler, labels: np.ndarray) -> np.ndarray:
    """Per label: the variance over batches of the label's count in a full batch, over the variance a uniform
    sample without replacement has (hypergeometric: n p (1 - p) (N - n) / (N - 1)). Near 1 for random batches."""
    counts = []
    for _ in range(EPOCHS):
        for batch in sampler:
            if len(batch) == BATCH_SIZE:
                counts.append(np.bincount(labels[batch], minlength=3))
    counts = np.array(counts)
    share = np.bincount(labels, minlength=3) / len(labels)
    size = len(labels)
    expected = BATCH_SIZE * share * (1 - share) * (size - BATCH_SIZE) / (size - 1)
    return counts.var(axis=0, ddof=1) / expected


def test_uniform_batches_have_the_label_mix_of_random_samples(correlated_split):
    lengths, labels = correlated_split
    sampler = ShuffledBatches(lengths.tolist(), BATCH_SIZE, torch.Generator().manual_seed(7), group_by_length=False)
    ratios = label_count_variance_ratio(sampler, labels)
    # 620 batches: the variance estimate's standard error is about 6%, so [0.8, 1.25] is a bound of 3.5 of them.
    assert np.all((ratios > 0.8) & (ratios < 1.25)), ratios


def test_length_grouped_batches_skew_the_label_mix(correlated_split):
    lengths, labels = correlated_split
    sampler = ShuffledBatches(lengths.tolist(), BATCH_SIZE, torch.Generator().manual_seed(7), group_by_length=True)
    ratios = label_count_variance_ratio(sampler, labels)
    # The same statistic tells them apart: batches of similar length share labels far more than random ones.
    assert ratios.max() > 3, ratios


@pytest.mark.parametrize("group_by_length", [False, True])
def test_every_post_is_in_one_training_batch_per_epoch(group_by_length):
    lengths = [3, 9, 4, 4, 7, 1, 12, 5, 6, 2, 8]  # 11 posts, batches of 5: the last batch of one is dropped
    sampler = ShuffledBatches(lengths, 5, torch.Generator().manual_seed(0), group_by_length)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    seen = [index for batch in batches for index in batch]
    assert len(seen) == len(set(seen)) == 10
    orders = {
        tuple(tuple(batch) for batch in ShuffledBatches(lengths, 5, torch.Generator().manual_seed(s), False))
        for s in range(5)
    }
    assert len(orders) > 1, "the generator's seed changes the order"


def test_evaluation_batches_cover_the_split_once_shortest_first():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = list(LengthSortedBatches(lengths, 3))
    assert len(batches) == len(LengthSortedBatches(lengths, 3)) == 3
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[index] for index in flat] == sorted(lengths)


def test_a_training_batch_carries_both_views_as_model_inputs(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, "demo")
    config = build_config("demo", "tiny", {"data_root": str(root), "batch_size": 4})
    run = Run(config, log=lambda message: None)
    batch = next(iter(run.loader("train", 0)))
    assert isinstance(batch, Batch) and len(batch) == 4
    posts = run.dataset.splits["train"]
    assert batch.labels.tolist() == [posts[index].label for index in batch.indices.tolist()]
    original, augmented = batch.original, batch.augmented
    assert original.input_ids.shape == original.attention_mask.shape
    assert augmented.input_ids.shape == augmented.attention_mask.shape
    # The augmented view's text is the back-translation ("back-translated post ..."), longer than the post.
    assert augmented.input_ids.shape[1] > original.input_ids.shape[1]
    assert original.images.shape == augmented.images.shape == (4, 3, 64, 64)
    assert original.text_states is None and original.image_features is None
    # Without DBCL there is no augmented view; evaluation batches have none either.
    assert next(iter(run.loader("dev", 0))).augmented is None
    mlf = Run(build_config("demo", "tiny", {"data_root": str(root), "model.variant": "mlf"}), log=lambda _: None)
    assert next(iter(mlf.loader("train", 0))).augmented is None
