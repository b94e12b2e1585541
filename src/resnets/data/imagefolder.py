"""A folder per class of any images Pillow reads, resized to one square size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetsError
from .dataset import Dataset, ImageData, register

MAX_PIXELS = 64_000_000  # refuse decompression bombs long before they fill memory


def _class_dirs(folder: Path) -> list[Path]:
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ResnetsError(f"{folder} has no class folders; expected {folder}/<class>/<image>")
    return dirs


def load_image(path: Path, size: int, channels: int = 3) -> np.ndarray:
    """One image as uint8 (channels, size, size): any mode converted to RGB (or L), resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ResnetsError(f"{path}: {im.width}x{im.height} is too large an image")
                im = _to_rgb(im)
                if channels == 1:
                    im = im.convert("L")
                im = im.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
                return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy()
    except ResnetsError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:  # fmt: skip
        raise ResnetsError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _to_rgb(im):
    """RGB for every mode: 16-bit, 32-bit and float greyscale scaled, transparency on black."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        # 16-bit spans 0..65535; 32-bit integer and float images are scaled by their own maximum
        # (a float image in 0..1 stays 0..1).
        top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        im = Image.fromarray((a / top * 255).clip(0, 255).astype(np.uint8), "L")
    if im.mode in ("P", "RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return im.convert("RGB")


def _read_split(folder: Path, classes: list[str], size: int) -> ImageData:
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            images.append(load_image(path, size))
            labels.append(label)
    if not images:
        raise ResnetsError(f"no images found under {folder}")
    return ImageData(torch.from_numpy(np.stack(images)), torch.tensor(labels))


@register(
    "imagefolder", needs_dir=True, description="DIR/{train,test|val}/<class>/<image>, or DIR/<class>/<image>"
)
def load_imagefolder(
    data_dir: Path, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """Images in class folders; with no train/test split on disk, a seeded stratified one."""
    if not data_dir.is_dir():
        raise ResnetsError(f"image folder {data_dir} does not exist; pass --data-dir DIR")
    if not isinstance(image_size, int) or not 1 <= image_size <= 1024:
        raise ResnetsError(f"image_size must be an integer in 1..1024, got {image_size!r}")
    train_dir = data_dir / "train"
    test_dir = next((data_dir / n for n in ("test", "val") if (data_dir / n).is_dir()), None)
    if train_dir.is_dir() and test_dir is not None:
        classes = [p.name for p in _class_dirs(train_dir)]
        train, test = _read_split(train_dir, classes, image_size), _read_split(test_dir, classes, image_size)
    else:
        classes = [p.name for p in _class_dirs(data_dir)]
        train, test = _seeded_split(_read_split(data_dir, classes, image_size), test_fraction, seed)
    return Dataset("imagefolder", train, test, classes, crop_padding=image_size // 8, flip=True)


def _seeded_split(data: ImageData, test_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    g = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(data), dtype=torch.bool)
    for c in data.labels.unique():
        idx = (data.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(len(idx) * test_fraction) if len(idx) > 1 else 0
        test_mask[idx[:n_test]] = True
    if test_mask.all() or not test_mask.any():
        raise ResnetsError("too few images to split into train and test; add a test/ folder")
    return (
        ImageData(data.images[~test_mask], data.labels[~test_mask]),
        ImageData(data.images[test_mask], data.labels[test_mask]),
    )
