"""CLMLF (Li et al., Findings of NAACL 2022), top-down in the paper's order.

B batch, S text tokens, P image tokens (p*p regions + 1 pooled), E the text encoder's width, D the fusion width (E
unless model.fusion_width says otherwise), C image feature channels. The model returns named outputs and computes
no loss (see `losses.py`).

Either modality's encoder output may be passed in precomputed (a study's feature cache): `text_states`
instead of token ids, `image_features` instead of pixels. Frozen encoders then never run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from clmlf.config import ConfigError, ModelConfig
from clmlf.dropout import use_fast_cpu_dropout
from clmlf.encoders import EncoderUnavailable, ImageBackbone, load_text_encoder, text_encoder_source, text_encoder_width
from clmlf.precision import in_fp32


@dataclass
class ModelInputs:
    attention_mask: torch.Tensor | None = None  # (B, S), 1 for real tokens
    input_ids: torch.Tensor | None = None  # (B, S)
    token_type_ids: torch.Tensor | None = None  # (B, S), BERT's segment ids; None: all segment 0
    text_states: torch.Tensor | None = None  # (B, S, E), a frozen text encoder's output
    images: torch.Tensor | None = None  # (B, 3, H, W)
    image_features: torch.Tensor | None = None  # (B, C, p, p), a frozen image backbone's output

    def map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor]) -> ModelInputs:
        """The same inputs with `function` applied to every tensor present."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return ModelInputs(**{name: None if value is None else function(value) for name, value in values.items()})


@dataclass
class ModelOutputs:
    logits: torch.Tensor  # (B, outputs): the data set's classes, or model.classifier_outputs
    representation: torch.Tensor  # R~ (B, D), the attention-pooled fused sequence
    lbcl_projection: torch.Tensor  # (B, D), head of the label-based task (and the anchor side of DBCL)
    dbcl_projection: torch.Tensor  # (B, D), head applied to the augmented view in DBCL


def text_projection(text_width: int, width: int) -> nn.Sequential:
    """Linear(E, D) + GELU on every text token state (pads included) before fusion: the original code's (E = D),
    and the way into a fusion width other than the text encoder's, as the image regions' Eq. 1 projection."""
    return nn.Sequential(nn.Linear(text_width, width), nn.GELU())


class ImageTokens(nn.Module):
    """Eq. 1: project the feature map's regions to D and prepend one pooled-image token (B, C, p, p) -> (B, P, D)."""

    def __init__(self, channels: int, width: int, layout: str = "regions"):
        super().__init__()
        self.layout = layout
        self.regions = nn.Sequential(nn.Linear(channels, width), nn.GELU())
        self.pooled = nn.Sequential(nn.Linear(channels, width), nn.GELU())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels = features.shape[:2]
        if self.layout == "regions":
            regions = features.flatten(2).transpose(1, 2)  # (B, C, p*p) -> (B, p*p, C)
        else:
            # The original code's view: (B, C, p, p) read as (B, p*p, C) in memory order, channels not moved last.
            regions = features.reshape(batch, -1, channels)  # (B, p*p, C), each row mixing channels and positions
        pooled = self.pooled(features.mean(dim=(2, 3))).unsqueeze(1)  # (B, C) -> (B, 1, D)
        return torch.cat([pooled, self.regions(regions)], dim=1)  # (B, 1 + p*p, D)


def transformer_layers(config: ModelConfig, width: int, layers: int) -> nn.TransformerEncoder:
    """Post-LN encoder layers: attention and feed-forward blocks, each added to its input and then normalised.

    With layer_norm_eps 1e-12 and no feed-forward dropout this is exactly a BERT layer, the original code's."""
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=config.attention_heads(width),
        dim_feedforward=config.feedforward_multiplier * width,
        dropout=config.dropout,
        activation="gelu",
        layer_norm_eps=config.layer_norm_eps,
        batch_first=True,
    )
    if not config.feedforward_dropout:
        layer.dropout = nn.Identity()  # the one between linear1 and linear2; residual dropouts stay
    # Nested tensors would return padded positions as zeros in eval but not in training; keep both the same.
    stack = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
    if config.layer_init == "original":
        for clone in stack.layers:  # deep copies of `layer`, all the same weights until drawn again here
            initialise_like_linear_layers(clone)
    return stack


def initialise_like_linear_layers(layer: nn.TransformerEncoderLayer) -> None:
    """Every weight and bias of `layer` drawn afresh as nn.Linear initialises its own, as in the original's BERT-style
    layers, where query, key, value and output projections are separate nn.Linear(D, D) that nothing initialises
    again. PyTorch's layer instead draws the stacked query/key/value weight (3D, D) xavier-uniform and zeroes its
    bias and the output projection's."""
    attention = layer.self_attn
    # kaiming_uniform_(a=sqrt(5)), nn.Linear's rule, bounds each weight by 1/sqrt(fan_in) and fan_in is D for the
    # stacked (3D, D) weight as for each of its three (D, D) blocks: the same draw as three separate layers.
    nn.init.kaiming_uniform_(attention.in_proj_weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(attention.in_proj_weight.shape[1])
    nn.init.uniform_(attention.in_proj_bias, -bound, bound)
    for linear in (attention.out_proj, layer.linear1, layer.linear2):
        linear.reset_parameters()
    for norm in (layer.norm1, layer.norm2):
        norm.reset_parameters()


class AttentionPooling(nn.Module):
    """Eq. 6-8: a two-layer MLP scores every token, a softmax over the valid ones weights their sum."""

    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, 1))

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # The scores in fp32 under any autocast: in bf16 the weights of a long post would each be rounded by up to
        # 2^-8 of themselves, and R~ with them.
        scores = self.score(tokens).squeeze(-1).float()  # (B, L, D) -> (B, L)
        # The paper typesets Eq. 7 wrongly; the intended operation is a softmax over the valid tokens only.
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1).unsqueeze(-1)  # (B, L, 1)
        return (weights * tokens.float()).sum(dim=1)  # (B, D), fp32


class Classifier(nn.Module):
    """Eq. 9: dropout, D -> D/2, GELU, -> classes."""

    def __init__(self, width: int, classes: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, classes)
        )

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        return self.layers(representation)


def projection_head(width: int, init_scale: float) -> nn.Sequential:
    """The contrastive tasks' projection heads (the original code has them; the paper does not).

    The output layer starts at `init_scale` times PyTorch's default initialisation. At the default scale the
    unnormalised similarities r r^T / tau start far apart, so both contrastive losses start far above log B, the
    value they take when every projection is the same; their gradient then outweighs L_sc's by orders of magnitude
    and points at exactly that, which a deep post-LN fusion stack reaches within a few steps and never leaves (the
    fused representation no longer depends on the input). Near zero, the losses start at log B and L_sc shapes the
    representation first.
    """
    head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
    with torch.no_grad():
        head[-1].weight.mul_(init_scale)
        head[-1].bias.mul_(init_scale)
    return head


class CLMLF(nn.Module):
    def __init__(self, config: ModelConfig, classes: int):
        super().__init__()
        self.config = config
        self.text_encoder = load_text_encoder(config.text_encoder) if config.uses_text else None
        # E, the text encoder's width, fixes the fusion width D unless model.fusion_width sets it.
        text_width = self.text_encoder.config.hidden_size if self.text_encoder is not None else _width_from_name(config)
        width = config.fusion_width or text_width
        heads_problem = config.heads_problem(width)
        if heads_problem:
            raise ConfigError(f"model.heads: {heads_problem}")
        self.text_width, self.width = text_width, width
        projects_text = config.text_projection or width != text_width
        self.text_projection = text_projection(text_width, width) if config.uses_text and projects_text else None
        if config.uses_images:
            self.image_backbone = ImageBackbone(config.image_encoder, config.image_weights, config.image_size)
            self.image_tokens = ImageTokens(self.image_backbone.channels, width, config.image_token_layout)
            # No layers: the region tokens go straight on (the image-only baseline pools them directly).
            self.image_transformer = (
                transformer_layers(config, width, config.image_layers) if config.image_layers else None
            )
        else:
            self.image_backbone = None
        # Fusion exists only when both modalities do; the single-modality rows pool their own tokens.
        self.fusion_transformer = (
            transformer_layers(config, width, config.fusion_layers) if config.uses_text and config.uses_images else None
        )
        self.attention_pooling = AttentionPooling(width)
        if config.classifier_outputs and config.classifier_outputs < classes:
            raise ConfigError(
                f"model.classifier_outputs: {config.classifier_outputs} outputs cannot score {classes} classes"
            )
        self.classes = classes
        self.classifier = Classifier(width, config.classifier_outputs or classes, config.dropout)
        self.lbcl_head = projection_head(width, config.projection_init_scale)
        self.dbcl_head = projection_head(width, config.projection_init_scale)
        # Same dropout, cheaper masks on CPU (see clmlf/dropout.py).
        use_fast_cpu_dropout(self)

    @property
    def image_token_count(self) -> int:
        return self.image_backbone.token_count if self.image_backbone is not None else 0

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """T (B, S, E). token_type_ids (B, S): 1 on a sentence-aspect pair's aspect part, else 0."""
        # Passed only when there are segments: some encoders (DistilBERT) take no such argument.
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, **segments).last_hidden_state

    def forward(self, inputs: ModelInputs) -> ModelOutputs:
        sequence: list[torch.Tensor] = []
        valid: list[torch.Tensor] = []
        if self.config.uses_text:
            text = inputs.text_states
            if text is None:
                text = self.encode_text(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids)  # (B, S, E)
            if self.text_projection is not None:
                text = self.text_projection(text)  # (B, S, E) -> (B, S, D)
            sequence.append(text)
            valid.append(inputs.attention_mask.bool())  # (B, S)
        if self.config.uses_images:
            features = inputs.image_features
            if features is None:
                features = self.image_backbone(inputs.images)  # (B, C, p, p)
            image = self.image_tokens(features)  # (B, P, D)
            if self.image_transformer is not None:
                image = self.image_transformer(image)  # Eq. 2-3
            sequence.append(image)
            valid.append(torch.ones(image.shape[:2], dtype=torch.bool, device=image.device))
        tokens = torch.cat(sequence, dim=1)  # (B, S+P, D)
        mask = torch.cat(valid, dim=1)  # (B, S+P)
        if self.fusion_transformer is not None:
            tokens = self.fusion_transformer(tokens, src_key_padding_mask=~mask)  # Eq. 4-5
        representation = self.attention_pooling(tokens, mask)  # (B, D)
        return ModelOutputs(
            logits=self.classifier(representation),
            representation=representation,
            # fp32 under any autocast: the projections become similarities divided by tau (0.07 in the paper),
            # which bf16's 8-bit mantissa would round visibly.
            lbcl_projection=in_fp32(self.lbcl_head)(representation),
            dbcl_projection=in_fp32(self.dbcl_head)(representation),
        )

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """The best of the data set's classes (B,); a classifier with more outputs never predicts a class that
        does not exist."""
        return logits[:, : self.classes].argmax(dim=-1)


def _width_from_name(config: ModelConfig) -> int:
    width = text_encoder_width(config.text_encoder)
    if width is None:
        from transformers import AutoConfig

        try:
            width = AutoConfig.from_pretrained(text_encoder_source(config.text_encoder)).hidden_size
        except (OSError, ValueError) as error:
            raise EncoderUnavailable(f"model.text_encoder: cannot read {config.text_encoder!r}: {error}") from error
    return width
