"""Top-k classes for image files, through the run's own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.imagefolder import load_image
from ..data.loader import normalize
from ..training.runs import Run
from .inference import prepare_inference


def preprocess(run: Run, paths: list[Path]) -> torch.Tensor:
    """Images as the run's model saw them in training: channels, size and normalisation."""
    c, h, w = run.resolved["image_shape"]
    if h != w:
        raise ValueError("non-square training images are not supported by predict")
    images = torch.from_numpy(np.stack([load_image(p, h, channels=c) for p in paths]))
    mean = torch.tensor(run.resolved["mean"]).view(1, c, 1, 1) * 255
    std = torch.tensor(run.resolved["std"]).view(1, c, 1, 1) * 255
    return normalize(images, mean, std)


@torch.no_grad()
def predict_files(
    run: Run, paths: list[Path], top_k: int = 5, precision: str = "auto"
) -> list[dict[str, Any]]:
    """For each file: its top-k classes with names and probabilities, most likely first."""
    device = next(run.model.parameters()).device
    model = prepare_inference(run.model, device, precision)
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
