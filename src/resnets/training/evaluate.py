"""Loss and error of a model over a whole split: in training, of a run, or of a published weights file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import TensorLoader, load_dataset
from ..errors import ResnetsError
from ..models import create_model, get_spec
from ..models.interop import load_pretrained, read_state_dict
from ..models.published import detect_layout
from .loaders import split_loader
from .precision import autocast
from .runs import load_run


@dataclass(frozen=True)
class EvalSettings:
    """Which split is evaluated, in batches of what size, at what precision, with which test-time views."""

    split: str = "test"
    batch_size: int = 256
    precision: str = "auto"  # of the prepared inference model: auto is bf16 where native, else fp32
    flip: bool = False  # average with the mirror image
    translate: bool = False  # also with copies shifted one pixel


TOP5_FROM_CLASSES = 11  # top-5 error is reported where there are more than 10 classes (ImageNet's convention)


@dataclass(frozen=True)
class Scores:
    """Mean cross-entropy, top-1 error and, for more than 10 classes, top-5 error (fractions)."""

    loss: float
    error: float
    top5_error: float | None = None

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """{"loss", "error"[, "top5_error"]} under ``prefix`` (e.g. "test_")."""
        out = {f"{prefix}loss": self.loss, f"{prefix}error": self.error}
        return out | ({f"{prefix}top5_error": self.top5_error} if self.top5_error is not None else {})


def evaluate(
    model: nn.Module, loader: TensorLoader, precision: str = "fp32", flip_tta: bool = False,
    translate_tta: bool = False,
) -> tuple[float, float]:  # fmt: skip
    """(mean cross-entropy, error as a fraction) of ``model`` on every batch of ``loader``."""
    scores = score(model, loader, precision, flip_tta, translate_tta)
    return scores.loss, scores.error


@torch.no_grad()
def score(
    model: nn.Module, loader: TensorLoader, precision: str = "fp32", flip_tta: bool = False,
    translate_tta: bool = False,
) -> Scores:  # fmt: skip
    """Loss, top-1 and (over 10 classes) top-5 error of ``model`` on every batch of ``loader``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    wrong = torch.zeros((), dtype=torch.int64, device=loader.device)
    wrong5 = torch.zeros((), dtype=torch.int64, device=loader.device)
    n, classes = 0, 0
    for x, y in loader:
        with autocast(precision, loader.device):
            logits = _views(model, x, flip_tta)
            if translate_tta:  # half the weight on copies shifted one pixel each way (reflected edges)
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                h, w = x.shape[-2:]
                shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
                logits = (logits + sum(_views(model, s, flip_tta) for s in shifted) / 2) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
        classes = logits.shape[1]
        if classes >= TOP5_FROM_CLASSES:
            wrong5 += (logits.topk(5, dim=1).indices != y[:, None]).all(dim=1).sum()
        n += len(y)
    model.train(was_training)
    top5 = wrong5.item() / n if classes >= TOP5_FROM_CLASSES else None
    return Scores(loss_sum.item() / n, wrong.item() / n, top5)


def _views(model: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Logits of ``x``, averaged with those of its mirror image when ``flip``."""
    logits = model(x).float()
    return (logits + model(x.flip(3)).float()) / 2 if flip else logits


def evaluate_run(
    run_dir: str | Path, settings: EvalSettings, device: torch.device, dataset: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A run's trained model on its own dataset's split, or another ``dataset`` with the same classes."""
    from ..deploy.inference import prepare_inference  # on use: deploy imports training

    run = load_run(run_dir, device)
    name = dataset or run.config.dataset
    data_dir = data_dir if dataset else (data_dir or run.config.data_dir)
    options = run.config.dataset_options if name == run.config.dataset else {}
    data = load_dataset(name, data_dir, **options)
    if (
        data.num_classes != run.resolved["num_classes"]
        or list(data.image_shape) != run.resolved["image_shape"]
    ):
        raise ResnetsError(
            f"{name} has {data.num_classes} classes of {data.image_shape} images; the run's model "
            f"expects {run.resolved['num_classes']} of {tuple(run.resolved['image_shape'])}"
        )
    split = data.test if settings.split == "test" else data.train
    # The run's own normalisation, whatever the dataset: the model was trained with it.
    loader = split_loader(data, split, settings.batch_size, run.resolved["mean"], run.resolved["std"], device)
    # BN folded, channels-last and autocast inside: the precision is applied by the wrapper.
    fast = prepare_inference(run.model, device, settings.precision, input_shape=tuple(data.image_shape))
    scores = score(fast, loader, "fp32", flip_tta=settings.flip, translate_tta=settings.translate)
    return {
        "run": str(run.path), "model": run.config.model, "dataset": name, "split": settings.split,
        "images": len(split), **scores.as_dict(), "accuracy": 1 - scores.error,
        "precision": fast.precision, "weights": str(run.weights),
    }  # fmt: skip


def evaluate_weights(
    weights: str, model_name: str, dataset: str, settings: EvalSettings, device: torch.device,
    data_dir: str | None = None, shortcut: str | None = None, mean: list[float] | None = None,
    std: list[float] | None = None,
) -> tuple[dict[str, Any], str, str]:  # fmt: skip
    """A published weights file with no run, its layout told by its keys; (result, layout, normalisation).

    ``mean`` and ``std`` default to the publisher's where its layout names them, else the dataset's.
    """
    from ..deploy.inference import prepare_inference  # on use: deploy imports training

    spec = get_spec(model_name)
    layout = detect_layout(read_state_dict(weights))
    data = load_dataset(dataset, data_dir)
    channels = data.image_shape[0]
    options: dict[str, Any] = {"in_channels": channels}
    shortcut = shortcut or layout.shortcut
    if spec.residual and shortcut:
        options["shortcut"] = shortcut
    model = create_model(model_name, num_classes=data.num_classes, **options)
    load_pretrained(model, weights, fine_tune=False)
    publisher = layout.mean is not None and len(layout.mean) == channels
    given = mean or std
    mean = mean or (layout.mean if publisher else data.mean)
    std = std or (layout.std if publisher else data.std)
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != channels or (name == "std" and min(values) <= 0):
            raise ResnetsError(f"--{name} needs {channels} value(s){' > 0' if name == 'std' else ''}")
    norm = "given" if given else "the publisher's" if publisher else f"{dataset}'s own"
    split = data.test if settings.split == "test" else data.train
    loader = split_loader(data, split, settings.batch_size, mean, std, device)
    fast = prepare_inference(
        model.to(device).eval(), device, settings.precision, input_shape=data.image_shape
    )
    loss, error = evaluate(fast, loader, "fp32", flip_tta=settings.flip, translate_tta=settings.translate)
    result = {
        "weights": str(weights), "model": model_name, "layout": layout.name,
        "shortcut": shortcut, "dataset": dataset, "split": settings.split, "images": len(split),
        "mean": list(mean), "std": list(std), "loss": loss, "error": error, "accuracy": 1 - error,
        "precision": fast.precision,
    }  # fmt: skip
    return result, layout.describe(), norm
