"""BatchNorm over fixed-size groups of each training batch ("ghost" batches), as on the paper's two GPUs.

He et al. 2015 trained CIFAR nets with a batch of 128 on two GPUs, so each BatchNorm saw 64
images. ``--bn-group 64`` reproduces that on one device: in training, each group of 64 images is
normalised by its own statistics, exactly as two separate calls of the layer on the two halves
(running statistics updated once per group, in order); in evaluation nothing changes. The layers
keep their names and tensors, so checkpoints and weights files are the same as without it.
"""

from __future__ import annotations

import torch
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from groups of ``group`` images of each batch."""

    group: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each group normalised on its own in training; the usual running-average BN in evaluation."""
        if not self.training or x.shape[0] <= self.group:
            return super().forward(x)
        return torch.cat([super(GhostBatchNorm2d, self).forward(part) for part in x.split(self.group)])


def use_ghost_batchnorm(model: nn.Module, group: int) -> nn.Module:
    """Every BatchNorm2d of ``model`` made a GhostBatchNorm2d of ``group`` images, in place; the model."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            # Same parameters, buffers and names: only the forward differs.
            module.__class__ = GhostBatchNorm2d
            module.group = group
    return model
