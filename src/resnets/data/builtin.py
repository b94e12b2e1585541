"""Datasets that need no files: scikit-learn's handwritten digits and synthetic images."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResnetsError
from ..io import atomic_write_bytes
from ..io.cache import cache_dir
from .dataset import Dataset, ImageData, register

DIGITS_SIZE = 16


@register("digits", needs_dir=False, description="scikit-learn's 8x8 handwritten digits, 1x16x16, built in")
def load_digits(image_size: int = DIGITS_SIZE) -> Dataset:
    """The 1,797 UCI digits upsampled to 1x16x16, split 80/20 stratified with a fixed seed."""
    images, labels, train_idx, test_idx = _digits_arrays(image_size)
    return Dataset(
        name="digits",
        train=ImageData(images[train_idx], labels[train_idx]),
        test=ImageData(images[test_idx], labels[test_idx]),
        classes=[str(d) for d in range(10)],
        crop_padding=image_size // 8,
        flip=False,  # a mirrored digit is another symbol
    )


def _digits_arrays(image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, labels and the split, from the cache where a run before prepared them.

    Why a cache: importing scikit-learn costs about a second, more than a short digits run's
    set-up, and every process paid it. The file holds plain arrays (read without pickle) and
    is keyed by scikit-learn's version, which fixes both the data and the split.
    """
    path = cache_dir() / f"digits-{image_size}-sklearn-{importlib.metadata.version('scikit-learn')}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile):
        with np.load(path, allow_pickle=False) as f:
            arrays = tuple(torch.from_numpy(f[k]) for k in ("images", "labels", "train", "test"))
        images, labels, train, test = arrays
        whole = len(labels) == len(images) == len(train) + len(test)
        if (
            whole
            and images.shape[1:] == (1, image_size, image_size)
            and torch.cat([train, test]).unique().numel() == len(labels)
        ):
            return images, labels, train, test
    arrays = _prepare_digits(image_size)
    buffer = io.BytesIO()
    np.savez(
        buffer, **{k: a.numpy() for k, a in zip(("images", "labels", "train", "test"), arrays, strict=True)}
    )
    with contextlib.suppress(ResnetsError):  # a read-only cache only costs the next process the second
        atomic_write_bytes(path, buffer.getvalue())
    return arrays


def _prepare_digits(image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    raw = sk_digits()
    x = torch.from_numpy(raw.images).float().unsqueeze(1) / 16.0  # values are 0..16
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(raw.target).long()
    idx = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=raw.target)
    return images, labels, torch.from_numpy(train_idx).sort().values, torch.from_numpy(test_idx).sort().values


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
