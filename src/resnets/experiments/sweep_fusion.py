"""Whether a sweep trains its members fused (training/fused.py): measured on the machine, then cached.

Fusing N members makes each kernel do N times the work for one launch, which pays where a small
net leaves the device idle between launches (a GPU) and may not where the arithmetic is already
the bottleneck (issue 22 measured grouped-convolution fusion of 4-16 members at 0.44-1.23x the
separate members on a 2-core CPU). So a short trial decides, as for the fast path: the sweep's
own net on synthetic data of its input shape, timed SGD steps of one member, then of the members
fused, and fusion is chosen where it beats the members one after another by ``MARGIN``. The
choice, its figures and the device go into the sweep's workers.json; a resumed sweep keeps them.
A CPU skips the trial (see ``CPU_WHY``).
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from ..io import atomic_write_text
from ..io.cache import cache_dir
from ..training import TrainConfig
from ..training.autotune import device_name
from ..training.build import seeded_model
from ..training.device import resolve_device
from ..training.fused import Stack, step_together, unfusable

CACHE_FILE = "sweep-fusion.json"
TRIAL_STEPS = 5  # timed steps per side, after one untimed
TRIAL_MEMBERS = 8  # at most this many members fused in the trial: the speed-up flattens beyond
MARGIN = 1.1  # fusion must beat the members in turn by this much: it also costs a fused set-up
# On a CPU the arithmetic is the bottleneck: fused steps ran at 0.44-1.23x the members in turn in
# issue 22's measurement and at 0.77x / 0.47x / 0.39x for 2 / 4 / 8 resnet20 members on a 2-core
# AMD EPYC family 25 model 17 (docs/performance.md, "Fused members"),
# while members trained in turn stay bit for bit their runs alone. So a CPU trains them in turn
# (or in processes) unless --fuse yes asks otherwise; `benchmarks/sweep.py fusion` measures it.
CPU_WHY = "a CPU: fusion does not pay there (benchmarks/sweep.py fusion); --fuse yes forces it"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(base: TrainConfig, n: int, shape: tuple[int, ...], classes: int, device: torch.device) -> dict:
    """Steps/s of one member alone and of ``n`` members fused, at the sweep's batch, fp32."""
    batch = base.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, batch, *shape, generator=g).to(device)
    y = torch.randint(0, classes, (n, batch), generator=g).to(device)
    model = seeded_model(base, classes, shape).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def alone() -> None:
        loss = F.cross_entropy(model(x[0]), y[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    members = [SimpleNamespace(model=seeded_model(base, classes, shape).to(device), optimizer=optimizer)
               for _ in range(n)]  # fmt: skip
    stack = Stack(members, [base] * n)
    lrs = torch.full((n,), 1e-3, device=device)

    def fused() -> None:
        step_together(stack, x, y, lrs, 0.0, "fp32")

    rates = {}
    for name, step in (("alone", alone), ("fused", fused)):
        step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(TRIAL_STEPS):
            step()
        _sync(device)
        rates[name] = TRIAL_STEPS / (time.perf_counter() - t0)
    return {"members": n, "alone_steps_per_s": round(rates["alone"], 3),
            "fused_steps_per_s": round(rates["fused"], 3)}  # fmt: skip


def choose_fusion(
    base: TrainConfig, members: list[TrainConfig], shape: tuple[int, ...], classes: int, fuse: str
) -> dict[str, Any]:
    """{"fused": bool, "why": ...}: ``fuse`` yes/no as given, auto by a cached trial on this device."""
    why = unfusable(members)
    if fuse == "no" or why is not None:
        return {"fused": False, "why": "--fuse no" if fuse == "no" else why}
    if fuse == "yes":
        return {"fused": True, "why": "--fuse yes"}
    device = resolve_device(base.device)
    if device.type == "cpu":
        return {"fused": False, "why": CPU_WHY}
    n = min(len(members), TRIAL_MEMBERS)
    options = json.dumps(base.model_options, sort_keys=True)
    key = (f"{device_name(device)} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
           f"{base.model} {options} | {list(shape)} | batch {base.batch_size} | members {n}")  # fmt: skip
    path = cache_dir() / CACHE_FILE
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    figures = cache.get(key)
    if not isinstance(figures, dict) or "fused_steps_per_s" not in figures:
        figures = measure(base, n, shape, classes, device)
        cache[key] = figures
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n")
    speedup = figures["fused_steps_per_s"] * n / max(figures["alone_steps_per_s"], 1e-9)
    why = f"{n} members fused ran {speedup:.2f}x the members in turn in a trial"
    return {"fused": speedup >= MARGIN, "why": why, "trial": figures, "machine": device_name(device)}
