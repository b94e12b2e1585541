"""Shipping a trained run: BN folding, ONNX/torch.export/TorchScript export, prediction on images."""

from .export import export_onnx, export_pt2, export_torchscript, fold_batchnorm
from .predict import predict_files

__all__ = ["export_onnx", "export_pt2", "export_torchscript", "fold_batchnorm", "predict_files"]
