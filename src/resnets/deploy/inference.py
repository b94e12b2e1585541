"""The fast inference path: BatchNorm folded, channels-last, autocast, optionally compiled."""

from __future__ import annotations

import torch
from torch import nn

from ..training.precision import autocast, check_precision, resolve_precision
from .export import fold_batchnorm


class InferenceModel(nn.Module):
    """Wraps an eval-mode network; takes NCHW float images and returns fp32 logits."""

    def __init__(self, net: nn.Module, precision: str, channels_last: bool, device: torch.device) -> None:
        super().__init__()
        self.net = net
        self.precision = precision
        self.channels_last = channels_last
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch, computed under the chosen precision and memory format."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            return self.net(x).float()


def prepare_inference(
    model: nn.Module,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    channels_last: bool = True,
    fold: bool = True,
    compile: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> InferenceModel:
    """A copy of ``model`` made fast for inference; the original is left untouched.

    With ``input_shape`` (C, H, W), precision "auto" is measured on this machine (cached);
    without it, "auto" is bf16 where the hardware reports native bf16.
    """
    from ..training.autotune import inference_precision

    device = torch.device(device)
    net = fold_batchnorm(model) if fold else model
    net = net.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    if precision == "auto" and input_shape is not None:
        precision, _ = inference_precision(net, tuple(input_shape), device, channels_last)
    precision = resolve_precision(precision, device)
    check_precision(precision, device)
    if compile:
        net = torch.compile(net)
    return InferenceModel(net, precision, channels_last, device).eval()
