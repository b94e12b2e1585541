"""What the networks, the trainer and the tools may ask of every block and every network.

A block (``ResidualUnit``) computes ``y = act(F(x) + shortcut(x))``, or ``act(F(x))`` as its
plain twin (``residual=False``); pre-activation units, ReZero and highway blocks vary where the
activation goes and how the two paths meet, but answer the same questions. A network
(``Network``) is what ``create_model`` returns: its blocks in order, and what the trainer must
know before the first step (checkpointing, the smallest input, an initialisation that needs data).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from .depth import default_segments


class ShapeChange(ValueError):
    """A plain block that changes the shape cannot be deleted: nothing would carry its input on."""


def keeps_shape(block: nn.Module) -> bool:
    """True when the block's output has its input's shape (no stride, as many channels out as in)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return all(c.stride == (1, 1) for c in convs) and convs[0].in_channels == convs[-1].out_channels


@runtime_checkable
class NamesBranchEnd(Protocol):
    """Any module that says where its residual branch ends (every ``ResidualUnit`` does)."""

    def branch_end(self) -> nn.Module:
        """The layer whose output is the residual branch F(x)."""
        ...


class ResidualUnit(nn.Module):
    """One block of a residual net or of its plain twin.

    A subclass builds its layers, sets ``act``, ``downsample`` and ``drop_path`` (an
    ``nn.Identity`` until the network turns stochastic depth on), and names the last layer of its
    branch in ``last_layer``; the rest of the interface follows from those.
    """

    expansion: ClassVar[int] = 1
    """Output channels per ``planes``: 4 for bottlenecks."""
    last_layer: ClassVar[str]
    """The attribute name of the layer whose output is the residual branch F(x)."""
    act_after_add: ClassVar[bool] = True
    """Whether the activation follows the sum: original units, yes; pre-activation units, no."""

    residual: bool
    """Whether the block adds a shortcut; False for a plain twin, which outputs act(F(x))."""
    downsample: nn.Module | None
    """The shortcut's layers (option A padding, a projection), or None for the identity."""
    drop_path: nn.Module
    """Stochastic depth on the residual branch, set by the network; ``nn.Identity`` when off."""
    act: nn.Module
    """The block's activation."""

    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual

    def branch_end(self) -> nn.Module:
        """The layer whose output is the residual branch F(x), where the diagnostics measure it."""
        return self.get_submodule(self.last_layer)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut path alone: the identity, or the padding or projection where shapes change."""
        return x if self.downsample is None else self.downsample(x)

    def lesioned(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output with its residual branch deleted (Veit et al. 2016).

        A plain block has no shortcut to fall back on: deleted, it passes its input on, which
        only a block that keeps the shape can do (``ShapeChange`` otherwise).
        """
        if not self.residual:
            if not keeps_shape(self):
                raise ShapeChange("this plain block changes the shape; it cannot be deleted")
            return x
        out = self.shortcut(x)
        return self.act(out) if self.act_after_add else out

    def zero_init_last(self) -> None:
        """Start the residual branch at zero (its last layer's weight) so the block begins as its shortcut."""
        nn.init.zeros_(self.branch_end().weight)

    def post_init(self, blocks: int) -> None:
        """The block's own initialisation after the network's scheme (``blocks``: how many the net has)."""


def deletable(block: ResidualUnit) -> bool:
    """Whether the lesion study can delete the block: always with a shortcut, else if it keeps shape."""
    return block.residual or keeps_shape(block)


class Network(nn.Module):
    """What ``create_model`` returns, and what training and the tools may rely on."""

    residual: bool
    """Whether the network's blocks add shortcuts; False for a plain twin."""
    num_classes: int
    """Outputs of the classifier."""
    init: str = "he_fan_out"
    """The weight initialisation scheme it was built with (``init.INITS``)."""
    min_input_size: ClassVar[int] = 1
    """The smallest image side (pixels) the network takes."""
    init_images: int = 0
    """How many training images ``init_from_data`` wants; 0 when the network needs none."""
    checkpoint_segments: int = 0
    """Runs of blocks whose activations are recomputed in the backward pass; 0: no checkpointing."""

    def blocks(self) -> list[ResidualUnit]:
        """The residual (or plain) blocks, input to output; empty for a net not made of them."""
        return []

    def set_checkpointing(self, segments: int | None) -> None:
        """Recompute activations in the backward pass in ``segments`` runs of blocks (0: off).

        None picks sqrt(number of blocks), or 0 for a net without blocks. Results are unchanged;
        memory falls, time rises.
        """
        blocks = len(self.blocks())
        if segments is None:
            segments = default_segments(blocks) if blocks else 0
        if segments and not blocks:
            raise ValueError(f"{type(self).__name__} has no blocks to checkpoint")
        self.checkpoint_segments = segments

    def init_from_data(self, images: torch.Tensor) -> None:
        """The part of the initialisation that needs ``init_images`` training images (N, C, H, W)."""
