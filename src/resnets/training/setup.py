"""What a run decides before its first step, in one record: its length, batches, layout and memory.

The decisions depend on the data (steps per epoch, image shape) and on the seeded model (what
it costs in memory, which fast path measures fastest), so ``decide`` loads the one and builds the
other, in the order that keeps the random stream of a fresh run as it always was.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import load_dataset
from ..errors import ResnetsError
from ..models import get_spec
from . import distributed
from .autotune import choose_fast_path, device_name
from .build import Memory, build_model, choose_checkpointing_for, fit_in_memory
from .config import TrainConfig
from .finetune import freeze
from .inputs import normalisation
from .loaders import Loaders, make_loaders, plan_resolutions
from .optim import parameter_settings
from .schedules import default_warmup
from .step import FastPath
from .work import work_record

DEFAULT_EPOCHS = 15


@dataclass(frozen=True)
class Plan:
    """How long the run is and how often it reports, in steps."""

    total: int
    steps_per_epoch: int
    eval_every: int
    checkpoint_every: int
    warmup: int


@dataclass(frozen=True)
class Setup:
    """Every decision a run makes before its first step; nothing in it changes while it trains."""

    cfg: TrainConfig
    ctx: distributed.Context  # this process's rank, how many there are, and its device
    run_dir: Path
    loaders: Loaders  # training and test batches, in the memory format ``fast`` chose
    plan: Plan
    fast: FastPath  # precision, memory layout and whether the forward pass is compiled
    memory: Memory  # activation checkpointing, and where the CPU allocates activations
    eval_flip: bool  # test-time mirror averaging: only for data trained with mirrored images
    resolved: dict[str, Any]  # all of it as config.json's "resolved" record keeps it


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The run's length in steps: --iterations, or its epochs' worth of batches."""
    return cfg.iterations or (cfg.epochs or DEFAULT_EPOCHS) * steps_per_epoch


def plan_run(cfg: TrainConfig, steps_per_epoch: int) -> Plan:
    """Length, evaluation and checkpoint intervals and warm-up of a run of this many steps per epoch."""
    total = total_steps(cfg, steps_per_epoch)
    eval_every = total if cfg.final_eval_only else cfg.eval_every or steps_per_epoch
    depth = get_spec(cfg.model).depth
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else default_warmup(cfg.schedule, depth, total)
    checkpoint_every = cfg.checkpoint_every or (steps_per_epoch if cfg.final_eval_only else eval_every)
    return Plan(total, steps_per_epoch, eval_every, checkpoint_every, warmup)


def decide(
    cfg: TrainConfig, ctx: distributed.Context, saved: dict[str, Any] | None, eager: bool = False
) -> tuple[Setup, nn.Module]:
    """Load the data, build the seeded model and settle every decision; ``saved``: a resumed run's record,
    ``eager``: the step is not compiled (fused members train through their own vmapped step)."""
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
    data, normalisation_from, said = normalisation(cfg, data, saved)
    if said and ctx.main:
        print(f"resnets: {said}", file=sys.stderr)
    loaders = make_loaders(cfg, data, ctx.rank, ctx.world, ctx.device)
    plan = plan_run(cfg, len(loaders.train))
    sizes = plan_resolutions(loaders.train, cfg, -(-plan.total // plan.steps_per_epoch), data.image_shape[1])
    model = build_model(cfg, data)
    # Frozen before the fast-path trial and the memory plan measure it, and before any weights are
    # loaded into it (loading keeps requires_grad). A --freeze, --layer-decay or name pattern the
    # net cannot take fails here, before config.json is written.
    freeze(model, cfg)
    parameter_settings(model, cfg)
    micro_batch, shape = cfg.batch_size // ctx.world // cfg.accumulate, tuple(data.image_shape)
    work = work_record(model, shape, sizes, saved)  # training FLOPs per image, on the meta device
    ckpt = choose_checkpointing_for(model, cfg, shape, micro_batch, ctx.device, ctx.main)
    if cfg.cuda_graphs and ctx.device.type != "cuda":
        raise ResnetsError(f"--cuda-graphs needs a CUDA device; this run is on {ctx.device.type}")
    # A resumed run keeps the fast path it was measured for (the cache may have changed since).
    tuned = dataclasses.replace(cfg, compile=False, cuda_graphs=False) if eager else cfg
    fast, tuning = choose_fast_path(
        tuned, model, shape, data.num_classes, micro_batch, plan.total * cfg.accumulate, ctx, saved
    )
    memory, fast = fit_in_memory(model, cfg, ckpt, shape, micro_batch, fast, ctx.device)
    for loader in loaders.all():
        loader.channels_last = fast.channels_last
    resolved = {
        "num_classes": data.num_classes, "image_shape": list(data.image_shape),
        "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
        "train_images": loaders.train_images, "test_images": len(data.test),
        "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total, "warmup_steps": plan.warmup,
        "eval_every": plan.eval_every, "checkpoint_every": plan.checkpoint_every,
        "device": str(ctx.device), "machine": started_on(saved, ctx.device),
        "crop_padding": data.crop_padding if cfg.crop_padding is None else cfg.crop_padding,
        "flip": data.flip,
        "torch": torch.__version__, "processes": ctx.world, "precision": fast.precision,
        "channels_last": fast.channels_last, "compile": fast.compile,
        "cuda_graphs": fast.graphs, "fast_path": tuning,
        "eval_flip": cfg.eval_flip and data.flip, "eval_translate": cfg.eval_translate,
        # The free memory behind an automatic choice is in its stderr line, not here: a re-run
        # of a finished run must leave config.json byte for byte as it was.
        "checkpointing": memory.record(model), "loader": loaders.info,
        "normalisation_from": normalisation_from, **work,
    } | ({"train_sizes": sizes} if sizes else {})  # fmt: skip
    setup = Setup(cfg, ctx, Path(cfg.out), loaders, plan, fast, memory, cfg.eval_flip and data.flip, resolved)
    return setup, model


def started_on(saved: dict[str, Any] | None, device: torch.device) -> str:
    """The CPU model (family/model numbers) or GPU the run started on; a resumed run keeps its first."""
    if saved and isinstance(saved.get("machine"), str):
        return saved["machine"]
    key = ((saved or {}).get("fast_path") or {}).get("key")
    if saved and isinstance(key, str):  # a run started before "machine" was recorded: its trial's device
        return key.split(" | ")[0]
    return device_name(device)
