"""A run exported and then checked: the written file's logits against PyTorch's on the run's own images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import ImageData, TensorLoader, load_dataset
from ..errors import ResnetsError
from ..training.runs import Run, load_run
from .export import EXPORTERS, count_batchnorms, exported_logits, fold_batchnorm, relative_difference, require
from .metadata import ModelInfo, run_info

# Exported logits may differ from PyTorch's by rounding only; more means the export changed the net.
MAX_RELATIVE_DIFFERENCE = 1e-4
CHECK_IMAGES = 16


@dataclass(frozen=True)
class ExportReport:
    """What `resnets export` wrote and how closely the file reproduces the run's model."""

    path: Path
    fmt: str
    size_bytes: int
    folded: int  # BatchNorms folded into convolutions
    difference: float  # the largest relative difference of the logits
    checked_on: str  # what the check ran on: the run's test images, or random inputs


def export_run(
    run_dir: str | Path, fmt: str, output: str | Path, fold: bool = True, opset: int = 18
) -> ExportReport:
    """Fold BN, export, and check the file's logits against PyTorch (``ResnetsError`` above the limit)."""
    require(fmt)  # before any work: a missing extra is one line naming what to install
    run = load_run(run_dir)
    info = run_info(run)  # what the file will carry: preprocessing, labels, origin
    model = fold_batchnorm(run.model) if fold else run.model
    out = Path(output)
    example = torch.randn(2, *info.input_shape)
    metadata = info.to_strings()
    if fmt == "onnx":
        EXPORTERS[fmt](model, out, example, opset, metadata=metadata)
    else:
        EXPORTERS[fmt](model, out, example, metadata=metadata)
    batch, source = _check_batch(run, info)
    with torch.no_grad():
        diff = relative_difference(exported_logits(out, fmt, batch), run.model(batch))
    report = ExportReport(
        out, fmt, out.stat().st_size, count_batchnorms(run.model) - count_batchnorms(model), diff, source
    )
    if diff > MAX_RELATIVE_DIFFERENCE:
        limit = MAX_RELATIVE_DIFFERENCE
        raise ResnetsError(f"wrote {out}, but its logits differ from PyTorch's by {diff:.2e} (> {limit:g})")
    return report


def _check_batch(run: Run, info: ModelInfo) -> tuple[torch.Tensor, str]:
    """Real images of the run's test split when its data are at hand in memory, else random ones."""
    try:
        data = load_dataset(run.config.dataset, run.config.data_dir, **run.config.dataset_options)
    except ResnetsError:
        data = None
    # A streamed dataset's test split is a list of files, decoded by other means than TensorLoader.
    if data is not None and isinstance(data.test, ImageData):
        batch = next(iter(TensorLoader(data.test, CHECK_IMAGES, info.mean, info.std)))[0]
        return batch, f"{len(batch)} {run.config.dataset} test images"
    batch = torch.randn(CHECK_IMAGES, *info.input_shape)
    return batch, f"{len(batch)} random inputs (the run's data are not at hand)"
