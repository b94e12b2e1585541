"""Shipping a trained run: BN folding, ONNX/TorchScript export, prediction on image files."""

from .export import export_onnx, export_torchscript, fold_batchnorm
from .predict import predict_files

__all__ = ["export_onnx", "export_torchscript", "fold_batchnorm", "predict_files"]
