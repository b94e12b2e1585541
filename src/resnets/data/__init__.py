"""Datasets as whole uint8 tensors, and a loader that augments whole batches on the device."""

from . import builtin, cifar, imagefolder, mnist, shards  # noqa: F401  (each registers its sources)
from .dataset import Dataset, ImageData, default_data_dir, get_source, list_datasets, load_dataset
from .files import StreamedDataset
from .loader import TensorLoader, normalize
from .stream import StreamLoader

__all__ = [
    "Dataset",
    "ImageData",
    "StreamLoader",
    "StreamedDataset",
    "TensorLoader",
    "default_data_dir",
    "get_source",
    "list_datasets",
    "load_dataset",
    "normalize",
]
