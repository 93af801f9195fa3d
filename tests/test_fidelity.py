"""The switches between the paper's behaviour and the original code's: what each changes and what it leaves
alone, the `original` preset, and the fp32 heads and losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import write_dataset
from PIL import Image
from torch import nn
from torchvision import transforms

from clmlf.augment import ORIGINAL_OPERATIONS, OriginalRandAugment, augmentation_transform
from clmlf.config import PRESETS, ConfigError, build_config, differences
from clmlf.encoders import load_tokenizer
from clmlf.losses import data_based_contrastive_loss, label_based_contrastive_loss
from clmlf.model import CLMLF, ImageTokens, ModelInputs
from clmlf.train import Run

TEXTS = ["what a lovely sunny day at the beach", "meh"]


def tiny_model(classes: int = 3, seed: int = 0, **model_settings) -> CLMLF:
    config = build_config("demo", "tiny", {f"model.{key}": value for key, value in model_settings.items()}).model
    torch.manual_seed(seed)
    return CLMLF(config, classes).eval()


@pytest.fixture(scope="module")
def inputs() -> ModelInputs:
    encoded = load_tokenizer("tiny-bert")(TEXTS, padding=True, return_tensors="pt")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    return ModelInputs(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], images=images)


def fusion_input(model: CLMLF, inputs: ModelInputs) -> torch.Tensor:
    seen = []
    hook = model.fusion_transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(inputs)
    hook.remove()
    return seen[0]  # (B, S + P, D)


def test_text_projection_adds_a_linear_gelu_on_every_text_state_and_leaves_the_image_tokens_alone(inputs):
    plain, projected = tiny_model(), tiny_model(text_projection=True)
    assert set(projected.state_dict()) - set(plain.state_dict()) == {
        "text_projection.0.weight",
        "text_projection.0.bias",
    }
    projected.load_state_dict(plain.state_dict(), strict=False)
    before, after = fusion_input(plain, inputs), fusion_input(projected, inputs)
    text_length = inputs.input_ids.shape[1]
    torch.testing.assert_close(after[:, text_length:], before[:, text_length:], rtol=0, atol=0)
    # Pads included: the original projects every position and lets the masks drop the pads later.
    expected = nn.functional.gelu(projected.text_projection[0](before[:, :text_length]))
    torch.testing.assert_close(after[:, :text_length], expected)
    assert not torch.allclose(after[:, :text_length], before[:, :text_length])


@pytest.mark.parametrize("layout", ["regions", "channel-mixing"])
def test_image_token_layouts(layout):
    features = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 4, 3, 3)  # (B, C=4, p=3, p)
    tokens = ImageTokens(channels=4, width=8, layout=layout)
    seen = []
    tokens.regions.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    output = tokens(features)
    assert output.shape == (2, 1 + 9, 8)
    regions = seen[0]  # (B, 9, C): what each region token is projected from
    if layout == "regions":
        # Token 4 is the centre of the 3 x 3 map: its C channels.
        torch.testing.assert_close(regions[1, 4], features[1, :, 1, 1])
    else:
        # The original's view: token 0 is the first C numbers in memory, channel 0 at positions (0,0) to (1,0).
        torch.testing.assert_close(
            regions[1, 0],
            torch.stack([features[1, 0, 0, 0], features[1, 0, 0, 1], features[1, 0, 0, 2], features[1, 0, 1, 0]]),
        )
    # The pooled token is the same in both layouts.
    torch.testing.assert_close(output[:, 0], tokens.pooled(features.mean(dim=(2, 3))))


def test_bert_style_layers_change_the_norm_eps_and_the_feed_forward_dropout_only(inputs):
    paper, bert_style = tiny_model(), tiny_model(layer_norm_eps=1e-12, feedforward_dropout=False)
    for stack in (bert_style.image_transformer, bert_style.fusion_transformer):
        for layer in stack.layers:
            assert layer.norm1.eps == layer.norm2.eps == 1e-12
            assert isinstance(layer.dropout, nn.Identity)
            assert layer.dropout1.p == layer.dropout2.p == layer.self_attn.dropout == bert_style.config.dropout
    assert all(layer.norm1.eps == 1e-5 and layer.dropout.p == 0.1 for layer in paper.fusion_transformer.layers)
    # Same parameters; in eval mode the feed-forward dropout does nothing, so only the eps is left to differ.
    assert set(paper.state_dict()) == set(bert_style.state_dict())
    bert_style.load_state_dict(paper.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(bert_style(inputs).logits, paper(inputs).logits, atol=1e-4, rtol=0)
    # In train mode, with the same random draws, the feed-forward dropout makes them differ.
    paper.train()
    bert_style.train()
    torch.manual_seed(0)
    paper_logits = paper(inputs).logits
    torch.manual_seed(0)
    assert not torch.allclose(bert_style(inputs).logits, paper_logits, atol=1e-3)


def encoder_layers(model: CLMLF) -> list[nn.TransformerEncoderLayer]:
    return [*model.image_transformer.layers, *model.fusion_transformer.layers]


def test_original_layer_init_draws_each_layer_as_nn_linear_does_and_leaves_the_forward_pass_alone(inputs):
    pytorch, original = tiny_model(fusion_layers=2), tiny_model(fusion_layers=2, layer_init="original")
    width = original.width  # 64; the feed-forward block is 4 x 64 wide
    for layer in encoder_layers(original):
        attention = layer.self_attn
        # nn.Linear's default: weight and bias uniform within 1/sqrt(fan_in) (kaiming-uniform, a = sqrt(5)).
        parameters = {
            "in_proj_weight": (attention.in_proj_weight, width),
            "in_proj_bias": (attention.in_proj_bias, width),
            "out_proj.weight": (attention.out_proj.weight, width),
            "out_proj.bias": (attention.out_proj.bias, width),
            "linear1.bias": (layer.linear1.bias, width),
            "linear2.weight": (layer.linear2.weight, 4 * width),
        }
        for name, (values, fan_in) in parameters.items():
            bound = 1 / math.sqrt(fan_in)
            assert torch.count_nonzero(values) == values.numel(), name
            assert 0.5 * bound < values.abs().max() <= bound, name
    # Each layer drawn on its own, as the original builds each BERT-style layer.
    first, second = (layer.self_attn for layer in original.fusion_transformer.layers)
    assert not torch.equal(first.in_proj_weight, second.in_proj_weight)
    assert not torch.equal(first.out_proj.bias, second.out_proj.bias)

    # PyTorch's encoder layer: xavier-uniform query/key/value weights (bound sqrt(6 / (D + 3D)), above nn.Linear's
    # 1/sqrt(D)), zero biases there and in the output projection, and every layer of a stack a copy of the first.
    for layer in encoder_layers(pytorch):
        attention = layer.self_attn
        assert torch.count_nonzero(attention.in_proj_bias) == torch.count_nonzero(attention.out_proj.bias) == 0
        assert 1 / math.sqrt(width) < attention.in_proj_weight.abs().max() <= math.sqrt(6 / (4 * width))
    first, second = (layer.self_attn for layer in pytorch.fusion_transformer.layers)
    assert torch.equal(first.in_proj_weight, second.in_proj_weight)

    # Only where the weights start differs: the same weights give the same outputs.
    assert set(pytorch.state_dict()) == set(original.state_dict())
    original.load_state_dict(pytorch.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(original(inputs).logits, pytorch(inputs).logits, rtol=0, atol=0)
    assert build_config("demo", "original").model.layer_init == "original"
    assert {build_config("demo", preset).model.layer_init for preset in ("paper", "demo", "tiny")} == {"pytorch"}


def test_three_classifier_outputs_on_a_binary_set_never_predict_the_third(inputs):
    model = tiny_model(classes=2, classifier_outputs=3)
    assert model.classifier.layers[-1].out_features == 3
    with torch.no_grad():
        model.classifier.layers[-1].bias.copy_(torch.tensor([0.0, 0.0, 100.0]))
        logits = model(inputs).logits
    assert logits.shape == (2, 3) and logits.argmax(dim=-1).tolist() == [2, 2]
    assert set(model.predictions(logits).tolist()) <= {0, 1}
    assert tiny_model(classes=2).classifier.layers[-1].out_features == 2
    with pytest.raises(ConfigError, match=r"^model\.classifier_outputs: 2 outputs cannot score 3 classes"):
        tiny_model(classes=3, classifier_outputs=2)
    with pytest.raises(ConfigError, match=r"^model\.classifier_outputs: "):
        build_config("demo", "tiny", {"model.classifier_outputs": 1})


def test_zero_image_layers_pool_the_image_tokens_directly(inputs):
    model = tiny_model(image_layers=0)
    assert model.image_transformer is None
    assert not any(name.startswith("image_transformer.") for name in model.state_dict())
    with torch.no_grad():
        assert model(inputs).logits.shape == (2, 3)


def picture(width: int = 300, height: int = 200) -> Image.Image:
    """A left-to-right gradient in red, a top-to-bottom one in green."""
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, axis=0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, axis=1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], axis=-1))


def apply(name: str, image: Image.Image, magnitude: int = 14) -> Image.Image:
    _, operation, low, high = next(entry for entry in ORIGINAL_OPERATIONS if entry[0] == name)
    return operation(image, low + magnitude / 30 * (high - low))


def test_the_original_randaugment_has_its_sixteen_operations_on_the_full_size_image():
    assert len(ORIGINAL_OPERATIONS) == 16
    image = picture()
    torch.manual_seed(0)
    for name, *_ in ORIGINAL_OPERATIONS:
        result = apply(name, image)
        assert (result.mode, result.size) == ("RGB", image.size), name
    pixels = np.asarray(image, dtype=np.int64)
    np.testing.assert_array_equal(np.asarray(apply("invert", image)), 255 - pixels)
    # At magnitude 14 Posterize keeps max(1, int(4 * 14 / 30)) = 1 bit.
    assert set(np.unique(np.asarray(apply("posterize", image)))) <= {0, 128}
    # Enhancements are not mirrored around 1: magnitude 14 darkens (factor 0.94), it never brightens.
    assert np.asarray(apply("brightness", image)).sum() < pixels.sum()
    # Translation is in pixels of the full-size image: 46.67 at magnitude 14, black fill on the uncovered side.
    shifted = np.asarray(apply("translate_x", image))
    black_columns = int((shifted.sum(axis=(0, 2)) == 0).sum())
    assert black_columns in (46, 47)
    # Cutout: a grey square of 18.67 pixels' side.
    grey = (np.asarray(apply("cutout", picture(400, 400))) == (125, 123, 114)).all(axis=-1).sum()
    assert 18 * 18 <= grey <= 20 * 20


def test_the_original_randaugment_is_seeded_by_torch_and_runs_before_resizing():
    augment = OriginalRandAugment(ops=2, magnitude=14)
    image = picture()
    torch.manual_seed(5)
    first = np.asarray(augment(image))
    torch.manual_seed(5)
    np.testing.assert_array_equal(np.asarray(augment(image)), first)
    assert any(not np.array_equal(np.asarray(augment(image)), first) for _ in range(5))
    original = augmentation_transform(64, 2, 14, "original").transforms
    torchvision_steps = augmentation_transform(64, 2, 14, "torchvision").transforms
    assert isinstance(original[0], OriginalRandAugment) and isinstance(original[1], transforms.Resize)
    assert isinstance(torchvision_steps[0], transforms.Resize)
    assert isinstance(torchvision_steps[3], transforms.RandAugment)
    # Both end in the same crop, flip and normalisation: the same tensor shape.
    torch.manual_seed(0)
    assert augmentation_transform(64, 2, 14, "original")(image).shape == (3, 64, 64)
    assert not any(
        isinstance(step, OriginalRandAugment) for step in augmentation_transform(64, 0, 14, "original").transforms
    )


@pytest.fixture
def small_data(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, "demo")
    return root


def frozen_mode_run(root, mode: str) -> Run:
    settings = {"data_root": str(root), "frozen_encoder_mode": mode, "max_train_batches": 1, "weight_decay": 0}
    return Run(build_config("demo", "tiny", settings), log=lambda message: None)


def test_frozen_encoders_in_train_mode_update_batchnorm_statistics_but_not_weights(small_data):
    run = frozen_mode_run(small_data, "train")
    backbone, text_encoder = run.model.image_backbone, run.model.text_encoder
    before = {name: value.clone() for name, value in run.model.state_dict().items()}
    run.train_epoch(0, progress=False)
    assert backbone.training and text_encoder.training
    state = run.model.state_dict()
    moved = {name for name in before if not torch.equal(before[name], state[name])}
    backbone_moved = {name for name in moved if name.startswith("image_backbone.")}
    assert backbone_moved and all(
        name.endswith(("running_mean", "running_var", "num_batches_tracked")) for name in backbone_moved
    )
    assert not [name for name in moved if name.startswith("text_encoder.")]
    # Its BatchNorm statistics changed, so checkpoints must keep the backbone.
    assert set(run.untrained_encoders(0)) == {"text_encoder"}


def test_the_frozen_text_encoder_drops_out_in_train_mode_only(small_data):
    for mode, differs in (("train", True), ("eval", False)):
        run = frozen_mode_run(small_data, mode)
        run.set_phase(0, training=True)
        view = next(iter(run.loader("train", 0))).original
        first, second = run.encoded(view, 0).text_states, run.encoded(view, 0).text_states
        assert (not torch.equal(first, second)) == differs, mode
        assert run.model.image_backbone.training == differs


def test_heads_and_losses_stay_fp32_under_bf16_autocast(inputs):
    model = tiny_model()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(inputs)
    assert outputs.lbcl_projection.dtype == outputs.dbcl_projection.dtype == torch.float32
    with torch.no_grad():
        expected = model.lbcl_head(outputs.representation.float())
    assert torch.equal(outputs.lbcl_projection, expected)

    generator = torch.Generator().manual_seed(0)
    projection = torch.randn(16, 64, generator=generator) * 2
    augmented = torch.randn(16, 64, generator=generator) * 2
    labels = torch.randint(0, 3, (16,), generator=generator)
    reference = (
        label_based_contrastive_loss(projection, labels, 0.07),
        data_based_contrastive_loss(projection, augmented, 0.07),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = (
            label_based_contrastive_loss(projection, labels, 0.07),
            data_based_contrastive_loss(projection, augmented, 0.07),
        )
    for value, expected_value in zip(under, reference, strict=True):
        assert value.dtype == torch.float32 and torch.equal(value, expected_value)
    # What the fp32 guard prevents: the same similarities in bf16 give a visibly different loss.
    rounded = (projection.bfloat16() @ projection.bfloat16().T).float() / 0.07
    assert abs(nn.functional.cross_entropy(rounded, torch.arange(16)) - reference[0]).item() > 1e-3


def test_the_original_preset_is_the_paper_plus_the_original_codes_behaviour():
    for dataset in ("mvsa-single", "mvsa-multiple", "hfm"):
        original, paper = build_config(dataset, "original"), build_config(dataset, "paper")
        changed = differences(original, paper)
        assert set(changed) == set(PRESETS["original"]), "the data set's paper layers and batch size are kept"
        assert (original.model.fusion_layers, original.batch_size) == (paper.model.fusion_layers, paper.batch_size)
        assert original.train_batch_sampling == paper.train_batch_sampling == "uniform"
        assert not original.feature_cache_allowed and paper.feature_cache_allowed
    assert build_config("hfm", "original").model.classifier_outputs == 3
