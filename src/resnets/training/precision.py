"""Mixed precision: autocast contexts with fp32 master weights, and the fp16 loss scaler."""

from __future__ import annotations

import contextlib

import torch

from ..errors import ResnetsError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse combinations the hardware cannot run."""
    if precision == "fp16" and device.type != "cuda":
        raise ResnetsError("fp16 needs a CUDA GPU; on the CPU use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ResnetsError("this GPU has no bf16 support; use --precision fp16 or fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The forward-pass context: autocast to bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
