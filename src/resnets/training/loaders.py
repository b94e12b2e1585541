"""A run's training and test batches: whole tensors in memory, or files streamed by workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data import Dataset, StreamedDataset, StreamLoader, TensorLoader
from ..data.augment import BatchAugment
from ..data.stream import default_workers
from ..data.transforms import DECODER
from ..errors import ResnetsError
from .config import TrainConfig
from .recipes import RECIPES
from .schedules import resolution_at

Loader = TensorLoader | StreamLoader
# The held-out images do not depend on the run's seed: every member of a sweep is judged on the same ones.
VAL_SEED = 0


@dataclass
class Loaders:
    """The two loaders of a run and what config.json records about them."""

    train: Loader
    test: Loader
    train_images: int
    info: dict[str, Any]
    val: Loader | None = None  # --val-split: training images held out for choosing settings

    def all(self) -> list[Loader]:
        """Every loader of the run (to close them)."""
        return [x for x in (self.train, self.test, self.val) if x is not None]


def make_loaders(
    cfg: TrainConfig, data: Dataset | StreamedDataset, rank: int, world: int, device: torch.device
) -> Loaders:
    """Per-rank training batches of ``batch_size / world`` images and whole-batch test passes."""
    rank_batch = cfg.batch_size // world
    train_split, val_split = training_split(cfg, data)
    # The memory format is set once the fast path is chosen (set_channels_last).
    common = {"mean": data.mean, "std": data.std, "device": device, "channels_last": bool(cfg.channels_last)}
    info: dict[str, Any] = {"kind": "memory", "reason": getattr(data, "loader_reason", "built in")}
    augment = batch_augment(cfg, data.num_classes)
    if augment is not None:
        info["augment"] = augment.record()
    if isinstance(data, StreamedDataset):
        workers = cfg.workers if cfg.workers is not None else default_workers(world)
        train = StreamLoader(
            train_split, rank_batch, train=True, image_size=data.image_size, seed=cfg.seed,
            shard=(rank, world), workers=workers, augment=augment, **common,
        )  # fmt: skip
        test = StreamLoader(data.test, cfg.batch_size, image_size=data.test_size, workers=workers, **common)
        info |= {"kind": "stream", "workers": workers, "test_size": data.test_size, "decoder": DECODER}
    else:
        train = TensorLoader(
            train_split, rank_batch, train=True, flip=data.flip, alternate_flip=cfg.alternate_flip,
            crop_padding=data.crop_padding if cfg.crop_padding is None else cfg.crop_padding,
            seed=cfg.seed, shard=(rank, world), augment=augment, **common,
        )  # fmt: skip
        test = TensorLoader(data.test, cfg.batch_size, **common)
    val = TensorLoader(val_split, cfg.batch_size, **common) if val_split is not None else None
    if val_split is not None:
        info["val_images"] = len(val_split)
    if len(train) == 0:
        raise ResnetsError(
            f"batch size {cfg.batch_size} is larger than the training set "
            f"({len(train_split)} images); lower --batch-size"
        )
    return Loaders(train, test, len(train_split), info, val)


def batch_augment(cfg: TrainConfig, num_classes: int) -> BatchAugment | None:
    """What the training batches get beyond crop and flip (--randaugment, --mixup, ...), or None."""
    policy = "randaugment" if cfg.randaugment else "trivialaugment" if cfg.trivialaugment else None
    if policy is None and not cfg.mixup and not cfg.cutmix:
        return None
    return BatchAugment(num_classes, cfg.seed, policy, cfg.mixup or None, cfg.cutmix or None)


def training_split(cfg: TrainConfig, data: Dataset | StreamedDataset) -> tuple[Any, Any]:
    """(the images a run trains on, its validation images or None): --val-split, then --train-subset."""
    train_split, val_split = held_out(data, cfg.val_split)
    return (train_split.subset(cfg.train_subset, cfg.seed) if cfg.train_subset else train_split), val_split


def held_out(data: Dataset | StreamedDataset, n: int | None) -> tuple[Any, Any]:
    """(training split, validation split or None): ``n`` training images held out, seeded by VAL_SEED."""
    if n is None:
        return data.train, None
    if isinstance(data, StreamedDataset):
        raise ResnetsError("--val-split needs an in-memory dataset; a streamed one has a validation folder")
    return data.train.split_off(n, VAL_SEED)


def plan_resolutions(loader: Loader, cfg: TrainConfig, epochs: int, final: int) -> list[int] | None:
    """Progressive resizing: the training crop of each epoch, from --resize-from up to ``final``."""
    if cfg.resize_from is None:
        return None
    if cfg.resize_from >= final and cfg.resize_from == RECIPES.get(cfg.recipe or "", {}).get("resize_from"):
        return None  # a recipe's plan for 32 px images (fast-muon) on smaller ones: they train whole
    if cfg.resize_from > final:
        raise ResnetsError(f"--resize-from {cfg.resize_from} is larger than the final crop {final}; "
                           "progressive resizing grows the crop")  # fmt: skip
    sizes = [resolution_at(e, epochs, cfg.resize_from, final) for e in range(epochs)]
    loader.size_at = lambda epoch: sizes[min(epoch, len(sizes) - 1)]
    return sizes


def first_batch(data: Dataset | StreamedDataset, n: int) -> torch.Tensor:
    """``n`` normalised training images (in their epoch-0 order): what LSUV calibrates on."""
    if isinstance(data, StreamedDataset):
        loader = StreamLoader(data.train, min(n, len(data.train)), data.mean, data.std, train=True,
                              image_size=data.image_size, workers=0)  # fmt: skip
    else:
        loader = TensorLoader(data.train, n, data.mean, data.std, "cpu")
    return next(iter(loader))[0]


def split_loader(
    data: Dataset | StreamedDataset, split, batch_size: int, mean, std, device: torch.device
) -> Loader:
    """Evaluation batches of one split (``data.train`` or ``data.test``), in memory or streamed."""
    if isinstance(data, StreamedDataset):
        return StreamLoader(split, batch_size, mean, std, device, image_size=data.test_size,
                            workers=default_workers())  # fmt: skip
    return TensorLoader(split, batch_size, mean, std, device)
