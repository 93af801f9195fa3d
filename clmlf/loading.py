"""From checked posts to padded batches: texts are tokenised once per data set, batches are padded per batch.

A batch holds the original inputs and, when DBCL runs, the augmented ones (the back-translation and a
RandAugment view of the image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clmlf.data import Post


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids of every post's text and translation, without padding."""

    texts: list[list[int]]
    translations: list[list[int]]
    pad_token_id: int


def encode_texts(tokenizer, posts: Sequence[Post], max_length: int, with_translations: bool) -> EncodedTexts:
    """Posts with an aspect become the pair "[CLS] text [SEP] aspect [SEP]" (the paper's Appendix B), the
    translation paired with the same aspect; a pair too long loses word pieces from its longer part first."""
    aspects = [post.aspect for post in posts] if posts and posts[0].aspect is not None else None

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, aspects, truncation=True, max_length=max_length)["input_ids"]

    texts = encode([post.text for post in posts])
    translations = encode([post.translation for post in posts]) if with_translations else []
    return EncodedTexts(texts=texts, translations=translations, pad_token_id=tokenizer.pad_token_id)


def load_rgb(post: Post) -> Image.Image:
    # A record whose image the "blank" policy replaced gets a mid-grey image: no signal, same shape.
    if post.image_path is None:
        return Image.new("RGB", (256, 256), (128, 128, 128))
    with Image.open(post.image_path) as image:
        return image.convert("RGB")


@dataclass
class CachedInputs:
    """A split's precomputed frozen-encoder outputs (see `clmlf.features`); any part may be absent.

    image_features: (M, C, p, p) for dev/test, (M, 1 + K, C, p, p) for train (view 0 = evaluation transform), one
    row per distinct image; image_rows: (N,) each post's row there (posts of one image share it).
    text_states / translation_states: ragged (S_i, D) per post, indexable by post.
    """

    image_features: np.ndarray | None = None
    image_rows: np.ndarray | None = None
    text_states: object | None = None
    translation_states: object | None = None
    augment_original_images: bool = False
    seed: int = 0


class PostDataset(Dataset):
    """Items are dicts of unpadded ids, image tensors (or cached features) and the label; `collate` pads them.

    `epoch` picks the training views drawn from a cached bank; `use_text_states` switches cached text states on
    while the text encoder is frozen. Both are set by the trainer before each epoch.
    """

    def __init__(
        self,
        posts: Sequence[Post],
        texts: EncodedTexts | None,
        image_transform: Callable | None,
        augmented_image_transform: Callable | None = None,
        cached: CachedInputs | None = None,
        augmented: bool = False,
    ):
        self.posts = posts
        self.texts = texts
        self.image_transform = image_transform
        self.augmented_image_transform = augmented_image_transform
        self.cached = cached or CachedInputs()
        self.augmented = augmented
        self.epoch = 0
        self.use_text_states = False

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, index: int) -> dict:
        post = self.posts[index]
        cached = self.cached
        item: dict = {"index": index, "label": post.label}
        if self.texts is not None:
            item["input_ids"] = self.texts.texts[index]
            if self.augmented:
                item["translation_ids"] = self.texts.translations[index]
        if self.use_text_states and cached.text_states is not None:
            item["text_states"] = cached.text_states[index]
            if self.augmented:
                item["augmented_text_states"] = cached.translation_states[index]
        if cached.image_features is not None:
            item.update(self._cached_image_features(index))
        elif self.image_transform is not None:
            image = load_rgb(post)
            item["images"] = self.image_transform(image)
            if self.augmented:
                item["augmented_images"] = self.augmented_image_transform(image)
        return item

    def _cached_image_features(self, index: int) -> dict[str, torch.Tensor]:
        features = self.cached.image_features
        row = index if self.cached.image_rows is None else int(self.cached.image_rows[index])
        if features.ndim == 4:
            return {"image_features": _float_tensor(features[row])}
        # Draw this epoch's views from the bank: the original's (an augmented view when the training copy is
        # augmented too, else the evaluation view) and, for DBCL, a different augmented one.
        augmented_views = features.shape[1] - 1
        generator = np.random.default_rng([self.cached.seed, self.epoch, index])
        drawn = generator.permutation(np.arange(1, augmented_views + 1))
        original_view = int(drawn[0]) if self.cached.augment_original_images else 0
        item = {"image_features": _float_tensor(features[row, original_view])}
        if self.augmented:
            augmented_view = int(drawn[1]) if len(drawn) > 1 and original_view == drawn[0] else int(drawn[0])
            item["augmented_image_features"] = _float_tensor(features[row, augmented_view])
        return item


def _float_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids (B, S) padded to the longest in the batch, and the attention mask (B, S)."""
    length = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def pad_states(states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cached token states (S_i, D) padded with zeros to (B, S, D); the ids' attention mask marks the padding."""
    return torch.nn.utils.rnn.pad_sequence(list(states), batch_first=True)


def make_collate(pad_token_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            "index": torch.as_tensor([item["index"] for item in items]),
            "labels": torch.as_tensor([item["label"] for item in items]),
        }
        for key, prefix in (("input_ids", ""), ("translation_ids", "augmented_")):
            if key in items[0]:
                batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"] = pad(
                    [item[key] for item in items], pad_token_id
                )
        for key in ("images", "augmented_images", "image_features", "augmented_image_features"):
            if key in items[0]:
                batch[key] = torch.stack([item[key] for item in items])
        for key in ("text_states", "augmented_text_states"):
            if key in items[0]:
                batch[key] = pad_states([item[key] for item in items])
        return batch

    return collate


class LengthBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches of similar text length, so that per-batch padding stays short.

    Indices are shuffled, cut into pools of 50 batches, each pool sorted by length and cut into batches,
    and the batches shuffled again: close to random order, with little padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator):
        self.lengths = lengths
        self.batch_size = batch_size
        self.generator = generator

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        pool = self.batch_size * 50
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda index: self.lengths[index])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        # Contrastive losses need at least two examples; a last batch of one would give a degenerate loss.
        batches = [batch for batch in batches if len(batch) > 1]
        for position in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[position]

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest > 1 else 0)


def make_loader(
    dataset: Dataset,
    collate: Callable,
    *,
    batch_size: int,
    shuffle_generator: torch.Generator | None,
    lengths: Sequence[int] | None,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """Training loaders (a generator given) bucket by length; evaluation loaders keep the split's order."""
    common = {"collate_fn": collate, "num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        common["persistent_workers"] = False
    if shuffle_generator is None:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
    if lengths is None:
        lengths = [0] * len(dataset)
    sampler = LengthBucketSampler(lengths, batch_size, shuffle_generator)
    return DataLoader(dataset, batch_sampler=sampler, **common)
