"""Run a file written by `resnets export` without its run: ONNX, torch.export (.pt2) or TorchScript.

The format is read from the bytes, not the name: an ONNX model is a protobuf whose first field is
its IR version (tag byte 0x08); .pt2 and TorchScript files are zip archives told apart by their
members. Preprocessing and labels come from the metadata the export wrote into the file.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ResnetsError
from .export import quiet
from .metadata import EXTRA_FILE, ModelInfo
from .predict import Predictor

INSTALL = "pip install 'resnets[export]'"


def sniff_format(path: Path) -> str:
    """'onnx', 'pt2' or 'torchscript', from the file's content; ``ResnetsError`` for anything else."""
    if path.is_dir():
        raise ResnetsError(f"{path} is a folder, not a file written by `resnets export`")
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except OSError as e:
        raise ResnetsError(f"cannot read {path}: {e.strerror or e}") from None
    if zipfile.is_zipfile(path):
        return _archive_format(path)
    if head == b"\x08":
        return "onnx"
    raise ResnetsError(f"{path} is not an exported model (ONNX, torch.export .pt2 or TorchScript)")


def _archive_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise ResnetsError(f"{path}: not a readable archive ({e})") from None
    if any(n.endswith("/archive_format") for n in names):
        return "pt2"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    # torch.save's checkpoints are zip archives too: say where they belong.
    raise ResnetsError(
        f"{path} is a zip archive but not a .pt2 or TorchScript model; "
        "for a checkpoint or weights file, pass its run directory"
    )


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> Predictor:
    """A predictor for an exported file, described by the metadata inside it."""
    path = Path(path)
    if not path.exists():
        raise ResnetsError(f"model file {path} not found")
    fmt = sniff_format(path)
    return {"onnx": _onnx, "pt2": _pt2, "torchscript": _torchscript}[fmt](path, torch.device(device))


def _onnx(path: Path, device: torch.device) -> Predictor:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ResnetsError(f"running an ONNX file needs onnxruntime, not installed: {INSTALL}") from None
    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    providers = [p for p in (wanted, "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        with quiet():
            session = ort.InferenceSession(str(path), providers=list(dict.fromkeys(providers)))
    except Exception as e:  # onnxruntime raises its own types for a malformed or foreign graph
        raise ResnetsError(f"{path} is not an ONNX model onnxruntime can run ({_first_line(e)})") from None
    info = ModelInfo.from_strings(session.get_modelmeta().custom_metadata_map, str(path))
    name = session.get_inputs()[0].name

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0]).float()

    return Predictor(info, logits)


def _pt2(path: Path, device: torch.device) -> Predictor:
    extra = {EXTRA_FILE: ""}
    try:
        with quiet():
            module = torch.export.load(str(path), extra_files=extra).module().to(device)
    except Exception as e:
        raise ResnetsError(
            f"{path} is not a torch.export program torch can load ({_first_line(e)})"
        ) from None
    return Predictor(_info(extra[EXTRA_FILE], path), _torch_logits(module, device))


def _torchscript(path: Path, device: torch.device) -> Predictor:
    extra = {EXTRA_FILE: ""}
    try:
        with quiet():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as e:
        raise ResnetsError(f"{path} is not a TorchScript model torch can load ({_first_line(e)})") from None
    return Predictor(_info(extra[EXTRA_FILE], path), _torch_logits(module, device))


def _info(document: str | bytes, path: Path) -> ModelInfo:
    """The ModelInfo of a .pt2 or TorchScript file's ``resnets.json`` (empty when it has none)."""
    try:
        props = json.loads(document) if document else {}
    except ValueError:
        props = None
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise ResnetsError(f"{path}: its {EXTRA_FILE} is not the metadata `resnets export` writes")
    return ModelInfo.from_strings(props, str(path))


def _torch_logits(module: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(device)).float().cpu()

    return logits


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
