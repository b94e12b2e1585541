"""Batches from a dataset held whole on the device, augmented a batch at a time on tensors.

Every random choice of an epoch (order, crop offsets, flips) is drawn up front from a
generator seeded by (seed, epoch), so any batch of any epoch can be rebuilt exactly:
that is what makes a resumed run identical to an uninterrupted one.
RandAugment, TrivialAugment, mixup and CutMix (augment.py) draw from a generator of their own per
batch, seeded by (seed, epoch, batch, rank), for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .augment import BatchAugment
from .dataset import ImageData


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) to float, per-channel standardised; mean/std are on the 0..255 scale."""
    return (images.float() - mean) / std


def random_crop(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut the original size at per-image ``offsets`` (B, 2)."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # (B, W)
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


class TensorLoader:
    """Yields (normalised float images, labels) batches of an ``ImageData`` on one device."""

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        train: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        alternate_flip: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        augment: BatchAugment | None = None,
        size_at: Callable[[int], int] | None = None,
    ) -> None:
        self.data = data.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        c = data.images.shape[1]
        self.mean = torch.tensor(mean, device=device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, c, 1, 1) * 255
        self.train = train
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.alternate_flip = alternate_flip
        self.seed = seed
        self.channels_last = channels_last
        self.rank, self.world = shard
        self.augment = augment if train else None  # RandAugment, mixup...: training batches only
        self.size_at = size_at  # progressive resizing: the side of each epoch's training images

    def __len__(self) -> int:
        """Batches per epoch (training drops the last partial batch, evaluation keeps it)."""
        n = len(self.data)
        if self.train:
            return n // (self.batch_size * self.world)
        return -(-n // self.batch_size)

    def _plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        n = len(self.data)
        if not self.train:
            return torch.arange(n), None, None
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        if self.alternate_flip:
            # airbench's alternating flip: a random half of the images starts mirrored and every
            # image swaps each epoch, so any two epochs in a row show both sides of every image.
            first = torch.rand(n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, -1))) < 0.5
            flips = first[order] ^ bool(epoch % 2)
        return order, offsets, flips

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch``, beginning at batch index ``start``."""
        order, offsets, flips = self._plan(epoch)
        size = self.size_at(epoch) if self.train and self.size_at is not None else None
        for i in range(start, len(self)):
            # With several processes, global batch i is split into equal per-rank slices.
            lo = (i * self.world + self.rank) * self.batch_size if self.train else i * self.batch_size
            pos = slice(lo, lo + self.batch_size)
            idx = order[pos].to(self.device, non_blocking=True)
            x = self.data.images[idx]
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, offsets[pos].to(self.device))
            if self.flip:
                mask = flips[pos].to(self.device)[:, None, None, None]
                x = torch.where(mask, x.flip(3), x)
            y = self.data.labels[idx]
            if self.augment is not None:
                draws = self.augment.draws(epoch, i, self.rank)
                x = self.augment.images(x, draws)
            x = normalize(x, self.mean, self.std)
            if size is not None and size != x.shape[-1]:
                # The whole (cropped, flipped) image at a lower resolution, as the stream loader's
                # smaller crops show it; antialiased, so a small image is not an aliased one.
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if self.augment is not None:
                x, y = self.augment.mix(x, y, draws)  # y: soft targets (B, classes) where mixed
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def close(self) -> None:
        """Nothing to release: the same interface as StreamLoader."""
