"""What an exported file must carry to be used without its run: preprocessing, labels, origin.

Each value is a string (ONNX ``metadata_props`` hold nothing else): names as they are, lists as
JSON. The same string map goes into ONNX ``metadata_props`` and, as one JSON document named
``resnets.json``, into the extra files of a torch.export (.pt2) or TorchScript archive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import ResnetsError

if TYPE_CHECKING:  # the exporters import this module; they need not load the training code
    from ..training.runs import Run

EXTRA_FILE = "resnets.json"  # the name of the metadata inside a .pt2 or TorchScript archive
RESIZES = ("stretch", "centre-crop")
# For a reader of the file who is not resnets: what the numbers mean.
PIXELS = "RGB (or L) scaled to 0..1, then (x - mean) / std per channel; NCHW float32 in, logits out"


@dataclass(frozen=True)
class ModelInfo:
    """How to feed a trained network images and name its outputs."""

    model: str  # the architecture, e.g. resnet20
    dataset: str  # what it was trained on
    input_shape: tuple[int, int, int]  # (C, H, W) the network takes
    mean: tuple[float, ...]  # per channel, on the 0..1 pixel scale
    std: tuple[float, ...]
    classes: tuple[str, ...]  # the label of each output, by index
    resize: str  # "stretch": whole image to H x W; "centre-crop": short side to H/0.875, centre square
    version: str = __version__  # the resnets that wrote the file

    def to_strings(self) -> dict[str, str]:
        """The string map written into an exported file."""
        return {
            "resnets_version": self.version, "model": self.model, "dataset": self.dataset,
            "input_shape": json.dumps(list(self.input_shape)), "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)), "classes": json.dumps(list(self.classes)),
            "resize": self.resize, "pixels": PIXELS,
        }  # fmt: skip

    @classmethod
    def from_strings(cls, props: dict[str, str], where: str) -> ModelInfo:
        """Parse the map read from ``where``; ``ResnetsError`` when it is absent or malformed."""
        if "input_shape" not in props or "classes" not in props:
            raise ResnetsError(
                f"{where} carries no resnets metadata (mean, std, classes); "
                "export it again with this version of `resnets export`"
            )
        try:
            info = cls(
                model=props["model"], dataset=props["dataset"],
                input_shape=tuple(int(n) for n in json.loads(props["input_shape"])),
                mean=tuple(float(v) for v in json.loads(props["mean"])),
                std=tuple(float(v) for v in json.loads(props["std"])),
                classes=tuple(str(c) for c in json.loads(props["classes"])),
                resize=props["resize"], version=props.get("resnets_version", "unknown"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ResnetsError(f"{where} has malformed resnets metadata ({type(e).__name__}: {e})") from None
        _check(info, where)
        return info


def _check(info: ModelInfo, where: str) -> None:
    # A hand-edited or foreign map must fail here, in one line, not deep inside a tensor op.
    problems = []
    if len(info.input_shape) != 3 or min(info.input_shape) < 1:
        problems.append(f"input_shape {list(info.input_shape)} is not (C, H, W)")
    elif not len(info.mean) == len(info.std) == info.input_shape[0]:
        problems.append(f"mean and std need {info.input_shape[0]} values each")
    if any(s <= 0 for s in info.std):
        problems.append("std must be positive")
    if info.resize not in RESIZES:
        problems.append(f"resize {info.resize!r} is not one of {', '.join(RESIZES)}")
    if not info.classes:
        problems.append("no classes")
    if problems:
        raise ResnetsError(f"{where} has malformed resnets metadata: {'; '.join(problems)}")


def run_info(run: Run) -> ModelInfo:
    """The metadata of a run, from its config.json's "resolved" record."""
    resolved: dict[str, Any] = run.resolved
    c, h, w = resolved["image_shape"]
    loader = resolved.get("loader") or {}
    if loader.get("kind") == "stream":
        # Evaluation sees the centre crop at the test size, which may differ from the training size.
        size = int(loader.get("test_size") or h)
        shape, resize = (c, size, size), "centre-crop"
    else:
        shape, resize = (c, h, w), "stretch"
    if shape[1] != shape[2]:
        raise ResnetsError(f"the run's images are {shape[1]}x{shape[2]}; predict supports square ones only")
    classes = resolved.get("classes") or [str(i) for i in range(resolved["num_classes"])]
    info = ModelInfo(
        model=run.config.model, dataset=run.config.dataset, input_shape=shape,
        mean=tuple(resolved["mean"]), std=tuple(resolved["std"]), classes=tuple(classes), resize=resize,
    )  # fmt: skip
    _check(info, str(run.path))
    return info
