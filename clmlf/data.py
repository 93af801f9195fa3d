"""Readers for the CLMLF data sets (MVSA-Single, MVSA-Multiple, HFM and a small demo set) in the layout the
original code reads. A data set is checked whole before it is returned: every structural problem, every
missing translation and every bad image is collected and reported in one `DataError`, and whatever an image or
translation policy changes is counted in `LoadedDataset.affected` and listed in `LoadedDataset.warnings`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile
from tqdm import tqdm

SPLITS = ("train", "dev", "test")
IMAGE_POLICIES = ("error", "skip", "blank")
IMAGE_FOLDER = "dataset_image"
DATA_ROOT_VARIABLE = "CLMLF_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"
AFFECTED_KEYS = ("images_skipped", "images_blanked", "translations_replaced")

MVSA_LABEL_NAMES = ("positive", "neutral", "negative")
HFM_LABEL_NAMES = ("not-sarcastic", "sarcastic")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    directory: str
    split_files: dict[str, str]
    translation_file: str
    label_names: tuple[str, ...]
    selection_metric: str
    expected_sizes: dict[str, int] | None

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def expected_layout(self) -> str:
        files = [*self.split_files.values(), self.translation_file, f"{IMAGE_FOLDER}/<id>.jpg"]
        return ", ".join(f"{self.directory}/{file}" for file in files)


def _mvsa_split_files() -> dict[str, str]:
    return {split: f"10-flod-1/{split}.json" for split in SPLITS}


# The paper reports weighted F1 for the MVSA sets and macro F1 for HFM, so models are selected on the same.
DATASETS: dict[str, DatasetSpec] = {
    "mvsa-single": DatasetSpec(
        name="mvsa-single",
        directory="MVSA-single",
        split_files=_mvsa_split_files(),
        translation_file="MVSA-single_translation.json",
        label_names=MVSA_LABEL_NAMES,
        selection_metric="f1_weighted",
        expected_sizes={"train": 3611, "dev": 450, "test": 450},
    ),
    "mvsa-multiple": DatasetSpec(
        name="mvsa-multiple",
        directory="MVSA-multiple",
        split_files=_mvsa_split_files(),
        translation_file="MVSA-multiple_translation.json",
        label_names=MVSA_LABEL_NAMES,
        selection_metric="f1_weighted",
        expected_sizes={"train": 13624, "dev": 1700, "test": 1700},
    ),
    "hfm": DatasetSpec(
        name="hfm",
        directory="HFM",
        split_files={"train": "train.json", "dev": "valid.json", "test": "test.json"},
        translation_file="HFM.json",
        label_names=HFM_LABEL_NAMES,
        selection_metric="f1_macro",
        expected_sizes={"train": 19816, "dev": 2410, "test": 2409},
    ),
    "demo": DatasetSpec(
        name="demo",
        directory="demo",
        split_files=_mvsa_split_files(),
        translation_file="demo_translation.json",
        label_names=MVSA_LABEL_NAMES,
        selection_metric="f1_weighted",
        expected_sizes=None,
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    key = name.strip().lower()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    return DATASETS[key]


@dataclass(frozen=True)
class Post:
    id: str
    text: str
    label: int
    translation: str
    image_path: Path | None


@dataclass(frozen=True)
class Problem:
    file: Path
    record_id: str | None
    message: str

    def __str__(self) -> str:
        if self.record_id is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}: record {self.record_id}: {self.message}"


class DataError(ValueError):
    """A data set that cannot be used as it is; `problems` holds every problem found, not just the first."""

    def __init__(self, subject: str, problems: list[Problem], hint: str | None = None) -> None:
        self.subject = subject
        self.problems = list(problems)
        self.hint = hint
        super().__init__(self._describe())

    def _describe(self) -> str:
        count = len(self.problems)
        lines = [f"{self.subject} has {count} problem{'' if count == 1 else 's'}:"]
        lines += [f"  {problem}" for problem in self.problems]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._describe()

    # Ray sends exceptions between processes; the default pickling would call __init__ with the message only.
    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.subject, self.problems, self.hint))


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The data set's folder does not exist under the data root."""


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    directory: Path
    splits: dict[str, list[Post]]
    affected: dict[str, int]
    warnings: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"data set {self.spec.name!r} from {self.directory}"]
        for split, posts in self.splits.items():
            line = f"  {split}: {len(posts)} posts"
            expected = (self.spec.expected_sizes or {}).get(split)
            if expected is not None and expected != len(posts):
                line += f" (the published split has {expected})"
            lines.append(line)
        counts = ", ".join(f"{key.replace('_', ' ')} {self.affected[key]}" for key in AFFECTED_KEYS)
        lines.append(f"  changed by policy: {counts}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Record:
    split: str
    file: Path
    id: str
    text: str
    label: int


def check_image(path: Path) -> str | None:
    """None when the image opens and decodes completely, else why it cannot be used."""
    with _truncated_images_refused():
        return _image_problem(path)


def _image_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"cannot be read: {error}"
    if not path.is_file():
        return "not a file"
    if size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            # libjpeg still reads every byte at reduced scale: truncation is caught at a fraction of the cost.
            image.draft("RGB", (64, 64))
            image.load()
    except Exception as error:  # PIL raises many kinds for bad files; any of them means unusable
        return f"cannot be decoded: {error}"
    return None


@contextmanager
def _truncated_images_refused() -> Iterator[None]:
    # With this PIL switch on, a truncated JPEG decodes with a grey bottom and the check would pass it.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_dataset(
    name: str,
    data_root: str | Path | None,
    *,
    need_images: bool = True,
    need_translations: bool = True,
    image_policy: str = "error",
) -> LoadedDataset:
    """Read and check a whole data set; raises `DataError` listing every problem found.

    `image_policy` says what happens to posts whose image is missing, empty or undecodable: "error" reports
    them, "skip" removes them from their split and "blank" keeps them without an image. Structural problems
    (unreadable files, malformed records, duplicate ids, bad labels, missing translations) are always errors.
    """
    spec = dataset_spec(name)
    if image_policy not in IMAGE_POLICIES:
        raise ValueError(f"unknown image policy {image_policy!r}; choose one of {', '.join(IMAGE_POLICIES)}")
    directory = _dataset_directory(spec, data_root)
    subject = f"data set {spec.name!r} at {directory}"

    problems: list[Problem] = []
    records = {split: _read_split(split, directory / spec.split_files[split], spec, problems) for split in SPLITS}
    _check_unique_ids(records, problems)

    translations: dict[str, str] = {}
    if need_translations:
        translations = _read_translations(directory / spec.translation_file, records, problems)

    image_reasons: dict[str, str] = {}
    image_folder = directory / IMAGE_FOLDER
    if need_images:
        if image_folder.is_dir():
            image_reasons = _check_images(image_folder, records)
        else:
            problems.append(
                Problem(
                    image_folder,
                    None,
                    f"image folder does not exist; expected {IMAGE_FOLDER}/<id>.jpg for every post "
                    "(load with need_images=False for text-only work)",
                )
            )

    image_problems = [
        Problem(_image_path(image_folder, record.id), record.id, f"image {image_reasons[record.id]}")
        for split_records in records.values()
        for record in split_records
        if record.id in image_reasons
    ]
    if image_policy == "error":
        problems += image_problems
    if problems:
        hint = None
        if image_policy == "error" and image_problems:
            hint = (
                f"{len(image_problems)} of these are bad images: --image-policy skip drops those posts, "
                "--image-policy blank keeps them without an image."
            )
        raise DataError(subject, problems, hint)

    affected = dict.fromkeys(AFFECTED_KEYS, 0)
    warnings: list[Problem] = []
    splits: dict[str, list[Post]] = {}
    for split, split_records in records.items():
        posts = []
        for record in split_records:
            image_path = _image_path(image_folder, record.id) if need_images else None
            if record.id in image_reasons:
                reason = image_reasons[record.id]
                if image_policy == "skip":
                    affected["images_skipped"] += 1
                    warnings.append(Problem(image_path, record.id, f"image {reason}; post skipped from {split}"))
                    continue
                affected["images_blanked"] += 1
                warnings.append(Problem(image_path, record.id, f"image {reason}; post kept without an image"))
                image_path = None
            translation = record.text
            if need_translations:
                translation = translations[record.id]
                if not _has_letter_or_digit(translation):
                    affected["translations_replaced"] += 1
                    warnings.append(
                        Problem(
                            directory / spec.translation_file,
                            record.id,
                            f"translation {translation!r} has no letter or digit; the post's own text is "
                            "used as its augmentation",
                        )
                    )
                    translation = record.text
            posts.append(Post(record.id, record.text, record.label, translation, image_path))
        splits[split] = posts
    return LoadedDataset(spec, directory, splits, affected, warnings)


def _dataset_directory(spec: DatasetSpec, data_root: str | Path | None) -> Path:
    if data_root is None:
        if spec.name == "demo":
            from clmlf.demo_data import ensure_demo_dataset

            data_root = ensure_demo_dataset()
        else:
            data_root = os.environ.get(DATA_ROOT_VARIABLE, DEFAULT_DATA_ROOT)
    root = Path(data_root).expanduser()
    directory = root / spec.directory
    if directory.is_dir():
        return directory
    message = f"folder does not exist; expected the layout {spec.expected_layout()} under {root}"
    if root.is_dir():
        # Folder names are case-sensitive on Linux, and the releases spell them inconsistently.
        near_misses = [child.name for child in root.iterdir() if child.name.lower() == spec.directory.lower()]
        if near_misses:
            message += f"; found {near_misses[0]!r} instead, rename it to {spec.directory!r}"
    raise DatasetNotFoundError(
        f"data set {spec.name!r} at {directory}",
        [Problem(directory, None, message)],
        f"Pass the data root (the folder that contains {spec.directory}/) or set {DATA_ROOT_VARIABLE}.",
    )


def _read_json_list(path: Path, what: str, problems: list[Problem]) -> list[Any] | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(Problem(path, None, f"{what} file is missing"))
        return None
    except UnicodeDecodeError as error:
        problems.append(Problem(path, None, f"{what} file is not UTF-8: {error}"))
        return None
    except json.JSONDecodeError as error:
        problems.append(Problem(path, None, f"{what} file is not valid JSON: {error}"))
        return None
    except OSError as error:
        problems.append(Problem(path, None, f"{what} file cannot be read: {error}"))
        return None
    if not isinstance(content, list):
        problems.append(Problem(path, None, f"{what} file must hold a JSON list, found {type(content).__name__}"))
        return None
    return content


def _record_id(path: Path, index: int, entry: Any, problems: list[Problem]) -> str | None:
    """The entry's id when it is usable; otherwise a problem naming the entry by its position in the list."""
    where = f"list entry {index}"
    if not isinstance(entry, dict):
        problems.append(Problem(path, None, f"{where} must be a JSON object, found {type(entry).__name__}"))
        return None
    if "id" not in entry:
        problems.append(Problem(path, None, f"{where} has no 'id'"))
        return None
    record_id = entry["id"]
    if not isinstance(record_id, str):
        problems.append(
            Problem(path, None, f"{where}: 'id' must be a string, found {type(record_id).__name__} {record_id!r}")
        )
        return None
    if not record_id.strip():
        problems.append(Problem(path, None, f"{where}: 'id' is empty"))
        return None
    if "/" in record_id or "\\" in record_id:
        # Ids name image files; a separator would reach outside the image folder.
        problems.append(Problem(path, record_id, "'id' contains a path separator"))
        return None
    return record_id


def _read_split(split: str, path: Path, spec: DatasetSpec, problems: list[Problem]) -> list[_Record]:
    """Records with a usable id, in file order; every other defect becomes a problem."""
    entries = _read_json_list(path, "split", problems)
    if entries is None:
        return []
    records = []
    for index, entry in enumerate(entries):
        record_id = _record_id(path, index, entry, problems)
        if record_id is None:
            continue
        missing = [key for key in ("text", "emotion_label") if key not in entry]
        if missing:
            problems.append(Problem(path, record_id, f"missing {', '.join(repr(key) for key in missing)}"))
        text = entry.get("text", "")
        label = entry.get("emotion_label", 0)
        if not isinstance(text, str):
            problems.append(Problem(path, record_id, f"'text' must be a string, found {type(text).__name__}"))
        elif "text" in entry and not text.strip():
            problems.append(Problem(path, record_id, "'text' is empty"))
        if not isinstance(label, int) or isinstance(label, bool):
            problems.append(
                Problem(
                    path,
                    record_id,
                    f"'emotion_label' must be an integer, found {type(label).__name__} {label!r}",
                )
            )
        elif label not in range(spec.num_classes):
            names = ", ".join(f"{value} {name}" for value, name in enumerate(spec.label_names))
            problems.append(Problem(path, record_id, f"'emotion_label' {label} is not one of {names}"))
        records.append(_Record(split, path, record_id, text, label))
    return records


def _check_unique_ids(records: dict[str, list[_Record]], problems: list[Problem]) -> None:
    # Ids name image files and translation entries, so they must be unique across the whole data set.
    first_use: dict[str, _Record] = {}
    for split_records in records.values():
        for record in split_records:
            earlier = first_use.setdefault(record.id, record)
            if earlier is record:
                continue
            where = "earlier in this file" if earlier.file == record.file else f"in {earlier.file}"
            problems.append(Problem(record.file, record.id, f"duplicate id: already used {where}"))


def _read_translations(path: Path, records: dict[str, list[_Record]], problems: list[Problem]) -> dict[str, str]:
    """Back-translations by id; problems for malformed entries and for posts without a usable translation."""
    entries = _read_json_list(path, "translation", problems)
    if entries is None:
        return {}
    translations: dict[str, str] = {}
    conflicting: set[str] = set()
    for index, entry in enumerate(entries):
        entry_id = _record_id(path, index, entry, problems)
        if entry_id is None:
            continue
        if "text_translation" not in entry:
            problems.append(Problem(path, entry_id, "missing 'text_translation'"))
            continue
        translation = entry["text_translation"]
        if not isinstance(translation, str):
            problems.append(
                Problem(path, entry_id, f"'text_translation' must be a string, found {type(translation).__name__}")
            )
            continue
        if translations.setdefault(entry_id, translation) != translation:
            conflicting.add(entry_id)
    for split_records in records.values():
        for record in split_records:
            if record.id in conflicting:
                problems.append(Problem(path, record.id, "has more than one different 'text_translation'"))
            elif record.id not in translations:
                problems.append(Problem(path, record.id, f"no translation for this post of {record.file.name}"))
    return translations


def _check_images(image_folder: Path, records: dict[str, list[_Record]]) -> dict[str, str]:
    """Why each unusable image is unusable, by post id; each image is decoded once."""
    ids = [record.id for split_records in records.values() for record in split_records]
    with _truncated_images_refused(), ThreadPoolExecutor() as pool:
        reasons = pool.map(_image_problem, [_image_path(image_folder, post_id) for post_id in ids], chunksize=64)
        # A progress bar on a terminal only (disable=None): trials' logs and CI get none.
        reasons = tqdm(reasons, total=len(ids), desc="checking images", unit="image", disable=None, leave=False)
        return {post_id: reason for post_id, reason in zip(ids, reasons, strict=True) if reason is not None}


def _image_path(image_folder: Path, post_id: str) -> Path:
    return image_folder / f"{post_id}.jpg"


def _has_letter_or_digit(text: str) -> bool:
    return any(character.isalnum() for character in text)
