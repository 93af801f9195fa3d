"""Checkpoints of the original CLMLF code: its parameter names and shapes (written out below from its model file)
convert onto our model under the `original` preset; bad files get one error that lists every problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from fixtures import write_dataset
from transformers import AutoConfig, BertModel

from clmlf.config import build_config
from clmlf.encoders import TEXT_ENCODERS
from clmlf.evaluate import evaluate_checkpoint
from clmlf.model import CLMLF
from clmlf.original_checkpoint import OriginalCheckpointError, convert_state_dict, read_state_dict

REPOSITORY = Path(__file__).resolve().parents[1]
TEXT = "fuse_model.text_model.model."
# A tiny original model: tiny-bert's width D = 64 (its feed-forward F = 128), ResNet-18 (C = 512), two fusion
# layers and one image layer.
D, F, C = 64, 128, 512
FUSION_LAYERS, IMAGE_LAYERS = 2, 1
TINY_ORIGINAL = {
    "model.text_encoder": "tiny-bert",
    "model.image_encoder": "resnet18",
    "model.image_weights": "none",
    "model.image_size": 64,
    "model.heads": 1,  # the original's D / 64
    "model.feedforward_multiplier": F // D,
    "model.fusion_layers": FUSION_LAYERS,
    "model.image_layers": IMAGE_LAYERS,
}


def bert_layer_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    """One layer of the original's `RobertaEncoder` (a BERT layer) at width D."""
    shapes = {}
    for name in ("query", "key", "value"):
        shapes |= {f"{prefix}attention.self.{name}.weight": (D, D), f"{prefix}attention.self.{name}.bias": (D,)}
    return shapes | {
        f"{prefix}attention.output.dense.weight": (D, D),
        f"{prefix}attention.output.dense.bias": (D,),
        f"{prefix}attention.output.LayerNorm.weight": (D,),
        f"{prefix}attention.output.LayerNorm.bias": (D,),
        f"{prefix}intermediate.dense.weight": (F, D),
        f"{prefix}intermediate.dense.bias": (F,),
        f"{prefix}output.dense.weight": (D, F),
        f"{prefix}output.dense.bias": (D,),
        f"{prefix}output.LayerNorm.weight": (D,),
        f"{prefix}output.LayerNorm.bias": (D,),
    }


def linear(prefix: str, outputs: int, inputs: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (outputs, inputs), f"{prefix}.bias": (outputs,)}


def original_fusion_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter the original's model file defines outside its two encoders, with its shape."""
    shapes = {
        **linear("fuse_model.text_change.0", D, D),
        **linear("fuse_model.image_change.0", D, C),
        **linear("fuse_model.image_cls_change.0", D, C),
        **linear("fuse_model.output_attention.0", D // 2, D),
        **linear("fuse_model.output_attention.2", 1, D // 2),
        **linear("output_classify.1", D // 2, D),
        **linear("output_classify.3", 3, D // 2),
        **linear("orgin_linear_change.0", D, D),
        **linear("orgin_linear_change.2", D, D),
        **linear("augment_linear_change.0", D, D),
        **linear("augment_linear_change.2", D, D),
        # Built and never called: a classifier inside the fusion model, a LayerNorm and a PyTorch Transformer.
        **linear("fuse_model.output_classify.1", D // 2, D),
        **linear("fuse_model.output_classify.3", 3, D // 2),
        "fuse_model.transformer_embedding_layernorm.0.weight": (D,),
        "fuse_model.transformer_embedding_layernorm.0.bias": (D,),
    }
    for layer in range(FUSION_LAYERS):
        shapes |= bert_layer_shapes(f"fuse_model.text_image_encoder.layer.{layer}.")
        prefix = f"fuse_model.transformer_encoder.layers.{layer}."
        shapes |= {f"{prefix}self_attn.in_proj_weight": (3 * D, D), f"{prefix}self_attn.in_proj_bias": (3 * D,)}
        shapes |= linear(f"{prefix}self_attn.out_proj", D, D) | linear(f"{prefix}linear1", 4 * D, D)
        shapes |= linear(f"{prefix}linear2", D, 4 * D)
        shapes |= {f"{prefix}norm{n}.{kind}": (D,) for n in (1, 2) for kind in ("weight", "bias")}
    for layer in range(IMAGE_LAYERS):
        shapes |= bert_layer_shapes(f"fuse_model.image_encoder.layer.{layer}.")
    return shapes


def original_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict as the original saves it: BertForPreTraining's `.bert` (pooler included, and the position_ids
    buffer that transformers 4.10 saved) under text_model.model., torchvision's ResNet under image_model.resnet.
    and its children again under image_model.resnet_encoder., the rest from the shapes above."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) for name, shape in original_fusion_shapes().items()}
    entry = TEXT_ENCODERS["tiny-bert"]
    torch.manual_seed(seed)
    bert = BertModel(AutoConfig.from_pretrained(entry.folder(), **entry.random_init), add_pooling_layer=True)
    for name, value in bert.state_dict().items():
        state[f"fuse_model.text_model.model.{name}"] = value + 0.01 * torch.randn(value.shape, generator=generator)
    state["fuse_model.text_model.model.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    resnet = torchvision.models.resnet18(weights=None)
    children = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
    for name, value in resnet.state_dict().items():
        if value.is_floating_point():
            value = value + 0.01 * torch.randn(value.shape, generator=generator).abs()
        state[f"fuse_model.image_model.resnet.{name}"] = value
        child, _, rest = name.partition(".")
        if child in children:
            state[f"fuse_model.image_model.resnet_encoder.{children[child]}.{rest}"] = value
    return state


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
    with pytest.raises(OriginalCheckpointError, match=r"notes\.pth: not a PyTorch state dict"):
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
