"""The training loop: SGD on a dataset held on the device, evaluated, checkpointed, resumable.

Everything a resumed run needs is either in the checkpoint (weights, optimizer, step, RNG,
running sums, the weight average) or a pure function of the config and the step (data order,
augmentation, learning rate), so a run killed and resumed ends with the same weights as one
that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, TensorLoader, load_dataset
from ..diagnostics import GradientFlow
from ..errors import ResnetsError
from ..io import exclusive, remove_stale_temporaries
from ..models import create_model, get_spec
from ..models.init import lsuv_
from ..models.interop import load_pretrained
from . import distributed
from .checkpoint import (
    WEIGHTS_FILE,
    checkpoint_dir,
    list_checkpoints,
    load_into,
    load_latest_checkpoint,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig
from .ema import make_ema
from .evaluate import evaluate
from .memory import choose_checkpointing, map_checkpointed_activations
from .precision import check_precision, grad_scaler, resolve_precision
from .progress import Progress
from .rundir import (
    CONFIG_FILE,
    GRADIENTS_FILE,
    METRICS_FILE,
    append_line,
    check_run_dir,
    rewrite_log,
    write_config,
)
from .schedules import default_warmup, lr_at
from .step import compile_forward, forward_backward, make_optimizer, resolve_fast_path

__all__ = ["CONFIG_FILE", "GRADIENTS_FILE", "METRICS_FILE", "Diverged", "Interrupted", "RunResult", "train"]

DEFAULT_EPOCHS = 15
LSUV_BATCH = 128  # training images LSUV scales the layers on (Mishkin & Matas used 32-1024)


class Diverged(ResnetsError):
    """The loss became NaN or infinite."""


class Interrupted(ResnetsError):
    """Ctrl-C: the run was checkpointed and can be resumed."""


def resolve_device(name: str) -> torch.device:
    """'auto' is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ResnetsError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResnetsError("--device cuda but no CUDA GPU is available; use --device cpu")
    return device


def build_model(cfg: TrainConfig, data: Dataset) -> nn.Module:
    """The config's model, sized for the dataset's channels and classes, seeded."""
    torch.manual_seed(cfg.seed)
    options = {"in_channels": data.image_shape[0], **cfg.model_options}
    model = create_model(cfg.model, num_classes=data.num_classes, **options)
    if getattr(model, "init", None) == "lsuv":  # LSUV rescales each layer on a batch of training images
        x, _ = next(iter(TensorLoader(data.train, LSUV_BATCH, data.mean, data.std, "cpu")))
        lsuv_(model, x)
    return model


@dataclass
class Running:
    """Sums of training loss and errors since the last evaluation."""

    loss: float = 0.0
    wrong: int = 0
    seen: int = 0
    seconds: float = 0.0  # time spent in training steps, for images/s

    def add(self, loss: float, wrong: int, n: int) -> None:
        self.loss += loss * n
        self.wrong += wrong
        self.seen += n


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    metrics: dict[str, Any]
    model: nn.Module = field(repr=False)
    already_finished: bool = False  # resumed after its last step: nothing was trained


class _SigintFlag:
    """Turns Ctrl-C into a flag checked between steps, so a checkpoint is never half a step."""

    def __init__(self) -> None:
        self.raised = False

    @contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.raised:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.raised = True


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Train ``cfg.model`` on ``cfg.dataset``, writing the run directory ``cfg.out``."""
    cfg.validate()
    ctx = distributed.setup(resolve_device(cfg.device))
    try:
        # One writer per run directory: a job submitted twice stops here, naming the holder.
        with exclusive(cfg.out) if ctx.main else contextlib.nullcontext():
            return _train(cfg, ctx, resume, progress and ctx.main)
    finally:
        distributed.teardown(ctx)


def _train(cfg: TrainConfig, ctx: distributed.Context, resume: bool, progress: bool) -> RunResult:
    device = ctx.device
    check_precision(resolve_precision(cfg.precision, device), device)
    if cfg.batch_size % (ctx.world * cfg.accumulate):
        raise ResnetsError(
            f"batch-size {cfg.batch_size} must divide into {ctx.world} processes "
            f"x {cfg.accumulate} micro-batches"
        )
    rank_batch = cfg.batch_size // ctx.world
    spec = get_spec(cfg.model)  # fail on an unknown model before loading any data
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
    run_dir = Path(cfg.out)
    check_run_dir(run_dir, resume)
    if resume and ctx.main:
        for folder in (run_dir, checkpoint_dir(run_dir)):
            remove_stale_temporaries(folder)  # what a kill mid-write left behind
    if resume and not list_checkpoints(run_dir):
        # Killed before its first checkpoint: nothing to restore, so the run starts over.
        print(f"resnets: no checkpoint in {run_dir} yet; starting it from step 0", file=sys.stderr)
        resume = False

    # Data: the whole dataset on the device, augmented in batches.
    train_split = data.train.subset(cfg.train_subset, cfg.seed) if cfg.train_subset else data.train
    loader_kw = {"mean": data.mean, "std": data.std, "device": device, "channels_last": cfg.channels_last}
    train_loader = TensorLoader(
        train_split, rank_batch, train=True, crop_padding=data.crop_padding, flip=data.flip,
        seed=cfg.seed, shard=(ctx.rank, ctx.world), **loader_kw,
    )  # fmt: skip
    test_loader = TensorLoader(data.test, cfg.batch_size, **loader_kw)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ResnetsError(
            f"batch size {cfg.batch_size} is larger than the training set "
            f"({len(train_split)} images); lower --batch-size"
        )
    total = cfg.iterations or (cfg.epochs or DEFAULT_EPOCHS) * steps_per_epoch
    eval_every = cfg.eval_every or steps_per_epoch
    ckpt_every = cfg.checkpoint_every or eval_every
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else default_warmup(cfg.schedule, spec.depth, total)
    )

    pixels = data.image_shape[1] * data.image_shape[2]
    fast = resolve_fast_path(cfg, device, total * cfg.batch_size, pixels)
    model = build_model(cfg, data)
    # Very deep nets (resnet1202 at batch 128: 8 GB of activations) checkpoint by themselves
    # where their activations would not fit; the numbers are the same either way.
    ckpt = choose_checkpointing(
        cfg.model_options.get("checkpoint_segments"), model, tuple(data.image_shape),
        rank_batch // cfg.accumulate, device,
    )  # fmt: skip
    if ckpt.auto:
        model.set_checkpointing(None)
        if ctx.main:
            print(f"resnets: {cfg.model} at batch {rank_batch}: {ckpt.reason()}", file=sys.stderr)
    if getattr(model, "checkpoint_segments", 0) and fast.compile:
        # torch.compile cannot trace the checkpoint's recompute context (which keeps BN
        # statistics from being updated twice): a checkpointed run trains eagerly.
        if cfg.compile:
            raise ResnetsError("--compile cannot be combined with activation checkpointing; use --no-compile")
        fast = dataclasses.replace(fast, compile=False)
    mapped = map_checkpointed_activations(
        model, tuple(data.image_shape), rank_batch // cfg.accumulate, fast.precision, device
    )

    if ctx.main:
        write_config(run_dir, cfg, {
            "num_classes": data.num_classes, "image_shape": list(data.image_shape),
            "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
            "train_images": len(train_split), "test_images": len(data.test),
            "steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup_steps": warmup,
            "eval_every": eval_every, "checkpoint_every": ckpt_every, "device": str(device),
            "crop_padding": data.crop_padding, "flip": data.flip, "torch": torch.__version__,
            "processes": ctx.world, "precision": fast.precision, "compile": fast.compile,
            "eval_flip": cfg.eval_flip and data.flip,
            # The free memory behind an automatic choice is in its stderr line, not here: a re-run
            # of a finished run must leave config.json byte for byte as it was.
            "checkpointing": {"segments": getattr(model, "checkpoint_segments", 0), "auto": ckpt.auto,
                              "activation_gib": ckpt.estimate_gib,
                              "mmap_threshold_mib": mapped / 2**20 if mapped else None},
        })  # fmt: skip

    # Model, optimizer, loss.
    if cfg.init_from and not resume:
        load_pretrained(model, cfg.init_from)
    if cfg.sync_bn:
        model = distributed.sync_batchnorm(model, ctx)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, device)
    scaler = grad_scaler(fast.precision, device)
    forward = distributed.wrap(model, ctx)
    if fast.compile:
        forward = compile_forward(forward)
    # An exponential moving average of the weights (and BN statistics), evaluated and saved instead.
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay else None
    final = ema.module if ema is not None else model

    step, elapsed, running = 0, 0.0, Running()
    if resume:
        state, path = load_latest_checkpoint(run_dir, device)
        _check_same_run(state, cfg, path)
        load_into(model, state["model"], str(path))
        if ema is not None:
            if "ema" not in state:
                raise ResnetsError(f"checkpoint {path} holds no weight average; resume without --ema")
            load_into(ema, state["ema"], str(path))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        step, elapsed = int(state["step"]), float(state["elapsed"])
        running = Running(**state["running"])
    for log in (METRICS_FILE, GRADIENTS_FILE):
        if ctx.main:
            rewrite_log(run_dir / log, step)
    flow = GradientFlow(model) if cfg.grad_every else None

    def checkpoint() -> Path:
        return save_checkpoint(run_dir, step, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "step": step, "elapsed": elapsed,
            "rng_cpu": torch.get_rng_state(), "running": vars(running).copy(),
            "config": json.loads(cfg.to_json()),
        } | ({"ema": ema.state_dict()} if ema is not None else {}), cfg.keep_checkpoints)  # fmt: skip

    if step >= total:  # a finished run, resumed by a scheduler re-running the same command line
        return _finished_run(run_dir, step, final, cfg, ctx)
    bar = Progress(total, step, desc=cfg.model, enabled=progress, steps_per_epoch=steps_per_epoch)
    if resume:
        bar.message(f"resuming {run_dir} at step {step}/{total}")
    metrics: dict[str, Any] = {}
    sigint = _SigintFlag()
    model.train()
    try:
        with sigint.installed():
            while step < total:
                epoch, first = divmod(step, steps_per_epoch)
                for x, y in train_loader.epoch(epoch, first):
                    t0 = time.perf_counter()
                    lr = lr_at(step, total, cfg.lr, cfg.schedule, warmup)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    record_grads = flow is not None and step % cfg.grad_every == 0
                    if record_grads:
                        flow.arm()
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum, wrong = forward_backward(
                        forward, x, y, cfg.accumulate, cfg.label_smoothing, fast.precision, scaler, device
                    )
                    # One all-reduce per step: every rank learns the global loss and stop requests.
                    loss_sum, wrong, n, stop = distributed.all_sum(
                        [loss_sum, wrong, len(y), sigint.raised], ctx
                    )
                    loss_value = loss_sum / n
                    if not math.isfinite(loss_value):
                        last = list_checkpoints(run_dir)
                        kept = f"; the last good checkpoint is {last[0]}" if last else ""
                        raise Diverged(
                            f"loss became {loss_value} at step {step + 1}{kept}; "
                            f"lower the learning rate (--lr {cfg.lr:g} now) or add --warmup"
                        )
                    if record_grads and ctx.main:
                        norms = flow.collect()
                        append_line(
                            run_dir / GRADIENTS_FILE, {"step": step, "layers": flow.names, "norms": norms}
                        )
                    scaler.step(optimizer)
                    scaler.update()
                    if ema is not None:
                        ema.update_parameters(model)
                    running.add(loss_value, int(wrong), int(n))
                    step += 1
                    dt = time.perf_counter() - t0
                    running.seconds += dt
                    elapsed += dt
                    bar.update(step, loss_value, n / max(dt, 1e-9))

                    if step % eval_every == 0 or step == total:
                        if ctx.main:  # rank 0 holds the same weights as every rank
                            test_loss, test_error = evaluate(
                                final, test_loader, fast.precision, flip_tta=cfg.eval_flip and data.flip
                            )
                            metrics = {
                                "step": step, "epoch": round(step / steps_per_epoch, 4),
                                "train_loss": running.loss / running.seen,
                                "train_error": running.wrong / running.seen,
                                "test_loss": test_loss, "test_error": test_error, "lr": lr,
                                "time": round(elapsed, 3),
                                "images_per_s": round(running.seen / max(running.seconds, 1e-9), 1),
                            }  # fmt: skip
                            append_line(run_dir / METRICS_FILE, metrics)
                        running = Running()
                    if ctx.main and (step % ckpt_every == 0 or step == total or stop):
                        checkpoint()
                    if stop:
                        distributed.barrier(ctx)
                        raise Interrupted(
                            f"interrupted at step {step}/{total}; saved a checkpoint in {run_dir}; "
                            f"continue with `resnets train --resume --out {run_dir}`"
                        )
                    if step >= total:
                        break
    finally:
        bar.close()
    if not ctx.main:
        distributed.barrier(ctx)
        return RunResult(run_dir, step, metrics, final)
    save_weights(final, run_dir / WEIGHTS_FILE, {"model": cfg.model, "dataset": cfg.dataset})
    distributed.barrier(ctx)
    return RunResult(run_dir, step, metrics, final)


def _finished_run(
    run_dir: Path, step: int, final: nn.Module, cfg: TrainConfig, ctx: distributed.Context
) -> RunResult:
    """The result of a run whose last checkpoint is its last step, without training again."""
    metrics: dict[str, Any] = {}
    if ctx.main:
        lines = (run_dir / METRICS_FILE).read_text().splitlines() if (run_dir / METRICS_FILE).exists() else []
        records = [json.loads(x) for x in lines if x.strip()]
        metrics = records[-1] if records and records[-1].get("step") == step else {}
        if not (run_dir / WEIGHTS_FILE).exists():  # killed between the last checkpoint and the weights
            save_weights(final, run_dir / WEIGHTS_FILE, {"model": cfg.model, "dataset": cfg.dataset})
    distributed.barrier(ctx)
    return RunResult(run_dir, step, metrics, final, already_finished=True)


def _check_same_run(state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    saved = state.get("config", {})
    for key in ("model", "dataset", "batch_size", "model_options", "seed"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise ResnetsError(
                f"checkpoint {path} was made with {key}={saved[key]!r}, not {getattr(cfg, key)!r}; "
                "resume with the run's own settings"
            )
