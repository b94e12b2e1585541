"""The remedies study: what a deep plain net gets from other fixes, against identity shortcuts.

The story of He et al. 2015: a deep plain net trains worse than a shallower one, and other
initialisations, activations, stronger regularisation and skip-layer connections help little;
identity shortcuts every two layers do. Next to them stand the later ways to train deep nets
without normalisation (Fixup, SkipInit, ReZero) or without shortcuts (TAT, delta-orthogonal
tanh). Every arm is one net trained with one recipe and seed; arms that fail are results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import ResnetsError, unknown_name
from ..models import get_spec
from ..training import TrainConfig
from .measure import finite_or_none
from .recipe import RECIPE, run_settings
from .runner import Job, Log, Measured, StudyKind, run_jobs, say

REMEDIES_FILE = "remedies.json"
REMEDIES_STUDY = StudyKind("remedies study", REMEDIES_FILE, eta_label="ETA", eta_counts_loaded=False)


@dataclass(frozen=True)
class Arm:
    """One remedy: the net it starts from (plain or residual), its model options and weight decay."""

    name: str
    group: str
    residual: bool
    what: str  # one line for the report
    options: dict[str, Any] = field(default_factory=dict)
    decay_for: dict[str, float] = field(default_factory=dict)


# The groups, in the order the story goes.
GROUPS = (
    "baseline", "regularisation", "initialisation", "activation", "skip-layer connections",
    "identity shortcuts", "no normalisation, with shortcuts", "no shortcuts, done right",
)  # fmt: skip

ARMS: tuple[Arm, ...] = (
    Arm("plain", "baseline", False, "the plain net: He init (fan-out), ReLU, BatchNorm"),
    Arm("dropout", "regularisation", False, "dropout 0.1 between the convolutions of every block",
        {"drop_rate": 0.1}),
    Arm("decay-last-stage", "regularisation", False, "10x weight decay on the last stage (layer3)",
        decay_for={"layer3.*": 5e-3}),
    Arm("he-fan-in", "initialisation", False, "He init with fan-in", {"init": "he_fan_in"}),
    Arm("xavier", "initialisation", False, "Xavier/Glorot normal", {"init": "xavier"}),
    Arm("orthogonal", "initialisation", False, "orthogonal, ReLU gain", {"init": "orthogonal"}),
    Arm("lsuv", "initialisation", False, "LSUV: orthogonal, then unit output variance per layer",
        {"init": "lsuv"}),
    Arm("delta-orthogonal", "initialisation", False, "delta-orthogonal (centre tap orthogonal)",
        {"init": "delta_orthogonal"}),
    Arm("dirac", "initialisation", False, "dirac: each conv starts as the identity", {"init": "dirac"}),
    Arm("leaky-relu", "activation", False, "leaky ReLU, slope 0.01", {"act": "leaky_relu"}),
    Arm("elu", "activation", False, "ELU", {"act": "elu"}),
    Arm("selu", "activation", False, "SELU", {"act": "selu"}),
    Arm("gelu", "activation", False, "GELU", {"act": "gelu"}),
    Arm("tanh", "activation", False, "tanh", {"act": "tanh"}),
    Arm("highway", "skip-layer connections", False, "highway gates around every block (gate bias -2)",
        {"unit": "highway"}),
    Arm("long-skip", "skip-layer connections", False, "one identity skip over each whole stage",
        {"long_skip": True}),
    Arm("resnet", "identity shortcuts", True, "the residual net: identity shortcuts every two layers"),
    Arm("fixup", "no normalisation, with shortcuts", True, "Fixup: no BN, rescaled init, scalar biases",
        {"unit": "fixup"}),
    Arm("skipinit", "no normalisation, with shortcuts", True, "SkipInit: no BN, branch scalar started at 0",
        {"unit": "skipinit"}),
    Arm("rezero", "no normalisation, with shortcuts", True, "ReZero: x + a F(x), a = 0, no BN",
        {"unit": "rezero"}),
    Arm("tat", "no shortcuts, done right", False, "TAT: leaky ReLU, C_f(0) = 0.9, delta-orthogonal, no BN",
        {"act": "trelu", "init": "delta_orthogonal", "norm": "none"}),
    Arm("delta-orthogonal-tanh", "no shortcuts, done right", False,
        "tanh at the critical point, delta-orthogonal, no BN",
        {"act": "tanh", "init": "delta_orthogonal", "norm": "none"}),
)  # fmt: skip
ARM_NAMES = tuple(a.name for a in ARMS)


@dataclass
class RemediesConfig:
    """Settings of a remedies study: the arms, depths and seeds; one recipe for every run."""

    dataset: str = RECIPE.dataset
    data_dir: str | None = None
    depths: list[int] = field(default_factory=lambda: [56])
    arms: list[str] = field(default_factory=lambda: list(ARM_NAMES))
    seeds: int = 1
    out: str = "runs/remedies"
    epochs: int = RECIPE.epochs
    batch_size: int = RECIPE.batch_size
    lr: float = RECIPE.lr
    schedule: str = RECIPE.schedule
    weight_decay: float = RECIPE.weight_decay
    precision: str = RECIPE.precision
    channels_last: bool = RECIPE.channels_last
    train_subset: int | None = None
    device: str = "auto"

    def validate(self) -> RemediesConfig:
        """Known arms and depths, at least one seed; the recipe itself is checked by TrainConfig."""
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
        self.recipe(ARMS[0], self.depths[0], 0).validate()
        return self

    def chosen(self) -> list[Arm]:
        """The arms to run, in the story's order."""
        return [a for a in ARMS if a.name in self.arms]

    def recipe(self, arm: Arm, depth: int, seed: int) -> TrainConfig:
        """The run of one arm at one depth and seed: the shared recipe plus the arm's options."""
        model = f"{'resnet' if arm.residual else 'plain'}{depth}"
        return TrainConfig(
            model=model, out=str(Path(self.out) / f"{arm.name}-{depth}-seed{seed}"), epochs=self.epochs,
            seed=seed, decay_for=dict(arm.decay_for), model_options=dict(arm.options), **run_settings(self),
        )  # fmt: skip


@dataclass
class ArmResult:
    """One trained arm: its errors, time, curves and measurements at initialisation."""

    arm: str
    group: str
    depth: int
    seed: int
    residual: bool
    what: str
    train_error: float
    test_error: float
    seconds: float
    diverged: str | None
    curves: list[dict[str, Any]]
    layers: list[str]
    grad_init: list[float]
    signal_variance: list[float]
    signal_branch_variance: list[float]

    def summary(self) -> dict[str, Any]:
        """The summary.json row (errors of a diverged run as null)."""
        return {
            "arm": self.arm, "group": self.group, "depth": self.depth, "seed": self.seed,
            "train_error": finite_or_none(self.train_error), "test_error": finite_or_none(self.test_error),
            "seconds": self.seconds, "diverged": self.diverged,
        }  # fmt: skip


def _arm_result(arm: Arm, depth: int, seed: int, run: Measured) -> ArmResult:
    diag = run.diagnostics
    return ArmResult(
        arm=arm.name, group=arm.group, depth=depth, seed=seed, residual=arm.residual, what=arm.what,
        train_error=diag["train_error"], test_error=diag["test_error"], seconds=run.seconds,
        diverged=diag.get("diverged"), curves=run.curves, layers=diag["layers"], grad_init=diag["grad_init"],
        signal_variance=diag["signal_variance"], signal_branch_variance=diag["signal_branch_variance"],
    )  # fmt: skip


def _jobs(cfg: RemediesConfig) -> list[Job[ArmResult]]:
    return [
        Job(f"{arm.name} (depth {depth}, seed {seed}; {arm.group})", cfg.recipe(arm, depth, seed),
            partial(_arm_result, arm, depth, seed))
        for depth in sorted(cfg.depths) for seed in range(cfg.seeds) for arm in cfg.chosen()
    ]  # fmt: skip


def run_remedies(cfg: RemediesConfig, progress: bool = False, log: Log = say) -> list[ArmResult]:
    """Train and measure every arm at every depth and seed (finished runs are loaded)."""
    cfg.validate()
    return run_jobs(cfg, REMEDIES_STUDY, partial(_jobs, cfg), progress, log)
