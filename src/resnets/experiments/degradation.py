"""The degradation study: plain and residual nets at several depths, one recipe, one seed.

He et al. 2015 (Fig. 6): the deeper plain net ends with the higher training error, while
the deeper residual net does not. This trains every model, measures gradient flow and
layer responses, and hands the results to the report. A killed study resumes: finished
models are not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import Dataset, load_dataset
from ..errors import ResnetsError
from ..io import atomic_write_text, exclusive
from ..models import get_spec, summarize
from ..training import TrainConfig
from ..training.device import resolve_device
from .measure import curves, finished, finite_or_none, train_and_measure

FAMILIES = {"cifar": ("resnet{}", "plain{}"), "preact": ("preact_resnet{}", "preact_plain{}")}
STUDY_FILE = "study.json"
# Settings every model of a study shares; a re-run may add depths or move devices, not change these.
RECIPE_KEYS = (
    "dataset", "family", "epochs", "iterations", "batch_size", "lr", "schedule", "weight_decay",
    "precision", "channels_last", "train_subset", "seed",
)  # fmt: skip


@dataclass
class StudyConfig:
    """Settings of a degradation study; every model is trained with the same recipe."""

    dataset: str = "digits"
    data_dir: str | None = None
    depths: list[int] = field(default_factory=lambda: [20, 32, 44, 56])
    family: str = "cifar"
    out: str = "runs/degradation"
    epochs: int = 9
    iterations: int | None = None  # train for this many steps instead of epochs
    models: list[str] | None = None  # explicit models instead of family x depths
    batch_size: int = 128
    # 0.1 left resnet56 stuck at 16-65% error for some seeds in 99 steps (digits, fp32 and bf16
    # alike); 0.05 trained every residual net of seeds 0-2 below 2.3% and kept plain nets degrading.
    lr: float = 0.05
    schedule: str = "onecycle"
    weight_decay: float = 5e-4
    precision: str = "auto"
    channels_last: bool = True
    train_subset: int | None = None
    seed: int = 0
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
        self.recipe("resnet20").validate()
        return self

    def model_names(self) -> list[tuple[str, int, bool]]:
        """(model, depth, residual) for every model, plain nets first, shallow to deep."""
        if self.models is not None:
            specs = [get_spec(n) for n in self.models]
            return sorted(((s.name, s.depth, s.residual) for s in specs), key=lambda m: (m[2], m[1]))
        res, plain = FAMILIES[self.family]
        return [(plain.format(d), d, False) for d in sorted(self.depths)] + [
            (res.format(d), d, True) for d in sorted(self.depths)
        ]

    def recipe(self, model: str) -> TrainConfig:
        """The identical training config for one model of the study."""
        return TrainConfig(
            model=model, dataset=self.dataset, data_dir=self.data_dir, out=str(Path(self.out) / model),
            epochs=None if self.iterations else self.epochs, iterations=self.iterations,
            batch_size=self.batch_size, lr=self.lr, schedule=self.schedule,
            weight_decay=self.weight_decay, precision=self.precision, channels_last=self.channels_last,
            train_subset=self.train_subset, seed=self.seed, device=self.device,
        )  # fmt: skip


@dataclass
class ModelResult:
    """Everything the report needs about one trained model."""

    model: str
    depth: int
    residual: bool
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
        row = {k: getattr(self, k) for k in ("model", "depth", "residual", "params")}
        row |= {k: finite_or_none(getattr(self, k)) for k in errors}
        return row | {"diverged": self.diverged}


def check_study(path: Path, cfg: StudyConfig) -> None:
    """A study folder re-run with other recipe settings is refused, naming the setting."""
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = type(e).__name__
        raise ResnetsError(f"{path} is damaged ({why}); remove it or use another --out") from None
    if not isinstance(saved, dict):
        raise ResnetsError(f"{path} is damaged (not a JSON object); remove it or use another --out")
    for key, value in dataclasses.asdict(cfg).items():
        if key in RECIPE_KEYS and key in saved and saved[key] != value:
            raise ResnetsError(
                f"--{key.replace('_', '-')} {value} differs from the study in {path.parent} "
                f"({saved[key]!r}); a resumed study keeps its recipe: use another --out"
            )


def _study_one(
    cfg: StudyConfig, name: str, depth: int, residual: bool, data: Dataset, progress: bool
) -> ModelResult:
    recipe = cfg.recipe(name)
    diag = train_and_measure(recipe, data, resolve_device(cfg.device), progress)
    rows = curves(Path(recipe.out))
    return ModelResult(
        model=name, depth=depth, residual=residual, seconds=rows[-1]["time"] if rows else 0.0,
        curves=rows, **diag,
    )  # fmt: skip


def _log(text: str) -> None:
    print(text, flush=True)


def run_study(cfg: StudyConfig, progress: bool = True, log: Any = _log) -> list[ModelResult]:
    """Train and measure every model of the study; returns the results, plain nets first."""
    cfg.validate()
    out = Path(cfg.out)
    with exclusive(out, "study"):  # the same study started twice: the second stops, naming the first
        return _run_study(cfg, out, progress, log)


def _run_study(cfg: StudyConfig, out: Path, progress: bool, log: Any) -> list[ModelResult]:
    check_study(out / STUDY_FILE, cfg)
    atomic_write_text(out / STUDY_FILE, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    data = load_dataset(cfg.dataset, cfg.data_dir)
    models = cfg.model_names()
    # Cost of each model ~ its multiply-adds; the study's ETA follows from the cost done so far.
    cost = {name: summarize(name).macs for name, _, _ in models}
    total_cost, done_cost, t0 = sum(cost.values()), 0.0, time.perf_counter()
    results = []
    for i, (name, depth, residual) in enumerate(models, 1):
        eta = ""
        if done_cost:
            left = (time.perf_counter() - t0) / done_cost * (total_cost - done_cost)
            eta = f", study ETA {int(left // 60)}m{int(left % 60):02d}s"
        state = "done, loading" if finished(Path(cfg.recipe(name).out)) else "training"
        log(
            f"[{i}/{len(models)}] {name} ({'residual' if residual else 'plain'}, depth {depth}): {state}{eta}"
        )
        results.append(_study_one(cfg, name, depth, residual, data, progress))
        done_cost += cost[name]
    return results
