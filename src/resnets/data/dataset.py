"""A dataset as whole uint8 tensors, and the registry of sources that produce one."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ResnetsError, unknown_name


@dataclass
class ImageData:
    """One split: images as a uint8 tensor (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int, seed: int = 0) -> ImageData:
        """A seeded random subset of ``n`` images (all of them if n >= len)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        idx = idx.sort().values
        return ImageData(self.images[idx], self.labels[idx])

    def split_off(self, n: int, seed: int = 0) -> tuple[ImageData, ImageData]:
        """(the rest, ``n`` seeded random images held out): a validation set carved from training data."""
        if not 0 < n < len(self):
            raise ResnetsError(f"cannot hold out {n} of {len(self)} images; give 0 < n < {len(self)}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held, rest = order[:n].sort().values, order[n:].sort().values
        return ImageData(self.images[rest], self.labels[rest]), ImageData(
            self.images[held], self.labels[held]
        )

    def to(self, device: torch.device | str) -> ImageData:
        """The same split on another device."""
        return ImageData(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    """A train and a test split with class names and the augmentation that suits them."""

    name: str
    train: ImageData
    test: ImageData
    classes: list[str]
    crop_padding: int = 0  # pixels of zero padding for the random crop (the paper: 4 on 32x32)
    flip: bool = False  # horizontal flips (not for digits)
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ResnetsError(f"{self.name}: train and test images differ in shape")
        for split, data in (("train", self.train), ("test", self.test)):
            if len(data) == 0:
                raise ResnetsError(f"{self.name}: the {split} split is empty")
            lo, hi = int(data.labels.min()), int(data.labels.max())
            if lo < 0 or hi >= len(self.classes):
                raise ResnetsError(
                    f"{self.name}: {split} labels span {lo}..{hi} but there are {len(self.classes)} classes"
                )
        if not self.mean:
            self.mean, self.std = channel_stats(self.train.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


STATS_CHUNK_VALUES = 2**22  # pixel values converted to float64 at a time: 32 MiB, at any image size


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale, summed in float64 by chunks.

    A chunk is a fixed number of pixel values, not of images: 4,096 images at 224 px were 4.9 GB
    of float64 (twice, with the squares), more than the decoded images themselves.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    chunk = max(1, STATS_CHUNK_VALUES // max(1, images[0].numel())) if len(images) else 1
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = images.numel() // c
    mean = total / n
    var = (squares / n - mean * mean) * n / max(n - 1, 1)
    std = var.clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).clamp_min(1e-3).tolist())


Loader = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSource:
    """How to get a dataset: a loader and whether it needs a data folder."""

    name: str
    load: Loader
    needs_dir: bool
    description: str


_SOURCES: dict[str, DatasetSource] = {}


def register(name: str, needs_dir: bool, description: str) -> Callable[[Loader], Loader]:
    """Decorator that adds a dataset loader to the registry."""

    def wrap(fn: Loader) -> Loader:
        _SOURCES[name] = DatasetSource(name, fn, needs_dir, description)
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by ``--dataset``."""
    return sorted(_SOURCES)


def get_source(name: str) -> DatasetSource:
    """The source of a dataset name, or a clear error that suggests close names."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise unknown_name("dataset", name, _SOURCES) from None


def default_data_dir() -> Path:
    """$RESNETS_DATA_DIR, or ~/.cache/resnets/data."""
    env = os.environ.get("RESNETS_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "resnets" / "data"


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, **options: object) -> Dataset:
    """Load a dataset by name; ``data_dir`` is where its files are (or will be downloaded)."""
    source = get_source(name)
    accepted = [p for p in inspect.signature(source.load).parameters if p != "data_dir"]
    for key in options:
        if key not in accepted:
            raise unknown_name(f"option for dataset {name}", key, accepted)
    if not source.needs_dir:
        return source.load(**options)
    if isinstance(data_dir, str) and "://" in data_dir:  # a URL (shards): Path would fold its '//'
        return source.load(data_dir, **options)
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    # A study loads the same files once per model: keep the last decoded folder dataset while no
    # file under the folder changed (decoding an image folder can take longer than training a net).
    # Streamed datasets are not kept: listing them again is cheap, stat-ing a million files is not.
    try:
        key = (name, str(folder.resolve()), repr(sorted(options.items())))
        if _last_loaded.get("key") == key and _last_loaded.get("files") == _signature(folder):
            return _last_loaded["data"]
    except OSError:
        key = None
    data = source.load(folder, **options)
    _last_loaded.clear()
    if key is not None and not getattr(data, "streamed", False):
        with contextlib.suppress(OSError):
            _last_loaded.update(key=key, files=_signature(folder), data=data)
    return data


_last_loaded: dict[str, object] = {}


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Path, size and modification time of every file under ``folder``."""
    out = []
    for root, _, files in os.walk(folder):
        for f in files:
            st = os.stat(os.path.join(root, f))
            out.append((os.path.join(root, f), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))
