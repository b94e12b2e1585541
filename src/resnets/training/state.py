"""What a run holds while it trains: the modules it built (``Learner``) and what changes (``State``).

Both go into a checkpoint and come back from one here, so its format is in one place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..diagnostics import GradientFlow
from . import distributed
from .build import place_model
from .checkpoint import load_into, save_checkpoint
from .ema import make_ema
from .lookahead import Lookahead
from .precision import grad_scaler
from .setup import Setup
from .step import compile_forward, make_optimizer


@dataclass(frozen=True)
class Learner:
    """The modules a run trains and what updates them, built once."""

    model: nn.Module  # the weights being trained; its state_dict is the checkpoint's "model"
    train_forward: nn.Module  # what a training step calls: ``model`` under DDP and/or torch.compile
    eval_model: nn.Module  # what is evaluated and saved: the weight average if there is one, else ``model``
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16's loss scaler; a pass-through for the other precisions
    ema: AveragedModel | None
    lookahead: Lookahead | None
    flow: GradientFlow | None  # per-layer gradient norms every --grad-every steps


@dataclass
class Running:
    """Sums of training loss and errors since the last evaluation."""

    loss: float = 0.0
    wrong: int = 0
    seen: int = 0
    seconds: float = 0.0  # time spent in training steps, for images/s

    def add(self, loss: float, wrong: int, n: int) -> None:
        """One step's mean loss, errors and images."""
        self.loss += loss * n
        self.wrong += wrong
        self.seen += n


@dataclass(frozen=True)
class Figures:
    """One step's training figures, left on the device until the next sync."""

    step: int  # 0-based, as gradients.jsonl numbers it
    sums: torch.Tensor  # (loss summed over the global batch, errors), float64, on the device
    images: int  # in the global batch
    grads: tuple[list[str], list[float]] | None  # layer names and gradient norms, where recorded


@dataclass
class State:
    """What changes as the run trains; with the modules, what a checkpoint saves."""

    step: int = 0  # steps done
    elapsed: float = 0.0  # seconds spent in training steps (metrics.jsonl's "time")
    running: Running = field(default_factory=Running)
    pending: list[Figures] = field(default_factory=list)  # steps not read back from the device yet
    loss: float = math.nan  # the newest read-back step's loss, for the progress display
    metrics: dict[str, Any] = field(default_factory=dict)  # the last evaluation's record


def build_learner(setup: Setup, model: nn.Module, resume: bool) -> Learner:
    """Place the model and make what trains it, in the order that keeps a fresh run's random stream."""
    cfg, ctx = setup.cfg, setup.ctx
    model = place_model(model, cfg, ctx, resume, setup.fast.channels_last)
    train_forward = distributed.wrap(model, ctx)
    if setup.fast.compile:
        train_forward = compile_forward(train_forward, setup.fast.graphs)
    optimizer = make_optimizer(model, cfg, ctx.device, setup.fast.precision)
    scaler = grad_scaler(setup.fast.precision, ctx.device)
    # An exponential moving average of the weights (and BN statistics), evaluated and saved instead.
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay else None
    flow = GradientFlow(model) if cfg.grad_every else None
    lookahead = Lookahead() if cfg.lookahead else None
    eval_model = ema.module if ema is not None else model
    return Learner(model, train_forward, eval_model, optimizer, scaler, ema, lookahead, flow)


def restore(learner: Learner, state: dict[str, Any], path: Path) -> State:
    """Weights, optimizer, scaler and RNG from a checkpoint; the state to go on from."""
    load_into(learner.model, state["model"], str(path))
    if learner.ema is not None:
        load_into(learner.ema, state["ema"], str(path))
    if learner.lookahead is not None:
        learner.lookahead.load_state_dict(state["lookahead"], next(learner.model.parameters()).device)
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    return State(int(state["step"]), float(state["elapsed"]), Running(**state["running"]))


def save(setup: Setup, learner: Learner, state: State) -> Path:
    """Save what a resumed run needs to go on from ``state.step`` exactly as this one would."""
    checkpoint = {
        "model": learner.model.state_dict(), "optimizer": learner.optimizer.state_dict(),
        "scaler": learner.scaler.state_dict(), "step": state.step, "elapsed": state.elapsed,
        "rng_cpu": torch.get_rng_state(), "running": vars(state.running).copy(),
        "config": json.loads(setup.cfg.to_json()),
    }  # fmt: skip
    if learner.ema is not None:
        checkpoint["ema"] = learner.ema.state_dict()
    if learner.lookahead is not None:
        checkpoint["lookahead"] = learner.lookahead.state_dict()
    return save_checkpoint(setup.run_dir, state.step, checkpoint, setup.cfg.keep_checkpoints)
