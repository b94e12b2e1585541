"""Export a trained model, BatchNorms folded into the convolutions: ONNX, torch.export, TorchScript.

ONNX goes through PyTorch's ``torch.export``-based exporter (``dynamo=True``), ``pt2`` is the
``torch.export`` ExportedProgram itself, and TorchScript is kept as the legacy format (it is
deprecated upstream). Every format has a dynamic batch dimension, and each file can carry the
run's preprocessing and labels (``metadata``: ONNX metadata_props, or an archive's extra file).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from ..errors import ResnetsError
from ..io import atomic_write_bytes
from .metadata import EXTRA_FILE

FORMATS = ("onnx", "pt2", "torchscript")
# What each format needs beyond PyTorch (the [export] extra), and what checks its file.
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "pt2": (), "torchscript": ()}
DEFAULT_OPSET = 18  # the lowest opset the torch.export-based exporter writes
MAX_BATCH = 65536


def require(fmt: str) -> None:
    """Fail with one line naming what to install when ``fmt``'s optional packages are missing."""
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ResnetsError(
            f"{fmt} export needs {', '.join(missing)}, not installed: pip install 'resnets[export]'"
        )


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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide the exporters' progress lines, deprecation notes and optional-op warnings."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def _batch_dim() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def _export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model.eval(), (example,), dynamic_shapes=_batch_dim())
    except Exception as e:  # an exporter limitation, reported rather than dumped
        raise ResnetsError(f"torch.export cannot capture the model ({type(e).__name__}: {e})") from None


def export_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write an ONNX file (input 'images', output 'logits', dynamic batch) via torch.export."""
    require("onnx")
    if opset < DEFAULT_OPSET:
        raise ResnetsError(f"opset {opset} is too old for the torch.export-based exporter; use >= 18")
    try:
        with quiet():
            program = torch.onnx.export(
                model.eval(), (example,), dynamo=True, opset_version=opset,
                input_names=["images"], output_names=["logits"], dynamic_shapes=_batch_dim(),
            )  # fmt: skip
            buf = io.BytesIO()
            program.save(buf)
    except ResnetsError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ResnetsError(f"the ONNX exporter failed ({type(e).__name__}: {first})") from None
    atomic_write_bytes(path, _with_onnx_metadata(buf.getvalue(), metadata or {}))


def _with_onnx_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """The serialised model with ``metadata`` in its metadata_props (what onnxruntime reports back)."""
    if not metadata:
        return data
    import onnx

    model = onnx.load_model_from_string(data)
    onnx.helper.set_model_props(model, {p.key: p.value for p in model.metadata_props} | metadata)
    return model.SerializeToString()


def export_pt2(
    model: nn.Module, path: Path, example: torch.Tensor, metadata: dict[str, str] | None = None
) -> None:
    """Write a torch.export ExportedProgram (load with ``torch.export.load(path).module()``)."""
    program = _export_program(model, example)
    buf = io.BytesIO()
    with quiet():
        torch.export.save(program, buf, extra_files=_extra_files(metadata))
    atomic_write_bytes(path, buf.getvalue())


def export_torchscript(
    model: nn.Module, path: Path, example: torch.Tensor, metadata: dict[str, str] | None = None
) -> None:
    """Write a traced TorchScript module: the legacy format, deprecated upstream."""
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(model.eval(), example)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files=_extra_files(metadata))
    atomic_write_bytes(path, buf.getvalue())


def _extra_files(metadata: dict[str, str] | None) -> dict[str, str]:
    """The archive member holding the metadata of a .pt2 or TorchScript file (none without any)."""
    return {EXTRA_FILE: json.dumps(metadata, indent=1)} if metadata else {}


EXPORTERS = {"onnx": export_onnx, "pt2": export_pt2, "torchscript": export_torchscript}


def exported_logits(path: Path, fmt: str, batch: torch.Tensor) -> torch.Tensor:
    """The logits the exported file computes for ``batch``, run by that format's own runtime."""
    require(fmt)
    with quiet(), torch.no_grad():
        if fmt == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])
        if fmt == "pt2":
            return torch.export.load(str(path)).module()(batch)
        return torch.jit.load(str(path))(batch)


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over max |want|: float32 rounding, whatever the scale of the logits."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
