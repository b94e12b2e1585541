"""Fast-path settings measured on the machine that trains: bf16, channels-last and compile.

A setting left on auto is decided by a short trial of the run's own model on synthetic data of
its own input shape: a few timed SGD steps per candidate, at a batch small enough that a warm
step takes at most half a second. torch.compile is tried only for runs long enough that it could
pay, and chosen where the measured saving over the whole run exceeds its measured warm-up; on one
GPU the step compiled for CUDA graphs (mode "reduce-overhead": small nets leave a GPU waiting on
kernel launches) is timed too, and the option with the larger net saving wins.
The figures are cached per (device model, torch version, threads, model, options, input shape)
under the user's cache folder, so the trial runs once per machine and model, and they go into
config.json ("resolved.fast_path"), beside the choice.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..io import atomic_write_text
from ..io.cache import cache_dir
from ..models import Network
from . import distributed
from .config import TrainConfig
from .precision import autocast
from .step import FastPath, has_compiler

CACHE_FILE = "fastpath.json"
TRIAL_STEP_SECONDS = 0.5  # the trial batch is halved until a warm step takes at most this long
TRIAL_FIRST_STEP_SECONDS = 4 * TRIAL_STEP_SECONDS  # a first step slower than this halves it untimed
TRIAL_SIZING = "sized warm"  # in the cache key: trials sized on a first step alone are measured again
TRIAL_MAX_BATCH = 64
# A candidate whose first warm step takes over this many times the best so far is not timed again:
# bf16 on an AVX2-only EPYC (family 25 model 1) measured 12x slower than fp32 for resnet18 at 224 px
# (10-12 s a step) and 8x at inference, where each further step or call cost the trial 10-27 s.
GIVE_UP = 2.0
COMPILE_TRIAL_MIN_SECONDS = 300.0  # runs shorter than this (eager) cannot repay a compile's warm-up
PRECISION_CODES = ("fp32", "bf16", "fp16")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its family/model numbers."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name, family, model = (fields.get(k, "?") for k in ("model name", "cpu family", "model"))
    return f"{name} (family {family}, model {model})"


@dataclass
class Trial:
    """Seconds per step of each candidate at one trial batch."""

    batch: int
    # "fp32/nchw" -> s per step; "compile bf16/nhwc", "graphs bf16/nhwc" and their " warmup" when tried
    seconds: dict[str, float]

    def best(self, allowed: list[tuple[str, bool]]) -> tuple[str, bool]:
        """The fastest eager (precision, channels_last) among ``allowed``."""
        return min(allowed, key=lambda c: self.seconds[_name(*c)])


def _name(precision: str, channels_last: bool) -> str:
    return f"{precision}/{'nhwc' if channels_last else 'nchw'}"


def step_seconds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, device, steps: int = 2,
    graphs: bool = False, rival: float | None = None,
):  # fmt: skip
    """(first step, best of ``steps`` more) wall seconds of forward + backward + SGD.

    With ``rival`` (another candidate's best warm step), one whose first warm step takes over
    ``GIVE_UP`` times that is timed no further: it has lost.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times: list[float] = []
    for _ in range(steps + 1):
        if rival is not None and len(times) == 2 and times[1] > GIVE_UP * rival:
            break
        t0 = time.perf_counter()
        if graphs:  # a new step: CUDA graphs may reuse the memory of the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(precision, device):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times[0], min(times[1:] or times)


def _candidates(cfg: TrainConfig, device: torch.device) -> list[tuple[str, bool]]:
    precisions = [cfg.precision] if cfg.precision != "auto" else ["fp32", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        precisions = [p for p in precisions if p != "bf16"] or ["fp32"]
    layouts = [cfg.channels_last] if cfg.channels_last is not None else [False, True]
    return [(p, c) for p in precisions for c in layouts]


def run_trial(model: nn.Module, cfg: TrainConfig, shape, classes: int, micro_batch: int, device) -> Trial:
    """Time every candidate on a copy of ``model`` (its weights are left untouched)."""
    probe = copy.deepcopy(model).to(device).train()
    batch = min(micro_batch, TRIAL_MAX_BATCH)
    g = torch.Generator().manual_seed(0)
    while True:
        x = torch.randn(batch, *shape, generator=g).to(device)
        y = torch.randint(0, classes, (batch,), generator=g).to(device)
        # A first step also pays one-time costs (kernel choice, allocations) that can be several times a
        # small net's step: sizing on it alone shrank a 2-core CPU's trial to batch 4, where bf16's casts
        # cost more than they save (fp32 measured fastest there, bf16 1.7x faster at the run's batch 128).
        first, _ = step_seconds(probe, x, y, "fp32", device, steps=0)
        steady = first
        if first <= TRIAL_FIRST_STEP_SECONDS:
            _, steady = step_seconds(probe, x, y, "fp32", device, steps=1)
        if steady <= TRIAL_STEP_SECONDS or batch <= 4:
            break
        batch //= 2
    seconds: dict[str, float] = {}
    for precision, channels_last in _candidates(cfg, device):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        probe = probe.to(memory_format=fmt)
        best = min(seconds.values(), default=None)
        _, step = step_seconds(probe, x.contiguous(memory_format=fmt), y, precision, device, rival=best)
        seconds[_name(precision, channels_last)] = step
    return Trial(batch, seconds)


def compiled_name(fast: FastPath, graphs: bool) -> str:
    """The trial's name for the compiled step at ``fast``'s precision and layout ("compile bf16/nhwc")."""
    return f"{'graphs' if graphs else 'compile'} {_name(fast.precision, fast.channels_last)}"


def time_compile(
    model: nn.Module, trial: Trial, shape, classes: int, fast: FastPath, device, graphs: bool = False
) -> None:
    """Add the compiled step's warm-up and steady time to ``trial`` (at the trial batch, under
    ``compiled_name``); with ``graphs``, of the step compiled for CUDA graphs."""
    fmt = torch.channels_last if fast.channels_last else torch.contiguous_format
    probe = copy.deepcopy(model).to(device).train().to(memory_format=fmt)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(trial.batch, *shape, generator=g).to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (trial.batch,), generator=g).to(device)
    compiled = torch.compile(probe, mode="reduce-overhead" if graphs else None, dynamic=False)
    # CUDA graphs record on the second call and replay from the third: the warm-up is both first calls
    first, second = step_seconds(compiled, x, y, fast.precision, device, steps=int(graphs), graphs=graphs)
    _, step = step_seconds(compiled, x, y, fast.precision, device, steps=3, graphs=graphs)
    name = compiled_name(fast, graphs)
    if not all(torch.isfinite(p).all() for p in probe.parameters()):
        # A compiler bug must cost the run its speed-up, not its weights (an inductor amax backward
        # once gave NaN gradients here): the compiled step is recorded as failed and never chosen.
        trial.seconds[f"{name} not finite"] = 1.0
    else:
        trial.seconds[f"{name} warmup"], trial.seconds[name] = first + second if graphs else first, step
    # The trial's compiled code and graphs must not outlive it: dynamo keys what it learns (a batch
    # size seen to change, say) by code object, so the run would otherwise compile another graph.
    torch._dynamo.reset()


def best_compile(
    trial: Trial, eager: float, steps_per_trial_step: float, fast: FastPath, graphs_allowed: bool
) -> tuple[bool, bool]:
    """(compile, graphs): of the options measured at ``fast``'s precision and layout (graphs only where
    allowed), the one whose saving over the run most exceeds its warm-up; (False, False) if none."""
    best, choice = 0.0, (False, False)
    for graphs in (False, True) if graphs_allowed else (False,):
        name = compiled_name(fast, graphs)
        if name in trial.seconds:
            net = (eager - trial.seconds[name]) * steps_per_trial_step - trial.seconds[f"{name} warmup"]
            if net > best:
                best, choice = net, (True, graphs)
    return choice


def _key(cfg: TrainConfig, shape, micro_batch: int, device: torch.device) -> str:
    options = json.dumps(cfg.model_options, sort_keys=True)
    batch = min(micro_batch, TRIAL_MAX_BATCH)
    where = f"{device_name(device)} | torch {torch.__version__} | threads {torch.get_num_threads()}"
    return f"{where} | {cfg.model} {options} | {list(shape)} | batch <= {batch} | {TRIAL_SIZING}"


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(key: str, trial: Trial) -> None:
    from filelock import FileLock, Timeout

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / (CACHE_FILE + ".lock")), timeout=30):
            data = _load_cache()
            data[key] = {"batch": trial.batch, "seconds": trial.seconds}
            atomic_write_text(folder / CACHE_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except (OSError, Timeout):
        pass  # a read-only or busy cache only means the next run measures again


def tune(
    cfg: TrainConfig, model: Network, shape, classes: int, micro_batch: int, steps: int, device,
    world: int = 1,
) -> tuple[FastPath, dict[str, Any]]:  # fmt: skip
    """The fast path for a run of ``steps`` micro-batches, and what config.json records of the choice."""
    wants_trial = cfg.precision == "auto" or cfg.channels_last is None
    compile_auto = cfg.compile is None and not cfg.cuda_graphs and cfg.grad_every is None
    compile_auto = compile_auto and not model.checkpoint_segments
    compile_auto = compile_auto and (device.type == "cuda" or has_compiler())
    # CUDA graphs on one GPU only: with BatchNorm under DDP they measured slower than eager (pytorch#139207)
    graphs_auto = compile_auto and cfg.cuda_graphs is None and device.type == "cuda" and world == 1
    given = FastPath(cfg.precision, bool(cfg.channels_last), bool(cfg.compile or cfg.cuda_graphs),
                     bool(cfg.cuda_graphs))  # fmt: skip
    if not wants_trial and not compile_auto:
        return given, {"trial": None}
    key = _key(cfg, shape, micro_batch, device)
    cached = _load_cache().get(key)
    trial = Trial(cached["batch"], dict(cached["seconds"])) if cached else None
    allowed = _candidates(cfg, device)
    fresh = trial is None or not all(_name(*c) in trial.seconds for c in allowed)
    if fresh:
        trial = run_trial(model, cfg, shape, classes, micro_batch, device)
    precision, channels_last = trial.best(allowed)
    fast = FastPath(precision, channels_last, given.compile, given.graphs)
    eager = trial.seconds[_name(precision, channels_last)]
    run_seconds = eager * micro_batch / trial.batch * steps  # the whole run, eager, estimated
    if compile_auto and run_seconds >= COMPILE_TRIAL_MIN_SECONDS:
        for graphs in (False, True) if graphs_auto else (False,):
            name = compiled_name(fast, graphs)
            if name not in trial.seconds and f"{name} not finite" not in trial.seconds:
                time_compile(model, trial, shape, classes, fast, device, graphs)
                fresh = True
        compiled, graphs = best_compile(trial, eager, micro_batch / trial.batch * steps, fast, graphs_auto)
        fast = FastPath(precision, channels_last, compiled, graphs)
    if fresh:
        _save_cache(key, trial)
    figures = {k: round(v, 5) for k, v in trial.seconds.items()}
    record = {"trial": {"batch": trial.batch, "seconds_per_step": figures}, "cached": not fresh,
              "eager_run_estimate_s": round(run_seconds, 1), "key": key}  # fmt: skip
    return fast, record


@torch.inference_mode()
def inference_precision(net: nn.Module, shape, device: torch.device, channels_last: bool) -> tuple[str, dict]:
    """fp32 or bf16 for serving ``net`` (eval mode, on ``device``): the faster in a short, cached trial."""
    candidates = ["fp32", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", {}
    key = f"{device_name(device)} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
    key += f"inference {type(net).__name__} {sum(p.numel() for p in net.parameters())} | {list(shape)}"
    cached = _load_cache().get(key)
    if cached is None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        batch, seconds = TRIAL_MAX_BATCH, {}
        x = torch.randn(batch, *shape).to(device).contiguous(memory_format=fmt)
        for precision in candidates:
            times: list[float] = []
            while len(times) < 3:
                t0 = time.perf_counter()
                with autocast(precision, device):
                    net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
                if not seconds and len(times) == 1 and times[0] > TRIAL_STEP_SECONDS and batch > 4:
                    # at 224 px a first call of 64 images took 3.3 s (fp32) and 27 s (bf16): fewer images
                    batch = max(4, 2 ** int(math.log2(batch * TRIAL_STEP_SECONDS / times[0])))
                    x, times = x[:batch], []
                elif seconds and len(times) == 2 and times[1] > GIVE_UP * min(seconds.values()):
                    break  # lost already (as in the training trial)
            seconds[precision] = min(times[1:])
        cached = {"batch": batch, "seconds": seconds}
        _save_cache(key, Trial(batch, seconds))
    return min(candidates, key=cached["seconds"].__getitem__), cached


def choose_fast_path(
    cfg: TrainConfig, model: nn.Module, shape, classes: int, micro_batch: int, steps: int,
    ctx: distributed.Context, saved: dict[str, Any] | None,
) -> tuple[FastPath, dict[str, Any]]:  # fmt: skip
    """Tune on rank 0 and share its choice; a resumed run keeps the choice it started with."""
    if saved is not None and "precision" in saved:
        layout = saved.get("channels_last", cfg.channels_last is not False)
        graphs = cfg.cuda_graphs if cfg.cuda_graphs is not None else bool(saved.get("cuda_graphs"))
        # resumed on a CPU, or auto's choice resumed under torchrun: no graphs (auto never picks them there)
        graphs = graphs and ctx.device.type == "cuda" and (ctx.world == 1 or cfg.cuda_graphs is True)
        compile_ = cfg.compile if cfg.compile is not None else bool(saved.get("compile")) or graphs
        fast = FastPath(saved["precision"], layout, compile_, graphs and compile_)
        return fast, saved.get("fast_path", {"trial": None})
    if ctx.main:
        fast, record = tune(cfg, model, shape, classes, micro_batch, steps, ctx.device, ctx.world)
    else:
        fast, record = FastPath("fp32", False, False), {}
    if ctx.world > 1:  # every rank must run the same graph: rank 0's measurement decides
        mine = (
            [PRECISION_CODES.index(fast.precision), fast.channels_last, fast.compile, fast.graphs]
            if ctx.main
            else [0, 0, 0, 0]
        )
        summed = distributed.all_sum(torch.tensor(mine, dtype=torch.float64, device=ctx.device), ctx)
        code, layout, compile_, graphs = (int(v) for v in summed.tolist())
        fast = FastPath(PRECISION_CODES[code], bool(layout), bool(compile_), bool(graphs))
    return fast, record
