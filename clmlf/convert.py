"""Convert the public MVSA and HFM raw releases into the layout CLMLF reads: MVSA posts get the standard
label merge (Xu and Mao 2017; Single 4,869 -> 4,511 posts, Multiple 19,600 -> 17,024) and a seeded
8:1:1 split, HFM keeps its released splits after the train keyword filter (29,040 -> 19,816), and every
dropped post is counted and listed by reason in ``conversion.json``.

``checkpoint`` converts a checkpoint saved by the original CLMLF code into ours (see
``clmlf/original_checkpoint.py``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clmlf.safe_files import write_text_atomically

MVSA_NAMES = ("MVSA-single", "MVSA-multiple")
MVSA_LABELS = {"positive": 0, "neutral": 1, "negative": 2}
MVSA_LABEL_NAMES = {label: word for word, label in MVSA_LABELS.items()}
NEUTRAL = MVSA_LABELS["neutral"]
MVSA_ANNOTATORS = {"MVSA-single": 1, "MVSA-multiple": 3}
MVSA_SPLIT_DIR = "10-flod-1"
MVSA_SPLITS = ("train", "dev", "test")
# Dev and test each take floor(n / 10) of every class: this reproduces the published split sizes exactly
# (Single 3611/450/450, Multiple 13624/1700/1700), which a plain 10% of all posts does not.
HOLDOUT_DENOMINATOR = 10

HFM_NAME = "HFM"
HFM_RAW_SPLITS = {"train": "train.txt", "valid": "valid2.txt", "test": "test2.txt"}
HFM_LABEL_NAMES = {0: "not sarcastic", 1: "sarcastic"}
# Matched against whitespace-separated words, as the HFM authors did: the released train split still
# holds 259 posts with these as parts of words (``#lolsarcasm``, ``<<url>``), so substring matching
# would drop posts the published 19,816 keeps.
HFM_TRAIN_KEYWORDS = frozenset(
    {
        "sarcasm",
        "sarcastic",
        "reposting",
        "<url>",
        "joke",
        "humour",
        "humor",
        "jokes",
        "irony",
        "ironic",
        "exgag",
    }
)

CONFLICTING_LABELS = "conflicting_labels"
NO_MAJORITY = "no_majority"
MISSING_TEXT_FILE = "missing_text_file"
MISSING_IMAGE = "missing_image"
EMPTY_TEXT = "empty_text"
SARCASM_KEYWORD = "sarcasm_keyword"
MISSING_TRANSLATION = "missing_translation"
DUPLICATE_ID = "duplicate_id"
REASON_DESCRIPTIONS = {
    NO_MAJORITY: "no label chosen by 2 of 3 annotators for text or image",
    CONFLICTING_LABELS: "text and image labels are positive and negative",
    MISSING_TEXT_FILE: "no data/<id>.txt",
    MISSING_IMAGE: "no image <id>.jpg",
    EMPTY_TEXT: "text empty after decoding",
    SARCASM_KEYWORD: "train text has a sarcasm keyword as a word",
    MISSING_TRANSLATION: "no entry in the translations file",
    DUPLICATE_ID: "id already kept from an earlier line or split",
}


class RawReleaseError(ValueError):
    """A raw release file is missing or holds records that cannot be read."""


@dataclass
class ConversionReport:
    """What one conversion read, kept and dropped; written as ``conversion.json`` next to the splits.

    ``dropped`` maps a reason to the ids of the posts left out for it (each post under one reason, the
    first that applies); ``kept_with_issue`` maps a reason to ids that were kept but lack something
    (an HFM image, a translation).
    """

    name: str
    seed: int | None
    counts_in: dict[str, int]
    counts_kept: dict[str, int]
    dropped: dict[str, list[str]]
    labels_kept: dict[str, int] = field(default_factory=dict)
    kept_with_issue: dict[str, list[str]] = field(default_factory=dict)
    translation_file: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ConversionReport:
        return cls(**json.loads(text))

    def summary(self) -> str:
        total_in = sum(self.counts_in.values())
        total_kept = sum(self.counts_kept.values())
        splits = ", ".join(f"{split} {count}" for split, count in self.counts_kept.items())
        seed = f", seed {self.seed}" if self.seed is not None else ""
        lines = [f"{self.name}: {total_in} posts in, {total_kept} kept ({splits}){seed}"]
        total_dropped = sum(len(ids) for ids in self.dropped.values())
        lines.append(f"  dropped {total_dropped}" + (":" if total_dropped else ""))
        lines += [
            f"    {reason} ({REASON_DESCRIPTIONS.get(reason, reason)}): {len(ids)}"
            for reason, ids in self.dropped.items()
            if ids
        ]
        lines += [
            f"  kept although {reason} ({REASON_DESCRIPTIONS.get(reason, reason)}): {len(ids)}"
            for reason, ids in self.kept_with_issue.items()
            if ids
        ]
        if self.labels_kept:
            lines.append("  kept labels: " + ", ".join(f"{name} {n}" for name, n in self.labels_kept.items()))
        if self.translation_file is None:
            lines.append(
                "  note: no translations given, so none written; the DBCL (back-translation) variants need "
                "them (--translations FILE)"
            )
        else:
            lines.append(f"  translations written to {self.translation_file}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Post:
    id: str
    text: str
    label: int


def merge_labels(text_label: int, image_label: int) -> int | None:
    """Merge a post's text and image labels (Xu and Mao 2017): equal labels keep, neutral with X gives X,
    positive with negative has no label (None)."""
    if text_label == image_label:
        return text_label
    if text_label == NEUTRAL:
        return image_label
    if image_label == NEUTRAL:
        return text_label
    return None


def majority_label(labels: Sequence[int]) -> int | None:
    """The label chosen by at least 2 of the annotators (MVSA-Multiple has 3), or None; a lone
    annotator's label (MVSA-Single) stands."""
    if not labels:
        return None
    label, votes = Counter(labels).most_common(1)[0]
    return label if votes >= 2 or len(labels) == 1 else None


def _numeric_order(post_id: str) -> tuple[int, str]:
    return (int(post_id), post_id) if post_id.isdigit() else (sys.maxsize, post_id)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise RawReleaseError(f"{path}: file not found")
    return path.read_bytes().decode("utf-8", errors="replace").splitlines()


def _raise_collected(path: Path, problems: list[str]) -> None:
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems)
        raise RawReleaseError(f"{path}: {len(problems)} malformed line(s):\n{listed}")


def _parse_label_pair(field_text: str) -> tuple[int, int] | str:
    words = [word.strip().lower() for word in field_text.split(",")]
    if len(words) != 2:
        return f"expected 'text_label,image_label', got {field_text!r}"
    unknown = [word for word in words if word not in MVSA_LABELS]
    if unknown:
        return f"unknown label word(s) {unknown} (expected one of {sorted(MVSA_LABELS)})"
    return MVSA_LABELS[words[0]], MVSA_LABELS[words[1]]


def read_mvsa_labels(path: Path, annotators: int) -> dict[str, list[tuple[int, int]]]:
    """Read ``labelResultAll.txt``: post id -> one (text, image) label pair per annotator."""
    lines = _read_lines(path)
    problems: list[str] = []
    if not lines or lines[0].split("\t")[0].strip().isdigit():
        problems.append(f"line 1: expected a header line, got {lines[0] if lines else ''!r}")
    labels: dict[str, list[tuple[int, int]]] = {}
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 1 + annotators:
            problems.append(
                f"line {line_number}: expected {1 + annotators} tab-separated fields "
                f"(ID and {annotators} text,image pair(s)), got {len(fields)}: {line!r}"
            )
            continue
        post_id = fields[0].strip()
        if not post_id.isdigit():
            problems.append(f"line {line_number}: post id {post_id!r} is not a number: {line!r}")
            continue
        if post_id in labels:
            problems.append(f"line {line_number}: post id {post_id} appears a second time: {line!r}")
            continue
        pairs = [_parse_label_pair(field_text) for field_text in fields[1:]]
        errors = [pair for pair in pairs if isinstance(pair, str)]
        if errors:
            problems.append(f"line {line_number}: post {post_id}: {'; '.join(errors)}: {line!r}")
            continue
        labels[post_id] = pairs
    _raise_collected(path, problems)
    return labels


def _merged_mvsa_label(pairs: list[tuple[int, int]]) -> int | str:
    """The post's label, or the reason it has none."""
    text_label = majority_label([text for text, _ in pairs])
    image_label = majority_label([image for _, image in pairs])
    if text_label is None or image_label is None:
        return NO_MAJORITY
    merged = merge_labels(text_label, image_label)
    return CONFLICTING_LABELS if merged is None else merged


def split_by_class(posts: list[_Post], seed: int) -> dict[str, list[_Post]]:
    """Shuffle each class with one seeded generator; dev and test each take floor(n/10) of it."""
    rng = random.Random(seed)
    splits: dict[str, list[_Post]] = {split: [] for split in MVSA_SPLITS}
    for label in sorted({post.label for post in posts}):
        members = sorted((post for post in posts if post.label == label), key=lambda p: _numeric_order(p.id))
        rng.shuffle(members)
        holdout = len(members) // HOLDOUT_DENOMINATOR
        splits["dev"] += members[:holdout]
        splits["test"] += members[holdout : 2 * holdout]
        splits["train"] += members[2 * holdout :]
    return {split: sorted(members, key=lambda p: _numeric_order(p.id)) for split, members in splits.items()}


def _progress(items: Sequence, description: str, unit: str):
    """A progress bar over `items` on a terminal, nothing otherwise (logs, CI)."""
    from tqdm import tqdm

    return tqdm(items, desc=description, unit=unit, disable=None, leave=False)


def _place_image(source: Path, destination: Path, link: bool) -> None:
    if not link:
        shutil.copy2(source, destination)
        return
    if destination.exists() or destination.is_symlink():
        destination.unlink()
    try:
        os.link(source, destination)
    except OSError:
        # Hard links fail across file systems; a symlink still avoids the copy.
        destination.symlink_to(source.resolve())


def _write_json(path: Path, value: object) -> None:
    write_text_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _split_records(posts: list[_Post]) -> list[dict[str, object]]:
    return [{"id": post.id, "text": post.text, "emotion_label": post.label} for post in posts]


def read_translations(path: Path) -> dict[str, str]:
    """Read a translations JSON list of ``{"id", "text_translation"}``: id -> back-translated text."""
    path = Path(path)
    if not path.is_file():
        raise RawReleaseError(f"{path}: translations file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RawReleaseError(f"{path}: not valid UTF-8 JSON: {error}") from error
    if not isinstance(entries, list):
        raise RawReleaseError(f"{path}: expected a JSON list of {{'id', 'text_translation'}} objects")
    problems: list[str] = []
    translations: dict[str, str] = {}
    for index, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), str | int)
            or not isinstance(entry.get("text_translation"), str)
        ):
            problems.append(f"entry {index}: expected {{'id': str, 'text_translation': str}}, got {entry!r}")
            continue
        entry_id = str(entry["id"])
        if entry_id in translations:
            problems.append(f"entry {index}: id {entry_id} appears a second time")
            continue
        translations[entry_id] = entry["text_translation"]
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems)
        raise RawReleaseError(f"{path}: {len(problems)} malformed translation entr(y/ies):\n{listed}")
    return translations


def _write_translations(
    translations_path: Path | None, kept_ids: list[str], destination: Path, report: ConversionReport
) -> None:
    if translations_path is None:
        return
    translations = read_translations(translations_path)
    missing = [post_id for post_id in kept_ids if post_id not in translations]
    if missing:
        report.kept_with_issue[MISSING_TRANSLATION] = missing
    entries = [
        {"id": post_id, "text_translation": translations[post_id]} for post_id in kept_ids if post_id in translations
    ]
    _write_json(destination, entries)
    report.translation_file = str(destination)


def convert_mvsa(
    raw_dir: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    *,
    name: str,
    seed: int = 0,
    translations: str | os.PathLike[str] | None = None,
    link: bool = False,
) -> ConversionReport:
    """Convert an MVSA raw release (``labelResultAll.txt`` and ``data/<id>.{txt,jpg}``) into
    ``<out_root>/<name>/10-flod-1/{train,dev,test}.json`` and ``<out_root>/<name>/dataset_image``.

    Labels are merged per post (Xu and Mao 2017; Multiple first takes each modality's 2-of-3 majority);
    posts are dropped, in this order of reasons, for no majority, conflicting labels, a missing text
    file, a missing image or empty text. Published: Single 4,869 -> 4,511, Multiple 19,600 -> 17,024.
    """
    if name not in MVSA_NAMES:
        raise ValueError(f"unknown MVSA data set name {name!r}; expected one of {MVSA_NAMES}")
    raw = Path(raw_dir)
    data_dir = raw / "data"
    if not data_dir.is_dir():
        raise RawReleaseError(f"{data_dir}: directory not found (the release keeps <id>.txt and <id>.jpg there)")
    labels = read_mvsa_labels(raw / "labelResultAll.txt", MVSA_ANNOTATORS[name])

    dropped: dict[str, list[str]] = {
        reason: [] for reason in (NO_MAJORITY, CONFLICTING_LABELS, MISSING_TEXT_FILE, MISSING_IMAGE, EMPTY_TEXT)
    }
    posts: list[_Post] = []
    for post_id in _progress(sorted(labels, key=_numeric_order), f"reading {name}", "post"):
        label = _merged_mvsa_label(labels[post_id])
        text_path, image_path = data_dir / f"{post_id}.txt", data_dir / f"{post_id}.jpg"
        if isinstance(label, str):
            dropped[label].append(post_id)
        elif not text_path.is_file():
            dropped[MISSING_TEXT_FILE].append(post_id)
        elif not image_path.is_file():
            dropped[MISSING_IMAGE].append(post_id)
        else:
            text = text_path.read_bytes().decode("utf-8", errors="ignore").strip()
            if not text:
                dropped[EMPTY_TEXT].append(post_id)
            else:
                posts.append(_Post(post_id, text, label))

    out = Path(out_root) / name
    splits = split_by_class(posts, seed)
    for split, members in splits.items():
        _write_json(out / MVSA_SPLIT_DIR / f"{split}.json", _split_records(members))
    image_dir = out / "dataset_image"
    image_dir.mkdir(parents=True, exist_ok=True)
    for post in _progress(posts, "placing images", "image"):
        _place_image(data_dir / f"{post.id}.jpg", image_dir / f"{post.id}.jpg", link)

    label_counts = Counter(post.label for post in posts)
    report = ConversionReport(
        name=name,
        seed=seed,
        counts_in={"posts": len(labels)},
        counts_kept={split: len(members) for split, members in splits.items()},
        dropped=dropped,
        labels_kept={word: label_counts[label] for label, word in MVSA_LABEL_NAMES.items()},
    )
    kept_ids = [post.id for split in MVSA_SPLITS for post in splits[split]]
    _write_translations(
        Path(translations) if translations is not None else None,
        sorted(kept_ids, key=_numeric_order),
        out / f"{name}_translation.json",
        report,
    )
    write_text_atomically(out / "conversion.json", report.to_json() + "\n")
    return report


def _parse_hfm_line(line: str) -> _Post | str:
    """One HFM record ``[id, text, ..., label]``, or what is wrong with it."""
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        return f"not a Python literal ({type(error).__name__}: {error})"
    if not isinstance(record, list | tuple) or len(record) not in (3, 4):
        return "expected a list [id, text, label] or [id, text, x, label]"
    post_id, text, label = record[0], record[1], record[-1]
    if isinstance(post_id, int) and not isinstance(post_id, bool):
        post_id = str(post_id)
    if not isinstance(post_id, str) or not post_id.isdigit():
        return f"id {record[0]!r} is not a numeric tweet id"
    if not isinstance(text, str):
        return f"post {post_id}: text {text!r} is not a string"
    if isinstance(label, bool) or label not in HFM_LABEL_NAMES:
        return f"post {post_id}: label {label!r} is not 0 or 1"
    return _Post(post_id, text, label)


def read_hfm_split(path: Path) -> list[_Post]:
    problems: list[str] = []
    posts: list[_Post] = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parsed = _parse_hfm_line(line.strip())
        if isinstance(parsed, str):
            problems.append(f"line {line_number}: {parsed}: {line[:200]!r}")
        else:
            posts.append(parsed)
    _raise_collected(path, problems)
    return posts


def has_sarcasm_keyword(text: str) -> bool:
    return not HFM_TRAIN_KEYWORDS.isdisjoint(text.split())


def convert_hfm(
    raw_dir: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    *,
    translations: str | os.PathLike[str] | None = None,
    link: bool = False,
) -> ConversionReport:
    """Convert the HFM raw release (``text/{train,valid2,test2}.txt``, ``dataset_image/<id>.jpg``) into
    ``<out_root>/HFM/{train,valid,test}.json`` and ``<out_root>/HFM/dataset_image``.

    Train posts with a sarcasm keyword word are dropped (29,040 -> 19,816 in the release); valid and test
    are kept whole; a post whose id was already kept is dropped. Texts are kept verbatim. A missing image
    is counted, not dropped.
    """
    raw = Path(raw_dir)
    split_posts = {split: read_hfm_split(raw / "text" / file_name) for split, file_name in HFM_RAW_SPLITS.items()}
    dropped: dict[str, list[str]] = {SARCASM_KEYWORD: [], DUPLICATE_ID: []}
    kept: dict[str, list[_Post]] = {split: [] for split in split_posts}
    kept_ids: set[str] = set()
    for split, posts in split_posts.items():
        for post in posts:
            if split == "train" and has_sarcasm_keyword(post.text):
                dropped[SARCASM_KEYWORD].append(post.id)
            elif post.id in kept_ids:
                dropped[DUPLICATE_ID].append(post.id)
            else:
                kept[split].append(post)
                kept_ids.add(post.id)

    out = Path(out_root) / HFM_NAME
    for split, posts in kept.items():
        _write_json(out / f"{split}.json", _split_records(posts))
    source_dir, image_dir = raw / "dataset_image", out / "dataset_image"
    image_dir.mkdir(parents=True, exist_ok=True)
    missing_images: list[str] = []
    for posts in kept.values():
        for post in _progress(posts, "placing images", "image"):
            source = source_dir / f"{post.id}.jpg"
            if source.is_file():
                _place_image(source, image_dir / f"{post.id}.jpg", link)
            else:
                missing_images.append(post.id)

    label_counts = Counter(post.label for posts in kept.values() for post in posts)
    report = ConversionReport(
        name=HFM_NAME,
        seed=None,
        counts_in={split: len(posts) for split, posts in split_posts.items()},
        counts_kept={split: len(posts) for split, posts in kept.items()},
        dropped=dropped,
        labels_kept={word: label_counts[label] for label, word in HFM_LABEL_NAMES.items()},
        kept_with_issue={MISSING_IMAGE: missing_images} if missing_images else {},
    )
    _write_translations(
        Path(translations) if translations is not None else None,
        [post.id for posts in kept.values() for post in posts],
        out / f"{HFM_NAME}.json",
        report,
    )
    write_text_atomically(out / "conversion.json", report.to_json() + "\n")
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clmlf.convert",
        description="Convert the MVSA or HFM raw release into the CLMLF layout, or an original CLMLF checkpoint.",
    )
    sources = parser.add_subparsers(dest="source", required=True)
    mvsa = sources.add_parser("mvsa", help="MVSA-Single or MVSA-Multiple raw release")
    mvsa.add_argument("--name", required=True, choices=MVSA_NAMES)
    mvsa.add_argument("--seed", type=int, default=0, help="seed of the 8:1:1 split (recorded)")
    hfm = sources.add_parser("hfm", help="HFM (Twitter sarcasm) raw release")
    for sub in (mvsa, hfm):
        sub.add_argument("--raw", required=True, type=Path, help="raw release directory")
        sub.add_argument("--out", required=True, type=Path, help="data root to write <name>/ under")
        sub.add_argument("--translations", type=Path, help="JSON list of {id, text_translation} (for DBCL)")
        sub.add_argument("--link", action="store_true", help="hard-link (else symlink) images instead of copying")
    checkpoint = sources.add_parser(
        "checkpoint",
        help="a state dict saved by the original CLMLF code, as our checkpoint under the `original` preset",
    )
    checkpoint.add_argument("--original", required=True, type=Path, help="the original code's .pth file")
    checkpoint.add_argument("--dataset", required=True, help="mvsa-single, mvsa-multiple or hfm (sets the layers)")
    checkpoint.add_argument("--out", required=True, type=Path, help="checkpoint folder to write (state.pt)")
    checkpoint.add_argument("--data-root", help="recorded in the config, for `python -m clmlf.evaluate`")
    checkpoint.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    return parser


def _convert_checkpoint(args: argparse.Namespace) -> int:
    from clmlf.config import parse_overrides
    from clmlf.encoders import EncoderUnavailable
    from clmlf.original_checkpoint import convert_checkpoint

    try:
        overrides = parse_overrides(args.set)
        if args.data_root:
            overrides["data_root"] = args.data_root
        written, conversion = convert_checkpoint(args.original, args.dataset, args.out, overrides)
    # ValueError: configuration errors, an unknown data set and checkpoints that do not fit all derive from it.
    except (ValueError, EncoderUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(conversion.summary()))
    print(f"wrote {written}; score it with: python -m clmlf.evaluate {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.source == "checkpoint":
        return _convert_checkpoint(args)
    try:
        if args.source == "mvsa":
            report = convert_mvsa(
                args.raw,
                args.out,
                name=args.name,
                seed=args.seed,
                translations=args.translations,
                link=args.link,
            )
        else:
            report = convert_hfm(args.raw, args.out, translations=args.translations, link=args.link)
    except RawReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
