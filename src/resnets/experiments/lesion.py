"""The lesion study (Veit, Wilber, Belongie 2016): delete blocks of a trained net, measure test error.

Deleting block i of a residual net keeps its shortcut and drops its branch F(x): the signal
still reaches the next block. A plain net has no shortcut to fall back on; its deleted block
passes its input on unchanged, which is possible only where the block keeps the shape (the
first block of each stage cannot be deleted). A residual net behaves like an ensemble of
shallower paths and barely notices one missing block; a plain net does not survive it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..data import TensorLoader
from ..errors import ResnetsError
from ..io import atomic_write_text
from ..models.contract import Network, ResidualUnit, deletable
from ..training.evaluate import evaluate

LESION_FILE = "lesion.json"


@dataclass
class LesionResult:
    """Test error of one trained model with blocks deleted."""

    model: str
    residual: bool
    baseline_error: float
    single: list[float | None]  # error with block i deleted; None where it cannot be deleted
    random_k: list[dict[str, float]] = field(default_factory=list)  # k, mean, sd and max error of draws
    draws: int = 0  # random sets drawn per k (0: a file from before this was recorded)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lesion.json)."""
        return asdict(self)

    def deletable(self) -> list[int]:
        """The blocks that could be deleted."""
        return [i for i, e in enumerate(self.single) if e is not None]


def blocks_of(model: nn.Module) -> list[ResidualUnit]:
    """The model's blocks, each able to say what it computes without its branch (``lesioned``)."""
    blocks = model.blocks() if isinstance(model, Network) else []
    if not blocks:
        raise ResnetsError("the lesion study needs a resnets model whose blocks can be deleted")
    return blocks


@contextlib.contextmanager
def deleted(blocks: Sequence[ResidualUnit], indices: Sequence[int]) -> Iterator[None]:
    """Blocks ``indices`` compute their lesioned output while the body runs."""
    chosen = [blocks[i] for i in indices]
    for block in chosen:
        block.forward = block.lesioned  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield
    finally:
        for block in chosen:
            del block.forward


def lesion(
    name: str, model: nn.Module, residual: bool, loader: TensorLoader, precision: str = "fp32",
    draws: int = 10, max_k: int | None = None, seed: int = 0,
) -> LesionResult:  # fmt: skip
    """Delete each block in turn, then k random blocks (k = 1..max_k, ``draws`` sets each)."""
    model.eval()
    blocks = blocks_of(model)
    ok = [deletable(b) for b in blocks]
    _, base = evaluate(model, loader, precision)
    single: list[float | None] = []
    for i in range(len(blocks)):
        if not ok[i]:
            single.append(None)
            continue
        with deleted(blocks, [i]):
            single.append(evaluate(model, loader, precision)[1])
    candidates = [i for i in range(len(blocks)) if ok[i]]
    rng = random.Random(seed)
    random_k = []
    for k in range(1, min(max_k or len(candidates), len(candidates)) + 1):
        errors = []
        for _ in range(draws):
            with deleted(blocks, rng.sample(candidates, k)):
                errors.append(evaluate(model, loader, precision)[1])
        sd = statistics.stdev(errors) if len(errors) > 1 else 0.0
        random_k.append({"k": k, "mean": statistics.fmean(errors), "sd": sd, "max": max(errors)})
    return LesionResult(name, residual, base, single, random_k, draws)


def lesion_verdict(lesions: Sequence[LesionResult]) -> list[str]:
    """What the numbers say: how much one deleted block costs each net."""
    lines = []
    for r in lesions:
        errs = [r.single[i] for i in r.deletable()]
        if not errs:
            continue
        worst, typical = max(errs), statistics.median(errs)
        lines.append(
            f"**{r.model}** ({'residual' if r.residual else 'plain'}): {100 * r.baseline_error:.2f}% test "
            f"error intact; one block deleted: median {100 * typical:.2f}%, worst {100 * worst:.2f}% "
            f"over {len(errs)} deletable blocks."
        )
        if r.random_k and r.draws:
            first, last = r.random_k[0], r.random_k[-1]
            lines.append(
                f"**{r.model}**, k random blocks deleted ({r.draws} draws per k): mean "
                f"{100 * first['mean']:.2f}% at k = {first['k']:g} to {100 * last['mean']:.2f}% at k = "
                f"{last['k']:g}; the mean rises at {_rises(r.random_k)} of {len(r.random_k) - 1} steps of k."
            )
    return lines


def _rises(random_k: Sequence[dict[str, float]]) -> int:
    return sum(b["mean"] > a["mean"] for a, b in itertools.pairwise(random_k))


def lesion_run(
    run_dir: str | Path, device: Any = "cpu", precision: str = "fp32", draws: int = 10,
    max_k: int | None = None, seed: int = 0,
) -> LesionResult:  # fmt: skip
    """The lesion study of one run directory, on its own dataset's test split."""
    from ..data import load_dataset
    from ..models import get_spec
    from ..training.runs import load_run

    run = load_run(run_dir, device)
    cfg = run.config
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
    loader = TensorLoader(data.test, 500, run.resolved["mean"], run.resolved["std"], device)
    return lesion(cfg.model, run.model, get_spec(cfg.model).residual, loader, precision, draws, max_k, seed)


def study_lesions(out: Path, runs: Sequence[Path], **options: Any) -> list[LesionResult]:
    """A study's lesion results, cached in ``out/lesion.json`` (measured again if models or draws differ)."""
    path = out / LESION_FILE
    names = [Path(r).name for r in runs]
    if path.exists():
        try:
            saved = [LesionResult(**d) for d in json.loads(path.read_text())]
            if [s.model for s in saved] == names and all(s.draws == options.get("draws", 10) for s in saved):
                return saved
        except (ValueError, TypeError):
            pass  # damaged or from another version: measure again
    results = [lesion_run(r, **options) for r in runs]
    save_lesions(results, out)
    return results


def save_lesions(results: Sequence[LesionResult], out: Path) -> Path:
    """Write ``out/lesion.json`` (one object per run), atomically; returns its path."""
    path = out / LESION_FILE
    atomic_write_text(path, json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    return path
