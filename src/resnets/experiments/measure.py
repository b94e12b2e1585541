"""Train one model of a study and measure it: errors, gradient flow, responses, signal.

Shared by the depth study and the remedies study. The measurements are cached in the run
folder (``diagnostics.json``), so a killed study resumes where it stopped. A run whose loss
became NaN is a result too: its diagnostics say where it diverged, its errors are NaN, and
the measurements at initialisation are kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, TensorLoader
from ..diagnostics import gradient_norms, layer_responses, signal_propagation
from ..errors import ResnetsError
from ..io import atomic_write_text
from ..models import count_params
from ..training import TrainConfig, evaluate, train
from ..training.build import build_model
from ..training.checkpoint import WEIGHTS_FILE, list_checkpoints
from ..training.errors import Diverged
from ..training.rundir import CONFIG_FILE, METRICS_FILE
from ..training.runs import load_run

DIAGNOSTICS_FILE = "diagnostics.json"
PROBE_BATCH = 128
NAN = float("nan")


def probe_batches(data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed, un-augmented training batch (gradients) and test batch (responses)."""
    train_ = TensorLoader(data.train, PROBE_BATCH, data.mean, data.std, device)
    test = TensorLoader(data.test, PROBE_BATCH, data.mean, data.std, device)
    (x, y), (xt, _) = next(iter(train_)), next(iter(test))
    return x, y, xt


def finished(run_dir: Path) -> bool:
    """True when the run and its diagnostics are complete (trained, or diverged)."""
    path = run_dir / DIAGNOSTICS_FILE
    if not path.exists():
        return False
    return (run_dir / WEIGHTS_FILE).exists() or bool(_read(path).get("diverged"))


def check_recipe(run_dir: Path, recipe: TrainConfig) -> None:
    """Refuse a model folder whose run was made with another recipe, naming the setting."""
    if not (run_dir / CONFIG_FILE).exists():
        return
    saved = json.loads(TrainConfig.load(run_dir / CONFIG_FILE).to_json())
    for key, value in json.loads(recipe.to_json()).items():
        if key not in ("device", "data_dir", "out") and saved.get(key) != value:
            raise ResnetsError(
                f"{run_dir} was trained with {key}={saved.get(key)!r}, not {value!r}; "
                "a study keeps its recipe: use another --out for new settings"
            )


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResnetsError(f"{path} is damaged ({type(e).__name__}); remove it to measure again") from None


def train_and_measure(
    recipe: TrainConfig, data: Dataset, device: torch.device, progress: bool
) -> dict[str, Any]:
    """Train ``recipe`` (resuming a partial run) and measure it; the cached numbers if done."""
    run_dir = Path(recipe.out)
    check_recipe(run_dir, recipe)
    if finished(run_dir):
        return _read(run_dir / DIAGNOSTICS_FILE)
    x, y, xt = probe_batches(data, device)
    fresh = build_model(recipe, data).to(device)  # the same seeded init the run starts from
    layers, grad_init = gradient_norms(fresh, x, y)
    sig = signal_propagation(fresh, x)
    at_init = {
        "params": count_params(fresh), "layers": layers, "grad_init": grad_init,
        "signal_variance": sig.variance, "signal_branch_variance": sig.branch_variance,
    }  # fmt: skip
    del fresh
    if not (run_dir / WEIGHTS_FILE).exists():  # else trained already; only diagnostics missing
        resume = bool(list_checkpoints(run_dir))
        try:
            train(recipe, resume=resume, progress=progress)
        except Diverged as e:
            diag = {**at_init, "diverged": str(e), "train_error": NAN, "test_error": NAN,
                    "train_loss": NAN, "test_loss": NAN, "grad_final": [], "response_layers": [],
                    "responses": []}  # fmt: skip
            atomic_write_text(run_dir / DIAGNOSTICS_FILE, json.dumps(diag) + "\n")
            return diag
    # Always measured on the saved weights, so a resumed study measures exactly what a fresh
    # one did (the in-memory model's channels-last layout shifts bf16 results slightly).
    # Train mode, as at initialisation: the gradients are measured with batch statistics.
    model = load_run(run_dir, device).model.train()
    _, grad_final = gradient_norms(model, x, y)
    response_layers, responses = layer_responses(model, xt)
    train_loader = TensorLoader(data.train, 512, data.mean, data.std, device)
    test_loader = TensorLoader(data.test, 512, data.mean, data.std, device)
    train_loss, train_error = evaluate(model, train_loader, recipe.precision)
    test_loss, test_error = evaluate(model, test_loader, recipe.precision)
    diag = {
        **at_init, "diverged": None, "train_error": train_error, "test_error": test_error,
        "train_loss": train_loss, "test_loss": test_loss, "grad_final": grad_final,
        "response_layers": response_layers, "responses": responses,
    }  # fmt: skip
    atomic_write_text(run_dir / DIAGNOSTICS_FILE, json.dumps(diag) + "\n")
    return diag


def curves(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl rows (none for a run that diverged before its first evaluation)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finite_or_none(x: float) -> float | None:
    """NaN (a diverged run's error) as JSON's null."""
    return x if isinstance(x, int | float) and math.isfinite(x) else None
