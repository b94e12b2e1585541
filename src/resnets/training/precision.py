"""Mixed precision: autocast contexts with fp32 master weights, and the fp16 loss scaler."""

from __future__ import annotations

import contextlib
import functools

import torch

from ..errors import ResnetsError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' becomes bf16 where the hardware runs it natively (measured 2x faster), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse combinations the hardware cannot run."""
    if precision not in ("fp32", *DTYPES):
        raise ResnetsError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ResnetsError("fp16 needs a CUDA GPU; on the CPU use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ResnetsError("this GPU has no bf16 support; use --precision fp16 or fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The forward-pass context: autocast to bf16/fp16, or nothing for fp32."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
