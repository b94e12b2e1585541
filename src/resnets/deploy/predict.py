"""Top-k classes for image files, through the preprocessing the model was trained with.

A run and a file exported from it share one path: both are described by a ``ModelInfo``, so the
pixels each model sees are the same, and only the function computing the logits differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.imagefolder import load_image
from ..data.transforms import eval_image
from ..errors import ResnetsError
from ..training.runs import Run
from .inference import prepare_inference
from .inputs import batched
from .metadata import ModelInfo, run_info

DEFAULT_BATCH = 64


@dataclass(frozen=True)
class Predictor:
    """A model ready to classify: how to feed it, and normalised CPU batch -> CPU fp32 logits."""

    info: ModelInfo
    logits: Callable[[torch.Tensor], torch.Tensor]


def load_pixels(path: Path, info: ModelInfo) -> np.ndarray:
    """One image as uint8 (C, H, W), resized as the model's evaluation images were."""
    c, size, _ = info.input_shape
    if info.resize == "stretch":
        return load_image(path, size, channels=c)
    try:
        return eval_image(path.read_bytes(), size)
    except OSError as e:
        raise ResnetsError(f"{path}: {e.strerror or e}") from None
    except Exception as e:  # any decoder failure: the file is not an image it can read
        raise ResnetsError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def normalise(pixels: list[np.ndarray], info: ModelInfo) -> torch.Tensor:
    """A float (B, C, H, W) batch standardised with the model's per-channel mean and std."""
    c = info.input_shape[0]
    mean = torch.tensor(info.mean).view(1, c, 1, 1) * 255  # the stored statistics are on the 0..1 scale
    std = torch.tensor(info.std).view(1, c, 1, 1) * 255
    return (torch.from_numpy(np.stack(pixels)).float() - mean) / std


def run_predictor(run: Run, precision: str = "auto") -> Predictor:
    """A run's model, BatchNorm folded, on the device it was loaded to."""
    info = run_info(run)
    device = next(run.model.parameters()).device
    model = prepare_inference(run.model, device, precision, input_shape=info.input_shape)

    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).float().cpu()

    return Predictor(info, logits)


def predict_paths(
    predictor: Predictor,
    paths: Iterable[Path],
    top_k: int = 5,
    batch_size: int = DEFAULT_BATCH,
    on_bad: Callable[[Path, ResnetsError], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each readable image's top-k classes, in order, ``batch_size`` images in memory at a time.

    An unreadable image raises ``ResnetsError``, unless ``on_bad`` is given: then it is told of
    the image and the image is left out.
    """
    for chunk in batched(paths, batch_size):
        good, pixels = [], []
        for path in chunk:
            try:
                pixels.append(load_pixels(path, predictor.info))
            except ResnetsError as e:
                if on_bad is None:
                    raise
                on_bad(path, e)
                continue
            good.append(path)
        if good:
            probs = torch.softmax(predictor.logits(normalise(pixels, predictor.info)), dim=1)
            yield from _ranked(good, probs, predictor.info.classes, top_k)


def _ranked(
    paths: list[Path], probs: torch.Tensor, classes: tuple[str, ...], top_k: int
) -> Iterator[dict[str, Any]]:
    if probs.shape[1] != len(classes):
        raise ResnetsError(f"the model has {probs.shape[1]} outputs but names {len(classes)} classes")
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    for path, values, indices in zip(paths, top.values.tolist(), top.indices.tolist(), strict=True):
        ranked = [
            {"class": classes[i], "index": i, "probability": p} for p, i in zip(values, indices, strict=True)
        ]
        yield {"file": str(path), "top": ranked}


def predict_files(
    run: Run, paths: list[Path], top_k: int = 5, precision: str = "auto", batch_size: int = DEFAULT_BATCH
) -> list[dict[str, Any]]:
    """For each file: its top-k classes with names and probabilities, most likely first."""
    return list(predict_paths(run_predictor(run, precision), paths, top_k, batch_size))
