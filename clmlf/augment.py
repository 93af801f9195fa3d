"""Image transforms: evaluation (resize, centre crop) and the DBCL augmentation (RandAugment plus a flip)."""

from __future__ import annotations

from torchvision import transforms

# torchvision's ImageNet statistics, which every torchvision ResNet's weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize_and_crop(image_size: int) -> list:
    # Resize to 256 then centre-crop 224 at the paper's size; the same ratio at any other size.
    return [transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size)]


def _to_normalized_tensor() -> list:
    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def evaluation_transform(image_size: int) -> transforms.Compose:
    return transforms.Compose(_resize_and_crop(image_size) + _to_normalized_tensor())


def augmentation_transform(image_size: int, randaugment_ops: int, randaugment_magnitude: int) -> transforms.Compose:
    """RandAugment (2 ops at magnitude 14 in the paper) plus a horizontal flip, on the cropped image."""
    steps = [*_resize_and_crop(image_size), transforms.RandomHorizontalFlip()]
    if randaugment_ops > 0:
        steps.append(transforms.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude))
    return transforms.Compose(steps + _to_normalized_tensor())
