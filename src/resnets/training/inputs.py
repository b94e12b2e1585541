"""A run's input size when none is given: the model family's, as its paper trains it.

An image folder small enough to decode into memory used to train at 32 px whatever the model: an
ImageNet ResNet-50 fine-tuned on a pets folder saw thumbnails, while a bigger folder of the same
photos streamed at 224. Now an ImageNet-size net trains on the folder at its own input size with
the streaming path's RandomResizedCrop, and evaluates on the centre crop after resizing the short
side to size / 0.875 (resize 256, crop 224), as torchvision's reference does; CIFAR-size nets keep
the in-memory path at 32 px.
"""

from __future__ import annotations

from typing import Any

from ..data.imagefolder import MEMORY_SIZE
from ..models import get_spec


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
