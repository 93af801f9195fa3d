"""The run configuration: presets, the flat round trip, string coercion and validation messages."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from clmlf.config import (
    DATASET_SETTINGS,
    PRESETS,
    TABLE3_ROWS,
    VARIANTS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    ablation_row,
    build_config,
    differences,
    load_config_file,
    parse_overrides,
    to_flat_dict,
)
from clmlf.data import DATASETS

PRESET_DATASET_PAIRS = [(preset, dataset) for preset in PRESETS for dataset in DATASETS]


@pytest.mark.parametrize(("preset", "dataset"), PRESET_DATASET_PAIRS)
def test_flat_round_trip(preset, dataset):
    config = build_config(dataset, preset)
    flat = config.to_flat_dict()
    assert TrainConfig.from_flat_dict(flat) == config
    # MLflow hands params back as strings; they must coerce back to the same typed config.
    assert TrainConfig.from_flat_dict({key: str(value) for key, value in flat.items()}) == config
    # And through JSON, as result.json and best_config.json store it.
    assert TrainConfig.from_flat_dict(json.loads(json.dumps(flat))) == config


def test_flat_dict_has_dotted_model_keys_and_no_derived_values():
    flat = build_config("mvsa-single").to_flat_dict()
    model_keys = {f"model.{item.name}" for item in dataclasses.fields(ModelConfig)}
    assert model_keys <= set(flat)
    assert "model" not in flat
    # Derived values are properties, never written into the flat dict.
    assert "epochs" not in flat
    assert all(isinstance(value, str | int | float | bool | type(None)) for value in flat.values())


@pytest.mark.parametrize(
    ("dataset", "fusion_layers", "image_layers", "batch_size"),
    [
        ("mvsa-single", 3, 2, 32),
        ("mvsa-multiple", 4, 2, 64),
        ("hfm", 5, 1, 128),
        ("twitter2015", 3, 2, 32),
        ("twitter2017", 3, 2, 32),
    ],
)
def test_paper_preset_per_dataset(dataset, fusion_layers, image_layers, batch_size):
    config = build_config(dataset, "paper")
    assert (config.model.fusion_layers, config.model.image_layers, config.batch_size) == (
        fusion_layers,
        image_layers,
        batch_size,
    )
    # The paper's shared settings.
    assert config.model.text_encoder == "bert-base-uncased"
    assert config.model.image_encoder == "resnet50"
    assert config.model.image_size == 224
    assert config.model.heads == 12
    assert config.temperature == pytest.approx(0.07)
    assert config.learning_rate == pytest.approx(2e-5)
    assert (config.frozen_text_epochs, config.finetune_epochs, config.epochs) == (20, 30, 50)
    assert config.lbcl_variant == "paper"


def test_dataset_settings_only_apply_to_the_paper_preset():
    assert set(DATASET_SETTINGS) == {"mvsa-single", "mvsa-multiple", "hfm", "twitter2015", "twitter2017"}
    tiny_hfm = build_config("hfm", "tiny")
    assert tiny_hfm.model.fusion_layers == PRESETS["tiny"]["model.fusion_layers"]
    assert tiny_hfm.batch_size == PRESETS["tiny"]["batch_size"]


def test_overrides_win_over_the_preset():
    config = build_config("hfm", "paper", {"model.fusion_layers": 6, "batch_size": 16})
    assert config.model.fusion_layers == 6
    assert config.batch_size == 16
    assert config.model.image_layers == 1


def test_strings_are_coerced_to_the_field_types():
    config = build_config(
        "demo",
        "tiny",
        {
            "model.fusion_layers": "4",
            "lbcl_weight": "0.5",
            "mixed_precision": "false",
            "augment_original_images": "true",
            "model.freeze_image_encoder": "0",
            "temperature": "1e-1",
            "data_root": "none",
            "seed": " 7 ",
        },
    )
    assert config.model.fusion_layers == 4 and isinstance(config.model.fusion_layers, int)
    assert config.lbcl_weight == 0.5
    # A config written before mixed_precision took a precision: false was fp32.
    assert config.mixed_precision == "fp32"
    assert config.augment_original_images is True
    assert config.model.freeze_image_encoder is False
    assert config.temperature == pytest.approx(0.1)
    assert config.data_root is None
    assert config.seed == 7


def test_loss_weights_stay_floats():
    # The original parser made them integers, so fractional weights could not be searched.
    config = build_config("demo", "tiny", {"lbcl_weight": 1, "dbcl_weight": "2"})
    assert isinstance(config.lbcl_weight, float) and config.lbcl_weight == 1.0
    assert isinstance(config.dbcl_weight, float) and config.dbcl_weight == 2.0
    flat = config.to_flat_dict()
    assert isinstance(flat["lbcl_weight"], float)
    assert isinstance(flat["temperature"], float)
    assert build_config("demo", "tiny", {"lbcl_weight": 0.25}).lbcl_weight == 0.25


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.fusion_layers", "2.5"),
        ("model.fusion_layers", "three"),
        ("batch_size", True),
        ("mixed_precision", "maybe"),
        ("learning_rate", "fast"),
        ("model.variant", None),
    ],
)
def test_values_that_cannot_be_coerced_name_the_field(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        build_config("demo", "tiny", {key: value})


FLOAT_SETTINGS = [key for key, value in to_flat_dict(TrainConfig()).items() if isinstance(value, float)]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_setting_refuses_non_finite_values(value):
    assert {"learning_rate", "temperature", "lbcl_weight", "dbcl_weight", "model.dropout"} <= set(FLOAT_SETTINGS)
    for key in FLOAT_SETTINGS:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be finite, got"):
            build_config("demo", "tiny", {key: value})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model.fusion_layers": 0}, "model.fusion_layers"),
        ({"model.image_layers": -1}, "model.image_layers"),
        ({"model.image_token_layout": "grid"}, "model.image_token_layout"),
        ({"model.layer_norm_eps": 0}, "model.layer_norm_eps"),
        ({"model.classifier_outputs": -3}, "model.classifier_outputs"),
        ({"train_batch_sampling": "sorted"}, "train_batch_sampling"),
        ({"randaugment_implementation": "timm"}, "randaugment_implementation"),
        ({"frozen_encoder_mode": "frozen"}, "frozen_encoder_mode"),
        ({"feature_cache": True, "frozen_encoder_mode": "train"}, "feature_cache"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"model.image_encoder": "resnet9"}, "model.image_encoder"),
        ({"model.heads": 3}, "model.heads"),  # tiny-bert is 64 wide: 3 heads do not divide it
        ({"model.heads": -1}, "model.heads"),
        ({"model.heads": 0, "model.fusion_width": 32}, "model.heads"),  # 32 // 64 = no head
        ({"model.heads": 0, "model.fusion_width": 200}, "model.heads"),  # 200 // 64 = 3 heads do not divide 200
        ({"model.layer_init": "xavier"}, "model.layer_init"),
        ({"lbcl_weight": -1}, "lbcl_weight"),
        ({"dbcl_weight": -0.5}, "dbcl_weight"),
        ({"model.variant": "text-and-audio"}, "model.variant"),
        ({"lbcl_variant": "supcon"}, "lbcl_variant"),
        ({"model.dropout": 1.0}, "model.dropout"),
        ({"model.projection_init_scale": 0}, "model.projection_init_scale"),
        ({"model.image_weights": "imagenet21k"}, "model.image_weights"),
        ({"batch_size": 1}, "batch_size"),
        ({"frozen_text_epochs": 0, "finetune_epochs": 0}, "finetune_epochs"),
        ({"image_policy": "ignore"}, "image_policy"),
        ({"selection_metric": "loss"}, "selection_metric"),
        ({"model.no_such_setting": 1}, "model.no_such_setting"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"model": "x"}, "model"),
    ],
)
def test_validation_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as raised:
        build_config("demo", "tiny", overrides)
    assert str(raised.value).startswith(f"{field}: ")


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError, match="fusion_layer") as raised:
        build_config("demo", "tiny", {"model.fusion_layer": 2})
    assert "fusion_layers" in str(raised.value)


def test_heads_are_checked_against_a_local_encoder_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 100}))
    with pytest.raises(ConfigError, match=r"^model\.heads: .*100"):
        build_config("demo", "tiny", {"model.text_encoder": str(tmp_path), "model.heads": 12})
    assert build_config("demo", "tiny", {"model.text_encoder": str(tmp_path), "model.heads": 4}).model.heads == 4


def test_heads_zero_is_the_original_codes_width_over_64_resolved_never_written_back():
    config = build_config("mvsa-single", "original")
    assert config.model.heads == 0 and config.model.attention_heads(768) == 12
    assert config.model.attention_heads(384) == 6 and config.model.attention_heads(100) == 1
    assert build_config("mvsa-single", "paper").model.attention_heads(384) == 12
    wide = build_config("mvsa-single", "original", {"model.fusion_width": 384})
    assert wide.to_flat_dict()["model.heads"] == 0 and wide.model.attention_heads(384) == 6
    with pytest.raises(ConfigError, match=r"^model\.heads: 0 \(the original code's width // 64\) gives 3 heads at "):
        build_config("mvsa-single", "original", {"model.fusion_width": 200})
    with pytest.raises(ConfigError, match=r"^model\.heads: 0 .* gives 0 heads .*; set model\.heads to a divisor of 32"):
        build_config("mvsa-single", "original", {"model.fusion_width": 32})
    # An explicit count wins over the rule.
    assert build_config("mvsa-single", "original", {"model.heads": 8}).model.attention_heads(768) == 8


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"^preset: .*tiny"):
        build_config("demo", "huge")


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_switch_the_tasks(variant):
    config = build_config("demo", "tiny", {"model.variant": variant})
    expected = {
        "full": (True, True, True, True),
        "mlf": (True, True, False, False),
        "mlf-lbcl": (True, True, True, False),
        "mlf-dbcl": (True, True, False, True),
        "text-only": (True, False, False, False),
        "image-only": (False, True, False, False),
    }[variant]
    assert (config.model.uses_text, config.model.uses_images, config.uses_lbcl, config.uses_dbcl) == expected


def test_a_zero_weight_switches_its_task_off():
    config = build_config("demo", "tiny", {"lbcl_weight": 0, "dbcl_weight": 0})
    assert not config.uses_lbcl
    assert not config.uses_dbcl
    assert config.model.uses_lbcl and config.model.uses_dbcl


def test_epochs_are_derived():
    config = build_config("demo", "tiny", {"frozen_text_epochs": 2, "finetune_epochs": 3})
    assert config.epochs == 5


def test_parse_overrides():
    assert parse_overrides(["model.fusion_layers=4", " temperature = 0.1 ", "model.text_encoder=/m/a=b"]) == {
        "model.fusion_layers": "4",
        "temperature": "0.1",
        "model.text_encoder": "/m/a=b",
    }
    assert parse_overrides(["data_root="]) == {"data_root": ""}


@pytest.mark.parametrize("assignment", ["model.fusion_layers", "=4", " =4", ""])
def test_parse_overrides_rejects_malformed_assignments(assignment):
    with pytest.raises(ConfigError, match=r"--set .*key=value"):
        parse_overrides([assignment])


def test_load_config_file_reads_a_result_or_a_flat_dict(tmp_path):
    config = build_config("hfm", "tiny", {"lbcl_weight": 0.5})
    result_file = tmp_path / "result.json"
    result_file.write_text(json.dumps({"config": config.to_flat_dict(), "selected_epoch": 0}))
    flat_file = tmp_path / "best_config.json"
    flat_file.write_text(json.dumps(config.to_flat_dict()))
    assert load_config_file(result_file) == config
    assert load_config_file(flat_file) == config


def test_load_config_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_config_file(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        load_config_file(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"list\.json"):
        load_config_file(listed)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({**build_config("demo", "tiny").to_flat_dict(), "temperature": -1}))
    with pytest.raises(ConfigError, match=r"invalid\.json: temperature: "):
        load_config_file(invalid)


@pytest.mark.parametrize("dataset", ["mvsa-single", "hfm"])
@pytest.mark.parametrize("preset", ["paper", "original"])
def test_table3_rows(dataset, preset):
    base = build_config(dataset, preset)
    rows = {row: build_config(dataset, preset, ablation_row(base, row)) for row in TABLE3_ROWS}
    assert list(rows) == ["text-only", "image-only", "mlf", "mlf-lbcl", "mlf-dbcl", "full"]
    for row, config in rows.items():
        assert config.model.variant == row
        assert config.epochs == base.epochs, "every row trains as many epochs as the base"
    # BERT fine-tuned on the text alone from the first epoch.
    text = rows["text-only"]
    assert (text.frozen_text_epochs, text.model.uses_images, text.uses_lbcl, text.uses_dbcl) == (0, False, False, False)
    # The image encoder's weights trained on the images alone, without image Transformer layers.
    image = rows["image-only"]
    assert (image.model.uses_text, image.model.freeze_image_encoder, image.model.image_layers) == (False, False, 0)
    assert image.frozen_text_epochs == 0
    # The fusion rows differ from the base in the variant alone.
    for row in ("mlf", "mlf-lbcl", "mlf-dbcl", "full"):
        assert set(differences(rows[row], base)) <= {"model.variant"}
    with pytest.raises(ConfigError, match=r"^model\.variant: 'audio-only' is not a Table 3 row"):
        ablation_row(base, "audio-only")
