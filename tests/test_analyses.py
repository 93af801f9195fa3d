"""The paper's analyses (case study, attention maps, cluster plots) of a tiny run on the demo set: the attention rows
are distributions over the positions they cover and do not depend on how posts were batched, the case study lists
exactly the disagreements, the projection has one point per test post, and `python -m analyses` writes its
files and reuses its text-only counterpart."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tolerances import ATTENTION_PADDING_TOLERANCE, REPRESENTATION_PADDING_TOLERANCE

from analyses.cli import main
from analyses.figures import attention_figure, case_study_figure
from clmlf.analysis import SplitAnalysis, analyse_split, disagreements
from clmlf.config import build_config
from clmlf.data import load_dataset
from clmlf.evaluate import load_checkpoint
from clmlf.train import train

# Two batches per epoch keep the run and its text-only counterpart at seconds; dev and test stay whole.
FAST = {"max_train_batches": 2}
FAST_SET = ["--set", "max_train_batches=2"]
pytestmark = pytest.mark.usefixtures("demo_cache")


@pytest.fixture(scope="module")
def run_dir(demo_cache, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-run")
    train(build_config("demo", "tiny", FAST), output_dir=folder, log=lambda message: None)
    return folder


@pytest.fixture(scope="module")
def analysed(run_dir) -> Path:
    """RUN_DIR/analysis after the command ran once (training the text-only counterpart)."""
    assert main([str(run_dir), *FAST_SET]) == 0
    return run_dir / "analysis"


@pytest.fixture(scope="module")
def full_test(run_dir) -> SplitAnalysis:
    run, state = load_checkpoint(run_dir, log=lambda message: None)
    return analyse_split(run, state["epoch"], "test")


def test_attention_rows_sum_to_one_over_the_positions_they_cover(full_test):
    assert len(full_test.attention) == len(full_test.ids)
    for post in full_test.attention:
        assert post.tokens[0] == "[CLS]"
        # Keys: the post's own text tokens (no padding), the pooled-image token, then p*p regions.
        assert post.rows.shape == (len(post.tokens), len(post.tokens) + 1 + post.grid**2)
        assert np.all(post.rows >= 0)
        np.testing.assert_allclose(post.rows.sum(axis=1), 1.0, atol=1e-5)
        for token in range(len(post.tokens)):
            np.testing.assert_allclose(post.regions(token).sum(), 1.0, atol=1e-5)
            assert 0.0 < post.image_share(token) < 1.0


def test_attention_does_not_depend_on_the_padding_of_the_batch(run_dir, full_test):
    # One post per batch: no padding at all. Batched with longer posts, padded keys must get no weight.
    run, state = load_checkpoint(run_dir, {"eval_batch_size": 1}, log=lambda message: None)
    alone = analyse_split(run, state["epoch"], "test")
    lengths = {len(post.tokens) for post in full_test.attention}
    assert len(lengths) > 1, "the test posts must differ in length for padding to occur"
    # The run's precision is the machine's (auto): bf16 on CPUs with native bf16, where padding changes the rounding.
    precision = run.precision.name
    for batched, single in zip(full_test.attention, alone.attention, strict=True):
        assert batched.tokens == single.tokens
        np.testing.assert_allclose(batched.rows, single.rows, atol=ATTENTION_PADDING_TOLERANCE[precision])
    np.testing.assert_allclose(
        full_test.representations, alone.representations, atol=REPRESENTATION_PADDING_TOLERANCE[precision]
    )


def test_another_layer_and_head_on_request_and_a_missing_one_is_refused(run_dir, full_test):
    run, state = load_checkpoint(run_dir, log=lambda message: None)
    heads = run.model.fusion_transformer.layers[0].self_attn.num_heads
    with pytest.raises(ValueError, match=f"attention head {heads}: the fusion layers have {heads} head"):
        analyse_split(run, state["epoch"], "test", layer=0, head=heads)
    other = analyse_split(run, state["epoch"], "test", layer=0, head=heads - 1)
    assert (other.attention_layer, other.attention_head) == (0, heads - 1)
    assert not np.allclose(other.attention[0].rows, full_test.attention[0].rows)


def test_the_case_study_lists_all_disagreements_and_only_them(analysed, run_dir, full_test):
    written = json.loads((analysed / "analysis.json").read_text())
    run, state = load_checkpoint(analysed / "text-only", log=lambda message: None)
    text_only = analyse_split(run, state["epoch"], "test")
    names = full_test.label_names
    expected = {
        post: (names[gold], names[full], names[text])
        for post, gold, full, text in zip(
            full_test.ids, full_test.labels, full_test.predictions, text_only.predictions, strict=True
        )
        if full != text
    }
    listed = {case["id"]: (case["gold"], case["full"], case["text-only"]) for case in written["case_study"]}
    assert listed == expected
    assert all(case["full"] != case["text-only"] for case in written["case_study"])
    page = (analysed / "analysis.html").read_text()
    assert page.count("<tr>") == len(expected) + 1  # the header row and one row per case


def test_texts_and_ids_that_read_as_math_are_drawn_as_text(full_test):
    # "$5^^ vs $3" is a syntax error as matplotlib mathtext: a figure that parses it fails when drawn.
    posts = len(full_test.ids)
    odd = SplitAnalysis(
        **{**full_test.__dict__, "ids": [f"$id^^{i}" for i in range(posts)], "texts": ["$5^^ vs $3"] * posts}
    )
    for figure in (case_study_figure(odd, odd, [0, 1]), attention_figure(odd, [(0, 1)])):
        figure.savefig(io.BytesIO(), format="svg")


def test_disagreements_refuses_analyses_of_different_posts(full_test):
    other = SplitAnalysis(**{**full_test.__dict__, "ids": full_test.ids[:-1]})
    with pytest.raises(ValueError, match="different posts of 'test'"):
        disagreements(full_test, other)


def test_the_projection_has_one_point_per_test_post(analysed, run_dir):
    written = json.loads((analysed / "analysis.json").read_text())
    test_posts = load_dataset("demo", None, need_images=False, need_translations=False).splits["test"]
    clusters = written["clusters"]
    assert clusters["ids"] == [post.id for post in test_posts]
    for model in ("full", "text-only"):
        points = np.array(clusters[model])
        assert points.shape == (len(test_posts), 2)
        assert np.isfinite(points).all()
    assert written["posts"] == len(test_posts)


def test_the_command_writes_its_files_and_reuses_the_counterpart(analysed, run_dir, capsys):
    page = (analysed / "analysis.html").read_text()
    for name in ("case_study", "attention", "clusters"):
        with Image.open(analysed / f"{name}.png") as image:
            assert image.width > 100 and image.height > 50
        assert "<svg" in (analysed / f"{name}.svg").read_text()[:2000]
        # The page embeds the very PNG written next to it: each figure is drawn once.
        assert base64.b64encode((analysed / f"{name}.png").read_bytes()).decode("ascii") in page
    maps = json.loads((analysed / "analysis.json").read_text())["attention"]["maps"]
    assert maps and all(np.isclose(np.sum(item["regions"]), 1.0) for item in maps)
    counterpart = analysed / "text-only" / "checkpoint" / "state.pt"
    stamp = counterpart.stat().st_mtime_ns
    capsys.readouterr()
    assert main([str(run_dir), *FAST_SET, "--layer", "0", "--head", "1", "--tokens", "the"]) == 0
    assert "reusing the text-only counterpart" in capsys.readouterr().out
    assert counterpart.stat().st_mtime_ns == stamp
    maps = json.loads((analysed / "analysis.json").read_text())["attention"]
    assert (maps["fusion_layer"], maps["head"]) == (1, 2)
    assert maps["maps"] and {item["token"] for item in maps["maps"]} == {"the"}


def test_a_full_model_given_as_the_text_only_one_is_refused(run_dir, capsys):
    assert main([str(run_dir), "--text-only", str(run_dir)]) == 2
    assert f"{run_dir}: expected a text-only model, found model.variant 'full'" in capsys.readouterr().err
