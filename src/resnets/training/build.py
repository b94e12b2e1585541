"""The model a run trains: built and seeded, checkpointed where it would not fit, on its device."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset, StreamedDataset
from ..errors import ResnetsError
from ..models import Network, create_model
from ..models.interop import load_pretrained
from . import distributed
from .config import TrainConfig
from .ghost_bn import use_ghost_batchnorm
from .loaders import first_batch
from .memory import CheckpointingChoice, choose_checkpointing, keep_freed_blocks, map_checkpointed_activations
from .step import FastPath


def build_model(cfg: TrainConfig, data: Dataset | StreamedDataset) -> Network:
    """The config's model, sized for the dataset's channels and classes, seeded, fitted to the data."""
    model = seeded_model(cfg, data.num_classes, tuple(data.image_shape))
    if model.init_images:  # LSUV's layer scales, a whitening stem: fitted to the first training images
        model.init_from_data(first_batch(data, min(model.init_images, len(data.train))))
    return model


def seeded_model(cfg: TrainConfig, num_classes: int, image_shape: tuple[int, ...]) -> Network:
    """The config's model for these classes and (C, H, W) images, seeded; nothing fitted to data yet."""
    torch.manual_seed(cfg.seed)
    options = {"in_channels": image_shape[0], **cfg.model_options}
    model = create_model(cfg.model, num_classes=num_classes, **options)
    smallest = model.min_input_size
    if min(image_shape[1:]) < smallest:
        size = "x".join(map(str, image_shape[1:]))
        raise ResnetsError(
            f"{cfg.model} needs images of at least {smallest}x{smallest} pixels; {cfg.dataset}'s are {size}"
        )
    return model


@dataclass(frozen=True)
class Memory:
    """How the model's activations are kept: checkpointing and where the CPU allocates them."""

    checkpointing: CheckpointingChoice
    mmap_threshold: int | None
    heap_kept: bool = False  # freed CPU memory kept for the next step (memory.keep_freed_blocks)

    def record(self, model: Network) -> dict:
        """config.json's "checkpointing" entry."""
        mib = self.mmap_threshold / 2**20 if self.mmap_threshold else None
        return {"segments": model.checkpoint_segments, "auto": self.checkpointing.auto,
                "activation_gib": self.checkpointing.estimate_gib, "mmap_threshold_mib": mib,
                "heap_kept": self.heap_kept}  # fmt: skip


def choose_checkpointing_for(
    model: Network, cfg: TrainConfig, shape: tuple[int, int, int], micro_batch: int, device: torch.device,
    announce: bool,
) -> CheckpointingChoice:  # fmt: skip
    """Checkpoint very deep nets where their activations would not fit (resnet1202 at batch 128: 8 GB)."""
    segments = cfg.model_options.get("checkpoint_segments")
    ckpt = choose_checkpointing(segments, model, shape, micro_batch, device)
    if ckpt.auto:
        model.set_checkpointing(None)
        if announce:
            print(f"resnets: {cfg.model} at batch {micro_batch}: {ckpt.reason()}", file=sys.stderr)
    return ckpt


def fit_in_memory(
    model: Network, cfg: TrainConfig, ckpt: CheckpointingChoice, shape: tuple[int, int, int],
    micro_batch: int, fast: FastPath, device: torch.device,
) -> tuple[Memory, FastPath]:  # fmt: skip
    """Eager training for checkpointed nets, glibc told to map their large activations, others' kept."""
    if model.checkpoint_segments and fast.compile:
        # torch.compile cannot trace the checkpoint's recompute context (which keeps BN
        # statistics from being updated twice): a checkpointed run trains eagerly.
        if cfg.compile or cfg.cuda_graphs:
            flag = "--cuda-graphs" if cfg.cuda_graphs else "--compile"
            raise ResnetsError(f"{flag} cannot be combined with activation checkpointing; leave it out")
        fast = dataclasses.replace(fast, compile=False, graphs=False)
    mapped = map_checkpointed_activations(model, shape, micro_batch, fast.precision, device)
    kept = device.type == "cpu" and mapped is None and not model.checkpoint_segments
    return Memory(ckpt, mapped, kept and keep_freed_blocks()), fast


def place_model(
    model: nn.Module, cfg: TrainConfig, ctx: distributed.Context, resume: bool, channels_last: bool
) -> nn.Module:
    """Starting weights, SyncBatchNorm, device and memory format."""
    if cfg.init_from and not resume:
        load_pretrained(model, cfg.init_from)
    if cfg.sync_bn:
        model = distributed.sync_batchnorm(model, ctx)
    if cfg.bn_group:
        model = use_ghost_batchnorm(model, cfg.bn_group)
    model = model.to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
