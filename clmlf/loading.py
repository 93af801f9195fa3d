"""From checked posts to padded batches: texts are tokenised once per data set, batches are padded per batch.

A `Batch` holds the original view's inputs and, when DBCL runs, the augmented view's (the back-translation and
another augmentation of the image), each as the model's `ModelInputs`. A loader serves one split in one
`Phase` (epoch, and whether the text encoder is frozen); the trainer builds one per split and epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clmlf.data import Post
from clmlf.device import to_device
from clmlf.model import ModelInputs


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids of every post's text and translation, without padding.

    text_segments / translation_segments: the pairs' segment ids (BERT's token_type_ids), one per token: 0 for
    "[CLS] text [SEP]", 1 for "aspect [SEP]". None for single texts, and for encoders whose tokenizer has no
    segments (RoBERTa): the encoder's default, all 0, applies.
    """

    texts: list[list[int]]
    translations: list[list[int]]
    pad_token_id: int
    text_segments: list[list[int]] | None = None
    translation_segments: list[list[int]] | None = None


def encode_texts(tokenizer, posts: Sequence[Post], max_length: int, with_translations: bool) -> EncodedTexts:
    """Posts with an aspect become the pair "[CLS] text [SEP] aspect [SEP]" (the paper's Appendix B), the
    translation paired with the same aspect; a pair too long loses word pieces from its longer part first."""
    aspects = [post.aspect for post in posts] if posts and posts[0].aspect is not None else None

    def encode(texts: list[str]) -> tuple[list[list[int]], list[list[int]] | None]:
        encoded = tokenizer(texts, aspects, truncation=True, max_length=max_length)
        return encoded["input_ids"], encoded.get("token_type_ids") if aspects is not None else None

    texts, text_segments = encode([post.text for post in posts])
    translations, translation_segments = ([], None)
    if with_translations:
        translations, translation_segments = encode([post.translation for post in posts])
    return EncodedTexts(
        texts=texts,
        translations=translations,
        pad_token_id=tokenizer.pad_token_id,
        text_segments=text_segments,
        translation_segments=translation_segments,
    )


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


@dataclass(frozen=True)
class SplitInputs:
    """What a split's items are made of, fixed for a whole run."""

    posts: Sequence[Post]
    texts: EncodedTexts | None
    image_transform: Callable | None
    augmented_image_transform: Callable | None = None
    cached: CachedInputs = field(default_factory=CachedInputs)
    # DBCL's second view: the back-translation and another augmentation of the image.
    augmented: bool = False

    @property
    def lengths(self) -> list[int] | None:
        """Token count of every post's text (None without text): what batches are grouped or sorted by."""
        return [len(ids) for ids in self.texts.texts] if self.texts is not None else None


@dataclass(frozen=True)
class Phase:
    """What an epoch's items depend on besides the split.

    epoch: picks the training views drawn from a cached bank. text_frozen: while the text encoder is frozen, its
    cached states (when the split has them) stand in for the token ids.
    """

    epoch: int
    text_frozen: bool


@dataclass
class ItemView:
    """One post's inputs for one forward pass, before padding; what is absent stays None."""

    token_ids: list[int] | None = None
    segment_ids: list[int] | None = None  # (S_i,) for sentence-aspect pairs
    text_states: torch.Tensor | None = None  # (S_i, D)
    image: torch.Tensor | None = None  # (3, H, W)
    image_features: torch.Tensor | None = None  # (C, p, p)


@dataclass
class Item:
    index: int
    label: int
    original: ItemView
    augmented: ItemView | None


@dataclass
class Batch:
    """Padded inputs of the original view and, when DBCL runs, of the augmented view, with labels (B,) and the
    posts' indices in their split (B,)."""

    original: ModelInputs
    augmented: ModelInputs | None
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Batch:
        return self.map_tensors(lambda tensor: to_device(tensor, device))

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with pin_memory=True."""
        return self.map_tensors(torch.Tensor.pin_memory)

    def map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return Batch(
            original=self.original.map_tensors(function),
            augmented=self.augmented.map_tensors(function) if self.augmented is not None else None,
            labels=function(self.labels),
            indices=function(self.indices),
        )


class PostDataset(Dataset):
    """One split's items in one phase; `collate` pads a list of them into a `Batch`."""

    def __init__(self, split: SplitInputs, phase: Phase):
        self.split = split
        self.phase = phase

    def __len__(self) -> int:
        return len(self.split.posts)

    def __getitem__(self, index: int) -> Item:
        split, cached = self.split, self.split.cached
        post = split.posts[index]
        original = ItemView()
        augmented = ItemView() if split.augmented else None
        texts = split.texts
        if texts is not None:
            original.token_ids = texts.texts[index]
            if texts.text_segments is not None:
                original.segment_ids = texts.text_segments[index]
            if augmented is not None:
                augmented.token_ids = texts.translations[index]
                if texts.translation_segments is not None:
                    augmented.segment_ids = texts.translation_segments[index]
        if self.phase.text_frozen and cached.text_states is not None:
            original.text_states = cached.text_states[index]
            if augmented is not None:
                augmented.text_states = cached.translation_states[index]
        if cached.image_features is not None:
            self._draw_cached_image_features(index, original, augmented)
        elif split.image_transform is not None:
            image = load_rgb(post)
            original.image = split.image_transform(image)
            if augmented is not None:
                augmented.image = split.augmented_image_transform(image)
        return Item(index=index, label=post.label, original=original, augmented=augmented)

    def _draw_cached_image_features(self, index: int, original: ItemView, augmented: ItemView | None) -> None:
        features = self.split.cached.image_features
        # Posts that share an image share its row of features.
        image_rows = self.split.cached.image_rows
        row = index if image_rows is None else int(image_rows[index])
        if features.ndim == 4:
            original.image_features = _float_tensor(features[row])
            return
        # Draw this epoch's views from the bank: the original's (an augmented view when the training copy is
        # augmented too, else the evaluation view) and, for DBCL, a different augmented one.
        augmented_views = features.shape[1] - 1
        generator = np.random.default_rng([self.split.cached.seed, self.phase.epoch, index])
        drawn = generator.permutation(np.arange(1, augmented_views + 1))
        original_view = int(drawn[0]) if self.split.cached.augment_original_images else 0
        original.image_features = _float_tensor(features[row, original_view])
        if augmented is not None:
            augmented_view = int(drawn[1]) if len(drawn) > 1 and original_view == drawn[0] else int(drawn[0])
            augmented.image_features = _float_tensor(features[row, augmented_view])


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


def pad_segments(segments: Sequence[Sequence[int]]) -> torch.Tensor:
    """Segment ids (B, S) padded with segment 0, as the ids are; the attention mask hides the padding anyway."""
    return pad(segments, 0)[0]


def pad_states(states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cached token states (S_i, D) padded with zeros to (B, S, D); the ids' attention mask marks the padding."""
    return torch.nn.utils.rnn.pad_sequence(list(states), batch_first=True)


def collate_views(views: Sequence[ItemView], pad_token_id: int) -> ModelInputs:
    """The posts' views of one kind, padded and stacked into the model's inputs."""
    first = views[0]
    inputs = ModelInputs()
    if first.token_ids is not None:
        inputs.input_ids, inputs.attention_mask = pad([view.token_ids for view in views], pad_token_id)
    if first.segment_ids is not None:
        inputs.token_type_ids = pad_segments([view.segment_ids for view in views])
    if first.text_states is not None:
        inputs.text_states = pad_states([view.text_states for view in views])
    if first.image is not None:
        inputs.images = torch.stack([view.image for view in views])
    if first.image_features is not None:
        inputs.image_features = torch.stack([view.image_features for view in views])
    return inputs


def make_collate(pad_token_id: int) -> Callable[[list[Item]], Batch]:
    def collate(items: list[Item]) -> Batch:
        augmented = items[0].augmented is not None
        return Batch(
            original=collate_views([item.original for item in items], pad_token_id),
            augmented=collate_views([item.augmented for item in items], pad_token_id) if augmented else None,
            labels=torch.as_tensor([item.label for item in items]),
            indices=torch.as_tensor([item.index for item in items]),
        )

    return collate


class ShuffledBatches(torch.utils.data.Sampler[list[int]]):
    """Training batches in an order drawn from `generator`.

    uniform: a random permutation cut into batches, as the original code's shuffled loader: every batch is a
    uniform sample of the split, so the in-batch negatives of both contrastive losses are too.
    length-grouped: the permutation is cut into pools of 50 batches, each pool sorted by text length and cut
    into batches, and the batches shuffled again. Less padding, so faster; but a batch then holds posts of
    similar length, whose labels are correlated, and that changes the contrastive losses' negatives.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, group_by_length: bool):
        self.lengths = lengths
        self.batch_size = batch_size
        self.generator = generator
        self.group_by_length = group_by_length

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        pool = self.batch_size * 50 if self.group_by_length else len(order)
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            if self.group_by_length:
                chunk = sorted(chunk, key=lambda index: self.lengths[index])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        # Contrastive losses need at least two examples; a last batch of one would give a degenerate loss.
        batches = [batch for batch in batches if len(batch) > 1]
        if not self.group_by_length:
            yield from batches
            return
        for position in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[position]

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest > 1 else 0)


class LengthSortedBatches(torch.utils.data.Sampler[list[int]]):
    """Evaluation batches of posts sorted by text length: the least padding, and a fixed order. Each post's
    outputs do not depend on its batch in eval mode, so neither do the metrics."""

    def __init__(self, lengths: Sequence[int], batch_size: int):
        self.order = sorted(range(len(lengths)), key=lambda index: lengths[index])
        self.batch_size = batch_size

    def __iter__(self):
        for start in range(0, len(self.order), self.batch_size):
            yield self.order[start : start + self.batch_size]

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


def make_loader(
    dataset: PostDataset,
    collate: Callable,
    *,
    batch_size: int,
    shuffle_generator: torch.Generator | None,
    group_by_length: bool = False,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """Training loaders (a generator given) shuffle, grouped by length or not; evaluation loaders sort by length."""
    common = {"collate_fn": collate, "num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        common["persistent_workers"] = False
    lengths = dataset.split.lengths or [0] * len(dataset)
    if shuffle_generator is None:
        sampler = LengthSortedBatches(lengths, batch_size)
    else:
        sampler = ShuffledBatches(lengths, batch_size, shuffle_generator, group_by_length)
    return DataLoader(dataset, batch_sampler=sampler, **common)
