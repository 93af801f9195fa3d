"""Writers for small data sets in the real on-disk formats (split JSON, translation JSON, JPEG images), for
tests that need a data set without the real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from clmlf.data import IMAGE_FOLDER, SPLITS, dataset_spec


def write_json(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_split(path: Path, records: list[dict[str, Any]]) -> Path:
    """A split file: a JSON list of {"id", "text", "emotion_label"}."""
    return write_json(path, records)


def write_translations(path: Path, entries: list[dict[str, Any]]) -> Path:
    """A translation file: a JSON list of {"id", "text_translation"}."""
    return write_json(path, entries)


def write_jpeg(
    path: Path,
    color: tuple[int, int, int] = (200, 40, 40),
    size: tuple[int, int] = (16, 16),
    *,
    noisy: bool = False,
) -> Path:
    """A real JPEG; `noisy` gives one whose compressed data is large enough to cut in the middle of a scan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.effect_noise(size, 60).convert("RGB") if noisy else Image.new("RGB", size, color)
    image.save(path, format="JPEG")
    return path


def make_records(prefix: str, count: int, num_classes: int = 3) -> list[dict[str, Any]]:
    """Valid split records with ids `<prefix>0`, `<prefix>1`, ... and labels cycling through the classes."""
    return [
        {
            "id": f"{prefix}{index}",
            "text": f"post {prefix}{index} about the weather",
            "emotion_label": index % num_classes,
        }
        for index in range(count)
    ]


def translations_for(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": record["id"], "text_translation": f"back-translated {record['text']}"} for record in records]


def write_dataset(
    root: Path,
    name: str = "demo",
    splits: dict[str, list[dict[str, Any]]] | None = None,
    *,
    translations: list[dict[str, Any]] | None = None,
    images: bool = True,
) -> Path:
    """A complete, valid data set `name` under `root` in its real layout; returns the data set's folder.

    Without `splits`, writes 6/3/3 posts with ids like "train0"; without `translations`, every post gets one.
    """
    spec = dataset_spec(name)
    directory = root / spec.directory
    if splits is None:
        sizes = {"train": 6, "dev": 3, "test": 3}
        splits = {split: make_records(split, sizes[split], spec.num_classes) for split in SPLITS}
    for split, records in splits.items():
        write_split(directory / spec.split_files[split], records)
    all_records = [record for records in splits.values() for record in records]
    if translations is None:
        translations = translations_for(all_records)
    write_translations(directory / spec.translation_file, translations)
    if images:
        for index, record in enumerate(all_records):
            write_jpeg(directory / IMAGE_FOLDER / f"{record['id']}.jpg", color=(index * 20 % 256, 90, 160))
    return directory
