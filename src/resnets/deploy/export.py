"""Export a trained model with its BatchNorms folded into the convolutions, for inference."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from ..errors import ResnetsError
from ..io import atomic_write_bytes


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy in which every BN that directly follows a conv is folded into it."""
    try:
        return fuse(copy.deepcopy(model).eval())
    except Exception as e:  # a model torch.fx cannot trace
        raise ResnetsError(
            f"cannot fold BatchNorm: the model does not trace ({type(e).__name__}: {e})"
        ) from None


def count_batchnorms(model: nn.Module) -> int:
    """BatchNorm layers left in a model."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor, opset: int = 17) -> None:
    """Write an ONNX file with a dynamic batch dimension (input 'images', output 'logits')."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's concern
        torch.onnx.export(
            model.eval(), (example,), buf, dynamo=False, opset_version=opset,
            input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    atomic_write_bytes(path, buf.getvalue())


def export_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    """Write a traced TorchScript module (batch size free: the nets have no batch-specific ops)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is asked for by name
        traced = torch.jit.trace(model.eval(), example)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    atomic_write_bytes(path, buf.getvalue())


def onnx_max_difference(path: Path, model: nn.Module, batch: torch.Tensor) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of ``batch``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ResnetsError(
            "checking the ONNX file needs onnxruntime: pip install 'resnets[export]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": batch.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(batch).numpy()
    return float(abs(got - want).max())
