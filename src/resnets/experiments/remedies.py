"""The remedies study: what a deep plain net gets from other fixes, against identity shortcuts.

The story of He et al. 2015: a deep plain net trains worse than a shallower one, and other
initialisations, activations, stronger regularisation and skip-layer connections help little;
identity shortcuts every two layers do. Next to them stand the later ways to train deep nets
without normalisation (Fixup, SkipInit, ReZero) or without shortcuts (TAT, delta-orthogonal tanh).

Each arm (remedy_arms.py) runs at every depth (the shallow one is its yardstick) as a
``resnets sweep``: its learning rate searched on a grid at the first seed and chosen on training
images held out (never the test set), then trained at the chosen rate with the other seeds.
Every arm of a study trains in one precision and layout, decided once on the plain net and
kept on resume. Arms that fail are results.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, TensorLoader, load_dataset
from ..errors import ResnetsError, unknown_name
from ..io import atomic_write_text, exclusive
from ..models import get_spec
from ..training import TrainConfig
from ..training.autotune import step_seconds
from ..training.build import build_model
from ..training.device import resolve_device
from ..training.precision import resolve_precision
from .measure import curves, finite_or_none, probe_batches
from .recipe import RECIPE
from .remedy_arms import ARM_NAMES, ARMS, DEFAULT_ARMS, GROUPS, Arm
from .runner import Log, say
from .sweep import run_sweep
from .sweep_collect import SweepResult
from .sweep_config import PRUNERS, RUNGS_FILE, SweepConfig, read_json
from .sweep_config import SETTINGS_FILE as SWEEP_SETTINGS

__all__ = ["ARMS", "ARM_NAMES", "GROUPS", "ArmResult", "RemediesConfig", "Search", "Study", "run_remedies"]

SETTINGS_FILE = "remedies-settings.json"
FAST_PATH_FILE = "fast-path.json"  # the precision and layout of every arm, decided once
ERRORS_FILE = "errors.json"  # a final member's errors on its training images and the test set
AT_INIT_FILE = "at-init.json"  # an arm's gradients and signal at initialisation
SEARCHES = ("halving", "first-seed")
# A re-run may add arms or depths, or move devices; the rest is the study's recipe.
FREE_KEYS = ("arms", "depths", "out", "device", "data_dir")
QUICK_LR = RECIPE.lr
WIDEN_STEPS = 2  # grid steps a search may add past each end of the study's grid


@dataclass
class RemediesConfig:
    """Settings of a remedies study: the arms, depths, learning-rate grid and seeds; one recipe for all."""

    dataset: str = RECIPE.dataset
    data_dir: str | None = None
    depths: list[int] = field(default_factory=lambda: [20, 56])
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    lrs: list[float] = field(default_factory=lambda: [0.0125, 0.05, 0.2])  # a log grid, factor 4
    # first-seed: the whole grid at seed 0. Halving is cheaper on a wide grid, but its early rungs fall
    # in the one-cycle warm-up, where a high rate that later diverges can look best.
    search: str = "first-seed"
    seeds: int = 2
    val_split: int | None = (
        None  # None: 5,000 on CIFAR (the paper's 45k/5k), a fifth of the training set else
    )
    out: str = "runs/remedies"
    epochs: int = RECIPE.epochs
    batch_size: int = RECIPE.batch_size
    schedule: str = RECIPE.schedule
    weight_decay: float = RECIPE.weight_decay
    precision: str = RECIPE.precision
    channels_last: bool = RECIPE.channels_last
    train_subset: int | None = None
    device: str = "auto"
    quick: bool = False  # the one-lr, one-seed, deep-only screen of every arm

    def __post_init__(self) -> None:
        if self.quick:  # the old screen: every arm, one learning rate, one seed, the deep net only
            self.lrs, self.seeds, self.depths = [QUICK_LR], 1, [max(self.depths)]
            self.search = "first-seed"

    def validate(self) -> RemediesConfig:
        """Known arms, depths and search, a sensible grid and seeds; TrainConfig checks the recipe."""
        if not self.arms:
            raise ResnetsError("give at least one arm")
        for name in self.arms:
            if name not in ARM_NAMES:
                raise unknown_name("arm", name, ARM_NAMES, "list them with `resnets remedies --list`")
        if not self.depths or len(set(self.depths)) != len(self.depths):
            raise ResnetsError(f"give distinct depths, got {self.depths}")
        for d in self.depths:
            get_spec(f"plain{d}")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or not 1 <= self.seeds <= 100:
            raise ResnetsError(f"seeds must be a whole number from 1 to 100, got {self.seeds!r}")
        if self.search not in SEARCHES:
            raise ResnetsError(f"unknown --search {self.search!r}; choose {', '.join(SEARCHES)}")
        assert set(SEARCHES) <= set(PRUNERS)
        if not self.lrs or len(set(self.lrs)) != len(self.lrs):
            raise ResnetsError(f"give distinct learning rates, got {self.lrs}")
        if self.val_split is not None and (not isinstance(self.val_split, int) or self.val_split < 1):
            raise ResnetsError(f"--val-split must be a positive number of images, got {self.val_split!r}")
        for lr in self.lrs:
            dataclasses.replace(self.base(ARMS[0], self.depths[0], {}), lr=lr).validate()
        return self

    def chosen(self) -> list[Arm]:
        """The arms to run, in the story's order."""
        return [a for a in ARMS if a.name in self.arms]

    def held_out(self, data: Dataset) -> int:
        """Training images held out to choose each arm's learning rate on."""
        if self.val_split is not None:
            return self.val_split
        return 5000 if self.dataset.startswith("cifar") else max(1, len(data.train) // 5)

    def base(self, arm: Arm, depth: int, settled: dict[str, Any]) -> TrainConfig:
        """Every run of one arm at one depth, but for its learning rate, seed and folder."""
        model = f"{'resnet' if arm.residual else 'plain'}{depth}"
        # The settings the study decides once (precision, held-out images, logging) go over the recipe's.
        return TrainConfig(**{
            "model": model, "dataset": self.dataset, "data_dir": self.data_dir, "epochs": self.epochs,
            "batch_size": self.batch_size, "lr": self.lrs[0], "schedule": self.schedule,
            "weight_decay": self.weight_decay, "precision": self.precision,
            "channels_last": self.channels_last, "compile": False, "train_subset": self.train_subset,
            "device": self.device,
            "model_options": dict(arm.options), **arm.training, **settled,
        })  # fmt: skip

    def sweep(
        self, arm: Arm, depth: int, settled: dict[str, Any], lrs: list[float], seeds: list[int]
    ) -> SweepConfig:
        """The arm's sweep at one depth: its lr grid at the first seed, then the chosen lr at every seed."""
        base = self.base(arm, depth, settled)
        return SweepConfig(base, lrs, [self.weight_decay], seeds, self.arm_folder(arm, depth), self.search)

    def grid(self, arm: Arm) -> list[float]:
        """The arm's own learning-rate grid: the study's, shifted by the arm's factor."""
        return [float(f"{lr * arm.grid_shift:.4g}") for lr in self.lrs]

    def arm_folder(self, arm: Arm, depth: int) -> str:
        """The sweep folder of one arm at one depth."""
        return str(Path(self.out) / f"{arm.name}-{depth}")

    def recipe(self) -> dict[str, Any]:
        """What a resumed study must share with the one it continues."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in FREE_KEYS}


@dataclass
class ArmResult:
    """One final run of an arm: its chosen lr, its errors, time, curves and measurements at initialisation."""

    arm: str
    group: str
    depth: int
    seed: int
    residual: bool
    what: str
    lr: float | None  # the chosen learning rate; None when every rate of the grid diverged
    train_error: float  # the final model on its training images (the held-out ones excluded), no augmentation
    test_error: float
    val_error: float
    seconds: float
    diverged: str | None
    curves: list[dict[str, Any]]
    layers: list[str] = field(default_factory=list)
    grad_init: list[float] = field(default_factory=list)
    signal_variance: list[float] = field(default_factory=list)
    signal_branch_variance: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The summary.json row (errors of a diverged run as null)."""
        return {
            "arm": self.arm, "group": self.group, "depth": self.depth, "seed": self.seed, "lr": self.lr,
            "train_error": finite_or_none(self.train_error), "test_error": finite_or_none(self.test_error),
            "val_error": finite_or_none(self.val_error), "seconds": self.seconds, "diverged": self.diverged,
        }  # fmt: skip


@dataclass
class Search:
    """One arm's learning-rate search at one depth: every grid point's validation error and the choice."""

    arm: str
    depth: int
    rows: list[dict[str, Any]]  # the sweep's rows at the first seed, each with the "score" it was chosen on
    lr: float | None
    at_edge: bool  # the chosen rate is the grid's smallest or largest: the best may lie beyond it


@dataclass
class Study:
    """Everything a remedies report needs."""

    results: list[ArmResult]
    searches: list[Search]
    fast_path: dict[str, Any]
    chance: float  # the error of guessing: 1 - 1/classes
    val_split: int
    cfg: RemediesConfig


def run_remedies(cfg: RemediesConfig, progress: bool = False, log: Log = say) -> Study:
    """Train (or load) every arm's sweep at every depth, measure the final runs, return the study."""
    cfg.validate()
    out = Path(cfg.out)
    with exclusive(out, "remedies study"):
        _check_settings(out / SETTINGS_FILE, cfg)
        data = load_dataset(cfg.dataset, cfg.data_dir)
        device = resolve_device(cfg.device)
        val_split = cfg.held_out(data)
        fast = _fast_path(cfg, data, device, val_split, log)
        images = min(len(data.train) - val_split, cfg.train_subset or len(data.train))
        # Evaluated once, at the end: the curves come from the training rows of each epoch, so the
        # test and held-out images are not passed over at every epoch (on CIFAR-10 that would double
        # the cost of a run).
        settled = {"precision": fast["precision"], "channels_last": fast["channels_last"],
                   "val_split": val_split, "final_eval_only": True,
                   "log_every": max(1, images // cfg.batch_size)}  # fmt: skip
        plan = [(arm, depth) for depth in sorted(cfg.depths) for arm in cfg.chosen()]
        results, searches = [], []
        start, done, total = time.perf_counter(), 0.0, sum(depth for _, depth in plan)
        for i, (arm, depth) in enumerate(plan, 1):
            eta = ""
            if done:  # the time so far per layer trained, times the layers still to go
                left = (time.perf_counter() - start) / done * (total - done)
                eta = f", ETA {int(left // 60)}m{int(left % 60):02d}s"
            log(f"[{i}/{len(plan)}] {arm.name} (depth {depth}; {arm.group}){eta}")
            sweep, swept = _sweep_arm(cfg, arm, depth, settled, progress, log)
            search, finals = _search(arm, depth, sweep, swept.rows, swept.chosen)
            at_init = _at_init(sweep, data, device) if depth == max(cfg.depths) else {}
            searches.append(search)
            for member in finals:
                results.append(_final(arm, depth, search.lr, sweep, member, data, device, at_init))
            done += depth
    return Study(results, searches, fast, 1.0 - 1.0 / data.num_classes, val_split, cfg)


def _sweep_arm(
    cfg: RemediesConfig, arm: Arm, depth: int, settled: dict[str, Any], progress: bool, log: Log
) -> tuple[SweepConfig, SweepResult]:
    """Search the arm's grid at seed 0, wider where the best rate is at an edge; then add the seeds."""
    folder = Path(cfg.arm_folder(arm, depth))
    saved = read_json(folder / SWEEP_SETTINGS) if (folder / SWEEP_SETTINGS).exists() else {}
    lrs, seeds = list(saved.get("lrs", cfg.grid(arm))), list(saved.get("seeds", [0]))

    def indented(line: str) -> None:
        log("    " + line)

    while True:
        swept = run_sweep(cfg.sweep(arm, depth, settled, lrs, seeds), True, progress, indented)
        wider = widen(lrs, swept.chosen["lr"] if swept.chosen else None, cfg, arm)
        if wider is None:
            break
        indented(f"the best rate is at the edge of the grid: adding lr {wider[-1]:g}")
        lrs = wider
    sweep = cfg.sweep(arm, depth, settled, lrs, list(range(cfg.seeds)))
    return sweep, run_sweep(sweep, True, progress, indented)


def widen(lrs: list[float], best: float | None, cfg: RemediesConfig, arm: Arm) -> list[float] | None:
    """The grid one step wider past the end the best rate sits at (below, where every rate diverged), or None.

    A step is the study grid's own ratio; at most WIDEN_STEPS past each end of the arm's grid.
    """
    if cfg.search != "first-seed" or len(cfg.lrs) < 2:
        return None  # halving's rungs are fixed by its grid; one rate is a screen
    grid = cfg.grid(arm)
    ratio = (max(grid) / min(grid)) ** (1 / (len(grid) - 1))
    below = sum(lr < min(grid) for lr in lrs)
    above = sum(lr > max(grid) for lr in lrs)
    if (best is None or best == min(lrs)) and below < WIDEN_STEPS:
        return [*lrs, float(f"{min(lrs) / ratio:.4g}")]
    if best is not None and best == max(lrs) and above < WIDEN_STEPS:
        return [*lrs, float(f"{max(lrs) * ratio:.4g}")]
    return None


def _check_settings(path: Path, cfg: RemediesConfig) -> None:
    """Save the study's recipe, or refuse a re-run that changes it, naming the setting."""
    now = cfg.recipe()
    if path.exists():
        saved = read_json(path)
        for key, value in now.items():
            if key in saved and saved[key] != value:
                raise ResnetsError(
                    f"--{key.replace('_', '-')} {value} differs from the study in {path.parent} "
                    f"({saved[key]!r}); a resumed study keeps its recipe: use another --out"
                )
    atomic_write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def _fast_path(cfg: RemediesConfig, data: Dataset, device: torch.device, val_split: int, log: Log) -> dict:
    """One precision for every arm: timed once on the deepest plain net at the study's batch, kept on resume.

    A full-batch trial, not the training autotune's small cached one: on small images the first steps'
    fixed costs mislead a small trial (bf16 won one at batch 8 and trained plain56 slower than fp32).
    """
    path = Path(cfg.out) / FAST_PATH_FILE
    if path.exists():
        return read_json(path)
    candidates = ["fp32", "bf16"] if resolve_precision("auto", device) == "bf16" else ["fp32"]
    if cfg.precision != "auto":
        decision = {"precision": cfg.precision, "why": "--precision"}
    elif len(candidates) == 1:
        decision = {"precision": "fp32", "why": "bf16 is not native here"}
    else:
        ref = cfg.base(ARMS[0], max(cfg.depths), {"val_split": val_split})
        model = build_model(ref, data).to(device)
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = torch.randn(cfg.batch_size, *data.image_shape).to(device).contiguous(memory_format=fmt)
        y = torch.randint(0, data.num_classes, (cfg.batch_size,)).to(device)
        seconds = {p: step_seconds(copy.deepcopy(model), x, y, p, device, steps=3)[1] for p in candidates}
        best = min(seconds, key=seconds.__getitem__)
        why = f"the faster step of {ref.model} at batch {cfg.batch_size} on this machine"
        decision = {"precision": best, "why": why,
                    "seconds_per_step": {p: round(v, 4) for p, v in seconds.items()}}  # fmt: skip
    decision["channels_last"] = cfg.channels_last
    atomic_write_text(path, json.dumps(decision, indent=1) + "\n")
    log(f"every arm trains in {decision['precision']}, {'NHWC' if cfg.channels_last else 'NCHW'} "
        f"({decision['why']})")  # fmt: skip
    return decision


def _search(
    arm: Arm, depth: int, sweep: SweepConfig, rows: list[dict[str, Any]], chosen: dict[str, Any] | None
) -> tuple[Search, list[dict[str, Any]]]:
    """The search at the first seed, and the rows of the final runs (the chosen lr at every seed)."""
    first = sweep.seeds[0]
    searched = sorted(
        ({**r, "score": _score(sweep, r)} for r in rows if r["seed"] == first), key=lambda r: r["lr"]
    )
    if chosen is None and len(sweep.lrs) == 1 and any(r["status"] == "done" for r in searched):
        chosen = {"lr": sweep.lrs[0]}  # one rate and no held-out images to score it on: nothing to choose
    lr = chosen["lr"] if chosen else None
    at_edge = lr is not None and len(sweep.lrs) > 1 and lr in (min(sweep.lrs), max(sweep.lrs))
    if lr is None:  # every rate diverged: the first seed's runs are the result
        finals = [min(searched, key=lambda r: r["lr"])] if searched else []
    else:
        finals = sorted(
            (r for r in rows if r["lr"] == lr and r["status"] != "pruned"), key=lambda r: r["seed"]
        )
    return Search(arm.name, depth, searched, lr, at_edge), finals


def _score(sweep: SweepConfig, row: dict[str, Any]) -> float | None:
    """The validation error the search chose on (BN statistics recomputed; rungs.json), at its last rung."""
    path = Path(sweep.out) / row["member"] / RUNGS_FILE
    rungs = {int(step): value for step, value in read_json(path).items()} if path.exists() else {}
    last = rungs.get(max(rungs)) if rungs else None
    return float(last[0]) if last else None


def _final(
    arm: Arm, depth: int, lr: float | None, sweep: SweepConfig, row: dict[str, Any], data: Dataset,
    device: torch.device, at_init: dict[str, Any],
) -> ArmResult:  # fmt: skip
    from .sweep_config import Member

    run = sweep.member_config(Member(row["lr"], row["weight_decay"], row["seed"]))
    folder = Path(run.out)
    diverged = row.get("why") if row["status"] == "diverged" else None
    errors = {"train_error": math.nan, "test_error": math.nan} if diverged else _errors(run, data, device)
    rows = curves(folder)
    return ArmResult(
        arm=arm.name, group=arm.group, depth=depth, seed=row["seed"], residual=arm.residual, what=arm.what,
        lr=lr, train_error=errors["train_error"], test_error=errors["test_error"],
        val_error=row.get("val_error") if row.get("val_error") is not None else math.nan,
        seconds=rows[-1]["time"] if rows else 0.0, diverged=diverged, curves=rows,
        layers=at_init.get("layers", []), grad_init=at_init.get("grad_init", []),
        signal_variance=at_init.get("signal_variance", []),
        signal_branch_variance=at_init.get("signal_branch_variance", []),
    )  # fmt: skip


def _errors(run: TrainConfig, data: Dataset, device: torch.device) -> dict[str, float]:
    """The final model's error on the images it trained on (no augmentation) and on the test set; cached."""
    from ..training import evaluate
    from ..training.loaders import training_split
    from ..training.rundir import read_resolved
    from ..training.runs import load_run

    path = Path(run.out) / ERRORS_FILE
    if path.exists():
        return read_json(path)
    model = load_run(run.out, device).model
    precision = (read_resolved(Path(run.out)) or {}).get("precision", "fp32")
    images, _ = training_split(run, data)
    train_loss, train_error = evaluate(
        model, TensorLoader(images, 512, data.mean, data.std, device), precision
    )
    test_loss, test_error = evaluate(
        model, TensorLoader(data.test, 512, data.mean, data.std, device), precision
    )
    errors = {
        "train_error": train_error,
        "test_error": test_error,
        "train_loss": train_loss,
        "test_loss": test_loss,
    }
    atomic_write_text(path, json.dumps(errors) + "\n")
    return errors


def _at_init(sweep: SweepConfig, data: Dataset, device: torch.device) -> dict[str, Any]:
    """Gradient norms and block output variances of the arm's seed-0 net at initialisation; cached."""
    from ..diagnostics import gradient_norms, signal_propagation

    path = Path(sweep.out) / AT_INIT_FILE
    if path.exists():
        return read_json(path)
    x, y, _ = probe_batches(data, device)
    fresh = build_model(dataclasses.replace(sweep.base, seed=sweep.seeds[0]), data).to(device)
    layers, grads = gradient_norms(fresh, x, y)
    sig = signal_propagation(fresh, x)
    record = {"layers": layers, "grad_init": grads, "signal_variance": sig.variance,
              "signal_branch_variance": sig.branch_variance}  # fmt: skip
    atomic_write_text(path, json.dumps(record) + "\n")
    return record
