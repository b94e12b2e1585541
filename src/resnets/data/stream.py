"""Batches decoded from files by DataLoader workers: data larger than memory.

The same contract as ``TensorLoader``: ``epoch(e, start)`` yields the normalised batches of
epoch ``e`` from batch ``start`` on, identical however the run was interrupted. The order is
a permutation seeded by (seed, epoch) and every image's crop and flip come from its own seed
(seed, epoch, position), so neither the number of workers nor a resume changes a single
pixel. Workers hand over uint8 batches; conversion and normalisation happen on the device.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from .augment import BatchAugment
from .files import ImageSource
from .loader import epoch_seed, normalize
from .transforms import eval_image, train_image

RETRIES = 8  # unreadable files in a row replaced by their successors before giving up


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the image at ``position`` of ``epoch``'s order."""
    return (epoch_seed(seed, epoch) * 1_000_033 + position) % (2**63 - 1)


class DecodedImages(torch.utils.data.Dataset):
    """Keys (index, seed, size) to (uint8 image, label); seed -1 means the evaluation crop."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[np.ndarray, int]:
        index, seed, size = key
        for attempt in range(RETRIES):
            # A bad file among a million must not end a week-long run: say which and use the next.
            i = (index + attempt) % len(self.source)
            try:
                data = self.source.read(i)
                image = eval_image(data, size) if seed < 0 else train_image(data, size, seed)
                return image, int(self.source.labels[i])
            except Exception as e:  # any decoder failure is the file's fault
                warnings.warn(
                    f"skipping unreadable image {self.source.name(i)} ({type(e).__name__}: {e})",
                    stacklevel=1,
                )
        raise RuntimeError(f"{RETRIES} unreadable images in a row from {self.source.name(index)} on")


def collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack uint8 images and labels."""
    images = torch.from_numpy(np.stack([s[0] for s in samples]))
    return images, torch.tensor([s[1] for s in samples], dtype=torch.int64)


class EpochPlan(torch.utils.data.Sampler):
    """The batches of keys of one epoch from one batch on; set before each pass."""

    def __init__(self, batches: Callable[[int, int], Iterator[list[tuple[int, int, int]]]]) -> None:
        self.batches = batches
        self.epoch, self.start = 0, 0

    def __iter__(self):
        return self.batches(self.epoch, self.start)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes one image at a time; threads would fight the trainer's


def default_workers(world: int = 1) -> int:
    """Decoding processes per training process: the cores left to it, at least one, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // max(world, 1) - 1))


class StreamLoader:
    """Yields (normalised float images, labels) of an ``ImageSource`` decoded by worker processes."""

    def __init__(
        self,
        source: ImageSource,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        train: bool = False,
        image_size: int = 224,
        seed: int = 0,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        workers: int = 1,
        size_at: Callable[[int], int] | None = None,
        augment: BatchAugment | None = None,
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.train, self.seed, self.channels_last = train, seed, channels_last
        self.rank, self.world = shard
        self.augment = augment if train else None  # RandAugment, mixup...: on each uint8 batch, here
        self.size_at = size_at or (lambda epoch: image_size)
        self.plan = EpochPlan(self._keys)
        self.workers = workers
        self._loader = torch.utils.data.DataLoader(
            DecodedImages(source), batch_sampler=self.plan, num_workers=workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init if workers else None,
            persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        )  # fmt: skip

    def __len__(self) -> int:
        """Batches per epoch (training drops the last partial batch, evaluation keeps it)."""
        n = len(self.source)
        return n // (self.batch_size * self.world) if self.train else -(-n // self.batch_size)

    def _keys(self, epoch: int, start: int) -> Iterator[list[tuple[int, int, int]]]:
        size = self.size_at(epoch)
        if not self.train:
            for i in range(start, len(self)):
                lo = i * self.batch_size
                yield [(j, -1, size) for j in range(lo, min(lo + self.batch_size, len(self.source)))]
            return
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(len(self.source), generator=g)  # a tensor: 8 bytes an image, not a list's 36
        for i in range(start, len(self)):
            # As in TensorLoader, global batch i is cut into equal per-rank slices.
            lo = (i * self.world + self.rank) * self.batch_size
            indices = order[lo : lo + self.batch_size].tolist()
            yield [(j, sample_seed(self.seed, epoch, lo + k), size) for k, j in enumerate(indices)]

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch``, beginning at batch index ``start``."""
        self.plan.epoch, self.plan.start = epoch, start
        for i, (images, labels) in enumerate(self._loader, start):
            x, y = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            if self.augment is not None:
                draws = self.augment.draws(epoch, i, self.rank)
                x = self.augment.images(x, draws)
            x = normalize(x, self.mean, self.std)
            if self.augment is not None:
                x, y = self.augment.mix(x, y, draws)  # y: soft targets (B, classes) where mixed
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def close(self) -> None:
        """Stop the worker processes (persistent ones otherwise live as long as this loader)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()  # DataLoader has no public way to end persistent workers
            self._loader._iterator = None
