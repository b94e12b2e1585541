"""Several runs of one net trained as one: their weights stacked, every kernel launched once for all.

A sweep's members share everything but their learning rate, weight decay and seed. Here each
member is set up exactly as ``train`` sets up a run (its folder, config.json, seeded model, data
order, checkpoint), then the members' weights are stacked along a new first dimension and one
forward pass runs them all: ``torch.func.vmap`` over ``functional_call`` turns N members'
convolutions into one grouped convolution, each member on its own batch and with its own
BatchNorm statistics. The summed loss gives each member exactly the gradient of its own loss, and
one SGD update over the flat (members x parameters) tensor applies each member's own lr, decay and
momentum. Evaluations, metrics rows, checkpoints and the final weights go to each member's folder
through the functions ``train`` itself uses, so a member is resumed, evaluated or exported alone
like any run, and equals the run ``resnets train`` makes with its settings to float rounding
(tests hold it within 1e-5 after 20 fp32 steps). A member whose loss turns NaN is reported as
diverged at its step and nothing more is written for it; the others go on.

What would make a member differ from its run alone is refused by ``unfusable`` with the reason,
and the caller trains those members one by one: other optimisers, a weight average, lookahead,
gradient accumulation, ghost or synchronised BatchNorm, fp16's loss scaler, mixup and CutMix
(soft targets), gradient-norm recording, random layers (dropout, stochastic depth: their draws
would differ), activation checkpointing, streamed data and DDP.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..data import TensorLoader
from ..errors import ResnetsError
from ..io import exclusive
from . import distributed
from .checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from .config import TrainConfig
from .device import resolve_device
from .errors import Diverged, Interrupted, SigintFlag
from .logs import RunLogs
from .optim import parameter_settings
from .precision import autocast
from .progress import Progress
from .rundir import last_metrics, read_resolved, write_config
from .schedules import lr_at
from .setup import Setup, decide
from .state import Figures, Learner, State, build_learner, restore, save
from .trainer import SYNC_SECONDS, RunResult, _batches, _check_start, _evaluate, _log_training, _save_final
from .trainer import _sync as _sync_one

# Settings members may differ in; everything else must be equal for them to share kernels.
SWEPT = ("lr", "weight_decay", "seed", "out")


def unfusable(cfgs: list[TrainConfig]) -> str | None:
    """Why these runs cannot train as one (a short reason), or None where they can."""
    if len(cfgs) < 2:
        return "one member"
    shared = [{k: v for k, v in json.loads(c.to_json()).items() if k not in SWEPT} for c in cfgs]
    if any(s != shared[0] for s in shared[1:]):
        return "the members differ in more than lr, weight decay and seed"
    cfg = cfgs[0]
    reasons = {
        f"--opt {cfg.optimizer}": cfg.optimizer != "sgd", "--ema": bool(cfg.ema_decay),
        "--lookahead": cfg.lookahead, "--accumulate": cfg.accumulate > 1, "--sync-bn": cfg.sync_bn,
        "--bn-group": bool(cfg.bn_group), "--grad-every": bool(cfg.grad_every),
        "--compile": bool(cfg.compile), "--cuda-graphs": bool(cfg.cuda_graphs),
        "fp16": cfg.precision == "fp16", "--mixup": bool(cfg.mixup), "--cutmix": bool(cfg.cutmix),
        "a streamed dataset": cfg.dataset_options.get("loader") == "stream",
        "torchrun": distributed.launched_by_torchrun(),
    }  # fmt: skip
    named = [what for what, applies in reasons.items() if applies]
    return f"{named[0]} is not fused" if named else None


def _model_unfusable(model: nn.Module) -> str | None:
    """Why the built net cannot run under vmap as its run alone would, or None."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return f"dropout ({name}) draws differently when fused"
        if name.endswith("drop_path") and not isinstance(m, nn.Identity):
            return "stochastic depth draws differently when fused"
    if getattr(model, "checkpoint_segments", None):
        return "activation checkpointing is not fused"
    return None


@dataclass
class _Member:
    """One member's run: what ``train`` would hold for it, and whether it diverged."""

    setup: Setup
    learner: Learner
    state: State
    logs: RunLogs | None = None
    diverged: Diverged | None = None


class Stack:
    """N members' weights as one tensor, their forward pass under vmap, and their SGD step."""

    def __init__(self, learners: list[Learner], cfgs: list[TrainConfig]) -> None:
        models = [learner.model for learner in learners]
        self.n = len(models)
        # The structure the members share; the tensors it runs with are always the stacked ones.
        self.base = copy.deepcopy(models[0]).train()
        settings = [parameter_settings(m, c) for m, c in zip(models, cfgs, strict=True)]
        named = dict(models[0].named_parameters())
        self.trained = [n for n in named if n in settings[0]]
        self.shapes = [named[n].shape for n in self.trained]
        self.sizes = [named[n].numel() for n in self.trained]
        with torch.no_grad():
            self.flat = torch.stack([self._flatten(m) for m in models]).requires_grad_()
            self.fixed = {n: torch.stack([m.get_parameter(n).detach() for m in models])
                          for n in named if n not in settings[0]}  # fmt: skip
            self.buffers = {n: torch.stack([m.get_buffer(n) for m in models]).clone()
                            for n, _ in models[0].named_buffers()}  # fmt: skip
            per_member = [[s[n] for n in self.trained] for s in settings]  # (decay, scale) per parameter
            self.decay = self._spread([[d for d, _ in row] for row in per_member])
            self.scale = self._spread([[s for _, s in row] for row in per_member])
        self.momentum, self.nesterov = cfgs[0].momentum, cfgs[0].nesterov
        buffers = [[learner.optimizer.state.get(m.get_parameter(n), {}).get("momentum_buffer")
                    for n in self.trained] for learner, m in zip(learners, models, strict=True)]  # fmt: skip
        present = {b is not None for row in buffers for b in row}
        if present == {True, False}:
            raise ResnetsError("the members' optimizer states are incomplete: resume them one by one")
        self.velocity = (
            torch.stack([torch.cat([b.reshape(-1) for b in row]) for row in buffers])
            if True in present
            else None
        )

    def _flatten(self, model: nn.Module) -> torch.Tensor:
        return torch.cat([model.get_parameter(n).detach().reshape(-1) for n in self.trained])

    def _spread(self, values: list[list[float]]) -> torch.Tensor:
        """(members, parameters) per-tensor values repeated over each tensor's elements."""
        sizes = torch.tensor(self.sizes, device=self.flat.device)
        rows = torch.tensor(values, dtype=self.flat.dtype, device=self.flat.device)
        return rows.repeat_interleave(sizes, dim=1)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """Each member's logits on its own batch: (members, batch, C, H, W) -> (members, batch, classes)."""
        # One split (its backward is one concatenation) hands each member's parameters to the net.
        chunks = torch.split(self.flat, self.sizes, dim=1)
        params = {n: c.view(self.n, *s) for n, c, s in zip(self.trained, chunks, self.shapes, strict=True)}

        def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        return vmap(one)({**params, **self.fixed}, self.buffers, xs)

    @torch.no_grad()
    def update(self, lrs: torch.Tensor) -> None:
        """SGD as torch.optim.SGD does it (L2 decay in the gradient, dampening 0), one lr per member."""
        grad = self.flat.grad
        d = torch.addcmul(grad, self.decay, self.flat)
        if self.momentum:
            if self.velocity is None:
                self.velocity = d.clone()
            else:
                self.velocity.mul_(self.momentum).add_(d)
            d = d.add(self.velocity, alpha=self.momentum) if self.nesterov else self.velocity
        self.flat.sub_(lrs[:, None] * self.scale * d)
        self.flat.grad = None

    @torch.no_grad()
    def write_back(self, i: int, learner: Learner) -> None:
        """Member ``i``'s weights, BN statistics and momentum into its own model and optimizer."""
        model = learner.model
        chunks = torch.split(self.flat[i], self.sizes)
        for n, c in zip(self.trained, chunks, strict=True):
            model.get_parameter(n).copy_(c.view(model.get_parameter(n).shape))
        for n, t in self.fixed.items():
            model.get_parameter(n).copy_(t[i])
        for n, t in self.buffers.items():
            model.get_buffer(n).copy_(t[i])
        if self.velocity is not None:
            velocity = torch.split(self.velocity[i], self.sizes)
            for n, v in zip(self.trained, velocity, strict=True):
                p = model.get_parameter(n)
                learner.optimizer.state[p]["momentum_buffer"] = (
                    v.view(p.shape).clone().contiguous(memory_format=torch.preserve_format)
                )


def step_together(
    stack: Stack,
    xs: torch.Tensor,
    ys: torch.Tensor,
    lrs: torch.Tensor,
    label_smoothing: float,
    precision: str,
) -> torch.Tensor:
    """One SGD step of every member; (members, 2) float64 sums of (batch loss, errors), on the device."""
    with autocast(precision, xs.device):
        logits = stack.forward(xs)
    n, b = ys.shape
    # The loss in fp32 at least, as the trainer computes it (float64 stays: the tests' reference).
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    losses = F.cross_entropy(
        logits.flatten(0, 1), ys.flatten(), label_smoothing=label_smoothing, reduction="none"
    ).view(n, b)
    losses.mean(1).sum().backward()
    stack.update(lrs)
    wrong = (logits.detach().argmax(-1) != ys).sum(1)
    return torch.stack([losses.detach().double().sum(1), wrong.double()], 1)


def train_together(
    cfgs: list[TrainConfig], resume: bool = False, progress: bool = True, until: int | None = None
) -> list[RunResult | Diverged]:
    """Train the runs ``cfgs`` as one; each entry is that run's result, or how it diverged.

    Raises ResnetsError where they cannot be fused (``unfusable``): the caller trains them alone.
    """
    for cfg in cfgs:
        cfg.validate()
    why = unfusable(cfgs)
    if why is not None:
        raise ResnetsError(f"these runs cannot train together: {why}")
    ctx = distributed.setup(resolve_device(cfgs[0].device))
    with contextlib.ExitStack() as held:
        for cfg in cfgs:
            held.enter_context(exclusive(cfg.out))
        members = _open(cfgs, ctx, resume)
        plan = members[0].setup.plan
        stack = Stack([m.learner for m in members], cfgs)
        stop_at = plan.total if until is None else min(until, plan.total)
        _loop(members, stack, progress, stop_at)
        return [_result(m, stack, i, plan.total) for i, m in enumerate(members)]


def _open(cfgs: list[TrainConfig], ctx: distributed.Context, resume: bool) -> list[_Member]:
    """Each member set up as ``train`` sets up a run, restored at one common step."""
    checkpoints = [_check_start(cfg, ctx, resume) for cfg in cfgs]
    steps = [int(c[0]["step"]) if c else 0 for c in checkpoints]
    if len(set(steps)) > 1:  # killed while writing the members' checkpoints of one step
        common = min(steps)
        checkpoints = [c if s == common else _checkpoint_at(Path(cfg.out), common)
                       for c, s, cfg in zip(checkpoints, steps, cfgs, strict=True)]  # fmt: skip
    members = []
    for cfg, checkpoint in zip(cfgs, checkpoints, strict=True):
        saved = read_resolved(Path(cfg.out)) if checkpoint is not None else None
        setup, model = decide(cfg, ctx, saved, eager=True)
        # Checked on the first member's net and loader before any folder is written.
        why = _model_unfusable(model) or (None if isinstance(setup.loaders.train, TensorLoader)
                                          else "a streamed dataset is not fused")  # fmt: skip
        if why is not None:
            raise ResnetsError(f"these runs cannot train together: {why}")
        write_config(Path(cfg.out), cfg, setup.resolved)
        learner = build_learner(setup, model, resume=checkpoint is not None)
        state = restore(learner, *checkpoint) if checkpoint is not None else State()
        members.append(_Member(setup, learner, state))
    return members


def _checkpoint_at(run_dir: Path, step: int) -> tuple[dict, Path] | None:
    """The run's checkpoint of ``step`` (older than its newest), or None where it was not kept."""
    path = checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    if step == 0:
        return None
    if path not in list_checkpoints(run_dir):
        raise ResnetsError(
            f"{run_dir} no longer holds its checkpoint of step {step}, where the other members are: "
            "resume the members one by one"
        )
    return load_checkpoint(path), path


def _loop(members: list[_Member], stack: Stack, progress: bool, stop_at: int) -> None:
    """Step every member from their common step to ``stop_at``: sync, evaluate, save as ``train`` does."""
    first = members[0]
    cfg, plan, precision = first.setup.cfg, first.setup.plan, first.setup.fast.precision
    start = first.state.step
    device = stack.flat.device
    for m in members:
        m.logs = RunLogs(m.setup.run_dir, start, True, m.setup.cfg.log)
    bar = Progress(plan.total, start, f"{cfg.model} x{len(members)}", progress,
                   steps_per_epoch=plan.steps_per_epoch)  # fmt: skip
    streams = [_batches(m.setup.loaders.train, start, plan.steps_per_epoch) for m in members]
    sigint = SigintFlag()
    synced = time.perf_counter()
    try:
        with sigint.installed():
            for step in range(start, stop_at):
                batches = [next(s) for s in streams]
                t0 = time.perf_counter()
                lrs = torch.tensor(
                    [lr_at(step, plan.total, m.setup.cfg.lr, cfg.schedule, plan.warmup) for m in members],
                    dtype=stack.flat.dtype, device=device,
                )  # fmt: skip
                xs = torch.stack([x for x, _ in batches])
                ys = torch.stack([y for _, y in batches])
                sums = step_together(stack, xs, ys, lrs, cfg.label_smoothing, precision)
                alive = [m for m in members if m.diverged is None]
                for i, m in enumerate(members):
                    m.state.pending.append(Figures(step, sums[i], len(ys[i]), None))
                    m.state.step = step + 1
                last = step + 1 == stop_at
                evaluate_now = (step + 1) % plan.eval_every == 0 or last
                log_now = bool(cfg.log_every) and (step + 1) % cfg.log_every == 0 and not evaluate_now
                checkpoint_now = (step + 1) % plan.checkpoint_every == 0 or last or sigint.raised
                show = bar.due(step + 1)
                if (show or evaluate_now or log_now or checkpoint_now
                        or time.perf_counter() - synced >= SYNC_SECONDS):  # fmt: skip
                    _sync(members)
                    synced = time.perf_counter()
                dt = (time.perf_counter() - t0) / max(1, len(alive))  # each member's share of the step
                alive = [m for m in members if m.diverged is None]
                for m in alive:
                    m.state.running.seconds += dt
                    m.state.elapsed += dt
                if show:
                    seen = sum(m.state.running.seen for m in alive)
                    seconds = sum(m.state.running.seconds for m in alive)
                    loss = min((m.state.loss for m in alive), default=math.nan)
                    bar.update(step + 1, loss, seen / max(seconds, 1e-9))
                else:
                    bar.advance(step + 1)
                for i, m in enumerate(members):
                    if m.diverged is not None:
                        continue
                    if evaluate_now or checkpoint_now:
                        stack.write_back(i, m.learner)
                    if evaluate_now:
                        _evaluate(m.setup, m.learner, m.state, m.logs)
                    elif log_now:
                        _log_training(m.setup, m.state, m.logs)
                    if checkpoint_now:
                        save(m.setup, m.learner, m.state)
                if not any(m.diverged is None for m in members):
                    return
                if sigint.raised:
                    folders = " ".join(str(m.setup.run_dir) for m in members)
                    raise Interrupted(
                        f"interrupted at step {step + 1}/{plan.total}; saved checkpoints of {len(members)} "
                        f"runs trained together ({folders}); resume the sweep with --resume"
                    )
    finally:
        for s in streams:
            s.close()
        bar.close()
        for m in members:
            if m.logs is not None:
                m.logs.close()
            for loader in m.setup.loaders.all():
                loader.close()


def _sync(members: list[_Member]) -> None:
    """Each member's steps since the last sync read back; a NaN marks that member diverged."""
    for m in members:
        if m.diverged is not None:
            m.state.pending = []
            continue
        try:
            _sync_one(m.setup, m.state, m.logs)
        except Diverged as e:
            m.diverged = e
            m.state.pending = []


def _result(m: _Member, stack: Stack, i: int, total: int) -> RunResult | Diverged:
    """What ``train`` would have returned for member ``m``: its result, or its divergence."""
    if m.diverged is not None:
        return m.diverged
    stack.write_back(i, m.learner)
    finished = m.state.step >= total
    if finished:
        _save_final(m.setup.cfg, m.learner.eval_model)
    if not m.state.metrics:
        m.state.metrics = last_metrics(m.setup.run_dir, m.state.step)
    return RunResult(m.setup.run_dir, m.state.step, m.state.metrics, m.learner.eval_model, finished=finished)
