"""Checkpoints and weights on disk: atomic, the last K kept, loaded without running code."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..errors import ResnetsError
from ..io import atomic_write_bytes

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps what --resume needs."""
    return run_dir / CHECKPOINT_DIR


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, newest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep``."""
    path = checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    # Serialise in memory first: a failing disk then surfaces as OSError from a plain write.
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getbuffer())
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """One checkpoint, read with weights_only=True (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncation, a foreign pickle, a non-torch file: all refused
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResnetsError(f"checkpoint {path} is corrupt or unsafe ({first[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ResnetsError(f"checkpoint {path} is not a resnets checkpoint")
    return state


def load_latest_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint; a corrupt one is reported and the previous one used."""
    paths = list_checkpoints(run_dir)
    if not paths:
        raise ResnetsError(
            f"no checkpoint in {checkpoint_dir(run_dir)} to resume from; drop --resume to start fresh"
        )
    errors = []
    for path in paths:
        try:
            return load_checkpoint(path, device), path
        except ResnetsError as e:
            errors.append(str(e))
            print(f"resnets: warning: {e}; trying an older checkpoint", file=sys.stderr)
    raise ResnetsError(f"no readable checkpoint in {checkpoint_dir(run_dir)}: {errors[0]}")


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model's state_dict as safetensors, written atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata=metadata))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors state_dict, with a clear error for a missing or damaged file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResnetsError(f"{path} not found; has the run finished? (train with --out DIR)") from None
    except OSError as e:
        raise ResnetsError(f"cannot read {path}: {e.strerror}") from None
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ResnetsError(f"{path} is not a valid safetensors file ({e})") from None


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state_dict strictly; a different architecture is named, not dumped."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    shape = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or shape:
        detail = (
            f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
            else f"shape of {shape[0]}: {tuple(state[shape[0]].shape)} vs {tuple(ours[shape[0]].shape)}"
        )  # fmt: skip
        raise ResnetsError(f"{source} holds another architecture than the model ({detail})")
    model.load_state_dict(state)
