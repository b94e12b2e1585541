"""CIFAR-10 and CIFAR-100 from the official python batches, read without running pickled code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetsError
from ..io import safe_load
from .dataset import Dataset, ImageData, register
from .download import download_archive, offline


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant's files are and what they hold."""

    title: str
    folder: str
    url: str
    md5: str  # of the official .tar.gz, as published with it
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    rows_per_train_file: int


CIFAR10 = CifarLayout(
    "CIFAR-10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a", tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch", "batches.meta", "labels", "label_names", 10, 10_000,
)  # fmt: skip
CIFAR100 = CifarLayout(
    "CIFAR-100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85", ("train",), "test", "meta", "fine_labels",
    "fine_label_names", 100, 50_000,
)  # fmt: skip
TEST_ROWS = 10_000


def find_batches(data_dir: Path, layout: CifarLayout) -> Path | None:
    """The folder holding the batch files: DIR/<official folder> or DIR itself."""
    for candidate in (data_dir / layout.folder, data_dir):
        if (candidate / layout.test_file).is_file():
            return candidate
    return None


def _locate_or_download(data_dir: Path, layout: CifarLayout, download: bool) -> Path:
    folder = find_batches(data_dir, layout)
    if folder is not None:
        return folder
    where = f"{data_dir}/{layout.folder}/"
    if not download or offline():
        raise ResnetsError(
            f"{layout.title} not found in {data_dir} and downloads are off; put the official "
            f"python batches in {where} or pass --data-dir to where they are"
        )
    try:
        download_archive(layout.url, layout.md5, data_dir, layout.title)
    except ResnetsError as e:
        raise ResnetsError(f"{e}; or put the official python batches in {where}") from None
    folder = find_batches(data_dir, layout)
    if folder is None:
        raise ResnetsError(f"the {layout.title} archive did not contain {layout.folder}/")
    return folder


def read_batch(path: Path, layout: CifarLayout, expected_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (N, 3, 32, 32) uint8 images and labels, checked by structure."""
    if not path.is_file():
        raise ResnetsError(f"{layout.title} batch file {path} is missing; re-download the dataset")
    batch = safe_load(path.read_bytes(), source=str(path))
    if not isinstance(batch, dict):
        raise ResnetsError(f"{path} is not a {layout.title} batch (expected a dict)")
    # Official files load with str keys (latin1); some re-serialised copies use bytes keys.
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(layout.label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise ResnetsError(f"{path} lacks 'data' or '{layout.label_key}'; not a {layout.title} batch")
    if data.dtype != np.uint8 or data.shape != (expected_rows, 3072):
        raise ResnetsError(
            f"{path}: data is {data.dtype} {data.shape}, expected uint8 ({expected_rows}, 3072); "
            "the file is truncated or corrupt"
        )
    labels = np.asarray(labels)
    if labels.shape != (expected_rows,) or not np.issubdtype(labels.dtype, np.integer):
        raise ResnetsError(f"{path}: expected {expected_rows} integer labels, got {labels.shape}")
    if labels.min() < 0 or labels.max() >= layout.num_classes:
        raise ResnetsError(f"{path}: labels outside 0..{layout.num_classes - 1}; corrupt file")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(folder: Path, layout: CifarLayout) -> list[str]:
    path = folder / layout.meta_file
    if path.is_file():
        meta = safe_load(path.read_bytes(), source=str(path))
        if isinstance(meta, dict):
            names = meta.get(layout.names_key) or meta.get(layout.names_key.encode())
            if isinstance(names, list) and len(names) == layout.num_classes:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(layout.num_classes)]


def load_cifar(data_dir: Path, layout: CifarLayout, download: bool = True) -> Dataset:
    """Read the official python batches of a CIFAR variant (downloading them if allowed)."""
    folder = _locate_or_download(data_dir, layout, download)
    parts = [read_batch(folder / f, layout, layout.rows_per_train_file) for f in layout.train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(folder / layout.test_file, layout, TEST_ROWS)
    return Dataset(
        name=layout.title.lower().replace("-", ""),
        train=ImageData(torch.from_numpy(train_x), torch.from_numpy(train_y)),
        test=ImageData(torch.from_numpy(test_x), torch.from_numpy(test_y)),
        classes=_class_names(folder, layout),
        crop_padding=4,
        flip=True,
    )


@register("cifar10", needs_dir=True, description="CIFAR-10, official python batches")
def load_cifar10(data_dir: Path, download: bool = True) -> Dataset:
    """CIFAR-10: 50,000 training and 10,000 test images, 3x32x32, 10 classes."""
    return load_cifar(data_dir, CIFAR10, download)


@register("cifar100", needs_dir=True, description="CIFAR-100, official python batches")
def load_cifar100(data_dir: Path, download: bool = True) -> Dataset:
    """CIFAR-100: 50,000 training and 10,000 test images, 3x32x32, 100 fine classes."""
    return load_cifar(data_dir, CIFAR100, download)
