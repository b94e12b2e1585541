"""The training loop: decide, build, restore, then step, evaluate and checkpoint until done.

``train`` goes in one order. It refuses settings that cannot work; reads the newest checkpoint,
and if that is the run's last step returns its weights at once (no data loaded, no fast-path
trial); loads the data and settles every decision into a ``Setup``; builds the ``Learner`` (the
model, what wraps it and what updates it); restores the ``State`` from the checkpoint; and loops.

Everything a resumed run needs is either in the checkpoint (weights, optimizer, step, RNG,
running sums, the weight average) or a pure function of the config and the step (data order,
augmentation, image size, learning rate), so a run killed and resumed ends with the same
weights as one that never stopped, at an epoch boundary or in the middle of one.

A step (``_train_step`` and the loop around it) needs thirteen concepts: the batch stream
across epochs; the step's learning rate (schedule, warm-up, a per-group scale); forward and
backward a micro-batch at a time (accumulation, autocast, the fp16 loss scaler); the all-reduce
of figures and stop flag under DDP; gradient-norm recording; the optimizer step; lookahead; the
weight average (EMA); figures left on the device until a sync; the progress display; evaluation;
the checkpoint; and the Ctrl-C stop. Four are optional (DDP, gradient norms, lookahead, EMA)
and off by default.

When the host waits for the device: a step leaves its loss and error count on the device, and
``_sync`` reads back all the steps since the last one at once, only where the host needs them:
before an evaluation, a checkpoint or a Ctrl-C stop, at a step recording gradient norms, when
the progress display is due (about once a second on a terminal; 20 lines a run in a log), and
``SYNC_SECONDS`` after the last sync at the latest. ``_sync`` checks the losses step by step,
so a NaN is still reported at the step it happened (about a second of compute later), and
nothing is written after it: each write syncs first. The CPU follows the same rule: a sync
costs nothing there, but one rule is one code path, and the tests cover it. Under DDP every
step syncs: the stop flag must be agreed on before the next step.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResnetsError
from ..io import exclusive, remove_stale_temporaries
from ..models import get_spec
from . import distributed
from .checkpoint import WEIGHTS_FILE, checkpoint_dir, list_checkpoints, load_latest_checkpoint, save_weights
from .config import TrainConfig
from .device import resolve_device
from .errors import Diverged, Interrupted, SigintFlag
from .evaluate import Scores, score
from .loaders import Loader
from .logs import RunLogs, check_loggers
from .precision import check_precision, resolve_precision
from .progress import Progress
from .resume import check_resumable, finished_model
from .rundir import (
    CONFIG_FILE,
    GRADIENTS_FILE,
    METRICS_FILE,
    check_run_dir,
    last_metrics,
    read_resolved,
    write_config,
)
from .schedules import lr_at
from .setup import DEFAULT_EPOCHS, Setup, decide
from .state import Figures, Learner, Running, State, build_learner, restore, save
from .step import forward_backward
from .work import train_pflop

__all__ = [
    "CONFIG_FILE", "DEFAULT_EPOCHS", "GRADIENTS_FILE", "METRICS_FILE", "Diverged", "Interrupted", "RunResult",
    "train",
]  # fmt: skip

SYNC_SECONDS = 1.0  # the longest a run goes without reading its loss: a diverged one stops this soon


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    metrics: dict[str, Any]
    model: nn.Module = field(repr=False)
    already_finished: bool = False  # resumed after its last step: nothing was trained
    finished: bool = True  # False when stopped early at ``until`` (checkpointed there, no final weights)


def train(
    cfg: TrainConfig, resume: bool = False, progress: bool = True, until: int | None = None
) -> RunResult:
    """Train ``cfg.model`` on ``cfg.dataset``, writing the run directory ``cfg.out``.

    ``until``: stop after this many steps of the planned run, evaluated and checkpointed there, so
    a later ``resume`` continues it exactly (how a sweep's successive halving trains in rungs).
    """
    cfg.validate()
    if until is not None and until < 1:
        raise ResnetsError(f"until must be a positive number of steps, got {until}")
    ctx = distributed.setup(resolve_device(cfg.device))
    try:
        # One writer per run directory: a job submitted twice stops here, naming the holder.
        with exclusive(cfg.out) if ctx.main else contextlib.nullcontext():
            return _train(cfg, ctx, resume, progress and ctx.main, until)
    finally:
        distributed.teardown(ctx)


def _train(
    cfg: TrainConfig, ctx: distributed.Context, resume: bool, progress: bool, until: int | None
) -> RunResult:
    run_dir = Path(cfg.out)
    checkpoint = _check_start(cfg, ctx, resume)
    saved = read_resolved(run_dir) if checkpoint is not None else None
    if checkpoint is not None:  # a scheduler re-running the command of a finished run
        final = finished_model(cfg, ctx, saved, *checkpoint)
        if final is not None:
            return _already_finished(cfg, int(checkpoint[0]["step"]), final, ctx)
    setup, model = decide(cfg, ctx, saved)
    if ctx.main:
        write_config(run_dir, cfg, setup.resolved)
    learner = build_learner(setup, model, resume=checkpoint is not None)
    state = restore(learner, *checkpoint) if checkpoint is not None else State()
    if state.step >= setup.plan.total:  # finished, where a damaged config.json could not tell before
        return _already_finished(cfg, state.step, learner.eval_model, ctx)
    stop_at = setup.plan.total if until is None else min(until, setup.plan.total)
    _loop(setup, learner, state, progress, resumed=checkpoint is not None, stop_at=stop_at)
    finished = state.step >= setup.plan.total
    if ctx.main and finished:
        _save_final(setup.cfg, learner.eval_model)
    distributed.barrier(ctx)
    if not state.metrics and checkpoint is not None:  # resumed at ``until`` itself: its record is logged
        state.metrics = last_metrics(run_dir, state.step) if ctx.main else {}
    return RunResult(run_dir, state.step, state.metrics, learner.eval_model, finished=finished)


def _check_start(
    cfg: TrainConfig, ctx: distributed.Context, resume: bool
) -> tuple[dict[str, Any], Path] | None:
    """Refuse settings that cannot work before loading anything; the checkpoint to resume from, if any."""
    check_precision(resolve_precision(cfg.precision, ctx.device), ctx.device)
    if cfg.batch_size % (ctx.world * cfg.accumulate):
        raise ResnetsError(
            f"batch-size {cfg.batch_size} must divide into {ctx.world} processes "
            f"x {cfg.accumulate} micro-batches"
        )
    micro_batch = cfg.batch_size // (ctx.world * cfg.accumulate)
    if cfg.bn_group and micro_batch % cfg.bn_group:
        raise ResnetsError(
            f"--bn-group {cfg.bn_group} must divide the {micro_batch} images each forward pass sees "
            f"(batch-size {cfg.batch_size} over {ctx.world} process(es) x {cfg.accumulate} micro-batch(es))"
        )
    get_spec(cfg.model)  # an unknown model fails here, before any data is read
    check_loggers(cfg.log)
    run_dir = Path(cfg.out)
    check_run_dir(run_dir, resume)
    if not resume:
        return None
    if ctx.main:
        for folder in (run_dir, checkpoint_dir(run_dir)):
            remove_stale_temporaries(folder)  # what a kill mid-write left behind
    if not list_checkpoints(run_dir):
        # Killed before its first checkpoint: nothing to restore, so the run starts over.
        print(f"resnets: no checkpoint in {run_dir} yet; starting it from step 0", file=sys.stderr)
        return None
    # Read onto the CPU: the device's memory stays free for the set-up's measurements.
    state, path = load_latest_checkpoint(run_dir, "cpu")
    check_resumable(state, path, cfg)
    return state, path


def _loop(setup: Setup, learner: Learner, state: State, progress: bool, resumed: bool, stop_at: int) -> None:
    """Train from ``state.step`` to ``stop_at`` (the plan's end or before): step, sync, evaluate, save."""
    cfg, ctx, plan = setup.cfg, setup.ctx, setup.plan
    logs = RunLogs(setup.run_dir, state.step, ctx.main, cfg.log)
    bar = Progress(plan.total, state.step, cfg.model, progress, steps_per_epoch=plan.steps_per_epoch)
    if resumed:
        bar.message(f"resuming {setup.run_dir} at step {state.step}/{plan.total}")
    batches = _batches(setup.loaders.train, state.step, plan.steps_per_epoch)
    sigint = SigintFlag()
    synced = time.perf_counter()  # when the figures were last read back from the device
    learner.model.train()
    try:
        with sigint.installed():
            for step in range(state.step, stop_at):
                x, y = next(batches)
                t0 = time.perf_counter()
                figures, stop = _train_step(setup, learner, step, x, y, sigint)
                state.pending.append(figures)
                state.step = step + 1
                last = state.step == stop_at  # the plan's end, or where the caller stops it
                evaluate_now = state.step % plan.eval_every == 0 or last
                log_now = bool(cfg.log_every) and state.step % cfg.log_every == 0 and not evaluate_now
                checkpoint_now = ctx.main and (state.step % plan.checkpoint_every == 0 or last or stop)
                show = bar.due(state.step)
                if (show or evaluate_now or log_now or checkpoint_now or stop or figures.grads is not None
                        or ctx.distributed or time.perf_counter() - synced >= SYNC_SECONDS):  # fmt: skip
                    _sync(setup, state, logs)
                    synced = time.perf_counter()
                dt = time.perf_counter() - t0
                state.running.seconds += dt
                state.elapsed += dt
                if show:
                    speed = state.running.seen / max(state.running.seconds, 1e-9)
                    bar.update(state.step, state.loss, speed)
                else:
                    bar.advance(state.step)
                if evaluate_now:
                    _evaluate(setup, learner, state, logs)
                elif log_now:
                    _log_training(setup, state, logs)
                if checkpoint_now:
                    save(setup, learner, state)
                if stop:
                    distributed.barrier(ctx)
                    raise Interrupted(
                        f"interrupted at step {state.step}/{plan.total}; saved a checkpoint in "
                        f"{setup.run_dir}; continue with `resnets train --resume --out {setup.run_dir}`"
                    )
    finally:
        batches.close()
        bar.close()
        logs.close()
        for loader in setup.loaders.all():
            loader.close()


def _batches(loader: Loader, start: int, steps_per_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches from step ``start`` on, across epochs (each epoch's order follows from its number)."""
    epoch, first = divmod(start, steps_per_epoch)
    while True:
        yield from loader.epoch(epoch, first)
        epoch, first = epoch + 1, 0


def _train_step(
    setup: Setup, learner: Learner, step: int, x: torch.Tensor, y: torch.Tensor, sigint: SigintFlag
) -> tuple[Figures, bool]:
    """One optimisation step over the global batch; its figures, and whether any process was asked to stop."""
    cfg, ctx = setup.cfg, setup.ctx
    lr = lr_at(step, setup.plan.total, cfg.lr, cfg.schedule, setup.plan.warmup)
    for group in learner.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    flow = learner.flow if learner.flow is not None and step % cfg.grad_every == 0 else None
    if flow is not None:
        flow.arm()
    learner.optimizer.zero_grad(set_to_none=True)
    if setup.fast.graphs:  # a new step: the graphs may reuse the memory of the last step's outputs
        torch.compiler.cudagraph_mark_step_begin()
    loss_sum, wrong = forward_backward(
        learner.train_forward, x, y, cfg.accumulate, cfg.label_smoothing, setup.fast.precision,
        learner.scaler, ctx.device,
    )  # fmt: skip
    sums, images, stop = torch.stack([loss_sum, wrong.double()]), len(y), sigint.raised
    if ctx.distributed:
        # One all-reduce per step: every rank learns the global figures and stop requests (a Ctrl-C
        # during this step's compute stops after it, not after the next one). Reading them syncs.
        reduced = distributed.all_sum(torch.cat([sums, sums.new_tensor([images, stop])]), ctx)
        sums, (images, stop) = reduced[:2], reduced[2:].tolist()
    grads = (flow.names, flow.collect()) if flow is not None and ctx.main else None
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    if learner.lookahead is not None:
        learner.lookahead.update(learner.model, step + 1, setup.plan.total)
    if learner.ema is not None:
        learner.ema.update_parameters(learner.model)
    return Figures(step, sums, int(images), grads), bool(stop)


def _sync(setup: Setup, state: State, logs: RunLogs) -> None:
    """Read the steps since the last sync back from the device: check each loss, then add it to the sums."""
    pending, state.pending = state.pending, []
    values = torch.stack([f.sums for f in pending]).tolist()  # the one wait for the device
    for figures, (loss_sum, wrong) in zip(pending, values, strict=True):
        loss = loss_sum / figures.images
        if not math.isfinite(loss):
            last = list_checkpoints(setup.run_dir)
            kept = f"; the last good checkpoint is {last[0]}" if last else ""
            raise Diverged(
                f"loss became {loss} at step {figures.step + 1}{kept}; "
                f"lower the learning rate (--lr {setup.cfg.lr:g} now) or add --warmup",
                step=figures.step + 1,
            )
        if figures.grads is not None:
            logs.gradients(figures.step, *figures.grads)
        state.running.add(loss, int(wrong), figures.images)
        state.loss = loss


def _evaluate(setup: Setup, learner: Learner, state: State, logs: RunLogs) -> None:
    """Test loss and error of the weights evaluated, with the training sums since the last evaluation."""
    cfg, plan = setup.cfg, setup.plan
    if setup.ctx.main:  # rank 0 holds the same weights as every rank

        def measure(loader: Loader) -> Scores:
            return score(
                learner.eval_model, loader, setup.fast.precision, flip_tta=setup.eval_flip,
                translate_tta=cfg.eval_translate,
            )  # fmt: skip

        test = measure(setup.loaders.test).as_dict("test_")
        r = state.running
        held = setup.loaders.val
        val = measure(held).as_dict("val_") if held is not None else {}
        state.metrics = {
            "step": state.step, "epoch": round(state.step / plan.steps_per_epoch, 4),
            "train_loss": r.loss / r.seen, "train_error": r.wrong / r.seen, **val, **test,
            "lr": lr_at(state.step - 1, plan.total, cfg.lr, cfg.schedule, plan.warmup),
            "time": round(state.elapsed, 3), "images_per_s": round(r.seen / max(r.seconds, 1e-9), 1),
        } | _work(setup, state.step)  # fmt: skip
        logs.metrics(state.metrics)
    state.running = Running()


def _log_training(setup: Setup, state: State, logs: RunLogs) -> None:
    """A metrics row of the training sums since the last row, without evaluating (--log-every)."""
    cfg, plan, r = setup.cfg, setup.plan, state.running
    if setup.ctx.main and r.seen:
        logs.metrics({
            "step": state.step, "epoch": round(state.step / plan.steps_per_epoch, 4),
            "train_loss": r.loss / r.seen, "train_error": r.wrong / r.seen,
            "lr": lr_at(state.step - 1, plan.total, cfg.lr, cfg.schedule, plan.warmup),
            "time": round(state.elapsed, 3), "images_per_s": round(r.seen / max(r.seconds, 1e-9), 1),
        } | _work(setup, state.step))  # fmt: skip
    state.running = Running()


def _work(setup: Setup, step: int) -> dict[str, float]:
    """A metrics row's training work so far: {"train_pflop": PFLOP of the first ``step`` steps}."""
    pflop = train_pflop(step, setup.cfg.batch_size, setup.plan.steps_per_epoch, setup.resolved)
    return {} if pflop is None else {"train_pflop": pflop}


def _save_final(cfg: TrainConfig, model: nn.Module) -> None:
    save_weights(model, Path(cfg.out) / WEIGHTS_FILE, {"model": cfg.model, "dataset": cfg.dataset})


def _already_finished(cfg: TrainConfig, step: int, model: nn.Module, ctx: distributed.Context) -> RunResult:
    """The result of a run whose last checkpoint is its last step, without training again."""
    run_dir = Path(cfg.out)
    metrics = last_metrics(run_dir, step) if ctx.main else {}
    if ctx.main and not (run_dir / WEIGHTS_FILE).exists():  # killed between the last checkpoint and this
        _save_final(cfg, model)
    distributed.barrier(ctx)
    return RunResult(run_dir, step, metrics, model, already_finished=True)
