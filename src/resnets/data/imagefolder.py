"""A folder per class of any images Pillow reads, resized to one square size."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetsError
from .dataset import Dataset, ImageData, register
from .files import FileList, ImageSource, StreamedDataset, list_folder, read_file_list, stratified_split

MAX_PIXELS = 64_000_000  # refuse decompression bombs long before they fill memory
LOADERS = ("auto", "memory", "stream")
MEMORY_SIZE = 32  # the in-memory path's square size: CIFAR-like training
STREAM_SIZE = 224  # the streaming path's crop: torchvision's ImageNet reference


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


def _decode_all(files: FileList, size: int) -> ImageData:
    # Filled in place: a list of images stacked at the end would hold every image twice at the peak.
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i in range(len(files)):
        images[i] = load_image(Path(files.name(i)), size)
    return ImageData(torch.from_numpy(images), torch.from_numpy(files.labels))


def list_splits(
    data_dir: Path, test_fraction: float, seed: int
) -> tuple[ImageSource, ImageSource, list[str]]:
    """train/ and test/ (or val/) folders or file lists, else one folder split by class."""
    lists = [data_dir / f"{n}.txt" for n in ("train", "test", "val")]
    if lists[0].is_file() and (lists[1].is_file() or lists[2].is_file()):
        train, classes = read_file_list(lists[0])
        test, _ = read_file_list(lists[1] if lists[1].is_file() else lists[2], classes)
        return train, test, classes
    train_dir = data_dir / "train"
    test_dir = next((data_dir / n for n in ("test", "val") if (data_dir / n).is_dir()), None)
    if train_dir.is_dir() and test_dir is not None:
        train, classes = list_folder(train_dir)
        test, _ = list_folder(test_dir, classes)
        return train, test, classes
    files, classes = list_folder(data_dir)
    train, test = stratified_split(files, test_fraction, seed)
    return train, test, classes


def choose_loader(loader: str, images: int, image_size: int | None) -> tuple[str, str]:
    """'memory' or 'stream' and why: decoded in memory only while that stays small."""
    decoded = images * 3 * (image_size or MEMORY_SIZE) ** 2
    budget = memory_budget()
    if loader != "auto":
        return loader, f"--loader {loader}"
    size = f"{images:,} images at {image_size or MEMORY_SIZE} px decode to {decoded / 2**30:.2f} GiB"
    if decoded > budget:
        return "stream", f"{size}, over the {budget / 2**30:.1f} GiB kept in memory"
    return "memory", f"{size}, within the {budget / 2**30:.1f} GiB kept in memory"


def memory_budget() -> int:
    """Bytes of decoded images worth holding: 2 GiB, or an eighth of the machine's memory if less."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    return min(2 * 2**30, total // 8)


@register(
    "imagefolder", needs_dir=True,
    description="DIR/{train,test|val}/<class>/<image>, DIR/{train,val}.txt lists, or DIR/<class>/<image>",
)  # fmt: skip
def load_imagefolder(
    data_dir: Path,
    image_size: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    loader: str = "auto",
    test_size: int | None = None,
) -> Dataset | StreamedDataset:
    """Images in class folders, decoded into memory when small and streamed from disk when not."""
    if not data_dir.is_dir():
        raise ResnetsError(f"image folder {data_dir} does not exist; pass --data-dir DIR")
    for name, value in (("image_size", image_size), ("test_size", test_size)):
        if value is not None and (not isinstance(value, int) or not 1 <= value <= 1024):
            raise ResnetsError(f"{name} must be an integer in 1..1024, got {value!r}")
    if loader not in LOADERS:
        raise ResnetsError(f"unknown loader {loader!r}; choose one of {', '.join(LOADERS)}")
    train, test, classes = list_splits(data_dir, test_fraction, seed)
    kind, reason = choose_loader(loader, len(train) + len(test), image_size)
    if kind == "stream":
        size = image_size or STREAM_SIZE
        data = StreamedDataset("imagefolder", train, test, classes, size, test_size or size)
    else:
        size = image_size or MEMORY_SIZE
        train_data, test_data = _decode_all(train, size), _decode_all(test, size)
        data = Dataset("imagefolder", train_data, test_data, classes, crop_padding=size // 8, flip=True)
    data.loader_reason = reason
    return data
