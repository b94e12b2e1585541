"""`resnets sweep`: one net trained at several learning rates, weight decays and seeds, each a run of its own.

Each member is an ordinary run directory (DIR/<member>/, as `resnets train` writes it), trained by
the same ``train`` function in this one process, one member after another: process start-up,
imports, data loading and the fast-path trial are paid once per sweep instead of once per run,
and a member is equal to the run `resnets train` makes with its settings (tests hold it to that).
On the 2-core CPUs this project meets, training side by side does not pay (see docs/performance.md:
grouped-convolution fusion ran at 0.44-1.23x the separate members, and two one-thread processes
at 1.15x one two-thread process); fusing members on a GPU is not built yet.

With ``prune="halving"`` the (lr, weight decay) grid is searched with the first seed by successive
halving on the validation error (each rung's BatchNorm statistics recomputed over training
images first), and only the chosen setting is trained with the other seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..io import atomic_write_text, exclusive
from ..models import get_spec
from ..training import RunResult, TrainConfig, train
from ..training.checkpoint import WEIGHTS_FILE, list_checkpoints
from ..training.errors import Diverged
from .halving import Rung, promote, rungs
from .runner import say

SETTINGS_FILE = "sweep-settings.json"
SWEEP_FILE = "sweep.json"
MEMBER_FILE = "member.json"  # a member's row once it is done, diverged or pruned
RUNGS_FILE = "rungs.json"  # a halving candidate's validation error at each rung it reached
PRUNERS = ("none", "halving")
MECHANISM = "one process, members in turn"
# A rung ranks by validation error, then loss: early in a run several members may sit at chance
# (the same error), and the loss still orders them.
Score = tuple[float, float]
PRECISE_BN_IMAGES = 2048  # training images a rung's BN statistics are averaged over
DIVERGED: Score = (math.nan, math.nan)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its swept settings and its folder's name."""

    lr: float
    weight_decay: float
    seed: int

    @property
    def name(self) -> str:
        """The member's folder name, e.g. lr0.1_wd0.0005_seed0."""
        return f"lr{self.lr:g}_wd{self.weight_decay:g}_seed{self.seed}"


@dataclass
class SweepConfig:
    """A sweep: the settings every member shares, and the axes it sweeps."""

    base: TrainConfig  # every member's settings, with its own lr, weight decay, seed and folder
    lrs: list[float]
    weight_decays: list[float]
    seeds: list[int]
    out: str = "runs/sweep"
    prune: str = "none"  # "halving": successive halving of the (lr, decay) grid on val_error
    eta: int = 2  # halving keeps 1/eta of the candidates at each rung
    shard: tuple[int, int] = (0, 1)  # (index, count): this process trains members index, index+count, ...

    def validate(self) -> SweepConfig:
        """Check the axes and the settings; raise a one-line ResnetsError."""
        self.base.validate()
        get_spec(self.base.model)  # an unknown model fails before the folder is written
        for name, values in (("lr", self.lrs), ("weight-decay", self.weight_decays), ("seeds", self.seeds)):
            if not values:
                raise ResnetsError(f"--{name} needs at least one value")
            if len(set(values)) != len(values):
                raise ResnetsError(f"--{name} repeats a value: {values}")
        for lr in self.lrs:
            TrainConfig(lr=lr).validate()
        for wd in self.weight_decays:
            TrainConfig(weight_decay=wd).validate()
        if self.prune not in PRUNERS:
            raise ResnetsError(f"unknown --prune {self.prune!r}; choose {', '.join(PRUNERS)}")
        if not isinstance(self.eta, int) or self.eta < 2:
            raise ResnetsError(f"--eta must be an integer >= 2, got {self.eta!r}")
        index, count = self.shard
        if not 0 <= index < count:
            raise ResnetsError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")
        if self.prune == "halving":
            if not self.base.val_split:
                raise ResnetsError("--prune halving chooses on held-out images: add --val-split N")
            if "WORLD_SIZE" in os.environ and os.environ["WORLD_SIZE"] != "1":
                raise ResnetsError("--prune halving runs in one process: start it without torchrun")
            if count > 1:
                raise ResnetsError(
                    "--prune halving needs every member's score at each rung, so it runs on one machine; "
                    "use --prune none to spread a sweep with --shard"
                )
        return self

    def members(self) -> list[Member]:
        """Every member of the full grid, seeds innermost."""
        return [Member(lr, wd, s) for lr in self.lrs for wd in self.weight_decays for s in self.seeds]

    def member_config(self, member: Member) -> TrainConfig:
        """The TrainConfig of one member: ``resnets train`` with these settings makes the same run."""
        out = str(Path(self.out) / member.name)
        return dataclasses.replace(
            self.base, lr=member.lr, weight_decay=member.weight_decay, seed=member.seed, out=out
        )

    def settings(self) -> dict[str, Any]:
        """What a resumed sweep must share with the one it continues (its shard may differ)."""
        base = json.loads(self.base.to_json())
        for key in ("lr", "weight_decay", "seed", "out", "device"):
            base.pop(key)
        return {"base": base, "lrs": self.lrs, "weight_decays": self.weight_decays, "seeds": self.seeds,
                "prune": self.prune, "eta": self.eta}  # fmt: skip


@dataclass
class SweepResult:
    """Every member's row and the setting the sweep chose."""

    rows: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    complete: bool  # every member is done, diverged or pruned (else other shards are still going)
    extra: dict[str, Any] = field(default_factory=dict)


def run_sweep(cfg: SweepConfig, resume: bool = False, progress: bool = True, log: Log = say) -> SweepResult:
    """Train this shard's members (or load them), then write sweep.json when every member is in."""
    cfg.validate()
    out = Path(cfg.out)
    index, count = cfg.shard
    holder = out if count == 1 else out / f".shard-{index}-of-{count}"
    # Under torchrun every process runs the sweep and each member is a DDP run; rank 0 alone writes.
    with exclusive(holder, "sweep") if _main_process() else contextlib.nullcontext():
        if _main_process():
            _check_settings(out, cfg, resume)
        if cfg.prune == "halving":
            _halving(cfg, progress, log)
        else:
            mine = cfg.members()[index::count]
            for i, member in enumerate(mine, 1):
                status = _status(cfg, member)
                log(f"[{i}/{len(mine)}] {member.name}: {status or 'training'}")
                if status is None:
                    _train_member(cfg, member, until=None, progress=progress)
    if not _main_process():
        return SweepResult([], None, complete=False)
    return collect(cfg.out)


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


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
    saved = _read_json(path)
    for key, value in settings.items():
        if saved.get(key) != value:
            what = f"--{key}" if key != "base" else _first_difference(saved.get("base") or {}, value)
            raise ResnetsError(
                f"{what} differs from the sweep in {out}; a resumed sweep keeps its settings: "
                "use another --out"
            )


def _first_difference(saved: dict[str, Any], now: dict[str, Any]) -> str:
    key = next((k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)), "a setting")
    return f"--{key.replace('_', '-')} ({now.get(key)!r}, was {saved.get(key)!r})"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResnetsError(
            f"{path} is damaged ({type(e).__name__}); remove it or use another --out"
        ) from None
    if not isinstance(data, dict):
        raise ResnetsError(f"{path} is damaged (not a JSON object); remove it or use another --out")
    return data


def _status(cfg: SweepConfig, member: Member) -> str | None:
    path = Path(cfg.member_config(member).out) / MEMBER_FILE
    return f"{_read_json(path)['status']}, loading" if path.exists() else None


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
    if _main_process():
        atomic_write_text(folder / MEMBER_FILE, json.dumps(row, indent=1) + "\n")
    return row


def _halving(cfg: SweepConfig, progress: bool, log: Log) -> None:
    """Successive halving of the (lr, decay) grid at the first seed; the survivor then gets every seed."""
    first = cfg.seeds[0]
    candidates = [Member(lr, wd, first) for lr in cfg.lrs for wd in cfg.weight_decays]
    total, per_epoch = _run_length(cfg)
    schedule = rungs(len(candidates), total, cfg.eta, per_epoch)
    alive = candidates
    for rung, after in zip(schedule, [*schedule[1:], None], strict=True):
        scores = {m: _rung_score(cfg, m, rung, progress, log) for m in alive}
        kept = promote(scores, after.keep if after else 1, candidates)
        for m in alive:
            if m not in kept:
                _prune(cfg, m, rung, scores[m])
        alive = kept
    winner = alive[0]
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
    scores = _read_json(path) if path.exists() else {}
    if str(rung.step) in scores:
        value = scores[str(rung.step)]
        return DIVERGED if value is None else (float(value[0]), float(value[1]))
    if (folder / MEMBER_FILE).exists() and _read_json(folder / MEMBER_FILE)["status"] == "diverged":
        return DIVERGED
    log(f"rung {rung.index + 1}: {member.name} to step {rung.step}")
    result = _train_member(cfg, member, until=rung.step, progress=progress)
    score = DIVERGED if result is None else _validate(cfg, result)
    scores[str(rung.step)] = None if math.isnan(score[0]) else list(score)
    atomic_write_text(path, json.dumps(scores) + "\n")
    return score


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
    precision = (read_resolved(result.run_dir) or {}).get("precision", "fp32")
    images = train_split.subset(PRECISE_BN_IMAGES, seed=0)
    loader = TensorLoader(images, base.batch_size, data.mean, data.std, device)
    model = with_precise_bn(result.model, (x for x, _ in loader), precision)
    loss, error = evaluate(
        model, TensorLoader(val_split, base.batch_size, data.mean, data.std, device), precision
    )
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


def collect(out: str | Path) -> SweepResult:
    """Every member's row from its folder; sweep.json written once every member is in."""
    out = Path(out)
    if not (out / SETTINGS_FILE).exists():
        raise ResnetsError(f"{out} holds no sweep ({SETTINGS_FILE} missing)")
    settings = _read_json(out / SETTINGS_FILE)
    cfg = _from_settings(settings, out)
    rows, missing = [], []
    for member in cfg.members():
        path = out / member.name / MEMBER_FILE
        if path.exists():
            rows.append(_read_json(path))
        elif cfg.prune == "none":
            missing.append(member.name)
    complete = not missing and (cfg.prune == "none" or _halving_complete(cfg, rows))
    chosen = choose(rows) if complete else None
    result = SweepResult(rows, chosen, complete, {"mechanism": MECHANISM, "settings": settings})
    if complete:
        record = {"settings": settings, "mechanism": MECHANISM, "chosen": chosen, "members": rows,
                  "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        atomic_write_text(out / SWEEP_FILE, json.dumps(record, indent=1) + "\n")
    return result


def _halving_complete(cfg: SweepConfig, rows: list[dict[str, Any]]) -> bool:
    """Every grid candidate has its row (done, pruned or diverged), and the survivor has every seed's."""
    return len(rows) == len(cfg.lrs) * len(cfg.weight_decays) + len(cfg.seeds) - 1


def _from_settings(settings: dict[str, Any], out: Path) -> SweepConfig:
    base = TrainConfig.from_dict({**settings["base"], "out": str(out)}, source=str(out / SETTINGS_FILE))
    return SweepConfig(
        base, list(settings["lrs"]), list(settings["weight_decays"]), list(settings["seeds"]), str(out),
        settings["prune"], settings["eta"],
    )  # fmt: skip


def choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The (lr, weight decay) with the lowest mean validation error over its finished seeds."""
    groups: dict[tuple[float, float], list[float]] = {}
    for r in rows:
        if r["status"] == "done" and r.get("val_error") is not None:
            groups.setdefault((r["lr"], r["weight_decay"]), []).append(r["val_error"])
    if not groups:
        return None
    (lr, wd), vals = min(groups.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    return {"lr": lr, "weight_decay": wd, "val_error_mean": sum(vals) / len(vals), "seeds": len(vals),
            "by": "lowest mean validation error over seeds (held-out training images)"}  # fmt: skip
