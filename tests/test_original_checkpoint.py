"""Checkpoints of the original CLMLF code: its parameter names and shapes (written out below from its model file)
convert onto our model under the `original` preset, and give the logits of the original's model on the same weights;
bad files get one error that lists every problem."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision
from fixtures import write_dataset
from torch import nn
from transformers import AutoConfig, BertModel
from transformers.models.bert.modeling_bert import BertEncoder

from clmlf.config import TrainConfig, build_config
from clmlf.convert import main as convert_main
from clmlf.encoders import TEXT_ENCODERS, load_tokenizer
from clmlf.evaluate import evaluate_checkpoint
from clmlf.model import CLMLF, ModelInputs
from clmlf.original_checkpoint import IGNORED, OriginalCheckpointError, convert_state_dict, read_state_dict
from clmlf.train import CHECKPOINT_FILE

REPOSITORY = Path(__file__).resolve().parents[1]
TEXT = "fuse_model.text_model.model."
# ResNet-18's children by their index in the original's `resnet_encoder` (everything before the pooling).
RESNET_CHILDREN = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
# The original's logits, reproduced after conversion (max absolute difference).
LOGIT_TOLERANCE = 2e-6
TEXTS = ["what a lovely sunny day at the beach, again and again", "meh"]


def text_config(text_encoder: str):
    """A fresh copy of the text encoder's config (building a model changes its config)."""
    entry = TEXT_ENCODERS[text_encoder]
    return AutoConfig.from_pretrained(entry.folder(), **(entry.random_init or {}))


@dataclass(frozen=True)
class OriginalShape:
    """What fixes the shapes of an original checkpoint. The width D is its `tran_dim`, here the text encoder's;
    the feed-forward width F is the text encoder's, whose config the original copies for its image and fusion
    layers; C = 512 are ResNet-18's channels."""

    text_encoder: str
    fusion_layers: int = 2
    image_layers: int = 1
    channels: int = 512

    @property
    def width(self) -> int:
        return text_config(self.text_encoder).hidden_size

    @property
    def feedforward(self) -> int:
        return text_config(self.text_encoder).intermediate_size

    @property
    def overrides(self) -> dict[str, object]:
        """Our settings for it on top of the `original` preset; the heads are the preset's (width // 64)."""
        return {
            "model.text_encoder": self.text_encoder,
            "model.image_encoder": "resnet18",
            "model.image_weights": "none",
            "model.image_size": 64,
            "model.feedforward_multiplier": self.feedforward // self.width,
            "model.fusion_layers": self.fusion_layers,
            "model.image_layers": self.image_layers,
        }


# tiny-bert: D = 64 (one head by the original's rule), F = 128. MiniLM: D = 384 (6 heads), F = 1536.
TINY = OriginalShape("tiny-bert")
MINILM = OriginalShape("all-minilm-l6-v2")
D, F, C = TINY.width, TINY.feedforward, TINY.channels
FUSION_LAYERS, IMAGE_LAYERS = TINY.fusion_layers, TINY.image_layers
TINY_ORIGINAL = TINY.overrides


def bert_layer_shapes(prefix: str, width: int = D, feedforward: int = F) -> dict[str, tuple[int, ...]]:
    """One layer of the original's `RobertaEncoder` (a BERT layer)."""
    shapes = {}
    for name in ("query", "key", "value"):
        shapes |= {
            f"{prefix}attention.self.{name}.weight": (width, width),
            f"{prefix}attention.self.{name}.bias": (width,),
        }
    return shapes | {
        f"{prefix}attention.output.dense.weight": (width, width),
        f"{prefix}attention.output.dense.bias": (width,),
        f"{prefix}attention.output.LayerNorm.weight": (width,),
        f"{prefix}attention.output.LayerNorm.bias": (width,),
        f"{prefix}intermediate.dense.weight": (feedforward, width),
        f"{prefix}intermediate.dense.bias": (feedforward,),
        f"{prefix}output.dense.weight": (width, feedforward),
        f"{prefix}output.dense.bias": (width,),
        f"{prefix}output.LayerNorm.weight": (width,),
        f"{prefix}output.LayerNorm.bias": (width,),
    }


def linear(prefix: str, outputs: int, inputs: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (outputs, inputs), f"{prefix}.bias": (outputs,)}


def original_fusion_shapes(shape: OriginalShape = TINY) -> dict[str, tuple[int, ...]]:
    """Every parameter the original's model file defines outside its two encoders, with its shape."""
    width, channels = shape.width, shape.channels
    shapes = {
        **linear("fuse_model.text_change.0", width, width),
        **linear("fuse_model.image_change.0", width, channels),
        **linear("fuse_model.image_cls_change.0", width, channels),
        **linear("fuse_model.output_attention.0", width // 2, width),
        **linear("fuse_model.output_attention.2", 1, width // 2),
        **linear("output_classify.1", width // 2, width),
        **linear("output_classify.3", 3, width // 2),
        **linear("orgin_linear_change.0", width, width),
        **linear("orgin_linear_change.2", width, width),
        **linear("augment_linear_change.0", width, width),
        **linear("augment_linear_change.2", width, width),
        # Built and never called: a classifier inside the fusion model, a LayerNorm and a PyTorch Transformer.
        **linear("fuse_model.output_classify.1", width // 2, width),
        **linear("fuse_model.output_classify.3", 3, width // 2),
        "fuse_model.transformer_embedding_layernorm.0.weight": (width,),
        "fuse_model.transformer_embedding_layernorm.0.bias": (width,),
    }
    for layer in range(shape.fusion_layers):
        shapes |= bert_layer_shapes(f"fuse_model.text_image_encoder.layer.{layer}.", width, shape.feedforward)
        prefix = f"fuse_model.transformer_encoder.layers.{layer}."
        shapes |= {
            f"{prefix}self_attn.in_proj_weight": (3 * width, width),
            f"{prefix}self_attn.in_proj_bias": (3 * width,),
        }
        shapes |= linear(f"{prefix}self_attn.out_proj", width, width) | linear(f"{prefix}linear1", 4 * width, width)
        shapes |= linear(f"{prefix}linear2", width, 4 * width)
        shapes |= {f"{prefix}norm{n}.{kind}": (width,) for n in (1, 2) for kind in ("weight", "bias")}
    for layer in range(shape.image_layers):
        shapes |= bert_layer_shapes(f"fuse_model.image_encoder.layer.{layer}.", width, shape.feedforward)
    return shapes


def random_parameter(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Weights at the scale of trained ones: a matrix ~ 1/sqrt(fan_in), a vector (bias, LayerNorm) ~ 0.1."""
    values = torch.randn(shape, generator=generator)
    return values / shape[-1] ** 0.5 if len(shape) > 1 else 0.1 * values


def original_state_dict(seed: int = 0, shape: OriginalShape = TINY) -> dict[str, torch.Tensor]:
    """A state dict as the original saves it: BertForPreTraining's `.bert` (pooler included, and the position_ids
    buffer that transformers 4.10 saved) under text_model.model., torchvision's ResNet under image_model.resnet.
    and its children again under image_model.resnet_encoder., the rest from the shapes above."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: random_parameter(size, generator) for name, size in original_fusion_shapes(shape).items()}
    for name in state:
        if name.endswith(("LayerNorm.weight", "norm1.weight", "norm2.weight", "layernorm.0.weight")):
            state[name] += 1.0
    torch.manual_seed(seed)
    bert = BertModel(text_config(shape.text_encoder), add_pooling_layer=True)
    for name, value in bert.state_dict().items():
        state[f"{TEXT}{name}"] = value + 0.01 * torch.randn(value.shape, generator=generator)
    state[f"{TEXT}embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    resnet = torchvision.models.resnet18(weights=None)
    for name, value in resnet.state_dict().items():
        if value.is_floating_point():
            value = value + 0.01 * torch.randn(value.shape, generator=generator).abs()
        state[f"fuse_model.image_model.resnet.{name}"] = value
        child, _, rest = name.partition(".")
        if child in RESNET_CHILDREN:
            state[f"fuse_model.image_model.resnet_encoder.{RESNET_CHILDREN[child]}.{rest}"] = value
    return state


def container(**modules: nn.Module) -> nn.Module:
    holder = nn.Module()
    for name, module in modules.items():
        holder.add_module(name, module)
    return holder


def bert_style_layers(shape: OriginalShape, layers: int) -> BertEncoder:
    """The original's `RobertaEncoder` (BERT's encoder, copied): built from a copy of the text encoder's config
    with its own width, `tran_dim // 64` heads and layer count, as the original's FuseModel does."""
    config = text_config(shape.text_encoder)
    config.num_attention_heads = shape.width // 64
    config.hidden_size = shape.width
    config.num_hidden_layers = layers
    config._attn_implementation = "eager"
    return BertEncoder(config)


class OriginalModel(nn.Module):
    """The original's CLModel in eval mode, module for module under its names (model.py of Link-Li/CLMLF, with
    image_output_type 'all' and fuse_type 'att', as its training scripts run it)."""

    def __init__(self, shape: OriginalShape):
        super().__init__()
        width, channels = shape.width, shape.channels
        resnet = torchvision.models.resnet18(weights=None)
        text_width = text_config(shape.text_encoder).hidden_size
        self.fuse_model = container(
            text_model=container(model=BertModel(text_config(shape.text_encoder))),
            image_model=container(resnet=resnet, resnet_encoder=nn.Sequential(*list(resnet.children())[:-2])),
            text_image_encoder=bert_style_layers(shape, shape.fusion_layers),
            image_encoder=bert_style_layers(shape, shape.image_layers),
            text_change=nn.Sequential(nn.Linear(text_width, width), nn.GELU()),
            image_change=nn.Sequential(nn.Linear(channels, width), nn.GELU()),
            image_cls_change=nn.Sequential(nn.Linear(channels, width), nn.GELU()),
            transformer_embedding_layernorm=nn.Sequential(nn.LayerNorm(width), nn.Dropout(0.1)),
            transformer_encoder=nn.TransformerEncoder(
                nn.TransformerEncoderLayer(width, width // 64, 4 * width),
                shape.fusion_layers,
                enable_nested_tensor=False,
            ),
            output_attention=nn.Sequential(nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, 1)),
            output_classify=classifier(width),
        )
        self.orgin_linear_change = projection(width)
        self.augment_linear_change = projection(width)
        self.output_classify = classifier(width)

    def forward(self, input_ids, attention_mask, images) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 3), the pooled representation (B, D)), as FuseModel.forward and CLModel.forward compute them."""
        fuse = self.fuse_model
        text = fuse.text_change(fuse.text_model.model(input_ids, attention_mask=attention_mask).last_hidden_state)
        feature_map = fuse.image_model.resnet_encoder(images)  # (B, C, p, p)
        pooled = torch.flatten(fuse.image_model.resnet.avgpool(feature_map), 1)  # (B, C)
        regions = feature_map.contiguous().view(feature_map.size(0), -1, feature_map.size(1))  # (B, p*p, C)
        image = torch.cat((fuse.image_cls_change(pooled).unsqueeze(1), fuse.image_change(regions)), dim=1)
        image = fuse.image_encoder(image).last_hidden_state
        mask = torch.cat((attention_mask, torch.ones(image.shape[:2], dtype=attention_mask.dtype)), dim=1)
        additive = (1.0 - mask[:, None, None, :].to(torch.float32)) * -10000.0  # (B, 1, 1, S+P)
        fused = fuse.text_image_encoder(torch.cat((text, image), dim=1), attention_mask=additive).last_hidden_state
        alpha = fuse.output_attention(fused).squeeze(-1).masked_fill(mask == 0, -1e9).softmax(dim=-1)
        representation = (alpha.unsqueeze(-1) * fused).sum(dim=1)
        return self.output_classify(representation), representation


def classifier(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(0.1), nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, 3))


def projection(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))


def original_model(state: dict[str, torch.Tensor], shape: OriginalShape) -> OriginalModel:
    """The original's model holding `state`: every name of the file loads, except the position_ids buffer that
    transformers no longer saves."""
    model = OriginalModel(shape).eval()
    loaded = model.load_state_dict(state, strict=False)
    assert loaded.missing_keys == [] and loaded.unexpected_keys == [f"{TEXT}embeddings.position_ids"]
    return model


def example_inputs(text_encoder: str) -> ModelInputs:
    """Two texts of different lengths in one padded batch, two 64 px images."""
    encoded = load_tokenizer(text_encoder)(TEXTS, padding=True, return_tensors="pt")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    return ModelInputs(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], images=images)


@functools.cache
def original_case(shape: OriginalShape) -> tuple[dict[str, torch.Tensor], ModelInputs, torch.Tensor, torch.Tensor]:
    """An original checkpoint of this shape, inputs, and the original model's logits and representation on them."""
    state = original_state_dict(seed=1, shape=shape)
    inputs = example_inputs(shape.text_encoder)
    with torch.no_grad():
        logits, representation = original_model(state, shape)(inputs.input_ids, inputs.attention_mask, inputs.images)
    return state, inputs, logits, representation


def converted(state: dict[str, torch.Tensor], shape: OriginalShape, settings: dict[str, object]) -> CLMLF:
    """Our model under the `original` preset (plus `settings`) holding the converted `state`, in eval mode."""
    config = build_config("demo", "original", shape.overrides | settings)
    model = CLMLF(config.model, classes=3).eval()
    model.load_state_dict(convert_state_dict(state, model, Path("original.pth")).state, strict=True)
    return model


def attention_heads(model: CLMLF) -> set[int]:
    stacks = (model.image_transformer, model.fusion_transformer)
    return {layer.self_attn.num_heads for stack in stacks for layer in stack.layers}


@pytest.fixture(scope="module")
def model() -> CLMLF:
    return CLMLF(build_config("demo", "original", TINY_ORIGINAL).model, classes=3)


def test_the_original_names_convert_without_a_missing_or_unexpected_key(model):
    state = original_state_dict()
    conversion = convert_state_dict(state, model, Path("original.pth"))
    assert set(conversion.state) == set(model.state_dict())
    model.load_state_dict(conversion.state, strict=True)
    layer = "fuse_model.text_image_encoder.layer.1.attention.self."
    torch.testing.assert_close(
        conversion.state["fusion_transformer.layers.1.self_attn.in_proj_weight"],
        torch.cat([state[f"{layer}{name}.weight"] for name in ("query", "key", "value")]),
    )
    pairs = {
        "fusion_transformer.layers.0.linear1.weight": "fuse_model.text_image_encoder.layer.0.intermediate.dense.weight",
        "image_transformer.layers.0.norm2.bias": "fuse_model.image_encoder.layer.0.output.LayerNorm.bias",
        "image_backbone.trunk.7.1.bn2.running_var": "fuse_model.image_model.resnet_encoder.7.1.bn2.running_var",
        "text_encoder.embeddings.LayerNorm.weight": "fuse_model.text_model.model.embeddings.LayerNorm.weight",
        "text_encoder.encoder.layer.1.output.dense.bias": f"{TEXT}encoder.layer.1.output.dense.bias",
        "text_projection.0.weight": "fuse_model.text_change.0.weight",
        "image_tokens.regions.0.weight": "fuse_model.image_change.0.weight",
        "image_tokens.pooled.0.bias": "fuse_model.image_cls_change.0.bias",
        "attention_pooling.score.2.weight": "fuse_model.output_attention.2.weight",
        "classifier.layers.3.weight": "output_classify.3.weight",
        "lbcl_head.2.bias": "orgin_linear_change.2.bias",
        "dbcl_head.0.weight": "augment_linear_change.0.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(conversion.state[ours], state[theirs]), ours
    # Everything left out is something the original builds and never uses for an output.
    ignored = {key.split(".")[1] if key.startswith("fuse_model.") else key.split(".")[0] for key in conversion.ignored}
    assert ignored == {
        "text_model",
        "image_model",
        "transformer_encoder",
        "transformer_embedding_layernorm",
        "output_classify",
    }
    assert all(
        key.startswith(("fuse_model.text_model.model.pooler.", "fuse_model.image_model.resnet.", "fuse_model.t"))
        or ".position_ids" in key
        or key.startswith("fuse_model.output_classify.")
        for key in conversion.ignored
    )


def test_bad_keys_are_listed_in_one_error(model):
    state = original_state_dict()
    del state["fuse_model.image_encoder.layer.0.attention.self.key.bias"]
    state["fuse_model.text_image_encoder.layer.2.output.dense.weight"] = torch.zeros(D, F)  # a third fusion layer
    state["output_classify.3.weight"] = torch.zeros(2, D // 2)  # a two-class classifier
    state["fuse_model.image_model.resnet.conv1.weight"] = torch.zeros(64, 3, 7, 7)  # the copy no longer matches
    with pytest.raises(OriginalCheckpointError) as raised:
        convert_state_dict(state, model, Path("/runs/best-model.pth"))
    message = str(raised.value)
    assert message.startswith("/runs/best-model.pth: ") and "4 problems" in message
    assert "missing: fuse_model.image_encoder.layer.0.attention.self.key.bias" in message
    assert "unexpected: fuse_model.text_image_encoder.layer.2.output.dense.weight" in message
    assert (
        "wrong shape: output_classify.3.weight: (2, 32) in the file, our classifier.layers.3.weight needs (3, 32)"
        in message
    )
    assert "differs from its copy: fuse_model.image_model.resnet.conv1.weight" in message


def test_files_that_are_not_state_dicts_are_refused_by_name(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(OriginalCheckpointError, match=r"notes\.pth: not a PyTorch file"):
        read_state_dict(text)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(OriginalCheckpointError, match=r"list\.pth: not a state dict .* holds a list"):
        read_state_dict(listed)
    with pytest.raises(OriginalCheckpointError, match=r"missing\.pth: no such file"):
        read_state_dict(tmp_path / "missing.pth")
    # A DataParallel model's `module.` prefix is taken off.
    wrapped = tmp_path / "parallel.pth"
    torch.save({"module.output_classify.1.weight": torch.zeros(2, 2)}, wrapped)
    assert list(read_state_dict(wrapped)) == ["output_classify.1.weight"]


@pytest.mark.parametrize("shape", [TINY, MINILM], ids=["64-wide", "384-wide"])
def test_converted_checkpoints_give_the_original_models_logits_at_its_head_count(shape):
    # No head count set by hand: the preset's model.heads=0 is the original's width // 64 (1 at 64, 6 at 384; the
    # text encoders' own configs have 2 and 12).
    state, inputs, expected_logits, expected_representation = original_case(shape)
    model = converted(state, shape, {})
    assert model.config.heads == 0 and attention_heads(model) == {shape.width // 64}
    with torch.no_grad():
        outputs = model(inputs)
    torch.testing.assert_close(outputs.logits, expected_logits, atol=LOGIT_TOLERANCE, rtol=0)
    torch.testing.assert_close(outputs.representation, expected_representation, atol=LOGIT_TOLERANCE, rtol=0)
    assert expected_logits.abs().max() > 0.1  # logits of a size at which a wrong head count shows


def test_an_explicit_head_count_wins_over_the_original_rule():
    state, inputs, expected_logits, _ = original_case(MINILM)
    model = converted(state, MINILM, {"model.heads": 12})
    assert attention_heads(model) == {12}
    with torch.no_grad():
        logits = model(inputs).logits
    # The same weights read as 12 heads of 32 instead of the original's 6 of 64.
    assert (logits - expected_logits).abs().max() > 1e-2


def test_the_converter_prints_the_head_count_and_what_it_left_out(tmp_path, capsys):
    state = original_state_dict()
    checkpoint = tmp_path / "best-model.pth"
    torch.save(state, checkpoint)
    sets = [argument for key, value in TINY_ORIGINAL.items() for argument in ("--set", f"{key}={value}")]
    arguments = ["checkpoint", "--original", str(checkpoint), "--dataset", "demo", *sets]
    assert convert_main([*arguments, "--out", str(tmp_path / "rule")]) == 0
    printed = capsys.readouterr().out
    assert "image and fusion layers: 64 wide, attention heads 1 (the original code's width // 64)" in printed
    # Each kind of left-out tensor with its count, counted here from the file's names.
    resnet_copy = [key for key in state if key.startswith("fuse_model.image_model.resnet.")]
    expected = {
        "the ResNet's classifier, never called": 2,
        IGNORED["fuse_model.image_model.resnet."]: len(resnet_copy) - 2,
        "BERT's pooler, never called": 2,
        "the position_ids buffer of older transformers releases": 1,
        "a PyTorch Transformer, never called": 12 * FUSION_LAYERS,
        "a LayerNorm, never called": 2,
        "a classifier inside the fusion model, never called": 4,
    }
    for kind, count in expected.items():
        assert re.search(rf"^ +{count}  {re.escape(kind)}$", printed, re.MULTILINE), kind
    assert f"left out {sum(expected.values())} tensors that the original saves but never uses" in printed
    assert printed.rstrip().endswith(f"score it with: python -m clmlf.evaluate {tmp_path / 'rule'}")
    saved = torch.load(tmp_path / "rule" / CHECKPOINT_FILE, weights_only=True)
    assert saved["config"]["model.heads"] == 0 and len(saved["ignored_keys"]) == sum(expected.values())

    # --set model.heads wins over the rule, in the printed summary, the saved config and the model it builds.
    assert convert_main([*arguments, "--out", str(tmp_path / "set"), "--set", "model.heads=2"]) == 0
    assert "attention heads 2 (model.heads)" in capsys.readouterr().out
    saved = torch.load(tmp_path / "set" / CHECKPOINT_FILE, weights_only=True)
    assert saved["config"]["model.heads"] == 2
    rebuilt = CLMLF(TrainConfig.from_flat_dict(saved["config"]).model, classes=3)
    rebuilt.load_state_dict(saved["model"], strict=True)
    assert attention_heads(rebuilt) == {2}


@pytest.mark.slow
def test_convert_then_evaluate_on_the_command_line(tmp_path):
    state = original_state_dict()
    # A classifier that always says "neutral" (1): the evaluation must come from these weights, not fresh ones.
    state["output_classify.3.weight"] = torch.zeros(3, D // 2)
    state["output_classify.3.bias"] = torch.tensor([0.0, 5.0, 0.0])
    checkpoint = tmp_path / "best-model.pth"
    torch.save(state, checkpoint)
    root = tmp_path / "data"
    write_dataset(root, "demo")
    sets = [argument for key, value in TINY_ORIGINAL.items() for argument in ("--set", f"{key}={value}")]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    out = tmp_path / "converted"
    converted = subprocess.run(
        [sys.executable, "-m", "clmlf.convert", "checkpoint", "--original", str(checkpoint), "--dataset", "demo",
         "--out", str(out), "--data-root", str(root), *sets],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert f"python -m clmlf.evaluate {out}" in converted.stdout
    evaluated = subprocess.run(
        [sys.executable, "-m", "clmlf.evaluate", str(out)],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in evaluated.stdout.splitlines() if line.startswith(("dev:", "test:")))
    # 3 posts per split with labels 0, 1, 2: always predicting 1 is right once.
    assert '"dev/acc": 0.3333' in lines["dev"] and '"test/acc": 0.3333' in lines["test"]
    results = evaluate_checkpoint(out, log=lambda message: None)
    for split in ("dev", "test"):
        assert results[split][f"{split}/confusion_matrix"] == [[0, 1, 0], [0, 1, 0], [0, 1, 0]]
    bad = subprocess.run(
        [sys.executable, "-m", "clmlf.convert", "checkpoint", "--original", str(tmp_path / "nothing.pth"),
         "--dataset", "demo", "--out", str(tmp_path / "never"), *sets],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "nothing.pth: no such file" in bad.stderr
    assert not (tmp_path / "never").exists()
