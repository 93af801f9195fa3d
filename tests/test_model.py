"""The model and its encoders: padding, token counts and widths measured from the encoders, the variants, and
which parameters learn in each training phase."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torchvision
from fixtures import write_dataset
from torch import nn

from clmlf.config import ConfigError, ModelConfig, ablation_row, build_config
from clmlf.data import dataset_spec
from clmlf.encoders import (
    EncoderUnavailable,
    ImageBackbone,
    load_text_encoder,
    load_tokenizer,
    text_encoder_width,
)
from clmlf.losses import data_based_contrastive_loss, label_based_contrastive_loss
from clmlf.model import CLMLF, ModelInputs, projection_head
from clmlf.train import Run

TEXTS = ["what a lovely sunny day at the beach", "meh"]
FUSION_VARIANTS = ("full", "mlf", "mlf-lbcl", "mlf-dbcl")


def tiny_model_config(**changes) -> ModelConfig:
    config = build_config("demo", "tiny").model
    for name, value in changes.items():
        setattr(config, name, value)
    config.validate()
    return config


@functools.cache
def build_model(variant: str = "full", classes: int = 3) -> CLMLF:
    """Built once per module run; tests only read these models."""
    torch.manual_seed(0)
    return CLMLF(tiny_model_config(variant=variant), classes).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


@pytest.fixture(scope="module")
def text_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def images(count: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(3))


def with_extra_padding(
    ids: torch.Tensor, mask: torch.Tensor, pad_token_id: int, extra: int
) -> tuple[torch.Tensor, torch.Tensor]:
    pad_ids = torch.full((ids.shape[0], extra), pad_token_id, dtype=ids.dtype)
    return torch.cat([ids, pad_ids], dim=1), torch.cat([mask, torch.zeros_like(pad_ids)], dim=1)


@pytest.mark.parametrize("variant", ["full", "text-only"])
def test_padding_does_not_change_the_pooled_output(variant, tokenizer, text_batch):
    model = build_model(variant)
    ids, mask = text_batch
    # The short text is already padded once inside the batch; more pads must change nothing.
    assert (mask == 0).any()
    padded_ids, padded_mask = with_extra_padding(ids, mask, tokenizer.pad_token_id, extra=7)
    pixels = images() if variant == "full" else None
    with torch.no_grad():
        plain = model(ModelInputs(input_ids=ids, attention_mask=mask, images=pixels))
        padded = model(ModelInputs(input_ids=padded_ids, attention_mask=padded_mask, images=pixels))
    torch.testing.assert_close(padded.representation, plain.representation, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.logits, plain.logits, atol=1e-5, rtol=0)


def test_padding_is_masked_out_of_the_pooling(tokenizer, text_batch):
    # The same post alone (no pads) and inside a batch with a longer post must pool to the same vector.
    model = build_model("full")
    ids, mask = text_batch
    length = int(mask[1].sum())
    pixels = images()
    with torch.no_grad():
        batched = model(ModelInputs(input_ids=ids, attention_mask=mask, images=pixels))
        alone = model(ModelInputs(input_ids=ids[1:, :length], attention_mask=mask[1:, :length], images=pixels[1:]))
    torch.testing.assert_close(alone.representation[0], batched.representation[1], atol=1e-5, rtol=0)


def test_precomputed_encoder_outputs_give_the_same_outputs(text_batch):
    model = build_model("full")
    ids, mask = text_batch
    pixels = images()
    with torch.no_grad():
        from_raw = model(ModelInputs(input_ids=ids, attention_mask=mask, images=pixels))
        from_features = model(
            ModelInputs(
                attention_mask=mask,
                text_states=model.encode_text(ids, mask),
                image_features=model.image_backbone(pixels),
            )
        )
    torch.testing.assert_close(from_features.logits, from_raw.logits)
    torch.testing.assert_close(from_features.representation, from_raw.representation)


def test_segment_ids_change_the_output(tokenizer):
    # A sentence-aspect pair: the aspect part as segment 1 is another input than the same ids all in segment 0.
    model = build_model("text-only")
    encoded = tokenizer([TEXTS[0]], ["beach"], return_tensors="pt")
    ids, mask, segments = encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]
    assert segments.sum() == 2, "the aspect's word piece and the closing [SEP]"
    with torch.no_grad():
        paired = model(ModelInputs(input_ids=ids, attention_mask=mask, token_type_ids=segments))
        unpaired = model(ModelInputs(input_ids=ids, attention_mask=mask))
        all_zero = model(ModelInputs(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(segments)))
    assert not torch.allclose(paired.logits, unpaired.logits, atol=1e-4)
    torch.testing.assert_close(all_zero.logits, unpaired.logits)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
@pytest.mark.parametrize(("image_size", "grid"), [(64, 2), (96, 3)])
def test_image_token_counts_and_widths_come_from_the_encoder(name, image_size, grid):
    backbone = ImageBackbone(name, "none", image_size)
    expected_channels = 512 if name in ("resnet18", "resnet34") else 2048
    assert backbone.channels == expected_channels
    assert backbone.grid == grid
    assert backbone.token_count == grid * grid + 1
    with torch.no_grad():
        features = backbone.eval()(torch.zeros(1, 3, image_size, image_size))
    assert tuple(features.shape) == (1, expected_channels, grid, grid)


def test_resnet50_at_224_pixels_gives_fifty_tokens():
    assert ImageBackbone("resnet50", "none", 224).token_count == 50


def test_fusion_sees_text_tokens_then_image_tokens(text_batch):
    model = build_model("full")
    ids, mask = text_batch
    seen: list[torch.Size] = []
    hook = model.fusion_transformer.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    with torch.no_grad():
        model(ModelInputs(input_ids=ids, attention_mask=mask, images=images()))
    hook.remove()
    # 64 px through a ResNet gives a 2 x 2 map: 4 region tokens + 1 pooled token.
    assert model.image_token_count == 5
    assert seen == [torch.Size([2, ids.shape[1] + 5, model.width])]
    assert model.width == 64  # tiny-bert's hidden size, not a literal in the model


@pytest.mark.parametrize("variant", FUSION_VARIANTS)
def test_fusion_variants_have_both_encoders_and_the_fusion_transformer(variant, text_batch):
    model = build_model(variant)
    assert model.text_encoder is not None
    assert model.image_backbone is not None
    assert model.fusion_transformer is not None
    assert len(model.fusion_transformer.layers) == 1
    ids, mask = text_batch
    with torch.no_grad():
        outputs = model(ModelInputs(input_ids=ids, attention_mask=mask, images=images()))
    assert outputs.logits.shape == (2, 3)
    for projection in (outputs.representation, outputs.lbcl_projection, outputs.dbcl_projection):
        assert projection.shape == (2, 64)


def test_text_only_has_no_image_parts_and_needs_no_images(text_batch):
    model = build_model("text-only")
    assert model.image_backbone is None
    assert model.fusion_transformer is None
    assert model.image_token_count == 0
    assert not any(name.startswith(("image_", "fusion_")) for name, _ in model.named_parameters())
    ids, mask = text_batch
    with torch.no_grad():
        outputs = model(ModelInputs(input_ids=ids, attention_mask=mask))
    assert outputs.logits.shape == (2, 3)


def test_image_only_has_no_text_encoder_and_needs_no_text():
    model = build_model("image-only")
    assert model.text_encoder is None
    assert model.fusion_transformer is None
    # The fusion width still comes from the named text encoder.
    assert model.width == text_encoder_width("tiny-bert") == 64
    assert not any(name.startswith(("text_", "fusion_")) for name, _ in model.named_parameters())
    with torch.no_grad():
        outputs = model(ModelInputs(images=images()))
    assert outputs.logits.shape == (2, 3)
    assert outputs.representation.shape == (2, 64)


def test_a_fusion_width_of_its_own_projects_the_text_tokens(text_batch):
    torch.manual_seed(0)
    model = CLMLF(tiny_model_config(fusion_width=32), 3).eval()
    assert (model.text_width, model.width) == (64, 32)
    assert model.text_projection[0].weight.shape == (32, 64)
    assert model.fusion_transformer.layers[0].linear1.in_features == 32
    ids, mask = text_batch
    with torch.no_grad():
        outputs = model(ModelInputs(input_ids=ids, attention_mask=mask, images=images()))
    assert outputs.representation.shape == outputs.lbcl_projection.shape == (2, 32)
    # The paper's default: the text encoder's width, and no projection unless the original code's is asked for.
    assert build_model("full").text_projection is None
    with pytest.raises(ConfigError, match=r"^model\.heads: the fusion width 30 \(model\.fusion_width"):
        tiny_model_config(fusion_width=30, heads=4)
    with pytest.raises(ConfigError, match=r"^model\.fusion_width: must be >= 0"):
        tiny_model_config(fusion_width=-8)


def test_an_image_encoder_without_weights_is_the_same_whatever_the_run_seed():
    torch.manual_seed(1)
    first = ImageBackbone("resnet18", "none", 64)
    torch.manual_seed(2)
    state = torch.random.get_rng_state()
    second = ImageBackbone("resnet18", "none", 64)
    torch.testing.assert_close(first.trunk[0].weight, second.trunk[0].weight)
    # Its draws do not move the run's random stream, so the layers built after it still follow the run's seed.
    assert torch.equal(torch.random.get_rng_state(), state)


def test_hfm_gets_two_classes(text_batch):
    classes = dataset_spec("hfm").num_classes
    assert classes == 2
    model = build_model("full", classes=classes)
    ids, mask = text_batch
    with torch.no_grad():
        assert model(ModelInputs(input_ids=ids, attention_mask=mask, images=images())).logits.shape == (2, 2)


def test_the_packaged_minilm_loads_offline_with_width_384():
    encoder = load_text_encoder("all-minilm-l6-v2")
    tokenizer = load_tokenizer("all-minilm-l6-v2")
    assert encoder.config.hidden_size == 384 == text_encoder_width("all-minilm-l6-v2")
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(**encoded).last_hidden_state
    assert states.shape == (2, encoded["input_ids"].shape[1], 384)
    # The demo preset narrows the layers after the encoder to 128, through the text projection.
    model = CLMLF(build_config("demo", "demo").model, 3)
    assert (model.text_width, model.width) == (384, 128)
    assert model.text_projection[0].weight.shape == (128, 384)


def test_a_missing_local_text_encoder_says_how_to_point_at_a_folder(tmp_path):
    missing = str(tmp_path / "no-such-model")
    for load in (load_tokenizer, load_text_encoder):
        with pytest.raises(EncoderUnavailable) as raised:
            load(missing)
        message = str(raised.value)
        assert message.startswith("model.text_encoder: ")
        assert "no-such-model" in message
        assert "local Hugging Face model folder" in message
        assert "all-minilm-l6-v2" in message


def test_image_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), weights)
    backbone = ImageBackbone("resnet18", str(weights), 64)
    # The trunk is (conv1, bn1, relu, maxpool, layer1, ..., layer4).
    torch.testing.assert_close(backbone.trunk[0].weight, resnet.conv1.weight)
    torch.testing.assert_close(backbone.trunk[7][1].conv2.weight, resnet.layer4[1].conv2.weight)
    with pytest.raises(EncoderUnavailable, match=r"model\.image_weights: .*missing\.pth"):
        ImageBackbone("resnet18", str(tmp_path / "missing.pth"), 64)


def one_step_run(root, **overrides) -> Run:
    """One real trainer step per epoch on a tiny HFM-layout data set; no weight decay, so a parameter moves only
    when it received a nonzero gradient."""
    settings = {"data_root": str(root), "max_train_batches": 1, "weight_decay": 0, "mixed_precision": False}
    return Run(build_config("hfm", "tiny", {**settings, **overrides}), log=lambda message: None)


@pytest.fixture
def hfm_data(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, "hfm")
    return root


@pytest.fixture
def learning_run(hfm_data) -> Run:
    return one_step_run(hfm_data)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def moved(before: dict[str, torch.Tensor], module: torch.nn.Module, name: str) -> bool:
    return not torch.equal(before[name], module.state_dict()[name])


def test_frozen_encoders_get_no_gradients_and_everything_else_learns(learning_run):
    run = learning_run
    model = run.model
    assert model.classifier.layers[-1].out_features == 2
    text_names = {f"text_encoder.{name}" for name, _ in model.text_encoder.named_parameters()}
    image_names = {f"image_backbone.{name}" for name in model.image_backbone.state_dict()}
    other_names = [name for name, _ in model.named_parameters() if name not in text_names | image_names]
    assert {name.split(".")[0] for name in other_names} == {
        "image_tokens",
        "image_transformer",
        "fusion_transformer",
        "attention_pooling",
        "classifier",
        "lbcl_head",
        "dbcl_head",
    }

    before = snapshot(model)
    metrics = run.train_epoch(0, progress=False)
    assert metrics["train/text_encoder_frozen"] == 1.0
    # Phase 1: the text encoder and the image backbone (BatchNorm statistics included) do not move.
    for name, parameter in model.text_encoder.named_parameters():
        assert parameter.grad is None, name
    for name, parameter in model.image_backbone.named_parameters():
        assert parameter.grad is None, name
    assert not [name for name in text_names | image_names if moved(before, model, name)]
    assert not [name for name in other_names if not moved(before, model, name)]

    before = snapshot(model)
    metrics = run.train_epoch(1, progress=False)
    assert metrics["train/text_encoder_frozen"] == 0.0
    # Phase 2: the text encoder learns too; the image backbone
    # still does not move.
    for name, parameter in model.image_backbone.named_parameters():
        assert parameter.grad is None, name
    assert not [name for name in image_names if moved(before, model, name)]
    still = [name for name in text_names if not moved(before, model, name)]
    assert not still
    assert not [name for name in other_names if not moved(before, model, name)]


def test_every_trainable_parameter_learns_once_the_text_encoder_is_fine_tuned(learning_run):
    run = learning_run
    run.train_epoch(0, progress=False)
    before = snapshot(run.model)
    run.train_epoch(1, progress=False)
    image_names = {f"image_backbone.{name}" for name in run.model.image_backbone.state_dict()}
    stuck = [
        name
        for name, _ in run.model.named_parameters()
        if name not in image_names and not moved(before, run.model, name)
    ]
    assert not stuck


def test_the_image_only_row_trains_the_image_encoder_and_pools_its_tokens_directly(hfm_data):
    base = build_config("hfm", "tiny")
    run = one_step_run(hfm_data, **ablation_row(base, "image-only"))
    assert run.model.text_encoder is None and run.model.image_transformer is None
    assert [group["name"] for group in run.optimizer.param_groups] == ["fusion", "image_encoder"]
    backbone = run.model.image_backbone
    before = snapshot(backbone)
    run.train_epoch(0, progress=False)
    assert backbone.training
    assert not [name for name, _ in backbone.named_parameters() if not moved(before, backbone, name)]
    assert not run.untrained_encoders(0)


def test_the_text_only_row_fine_tunes_the_text_encoder_from_the_first_epoch(hfm_data):
    base = build_config("hfm", "tiny")
    run = one_step_run(hfm_data, **ablation_row(base, "text-only"))
    assert run.model.image_backbone is None and not run.text_frozen(0)
    before = snapshot(run.model.text_encoder)
    metrics = run.train_epoch(0, progress=False)
    assert metrics["train/text_encoder_frozen"] == 0.0
    encoder = run.model.text_encoder
    assert not [name for name, _ in encoder.named_parameters() if not moved(before, encoder, name)]


def test_projection_heads_start_small_so_the_contrastive_losses_start_at_log_batch():
    torch.manual_seed(0)
    batch, width = 16, 64
    # Two unrelated unit-variance representations, as a post and its augmented view look at the start of training.
    representation, augmented = torch.randn(batch, width), torch.randn(batch, width)
    labels = torch.arange(batch) % 3
    losses = {}
    for scale in (1.0, 0.01):
        torch.manual_seed(1)
        lbcl_head, dbcl_head = projection_head(width, scale), projection_head(width, scale)
        with torch.no_grad():
            projection = lbcl_head(representation)
            losses[scale] = (
                data_based_contrastive_loss(projection, dbcl_head(augmented), temperature=0.07).item(),
                label_based_contrastive_loss(projection, labels, temperature=0.07).item(),
            )
        torch.manual_seed(1)
        default = nn.Linear(width, width), nn.Linear(width, width)
        assert torch.equal(lbcl_head[-1].weight, default[1].weight * scale)
    log_batch = math.log(batch)
    # Default initialisation: similarities / tau spread far apart, DBCL far above log B.
    assert losses[1.0][0] > log_batch + 1
    # Scaled: every similarity near zero, both losses at their uniform value (DBCL log B; LBCL log B too, since
    # each anchor's positives then share the uniform probability 1/B).
    assert losses[0.01][0] == pytest.approx(log_batch, abs=0.05)
    assert losses[0.01][1] == pytest.approx(log_batch, abs=0.05)
