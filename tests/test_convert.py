"""Tests for clmlf.convert on tiny raw releases written in the real MVSA and HFM formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from clmlf.convert import (
    ConversionReport,
    RawReleaseError,
    convert_hfm,
    convert_mvsa,
    main,
    majority_label,
    merge_labels,
)

POSITIVE, NEUTRAL, NEGATIVE = 0, 1, 2
SPLIT_KEYS = {"id", "text", "emotion_label"}


def write_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 30, 30)).save(path, "JPEG")


def write_mvsa_release(
    raw: Path,
    label_fields: dict[str, str],
    texts: dict[str, bytes] | None = None,
    without_text: tuple[str, ...] = (),
    without_image: tuple[str, ...] = (),
    header: str = "ID\ttext,image",
) -> Path:
    """labelResultAll.txt plus data/<id>.txt and data/<id>.jpg; label_fields maps id to label fields."""
    texts = texts or {}
    data = raw / "data"
    data.mkdir(parents=True)
    lines = [header] + [f"{post_id}\t{fields}" for post_id, fields in label_fields.items()]
    (raw / "labelResultAll.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for post_id in label_fields:
        if post_id not in without_text:
            (data / f"{post_id}.txt").write_bytes(texts.get(post_id, f"post number {post_id} \n".encode()))
        if post_id not in without_image:
            write_jpeg(data / f"{post_id}.jpg")
    return raw


def write_hfm_release(raw: Path, splits: dict[str, list[str]], without_image: tuple[str, ...] = ()) -> Path:
    """text/{train,valid2,test2}.txt with one list literal a line, and dataset_image/<id>.jpg."""
    (raw / "text").mkdir(parents=True)
    file_names = {"train": "train.txt", "valid": "valid2.txt", "test": "test2.txt"}
    for split, lines in splits.items():
        (raw / "text" / file_names[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
        for line in lines:
            post_id = line.split("'")[1]
            if post_id.isdigit() and post_id not in without_image:
                write_jpeg(raw / "dataset_image" / f"{post_id}.jpg")
    return raw


def read_splits(directory: Path, splits: tuple[str, ...]) -> dict[str, list[dict]]:
    return {split: json.loads((directory / f"{split}.json").read_text(encoding="utf-8")) for split in splits}


def labels_by_id(splits: dict[str, list[dict]]) -> dict[str, int]:
    return {entry["id"]: entry["emotion_label"] for entries in splits.values() for entry in entries}


def assert_split_shape(splits: dict[str, list[dict]]) -> None:
    for entries in splits.values():
        assert isinstance(entries, list)
        for entry in entries:
            assert set(entry) == SPLIT_KEYS
            assert isinstance(entry["id"], str) and isinstance(entry["text"], str)
            assert isinstance(entry["emotion_label"], int)


def balanced_single_release(raw: Path, positives: int, neutrals: int, negatives: int) -> Path:
    words = ["positive"] * positives + ["neutral"] * neutrals + ["negative"] * negatives
    # Ids spaced by 3 because the real releases' ids are not contiguous.
    return write_mvsa_release(raw, {str(3 * index + 1): f"{word},{word}" for index, word in enumerate(words)})


@pytest.mark.parametrize(
    ("text_label", "image_label", "merged"),
    [
        (POSITIVE, POSITIVE, POSITIVE),
        (NEUTRAL, NEUTRAL, NEUTRAL),
        (NEGATIVE, NEGATIVE, NEGATIVE),
        (NEUTRAL, POSITIVE, POSITIVE),
        (POSITIVE, NEUTRAL, POSITIVE),
        (NEUTRAL, NEGATIVE, NEGATIVE),
        (NEGATIVE, NEUTRAL, NEGATIVE),
        (POSITIVE, NEGATIVE, None),
        (NEGATIVE, POSITIVE, None),
    ],
)
def test_merge_labels_follows_xu_and_mao(text_label: int, image_label: int, merged: int | None) -> None:
    assert merge_labels(text_label, image_label) == merged


def test_majority_label_needs_two_of_three() -> None:
    assert majority_label([POSITIVE, POSITIVE, NEGATIVE]) == POSITIVE
    assert majority_label([NEUTRAL, NEGATIVE, NEUTRAL]) == NEUTRAL
    assert majority_label([NEGATIVE, NEGATIVE, NEGATIVE]) == NEGATIVE
    assert majority_label([POSITIVE, NEUTRAL, NEGATIVE]) is None
    assert majority_label([NEUTRAL]) == NEUTRAL


def test_single_keeps_merged_labels_and_reports_every_drop_by_reason(tmp_path: Path) -> None:
    raw = write_mvsa_release(
        tmp_path / "raw",
        {
            "1": "positive,positive",
            "3": "neutral,negative",
            "4": "positive,neutral",
            "7": "positive,negative",
            "9": "neutral,neutral",
            "10": "negative,negative",
            "12": "positive,positive",
            "13": "negative,neutral",
            "15": "neutral,positive",
            "20": "negative,positive",
        },
        texts={"10": b"  Good \xff\xfemorning \xe2\x98\x80 \r\n", "15": b" \xff\xfe \n"},
        without_text=("12",),
        without_image=("13",),
    )
    report = convert_mvsa(raw, tmp_path / "out", name="MVSA-single", seed=0)

    out = tmp_path / "out" / "MVSA-single"
    splits = read_splits(out / "10-flod-1", ("train", "dev", "test"))
    assert_split_shape(splits)
    assert labels_by_id(splits) == {"1": POSITIVE, "3": NEGATIVE, "4": POSITIVE, "9": NEUTRAL, "10": NEGATIVE}
    texts = {entry["id"]: entry["text"] for entries in splits.values() for entry in entries}
    assert texts["10"] == "Good morning \u2600"
    assert texts["1"] == "post number 1"
    assert {reason: ids for reason, ids in report.dropped.items() if ids} == {
        "conflicting_labels": ["7", "20"],
        "missing_text_file": ["12"],
        "missing_image": ["13"],
        "empty_text": ["15"],
    }
    assert report.counts_in == {"posts": 10}
    assert sum(report.counts_kept.values()) + sum(map(len, report.dropped.values())) == 10
    assert report.labels_kept == {"positive": 2, "neutral": 1, "negative": 2}
    assert sorted(path.name for path in (out / "dataset_image").iterdir()) == [
        f"{post_id}.jpg" for post_id in ("1", "10", "3", "4", "9")
    ]
    with Image.open(out / "dataset_image" / "1.jpg") as image:
        assert image.size == (4, 4)
    assert ConversionReport.from_json((out / "conversion.json").read_text(encoding="utf-8")) == report
    assert not (out / "MVSA-single_translation.json").exists()
    assert "DBCL" in report.summary()


def test_multiple_takes_two_of_three_majority_per_modality_then_merges(tmp_path: Path) -> None:
    raw = write_mvsa_release(
        tmp_path / "raw",
        {
            "2": "positive,neutral\tpositive,neutral\tnegative,negative",
            "5": "neutral,negative\tnegative,negative\tneutral,positive",
            "6": "negative,negative\tnegative,negative\tnegative,negative",
            "8": "positive,neutral\tneutral,neutral\tnegative,neutral",
            "11": "positive,positive\tneutral,negative\tnegative,positive",
            "14": "positive,negative\tpositive,negative\tneutral,neutral",
            "17": "neutral,neutral\tneutral,positive\tpositive,neutral",
        },
        header="ID\ttext,image\ttext,image\ttext,image",
    )
    report = convert_mvsa(raw, tmp_path / "out", name="MVSA-multiple")

    splits = read_splits(tmp_path / "out" / "MVSA-multiple" / "10-flod-1", ("train", "dev", "test"))
    assert labels_by_id(splits) == {"2": POSITIVE, "5": NEGATIVE, "6": NEGATIVE, "17": NEUTRAL}
    assert {reason: ids for reason, ids in report.dropped.items() if ids} == {
        "no_majority": ["8", "11"],
        "conflicting_labels": ["14"],
    }


def test_split_is_eight_one_one_per_class_disjoint_and_fixed_by_seed(tmp_path: Path) -> None:
    raw = balanced_single_release(tmp_path / "raw", positives=30, neutrals=10, negatives=10)
    first = convert_mvsa(raw, tmp_path / "first", name="MVSA-single", seed=7)
    convert_mvsa(raw, tmp_path / "again", name="MVSA-single", seed=7)
    convert_mvsa(raw, tmp_path / "other", name="MVSA-single", seed=8)

    assert first.counts_kept == {"train": 40, "dev": 5, "test": 5}
    assert first.seed == 7
    read = {
        run: read_splits(tmp_path / run / "MVSA-single" / "10-flod-1", ("train", "dev", "test"))
        for run in ("first", "again", "other")
    }
    ids = {split: [entry["id"] for entry in entries] for split, entries in read["first"].items()}
    assert sum(map(len, ids.values())) == len(set().union(*map(set, ids.values()))) == 50
    for held_out in ("dev", "test"):
        labels = sorted(entry["emotion_label"] for entry in read["first"][held_out])
        assert labels == [POSITIVE, POSITIVE, POSITIVE, NEUTRAL, NEGATIVE]
    assert read["again"] == read["first"]
    assert read["other"]["dev"] != read["first"]["dev"]
    assert json.loads((tmp_path / "first" / "MVSA-single" / "conversion.json").read_text())["seed"] == 7


def test_published_sizes_follow_from_per_class_holdout(tmp_path: Path) -> None:
    raw = balanced_single_release(tmp_path / "raw", positives=27, neutrals=14, negatives=9)
    report = convert_mvsa(raw, tmp_path / "out", name="MVSA-single")
    assert report.counts_kept == {"train": 44, "dev": 3, "test": 3}


def test_malformed_label_lines_are_all_named_with_file_and_line(tmp_path: Path) -> None:
    raw = write_mvsa_release(
        tmp_path / "raw",
        {
            "1": "positive,positive",
            "2": "positive,happy",
            "3": "neutral",
            "4": "negative,negative\tneutral,neutral",
        },
    )
    with pytest.raises(RawReleaseError) as caught:
        convert_mvsa(raw, tmp_path / "out", name="MVSA-single")
    message = str(caught.value)
    assert str(raw / "labelResultAll.txt") in message
    assert "3 malformed line(s)" in message
    assert "line 3:" in message and "happy" in message
    assert "line 4:" in message and "'3\\tneutral'" in message
    assert "line 5:" in message and "got 3" in message
    assert "line 2:" not in message
    assert not (tmp_path / "out").exists()


def test_single_layout_read_as_multiple_is_an_error(tmp_path: Path) -> None:
    raw = write_mvsa_release(tmp_path / "raw", {"1": "positive,positive"})
    with pytest.raises(RawReleaseError, match=r"line 2: expected 4 tab-separated fields"):
        convert_mvsa(raw, tmp_path / "out", name="MVSA-multiple")


def test_missing_header_is_an_error_rather_than_a_silently_skipped_post(tmp_path: Path) -> None:
    raw = write_mvsa_release(tmp_path / "raw", {"2": "positive,positive"}, header="1\tneutral,neutral")
    with pytest.raises(RawReleaseError, match="line 1: expected a header line"):
        convert_mvsa(raw, tmp_path / "out", name="MVSA-single")


def test_translations_are_copied_for_kept_ids_only(tmp_path: Path) -> None:
    raw = write_mvsa_release(
        tmp_path / "raw", {"1": "positive,positive", "2": "positive,negative", "3": "neutral,neutral"}
    )
    translations = tmp_path / "translations.json"
    entries = [{"id": "2", "text_translation": "dropped post"}, {"id": "1", "text_translation": "first"}]
    translations.write_text(json.dumps(entries))
    report = convert_mvsa(raw, tmp_path / "out", name="MVSA-single", translations=translations)

    written = json.loads((tmp_path / "out" / "MVSA-single" / "MVSA-single_translation.json").read_text())
    assert written == [{"id": "1", "text_translation": "first"}]
    assert report.kept_with_issue == {"missing_translation": ["3"]}
    assert "missing_translation" in report.summary()


def test_malformed_translations_name_file_and_entry(tmp_path: Path) -> None:
    raw = write_mvsa_release(tmp_path / "raw", {"1": "positive,positive"})
    translations = tmp_path / "translations.json"
    translations.write_text(json.dumps([{"id": "1", "text_translation": "ok"}, {"id": "1"}]))
    with pytest.raises(RawReleaseError, match=r"translations\.json: 1 malformed .*\n  entry 1:"):
        convert_mvsa(raw, tmp_path / "out", name="MVSA-single", translations=translations)


def test_link_hard_links_images(tmp_path: Path) -> None:
    raw = write_mvsa_release(tmp_path / "raw", {"1": "positive,positive"})
    convert_mvsa(raw, tmp_path / "out", name="MVSA-single", link=True)
    placed = tmp_path / "out" / "MVSA-single" / "dataset_image" / "1.jpg"
    assert os.path.samefile(placed, raw / "data" / "1.jpg")


def test_cli_prints_counts_per_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_mvsa_release(
        tmp_path / "raw", {"1": "positive,positive", "2": "positive,negative", "4": "neutral,neutral"}
    )
    exit_code = main(["mvsa", "--raw", str(raw), "--out", str(tmp_path / "out"), "--name", "MVSA-single"])
    printed = capsys.readouterr().out
    assert exit_code == 0
    assert "3 posts in, 2 kept" in printed
    assert "conflicting_labels" in printed and ": 1" in printed
    assert "--translations" in printed


def test_cli_reports_malformed_release_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_mvsa_release(tmp_path / "raw", {"1": "positive,sad"})
    exit_code = main(["mvsa", "--raw", str(raw), "--out", str(tmp_path / "out"), "--name", "MVSA-single"])
    assert exit_code == 1
    assert "line 2:" in capsys.readouterr().err


def test_hfm_drops_keyword_words_in_train_only(tmp_path: Path) -> None:
    raw = write_hfm_release(
        tmp_path / "raw",
        {
            "train": [
                "['682716753374351360', 'what a lovely monday', 1]",
                "['682716753374351361', 'this is a joke , right ?', 1]",
                "['682716753374351362', 'see <url> for more', 0]",
                "['682716753374351363', \"so much fun # lolsarcasm # jokes4days\", 1]",
                "['682716753374351364', 'just a cat ', 0]",
            ],
            "valid": ["['817227262580195328', 'the irony here', 0, 1]"],
            "test": [
                "['917227262580195329', 'a joke about <url>', 1, 0]",
                "['917227262580195330', 'rain', 0, 0]",
            ],
        },
        without_image=("917227262580195330",),
    )
    report = convert_hfm(raw, tmp_path / "out")

    out = tmp_path / "out" / "HFM"
    splits = read_splits(out, ("train", "valid", "test"))
    assert_split_shape(splits)
    assert [(e["id"], e["emotion_label"]) for e in splits["train"]] == [
        ("682716753374351360", 1),
        ("682716753374351363", 1),
        ("682716753374351364", 0),
    ]
    assert splits["train"][2]["text"] == "just a cat "
    assert labels_by_id({"valid": splits["valid"]}) == {"817227262580195328": 1}
    assert labels_by_id({"test": splits["test"]}) == {"917227262580195329": 0, "917227262580195330": 0}
    assert report.dropped["sarcasm_keyword"] == ["682716753374351361", "682716753374351362"]
    assert report.counts_in == {"train": 5, "valid": 1, "test": 2}
    assert report.counts_kept == {"train": 3, "valid": 1, "test": 2}
    assert report.kept_with_issue == {"missing_image": ["917227262580195330"]}
    assert len(list((out / "dataset_image").iterdir())) == 5
    assert json.loads((out / "conversion.json").read_text())["dropped"]["sarcasm_keyword"] == [
        "682716753374351361",
        "682716753374351362",
    ]


def test_hfm_duplicate_id_is_dropped_and_reported(tmp_path: Path) -> None:
    raw = write_hfm_release(
        tmp_path / "raw",
        {
            "train": ["['11', 'first', 1]"],
            "valid": ["['11', 'first again', 1, 1]"],
            "test": ["['12', 'other', 0, 0]"],
        },
    )
    report = convert_hfm(raw, tmp_path / "out")
    assert report.dropped["duplicate_id"] == ["11"]
    assert report.counts_kept == {"train": 1, "valid": 0, "test": 1}


def test_hfm_unparseable_lines_are_all_named(tmp_path: Path) -> None:
    raw = write_hfm_release(
        tmp_path / "raw",
        {
            "train": [
                "['1', 'fine', 0]",
                "['2', 'unclosed, 1]",
                "['3', 'no label']",
                "['4', 'bad label', 'yes']",
            ],
            "valid": ["['5', 'fine', 0, 0]"],
            "test": ["['6', 'fine', 0, 0]"],
        },
    )
    with pytest.raises(RawReleaseError) as caught:
        convert_hfm(raw, tmp_path / "out")
    message = str(caught.value)
    assert str(raw / "text" / "train.txt") in message
    assert "line 2: not a Python literal" in message
    assert "line 3: expected a list" in message
    assert "line 4: post 4: label 'yes'" in message
    assert "line 1:" not in message


def test_hfm_translations_go_to_hfm_json(tmp_path: Path) -> None:
    raw = write_hfm_release(
        tmp_path / "raw",
        {"train": ["['1', 'a joke', 1]", "['2', 'fine', 0]"], "valid": ["['3', 'ok', 0, 0]"], "test": []},
    )
    translations = tmp_path / "translations.json"
    translations.write_text(
        json.dumps([{"id": str(post_id), "text_translation": f"t{post_id}"} for post_id in (1, 2, 3)])
    )
    report = convert_hfm(raw, tmp_path / "out", translations=translations)
    assert json.loads((tmp_path / "out" / "HFM" / "HFM.json").read_text()) == [
        {"id": "2", "text_translation": "t2"},
        {"id": "3", "text_translation": "t3"},
    ]
    assert report.translation_file == str(tmp_path / "out" / "HFM" / "HFM.json")
