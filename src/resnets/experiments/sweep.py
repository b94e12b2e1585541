"""`resnets sweep`: one net trained at several learning rates, weight decays and seeds, each a run of its own.

Each member is an ordinary run directory (DIR/<member>/, as `resnets train` writes it), trained by
the same ``train`` function, members one after another in one process: process start-up,
imports, data loading and the fast-path trial are paid once per sweep instead of once per run,
and a member equals the run `resnets train` makes with its settings (tests hold it to that).
On a CPU, where a short trial finds several one-thread processes faster than one process with
every thread (sweep_workers.py), the members are split over that many processes instead; each
member then equals `OMP_NUM_THREADS=1 resnets train` with its settings. Where a trial finds it
faster (a GPU, mostly: sweep_fusion.py), members that differ only in lr, decay and seed are trained
fused (training/fused.py): one pass of every kernel for all of them, each member still its own run.

With ``prune="halving"`` the (lr, weight decay) grid is searched with the first seed by successive
halving on the validation error (each rung's BatchNorm statistics recomputed over training
images first), and only the chosen setting is trained with the other seeds; ``prune="first-seed"``
does the same with one rung, every candidate trained to the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..io import atomic_write_text, exclusive
from ..training import RunResult, TrainConfig, distributed, train
from ..training.checkpoint import WEIGHTS_FILE, list_checkpoints
from ..training.device import resolve_device
from ..training.errors import Diverged
from .halving import Rung, promote, rungs
from .runner import say
from .sweep_collect import SweepResult, collect
from .sweep_config import (
    CHOSEN_FILE,
    GROWING,
    MEMBER_FILE,
    RUNGS_FILE,
    SEARCHES,
    SETTINGS_FILE,
    WORKERS_FILE,
    Member,
    SweepConfig,
    main_process,
    read_json,
)  # fmt: skip
from .sweep_workers import run_in_processes

# A rung ranks by validation error, then loss: early in a run several members may sit at chance
# (the same error), and the loss still orders them.
Score = tuple[float, float]
PRECISE_BN_IMAGES = 2048  # training images a rung's BN statistics are averaged over
DIVERGED: Score = (math.nan, math.nan)
Log = Callable[[str], None]


def run_sweep(cfg: SweepConfig, resume: bool = False, progress: bool = True, log: Log = say) -> SweepResult:
    """Train this shard's members (or load them), then write sweep.json when every member is in."""
    cfg.validate()
    # Under torchrun the processes join one group for the whole sweep; each member is a DDP run in it.
    ctx = distributed.setup(resolve_device(cfg.base.device))
    try:
        return _run_sweep(cfg, resume, progress, log)
    finally:
        distributed.teardown(ctx)


def _run_sweep(cfg: SweepConfig, resume: bool, progress: bool, log: Log) -> SweepResult:
    out = Path(cfg.out)
    index, count = cfg.shard
    holder = out if count == 1 else out / f".shard-{index}-of-{count}"
    # Under torchrun every process runs the sweep and each member is a DDP run; rank 0 alone writes.
    with exclusive(holder, "sweep") if main_process() else contextlib.nullcontext():
        if main_process():
            _check_settings(out, cfg, resume)
        mechanism = _mechanism(cfg, log) if main_process() else {"processes": 1, "fused": False}
        fused = bool(mechanism.get("fused"))
        if cfg.prune in SEARCHES:
            _search(cfg, progress, log, fused)
        elif mechanism["processes"] > 1:
            run_in_processes(cfg, int(mechanism["processes"]))
        else:
            mine = cfg.members()[index::count]
            if fused:
                _train_fused(cfg, [m for m in mine if _status(cfg, m) is None], None, progress, log)
            for i, member in enumerate(mine, 1):
                status = _status(cfg, member)
                log(f"[{i}/{len(mine)}] {member.name}: {status or 'training'}")
                if status is None:
                    _train_member(cfg, member, until=None, progress=progress)
    if not main_process():
        return SweepResult([], None, complete=False)
    return collect(cfg.out)


def _mechanism(cfg: SweepConfig, log: Log) -> dict[str, Any]:
    """How this sweep trains its members: fused, in one-thread processes or in turn; kept in workers.json."""
    if "WORLD_SIZE" in os.environ:
        return {"processes": 1, "fused": False}  # each member is a DDP run of the torchrun job
    path = Path(cfg.out) / WORKERS_FILE
    if cfg.shard[1] == 1 and path.exists():
        return {"fused": False, **read_json(path)}  # a sweep saved before fusion trained in turn
    from ..data import load_dataset
    from .sweep_fusion import choose_fusion
    from .sweep_workers import choose_processes

    data = load_dataset(cfg.base.dataset, cfg.base.data_dir, **cfg.base.dataset_options)
    shape, classes = tuple(data.image_shape), data.num_classes
    # A search fuses its candidates at the first seed; the others fuse the whole grid.
    group = [Member(lr, wd, cfg.seeds[0]) for lr in cfg.lrs for wd in cfg.weight_decays]
    if cfg.prune not in SEARCHES:
        group = cfg.members()[cfg.shard[0] :: cfg.shard[1]]
    fusion = choose_fusion(cfg.base, [cfg.member_config(m) for m in group], shape, classes, cfg.fuse)
    if fusion["fused"]:
        decision = {"processes": 1, **fusion}
    elif cfg.prune in SEARCHES or cfg.shard[1] > 1 or resolve_device(cfg.base.device).type != "cpu":
        # Rungs need every score in one place; a shard is a process already; one process per GPU.
        decision = {"processes": 1, "fused": False, "why": fusion["why"]}
    elif cfg.processes is not None:
        decision = {"processes": min(cfg.processes, len(cfg.members())), "fused": False, "why": "--processes"}
    else:
        decision = {**choose_processes(cfg.base, len(cfg.members()), shape, classes), "fused": False}
    decision.setdefault("fusion", fusion)
    if cfg.shard[1] == 1:
        atomic_write_text(path, json.dumps(decision, indent=1) + "\n")
    if decision["fused"]:
        log(f"training the members fused ({decision['why']})")
    elif decision["processes"] > 1:
        log(f"training in {decision['processes']} one-thread processes side by side ({decision['why']})")
    return decision


def _train_fused(
    cfg: SweepConfig, members: list[Member], until: int | None, progress: bool, log: Log
) -> None:
    """Train ``members`` together to ``until`` (or the end), writing the rows of those that finish or diverge.

    Where their nets cannot be fused after all (a random layer, a streamed dataset), it says so and
    leaves them to be trained one by one.
    """
    from ..training.fused import train_together

    if len(members) < 2:
        return
    runs = [cfg.member_config(m) for m in members]
    try:
        results = train_together(runs, resume=True, progress=progress, until=until)
    except ResnetsError as e:
        if "cannot train together" not in str(e):
            raise
        log(f"{e}: training them one by one")
        return
    for member, run, result in zip(members, runs, results, strict=True):
        if isinstance(result, Diverged):
            _write_row(Path(run.out), member, "diverged", result.step or 0, {}, diverged=str(result))
        elif result.finished:
            _write_row(Path(run.out), member, "done", result.steps, result.metrics)


def _check_settings(out: Path, cfg: SweepConfig, resume: bool) -> None:
    """Save the sweep's settings, or check them against the saved ones of the sweep resumed.

    Shards share one folder and are started together (an array job), so for them the first to
    arrive writes the settings and the rest only check them: --resume is implied.
    """
    path = out / SETTINGS_FILE
    settings = cfg.settings()
    if not path.exists():
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return
    if not resume and cfg.shard[1] == 1:
        raise ResnetsError(f"{out} already holds a sweep; pass --resume to continue it or use another --out")
    saved = read_json(path)
    # A setting added to TrainConfig since the sweep began is read at its default, as config.json is.
    defaults = json.loads(TrainConfig(model=cfg.base.model).to_json())
    saved["base"] = {**defaults, **(saved.get("base") or {})}
    saved["base"] = {k: v for k, v in saved["base"].items() if k in settings["base"]}
    for key, value in settings.items():
        grows = key in GROWING and cfg.prune != "halving" and set(saved.get(key) or []) <= set(value)
        if saved.get(key) != value and not grows:
            what = f"--{key}" if key != "base" else _first_difference(saved.get("base") or {}, value)
            raise ResnetsError(
                f"{what} differs from the sweep in {out}; a resumed sweep keeps its settings: "
                "use another --out"
            )
    if saved != settings:  # more learning rates or seeds than before: the folder now holds the larger grid
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _first_difference(saved: dict[str, Any], now: dict[str, Any]) -> str:
    key = next((k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)), "a setting")
    return f"--{key.replace('_', '-')} ({now.get(key)!r}, was {saved.get(key)!r})"


def _status(cfg: SweepConfig, member: Member) -> str | None:
    path = Path(cfg.member_config(member).out) / MEMBER_FILE
    return f"{read_json(path)['status']}, loading" if path.exists() else None


def _train_member(cfg: SweepConfig, member: Member, until: int | None, progress: bool) -> RunResult | None:
    """Train (or continue) one member to ``until`` or its end; None when it diverged (its row says where)."""
    run = cfg.member_config(member)
    folder = Path(run.out)
    resume = bool(list_checkpoints(folder)) or (folder / WEIGHTS_FILE).exists()
    try:
        result = train(run, resume=resume, progress=progress, until=until)
    except Diverged as e:
        _write_row(folder, member, "diverged", e.step, {}, diverged=str(e))
        return None
    if result.finished:
        _write_row(folder, member, "done", result.steps, result.metrics)
    return result


def _write_row(
    folder: Path,
    member: Member,
    status: str,
    steps: int,
    metrics: dict[str, Any],
    diverged: str | None = None,
) -> dict[str, Any]:
    """member.json: the member's row of sweep.json, written once it is done, diverged or pruned."""
    row = {
        "member": member.name, "lr": member.lr, "seed": member.seed, "weight_decay": member.weight_decay,
        "status": status, "steps": steps,
        "train_error": metrics.get("train_error") if status == "done" else None,
        "val_error": metrics.get("val_error"),
        "test_error": metrics.get("test_error") if status == "done" else None,
        "seconds": metrics.get("time"), "diverged": status == "diverged",
        "step_diverged": steps if status == "diverged" else None, "why": diverged,
    }  # fmt: skip
    if main_process():
        atomic_write_text(folder / MEMBER_FILE, json.dumps(row, indent=1) + "\n")
    return row


def _search(cfg: SweepConfig, progress: bool, log: Log, fused: bool = False) -> None:
    """The (lr, decay) grid at the first seed, halved at rungs or in full; the best then gets every seed."""
    first = cfg.seeds[0]
    candidates = [Member(lr, wd, first) for lr in cfg.lrs for wd in cfg.weight_decays]
    total, per_epoch = _run_length(cfg)
    if cfg.prune == "halving":
        schedule = rungs(len(candidates), total, cfg.eta, per_epoch)
    else:
        schedule = [Rung(0, len(candidates), total)]
    alive = candidates
    reached: dict[Member, tuple[int, Score]] = {}  # each candidate's last rung and score there
    for rung, after in zip(schedule, [*schedule[1:], None], strict=True):
        if fused:
            _train_fused(cfg, [m for m in alive if _needs_rung(cfg, m, rung)], rung.step, progress, log)
        scores = {m: _rung_score(cfg, m, rung, progress, log) for m in alive}
        reached |= {m: (rung.index, score) for m, score in scores.items()}
        kept = promote(scores, after.keep if after else 1, candidates)
        for m in alive:
            if m not in kept:
                _prune(cfg, m, rung, scores[m])
        alive = kept
    winner = alive[0]
    # A survivor may diverge after the rung that promoted it (a high rate looks best early). Then the
    # best candidate still finite, latest rung first, goes on to the end in its place.
    while math.isnan(reached[winner][1][0]):
        finite = [m for m in candidates if not math.isnan(reached[m][1][0])]
        if not finite:
            log("every setting diverged: no other seed is trained")
            if main_process():
                atomic_write_text(
                    Path(cfg.out) / CHOSEN_FILE, json.dumps({"lr": None, "weight_decay": None}) + "\n"
                )
            return
        winner = min(finite, key=lambda m: (-reached[m][0], reached[m][1], candidates.index(m)))
        log(f"{winner.name}: the best setting left, trained to the end")
        reached[winner] = (len(schedule), _rung_score(cfg, winner, schedule[-1], progress, log))
    error, loss = reached[winner][1]
    chosen = {"lr": winner.lr, "weight_decay": winner.weight_decay, "val_error": error, "val_loss": loss}
    if main_process():
        atomic_write_text(Path(cfg.out) / CHOSEN_FILE, json.dumps(chosen) + "\n")
    if fused:
        others = [dataclasses.replace(winner, seed=seed) for seed in cfg.seeds[1:]]
        _train_fused(cfg, [m for m in others if _status(cfg, m) is None], None, progress, log)
    for seed in cfg.seeds[1:]:
        member = dataclasses.replace(winner, seed=seed)
        status = _status(cfg, member)
        log(f"{member.name}: {status or 'training'} (the chosen setting, another seed)")
        if status is None:
            _train_member(cfg, member, until=None, progress=progress)


def _rung_score(cfg: SweepConfig, member: Member, rung: Rung, progress: bool, log: Log) -> Score:
    """The member's (val error, val loss) at the rung's step, trained there now or read from rungs.json."""
    folder = Path(cfg.member_config(member).out)
    path = folder / RUNGS_FILE
    scores = read_json(path) if path.exists() else {}
    if str(rung.step) in scores:
        value = scores[str(rung.step)]
        return DIVERGED if value is None else (float(value[0]), float(value[1]))
    if (folder / MEMBER_FILE).exists() and read_json(folder / MEMBER_FILE)["status"] == "diverged":
        return DIVERGED
    log(f"rung {rung.index + 1}: {member.name} to step {rung.step}")
    result = _train_member(cfg, member, until=rung.step, progress=progress)
    score = DIVERGED if result is None else _validate(cfg, result)
    scores[str(rung.step)] = None if math.isnan(score[0]) else list(score)
    atomic_write_text(path, json.dumps(scores) + "\n")
    return score


def _needs_rung(cfg: SweepConfig, member: Member, rung: Rung) -> bool:
    """Whether the member has still to be trained to the rung: no score there, not diverged."""
    folder = Path(cfg.member_config(member).out)
    if (folder / MEMBER_FILE).exists() and read_json(folder / MEMBER_FILE)["status"] == "diverged":
        return False
    return not ((folder / RUNGS_FILE).exists() and str(rung.step) in read_json(folder / RUNGS_FILE))


def _validate(cfg: SweepConfig, result: RunResult) -> Score:
    """(val error, val loss) of the member's weights at the rung, its BN statistics recomputed first.

    Eval-mode statistics lag the weights early in a run (see training/precise_bn.py), and the
    rungs are early: every member is judged with statistics of its current weights instead.
    """
    from ..data import TensorLoader, load_dataset
    from ..training.evaluate import evaluate
    from ..training.loaders import held_out
    from ..training.precise_bn import with_precise_bn
    from ..training.rundir import read_resolved

    base = cfg.base
    data = load_dataset(base.dataset, base.data_dir, **base.dataset_options)
    train_split, val_split = held_out(data, base.val_split)
    device = next(result.model.parameters()).device
    resolved = read_resolved(result.run_dir) or {}
    precision = resolved.get("precision", "fp32")
    # The member's own normalisation (a pretrained file's may replace the data's).
    mean, std = resolved.get("mean", data.mean), resolved.get("std", data.std)
    images = train_split.subset(PRECISE_BN_IMAGES, seed=0)
    loader = TensorLoader(images, base.batch_size, mean, std, device)
    model = with_precise_bn(result.model, (x for x, _ in loader), precision)
    loss, error = evaluate(model, TensorLoader(val_split, base.batch_size, mean, std, device), precision)
    return error, loss  # a NaN loss ranks the member last, as a diverged one


def _prune(cfg: SweepConfig, member: Member, rung: Rung, score: Score) -> None:
    folder = Path(cfg.member_config(member).out)
    if (folder / MEMBER_FILE).exists():  # diverged (its row says so already), or pruned before a kill
        return
    metrics = {"val_error": None if math.isnan(score[0]) else score[0]}
    _write_row(folder, member, "pruned", rung.step, metrics)


def _run_length(cfg: SweepConfig) -> tuple[int, int]:
    """(total steps, steps per epoch) of every member: the data decides them, as ``train`` does."""
    from ..data import load_dataset
    from ..training.loaders import held_out
    from ..training.setup import total_steps

    base = cfg.base
    data = load_dataset(base.dataset, base.data_dir, **base.dataset_options)
    train_split, _ = held_out(data, base.val_split)
    images = min(len(train_split), base.train_subset or len(train_split))
    per_epoch = images // base.batch_size
    if per_epoch == 0:
        raise ResnetsError(f"batch size {base.batch_size} is larger than the training set ({images} images)")
    return total_steps(base, per_epoch), per_epoch
