"""Tests for the data set readers: layouts, whole-dataset validation, image and translation policies."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures import (
    make_records,
    shared_data,
    translations_for,
    write_dataset,
    write_jpeg,
    write_json,
    write_split,
)
from PIL import Image, ImageFile

from clmlf.data import (
    DATASETS,
    DataError,
    DatasetNotFoundError,
    Problem,
    check_image,
    dataset_spec,
    load_dataset,
)

SPLIT_FOLDER = "10-flod-1"


def split_path(directory: Path, split: str) -> Path:
    return directory / SPLIT_FOLDER / f"{split}.json"


def load_error(root: Path, **options) -> DataError:
    with pytest.raises(DataError) as caught:
        load_dataset("demo", root, **options)
    return caught.value


def test_dataset_specs_are_found_by_name_in_any_case():
    assert dataset_spec("MVSA-Single") is DATASETS["mvsa-single"]
    assert dataset_spec("HFM").num_classes == 2
    assert dataset_spec("hfm").selection_metric == "f1_macro"
    assert dataset_spec("mvsa-multiple").num_classes == 3
    assert dataset_spec("mvsa-multiple").expected_sizes == {"train": 13624, "dev": 1700, "test": 1700}


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown data set 'twitter-15'") as caught:
        dataset_spec("twitter-15")
    for name in ("mvsa-single", "mvsa-multiple", "hfm", "demo"):
        assert name in str(caught.value)


def test_valid_mvsa_layout_loads_every_post_in_file_order(tmp_path):
    directory = write_dataset(tmp_path)

    dataset = load_dataset("demo", tmp_path)

    assert dataset.directory == directory
    assert {split: len(posts) for split, posts in dataset.splits.items()} == {"train": 6, "dev": 3, "test": 3}
    assert [post.id for post in dataset.splits["train"]] == [f"train{index}" for index in range(6)]
    first = dataset.splits["train"][1]
    assert first.text == "post train1 about the weather"
    assert first.label == 1
    assert first.translation == "back-translated post train1 about the weather"
    assert first.image_path == directory / "dataset_image" / "train1.jpg"
    assert dataset.affected == {"images_skipped": 0, "images_blanked": 0, "translations_replaced": 0}
    assert dataset.warnings == []
    summary = dataset.summary().splitlines()
    assert summary[1:4] == ["  train: 6 posts", "  dev: 3 posts", "  test: 3 posts"]
    assert "translations replaced 0" in summary[4]


def test_hfm_layout_has_two_classes_and_rejects_label_two(tmp_path):
    splits = {
        "train": make_records("a", 4, num_classes=2),
        "dev": make_records("b", 2, num_classes=2),
        "test": make_records("c", 2, num_classes=2),
    }
    directory = write_dataset(tmp_path, "hfm", splits)
    assert (directory / "valid.json").is_file() and (directory / "HFM.json").is_file()

    dataset = load_dataset("hfm", tmp_path)
    assert [post.label for post in dataset.splits["train"]] == [0, 1, 0, 1]
    assert [post.id for post in dataset.splits["dev"]] == ["b0", "b1"]

    splits["dev"][1]["emotion_label"] = 2
    write_split(directory / "valid.json", splits["dev"])
    with pytest.raises(DataError) as caught:
        load_dataset("hfm", tmp_path)
    [problem] = caught.value.problems
    assert problem.file == directory / "valid.json"
    assert problem.record_id == "b1"
    assert "'emotion_label' 2 is not one of 0 not-sarcastic, 1 sarcastic" in problem.message


def _replace_record(directory: Path, split: str, index: int, record) -> None:
    records = make_records(split, {"train": 6, "dev": 3, "test": 3}[split])
    records[index] = record
    write_split(split_path(directory, split), records)


def _drop_key(directory: Path, key: str) -> None:
    record = make_records("train", 6)[2]
    del record[key]
    _replace_record(directory, "train", 2, record)


def _set_field(directory: Path, key: str, value) -> None:
    record = make_records("train", 6)[2]
    record[key] = value
    _replace_record(directory, "train", 2, record)


def _write_translation_entry(directory: Path, entry) -> None:
    records = make_records("train", 6) + make_records("dev", 3) + make_records("test", 3)
    entries = translations_for(records)
    entries.append(entry)
    write_json(directory / "demo_translation.json", entries)


STRUCTURAL_CASES: dict[str, tuple[Callable[[Path], None], str, str | None, str]] = {
    "split file missing": (
        lambda d: split_path(d, "dev").unlink(),
        "dev.json",
        None,
        "split file is missing",
    ),
    "split file not JSON": (
        lambda d: split_path(d, "dev").write_text("[{'id': 1}", encoding="utf-8"),
        "dev.json",
        None,
        "not valid JSON",
    ),
    "split file not UTF-8": (
        lambda d: split_path(d, "dev").write_bytes(b'[{"id": "\xff"}]'),
        "dev.json",
        None,
        "not UTF-8",
    ),
    "split file not a list": (
        lambda d: write_json(split_path(d, "test"), {"id": "x", "text": "t", "emotion_label": 0}),
        "test.json",
        None,
        "must hold a JSON list, found dict",
    ),
    "record not an object": (
        lambda d: _replace_record(d, "train", 3, ["train3", "text", 0]),
        "train.json",
        None,
        "list entry 3 must be a JSON object, found list",
    ),
    "record without id": (lambda d: _drop_key(d, "id"), "train.json", None, "list entry 2 has no 'id'"),
    "integer id": (
        lambda d: _set_field(d, "id", 7),
        "train.json",
        None,
        "list entry 2: 'id' must be a string, found int 7",
    ),
    "empty id": (lambda d: _set_field(d, "id", "  "), "train.json", None, "list entry 2: 'id' is empty"),
    "id with a path separator": (
        lambda d: _set_field(d, "id", "../train2"),
        "train.json",
        "../train2",
        "path separator",
    ),
    "id with a NUL": (
        lambda d: _set_field(d, "id", "train\x002"),
        "train.json",
        None,
        "list entry 2: 'id' 'train\\x002' contains the control character(s) \\x00",
    ),
    "record without text": (lambda d: _drop_key(d, "text"), "train.json", "train2", "missing 'text'"),
    "record without label": (
        lambda d: _drop_key(d, "emotion_label"),
        "train.json",
        "train2",
        "missing 'emotion_label'",
    ),
    "text not a string": (
        lambda d: _set_field(d, "text", 5),
        "train.json",
        "train2",
        "'text' must be a string, found int",
    ),
    "whitespace-only text": (
        lambda d: _set_field(d, "text", " \n\t"),
        "train.json",
        "train2",
        "'text' is empty",
    ),
    "boolean label": (
        lambda d: _set_field(d, "emotion_label", True),
        "train.json",
        "train2",
        "'emotion_label' must be an integer, found bool True",
    ),
    "float label": (
        lambda d: _set_field(d, "emotion_label", 1.0),
        "train.json",
        "train2",
        "must be an integer, found float 1.0",
    ),
    "label out of range": (
        lambda d: _set_field(d, "emotion_label", 3),
        "train.json",
        "train2",
        "'emotion_label' 3 is not one of 0 positive, 1 neutral, 2 negative",
    ),
    "negative label": (
        lambda d: _set_field(d, "emotion_label", -1),
        "train.json",
        "train2",
        "-1 is not one of",
    ),
    "duplicate id within a split": (
        lambda d: _set_field(d, "id", "train0"),
        "train.json",
        "train0",
        "duplicate id: already used earlier in this file",
    ),
    "duplicate id across splits": (
        lambda d: _replace_record(d, "test", 1, {"id": "dev2", "text": "again", "emotion_label": 0}),
        "test.json",
        "dev2",
        "already used in",
    ),
    "post without translation": (
        lambda d: write_json(
            d / "demo_translation.json",
            [entry for entry in translations_for(make_records("dev", 3)) if entry["id"] != "dev1"]
            + translations_for(make_records("train", 6) + make_records("test", 3)),
        ),
        "demo_translation.json",
        "dev1",
        "no translation for this post of dev.json",
    ),
    "translation file missing": (
        lambda d: (d / "demo_translation.json").unlink(),
        "demo_translation.json",
        None,
        "translation file is missing",
    ),
    "translation file not a list": (
        lambda d: write_json(d / "demo_translation.json", {"train0": "x"}),
        "demo_translation.json",
        None,
        "must hold a JSON list, found dict",
    ),
    "translation entry without text_translation": (
        lambda d: _write_translation_entry(d, {"id": "unused7"}),
        "demo_translation.json",
        "unused7",
        "missing 'text_translation'",
    ),
    "translation not a string": (
        lambda d: _write_translation_entry(d, {"id": "unused7", "text_translation": ["a"]}),
        "demo_translation.json",
        "unused7",
        "'text_translation' must be a string, found list",
    ),
    "translation entry not an object": (
        lambda d: _write_translation_entry(d, "train0"),
        "demo_translation.json",
        None,
        "list entry 12 must be a JSON object, found str",
    ),
    "two different translations for one post": (
        lambda d: _write_translation_entry(d, {"id": "test0", "text_translation": "something else"}),
        "demo_translation.json",
        "test0",
        "more than one different 'text_translation'",
    ),
}


@pytest.mark.parametrize("case", list(STRUCTURAL_CASES))
def test_each_structural_problem_names_file_record_and_defect(tmp_path, case):
    damage, file_name, record_id, fragment = STRUCTURAL_CASES[case]
    directory = write_dataset(tmp_path)
    damage(directory)

    error = load_error(tmp_path)

    [problem] = error.problems
    assert problem.file.name == file_name
    assert problem.file.parent in (directory, directory / SPLIT_FOLDER)
    assert problem.record_id == record_id
    assert fragment in problem.message
    assert str(problem) in str(error)
    assert str(error).startswith(f"data set 'demo' at {directory} has 1 problem:")


def test_structural_problems_are_errors_whatever_the_image_policy(tmp_path):
    directory = write_dataset(tmp_path)
    _set_field(directory, "emotion_label", 9)
    (directory / "dataset_image" / "dev0.jpg").unlink()

    for policy in ("skip", "blank"):
        error = load_error(tmp_path, image_policy=policy)
        assert [(problem.record_id, "emotion_label" in problem.message) for problem in error.problems] == [
            ("train2", True)
        ]


def test_every_problem_is_reported_at_once(tmp_path):
    directory = write_dataset(tmp_path)
    _set_field(directory, "emotion_label", 5)
    _replace_record(directory, "dev", 0, {"id": "train4", "text": "copy", "emotion_label": 0})
    _replace_record(directory, "test", 2, {"id": "fresh", "text": "no translation", "emotion_label": 1})
    write_jpeg(directory / "dataset_image" / "fresh.jpg")
    (directory / "dataset_image" / "test1.jpg").write_bytes(b"")

    error = load_error(tmp_path)

    found = {(problem.file.name, problem.record_id) for problem in error.problems}
    assert found == {
        ("train.json", "train2"),
        ("dev.json", "train4"),
        ("demo_translation.json", "fresh"),
        ("test1.jpg", "test1"),
    }
    message = str(error)
    assert message.startswith(f"data set 'demo' at {directory} has 4 problems:")
    assert all(str(problem) in message for problem in error.problems)
    assert "1 of these are bad images: --image-policy skip" in message


def _damage_images(directory: Path) -> dict[str, str]:
    """Four kinds of bad image; returns the expected reason fragment by post id."""
    images = directory / "dataset_image"
    (images / "train1.jpg").unlink()
    (images / "train4.jpg").write_bytes(b"")
    (images / "dev2.jpg").write_bytes(b"<html>not found</html>")
    whole = (images / "test0.jpg").read_bytes()
    (images / "test0.jpg").write_bytes(whole[: len(whole) // 2])
    return {
        "train1": "missing",
        "train4": "empty file",
        "dev2": "cannot be decoded",
        "test0": "cannot be decoded",
    }


def test_bad_images_are_errors_by_default_with_a_policy_hint(tmp_path):
    directory = write_dataset(tmp_path)
    expected = _damage_images(directory)

    error = load_error(tmp_path)

    assert {problem.record_id for problem in error.problems} == set(expected)
    for problem in error.problems:
        assert problem.file == directory / "dataset_image" / f"{problem.record_id}.jpg"
        assert expected[problem.record_id] in problem.message
    assert "--image-policy skip drops those posts, --image-policy blank keeps them" in str(error)


def test_skip_policy_removes_posts_with_bad_images_and_reports_them(tmp_path):
    directory = write_dataset(tmp_path)
    expected = _damage_images(directory)

    dataset = load_dataset("demo", tmp_path, image_policy="skip")

    assert [post.id for post in dataset.splits["train"]] == ["train0", "train2", "train3", "train5"]
    assert [post.id for post in dataset.splits["dev"]] == ["dev0", "dev1"]
    assert [post.id for post in dataset.splits["test"]] == ["test1", "test2"]
    assert dataset.affected == {"images_skipped": 4, "images_blanked": 0, "translations_replaced": 0}
    assert [warning.record_id for warning in dataset.warnings] == ["train1", "train4", "dev2", "test0"]
    for warning in dataset.warnings:
        assert warning.file.name == f"{warning.record_id}.jpg"
        assert expected[warning.record_id] in warning.message and "skipped" in warning.message
    assert "images skipped 4" in dataset.summary()


def test_blank_policy_keeps_posts_without_an_image(tmp_path):
    directory = write_dataset(tmp_path)
    expected = _damage_images(directory)

    dataset = load_dataset("demo", tmp_path, image_policy="blank")

    posts = [post for posts in dataset.splits.values() for post in posts]
    assert len(posts) == 12
    assert {post.id for post in posts if post.image_path is None} == set(expected)
    kept = [post for post in posts if post.id not in expected]
    assert all(post.image_path is not None and post.image_path.is_file() for post in kept)
    assert dataset.affected == {"images_skipped": 0, "images_blanked": 4, "translations_replaced": 0}
    assert {warning.record_id for warning in dataset.warnings} == set(expected)


def test_unknown_image_policy_names_the_choices(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(ValueError, match="unknown image policy 'drop'; choose one of error, skip, blank"):
        load_dataset("demo", tmp_path, image_policy="drop")


def test_check_image_gives_the_reason(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", size=(64, 48))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")

    assert check_image(good) is None
    assert check_image(tmp_path / "absent.jpg") == "missing"
    assert check_image(tmp_path / "empty.jpg") == "empty file"
    assert check_image(tmp_path / "text.jpg").startswith("cannot be decoded: ")
    assert check_image(tmp_path) == "not a file"


def test_truncated_image_is_caught_even_where_pil_is_told_to_accept_it(tmp_path, monkeypatch):
    whole = write_jpeg(tmp_path / "whole.jpg", size=(256, 256), noisy=True).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with Image.open(truncated) as image:
        image.load()

    assert "truncated" in check_image(truncated)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_translations_without_letters_fall_back_to_the_text_and_are_counted(tmp_path):
    records = {split: make_records(split, 3) for split in ("train", "dev", "test")}
    entries = translations_for([record for split in records.values() for record in split])
    entries[1]["text_translation"] = ""
    entries[4]["text_translation"] = " ?? ... "
    entries[5]["text_translation"] = "ça"
    entries.append({"id": "not-in-any-split", "text_translation": ""})
    directory = write_dataset(tmp_path, splits=records, translations=entries)

    dataset = load_dataset("demo", tmp_path)

    by_id = {post.id: post for posts in dataset.splits.values() for post in posts}
    assert by_id["train1"].translation == by_id["train1"].text
    assert by_id["dev1"].translation == by_id["dev1"].text
    assert by_id["dev2"].translation == "ça"
    assert by_id["test0"].translation == "back-translated post test0 about the weather"
    assert dataset.affected["translations_replaced"] == 2
    assert [(warning.file, warning.record_id) for warning in dataset.warnings] == [
        (directory / "demo_translation.json", "train1"),
        (directory / "demo_translation.json", "dev1"),
    ]
    assert "no letter or digit" in dataset.warnings[1].message


def test_without_translations_the_file_is_not_read(tmp_path):
    directory = write_dataset(tmp_path)
    (directory / "demo_translation.json").unlink()

    dataset = load_dataset("demo", tmp_path, need_translations=False)

    assert all(post.translation == post.text for posts in dataset.splits.values() for post in posts)
    assert dataset.affected["translations_replaced"] == 0


def test_without_images_no_image_folder_is_needed(tmp_path):
    directory = write_dataset(tmp_path, images=False)
    assert not (directory / "dataset_image").exists()

    dataset = load_dataset("demo", tmp_path, need_images=False)
    assert all(post.image_path is None for posts in dataset.splits.values() for post in posts)
    assert sum(len(posts) for posts in dataset.splits.values()) == 12

    error = load_error(tmp_path, image_policy="skip")
    [problem] = error.problems
    assert problem.file == directory / "dataset_image"
    assert "image folder does not exist" in problem.message and "need_images=False" in problem.message


def test_missing_dataset_folder_names_the_expected_path_and_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("hfm", tmp_path)
    error = caught.value
    assert isinstance(error, FileNotFoundError) and isinstance(error, DataError)
    [problem] = error.problems
    assert problem.file == tmp_path / "HFM"
    message = str(error)
    assert f"{tmp_path / 'HFM'}: folder does not exist" in message
    layout = "HFM/train.json, HFM/valid.json, HFM/test.json, HFM/HFM.json, HFM/dataset_image/<id>.jpg"
    assert layout in message
    assert "CLMLF_DATA_ROOT" in message


def test_missing_folder_message_points_at_a_folder_spelled_in_another_case(tmp_path):
    write_dataset(tmp_path, "mvsa-single")
    (tmp_path / "MVSA-single").rename(tmp_path / "MVSA-Single")

    with pytest.raises(DatasetNotFoundError, match="found 'MVSA-Single' instead, rename it to 'MVSA-single'"):
        load_dataset("mvsa-single", tmp_path)


def test_data_root_comes_from_the_environment_when_not_given(tmp_path, monkeypatch):
    write_dataset(tmp_path, "mvsa-single")
    monkeypatch.setenv("CLMLF_DATA_ROOT", str(tmp_path))

    dataset = load_dataset("mvsa-single", None)

    assert dataset.directory == tmp_path / "MVSA-single"
    assert "train: 6 posts (the published split has 3611)" in dataset.summary()


def test_data_error_survives_pickling_between_processes(tmp_path):
    error = DataError("data set 'demo' at x", [Problem(tmp_path / "a.json", "7", "bad")], "a hint")

    copy = pickle.loads(pickle.dumps(error))

    assert copy.problems == error.problems
    assert str(copy) == str(error)
    not_found = pickle.loads(pickle.dumps(DatasetNotFoundError("s", [Problem(tmp_path, None, "gone")])))
    assert isinstance(not_found, FileNotFoundError) and "gone" in str(not_found)


def test_real_text_data_loads_with_the_published_sizes():
    root = shared_data("clmlf-text", "CLMLF_TEXT_DATA")
    if not root.is_dir():
        pytest.skip(f"real text data not present at {root}")

    sizes = {}
    for name in ("mvsa-single", "mvsa-multiple", "hfm"):
        dataset = load_dataset(name, root, need_images=False)
        sizes[name] = tuple(len(dataset.splits[split]) for split in ("train", "dev", "test"))
        if name == "hfm":
            assert dataset.affected["translations_replaced"] > 0
            assert dataset.affected["translations_replaced"] == len(dataset.warnings)
            assert {post.label for post in dataset.splits["train"]} == {0, 1}

    assert sizes == {
        "mvsa-single": (3611, 450, 450),
        "mvsa-multiple": (13624, 1700, 1700),
        "hfm": (19816, 2410, 2409),
    }
