"""Shipping a trained run: BN folding, ONNX/torch.export/TorchScript export, prediction on images."""

from .checked import ExportReport, export_run
from .export import export_onnx, export_pt2, export_torchscript, fold_batchnorm
from .exported import load_exported
from .inputs import find_images
from .metadata import ModelInfo, run_info
from .predict import Predictor, predict_files, predict_paths, run_predictor

__all__ = [
    "ExportReport",
    "ModelInfo",
    "Predictor",
    "export_onnx",
    "export_pt2",
    "export_run",
    "export_torchscript",
    "find_images",
    "fold_batchnorm",
    "load_exported",
    "predict_files",
    "predict_paths",
    "run_info",
    "run_predictor",
]
