"""Every training setting in one typed config, checked before any work starts."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResnetsError

SCHEDULES = ("paper", "cosine", "onecycle", "linear", "constant", "imagenet")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw", "muon")
LOGGERS = ("tensorboard", "mlflow")


@dataclass
class TrainConfig:
    """The settings of one run; written resolved to ``config.json`` in the run directory."""

    model: str = "resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    out: str = "runs/run"  # the command line gives each run its own folder (commands/train.py)
    epochs: int | None = None  # give epochs or iterations; neither means 15 epochs
    iterations: int | None = None
    batch_size: int = 128  # the global batch: split over processes and micro-batches
    accumulate: int = 1  # micro-batches per step (gradient accumulation)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    # Weight decay of the parameters whose names match a pattern ("layer3.*": 5e-3), first match wins.
    decay_for: dict[str, float] = field(default_factory=dict)
    # Learning-rate multipliers by name pattern ("*.bias": 0.1, Fixup's), first match wins; decay unscaled.
    lr_scale_for: dict[str, float] = field(default_factory=dict)
    no_decay_on_norm_and_bias: bool = False
    norm_bias_lr_scale: float = 1.0  # BatchNorm shifts learn this many times faster (airbench: 64)
    # sgd; adamw (decoupled weight decay); muon: torch's Muon on the hidden conv filters, SGD as set
    # here (lr, momentum, nesterov) on the first conv, the classifier, BN and biases (training/optim.py).
    optimizer: str = "sgd"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (torch's defaults)
    # Muon's lr is this times lr: 0.02 at the default lr of 0.1, the lr Muon's README and torch's docs use.
    muon_lr_scale: float = 0.2
    muon_momentum: float = 0.95  # Muon's own momentum (torch's default; airbench94_muon: 0.6)
    muon_ns_steps: int = 5  # Newton-Schulz iterations per update (torch's default; airbench94_muon: 3)
    # Rescale each filter Muon updates to norm sqrt(out channels) before every step, in place of weight
    # decay on those filters (airbench94_muon's way of holding their scale).
    muon_filter_norm: bool = False
    # Learning-rate factors by position, multiplying each other and lr_scale_for's (training/optim.py):
    head_lr_scale: float = 1.0  # the classifier fc's
    layer_decay: float | None = None  # D per stage from the head inward, D ** (stages + 1) at the stem
    freeze: str | None = None  # stem or layerN: it and everything before it stay as loaded, BN in eval
    freeze_backbone: bool = False  # everything but the classifier fc stays as loaded
    schedule: str = "paper"  # lr /10 at 50% and 75% of the steps (the paper's 32k/48k of 64k)
    warmup_steps: int | None = None  # None: the paper's 400 steps at lr/10 for nets of depth >= 110
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto: fp32 or bf16, whichever a short trial on this machine finds faster
    channels_last: bool | None = None  # None: NHWC or NCHW, whichever the trial finds faster
    compile: bool | None = None  # None: compile where its measured saving over the run repays its warm-up
    cuda_graphs: bool | None = None  # None: on one GPU, where a trial measures them faster than compile alone
    lookahead: bool = False  # pull the weights back to a slow average every 5 steps (airbench's schedule)
    ema_decay: float | None = None  # evaluate and save an exponential moving average of the weights
    eval_flip: bool = False  # evaluate on each test image and its mirror image, averaged
    eval_translate: bool = False  # also on copies shifted one pixel up-left and down-right (airbench's TTA)
    final_eval_only: bool = False  # skip the per-epoch test passes: evaluate once, at the end
    alternate_flip: bool = False  # mirror each image in every other epoch instead of at random (airbench)
    crop_padding: int | None = None  # pixels the random crop may shift by; None: the dataset's (CIFAR: 4)
    # More augmentation of the training batches (data/augment.py), drawn per (seed, epoch, batch): RandAugment
    # or TrivialAugment on the images, and mixup or CutMix of each batch with a shuffled copy of itself at
    # lambda ~ Beta(alpha, alpha) (both given: one or the other per batch at a coin flip; 0 or None: off).
    randaugment: bool = False
    trivialaugment: bool = False
    mixup: float | None = None
    cutmix: float | None = None
    recipe: str | None = None  # the named recipe these settings started from (a record only)
    eval_every: int | None = None  # steps between evaluations; None: once per epoch
    # Steps between rows of the training loss and error alone (no evaluation): a curve for runs that
    # evaluate rarely (--final-eval-only). None: rows at the evaluations only.
    log_every: int | None = None
    checkpoint_every: int | None = None  # steps between checkpoints; None: at every evaluation
    keep_checkpoints: int = 2
    grad_every: int | None = None  # record per-layer gradient norms every N steps (gradients.jsonl)
    sync_bn: bool = False  # BatchNorm over the global batch across processes (CUDA)
    bn_group: int | None = (
        None  # BatchNorm statistics over groups of this many images (the paper's 2 GPUs: 64)
    )
    init_from: str | None = None  # torchvision/timm-layout weights to start from
    train_subset: int | None = None  # train on a seeded random subset of this many images
    # Hold this many training images out (the same ones for every seed) and report val_error on
    # them: what a learning rate is chosen by, so the test set is never looked at for it.
    val_split: int | None = None
    workers: int | None = None  # decoding processes of a streamed dataset; None: the cores left over
    resize_from: int | None = None  # progressive resizing: the first epochs' crop, growing to the full size
    log: list[str] = field(default_factory=list)  # loggers beside metrics.jsonl: tensorboard
    seed: int = 0
    device: str = "auto"
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Raise a one-line ResnetsError for a setting that makes no sense; return self."""
        for name in ("model", "dataset", "out", "schedule", "precision", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ResnetsError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("data_dir", "init_from", "recipe"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ResnetsError(f"{name} must be a string, got {getattr(self, name)!r}")
        _positive_int("batch_size", self.batch_size)
        if self.epochs is not None and self.iterations is not None:
            raise ResnetsError("give --epochs or --iterations, not both")
        for name in ("epochs", "iterations", "eval_every", "log_every", "checkpoint_every", "train_subset",
                     "grad_every", "resize_from", "val_split", "bn_group"):  # fmt: skip
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        if self.workers is not None and (not _is_int(self.workers) or self.workers < 0):
            raise ResnetsError(f"workers must be an integer >= 0, got {self.workers!r}")
        if not isinstance(self.log, list) or any(x not in LOGGERS for x in self.log):
            raise ResnetsError(f"log takes {', '.join(LOGGERS)}, got {self.log!r}")
        _positive_int("accumulate", self.accumulate)
        if self.batch_size % self.accumulate:
            raise ResnetsError(
                f"batch-size {self.batch_size} is not divisible by accumulate {self.accumulate}"
            )
        _finite("lr", self.lr, low=0.0, low_open=True)
        _finite("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _finite("weight_decay", self.weight_decay, low=0.0)
        _finite("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        if not isinstance(self.decay_for, dict):
            raise ResnetsError(f"decay_for must map name patterns to weight decays, got {self.decay_for!r}")
        for pattern, decay in self.decay_for.items():
            _finite(f"weight decay for {pattern!r}", decay, low=0.0)
        if not isinstance(self.lr_scale_for, dict):
            raise ResnetsError(
                f"lr_scale_for must map name patterns to learning-rate multipliers, got {self.lr_scale_for!r}"
            )
        for pattern, scale in self.lr_scale_for.items():
            _finite(f"learning-rate scale for {pattern!r}", scale, low=0.0, low_open=True)
        if self.ema_decay is not None:
            _finite("ema_decay", self.ema_decay, low=0.0, high=1.0, low_open=True, high_open=True)
        _finite("norm_bias_lr_scale", self.norm_bias_lr_scale, low=0.0, low_open=True)
        if self.crop_padding is not None and (not _is_int(self.crop_padding) or self.crop_padding < 0):
            raise ResnetsError(f"crop_padding must be an integer >= 0, got {self.crop_padding!r}")
        flags = ("alternate_flip", "lookahead", "eval_flip", "eval_translate", "final_eval_only", "nesterov",
                 "no_decay_on_norm_and_bias", "sync_bn", "freeze_backbone", "randaugment",
                 "trivialaugment", "muon_filter_norm")  # fmt: skip
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ResnetsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("compile", "channels_last", "cuda_graphs"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ResnetsError(f"{name} must be true, false or null (auto), got {getattr(self, name)!r}")
        if self.cuda_graphs and self.compile is False:
            raise ResnetsError("--cuda-graphs replays the compiled step: it cannot go with --no-compile")
        if self.cuda_graphs and self.grad_every:
            raise ResnetsError("--cuda-graphs replays a fixed step: --grad-every's hooks need the eager one")
        self._validate_augmentation()
        if self.warmup_steps is not None and (not _is_int(self.warmup_steps) or self.warmup_steps < 0):
            raise ResnetsError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.schedule not in SCHEDULES:
            raise ResnetsError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ResnetsError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        self._validate_fine_tuning()
        if self.bn_group is not None and self.sync_bn:
            raise ResnetsError("--bn-group and --sync-bn ask for opposite things: choose one")
        if self.nesterov and self.momentum == 0:
            raise ResnetsError("nesterov needs momentum > 0")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise ResnetsError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.model_options, dict) or not isinstance(self.dataset_options, dict):
            raise ResnetsError("model_options and dataset_options must be JSON objects")
        return self

    def _validate_augmentation(self) -> None:
        """One of RandAugment and TrivialAugment; mixup and CutMix alphas (the flags are booleans by now)."""
        if self.randaugment and self.trivialaugment:
            raise ResnetsError("--randaugment and --trivialaugment are two policies for one step: choose one")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name), low=0.0)  # Beta(alpha, alpha); 0: off

    def _validate_fine_tuning(self) -> None:
        """The optimiser and the fine-tuning settings (flags are checked as booleans before this)."""
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ResnetsError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not isinstance(self.betas, list | tuple) or len(self.betas) != 2:
            raise ResnetsError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        for beta in self.betas:
            _finite("betas", beta, low=0.0, high=1.0, high_open=True)
        _finite("muon_lr_scale", self.muon_lr_scale, low=0.0, low_open=True)
        _finite("muon_momentum", self.muon_momentum, low=0.0, high=1.0, high_open=True)
        _positive_int("muon_ns_steps", self.muon_ns_steps)
        if self.optimizer == "muon" and self.precision == "fp16":
            # fp16's loss scaler unscales the gradients of the parameters the optimiser lists; Muon's
            # matrices get their filters' gradients only inside its step, after that (optim.py).
            raise ResnetsError("--opt muon does not take --precision fp16 (Muon runs in bf16): use bf16")
        _finite("head_lr_scale", self.head_lr_scale, low=0.0, low_open=True)
        if self.layer_decay is not None:
            _finite("layer_decay", self.layer_decay, low=0.0, high=1.0, low_open=True)
        if self.freeze is not None and (
            not isinstance(self.freeze, str) or not re.fullmatch(r"stem|layer[1-9][0-9]*", self.freeze)
        ):
            raise ResnetsError(f"freeze takes stem or layerN (the last part frozen), got {self.freeze!r}")
        if self.freeze is not None and self.freeze_backbone:
            raise ResnetsError("--freeze and --freeze-backbone both say what to freeze: give one")

    def to_json(self) -> str:
        """The config as pretty JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from a dict (e.g. a run's config.json); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ResnetsError(f"{source}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k != "resolved"}  # derived values, not settings
        extra = sorted(set(data) - known)
        if extra:
            raise ResnetsError(f"{source}: unknown setting(s) {', '.join(extra)}")
        return cls(**data).validate()

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a config.json."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ResnetsError(f"{path} not found; is this a run directory?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResnetsError(f"{path} is not valid JSON ({e})") from None
        return cls.from_dict(data, source=str(path))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ResnetsError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")


def _finite(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low  # type: ignore[operator]
    if ok and high is not None:
        ok = value < high if high_open else value <= high  # type: ignore[operator]
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        rng = f"in {lo}, {hi}" if high is not None else (f"> {low:g}" if low_open else f">= {low:g}")
        raise ResnetsError(f"{name.replace('_', '-')} must be a number {rng}, got {value!r}")
