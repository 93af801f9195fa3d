"""Image transforms: evaluation (resize, centre crop) and the training augmentation (RandAugment plus a flip).

Two RandAugments: torchvision's, applied to the cropped image, and the original CLMLF code's own, applied to the
full-size image before it is resized (`OriginalRandAugment`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision import transforms

# torchvision's ImageNet statistics, which every torchvision ResNet's weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_MAGNITUDE = 30


def _resize_and_crop(image_size: int) -> list:
    # Resize to 256 then centre-crop 224 at the paper's size; the same ratio at any other size.
    return [transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size)]


def _to_normalized_tensor() -> list:
    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def evaluation_transform(image_size: int) -> transforms.Compose:
    return transforms.Compose(_resize_and_crop(image_size) + _to_normalized_tensor())


def evaluation_view(image_size: int) -> transforms.Compose:
    """The part of an image the model sees at evaluation, as a PIL image (for drawing over it)."""
    return transforms.Compose(_resize_and_crop(image_size))


def augmentation_transform(
    image_size: int, randaugment_ops: int, randaugment_magnitude: int, implementation: str = "torchvision"
) -> transforms.Compose:
    """RandAugment (2 ops at magnitude 14 in the paper) plus a horizontal flip.

    torchvision: resize, crop, flip, then torchvision's RandAugment on the cropped image. original: the original
    code's RandAugment on the full-size image, then resize, crop and flip.
    """
    geometry = [*_resize_and_crop(image_size), transforms.RandomHorizontalFlip()]
    if randaugment_ops == 0:
        steps = geometry
    elif implementation == "original":
        steps = [OriginalRandAugment(randaugment_ops, randaugment_magnitude), *geometry]
    else:
        steps = [*geometry, transforms.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude)]
    return transforms.Compose(steps + _to_normalized_tensor())


def _random_sign(value: float) -> float:
    return -value if torch.rand(()).item() > 0.5 else value


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    # Nearest neighbour and black fill, PIL's defaults, as the original calls it.
    return image.transform(image.size, Image.Transform.AFFINE, coefficients)


def _solarize_add(image: Image.Image, addition: float) -> Image.Image:
    shifted = np.clip(np.asarray(image, dtype=np.float64) + addition, 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), 128)


def _cutout(image: Image.Image, side: float) -> Image.Image:
    """A grey square of `side` pixels at a drawn centre, clipped at the borders. The centre is uniform over
    [1, size], not [0, size]: the original passes the size to numpy's `uniform` as its lower bound (high 1)."""
    width, height = image.size
    left = int(max(0.0, 1 + (width - 1) * torch.rand(()).item() - side / 2))
    top = int(max(0.0, 1 + (height - 1) * torch.rand(()).item() - side / 2))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((left, top, min(width, left + side), min(height, top + side)), (125, 123, 114))
    return image


# The original's 16 operations: (name, operation, value at magnitude 0, value at magnitude 30). Geometric values
# are in pixels of the full-size image (translation, Cutout) or degrees (rotation); their sign is drawn per call.
ORIGINAL_OPERATIONS: tuple[tuple[str, Callable[[Image.Image, float], Image.Image], float, float], ...] = (
    ("auto_contrast", lambda image, _: ImageOps.autocontrast(image), 0, 1),
    ("equalize", lambda image, _: ImageOps.equalize(image), 0, 1),
    ("invert", lambda image, _: ImageOps.invert(image), 0, 1),
    ("rotate", lambda image, value: image.rotate(_random_sign(value)), 0, 30),
    ("posterize", lambda image, value: ImageOps.posterize(image, max(1, int(value))), 0, 4),
    ("solarize", lambda image, value: ImageOps.solarize(image, value), 0, 256),
    ("solarize_add", _solarize_add, 0, 110),
    ("color", lambda image, value: ImageEnhance.Color(image).enhance(value), 0.1, 1.9),
    ("contrast", lambda image, value: ImageEnhance.Contrast(image).enhance(value), 0.1, 1.9),
    ("brightness", lambda image, value: ImageEnhance.Brightness(image).enhance(value), 0.1, 1.9),
    ("sharpness", lambda image, value: ImageEnhance.Sharpness(image).enhance(value), 0.1, 1.9),
    ("shear_x", lambda image, value: _affine(image, (1, _random_sign(value), 0, 0, 1, 0)), 0, 0.3),
    ("shear_y", lambda image, value: _affine(image, (1, 0, 0, _random_sign(value), 1, 0)), 0, 0.3),
    ("cutout", _cutout, 0, 40),
    ("translate_x", lambda image, value: _affine(image, (1, 0, _random_sign(value), 0, 1, 0)), 0, 100),
    ("translate_y", lambda image, value: _affine(image, (1, 0, 0, 0, 1, _random_sign(value))), 0, 100),
)


class OriginalRandAugment:
    """The original CLMLF code's RandAugment: `ops` operations drawn with replacement from its 16, each at
    low + magnitude / 30 * (high - low). Unlike torchvision's, the enhancements (color, contrast, brightness,
    sharpness) are not mirrored around 1, so magnitude 14 always weakens them slightly (factor 0.94), and
    Posterize keeps max(1, int(4 * magnitude / 30)) bits (1 at magnitude 14). Randomness comes from torch's
    generator, which the trainer seeds per epoch."""

    def __init__(self, ops: int, magnitude: int):
        self.ops = ops
        self.magnitude = magnitude

    def __call__(self, image: Image.Image) -> Image.Image:
        for choice in torch.randint(len(ORIGINAL_OPERATIONS), (self.ops,)).tolist():
            _, operation, low, high = ORIGINAL_OPERATIONS[choice]
            image = operation(image, low + self.magnitude / MAX_MAGNITUDE * (high - low))
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ops={self.ops}, magnitude={self.magnitude})"
