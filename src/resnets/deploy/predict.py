"""Top-k classes for image files, through the run's own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.imagefolder import load_image
from ..data.loader import normalize
from ..data.transforms import eval_image
from ..errors import ResnetsError
from ..training.runs import Run
from .inference import prepare_inference


def preprocess(run: Run, paths: list[Path]) -> torch.Tensor:
    """Images as the run's model saw them in training: channels, size and normalisation."""
    c, h, w = run.resolved["image_shape"]
    if h != w:
        raise ValueError("non-square training images are not supported by predict")
    loader = run.resolved.get("loader", {})
    if loader.get("kind") == "stream":  # the evaluation crop: short side to size/0.875, centre square
        size = loader["test_size"]
        images = torch.from_numpy(np.stack([_centre_crop(p, size) for p in paths]))
    else:
        images = torch.from_numpy(np.stack([load_image(p, h, channels=c) for p in paths]))
    mean = torch.tensor(run.resolved["mean"]).view(1, c, 1, 1) * 255
    std = torch.tensor(run.resolved["std"]).view(1, c, 1, 1) * 255
    return normalize(images, mean, std)


def _centre_crop(path: Path, size: int) -> np.ndarray:
    try:
        return eval_image(path.read_bytes(), size)
    except OSError as e:
        raise ResnetsError(f"{path}: {e.strerror or e}") from None
    except Exception as e:  # any decoder failure: the file is not an image it can read
        raise ResnetsError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


@torch.no_grad()
def predict_files(
    run: Run, paths: list[Path], top_k: int = 5, precision: str = "auto"
) -> list[dict[str, Any]]:
    """For each file: its top-k classes with names and probabilities, most likely first."""
    device = next(run.model.parameters()).device
    model = prepare_inference(run.model, device, precision, input_shape=tuple(run.resolved["image_shape"]))
    x = preprocess(run, paths).to(device)
    probs = torch.softmax(model(x), dim=1).cpu()
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    classes = run.resolved.get("classes") or [str(i) for i in range(probs.shape[1])]
    results = []
    for n, path in enumerate(paths):
        top_n = zip(top.values[n].tolist(), top.indices[n].tolist(), strict=True)
        ranked = [{"class": classes[i], "index": i, "probability": p} for p, i in top_n]
        results.append({"file": str(path), "top": ranked})
    return results
