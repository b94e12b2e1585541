"""Weights from torchvision, timm and published CIFAR checkpoints, read without running code."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import ResnetsError
from .published import to_our_layout

# Containers that training scripts commonly wrap a state_dict in.
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "state_dict_ema")
# Prefixes added by DDP, torch.compile and Lightning.
_PREFIXES = ("module.", "_orig_mod.", "model.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors or a .pth/.pt file read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise ResnetsError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ResnetsError(f"{path} is not a valid safetensors file ({e})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a foreign pickle, a truncated file: refused, never executed
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ResnetsError(f"{path} is not a plain weights file, or is damaged ({first})") from None
    for key in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ResnetsError(f"{path} does not hold a state_dict of tensors")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_pretrained(
    model: nn.Module, path: str | Path, head: str = "fc", fine_tune: bool = True
) -> list[str]:
    """Load a checkpoint into ``model``; returns the keys re-initialised.

    torchvision/timm key names load as they are; the akamaster and chenyaofo CIFAR layouts are
    recognised from their keys and converted exactly (``models.published``). With ``fine_tune``,
    a classifier of another size is kept as initialised, with a message; any other difference
    is an error that lists the first differing keys and shapes.
    """
    ours = model.state_dict()
    theirs = to_our_layout(read_state_dict(path), model, str(path))
    for key, value in ours.items():  # checkpoints older than torch 0.4.1 have no BN step counters
        stem = key.removesuffix("num_batches_tracked")
        if stem != key and key not in theirs and stem + "running_mean" in theirs:
            theirs[key] = value.clone()
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    differing = set(missing) | set(unexpected) | set(reshaped)
    head_keys = {k for k in ours if k.startswith(head + ".")}
    if differing - (head_keys if fine_tune else set()):
        details = [f"missing {k} {tuple(ours[k].shape)}" for k in missing]
        details += [f"unexpected {k} {tuple(theirs[k].shape)}" for k in unexpected]
        details += [f"{k}: file {tuple(theirs[k].shape)} vs model {tuple(ours[k].shape)}" for k in reshaped]
        raise ResnetsError(
            f"{path} does not fit the model ({len(details)} differences; first: {'; '.join(details[:3])})"
        )
    if not differing:
        model.load_state_dict(theirs)
        return []
    weight = f"{head}.weight"
    print(
        f"resnets: the checkpoint's classifier {tuple(theirs[weight].shape) if weight in theirs else '?'} "
        f"does not match the model's {tuple(ours[weight].shape)}; it is re-initialised for fine-tuning",
        file=sys.stderr,
    )
    model.load_state_dict({k: v for k, v in theirs.items() if k not in head_keys}, strict=False)
    return sorted(head_keys)
