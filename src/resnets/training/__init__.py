"""Training: config, schedules, precision, checkpoints and the loop."""

from .checkpoint import list_checkpoints, load_latest_checkpoint, load_weights, save_weights
from .config import TrainConfig
from .evaluate import evaluate
from .schedules import lr_at
from .trainer import Diverged, Interrupted, RunResult, train

__all__ = [
    "Diverged",
    "Interrupted",
    "RunResult",
    "TrainConfig",
    "evaluate",
    "list_checkpoints",
    "load_latest_checkpoint",
    "load_weights",
    "lr_at",
    "save_weights",
    "train",
]
