"""Image files with labels, read one at a time: the streaming path's view of a dataset.

Paths live in one NumPy byte array rather than a list of str, so DataLoader workers forked
from the trainer share the index instead of copying it page by page as reference counts change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetsError

# torchvision's ImageNet statistics: what pretrained torchvision/timm weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageSource:
    """Anything that can hand out the encoded bytes and label of image ``i``."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, i: int) -> bytes:
        """The encoded image file ``i``."""
        raise NotImplementedError

    def name(self, i: int) -> str:
        """Where image ``i`` comes from, for messages."""
        raise NotImplementedError

    def subset(self, n: int, seed: int = 0) -> ImageSource:
        """A seeded random subset of ``n`` images, in their original order."""
        if n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return self.take(keep)

    def take(self, index: np.ndarray) -> ImageSource:
        """The images at ``index``."""
        raise NotImplementedError


@dataclass
class FileList(ImageSource):
    """Image files under ``root`` (relative paths as UTF-8 bytes) and their labels."""

    root: str
    paths: np.ndarray  # dtype S: one fixed-width byte string per file
    labels: np.ndarray  # int64

    def read(self, i: int) -> bytes:
        with open(self.name(i), "rb") as f:
            return f.read()

    def name(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i].decode())

    def take(self, index: np.ndarray) -> FileList:
        return FileList(self.root, self.paths[index], self.labels[index])


def _files_of(folder: Path) -> list[str]:
    # Every visible file: one that is not an image is named when it is read, not silently passed over.
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_file())


def list_folder(folder: Path, classes: Sequence[str] | None = None) -> tuple[FileList, list[str]]:
    """The images of ``folder/<class>/<image>`` (classes sorted by name unless given)."""
    if classes is None:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ResnetsError(f"{folder} has no class folders; expected {folder}/<class>/<image>")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        if not (folder / cls).is_dir():
            continue
        for name in _files_of(folder / cls):
            paths.append(f"{cls}/{name}".encode())
            labels.append(label)
    if not paths:
        raise ResnetsError(f"no images found under {folder}")
    return FileList(str(folder), np.array(paths), np.array(labels, dtype=np.int64)), list(classes)


def read_file_list(path: Path, classes: Sequence[str] | None = None) -> tuple[FileList, list[str]]:
    """A text file of ``relative/path.jpg<whitespace>class`` lines, paths relative to its folder."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ResnetsError(f"cannot read file list {path}: {e}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise ResnetsError(f"{path}:{number}: expected 'PATH CLASS', got {line.strip()!r}")
        rows.append(parts)
    if not rows:
        raise ResnetsError(f"file list {path} names no images")
    if classes is None:
        classes = sorted({cls for _, cls in rows})
    index = {cls: i for i, cls in enumerate(classes)}
    unknown = sorted({cls for _, cls in rows if cls not in index})
    if unknown:
        raise ResnetsError(f"{path}: class(es) {', '.join(unknown[:5])} are not in the training list")
    paths = np.array([p.encode() for p, _ in rows])
    labels = np.array([index[cls] for _, cls in rows], dtype=np.int64)
    return FileList(str(path.parent), paths, labels), list(classes)


def stratified_split(files: ImageSource, test_fraction: float, seed: int) -> tuple[ImageSource, ImageSource]:
    """A seeded split that keeps ``test_fraction`` of every class for testing."""
    g = torch.Generator().manual_seed(seed)  # torch's generator: the split runs made before streaming had
    test = np.zeros(len(files), dtype=bool)
    for c in np.unique(files.labels):
        idx = np.flatnonzero(files.labels == c)
        idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        test[idx[: round(len(idx) * test_fraction) if len(idx) > 1 else 0]] = True
    if test.all() or not test.any():
        raise ResnetsError("too few images to split into train and test; add a test/ folder")
    return files.take(np.flatnonzero(~test)), files.take(np.flatnonzero(test))


@dataclass
class StreamedDataset:
    """A train and a test split read from files as training goes: ImageNet-size data."""

    name: str
    train: ImageSource
    test: ImageSource
    classes: list[str]
    image_size: int = 224  # training crop (RandomResizedCrop)
    test_size: int = 224  # evaluation centre crop, after resizing the short side to test_size / 0.875
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_padding: int = 0
    flip: bool = True
    streamed: bool = True

    def __post_init__(self) -> None:
        for split, data in (("train", self.train), ("test", self.test)):
            if len(data) == 0:
                raise ResnetsError(f"{self.name}: the {split} split is empty")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a training batch."""
        return 3, self.image_size, self.image_size

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)
