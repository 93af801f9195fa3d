"""Writers for small data sets in the real on-disk formats (split JSON, translation JSON, JPEG images), for
tests that need a data set without the real one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from clmlf.data import IMAGE_FOLDER, SPLITS, dataset_spec


def shared_data(folder: str, variable: str) -> Path:
    """A folder of real data: `$variable` if set, else `../shared/data/<folder>` beside the repository (tests that
    read it skip where it is absent)."""
    return Path(os.environ.get(variable, Path(__file__).resolve().parents[2] / "shared" / "data" / folder))


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


ASPECT_HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"
# The released test files name one column fewer than their rows hold; the reader accepts both headers.
ASPECT_TEST_HEADER = "index\t#1 ImageID\t#2 String\t#2 String"
ASPECT_TERMS = ("Team {post}", "Coach Smith", "# Derby")


def write_tsv(path: Path, header: str, rows: list[list[Any]]) -> Path:
    """A tab-separated file: the header line, then one line per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header, *("\t".join(str(column) for column in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_aspect_rows(prefix: str, posts: int) -> list[list[Any]]:
    """Rows in TomBERT's layout (index, label, image, text with $T$, aspect) for `posts` posts: post k has
    k % 3 + 1 aspects, one row each, all sharing image `<prefix>k.jpg` and the text "Watching A and B and C
    tonight" with that row's aspect as $T$. Indexes count from 1 and labels cycle through 0, 1, 2."""
    rows: list[list[Any]] = []
    for post in range(posts):
        terms = [term.format(post=f"{prefix}{post}") for term in ASPECT_TERMS[: post % 3 + 1]]
        for aspect in terms:
            mentions = " and ".join("$T$" if term == aspect else term for term in terms)
            rows.append([len(rows) + 1, len(rows) % 3, f"{prefix}{post}.jpg", f"Watching {mentions} tonight", aspect])
    return rows


def back_translations_for(rows: list[list[Any]]) -> list[list[Any]]:
    """Rows of a back-translation file for `rows`: index and a text that keeps the aspect's $T$."""
    return [[row[0], f"Tonight I watch {row[3].removeprefix('Watching ').removesuffix(' tonight')}"] for row in rows]


def write_aspect_dataset(
    root: Path,
    name: str = "twitter2015",
    splits: dict[str, list[list[Any]]] | None = None,
    *,
    images: bool = True,
    translations: list[list[Any]] | None = None,
) -> Path:
    """A complete, valid aspect-based data set `name` under `root` in TomBERT's layout, with its images in
    `<root>/<name>_images/`; returns the data set's folder.

    Without `splits`, writes 6/3/3 posts (12/6/6 rows); `translations` adds train_translation.tsv.
    """
    spec = dataset_spec(name)
    directory = root / spec.directory
    if splits is None:
        splits = {
            "train": make_aspect_rows("train", 6),
            "dev": make_aspect_rows("dev", 3),
            "test": make_aspect_rows("test", 3),
        }
    for split, rows in splits.items():
        header = ASPECT_TEST_HEADER if split == "test" else ASPECT_HEADER
        write_tsv(directory / spec.split_files[split], header, rows)
    if translations is not None:
        write_tsv(directory / spec.translation_file, "index\ttext", translations)
    if images:
        names = dict.fromkeys(row[2] for rows in splits.values() for row in rows)
        for position, image_name in enumerate(names):
            write_jpeg(root / spec.image_folder / image_name, color=(position * 30 % 256, 120, 60))
    return directory
