"""Published CIFAR ResNet weights in their authors' layouts: converted exactly, or refused.

Two layouts are in wide use besides torchvision's own key names:

- akamaster/pytorch_resnet_cifar10: ``{"state_dict": {"module.conv1.weight", ...,
  "module.linear.weight"}}``, option A shortcuts that zero-pad the new channels on *both*
  sides of the old ones (``planes // 4`` each), while ours pad at the end (fb.resnet.torch).
  The two are the same network up to an order of the channels in each stage's residual
  stream, so the weights are permuted at load time and give the publisher's logits exactly.
- chenyaofo/pytorch-cifar-models: torchvision key names with option B projections
  (``layerN.0.downsample``), which are our keys for ``shortcut="B"``.

A file whose shortcuts differ from the target model's is refused with the fix, never loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ResnetsError
from .blocks import PadShortcut
from .networks import ResNet


@dataclass(frozen=True)
class Layout:
    """Where a state_dict comes from, and what evaluating it needs."""

    name: str
    shortcut: str | None  # "A", "B" or "C" as the keys show; None where there are no stages
    # The publisher's input normalisation (None: unknown, use the dataset's own).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def describe(self) -> str:
        """One phrase for messages."""
        return f"{self.name} layout, option {self.shortcut} shortcuts" if self.shortcut else self.name


# The publishers' normalisations, as their training code uses them.
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # akamaster's (ImageNet's values)
_CHENYAOFO_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    100: ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761)),
}
_PROJECTION = re.compile(r"^layer(\d+)\.(\d+)\.(?:downsample|shortcut)\.")


def shortcut_option(keys: list[str] | set[str]) -> str | None:
    """The shortcut option the keys show: projections nowhere (A), entering stages (B), everywhere (C)."""
    blocks = {(int(m[1]), int(m[2])) for k in keys if (m := _PROJECTION.match(k))}
    stages = {int(m[1]) for k in keys if (m := re.match(r"^layer(\d+)\.\d+\.", k))}
    if not stages:
        return None
    if not blocks:
        return "A"
    return "B" if all(b == 0 for _, b in blocks) else "C"


def detect_layout(state: dict[str, torch.Tensor]) -> Layout:
    """Recognise a state_dict's publisher from its keys (prefixes and wrappers already removed)."""
    option = shortcut_option(set(state))
    cifar_stem = "conv1.weight" in state and tuple(state["conv1.weight"].shape[-2:]) == (3, 3)
    if "linear.weight" in state and "layer1.0.conv1.weight" in state:
        return Layout("akamaster", option, *_IMAGENET_STATS)
    if cifar_stem and "fc.weight" in state and option == "B" and "layer4.0.conv1.weight" not in state:
        mean, std = _CHENYAOFO_STATS.get(state["fc.weight"].shape[0], (None, None))
        return Layout("chenyaofo", option, mean, std)
    return Layout("torchvision", option)


def to_our_layout(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """``state`` renamed (and, for akamaster option A, permuted) into ``model``'s layout.

    Refuses, naming the fix, a file whose shortcut option differs from the model's.
    """
    layout = detect_layout(state)
    theirs, ours = layout.shortcut, shortcut_option(set(model.state_dict()))
    if theirs and ours and theirs != ours:
        raise ResnetsError(
            f"{source} holds option-{theirs} shortcuts ({layout.name} layout) but the model has option "
            f"{ours}; build the model with shortcut='{theirs}' (--shortcut {theirs})"
        )
    if layout.name != "akamaster":
        return state
    renamed = {_akamaster_key(k): v for k, v in state.items()}
    return _permute_stages(renamed, model, source) if theirs == "A" else renamed


def _akamaster_key(key: str) -> str:
    key = re.sub(r"^linear\.", "fc.", key)
    return re.sub(r"\.shortcut\.", ".downsample.", key)  # their option B: Sequential(conv, BN)


def _stage_permutations(model: ResNet, source: str) -> list[torch.Tensor]:
    """For each stage, ``perm`` with our residual channel j = their channel perm[j]."""
    stages = model.stages()
    stem = model.conv1.out_channels
    perms, previous = [], torch.arange(stem)
    for stage in stages:
        entry = stage[0].downsample
        if isinstance(entry, PadShortcut) and entry.extra_channels:
            old = len(previous)
            new = old + entry.extra_channels
            # Theirs: zeros, the old channels, zeros (new // 4 of zeros on each side).
            low = new // 4
            if 2 * low != entry.extra_channels:
                raise ResnetsError(f"{source}: both-sided padding needs stages that double their width")
            zeros = [c for c in range(new) if not low <= c < low + old]
            previous = torch.cat([previous + low, torch.tensor(zeros, dtype=torch.long)])
        perms.append(previous)
    return perms


def _permute_stages(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Reorder each stage's residual-stream channels from both-sided to end padding."""
    if not isinstance(model, ResNet):
        raise ResnetsError(f"{source} is a CIFAR ResNet with option A shortcuts; the model is not one")
    out = dict(state)
    perms = _stage_permutations(model, source)
    stream = torch.arange(model.conv1.out_channels)  # the stem's channels keep their order
    for i, (stage, perm) in enumerate(zip(model.stages(), perms, strict=True), 1):
        for b in range(len(stage)):
            prefix = f"layer{i}.{b}."
            # The block reads the stream (conv1's input) and writes to it (conv2 and bn2's output).
            _take(out, prefix + "conv1.weight", 1, stream if b == 0 else perm)
            _take(out, prefix + "conv2.weight", 0, perm)
            for name in ("weight", "bias", "running_mean", "running_var"):
                _take(out, prefix + f"bn2.{name}", 0, perm)
        stream = perm
    _take(out, "fc.weight", 1, stream)
    return out


def _take(state: dict[str, torch.Tensor], key: str, dim: int, index: torch.Tensor) -> None:
    if key in state and state[key].shape[dim] == len(index):
        state[key] = state[key].index_select(dim, index)
