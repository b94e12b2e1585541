"""Open a finished (or interrupted) run directory: its settings and its trained model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResnetsError
from ..models import create_model
from .checkpoint import WEIGHTS_FILE, list_checkpoints, load_checkpoint, load_into, load_weights
from .config import TrainConfig
from .rundir import CONFIG_FILE


@dataclass
class Run:
    """A run directory's config, derived values and model with its trained weights."""

    path: Path
    config: TrainConfig
    resolved: dict[str, Any]
    model: nn.Module
    weights: Path


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> Run:
    """Load a run's model from model.safetensors, or its newest checkpoint if unfinished."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResnetsError(f"run directory {run_dir} does not exist")
    cfg = TrainConfig.load(run_dir / CONFIG_FILE)
    resolved = json.loads((run_dir / CONFIG_FILE).read_text()).get("resolved", {})
    if "num_classes" not in resolved or "image_shape" not in resolved:
        raise ResnetsError(f"{run_dir / CONFIG_FILE} lacks the 'resolved' section a run writes")
    model = create_model(
        cfg.model, num_classes=resolved["num_classes"],
        **{"in_channels": resolved["image_shape"][0], **cfg.model_options},
    )  # fmt: skip
    weights = run_dir / WEIGHTS_FILE
    if weights.exists():
        load_into(model, load_weights(weights), str(weights))
    else:
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            raise ResnetsError(f"{run_dir} has neither {WEIGHTS_FILE} nor a checkpoint; train it first")
        weights = checkpoints[0]
        state = load_checkpoint(weights)
        # A run that averages its weights evaluates and ships the average.
        if "ema" in state:
            ema = state["ema"]
            load_into(
                model, {k[len("module.") :]: v for k, v in ema.items() if k != "n_averaged"}, str(weights)
            )
        else:
            load_into(model, state["model"], str(weights))
    return Run(run_dir, cfg, resolved, model.to(device).eval(), weights)
