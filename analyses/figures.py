"""The analyses' figures: the case study (the paper's Figure 4), the attention maps (Figure 5) and the cluster plots
(Figure 6)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from clmlf.analysis import SplitAnalysis
from clmlf.augment import evaluation_view

THUMBNAIL = 112  # pixels on the longer side: small enough to embed many in the report
COLUMNS = 4
CASE_TILES = 16  # the case table lists every disagreement; the figure shows the first ones


def thumbnail(path: Path | None) -> np.ndarray:
    """The post's image as an RGB array of at most THUMBNAIL pixels a side; grey where the post has none."""
    if path is None or not Path(path).is_file():
        return np.full((THUMBNAIL, THUMBNAIL, 3), 200, dtype=np.uint8)
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        return np.asarray(image)


def model_view(path: Path | None) -> np.ndarray:
    """The square part of the post's image that the model sees at evaluation (resized, centre-cropped), as RGB."""
    if path is None or not Path(path).is_file():
        return np.full((THUMBNAIL, THUMBNAIL, 3), 200, dtype=np.uint8)
    with Image.open(path) as image:
        return np.asarray(evaluation_view(THUMBNAIL)(image.convert("RGB")))


def _grid(count: int, tile: tuple[float, float]) -> tuple[Figure, list]:
    columns = min(COLUMNS, max(1, count))
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(tile[0] * columns, tile[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for axis in axes[count:]:
        axis.set_axis_off()
    return figure, axes[:count]


def case_study_figure(full: SplitAnalysis, text_only: SplitAnalysis, cases: list[int]) -> Figure:
    """One tile per post on which the models disagree: the image, the text, gold and both predictions; the tile's
    frame is green where `full` is right, red where it is wrong."""
    names = full.label_names
    if not cases:
        figure = Figure(figsize=(6, 1.2))
        figure.text(0.5, 0.5, f"full and text-only agree on every {full.split} post", ha="center", va="center")
        return figure
    shown = cases[:CASE_TILES]
    figure, axes = _grid(len(shown), (3.4, 4.2))
    for axis, index in zip(axes, shown, strict=True):
        axis.imshow(thumbnail(full.image_paths[index]))
        axis.set_xticks([])
        axis.set_yticks([])
        right = full.predictions[index] == full.labels[index]
        for spine in axis.spines.values():
            spine.set_edgecolor("tab:green" if right else "tab:red")
            spine.set_linewidth(3)
        text = textwrap.shorten(full.texts[index], 120, placeholder=" …")
        # Post texts and ids are shown as they are: with math parsing, "$5^^ vs $3" would stop the drawing.
        axis.set_title(full.ids[index], fontsize=8, parse_math=False)
        axis.set_xlabel(
            "\n".join(textwrap.wrap(text, 38))
            + f"\ngold {names[full.labels[index]]} | full {names[full.predictions[index]]}"
            f" | text-only {names[text_only.predictions[index]]}",
            fontsize=7.5,
            parse_math=False,
        )
    figure.suptitle(
        f"Case study: {len(shown)} of the {len(cases)} {full.split} posts where full and text-only disagree "
        "(frame: full right/wrong)"
    )
    return figure


def attention_figure(analysis: SplitAnalysis, picks: list[tuple[int, int]]) -> Figure:
    """For each (post, token) pick, the token's attention over the image regions drawn over the image (each map
    renormalised over the regions; the title gives the share of the whole row that goes to them)."""
    if not picks:
        figure = Figure(figsize=(6, 1.2))
        figure.text(0.5, 0.5, "no text token to show", ha="center", va="center")
        return figure
    figure, axes = _grid(len(picks), (3.0, 3.3))
    for axis, (index, token) in zip(axes, picks, strict=True):
        attention = analysis.attention[index]
        picture = model_view(analysis.image_paths[index])
        side = picture.shape[0]
        axis.imshow(picture, extent=(0, side, side, 0))
        axis.imshow(
            attention.regions(token), cmap="jet", alpha=0.45, extent=(0, side, side, 0), interpolation="bilinear"
        )
        axis.set_axis_off()
        axis.set_title(
            f"{analysis.ids[index]}: '{attention.tokens[token]}'\n{attention.image_share(token):.0%} on the regions",
            fontsize=8,
            parse_math=False,
        )
    figure.suptitle(
        f"Attention of text tokens over the image regions (fusion layer {analysis.attention_layer + 1}, "
        f"head {analysis.attention_head + 1})"
    )
    return figure


def clusters_figure(projections: dict[str, np.ndarray], labels: np.ndarray, label_names: list[str]) -> Figure:
    """Side by side, each model's 2-D t-SNE of the pooled representation of the posts, coloured by gold label."""
    figure = Figure(figsize=(5.2 * len(projections), 4.6), layout="constrained")
    axes = figure.subplots(1, len(projections), squeeze=False)[0]
    for axis, (model, points) in zip(axes, projections.items(), strict=True):
        for label, name in enumerate(label_names):
            chosen = labels == label
            axis.scatter(points[chosen, 0], points[chosen, 1], s=12, alpha=0.8, label=f"{name} ({chosen.sum()})")
        axis.set_title(f"{model} ({len(points)} posts)")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.legend(fontsize=8, title="gold label", title_fontsize=8)
    figure.suptitle("t-SNE of the pooled representation R~, coloured by gold label")
    return figure
