"""A feature cache shared by all trials of a study: frozen encoders run once per data set, not once per trial and epoch.

Two kinds of entry, each in its own folder under `<cache root>/features/`:
- image features: the frozen backbone's feature map (C, p, p) of every dev/test image (evaluation transform) and,
  for every training image, view 0 (evaluation transform) plus a bank of K augmented views (RandAugment plus
  flip, as in training). Each epoch a trial draws its training views from the bank, so K trades disk and build
  time (K + 1 backbone passes per training image) against how many distinct augmentations training sees. Each
  distinct image of a split is encoded once, with a row index per post: in the aspect-based sets a post with
  several aspects is several examples that share one image.
- text states: the frozen text encoder's last hidden states of every text (and, for training, back-translation),
  stored ragged (all tokens of all texts in one array plus offsets). Used only while the text encoder is frozen.

Stored as half-precision `.npy` files opened memory-mapped, so every trial on a node shares one copy in the page
cache. An entry's folder name is a digest of everything that changes its numbers (the data's content, the
encoder's actual weights as `encoder_key`, a `state_digest` of them, image size, augmentation settings, K, seed,
token ids and segment ids, and the precision the encoders ran in), so a changed setting can never reuse stale
features. An entry is built once under a file lock while other trials wait, then renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clmlf.config import ConfigError
from clmlf.data import Post
from clmlf.loading import EncodedTexts, load_rgb, pad, pad_segments
from clmlf.precision import Precision

FORMAT_VERSION = 2
COMPLETE_MARKER = "COMPLETE"
BUILD_BATCH = 64


def default_cache_root() -> Path:
    return Path(os.environ.get("CLMLF_CACHE_DIR", Path.home() / ".cache" / "clmlf")) / "features"


@dataclass(frozen=True)
class RaggedStates:
    """Variable-length token states: rows offsets[i]:offsets[i+1] of `tokens` (T, D) belong to text i."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __getitem__(self, index: int) -> torch.Tensor:
        rows = self.tokens[self.offsets[index] : self.offsets[index + 1]]
        return torch.from_numpy(np.array(rows, dtype=np.float32))  # (S_i, D)


@dataclass(frozen=True)
class ImageFeatures:
    """Per distinct image, dev/test: (M, C, p, p); train: (M, 1 + K, C, p, p), view 0 being the evaluation
    transform. `rows[split]` (N,) gives each post's row."""

    splits: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    augmented_views: int


@dataclass(frozen=True)
class TextStates:
    texts: dict[str, RaggedStates]
    translations: RaggedStates | None


def state_digest(module: nn.Module) -> str:
    """A digest of a module's actual weights: a random initialisation under another seed is another encoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_digest(files: Sequence[Path], posts: dict[str, Sequence[Post]]) -> str:
    """The split and translation files' bytes, and each image's id, size and modification time.

    Hashing every image's bytes would cost a read of the whole image folder per trial; size and mtime change
    whenever an image is replaced.
    """
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    for split in sorted(posts):
        for post in posts[split]:
            digest.update(f"{split}/{post.id}/{post.label}".encode())
            if post.image_path is not None:
                status = post.image_path.stat()
                digest.update(f"{status.st_size}/{status.st_mtime_ns}".encode())
    return digest.hexdigest()


def distinct_images(posts: Sequence[Post]) -> tuple[list[Post], np.ndarray]:
    """The first post of each distinct image (a blanked image is one grey image), and each post's index among them."""
    first: dict[Path | None, int] = {}
    representatives: list[Post] = []
    rows = np.empty(len(posts), dtype=np.int64)
    for index, post in enumerate(posts):
        rows[index] = first.setdefault(post.image_path, len(representatives))
        if rows[index] == len(representatives):
            representatives.append(post)
    return representatives, rows


def _stable_seed(*parts) -> int:
    # Python's hash() of strings changes between processes; the bank must not.
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def key_digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True).encode()).hexdigest()[:24]


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_entry(folder: Path, build: Callable[[Path], None], log: Callable[[str], None]) -> Path:
    """The complete folder for this key: built here under a lock, or waited for while another process builds it."""
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    with exclusive_lock(folder.with_name(folder.name + ".lock")):
        if (folder / COMPLETE_MARKER).is_file():
            return folder
        started = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=folder.parent))
        try:
            build(staging)
            (staging / COMPLETE_MARKER).write_text(json.dumps({"built_seconds": time.perf_counter() - started}))
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"feature cache: built {folder} in {time.perf_counter() - started:.1f} s")
    return folder


def _half_precision(values: np.ndarray, what: str) -> np.ndarray:
    half = values.astype(np.float16)
    if not np.isfinite(half).all():
        raise FloatingPointError(f"{what} exceed half precision's range (|x| > 65504); run without the feature cache")
    return half


def _open_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


class CacheTooLarge(ConfigError):
    """A feature bank that would not fit on the cache's disk: a setting to change, so no trial retries it."""


def require_space(folder: Path, needed_bytes: int, augmented_views: int) -> None:
    """Refuse a bank of `needed_bytes` that the disk holding `folder` has no room for, with what to change."""
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise CacheTooLarge(
            f"augmented_views={augmented_views}: the image feature bank needs {needed_bytes / 2**30:.2f} GiB in "
            f"{folder.parent}, where {free / 2**30:.2f} GiB are free; lower augmented_views or set "
            "feature_cache_dir to a folder on a larger disk"
        )


def _write_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)


@torch.no_grad()
def _backbone_batches(
    backbone: nn.Module, images: list[torch.Tensor], device: torch.device, precision: Precision
) -> np.ndarray:
    with precision.autocast():
        features = backbone(torch.stack(images).to(device))  # (B, C, p, p)
    return _half_precision(features.float().cpu().numpy(), "image features")


def image_features(
    backbone: nn.Module,
    posts: dict[str, Sequence[Post]],
    *,
    encoder_key: str,
    dataset_key: str,
    image_size: int,
    evaluation: Callable,
    augmentation: Callable,
    augmentation_settings: dict,
    augmented_views: int,
    seed: int,
    device: torch.device,
    precision: Precision,
    cache_root: Path,
    log: Callable[[str], None] = print,
) -> ImageFeatures:
    key = key_digest(
        {
            "kind": "images",
            "data": dataset_key,
            "encoder": encoder_key,
            "image_size": image_size,
            "augmentation": augmentation_settings,
            "augmented_views": augmented_views,
            "seed": seed,
            "precision": precision.name,
        }
    )
    folder = cache_root / f"images-{key}"

    def build(staging: Path) -> None:
        backbone.eval()
        distinct = {split: distinct_images(split_posts) for split, split_posts in posts.items()}
        bar = _progress(sum(len(images) for images, _ in distinct.values()), "image features", "image")
        for split in posts:
            views = 1 + augmented_views if split == "train" else 1
            images, rows = distinct[split]
            np.save(staging / f"{split}_rows.npy", rows)
            array = None
            for start in range(0, len(images), BUILD_BATCH):
                chunk = [load_rgb(post) for post in images[start : start + BUILD_BATCH]]
                for view in range(views):
                    if view == 0:
                        batch = [evaluation(image) for image in chunk]
                    else:
                        # Each (batch, view) draws from its own seed, so the bank does not depend on batch order.
                        torch.manual_seed(_stable_seed(seed, split, start, view))
                        batch = [augmentation(image) for image in chunk]
                    features = _backbone_batches(backbone, batch, device, precision)  # (B, C, p, p)
                    if array is None and split == next(iter(posts)) and start == 0 and view == 0:
                        # One image's size is known now: refuse a bank that would fill the disk before writing any.
                        images_and_views = sum(
                            len(distinct[name][0]) * (1 + augmented_views if name == "train" else 1) for name in posts
                        )
                        require_space(staging, images_and_views * features[0].size * 2, augmented_views)
                    if array is None:
                        shape = (len(images), views, *features.shape[1:])
                        array = _write_array(staging / f"{split}.npy", shape)
                    array[start : start + len(chunk), view] = features
                bar.update(len(chunk))
            if array is not None:
                array.flush()
        bar.close()

    cached_entry(folder, build, log)
    splits = {}
    for split in posts:
        array = _open_array(folder / f"{split}.npy")
        splits[split] = array if split == "train" else array[:, 0]
    rows = {split: np.load(folder / f"{split}_rows.npy") for split in posts}
    return ImageFeatures(splits=splits, rows=rows, augmented_views=augmented_views)


def _progress(total: int, description: str, unit: str) -> tqdm:
    """A progress bar on a terminal, nothing otherwise (trials' logs, CI)."""
    return tqdm(total=total, desc=description, unit=unit, disable=None, leave=False)


def _ragged_states(
    encoder: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    sequences: Sequence[Sequence[int]],
    segments: Sequence[Sequence[int]] | None,
    pad_token_id: int,
    width: int,
    device: torch.device,
    precision: Precision,
    path: Path,
    bar: tqdm,
) -> None:
    lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = _write_array(path.with_suffix(".tokens.npy"), (int(offsets[-1]), width))
    # Similar lengths together keep padding, and so wasted encoder work, small.
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), BUILD_BATCH):
        indices = order[start : start + BUILD_BATCH]
        ids, mask = pad([sequences[index] for index in indices], pad_token_id)
        segment_ids = pad_segments([segments[index] for index in indices]).to(device) if segments is not None else None
        with torch.no_grad(), precision.autocast():
            states = encoder(ids.to(device), mask.to(device), segment_ids)  # (B, S, D)
        states = _half_precision(states.float().cpu().numpy(), "text states")
        for row, index in enumerate(indices):
            tokens[offsets[index] : offsets[index + 1]] = states[row, : lengths[index]]
        bar.update(len(indices))
    tokens.flush()
    np.save(path.with_suffix(".offsets.npy"), offsets)


def _open_ragged(path: Path) -> RaggedStates:
    return RaggedStates(
        tokens=_open_array(path.with_suffix(".tokens.npy")), offsets=np.load(path.with_suffix(".offsets.npy"))
    )


def _encoder_inputs(encoded: EncodedTexts) -> list:
    """What the text encoder is given for a split; segment ids only where there are any, so that the keys of
    single-text entries stay as they were."""
    inputs = [encoded.texts, encoded.translations]
    if encoded.text_segments is not None or encoded.translation_segments is not None:
        inputs += [encoded.text_segments, encoded.translation_segments]
    return inputs


def text_states(
    text_encoder: nn.Module,
    encode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    texts: dict[str, EncodedTexts],
    *,
    encoder_key: str,
    width: int,
    device: torch.device,
    precision: Precision,
    cache_root: Path,
    log: Callable[[str], None] = print,
) -> TextStates:
    ids_digest = hashlib.sha256(json.dumps({split: _encoder_inputs(texts[split]) for split in sorted(texts)}).encode())
    key = key_digest(
        {"kind": "text", "encoder": encoder_key, "token_ids": ids_digest.hexdigest(), "precision": precision.name}
    )
    folder = cache_root / f"text-{key}"

    def build(staging: Path) -> None:
        text_encoder.eval()
        total = sum(len(encoded.texts) + len(encoded.translations or []) for encoded in texts.values())
        bar = _progress(total, "text states", "text")
        for split, encoded in texts.items():
            arguments = (encoded.pad_token_id, width, device, precision)
            _ragged_states(encode, encoded.texts, encoded.text_segments, *arguments, staging / f"{split}", bar)
            if encoded.translations:
                translations = (encoded.translations, encoded.translation_segments)
                _ragged_states(encode, *translations, *arguments, staging / f"{split}_translation", bar)
        bar.close()

    cached_entry(folder, build, log)
    translations = None
    if (folder / "train_translation.offsets.npy").is_file():
        translations = _open_ragged(folder / "train_translation")
    return TextStates(texts={split: _open_ragged(folder / split) for split in texts}, translations=translations)
