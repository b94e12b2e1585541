"""Resuming a run: which settings may change, whether a checkpoint is this run's, and a finished run.

A resumed run keeps its settings except how long it goes, how often it reports and where it
runs; anything else would make the resumed run a different one from the one its checkpoints
came from. A run resumed after its last step trains nothing: its result is its checkpoint's
weights, read without loading the data or measuring the fast path again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResnetsError
from . import distributed
from .build import place_model, seeded_model
from .checkpoint import load_into
from .config import TrainConfig
from .ema import make_ema
from .rundir import CONFIG_FILE
from .setup import total_steps

# Settings a resumed run may change: how long it goes and how often it reports.
RESUME_MAY_CHANGE = {
    "epochs", "iterations", "eval_every", "checkpoint_every", "device", "keep_checkpoints", "compile",
    "cuda_graphs", "workers", "log",
}  # fmt: skip

# Settings a checkpoint must share with the run resuming it (its weights would not fit otherwise).
SAME_RUN = ("model", "dataset", "batch_size", "model_options", "seed")


def resume_config(given: dict[str, Any]) -> TrainConfig | None:
    """The settings of the run in ``given["out"]``, with the changes ``given`` may make; None if no run."""
    out = Path(given.get("out", TrainConfig.out))
    if not (out / CONFIG_FILE).exists():
        return None
    saved = TrainConfig.load(out / CONFIG_FILE)
    for key, value in given.items():
        if key in RESUME_MAY_CHANGE:
            setattr(saved, key, value)
            if key in ("epochs", "iterations"):  # a new length replaces the old one
                setattr(saved, "iterations" if key == "epochs" else "epochs", None)
            if key == "compile" and value is False and "cuda_graphs" not in given:
                saved.cuda_graphs = None  # no compile, so no graphs of it either
            if key == "cuda_graphs" and value and "compile" not in given and saved.compile is False:
                saved.compile = None  # graphs asked for: they compile
        elif key != "out" and value != getattr(saved, key):
            raise ResnetsError(
                f"--{key.replace('_', '-')} {value} differs from the run's {getattr(saved, key)!r}; "
                "a resumed run keeps its settings (only length, evaluation and device may change)"
            )
    saved.out = str(out)
    return saved.validate()


def check_resumable(state: dict[str, Any], path: Path, cfg: TrainConfig) -> None:
    """Refuse a checkpoint of another run, or one that lacks what ``cfg`` would restore."""
    saved = state.get("config", {})
    for key in SAME_RUN:
        if key in saved and saved[key] != getattr(cfg, key):
            raise ResnetsError(
                f"checkpoint {path} was made with {key}={saved[key]!r}, not {getattr(cfg, key)!r}; "
                "resume with the run's own settings"
            )
    if cfg.ema_decay and "ema" not in state:
        raise ResnetsError(f"checkpoint {path} holds no weight average; resume without --ema")
    if cfg.lookahead and "lookahead" not in state:
        raise ResnetsError(f"checkpoint {path} holds no lookahead weights; resume without --lookahead")


def finished_model(
    cfg: TrainConfig, ctx: distributed.Context, saved: dict[str, Any] | None, state: dict[str, Any],
    path: Path,
) -> nn.Module | None:  # fmt: skip
    """The final weights (the average where there is one) if ``state`` is the run's last step, else None.

    None also where config.json's record cannot tell (a damaged file): the full set-up decides then.
    """
    steps_per_epoch, classes = _positive(saved, "steps_per_epoch"), _positive(saved, "num_classes")
    shape = saved.get("image_shape") if saved else None
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_positive(n) for n in shape)):
        return None
    if classes is None or (steps_per_epoch is None and not cfg.iterations):
        return None
    if int(state["step"]) < total_steps(cfg, steps_per_epoch or 1):
        return None
    model = seeded_model(cfg, classes, tuple(shape))
    model = place_model(model, cfg, ctx, resume=True, channels_last=saved.get("channels_last") is True)
    load_into(model, state["model"], str(path))
    if cfg.ema_decay:
        ema = make_ema(model, cfg.ema_decay)
        load_into(ema, state["ema"], str(path))
        model = ema.module
    torch.set_rng_state(state["rng_cpu"].cpu())  # as a restored run leaves it
    return model


def _is_positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive(saved: dict[str, Any] | None, key: str) -> int | None:
    value = saved.get(key) if saved else None
    return value if _is_positive(value) else None
