"""How many processes a sweep trains its members in on a CPU: measured on the machine, then cached.

On a 2-core CPU one process of two threads and two processes of one thread each do the same
arithmetic, but the second keeps both cores busy through the parts of a step one thread runs
alone (the optimizer, the BatchNorm bookkeeping, Python): two one-thread shards of an 8-member
resnet20 sweep finished in 24.1 s against 27.8 s for one two-thread process (AMD EPYC family 25
model 17), and issue 22 measured 1.15x on the AMD EPYC family 25 model 1. Which wins depends on
the machine and the net, so a short trial decides: the run's own model, synthetic data of its
input shape, timed steps in this process with all its threads, then in one one-thread process
per thread, side by side. The choice and its figures go into the sweep's settings, and a
resumed sweep keeps them (the thread count changes a member's floating-point sums).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import signal
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..io import atomic_write_text
from ..io.cache import cache_dir
from ..training import TrainConfig
from ..training.autotune import device_name
from ..training.build import seeded_model

CACHE_FILE = "sweep-processes.json"
PR_SET_PDEATHSIG = 1  # prctl(2)
TRIAL_STEPS = 6  # timed SGD steps per side, after one untimed
MARGIN = 1.05  # several processes must beat one by this much: they also start torch several times
# Each extra process starts torch again (~2-3 s): with one member each, 2 processes of a 2-member
# resnet20 sweep took 10.7 s against 9.7 s for one process; from 2 members each they paid.
MIN_MEMBERS_EACH = 2


def _steps_per_second(
    base: TrainConfig, shape: tuple[int, ...], classes: int, batch: int, threads: int, start: Any = None
) -> float:
    """Training steps per second of the sweep's model at one batch, with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    model = seeded_model(base, classes, shape).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    if start is not None:
        start.wait()  # every worker's clock starts together
    t0 = time.perf_counter()
    for _ in range(TRIAL_STEPS):
        step()
    return TRIAL_STEPS / (time.perf_counter() - t0)


def _worker(args: tuple, start: Any, results: Any) -> None:
    results.put(_steps_per_second(*args, threads=1, start=start))


def measure(base: TrainConfig, shape: tuple[int, ...], classes: int, batch: int) -> dict:
    """Steps/s of one process with every thread, and of one one-thread process per thread together."""
    threads = torch.get_num_threads()
    one = _steps_per_second(base, shape, classes, batch, threads)
    torch.set_num_threads(threads)
    ctx = mp.get_context("spawn")  # a fork of a process holding torch's thread pool can hang
    start, results = ctx.Barrier(threads), ctx.Queue()
    args = (base, shape, classes, batch)
    workers = [ctx.Process(target=_worker, args=(args, start, results)) for _ in range(threads)]
    for w in workers:
        w.start()
    rates = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return {"threads": threads, "one_process_steps_per_s": round(one, 3),
            "processes_steps_per_s": round(sum(rates), 3)}  # fmt: skip


def choose_processes(base: TrainConfig, members: int, shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """The sweep's process count on this machine (1 where several would not pay), with its reason."""
    threads = torch.get_num_threads()
    if members < 2 * MIN_MEMBERS_EACH or threads < 2:
        why = "one thread" if threads < 2 else f"under {2 * MIN_MEMBERS_EACH} members"
        return {"processes": 1, "why": why}
    batch = min(base.batch_size, 64)
    options = json.dumps(base.model_options, sort_keys=True)
    key = (f"{device_name(torch.device('cpu'))} | torch {torch.__version__} | threads {threads} | "
           f"{base.model} {options} | {list(shape)} | batch {batch}")  # fmt: skip
    path = cache_dir() / CACHE_FILE
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    figures = cache.get(key) if isinstance(cache, dict) else None
    if not isinstance(figures, dict) or "processes_steps_per_s" not in figures:
        figures = measure(base, shape, classes, batch)
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = figures
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n")
    ratio = figures["processes_steps_per_s"] / max(figures["one_process_steps_per_s"], 1e-9)
    processes = min(threads, members // MIN_MEMBERS_EACH) if ratio >= MARGIN else 1
    why = f"{threads} one-thread processes ran {ratio:.2f}x one {threads}-thread process in a trial"
    return {"processes": processes, "why": why, "trial": figures, "machine": device_name(torch.device("cpu"))}


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies: a killed sweep leaves no orphan writing on."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(137)


def _child(cfg: Any, index: int, count: int, errors: Any) -> None:
    """One shard of the sweep in a one-thread process; a user error goes back to the parent as text."""
    import dataclasses

    from ..errors import ResnetsError
    from .sweep import run_sweep

    _die_with_parent()
    torch.set_num_threads(1)
    try:
        run_sweep(dataclasses.replace(cfg, shard=(index, count), processes=1), resume=True, progress=False)
    except ResnetsError as e:
        errors.put(str(e))
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: this one has stopped
        raise SystemExit(130) from None


def run_in_processes(cfg: Any, processes: int) -> None:
    """Train the sweep's members in ``processes`` one-thread shards side by side; wait for them all."""
    from ..errors import ResnetsError
    from ..training.errors import Interrupted

    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    children = [ctx.Process(target=_child, args=(cfg, i, processes, errors)) for i in range(processes)]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:
        for child in children:  # each checkpoints its member on the same Ctrl-C, then exits
            child.join()
        raise Interrupted(
            f"interrupted; continue with `resnets sweep ... --resume --out {cfg.out}`"
        ) from None
    failed = [c.exitcode for c in children if c.exitcode]
    if failed:
        message = errors.get() if not errors.empty() else f"a sweep process exited with status {failed[0]}"
        raise ResnetsError(message)
