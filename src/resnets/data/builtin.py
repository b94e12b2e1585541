"""Datasets that need no files: scikit-learn's handwritten digits and synthetic images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ResnetsError
from .dataset import Dataset, ImageData, register

DIGITS_SIZE = 16


@register("digits", needs_dir=False, description="scikit-learn's 8x8 handwritten digits, 1x16x16, built in")
def load_digits(image_size: int = DIGITS_SIZE) -> Dataset:
    """The 1,797 UCI digits upsampled to 1x16x16, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    raw = sk_digits()
    x = torch.from_numpy(raw.images).float().unsqueeze(1) / 16.0  # values are 0..16
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(raw.target).long()
    idx = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=raw.target)
    train_idx, test_idx = torch.from_numpy(train_idx).sort().values, torch.from_numpy(test_idx).sort().values
    return Dataset(
        name="digits",
        train=ImageData(images[train_idx], labels[train_idx]),
        test=ImageData(images[test_idx], labels[test_idx]),
        classes=[str(d) for d in range(10)],
        crop_padding=image_size // 8,
        flip=False,  # a mirrored digit is another symbol
    )


@register("synthetic", needs_dir=False, description="seeded class templates plus noise, any shape")
def load_synthetic(
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    train_size: int = 2048,
    test_size: int = 512,
    seed: int = 0,
) -> Dataset:
    """Learnable random data: each class is a fixed random pattern plus per-image noise."""
    for key, value, low in (("image_size", image_size, 1), ("channels", channels, 1),
                            ("num_classes", num_classes, 2), ("train_size", train_size, 1),
                            ("test_size", test_size, 1)):  # fmt: skip
        if not isinstance(value, int) or value < low:
            raise ResnetsError(f"synthetic: {key} must be an integer >= {low}, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, image_size, image_size, generator=g) * 255

    def split(n: int) -> ImageData:
        labels = torch.randint(num_classes, (n,), generator=g)
        noise = torch.randn(n, channels, image_size, image_size, generator=g) * 48
        images = (templates[labels] + noise).clamp(0, 255).round().to(torch.uint8)
        return ImageData(images, labels)

    return Dataset(
        name="synthetic",
        train=split(train_size),
        test=split(test_size),
        classes=[f"class{i}" for i in range(num_classes)],
        crop_padding=0,
        flip=False,
    )
