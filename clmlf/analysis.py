"""The paper's analyses of a trained model, as plain computations over one split: predictions and the pooled fused
representation R~ of every post (the case study, Figure 4, and the cluster plots, Figure 6), and the fusion
Transformer's attention from the text tokens to the image regions (the attention maps, Figure 5).

The attention is read without changing the model: a forward pre-hook on one fusion layer takes that layer's input
and its padding mask and runs the layer's own attention block once more with its weights returned. The layers are
post-LN, so the attention block sees the layer's input as it is. Nothing is hooked during training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clmlf.encoders import load_tokenizer
from clmlf.model import CLMLF
from clmlf.train import Run


@dataclass
class PostAttention:
    """One post's attention rows in the chosen fusion layer and head, for its text tokens as queries.

    Keys are the post's valid positions of the fused sequence in order: its n text tokens (padding left out), the
    pooled-image token, then the p*p image regions in row-major order. Padded keys get no weight, so every row sums
    to one over these positions."""

    tokens: list[str]  # (n,) the post's word pieces, special tokens included
    rows: np.ndarray  # (n, n + 1 + p*p)
    grid: int  # p

    def regions(self, token: int) -> np.ndarray:
        """The token's attention on the image regions (p, p), renormalised to sum to one over the regions."""
        weights = self.rows[token, len(self.tokens) + 1 :]
        return (weights / weights.sum()).reshape(self.grid, self.grid)

    def image_share(self, token: int) -> float:
        """How much of the token's attention goes to the image regions (pooled-image token not counted)."""
        return float(self.rows[token, len(self.tokens) + 1 :].sum())


@dataclass
class SplitAnalysis:
    """A model's view of one split, posts in the split's order."""

    split: str
    label_names: list[str]
    ids: list[str]
    texts: list[str]
    image_paths: list[Path | None]
    labels: np.ndarray  # (N,)
    predictions: np.ndarray  # (N,)
    representations: np.ndarray  # (N, D), R~
    attention: list[PostAttention] = field(default_factory=list)  # (N,) when the model fuses, else empty
    attention_layer: int | None = None
    attention_head: int | None = None


@contextlib.contextmanager
def fusion_attention(model: CLMLF, layer: int, head: int) -> Iterator[list[torch.Tensor]]:
    """Collects, for every forward pass inside the block, the attention weights (B, L, L) of fusion layer `layer`
    (negative counts from the last) in head `head`; padded keys get weight 0."""
    if model.fusion_transformer is None:
        raise ValueError("the model has no fusion Transformer (a single-modality variant): no attention to read")
    layers = model.fusion_transformer.layers
    heads = layers[0].self_attn.num_heads
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"attention layer {layer}: the fusion Transformer has {len(layers)} layer(s)")
    if not 0 <= head < heads:
        raise ValueError(f"attention head {head}: the fusion layers have {heads} head(s)")
    captured: list[torch.Tensor] = []

    def capture(module: torch.nn.TransformerEncoderLayer, args: tuple, kwargs: dict) -> None:
        source = args[0].float()  # (B, L, D)
        # (B, L), True or -inf at padded keys; under autocast the encoder made it a float mask in the autocast dtype,
        # which fp32 attention refuses to add to its fp32 scores.
        padding = _float32(kwargs.get("src_key_padding_mask"))
        # In fp32 under any autocast: bf16 weights would sum to one only within about 1e-2.
        with torch.no_grad(), torch.autocast(source.device.type, enabled=False):
            _, weights = module.self_attn(
                source,
                source,
                source,
                attn_mask=_float32(kwargs.get("src_mask")),
                key_padding_mask=padding,
                need_weights=True,
                average_attn_weights=False,
            )  # (B, heads, L, L)
        captured.append(weights[:, head].cpu())

    handle = layers[layer].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def _float32(mask: torch.Tensor | None) -> torch.Tensor | None:
    return mask.float() if mask is not None and mask.is_floating_point() else mask


@torch.no_grad()
def analyse_split(run: Run, epoch: int, split: str = "test", layer: int = -1, head: int = 0) -> SplitAnalysis:
    """Predictions, R~ and (for a fusing model) the attention of fusion layer `layer`, head `head`, of every post of
    `split`, with the model in eval mode as at `epoch`'s evaluation."""
    model = run.model
    run.set_phase(epoch, training=False)
    posts = run.dataset.splits[split]
    tokenizer = load_tokenizer(run.config.model.text_encoder) if run.config.model.uses_text else None
    count = len(posts)
    predictions = np.zeros(count, dtype=np.int64)
    representations = np.zeros((count, model.width), dtype=np.float32)
    attention: list[PostAttention | None] = [None] * count
    fuses = model.fusion_transformer is not None
    grid = round((model.image_token_count - 1) ** 0.5) if fuses else 0  # p, from P = p*p + 1
    watch = fusion_attention(model, layer, head) if fuses else contextlib.nullcontext([])
    with watch as captured:
        for batch in run.loader(split, epoch):
            batch = batch.to(run.device)
            with run.autocast:
                outputs = model(run.encoded(batch.original, epoch))
            indices = batch.indices.cpu().numpy()
            predictions[indices] = model.predictions(outputs.logits).cpu().numpy()
            representations[indices] = outputs.representation.float().cpu().numpy()
            if fuses:
                weights = captured.pop()  # (B, S+P, S+P)
                text_mask = batch.original.attention_mask.bool().cpu()  # (B, S)
                for row, index in enumerate(indices):
                    attention[index] = post_attention(weights[row], text_mask[row], batch, row, tokenizer, grid)
    return SplitAnalysis(
        split=split,
        label_names=list(run.dataset.spec.label_names),
        ids=[post.id for post in posts],
        texts=[post.text for post in posts],
        image_paths=[post.image_path for post in posts],
        labels=np.array([post.label for post in posts], dtype=np.int64),
        predictions=predictions,
        representations=representations,
        attention=[item for item in attention if item is not None],
        attention_layer=(layer % len(model.fusion_transformer.layers)) if fuses else None,
        attention_head=head if fuses else None,
    )


def post_attention(weights: torch.Tensor, text_mask: torch.Tensor, batch, row: int, tokenizer, grid: int):
    """One post's rows (text queries) over its valid keys: its own text tokens, then every image token."""
    width = text_mask.shape[0]  # S, the batch's padded text length; image tokens follow at S, S+1, ...
    keys = torch.cat([text_mask, torch.ones(weights.shape[1] - width, dtype=torch.bool)])  # (S+P,)
    rows = weights[:width][text_mask][:, keys]  # (n, n + P)
    ids = batch.original.input_ids[row].cpu()[text_mask]
    return PostAttention(tokens=tokenizer.convert_ids_to_tokens(ids.tolist()), rows=rows.numpy(), grid=grid)


def disagreements(full: SplitAnalysis, text_only: SplitAnalysis) -> list[int]:
    """The posts (indices into the split) on which the two models predict differently: the case study's rows."""
    if full.ids != text_only.ids:
        raise ValueError(
            f"the two analyses cover different posts of {full.split!r} ({len(full.ids)} and {len(text_only.ids)}): "
            "both models must be trained on the same data set"
        )
    return [int(index) for index in np.flatnonzero(full.predictions != text_only.predictions)]


def projection(representations: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE of the representations (N, D) -> (N, 2), seeded."""
    from sklearn.manifold import TSNE

    count = len(representations)
    if count < 3:
        raise ValueError(f"a t-SNE needs at least 3 posts, the split has {count}")
    # Perplexity must stay below the number of points; 30 is scikit-learn's default for larger sets.
    perplexity = min(30.0, (count - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        representations.astype(np.float64)
    )
