"""The training loop: set up, restore, then step, evaluate and checkpoint until done.

Everything a resumed run needs is either in the checkpoint (weights, optimizer, step, RNG,
running sums, the weight average) or a pure function of the config and the step (data order,
augmentation, image size, learning rate), so a run killed and resumed ends with the same
weights as one that never stopped, at an epoch boundary or in the middle of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, StreamedDataset, load_dataset
from ..diagnostics import GradientFlow
from ..errors import ResnetsError
from ..io import exclusive, remove_stale_temporaries
from ..models import get_spec
from . import distributed
from .autotune import choose_fast_path
from .build import build_model, choose_checkpointing_for, fit_in_memory, place_model
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
from .device import resolve_device
from .ema import make_ema
from .errors import Diverged, Interrupted, SigintFlag
from .evaluate import evaluate
from .loaders import Loaders, make_loaders, plan_resolutions
from .logs import RunLogs, check_loggers
from .lookahead import Lookahead
from .precision import check_precision, grad_scaler, resolve_precision
from .progress import Progress
from .rundir import CONFIG_FILE, GRADIENTS_FILE, METRICS_FILE, check_run_dir, read_resolved, write_config
from .schedules import default_warmup, lr_at
from .step import compile_forward, forward_backward, make_optimizer

__all__ = ["CONFIG_FILE", "GRADIENTS_FILE", "METRICS_FILE", "Diverged", "Interrupted", "RunResult", "train"]

DEFAULT_EPOCHS = 15


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
class Plan:
    """How long the run is and how often it reports, in steps."""

    total: int
    steps_per_epoch: int
    eval_every: int
    checkpoint_every: int
    warmup: int


@dataclass
class Run:
    """Everything the loop reads and changes."""

    cfg: TrainConfig
    ctx: distributed.Context
    run_dir: Path
    data: Dataset | StreamedDataset
    loaders: Loaders
    plan: Plan
    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    precision: str
    ema: nn.Module | None = None
    flow: GradientFlow | None = None
    lookahead: Lookahead | None = None
    step: int = 0
    elapsed: float = 0.0
    running: Running = field(default_factory=Running)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> nn.Module:
        """The weights evaluated and saved: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    metrics: dict[str, Any]
    model: nn.Module = field(repr=False)
    already_finished: bool = False  # resumed after its last step: nothing was trained


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
    resume = _check_start(cfg, ctx, resume)
    run = _set_up(cfg, ctx, resume)
    if resume:
        _restore(run)
    if run.step >= run.plan.total:  # a finished run, resumed by a scheduler re-running the same command
        return _finished_run(run)
    logs = RunLogs(run.run_dir, run.step, ctx.main, cfg.log)
    bar = Progress(run.plan.total, run.step, cfg.model, progress, steps_per_epoch=run.plan.steps_per_epoch)
    if resume:
        bar.message(f"resuming {run.run_dir} at step {run.step}/{run.plan.total}")
    sigint = SigintFlag()
    run.model.train()
    try:
        with sigint.installed():
            while run.step < run.plan.total:
                epoch, first = divmod(run.step, run.plan.steps_per_epoch)
                for x, y in run.loaders.train.epoch(epoch, first):
                    stop = _train_step(run, x, y, logs, sigint, bar)
                    if run.step % run.plan.eval_every == 0 or run.step == run.plan.total:
                        _evaluate(run, logs)
                    if ctx.main and (run.step % run.plan.checkpoint_every == 0 or run.step == run.plan.total
                                     or stop):  # fmt: skip
                        _checkpoint(run)
                    if stop:
                        distributed.barrier(ctx)
                        raise Interrupted(
                            f"interrupted at step {run.step}/{run.plan.total}; saved a checkpoint in "
                            f"{run.run_dir}; continue with `resnets train --resume --out {run.run_dir}`"
                        )
                    if run.step >= run.plan.total:
                        break
    finally:
        bar.close()
        logs.close()
        for loader in (run.loaders.train, run.loaders.test):
            loader.close()
    return _finish(run)


def _check_start(cfg: TrainConfig, ctx: distributed.Context, resume: bool) -> bool:
    """Refuse settings that cannot work before loading anything; whether there is a run to resume."""
    check_precision(resolve_precision(cfg.precision, ctx.device), ctx.device)
    if cfg.batch_size % (ctx.world * cfg.accumulate):
        raise ResnetsError(
            f"batch-size {cfg.batch_size} must divide into {ctx.world} processes "
            f"x {cfg.accumulate} micro-batches"
        )
    get_spec(cfg.model)  # an unknown model fails here, before any data is read
    check_loggers(cfg.log)
    run_dir = Path(cfg.out)
    check_run_dir(run_dir, resume)
    if resume and ctx.main:
        for folder in (run_dir, checkpoint_dir(run_dir)):
            remove_stale_temporaries(folder)  # what a kill mid-write left behind
    if resume and not list_checkpoints(run_dir):
        # Killed before its first checkpoint: nothing to restore, so the run starts over.
        print(f"resnets: no checkpoint in {run_dir} yet; starting it from step 0", file=sys.stderr)
        return False
    return resume


def _set_up(cfg: TrainConfig, ctx: distributed.Context, resume: bool) -> Run:
    """Data, loaders, model, optimizer and config.json of a run at step 0."""
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
    loaders = make_loaders(cfg, data, ctx.rank, ctx.world, ctx.device)
    plan = _plan(cfg, len(loaders.train))
    sizes = plan_resolutions(loaders.train, cfg, -(-plan.total // plan.steps_per_epoch), data.image_shape[1])
    model = build_model(cfg, data)
    micro_batch, shape = cfg.batch_size // ctx.world // cfg.accumulate, tuple(data.image_shape)
    ckpt = choose_checkpointing_for(model, cfg, shape, micro_batch, ctx.device, ctx.main)
    saved = read_resolved(Path(cfg.out)) if resume else None
    micro_steps = plan.total * cfg.accumulate
    fast, tuning = choose_fast_path(cfg, model, shape, data.num_classes, micro_batch, micro_steps, ctx, saved)
    memory, fast = fit_in_memory(model, cfg, ckpt, shape, micro_batch, fast, ctx.device)
    for loader in (loaders.train, loaders.test):
        loader.channels_last = fast.channels_last
    if ctx.main:
        write_config(Path(cfg.out), cfg, {
            "num_classes": data.num_classes, "image_shape": list(data.image_shape),
            "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
            "train_images": loaders.train_images, "test_images": len(data.test),
            "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total, "warmup_steps": plan.warmup,
            "eval_every": plan.eval_every, "checkpoint_every": plan.checkpoint_every,
            "device": str(ctx.device), "crop_padding": data.crop_padding, "flip": data.flip,
            "torch": torch.__version__, "processes": ctx.world, "precision": fast.precision,
            "channels_last": fast.channels_last, "compile": fast.compile, "fast_path": tuning,
            "eval_flip": cfg.eval_flip and data.flip, "eval_translate": cfg.eval_translate,
            # The free memory behind an automatic choice is in its stderr line, not here: a re-run
            # of a finished run must leave config.json byte for byte as it was.
            "checkpointing": memory.record(model), "loader": loaders.info,
        } | ({"train_sizes": sizes} if sizes else {}))  # fmt: skip
    model = place_model(model, cfg, ctx, resume, fast.channels_last)
    forward = distributed.wrap(model, ctx)
    return Run(
        cfg, ctx, Path(cfg.out), data, loaders, plan, model,
        compile_forward(forward) if fast.compile else forward,
        make_optimizer(model, cfg, ctx.device), grad_scaler(fast.precision, ctx.device), fast.precision,
        # An exponential moving average of the weights (and BN statistics), evaluated and saved instead.
        ema=make_ema(model, cfg.ema_decay) if cfg.ema_decay else None,
        flow=GradientFlow(model) if cfg.grad_every else None,
        lookahead=Lookahead() if cfg.lookahead else None,
    )  # fmt: skip


def _plan(cfg: TrainConfig, steps_per_epoch: int) -> Plan:
    total = cfg.iterations or (cfg.epochs or DEFAULT_EPOCHS) * steps_per_epoch
    eval_every = total if cfg.final_eval_only else cfg.eval_every or steps_per_epoch
    depth = get_spec(cfg.model).depth
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else default_warmup(cfg.schedule, depth, total)
    checkpoint_every = cfg.checkpoint_every or (steps_per_epoch if cfg.final_eval_only else eval_every)
    return Plan(total, steps_per_epoch, eval_every, checkpoint_every, warmup)


def _train_step(
    run: Run, x: torch.Tensor, y: torch.Tensor, logs: RunLogs, sigint: SigintFlag, bar: Progress
) -> bool:
    """One optimisation step over the global batch; whether any process was asked to stop."""
    cfg, t0 = run.cfg, time.perf_counter()
    lr = lr_at(run.step, run.plan.total, cfg.lr, cfg.schedule, run.plan.warmup)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    record_grads = run.flow is not None and run.step % cfg.grad_every == 0
    if record_grads:
        run.flow.arm()
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum, wrong = forward_backward(
        run.forward, x, y, cfg.accumulate, cfg.label_smoothing, run.precision, run.scaler, run.ctx.device
    )
    # One all-reduce per step: every rank learns the global loss and stop requests (a Ctrl-C
    # during this step's compute stops after it, not after the next one).
    loss_sum, wrong, n, stop = distributed.all_sum([loss_sum, wrong, len(y), sigint.raised], run.ctx)
    loss = loss_sum / n
    if not math.isfinite(loss):
        last = list_checkpoints(run.run_dir)
        kept = f"; the last good checkpoint is {last[0]}" if last else ""
        raise Diverged(
            f"loss became {loss} at step {run.step + 1}{kept}; "
            f"lower the learning rate (--lr {cfg.lr:g} now) or add --warmup"
        )
    if record_grads and run.ctx.main:
        logs.gradients(run.step, run.flow.names, run.flow.collect())
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.lookahead is not None:
        run.lookahead.update(run.model, run.step + 1, run.plan.total)
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.running.add(loss, int(wrong), int(n))
    run.step += 1
    dt = time.perf_counter() - t0
    run.running.seconds += dt
    run.elapsed += dt
    bar.update(run.step, loss, n / max(dt, 1e-9))
    return bool(stop)


def _evaluate(run: Run, logs: RunLogs) -> None:
    """Test loss and error of the final weights, with the training sums since the last evaluation."""
    if run.ctx.main:  # rank 0 holds the same weights as every rank
        flip = run.cfg.eval_flip and run.data.flip
        test_loss, test_error = evaluate(
            run.final, run.loaders.test, run.precision, flip_tta=flip, translate_tta=run.cfg.eval_translate
        )
        r = run.running
        run.metrics = {
            "step": run.step, "epoch": round(run.step / run.plan.steps_per_epoch, 4),
            "train_loss": r.loss / r.seen, "train_error": r.wrong / r.seen,
            "test_loss": test_loss, "test_error": test_error,
            "lr": lr_at(run.step - 1, run.plan.total, run.cfg.lr, run.cfg.schedule, run.plan.warmup),
            "time": round(run.elapsed, 3), "images_per_s": round(r.seen / max(r.seconds, 1e-9), 1),
        }  # fmt: skip
        logs.metrics(run.metrics)
    run.running = Running()


def _checkpoint(run: Run) -> Path:
    state = {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "step": run.step, "elapsed": run.elapsed,
        "rng_cpu": torch.get_rng_state(), "running": vars(run.running).copy(),
        "config": json.loads(run.cfg.to_json()),
    }  # fmt: skip
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    if run.lookahead is not None:
        state["lookahead"] = run.lookahead.state_dict()
    return save_checkpoint(run.run_dir, run.step, state, run.cfg.keep_checkpoints)


def _restore(run: Run) -> None:
    """Weights, optimizer, scaler, RNG, step and running sums from the newest checkpoint."""
    state, path = load_latest_checkpoint(run.run_dir, run.ctx.device)
    _check_same_run(state, run.cfg, path)
    load_into(run.model, state["model"], str(path))
    if run.ema is not None:
        if "ema" not in state:
            raise ResnetsError(f"checkpoint {path} holds no weight average; resume without --ema")
        load_into(run.ema, state["ema"], str(path))
    if run.lookahead is not None:
        if "lookahead" not in state:
            raise ResnetsError(f"checkpoint {path} holds no lookahead weights; resume without --lookahead")
        run.lookahead.load_state_dict(state["lookahead"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    run.step, run.elapsed = int(state["step"]), float(state["elapsed"])
    run.running = Running(**state["running"])


def _save_final(run: Run) -> None:
    save_weights(run.final, run.run_dir / WEIGHTS_FILE, {"model": run.cfg.model, "dataset": run.cfg.dataset})


def _finish(run: Run) -> RunResult:
    if run.ctx.main:
        _save_final(run)
    distributed.barrier(run.ctx)
    return RunResult(run.run_dir, run.step, run.metrics, run.final)


def _finished_run(run: Run) -> RunResult:
    """The result of a run whose last checkpoint is its last step, without training again."""
    if run.ctx.main:
        path = run.run_dir / METRICS_FILE
        lines = path.read_text().splitlines() if path.exists() else []
        records = [json.loads(x) for x in lines if x.strip()]
        run.metrics = records[-1] if records and records[-1].get("step") == run.step else {}
        if not (run.run_dir / WEIGHTS_FILE).exists():  # killed between the last checkpoint and the weights
            _save_final(run)
    distributed.barrier(run.ctx)
    return RunResult(run.run_dir, run.step, run.metrics, run.final, already_finished=True)


def _check_same_run(state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    saved = state.get("config", {})
    for key in ("model", "dataset", "batch_size", "model_options", "seed"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise ResnetsError(
                f"checkpoint {path} was made with {key}={saved[key]!r}, not {getattr(cfg, key)!r}; "
                "resume with the run's own settings"
            )
