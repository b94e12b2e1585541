"""Datasets as whole uint8 tensors, and a loader that augments whole batches on the device."""

from . import builtin, cifar, imagefolder, mnist  # noqa: F401  (each registers its sources)
from .dataset import Dataset, ImageData, default_data_dir, get_source, list_datasets, load_dataset
from .loader import TensorLoader, normalize

__all__ = [
    "Dataset",
    "ImageData",
    "TensorLoader",
    "default_data_dir",
    "get_source",
    "list_datasets",
    "load_dataset",
    "normalize",
]
