"""MNIST from the official IDX files, gzipped or not."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetsError
from .dataset import Dataset, ImageData, register

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_UBYTE = 0x08


def _find(data_dir: Path, stem: str) -> Path:
    for folder in (data_dir / "MNIST" / "raw", data_dir / "mnist", data_dir):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise ResnetsError(
        f"MNIST file {stem}[.gz] not found in {data_dir}; put the four official IDX files in "
        f"{data_dir}/MNIST/raw/ or pass --data-dir to where they are"
    )


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array with ``ndim`` dimensions, its header checked against its size."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ResnetsError(f"{path}: cannot read ({e}); the file is truncated or corrupt") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ResnetsError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != IDX_UBYTE or dims != ndim:
        raise ResnetsError(
            f"{path}: not an unsigned-byte IDX file with {ndim} dimensions "
            f"(magic {raw[:4].hex()}); wrong or corrupt file"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise ResnetsError(
            f"{path}: header says {shape} ({expected:,} bytes) but {len(raw) - header:,} follow; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _split(data_dir: Path, split: str) -> ImageData:
    images = read_idx(_find(data_dir, FILES[f"{split}_images"]), 3)
    labels = read_idx(_find(data_dir, FILES[f"{split}_labels"]), 1)
    if len(images) == 0 or 0 in images.shape[1:]:
        raise ResnetsError(f"MNIST {split}: the image file holds no pixels {images.shape}; corrupt file")
    if len(images) != len(labels):
        raise ResnetsError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise ResnetsError(f"MNIST {split}: labels outside 0..9; corrupt label file")
    return ImageData(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


@register("mnist", needs_dir=True, description="MNIST, official IDX files (.gz or raw)")
def load_mnist(data_dir: Path, download: bool = False) -> Dataset:
    """MNIST: 60,000 training and 10,000 test digits, 1x28x28."""
    return Dataset(
        name="mnist",
        train=_split(data_dir, "train"),
        test=_split(data_dir, "test"),
        classes=[str(d) for d in range(10)],
        crop_padding=0,
        flip=False,
    )
