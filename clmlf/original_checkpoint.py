"""Checkpoints saved by the original CLMLF code, loaded into our model under the `original` preset.

The original saves its `CLModel`'s state dict: the fusion model under `fuse_model.`, the classifier and the two
projection heads at the top. Its names map onto ours as `PREFIXES` says; inside each image or fusion layer, its
BERT-style names map as `LAYER_PARTS` says, and its separate query, key and value projections are stacked into
PyTorch's one input projection. The file also holds what the original builds but never uses for an output
(`IGNORED`): the same ResNet a second time under `image_model.resnet.` (with its never-called classifier), BERT's
pooler, a Transformer and a LayerNorm that are never called, and a classifier inside the fusion model that is
never called. Those are checked where they duplicate a used tensor and otherwise left out.

    python -m clmlf.convert checkpoint --original best-model.pth --dataset mvsa-single --out runs/original
    python -m clmlf.evaluate runs/original --data-root data
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clmlf.config import ORIGINAL_HEAD_WIDTH, ModelConfig, TrainConfig, build_config
from clmlf.data import dataset_spec
from clmlf.model import CLMLF
from clmlf.safe_files import UnreadableFile, load_tensors, save_tensors
from clmlf.train import CHECKPOINT_FILE

# Ours -> the original's, by prefix.
PREFIXES = (
    ("text_encoder.", "fuse_model.text_model.model."),
    ("text_projection.", "fuse_model.text_change."),
    ("image_backbone.trunk.", "fuse_model.image_model.resnet_encoder."),
    ("image_tokens.regions.", "fuse_model.image_change."),
    ("image_tokens.pooled.", "fuse_model.image_cls_change."),
    ("image_transformer.layers.", "fuse_model.image_encoder.layer."),
    ("fusion_transformer.layers.", "fuse_model.text_image_encoder.layer."),
    ("attention_pooling.score.", "fuse_model.output_attention."),
    ("classifier.layers.", "output_classify."),
    ("lbcl_head.", "orgin_linear_change."),
    ("dbcl_head.", "augment_linear_change."),
)
# Inside one image or fusion layer: PyTorch's encoder layer -> the original's BERT-style layer.
LAYER_PARTS = {
    "self_attn.out_proj.": "attention.output.dense.",
    "norm1.": "attention.output.LayerNorm.",
    "linear1.": "intermediate.dense.",
    "linear2.": "output.dense.",
    "norm2.": "output.LayerNorm.",
}
# PyTorch's in_proj_weight (3D, D) and in_proj_bias (3D,) stack these three, in this order.
ATTENTION_PROJECTIONS = ("query", "key", "value")
TRANSFORMER_LAYER = re.compile(r"^(image_transformer|fusion_transformer)\.layers\.\d+\.")
# The original's ResNet under its second name, by the index of the same module in `resnet_encoder`.
RESNET_DUPLICATE_PREFIX = "fuse_model.image_model.resnet."
RESNET_CHILDREN = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
# Built by the original, never used for its outputs: what each is, by prefix (a key is what its first match says).
IGNORED = {
    f"{RESNET_DUPLICATE_PREFIX}fc.": "the ResNet's classifier, never called",
    RESNET_DUPLICATE_PREFIX: (
        f"the ResNet again under its second name {RESNET_DUPLICATE_PREFIX} (each checked equal to the one in use)"
    ),
    "fuse_model.text_model.model.pooler.": "BERT's pooler, never called",
    "fuse_model.text_model.model.embeddings.position_ids": "the position_ids buffer of older transformers releases",
    "fuse_model.transformer_encoder.": "a PyTorch Transformer, never called",
    "fuse_model.transformer_embedding_layernorm.": "a LayerNorm, never called",
    "fuse_model.output_classify.": "a classifier inside the fusion model, never called",
}
DATA_PARALLEL_PREFIX = "module."


class OriginalCheckpointError(ValueError):
    """A file that is not the original code's checkpoint for this config; the message names the file."""


@dataclass(frozen=True)
class Conversion:
    state: dict[str, torch.Tensor]  # our model's complete state dict
    ignored: list[str]  # the file's keys that were left out (see IGNORED)
    model_config: ModelConfig  # the config the state dict fits
    width: int  # D, the width of the image and fusion layers

    def ignored_by_kind(self) -> dict[str, int]:
        """{what IGNORED says a key is: how many of the left-out keys are that}, in IGNORED's order."""
        counts = {description: 0 for description in IGNORED.values()}
        for key in self.ignored:
            counts[next(description for prefix, description in IGNORED.items() if key.startswith(prefix))] += 1
        return {description: count for description, count in counts.items() if count}

    def summary(self) -> list[str]:
        """What was converted and what was left out, a line each, for the command line."""
        heads = self.model_config.attention_heads(self.width)
        rule = f"the original code's width // {ORIGINAL_HEAD_WIDTH}" if self.model_config.heads == 0 else "model.heads"
        lines = [
            f"converted {len(self.state)} tensors; image and fusion layers: {self.width} wide, attention heads "
            f"{heads} ({rule})",
            f"left out {len(self.ignored)} tensors that the original saves but never uses for an output:",
        ]
        counts = self.ignored_by_kind()
        digits = len(str(max(counts.values(), default=0)))
        return lines + [f"  {count:>{digits}}  {kind}" for kind, count in counts.items()]


def original_sources(key: str) -> list[str]:
    """The original's keys whose tensors, stacked along the first dimension, give our `key`."""
    ours, theirs = next((ours, theirs) for ours, theirs in PREFIXES if key.startswith(ours))
    rest = key.removeprefix(ours)
    if TRANSFORMER_LAYER.match(key):
        index, part = rest.split(".", 1)
        if part.startswith("self_attn.in_proj_"):
            kind = part.removeprefix("self_attn.in_proj_")  # weight or bias
            return [f"{theirs}{index}.attention.self.{name}.{kind}" for name in ATTENTION_PROJECTIONS]
        inner = next(ours_part for ours_part in LAYER_PARTS if part.startswith(ours_part))
        rest = f"{index}.{LAYER_PARTS[inner]}{part.removeprefix(inner)}"
    return [theirs + rest]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's state dict, without a DataParallel `module.` prefix; refuses anything else, naming the file."""
    try:
        state = load_tensors(path)
    except UnreadableFile as error:
        raise OriginalCheckpointError(str(error)) from error
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items())
    ):
        raise OriginalCheckpointError(
            f"{path}: not a state dict (a mapping of parameter names to tensors, as the original code's "
            f"torch.save(model.state_dict(), ...) writes); it holds a {type(state).__name__}"
        )
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in state):
        state = {key.removeprefix(DATA_PARALLEL_PREFIX): value for key, value in state.items()}
    return dict(state)


def convert_state_dict(original: Mapping[str, torch.Tensor], model: CLMLF, path: Path) -> Conversion:
    """Our model's state dict from the original's; every missing, unknown or wrongly shaped key in one error."""
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    wrong_shapes: list[str] = []
    for key, target in model.state_dict().items():
        sources = original_sources(key)
        used.update(sources)
        absent = [source for source in sources if source not in original]
        if absent:
            missing.extend(absent)
            continue
        value = torch.cat([original[source] for source in sources]) if len(sources) > 1 else original[sources[0]]
        if value.shape != target.shape:
            shapes = " + ".join(str(tuple(original[source].shape)) for source in sources)
            wrong_shapes.append(f"{' + '.join(sources)}: {shapes} in the file, our {key} needs {tuple(target.shape)}")
            continue
        converted[key] = value.to(target.dtype)
    # A key the model needs is never reported as unexpected, even when a sibling it is stacked with is missing.
    rest = [key for key in original if key not in used]
    ignored = [key for key in rest if key.startswith(tuple(IGNORED))]
    unknown = [key for key in rest if not key.startswith(tuple(IGNORED))]
    problems = [
        *(f"missing: {key}" for key in missing),
        *(f"unexpected: {key}" for key in unknown),
        *(f"wrong shape: {entry}" for entry in wrong_shapes),
        *(f"differs from its copy: {key}" for key in _differing_resnet_copies(original)),
    ]
    if problems:
        raise OriginalCheckpointError(
            f"{path}: does not fit the original code's model under this config ({len(problems)} problems; layer "
            f"counts, the text encoder and the image encoder must be those the checkpoint was trained with, e.g. "
            f"--set model.fusion_layers=...):\n  " + "\n  ".join(problems)
        )
    return Conversion(state=converted, ignored=ignored, model_config=model.config, width=model.width)


def _differing_resnet_copies(original: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys under the ResNet's second name whose tensor is not the one the forward pass uses."""
    differing = []
    for key, value in original.items():
        child, _, rest = key.removeprefix(RESNET_DUPLICATE_PREFIX).partition(".")
        if not key.startswith(RESNET_DUPLICATE_PREFIX) or child not in RESNET_CHILDREN:
            continue
        used = original.get(f"fuse_model.image_model.resnet_encoder.{RESNET_CHILDREN[child]}.{rest}")
        if used is not None and not torch.equal(used, value):
            differing.append(key)
    return differing


def write_checkpoint(out: Path, conversion: Conversion, config: TrainConfig, source: Path) -> Path:
    """A checkpoint folder that `python -m clmlf.evaluate` scores: the whole model, the config, no optimiser."""
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "epoch": config.epochs - 1,
        "model": conversion.state,
        "untrained_encoders": {},
        "config": config.to_flat_dict(),
        "converted_from": str(source),
        "ignored_keys": conversion.ignored,
    }
    path = out / CHECKPOINT_FILE
    save_tensors(state, path)
    return path


def convert_checkpoint(
    original: Path, dataset: str, out: Path, overrides: dict[str, Any] | None = None
) -> tuple[Path, Conversion]:
    """The original code's checkpoint `original` for `dataset`, written as our checkpoint folder `out`: the
    checkpoint file's path, and what was converted and left out."""
    config = build_config(dataset, "original", overrides)
    state = read_state_dict(original)
    # Every weight comes from the file: the image encoder is built without fetching pretrained weights.
    skeleton = dataclasses.replace(config.model, image_weights="none")
    conversion = convert_state_dict(state, CLMLF(skeleton, dataset_spec(dataset).num_classes), original)
    return write_checkpoint(out, conversion, config, original), conversion
