import json
import multiprocessing
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clmlf.demo_data import (
    BOTH,
    COMPLETE_MARKER,
    DEMO_VERSION,
    IMAGE_BORNE,
    IRONIC,
    MISLABELLED_FRACTION,
    NEUTRAL,
    SENTIMENT_VOCABULARY,
    TEXT_BORNE,
    DemoSizes,
    ensure_demo_dataset,
    generate_demo_dataset,
    main,
)

SMALL = DemoSizes(train=40, dev=12, test=12)
DEFAULT = DemoSizes()
LABEL_OF = {"positive": 0, "neutral": 1, "negative": 2}
# Sentiment words chosen independently of the generator's lists: none may leak into a neutral text.
SENTIMENT_WORDS = {
    "love", "hate", "happy", "sad", "amazing", "terrible", "awful", "great", "wonderful", "horrible", "angry",
    "best", "worst", "excited", "disappointed", "miserable", "beautiful", "fantastic", "ugh", "yay", "upset",
    "perfect", "boring", "annoying", "lovely", "proud", "grateful", "furious", "enjoyed", "fail",
}  # fmt: skip


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def load_split(data_root: Path, split: str) -> list[dict]:
    return read_json(data_root / "demo" / "10-flod-1" / f"{split}.json")


def load_posts(data_root: Path) -> dict[str, dict]:
    """Generation metadata per post id, joined with its text, label and translation."""
    demo = data_root / "demo"
    posts = {post["id"]: post for post in read_json(demo / "generation.json")["posts"]}
    for split in ("train", "dev", "test"):
        for record in load_split(data_root, split):
            posts[record["id"]].update(record)
    for entry in read_json(demo / "demo_translation.json"):
        posts[entry["id"]]["text_translation"] = entry["text_translation"]
    return posts


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("default"), seed=7)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first = generate_demo_dataset(tmp_path / "a", seed=3, sizes=SMALL)
    second = generate_demo_dataset(tmp_path / "b", seed=3, sizes=SMALL)
    other = generate_demo_dataset(tmp_path / "c", seed=4, sizes=SMALL)
    files = ["10-flod-1/train.json", "10-flod-1/dev.json", "10-flod-1/test.json", "demo_translation.json"]
    files += ["generation.json"]
    for name in files:
        assert (first / "demo" / name).read_bytes() == (second / "demo" / name).read_bytes(), name
    image_ids = [record["id"] for record in load_split(first, "train")[:6]]
    for post_id in image_ids:
        image_path = Path("demo/dataset_image") / f"{post_id}.jpg"
        assert (first / image_path).read_bytes() == (second / image_path).read_bytes(), post_id
    assert (first / "demo/10-flod-1/train.json").read_bytes() != (other / "demo/10-flod-1/train.json").read_bytes()
    assert (first / "demo/demo_translation.json").read_bytes() != (other / "demo/demo_translation.json").read_bytes()


def test_layout_and_json_shapes_match_the_mvsa_format(tmp_path):
    data_root = generate_demo_dataset(tmp_path, seed=1, sizes=SMALL, image_size=64)
    demo = data_root / "demo"
    assert (demo / COMPLETE_MARKER).is_file()
    translations = read_json(demo / "demo_translation.json")
    assert all(set(entry) == {"id", "text_translation"} for entry in translations)
    translation_ids = [entry["id"] for entry in translations]
    assert len(translation_ids) == len(set(translation_ids))
    split_ids = []
    for split, size in [("train", SMALL.train), ("dev", SMALL.dev), ("test", SMALL.test)]:
        records = load_split(data_root, split)
        assert len(records) == size
        for record in records:
            assert set(record) == {"id", "text", "emotion_label"}
            assert isinstance(record["id"], str) and record["id"].isdigit()
            assert isinstance(record["text"], str) and 8 <= len(record["text"].split()) <= 16, record
            assert record["emotion_label"] in (0, 1, 2)
            with Image.open(demo / "dataset_image" / f"{record['id']}.jpg") as image:
                assert image.mode == "RGB" and image.size == (64, 64)
            split_ids.append(record["id"])
    assert sorted(translation_ids) == sorted(split_ids)
    generation = read_json(demo / "generation.json")
    assert generation["version"] == DEMO_VERSION and generation["seed"] == 1
    assert generation["sizes"] == {"train": 40, "dev": 12, "test": 12}
    assert sum(generation["kind_counts"]["dev"].values()) == 12


def test_ids_are_unique_across_splits_and_not_contiguous(default_root):
    ids = [record["id"] for split in ("train", "dev", "test") for record in load_split(default_root, split)]
    assert len(ids) == len(set(ids)) == DEFAULT.total
    numbers = sorted(int(post_id) for post_id in ids)
    assert numbers[-1] - numbers[0] + 1 > len(numbers)
    assert [int(post_id) for post_id in ids] != numbers


def test_every_label_has_at_least_a_fifth_of_train(default_root):
    labels = Counter(record["emotion_label"] for record in load_split(default_root, "train"))
    assert set(labels) == {0, 1, 2}
    assert all(count >= 0.2 * DEFAULT.train for count in labels.values()), labels


def test_kinds_are_stratified_and_labels_follow_the_kind(default_root):
    posts = load_posts(default_root)
    for post in posts.values():
        if post["kind"] == TEXT_BORNE:
            assert post["image_sentiment"] == "neutral" and post["text_sentiment"] != "neutral"
        elif post["kind"] == IMAGE_BORNE:
            assert post["text_sentiment"] == "neutral" and post["image_sentiment"] != "neutral"
            assert post["image_subject"] == "face"
        elif post["kind"] == BOTH:
            assert post["text_sentiment"] == post["image_sentiment"] != "neutral"
        elif post["kind"] == IRONIC:
            assert {post["text_sentiment"], post["image_sentiment"]} == {"positive", "negative"}
            assert post["image_subject"] == "face"
        else:
            assert post["kind"] == NEUTRAL and post["text_sentiment"] == post["image_sentiment"] == "neutral"
        # The face decides where it shows a sentiment (also against the words), else the words do.
        sentiment = post["image_sentiment"] if post["image_sentiment"] != "neutral" else post["text_sentiment"]
        assert post["designed_label"] == LABEL_OF[sentiment]
    for split, size in [("train", DEFAULT.train), ("dev", DEFAULT.dev), ("test", DEFAULT.test)]:
        kinds = Counter(post["kind"] for post in posts.values() if post["split"] == split)
        assert abs(kinds[TEXT_BORNE] / size - 0.30) < 0.02 and abs(kinds[NEUTRAL] / size - 0.25) < 0.02, kinds
        assert abs(kinds[IRONIC] / size - 0.15) < 0.02, kinds


def test_a_fixed_share_of_every_split_is_mislabelled_at_random(default_root):
    posts = list(load_posts(default_root).values())
    generation = read_json(default_root / "demo" / "generation.json")
    for split, size in [("train", DEFAULT.train), ("dev", DEFAULT.dev), ("test", DEFAULT.test)]:
        in_split = [post for post in posts if post["split"] == split]
        mislabelled = [post for post in in_split if post["emotion_label"] != post["designed_label"]]
        assert len(mislabelled) == round(MISLABELLED_FRACTION * size)
        assert generation["best_achievable_accuracy"][split] == pytest.approx(1 - len(mislabelled) / size)
        # Mistakes hit every kind and every label, not one corner of the design.
        assert len({post["kind"] for post in mislabelled}) >= 4
        assert {post["emotion_label"] for post in mislabelled} == {0, 1, 2}


def best_accuracy_from(posts: list[dict], keys: tuple[str, ...], label: str) -> float:
    """The best any classifier that sees only `keys` of a post can score on `label`: the majority per value."""
    counts: dict[tuple, Counter] = {}
    for post in posts:
        counts.setdefault(tuple(post[key] for key in keys), Counter())[post[label]] += 1
    return sum(max(counter.values()) for counter in counts.values()) / len(posts)


def test_neither_modality_alone_decides_the_label(default_root):
    posts = list(load_posts(default_root).values())
    neutral_text = [post for post in posts if post["text_sentiment"] == "neutral"]
    neutral_image = [post for post in posts if post["image_sentiment"] == "neutral"]
    assert 0.3 < sum(post["designed_label"] != 1 for post in neutral_text) / len(neutral_text) < 0.7
    assert 0.4 < sum(post["designed_label"] != 1 for post in neutral_image) / len(neutral_image) < 0.7
    # The words contradict the label on ironic posts, so even a perfect reading of the text is wrong there.
    ironic = [post for post in posts if post["kind"] == IRONIC]
    assert all(LABEL_OF[post["text_sentiment"]] != post["designed_label"] for post in ironic)

    for modality in ("text_sentiment", "image_sentiment"):
        assert 0.65 < best_accuracy_from(posts, (modality,), "designed_label") < 0.75
        assert best_accuracy_from(posts, (modality,), "emotion_label") < 0.72
    assert best_accuracy_from(posts, ("text_sentiment", "image_sentiment"), "designed_label") == 1.0
    both = best_accuracy_from(posts, ("text_sentiment", "image_sentiment"), "emotion_label")
    assert both == pytest.approx(1 - MISLABELLED_FRACTION, abs=0.01)


def test_texts_carry_their_sentiment_in_words(default_root):
    lexicon = {
        sentiment: {word.lower() for group in vocabulary["adj"] for word in group}
        for sentiment, vocabulary in SENTIMENT_VOCABULARY.items()
    }
    for post in load_posts(default_root).values():
        words = set(re.findall(r"[a-z]+", post["text"].lower()))
        if post["text_sentiment"] == "neutral":
            assert not words & SENTIMENT_WORDS, post["text"]
            assert not words & (lexicon["positive"] | lexicon["negative"]), post["text"]
        else:
            other = "negative" if post["text_sentiment"] == "positive" else "positive"
            assert not words & lexicon[other], post["text"]


def test_texts_vary_and_translations_are_paraphrases(default_root):
    posts = list(load_posts(default_root).values())
    assert len({post["text"] for post in posts}) > 0.95 * len(posts)
    differing = [post for post in posts if post["text_translation"].strip() != post["text"].strip()]
    assert len(differing) > 0.9 * len(posts)
    assert all(re.search(r"[A-Za-z]", post["text_translation"]) for post in posts)
    assert sum("@" in post["text"] for post in posts) > 0.1 * len(posts)
    assert sum("#" in post["text"] for post in posts) > 0.3 * len(posts)


def tiny_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float64).ravel()


def nearest_centroid_accuracy(train: list[tuple[np.ndarray, str]], test: list[tuple[np.ndarray, str]]) -> float:
    classes = sorted({label for _, label in train})
    centroids = np.stack([np.mean([x for x, label in train if label == name], axis=0) for name in classes])
    correct = [classes[int(np.argmin(((centroids - x) ** 2).sum(axis=1)))] == label for x, label in test]
    return float(np.mean(correct))


def test_image_cue_is_learnable_from_downsampled_pixels(default_root):
    posts = list(load_posts(default_root).values())
    images = default_root / "demo" / "dataset_image"

    def examples(split: str, kinds: set[str]) -> list[tuple[np.ndarray, str]]:
        return [
            (tiny_pixels(images / f"{post['id']}.jpg"), post["image_sentiment"])
            for post in posts
            if post["split"] == split and post["kind"] in kinds
        ]

    image_borne = {IMAGE_BORNE}
    assert nearest_centroid_accuracy(examples("train", image_borne), examples("test", image_borne)) > 0.9
    every_kind = {TEXT_BORNE, IMAGE_BORNE, BOTH, IRONIC, NEUTRAL}
    assert nearest_centroid_accuracy(examples("train", every_kind), examples("test", every_kind)) > 0.9


def test_refuses_to_overwrite_and_rejects_bad_sizes(tmp_path):
    generate_demo_dataset(tmp_path, sizes=SMALL)
    with pytest.raises(FileExistsError, match="demo"):
        generate_demo_dataset(tmp_path, sizes=SMALL)
    with pytest.raises(ValueError, match="dev"):
        DemoSizes(dev=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_demo_dataset(tmp_path / "other", sizes=SMALL, image_size=8)


def test_ensure_generates_once_and_reuses(tmp_path):
    data_root = ensure_demo_dataset(tmp_path, seed=2)
    assert data_root == tmp_path / f"demo-v{DEMO_VERSION}-seed2"
    generation = data_root / "demo" / "generation.json"
    stamp = generation.stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path, seed=2) == data_root
    assert generation.stat().st_mtime_ns == stamp
    assert len(load_split(data_root, "train")) == DEFAULT.train
    assert [child.name for child in tmp_path.iterdir()] == [data_root.name]


def test_ensure_uses_the_cache_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CLMLF_CACHE_DIR", str(tmp_path / "cache"))
    assert ensure_demo_dataset(seed=5) == tmp_path / "cache" / f"demo-v{DEMO_VERSION}-seed5"


def test_ensure_refuses_a_folder_without_the_complete_marker(tmp_path):
    partial = tmp_path / f"demo-v{DEMO_VERSION}-seed0" / "demo"
    partial.mkdir(parents=True)
    (partial / "generation.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RuntimeError, match="COMPLETE"):
        ensure_demo_dataset(tmp_path)


def test_ensure_is_safe_when_processes_race(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        roots = pool.map(ensure_demo_dataset, [tmp_path] * 3)
    assert roots[0] == roots[1] == roots[2] == tmp_path / f"demo-v{DEMO_VERSION}-seed0"
    assert (roots[0] / "demo" / COMPLETE_MARKER).is_file()
    ids = [record["id"] for split in ("train", "dev", "test") for record in load_split(roots[0], split)]
    assert len(list((roots[0] / "demo" / "dataset_image").iterdir())) == len(ids) == DEFAULT.total
    assert [child.name for child in tmp_path.iterdir()] == [roots[0].name]


def test_command_line_writes_the_requested_sizes(tmp_path, capsys):
    main(["--output", str(tmp_path), "--seed", "9", "--train", "10", "--dev", "5", "--test", "6", "--image-size", "48"])
    assert [len(load_split(tmp_path, split)) for split in ("train", "dev", "test")] == [10, 5, 6]
    first_id = load_split(tmp_path, "train")[0]["id"]
    with Image.open(tmp_path / "demo" / "dataset_image" / f"{first_id}.jpg") as image:
        assert image.size == (48, 48)
    printed = capsys.readouterr().out
    assert "21 posts" in printed
    # round(0.1 * 10) = 1 of the 10 training posts is mislabelled; none of the 5 dev posts.
    assert "best achievable accuracy 0.900" in printed and "best achievable accuracy 1.000" in printed
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path)])
