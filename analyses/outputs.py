"""The analyses of one trained model next to its text-only counterpart, written as files (PNG and SVG figures,
analysis.json, analysis.html) and as an HTML fragment for the study report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from analyses.figures import attention_figure, case_study_figure, clusters_figure
from clmlf.analysis import SplitAnalysis, analyse_split, disagreements, projection
from clmlf.config import TrainConfig, ablation_row
from clmlf.evaluate import checkpoint_file, load_checkpoint
from clmlf.memory import release_memory
from clmlf.safe_files import load_tensors, replaced_atomically, write_bytes_atomically, write_text_atomically
from clmlf.train import train
from report.analyses import FIGURES, analysis_fragment
from report.markup import PAGE_STYLE, png_bytes

TEXT_ONLY_FOLDER = "text-only"
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "<s>", "</s>")


@dataclass
class AnalysisSettings:
    split: str = "test"
    layer: int = -1  # fusion layer whose attention is drawn; negative counts from the last
    head: int = 0
    tokens: list[str] = field(default_factory=list)  # word pieces to draw; empty: each post's most image-bound ones
    attention_posts: int = 8  # posts in the attention figure
    tokens_per_post: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)  # settings on top of the checkpoints' configs
    seed: int = 0  # the t-SNE's


@dataclass
class Analyses:
    full: SplitAnalysis
    text_only: SplitAnalysis
    cases: list[int]
    picks: list[tuple[int, int]]
    projections: dict[str, Any]
    figures: dict[str, Figure]
    sources: dict[str, str]
    # The data set of the analysed model: a report shows the analyses on its data set's page.
    dataset: str = ""
    # Each figure's PNG, drawn once: the files, analysis.html and the study report embed the same bytes (drawing
    # the case study's thumbnails is most of an analysis's time).
    pngs: dict[str, bytes] = field(default_factory=dict)

    def png(self, name: str) -> bytes:
        if name not in self.pngs:
            self.pngs[name] = png_bytes(self.figures[name])
        return self.pngs[name]


def text_only_counterpart(
    checkpoint: Path, folder: Path, overrides: dict[str, Any] | None = None, log: Callable[[str], None] = print
) -> Path:
    """`folder` holding the text-only model trained with the checkpoint's config and `overrides` (the paper's Table 3
    row: no text-frozen phase, the same epochs in all); trained there once and reused when it is already there."""
    try:
        checkpoint_file(folder)
        log(f"analysis: reusing the text-only counterpart in {folder}")
        return folder
    except ValueError:
        pass
    base = TrainConfig.from_flat_dict({**stored_config(checkpoint), **(overrides or {})})
    config = TrainConfig.from_flat_dict({**base.to_flat_dict(), **ablation_row(base, "text-only")})
    log(f"analysis: training the text-only counterpart of {checkpoint} into {folder} (reused next time)")
    train(config, output_dir=folder, log=lambda message: None)
    return folder


def stored_config(folder: Path) -> dict[str, Any]:
    """The flat config a checkpoint holds (its run's or a study trial's)."""
    return load_tensors(checkpoint_file(folder))["config"]


def analyse(
    checkpoint: Path, text_only: Path, settings: AnalysisSettings, log: Callable[[str], None] = print
) -> Analyses:
    """The case study, the attention maps and the cluster plots of the model in `checkpoint` on `settings.split`,
    against the text-only model in `text_only`."""
    split = settings.split
    variant = stored_config(text_only)["model.variant"]
    if variant != "text-only":
        raise ValueError(f"{text_only}: expected a text-only model, found model.variant {variant!r}")
    full_run, full_state = load_checkpoint(checkpoint, settings.overrides, log=lambda message: None)
    if full_run.model.fusion_transformer is None:
        raise ValueError(f"{checkpoint}: a {full_run.config.model.variant!r} model fuses nothing; analyse a fusing one")
    full = analyse_split(full_run, full_state["epoch"], split, settings.layer, settings.head)
    device, dataset = full_run.device, full_run.config.dataset
    del full_run
    release_memory(device)
    text_run, text_state = load_checkpoint(text_only, settings.overrides, log=lambda message: None)
    text = analyse_split(text_run, text_state["epoch"], split)
    del text_run
    release_memory(device)
    cases = disagreements(full, text)
    picks = token_picks(full, cases, settings)
    projections = {"full": projection(full.representations, settings.seed)}
    projections["text-only"] = projection(text.representations, settings.seed)
    figures = {
        "case_study": case_study_figure(full, text, cases),
        "attention": attention_figure(full, picks),
        "clusters": clusters_figure(projections, full.labels, full.label_names),
    }
    sources = {
        "full": f"{checkpoint} (epoch {full_state['epoch'] + 1})",
        "text-only": f"{text_only} (epoch {text_state['epoch'] + 1})",
    }
    log(f"analysis: {len(cases)} of {len(full.ids)} {split} posts where full and text-only disagree")
    return Analyses(full, text, cases, picks, projections, figures, sources, dataset)


def token_picks(analysis: SplitAnalysis, cases: list[int], settings: AnalysisSettings) -> list[tuple[int, int]]:
    """(post, token) pairs for the attention figure: the posts of the case study first, then the others; in each,
    the requested word pieces, or (none requested) the ones that give the image regions the largest share."""
    wanted = [token.lower() for token in settings.tokens]
    picks: list[tuple[int, int]] = []
    listed = set(cases)
    order = cases + [index for index in range(len(analysis.ids)) if index not in listed]
    for index in order:
        attention = analysis.attention[index]
        candidates = [
            position
            for position, token in enumerate(attention.tokens)
            if token not in SPECIAL_TOKENS and any(character.isalnum() for character in token)
        ]
        if wanted:
            chosen = [position for position in candidates if attention.tokens[position].lower() in wanted]
        else:
            chosen = sorted(candidates, key=attention.image_share, reverse=True)
        if chosen:
            picks += [(index, position) for position in chosen[: settings.tokens_per_post]]
        if len({post for post, _ in picks}) >= settings.attention_posts:
            break
    return picks


def summary(analyses: Analyses) -> dict[str, Any]:
    """analysis.json: the cases, the drawn attention maps and the projected points, with where they came from."""
    full, text = analyses.full, analyses.text_only
    names = full.label_names
    return {
        "dataset": analyses.dataset or None,
        "split": full.split,
        "models": analyses.sources,
        "posts": len(full.ids),
        "accuracy": {
            "full": float((full.predictions == full.labels).mean()),
            "text-only": float((text.predictions == text.labels).mean()),
        },
        "case_study": [
            {
                "id": full.ids[index],
                "text": full.texts[index],
                "gold": names[full.labels[index]],
                "full": names[full.predictions[index]],
                "text-only": names[text.predictions[index]],
            }
            for index in analyses.cases
        ],
        "attention": {
            "fusion_layer": full.attention_layer + 1,
            "head": full.attention_head + 1,
            "maps": [
                {
                    "id": full.ids[index],
                    "token": full.attention[index].tokens[token],
                    "position": token,
                    "share_on_regions": full.attention[index].image_share(token),
                    "regions": full.attention[index].regions(token).tolist(),
                }
                for index, token in analyses.picks
            ],
        },
        "clusters": {
            "gold": [names[label] for label in full.labels],
            "ids": full.ids,
            **{model: points.tolist() for model, points in analyses.projections.items()},
        },
    }


def fragment(analyses: Analyses, heading_level: int = 2) -> str:
    """The three analyses as HTML with embedded figures (the report draws the same from the written files)."""
    return analysis_fragment(summary(analyses), {name: analyses.png(name) for name in FIGURES}, heading_level)


def write(analyses: Analyses, folder: Path) -> list[Path]:
    """analysis.json, analysis.html and each figure as PNG and SVG in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in analyses.figures.items():
        write_bytes_atomically(folder / f"{name}.png", analyses.png(name))
        with replaced_atomically(folder / f"{name}.svg") as temporary:
            figure.savefig(temporary, format="svg", dpi=100, bbox_inches="tight")
        written += [folder / f"{name}.png", folder / f"{name}.svg"]
    write_text_atomically(folder / "analysis.json", json.dumps(summary(analyses), indent=2) + "\n")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>CLMLF analyses</title>\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<h1>CLMLF analyses</h1>\n"
        f"{fragment(analyses)}\n</body>\n</html>\n"
    )
    write_text_atomically(folder / "analysis.html", page)
    return [*written, folder / "analysis.json", folder / "analysis.html"]
