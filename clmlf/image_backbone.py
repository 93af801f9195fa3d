"""The image encoder: a torchvision ResNet cut before its pooling layer, so that it yields the last convolutional
feature map. Its names are checked in clmlf/encoders.py (IMAGE_ENCODERS), which imports this module on first use.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torchvision
from torch import nn

from clmlf.encoders import EncoderUnavailable
from clmlf.safe_files import UnreadableFile, load_tensors, unpickling_refusal

# IMAGENET1K_V1 are the weights of `pretrained=True`, which the original code used.
IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": torchvision.models.ResNet152_Weights.IMAGENET1K_V1,
}
# The seed of `weights="none"`'s random initialisation, whatever the run's seed.
RANDOM_WEIGHTS_SEED = 0


class ImageBackbone(nn.Module):
    """A ResNet up to its last convolutional block: (B, 3, H, W) -> feature map (B, C, p, p)."""

    def __init__(self, name: str, weights: str, image_size: int):
        super().__init__()
        # Without weights the initialisation is drawn from a seed of its own, not the run's: the frozen encoder is
        # then the same in every trial of a study, as pretrained weights would be, and its features are one cache.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            resnet = getattr(torchvision.models, name)(weights=None)
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
        # Through torch.hub's cache in $TORCH_HOME, which every trial of a study reads: tensors only (safe_files.py).
        return weights.get_state_dict(progress=False, check_hash=False, weights_only=True)
    except pickle.UnpicklingError as error:
        cached = Path(torch.hub.get_dir(), "checkpoints", weights.url.rsplit("/", 1)[-1])
        raise EncoderUnavailable(
            f"model.image_weights: {unpickling_refusal(cached, error)}; delete it, and torchvision downloads the "
            "weights again"
        ) from error
    except (OSError, RuntimeError) as error:
        raise EncoderUnavailable(
            f"model.image_weights: cannot get torchvision's ImageNet weights for {name} ({error}). torchvision "
            f"downloads them once into $TORCH_HOME (now {torch.hub.get_dir()}); without network access copy "
            f"{weights.url.rsplit('/', 1)[-1]} there, or set model.image_weights to a local .pth file, or 'none'."
        ) from error


def _state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise EncoderUnavailable(f"model.image_weights: no weights file at {path}")
    try:
        state = load_tensors(path)
    except UnreadableFile as error:
        raise EncoderUnavailable(f"model.image_weights: {error}") from error
    return state.get("state_dict", state) if isinstance(state, dict) else state
