"""The degradation study: plain and residual nets at several depths, one recipe, several seeds.

He et al. 2015 (Fig. 6): the deeper plain net ends with the higher training error, while
the deeper residual net does not. This trains every model, measures gradient flow and
layer responses, and hands the results to the report. A killed study resumes: finished
models are not trained again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..models import get_spec, summarize
from ..training import TrainConfig
from ..training.device import resolve_device
from ..training.precision import resolve_precision
from ..training.recipes import apply_recipe
from .lesion import LesionResult, study_lesions
from .measure import finite_or_none
from .recipe import RECIPE, run_settings
from .runner import Job, Log, Measured, StudyKind, run_jobs, say

FAMILIES = {"cifar": ("resnet{}", "plain{}"), "preact": ("preact_resnet{}", "preact_plain{}")}
STUDY_FILE = "study.json"
DEPTH_STUDY = StudyKind("study", STUDY_FILE, eta_label="study ETA", eta_counts_loaded=True)
# One evaluation per block: the lesion study takes the deepest depth of at most this (resnet1202's
# 600 blocks would take longer than its training on the CPU).
LESION_MAX_DEPTH = 200


@dataclass
class StudyConfig:
    """Settings of a degradation study; every model is trained with the same recipe."""

    dataset: str = RECIPE.dataset
    # A named training recipe (training/recipes.py) every run starts from, its settings under the
    # study's own: build such a study with StudyConfig.from_recipe, which puts the recipe's values
    # into the study's fields. Recorded, so a resumed study refuses another recipe.
    recipe: str | None = None
    data_dir: str | None = None
    depths: list[int] = field(default_factory=lambda: [20, 32, 44, 56])
    family: str = "cifar"
    out: str = "runs/degradation"
    epochs: int = RECIPE.epochs
    iterations: int | None = None  # train for this many steps instead of epochs
    models: list[str] | None = None  # explicit models instead of family x depths
    batch_size: int = RECIPE.batch_size
    lr: float = RECIPE.lr
    schedule: str = RECIPE.schedule
    weight_decay: float = RECIPE.weight_decay
    precision: str = RECIPE.precision
    channels_last: bool = RECIPE.channels_last
    train_subset: int | None = None
    seed: int = RECIPE.seed  # the first seed; the runs use seed, seed + 1, ...
    # Two seeds at least: single-seed digits figures moved by tens of points between machines.
    seeds: int = 2
    device: str = "auto"

    def validate(self) -> StudyConfig:
        """Check the study's own settings (the recipe is checked by TrainConfig)."""
        if self.family not in FAMILIES:
            raise ResnetsError(f"unknown family {self.family!r}; choose {', '.join(FAMILIES)}")
        if self.models is not None:
            for name in self.models:
                get_spec(name)
        elif not self.depths:
            raise ResnetsError("give at least one depth")
        elif len(set(self.depths)) != len(self.depths):
            raise ResnetsError(f"depths repeat: {self.depths}")
        else:
            for d in self.depths:
                get_spec(FAMILIES[self.family][0].format(d))  # unknown depth: suggests close names
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ResnetsError(f"seeds must be a positive integer, got {self.seeds!r}")
        self.run_config("resnet20").validate()
        return self

    @classmethod
    def from_recipe(cls, name: str | None, **given: Any) -> StudyConfig:
        """A study whose runs follow the named training recipe, the ``given`` settings over it.

        The recipe is merged as `resnets train --recipe` merges it (a given --epochs replaces its
        iterations); the settings a study has no field for (momentum, bn_group, ...) reach each run
        through ``run_config``.
        """
        if name is None:
            return cls(**given)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in apply_recipe(name, given).items() if k in fields})

    def seed_list(self) -> list[int]:
        """The seeds every model is trained with."""
        return list(range(self.seed, self.seed + self.seeds))

    def model_names(self) -> list[tuple[str, int, bool]]:
        """(model, depth, residual) for every model, plain nets first, shallow to deep."""
        if self.models is not None:
            specs = [get_spec(n) for n in self.models]
            return sorted(((s.name, s.depth, s.residual) for s in specs), key=lambda m: (m[2], m[1]))
        res, plain = FAMILIES[self.family]
        return [(plain.format(d), d, False) for d in sorted(self.depths)] + [
            (res.format(d), d, True) for d in sorted(self.depths)
        ]

    def run_config(self, model: str, seed: int | None = None) -> TrainConfig:
        """The identical training config for one model of the study at one seed (default: the first)."""
        seed = self.seed if seed is None else seed
        settings = {
            "model": model, "out": str(run_folder(Path(self.out), model, seed)),
            "epochs": None if self.iterations else self.epochs, "iterations": self.iterations, "seed": seed,
            **run_settings(self),
        }  # fmt: skip
        # The study's settings go over the recipe's; the recipe adds those the study has no field for.
        return TrainConfig(**(apply_recipe(self.recipe, settings) if self.recipe else settings))


def run_folder(out: Path, model: str, seed: int) -> Path:
    """Where a study keeps one model's run at one seed: OUT/<model>-seed<seed>."""
    return out / f"{model}-seed{seed}"


@dataclass
class ModelResult:
    """Everything the report needs about one trained model."""

    model: str
    depth: int
    residual: bool
    seed: int
    params: int
    train_error: float  # final model on the whole training set, no augmentation
    test_error: float
    train_loss: float
    test_loss: float
    seconds: float
    curves: list[dict[str, Any]]  # the run's metrics.jsonl
    layers: list[str]
    grad_init: list[float]
    grad_final: list[float]
    response_layers: list[str]
    responses: list[float]
    signal_variance: list[float]
    signal_branch_variance: list[float]
    diverged: str | None = None  # why training stopped (loss NaN at step N); errors are NaN then

    def summary(self) -> dict[str, Any]:
        """The summary.json entry (a diverged model's errors as null)."""
        errors = ("train_error", "test_error", "train_loss", "test_loss")
        row = {k: getattr(self, k) for k in ("model", "depth", "residual", "seed", "params")}
        row |= {k: finite_or_none(getattr(self, k)) for k in errors}
        return row | {"diverged": self.diverged}


def _model_result(name: str, depth: int, residual: bool, seed: int, run: Measured) -> ModelResult:
    return ModelResult(
        model=name, depth=depth, residual=residual, seed=seed, seconds=run.seconds, curves=run.curves,
        **run.diagnostics,
    )  # fmt: skip


def _jobs(cfg: StudyConfig) -> list[Job[ModelResult]]:
    """Every model at the first seed, then every model at the next: a stopped study has whole seeds."""
    jobs = []
    for seed in cfg.seed_list():
        for name, depth, residual in cfg.model_names():
            label = f"{name} seed {seed} ({'residual' if residual else 'plain'}, depth {depth})"
            # Cost of each model ~ its multiply-adds; the study's ETA follows from the cost done so far.
            cost = summarize(name).macs
            result = partial(_model_result, name, depth, residual, seed)
            jobs.append(Job(label, cfg.run_config(name, seed), result, cost))
    return jobs


def run_study(cfg: StudyConfig, progress: bool = True, log: Log = say) -> list[ModelResult]:
    """Train and measure every model of the study; returns the results, plain nets first."""
    cfg.validate()
    return run_jobs(cfg, DEPTH_STUDY, partial(_jobs, cfg), progress, log)


def deepest_lesions(cfg: StudyConfig, results: list[ModelResult], log: Log = say) -> list[LesionResult]:
    """The lesion study of the deepest plain and residual nets of a study's first seed (cached)."""
    trained = [
        r for r in results if not r.diverged and r.seed == cfg.seed
    ]  # a diverged net has no weights to lesion
    depth = max((r.depth for r in trained if r.depth <= LESION_MAX_DEPTH), default=None)
    pair = [
        next((r for r in trained if r.residual == res and r.depth == depth), None) for res in (False, True)
    ]
    runs = [run_folder(Path(cfg.out), r.model, r.seed) for r in pair if r is not None]
    if not runs:
        return []
    log(f"lesion study of {', '.join(p.name for p in runs)}: deleting blocks one at a time")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return study_lesions(Path(cfg.out), runs, device=device, precision=precision, draws=10, max_k=10)
