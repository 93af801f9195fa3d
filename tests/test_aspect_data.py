"""The aspect-based sets (Twitter-2015/2017) in TomBERT's tab-separated layout: reading, the whole-data-set check,
the pair input, the augmented text sources and one image shared by the rows of a post."""

from __future__ import annotations

import collections
import dataclasses
import html
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from fixtures import (
    ASPECT_HEADER,
    back_translations_for,
    make_aspect_rows,
    shared_data,
    write_aspect_dataset,
    write_dataset,
    write_tsv,
)
from torch import nn

from clmlf.augment import augmentation_transform, evaluation_transform
from clmlf.config import ConfigError, build_config
from clmlf.data import DataError, DatasetNotFoundError, dataset_spec, load_dataset
from clmlf.encoders import load_tokenizer
from clmlf.features import image_features, text_states
from clmlf.loading import CachedInputs, EncodedTexts, Phase, PostDataset, SplitInputs, encode_texts, make_collate
from clmlf.model import CLMLF
from clmlf.precision import resolve_precision
from clmlf.text_augment import swap_and_delete
from clmlf.train import Run, main
from results import storage
from studies import layer_sweep
from tracking.mlflow_runs import child_runs

ROWS = {"train": make_aspect_rows("train", 6), "dev": make_aspect_rows("dev", 3), "test": make_aspect_rows("test", 3)}


def load_error(root: Path, name: str = "twitter2015", **options) -> DataError:
    with pytest.raises(DataError) as caught:
        load_dataset(name, root, **options)
    return caught.value


def test_specs_of_the_aspect_sets():
    for name, sizes in (("twitter2015", (3179, 1122, 1037)), ("twitter2017", (3562, 1176, 1234))):
        spec = dataset_spec(name)
        assert spec.label_names == ("negative", "neutral", "positive")
        assert spec.selection_metric == "f1_macro"
        assert tuple(spec.expected_sizes.values()) == sizes
        assert spec.has_aspects and spec.augmented_text == "swap-delete"
    assert not dataset_spec("mvsa-single").has_aspects


def test_valid_layout_loads_one_post_per_row_with_the_aspect_restored(tmp_path):
    directory = write_aspect_dataset(tmp_path)

    dataset = load_dataset("twitter2015", tmp_path, need_translations=False)

    assert {split: len(posts) for split, posts in dataset.splits.items()} == {"train": 12, "dev": 6, "test": 6}
    train = dataset.splits["train"]
    # Post 1 of train has two aspects: two rows, one image, one restored text.
    second, third = train[1], train[2]
    assert (second.id, third.id) == ("train:3", "train:4")
    assert second.aspect == "Team train1" and third.aspect == "Coach Smith"
    assert second.text == third.text == "Watching Team train1 and Coach Smith tonight"
    assert second.image_path == third.image_path == tmp_path / "twitter2015_images" / "train1.jpg"
    assert [post.label for post in train[:4]] == [0, 1, 2, 0]
    assert all(post.translation == post.text for posts in dataset.splits.values() for post in posts)
    assert dataset.directory == directory and dataset.warnings == []
    assert "train: 12 rows (post, aspect)" in dataset.summary()
    assert "augmented text: original" in dataset.summary()


def _replace_row(directory: Path, split: str, index: int, row: list) -> None:
    rows = [list(row) for row in ROWS[split]]
    rows[index] = row
    write_tsv(directory / f"{split}.tsv", ASPECT_HEADER, rows)


def _set_column(column: int, value) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        row = list(ROWS["train"][2])
        row[column] = value
        _replace_row(directory, "train", 2, row)

    return damage


def _write_raw(split: str, content: bytes) -> Callable[[Path], None]:
    return lambda directory: (directory / f"{split}.tsv").write_bytes(content)


# Row 2 of train.tsv is on line 4 (line 1 is the header).
ROW_CASES: dict[str, tuple[Callable[[Path], None], str, int | None, str]] = {
    "four columns": (
        lambda d: _replace_row(d, "train", 2, ROWS["train"][2][:4]),
        "train.tsv",
        4,
        "expected 5 tab-separated columns (index, label, image, text with $T$, aspect), found 4",
    ),
    "label out of range": (
        _set_column(1, 3),
        "train.tsv",
        4,
        "label '3' is not one of 0 negative, 1 neutral, 2 positive",
    ),
    "unshifted label": (_set_column(1, -1), "train.tsv", 4, "the raw release's -1/0/+1 shifted by one"),
    "label not a number": (_set_column(1, "pos"), "train.tsv", 4, "label 'pos' is not one of"),
    "empty text": (_set_column(3, " "), "train.tsv", 4, "text is empty"),
    "text without $T$": (_set_column(3, "Watching Team train1 tonight"), "train.tsv", 4, "text has no $T$"),
    "text with two $T$": (_set_column(3, "$T$ and $T$"), "train.tsv", 4, "text has 2 $T$ placeholders; expected one"),
    "empty aspect": (_set_column(4, ""), "train.tsv", 4, "aspect is empty"),
    "empty index": (_set_column(0, ""), "train.tsv", 4, "index is empty"),
    "duplicate index": (_set_column(0, 1), "train.tsv", 4, "duplicate index '1': already on line 2"),
    "index with a control character": (
        _set_column(0, "3\x1b"),
        "train.tsv",
        4,
        "index '3\\x1b' contains the control character(s) \\x1b",
    ),
    "empty image name": (_set_column(2, ""), "train.tsv", 4, "image file name is empty"),
    "image name with a path separator": (
        _set_column(2, "../train1.jpg"),
        "train.tsv",
        4,
        "image file name '../train1.jpg' contains a path separator",
    ),
    "no header line": (
        lambda d: write_tsv(d / "dev.tsv", "\t".join(map(str, ROWS["dev"][0])), ROWS["dev"][1:]),
        "dev.tsv",
        1,
        "must start with a header line whose first column is 'index'; found '1\\t0\\tdev0.jpg",
    ),
    "split file missing": (lambda d: (d / "test.tsv").unlink(), "test.tsv", None, "split file is missing"),
    "split file not UTF-8": (_write_raw("dev", b"index\n1\t0\tx.jpg\t\xff $T$\ta\n"), "dev.tsv", None, "not UTF-8"),
    "empty split file": (_write_raw("dev", b""), "dev.tsv", 1, "found nothing"),
    "same row with another label": (
        lambda d: _replace_row(d, "test", 0, [1, 2, *ROWS["dev"][0][2:]]),
        "test.tsv",
        2,
        "same image, text and aspect as dev.tsv line 2 with another label (positive here, negative there)",
    ),
}


@pytest.mark.parametrize(("damage", "file_name", "line", "fragment"), ROW_CASES.values(), ids=ROW_CASES.keys())
def test_each_row_problem_names_file_line_and_defect(tmp_path, damage, file_name, line, fragment):
    damage(write_aspect_dataset(tmp_path))

    [problem] = load_error(tmp_path, need_translations=False).problems

    assert (problem.file, problem.line, problem.record_id) == (tmp_path / "twitter2015" / file_name, line, None)
    assert fragment in problem.message
    where = f": line {line}: " if line is not None else ": "
    assert str(problem) == f"{problem.file}{where}{problem.message}"


def test_every_problem_is_reported_at_once_and_blank_lines_are_no_rows(tmp_path):
    directory = write_aspect_dataset(tmp_path)
    rows = [list(row) for row in ROWS["train"]]
    rows[0][1] = 7
    rows[5][4] = ""
    write_tsv(directory / "train.tsv", ASPECT_HEADER, rows)
    with (directory / "train.tsv").open("a") as handle:
        handle.write("\n\n")
    (directory / "dev.tsv").write_text((directory / "dev.tsv").read_text().replace("\n", "\r\n"))
    (tmp_path / "twitter2015_images" / "test2.jpg").write_bytes(b"")

    error = load_error(tmp_path, need_translations=False)

    found = [(problem.file.name, problem.line, problem.message.split(":")[0]) for problem in error.problems]
    image = f"image {tmp_path / 'twitter2015_images' / 'test2.jpg'}"
    # Post 2 of test has three rows (lines 5-7) sharing the empty image: each row is reported.
    assert found == [
        ("train.tsv", 2, "label '7' is not one of 0 negative, 1 neutral, 2 positive"),
        ("train.tsv", 7, "aspect is empty"),
        ("test.tsv", 5, image),
        ("test.tsv", 6, image),
        ("test.tsv", 7, image),
    ]
    assert all("empty file" in problem.message for problem in error.problems[2:])
    assert str(error).startswith(f"data set 'twitter2015' at {directory} has 5 problems:")
    assert "3 of these are bad images: --image-policy skip" in str(error)


def test_image_policies_act_on_every_row_of_a_post(tmp_path):
    write_aspect_dataset(tmp_path)
    (tmp_path / "twitter2015_images" / "train2.jpg").unlink()

    skipped = load_dataset("twitter2015", tmp_path, image_policy="skip", need_translations=False)
    blanked = load_dataset("twitter2015", tmp_path, image_policy="blank", need_translations=False)

    assert [post.id for post in skipped.splits["train"]][:4] == ["train:2", "train:3", "train:4", "train:8"]
    assert skipped.affected["images_skipped"] == 3
    assert [(warning.line, "post skipped from train" in warning.message) for warning in skipped.warnings] == [
        (5, True),
        (6, True),
        (7, True),
    ]
    assert [post.id for post in blanked.splits["train"] if post.image_path is None] == ["train:5", "train:6", "train:7"]
    assert blanked.affected["images_blanked"] == 3


def test_image_folder_option_and_the_default_folder_message(tmp_path):
    write_aspect_dataset(tmp_path)
    elsewhere = tmp_path / "downloads" / "images"
    elsewhere.parent.mkdir()
    (tmp_path / "twitter2015_images").rename(elsewhere)

    error = load_error(tmp_path, need_translations=False)
    [problem] = error.problems
    assert problem.file == tmp_path / "twitter2015_images"
    assert "image folder does not exist" in problem.message and "set image_folder" in problem.message

    dataset = load_dataset("twitter2015", tmp_path, image_folder=elsewhere, need_translations=False)
    assert dataset.splits["dev"][0].image_path == elsewhere / "dev0.jpg"
    text_only = load_dataset("twitter2015", tmp_path, need_images=False, need_translations=False)
    assert all(post.image_path is None for posts in text_only.splits.values() for post in posts)


def test_missing_data_set_folder_names_the_tsv_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("twitter2017", tmp_path)
    message = str(caught.value)
    assert "twitter2017/train.tsv, twitter2017/dev.tsv, twitter2017/test.tsv" in message
    assert "twitter2017_images/<image file named in the rows>" in message


def test_repeated_rows_are_kept_with_a_warning(tmp_path):
    splits = {split: [list(row) for row in rows] for split, rows in ROWS.items()}
    splits["train"].append([13, *splits["train"][3][1:]])
    splits["test"].append([7, *splits["train"][0][1:]])
    directory = write_aspect_dataset(tmp_path, splits=splits)

    dataset = load_dataset("twitter2015", tmp_path, need_translations=False)

    assert len(dataset.splits["train"]) == 13 and len(dataset.splits["test"]) == 7
    assert [(warning.file, warning.line, warning.message) for warning in dataset.warnings] == [
        (directory / "train.tsv", 14, "repeats line 5 (image, text, aspect and label); kept as published"),
        (directory / "test.tsv", 8, "repeats train.tsv line 2 (image, text, aspect and label); kept as published"),
    ]


def test_swap_and_delete_keeps_the_placeholder_and_some_words():
    text = "one two three four five six seven eight nine ten eleven twelve $T$ thirteen"
    edits = {swap_and_delete(text, random.Random(seed), keep="$T$") for seed in range(40)}

    assert len(edits) > 30
    for edit in edits:
        words = edit.split()
        assert words.count("$T$") == 1, "the placeholder is never deleted"
        assert set(words) <= set(text.split()) and 1 < len(words) <= 14
    assert swap_and_delete(text, random.Random(3), keep="$T$") == swap_and_delete(text, random.Random(3), keep="$T$")
    assert swap_and_delete("$T$ lonely", random.Random(0), keep="$T$") == "$T$ lonely"


def test_augmented_text_sources(tmp_path):
    write_aspect_dataset(tmp_path, translations=back_translations_for(ROWS["train"]))

    def translations(**options) -> list[str]:
        dataset = load_dataset("twitter2015", tmp_path, need_images=False, **options)
        return [post.translation for post in dataset.splits["train"]]

    texts = [post.text for post in load_dataset("twitter2015", tmp_path, need_images=False).splits["train"]]
    default = translations()
    assert default == translations(augmented_text="swap-delete"), "swap-delete is the default of these sets"
    assert default == translations(seed=0) != translations(seed=1)
    assert sum(edit != text for edit, text in zip(default, texts, strict=True)) >= 6
    aspects = [row[4] for row in ROWS["train"]]
    assert all(aspect in edit for aspect, edit in zip(aspects, default, strict=True)), "the aspect term survives"
    assert translations(augmented_text="original") == texts
    back = translations(augmented_text="back-translation")
    assert back[1] == "Tonight I watch Team train1 and Coach Smith"
    assert back[2] == back[1], "each row's $T$ is restored with its own aspect"
    dataset = load_dataset("twitter2015", tmp_path, need_images=False, augmented_text="back-translation")
    assert [post.translation for post in dataset.splits["dev"]] == [post.text for post in dataset.splits["dev"]]
    assert dataset.augmented_text == "back-translation"
    with pytest.raises(ValueError, match="unknown augmented text source 'bt'; choose one of dataset-default"):
        load_dataset("twitter2015", tmp_path, augmented_text="bt")


TRANSLATION_CASES = {
    "file missing": (None, [], "translation file is missing"),
    "row without a translation": (
        back_translations_for(ROWS["train"])[1:],
        [("train.tsv", 2)],
        "no translation for this row (index '1') in train_translation.tsv",
    ),
    "unknown index": (
        [*back_translations_for(ROWS["train"]), [99, "x"]],
        [("train_translation.tsv", 14)],
        "index '99' is the index of no usable row of train.tsv",
    ),
    "duplicate index": (
        [*back_translations_for(ROWS["train"]), [3, "x"]],
        [("train_translation.tsv", 14)],
        "duplicate index '3': already on line 4",
    ),
    "three columns": (
        [[1, "a", "b"], *back_translations_for(ROWS["train"])[1:]],
        [("train_translation.tsv", 2), ("train.tsv", 2)],
        "expected 2 tab-separated columns (index, text), found 3",
    ),
}


@pytest.mark.parametrize("case", list(TRANSLATION_CASES))
def test_back_translation_file_problems(tmp_path, case):
    rows, where, fragment = TRANSLATION_CASES[case]
    directory = write_aspect_dataset(tmp_path, translations=rows, images=False)

    error = load_error(tmp_path, need_images=False, augmented_text="back-translation")

    assert fragment in str(error.problems[0])
    if where:
        assert [(problem.file, problem.line) for problem in error.problems] == [
            (directory / file, line) for file, line in where
        ]


def test_a_translation_without_letters_falls_back_to_the_text(tmp_path):
    rows = back_translations_for(ROWS["train"])
    rows[4][1] = " ?! "
    write_aspect_dataset(tmp_path, translations=rows, images=False)

    dataset = load_dataset("twitter2015", tmp_path, need_images=False, augmented_text="back-translation")

    assert dataset.splits["train"][4].translation == dataset.splits["train"][4].text
    assert dataset.affected["translations_replaced"] == 1
    [warning] = dataset.warnings
    assert warning.line == 6 and "has no letter or digit" in warning.message


def test_texts_are_encoded_as_sentence_aspect_pairs(tmp_path):
    write_aspect_dataset(tmp_path, images=False)
    posts = load_dataset("twitter2015", tmp_path, need_images=False).splits["train"]
    tokenizer = load_tokenizer("tiny-bert")

    encoded = encode_texts(tokenizer, posts, max_length=64, with_translations=True)

    second = tokenizer.convert_ids_to_tokens(encoded.texts[1])
    assert second == ["[CLS]", *tokenizer.tokenize(posts[1].text), "[SEP]", *tokenizer.tokenize("Team train1"), "[SEP]"]
    # Two rows of one post: the same sentence, told apart by the aspect alone.
    assert encoded.texts[1] != encoded.texts[2]
    assert encoded.texts[1][: second.index("[SEP]")] == encoded.texts[2][: second.index("[SEP]")]
    translation = tokenizer.convert_ids_to_tokens(encoded.translations[1])
    assert translation[-5:] == ["[SEP]", "team", "train", "##1", "[SEP]"]
    short = encode_texts(tokenizer, posts, max_length=8, with_translations=False)
    assert all(len(ids) <= 8 for ids in short.texts)
    # Truncation takes word pieces from the longer part first: the sentence, until it is no longer than the aspect.
    assert tokenizer.convert_ids_to_tokens(short.texts[1]) == [
        "[CLS]", "watching", "team", "train", "[SEP]", "team", "train", "[SEP]"
    ]  # fmt: skip


def test_the_aspect_part_of_a_pair_is_segment_1_through_to_the_batch(tmp_path):
    write_aspect_dataset(tmp_path, images=False)
    posts = load_dataset("twitter2015", tmp_path, need_images=False).splits["train"]
    tokenizer = load_tokenizer("tiny-bert")
    encoded = encode_texts(tokenizer, posts, max_length=64, with_translations=True)

    pairs = ((encoded.texts[1], encoded.text_segments[1]), (encoded.translations[1], encoded.translation_segments[1]))
    for ids, segments in pairs:
        tokens = tokenizer.convert_ids_to_tokens(ids)
        aspect = tokens.index("[SEP]") + 1
        # "[CLS] text [SEP]" is segment 0; the aspect's word pieces and the closing [SEP] are segment 1.
        assert tokens[aspect:] == [*tokenizer.tokenize("Team train1"), "[SEP]"]
        assert segments == [0] * aspect + [1] * (len(tokens) - aspect)

    inputs = SplitInputs(posts, encoded, image_transform=None, augmented=True)
    dataset = PostDataset(inputs, Phase(epoch=0, text_frozen=False))
    batch = make_collate(encoded.pad_token_id)([dataset[0], dataset[1]])
    for view, segments in ((batch.original, encoded.text_segments), (batch.augmented, encoded.translation_segments)):
        assert view.token_type_ids.shape == view.input_ids.shape
        # The shorter pair's padding is segment 0, like the padding of its ids.
        expected = [row + [0] * (view.input_ids.shape[1] - len(row)) for row in segments[:2]]
        assert view.token_type_ids.tolist() == expected
    assert batch.original.token_type_ids.sum() > 0


def test_single_texts_have_no_segment_ids(tmp_path):
    write_dataset(tmp_path, "mvsa-single")
    posts = load_dataset("mvsa-single", tmp_path, need_images=False).splits["train"]
    encoded = encode_texts(load_tokenizer("tiny-bert"), posts, max_length=64, with_translations=True)
    assert encoded.text_segments is None and encoded.translation_segments is None
    batch = make_collate(encoded.pad_token_id)(
        [PostDataset(SplitInputs(posts, encoded, image_transform=None), Phase(0, False))[index] for index in (0, 1)]
    )
    assert batch.original.input_ids is not None and batch.original.token_type_ids is None


class CountingBackbone(nn.Module):
    """A small convolution that counts the images it encodes."""

    def __init__(self):
        super().__init__()
        self.convolution = nn.Conv2d(3, 4, kernel_size=8, stride=8)
        self.images = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images += len(images)
        return self.convolution(images)


def test_feature_cache_encodes_each_distinct_image_once(tmp_path):
    write_aspect_dataset(tmp_path)
    splits = load_dataset("twitter2015", tmp_path, need_translations=False).splits
    backbone = CountingBackbone()
    views = 2

    def build() -> object:
        return image_features(
            backbone,
            splits,
            encoder_key="counting",
            dataset_key="aspect-rows",
            image_size=32,
            evaluation=evaluation_transform(32),
            augmentation=augmentation_transform(32, 2, 14),
            augmentation_settings={},
            augmented_views=views,
            seed=0,
            device=torch.device("cpu"),
            precision=resolve_precision("fp32", torch.device("cpu")),
            cache_root=tmp_path / "cache",
            log=lambda _: None,
        )

    bank = build()

    # 6/3/3 posts behind 12/6/6 rows: the backbone sees each image once per view.
    assert backbone.images == 6 * (1 + views) + 3 + 3
    assert bank.splits["train"].shape[:2] == (6, 1 + views) and bank.splits["dev"].shape[0] == 3
    assert bank.rows["train"].tolist() == [0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5]
    dev_inputs = SplitInputs(
        splits["dev"],
        texts=None,
        image_transform=None,
        cached=CachedInputs(image_features=bank.splits["dev"], image_rows=bank.rows["dev"]),
    )
    dev = PostDataset(dev_inputs, Phase(epoch=0, text_frozen=False))
    torch.testing.assert_close(dev[1].original.image_features, dev[2].original.image_features)
    assert not torch.equal(dev[0].original.image_features, dev[1].original.image_features)
    train_inputs = SplitInputs(
        splits["train"],
        texts=None,
        image_transform=None,
        cached=CachedInputs(image_features=bank.splits["train"], image_rows=bank.rows["train"]),
        augmented=True,
    )
    drawn = PostDataset(train_inputs, Phase(epoch=0, text_frozen=False))[4].augmented.image_features.numpy()
    assert any(np.allclose(bank.splits["train"][2, view], drawn) for view in range(1, 1 + views))
    build()
    assert backbone.images == 6 * (1 + views) + 3 + 3, "a second trial reads the cache"


def test_cached_text_states_are_those_of_the_pair(tmp_path):
    write_aspect_dataset(tmp_path)
    overrides = {"data_root": str(tmp_path), "feature_cache": True, "feature_cache_dir": str(tmp_path / "cache")}
    run = Run(build_config("twitter2015", "tiny", overrides), log=lambda _: None)
    run.set_phase(0, training=True)
    dataset = run.loader("dev", 0).dataset

    # Rows 1 and 2 of dev: one sentence, two aspects.
    first, second = dataset[1].original, dataset[2].original
    ids, segments = torch.tensor([first.token_ids]), torch.tensor([first.segment_ids])
    with torch.no_grad():
        direct = run.model.encode_text(ids, torch.ones_like(ids), segments)[0]  # (S, D)
        unsegmented = run.model.encode_text(ids, torch.ones_like(ids))[0]  # (S, D), all segment 0
    torch.testing.assert_close(first.text_states, direct, atol=2e-2, rtol=2e-3)
    assert not torch.allclose(first.text_states, unsegmented, atol=5e-2), "the cache holds the segmented states"
    sentence = first.token_ids.index(load_tokenizer("tiny-bert").sep_token_id)
    assert first.token_ids[:sentence] == second.token_ids[:sentence]
    assert not torch.allclose(first.text_states[:sentence], second.text_states[:sentence], atol=1e-3)


def test_segment_ids_are_part_of_the_text_cache_key(tmp_path):
    write_aspect_dataset(tmp_path, images=False)
    posts = load_dataset("twitter2015", tmp_path, need_images=False).splits["dev"]
    segmented = encode_texts(load_tokenizer("tiny-bert"), posts, max_length=64, with_translations=False)
    unsegmented = dataclasses.replace(segmented, text_segments=None)
    model = CLMLF(build_config("twitter2015", "tiny", {"model.variant": "text-only"}).model, classes=3).eval()

    def cached(texts: EncodedTexts) -> torch.Tensor:
        cpu = torch.device("cpu")
        common = {"device": cpu, "precision": resolve_precision("fp32", cpu), "cache_root": tmp_path, "log": print}
        states = text_states(model.text_encoder, model.encode_text, {"dev": texts}, encoder_key="t", width=64, **common)
        return states.texts["dev"][1]  # (S, D)

    with_segments, without = cached(segmented), cached(unsegmented)

    assert len([path for path in tmp_path.glob("text-*") if path.is_dir()]) == 2, "two entries, not one for both"
    assert not torch.allclose(with_segments, without, atol=5e-2)


def test_command_line_trains_the_full_model_on_aspect_rows_with_images(tmp_path, capsys):
    write_aspect_dataset(tmp_path)
    images = tmp_path / "images"
    (tmp_path / "twitter2015_images").rename(images)
    output = tmp_path / "run"

    code = main(
        [
            "--dataset", "twitter2015", "--data-root", str(tmp_path), "--image-folder", str(images),
            "--preset", "tiny", "--output", str(output),
            "--set", "feature_cache=true", "--set", f"feature_cache_dir={tmp_path / 'cache'}",
            "--set", "augmented_views=2",
        ]
    )  # fmt: skip

    assert code == 0, capsys.readouterr().err
    result = json.loads((output / "result.json").read_text())
    assert result["selection_metric"] == "f1_macro"
    assert result["label_names"] == ["negative", "neutral", "positive"]
    assert result["config"]["image_folder"] == str(images)
    history = result["history"]
    assert len(history) == 2 and all(epoch["train/loss_dbcl"] > 0 for epoch in history)
    assert sum(map(sum, result["confusion_matrices"]["test"])) == 6
    assert "augmented text: swap-delete" in capsys.readouterr().out


def test_augmented_text_is_a_validated_config_key():
    assert build_config("twitter2017", "paper").augmented_text == "dataset-default"
    assert build_config("hfm", "tiny", {"augmented_text": "original"}).to_flat_dict()["augmented_text"] == "original"
    with pytest.raises(ConfigError, match="augmented_text: 'back_translation' is not one of"):
        build_config("twitter2015", "tiny", {"augmented_text": "back_translation"})


def test_real_aspect_text_loads_with_the_published_sizes():
    root = shared_data("absa-text", "CLMLF_ABSA_TEXT_DATA")
    if not root.is_dir():
        pytest.skip(f"real aspect-based text data not present at {root}")

    counts = {}
    for name in ("twitter2015", "twitter2017"):
        dataset = load_dataset(name, root, need_images=False)
        assert all(post.aspect and post.aspect in post.text for posts in dataset.splits.values() for post in posts)
        for split, posts in dataset.splits.items():
            labels = collections.Counter(dataset.spec.label_names[post.label] for post in posts)
            counts[name, split] = (len(posts), labels["negative"], labels["neutral"], labels["positive"])
            print(f"{name} {split}: {len(posts)} rows, " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
        if name == "twitter2017":
            # The published split repeats two training rows and one training row in test (same label).
            assert [warning.line for warning in dataset.warnings] == [2681, 2682, 1040]

    # (rows, negative, neutral, positive); neutral is 0.585 of Twitter-2015's test rows and 0.464 of Twitter-2017's.
    assert counts == {
        ("twitter2015", "train"): (3179, 368, 1883, 928),
        ("twitter2015", "dev"): (1122, 149, 670, 303),
        ("twitter2015", "test"): (1037, 113, 607, 317),
        ("twitter2017", "train"): (3562, 416, 1638, 1508),
        ("twitter2017", "dev"): (1176, 144, 517, 515),
        ("twitter2017", "test"): (1234, 168, 573, 493),
    }


def test_a_study_without_the_images_is_refused_before_ray_starts(tmp_path, capsys):
    write_aspect_dataset(tmp_path, images=False)
    arguments = ["--smoke-test", "--dataset", "twitter2015", "--data-root", str(tmp_path)]
    arguments += ["--storage-path", str(tmp_path / "tune"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]

    assert layer_sweep.main(arguments) == 2
    default_folder = tmp_path / "twitter2015_images"
    assert f"--image-folder: the twitter2015 images are not at {default_folder}" in capsys.readouterr().err
    assert layer_sweep.main([*arguments, "--image-folder", str(tmp_path / "elsewhere")]) == 2
    assert str(tmp_path / "elsewhere") in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "tune").exists()


@pytest.mark.slow
def test_smoke_layer_sweep_on_aspect_rows_reaches_mlflow_and_the_report(tmp_path, ray_cluster, mlflow_server):
    write_aspect_dataset(tmp_path)
    # The images elsewhere than the default folder: a trial finds them only through --image-folder.
    images = tmp_path / "release-images"
    (tmp_path / "twitter2015_images").rename(images)
    arguments = [
        "--smoke-test", "--dataset", "twitter2015", "--data-root", str(tmp_path), "--image-folder", str(images),
        "--fusion-layers", "1", "--image-layers", "1,2",
        "--address", ray_cluster.address,
        "--storage-path", str(tmp_path / "tune"), "--name", "aspect-sweep",
        "--tracking-uri", mlflow_server,
    ]  # fmt: skip

    assert layer_sweep.main(arguments) == 0

    experiment = tmp_path / "tune" / "aspect-sweep"
    parent = json.loads((experiment / storage.PARENT_RUN_FILE).read_text())["parent_run_id"]
    runs = child_runs(mlflow_server, parent)
    assert sorted(run.data.params["model.image_layers"] for run in runs) == ["1", "2"]
    for run in runs:
        assert run.data.tags["clmlf.status"] == "TERMINATED"
        assert run.data.params["dataset"] == "twitter2015" and run.data.params["image_folder"] == str(images)
        assert "selected/test/f1_macro" in run.data.metrics
    page = (experiment / storage.REPORT_FOLDER / "twitter2015" / "report.html").read_text()
    # The paper's CLMLF row for Twitter-2015 (Table 6) beside the sweep's best configuration of the full model.
    assert html.escape("Best configurations of all studies next to the paper's Table 6") in page
    assert "CLMLF (Table 6)" in page and "0.7811" in page and "0.7460" in page
    assert "test f1_macro" in page
