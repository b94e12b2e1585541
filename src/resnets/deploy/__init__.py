"""Shipping a trained run: BN folding, ONNX/torch.export/TorchScript export, prediction on images."""

from .checked import ExportReport, export_run
from .export import export_onnx, export_pt2, export_torchscript, fold_batchnorm
from .predict import predict_files

__all__ = [
    "ExportReport",
    "export_onnx",
    "export_pt2",
    "export_run",
    "export_torchscript",
    "fold_batchnorm",
    "predict_files",
]
