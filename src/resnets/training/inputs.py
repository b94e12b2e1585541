"""A run's input size when none is given: the model family's, as its paper trains it; and the mean/std it
normalises by where a pretrained file tells them.

An image folder small enough to decode into memory used to train at 32 px whatever the model: an
ImageNet ResNet-50 fine-tuned on a pets folder saw thumbnails, while a bigger folder of the same
photos streamed at 224. Now an ImageNet-size net trains on the folder at its own input size with
the streaming path's RandomResizedCrop, and evaluates on the centre crop after resizing the short
side to size / 0.875 (resize 256, crop 224), as torchvision's reference does; CIFAR-size nets keep
the in-memory path at 32 px.

A folder fine-tuned from ImageNet weights (--init-from) is normalised by ImageNet's mean/std, the
inputs the weights learnt from, not by the folder's own statistics; config.json's resolved record says
where the mean/std came from (normalisation_from: pretrained, data or imagenet).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..data import Dataset, StreamedDataset
from ..data.files import IMAGENET_MEAN, IMAGENET_STD
from ..data.imagefolder import MEMORY_SIZE
from ..models import get_spec
from ..models.interop import read_state_dict
from ..models.published import detect_layout
from .config import TrainConfig


def input_defaults(model: str, dataset: str, options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The dataset options with the model's input size filled in where missing, and a line saying so."""
    if dataset != "imagefolder" or "image_size" in options:
        return options, None
    size = get_spec(model).input_size[-1]
    if size <= MEMORY_SIZE:
        return options, None
    filled = {**options, "image_size": size}
    if options.get("loader", "auto") == "auto":
        filled["loader"] = "stream"  # the path with RandomResizedCrop and the centre-crop evaluation
    said = (
        f"{model} takes {size}-px images: training on RandomResizedCrop crops of the folder, evaluating "
        f"resize-{round(size / 0.875)}/centre-{size}, streamed (--image-size and --loader change this)"
    )
    return filled, said


def normalisation(
    cfg: TrainConfig, data: Dataset | StreamedDataset, saved: dict[str, Any] | None
) -> tuple[Dataset | StreamedDataset, str, str | None]:
    """The dataset with the mean/std the run normalises by, where they come from, and a line saying so.

    Where from: "pretrained", the --init-from file's (ImageNet's for torchvision/timm ImageNet-1k weights,
    the publisher's for akamaster and chenyaofo CIFAR files), used for an image folder, whose own
    statistics the weights never saw; "data", the training images' per-channel statistics; "imagenet",
    ImageNet's, which a streamed dataset takes as its images are not decoded up front. A resumed run
    keeps what it started with (its --init-from file is not read again).
    """
    default = "imagenet" if isinstance(data, StreamedDataset) else "data"
    if saved is not None:  # resumed: pretrained only if the run began so; then its recorded values
        if saved.get("normalisation_from") != "pretrained" or not _stats(saved, data.image_shape[0]):
            return data, default, None
        return _with_stats(data, tuple(saved["mean"]), tuple(saved["std"])), "pretrained", None
    if cfg.dataset != "imagefolder" or not cfg.init_from:
        return data, default, None
    known = file_normalisation(cfg.init_from)
    if known is None or len(known[0]) != data.image_shape[0]:
        return data, default, None
    mean, std, whose = known
    said = (f"normalising by {whose} mean {_numbers(mean)} and std {_numbers(std)}, as the --init-from "
            f"weights were trained (the folder's own statistics are not used)")  # fmt: skip
    return _with_stats(data, mean, std), "pretrained", said


def file_normalisation(path: str) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """(mean, std, whose) a weights file was trained with, where its layout tells; else None."""
    state = read_state_dict(path)
    layout = detect_layout(state)
    if layout.mean is not None and layout.std is not None:
        return layout.mean, layout.std, f"{layout.name}'s"
    conv, fc = state.get("conv1.weight"), state.get("fc.weight")
    # torchvision's and timm's ImageNet-1k classifiers: a 7x7 RGB stem and 1,000 classes.
    if conv is not None and fc is not None and tuple(conv.shape[1:]) == (3, 7, 7) and fc.shape[0] == 1000:
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet's"
    return None


def _stats(saved: dict[str, Any], channels: int) -> bool:
    return all(
        isinstance(saved.get(k), list) and len(saved[k]) == channels
        and all(isinstance(v, int | float) for v in saved[k])
        for k in ("mean", "std")
    )  # fmt: skip


def _with_stats(data: Dataset | StreamedDataset, mean: tuple, std: tuple) -> Dataset | StreamedDataset:
    """A copy of ``data`` normalised by ``mean``/``std`` (the loaded dataset may be cached: not changed)."""
    out = dataclasses.replace(data, mean=tuple(mean), std=tuple(std))
    if hasattr(data, "loader_reason"):
        out.loader_reason = data.loader_reason
    return out


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
