"""The fast path: resolved defaults, inference preparation, EMA, recipes and the benchmark's reference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_clean_error, run_cli
from safetensors.torch import load_file

from resnets import create_model
from resnets.deploy.export import count_batchnorms
from resnets.deploy.inference import prepare_inference
from resnets.models.complexity import count_params
from resnets.training import TrainConfig, train
from resnets.training import precision as precision_mod
from resnets.training import step as step_mod
from resnets.training.checkpoint import list_checkpoints, load_checkpoint
from resnets.training.ema import make_ema
from resnets.training.precision import resolve_precision
from resnets.training.step import resolve_fast_path

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"


def test_auto_compile_only_for_long_runs_on_small_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_mod, "has_compiler", lambda: True)
    cfg = TrainConfig()
    assert resolve_fast_path(cfg, CPU, images=2_000_000, pixels=32 * 32).compile
    assert not resolve_fast_path(cfg, CPU, images=20_000, pixels=32 * 32).compile  # warm-up would not pay
    assert not resolve_fast_path(cfg, CPU, images=2_000_000, pixels=224 * 224).compile  # measured no gain
    assert not resolve_fast_path(TrainConfig(grad_every=5), CPU, 2_000_000).compile  # hooks need eager
    assert resolve_fast_path(TrainConfig(compile=True), CPU, images=10).compile  # asked for: done
    assert not resolve_fast_path(TrainConfig(compile=False), CPU, images=10**9).compile
    monkeypatch.setattr(step_mod, "has_compiler", lambda: False)
    assert not resolve_fast_path(cfg, CPU, images=2_000_000).compile


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "resnet18"])
def test_prepared_inference_matches_the_model_and_leaves_it_untouched(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    for m in model.modules():  # non-trivial BN statistics, so folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    exact = prepare_inference(model, precision="fp32")
    fast = prepare_inference(model, precision="bf16")
    with torch.inference_mode():
        got, got_bf16 = exact(x), fast(x)
    assert count_batchnorms(exact.net) == 0 or name.startswith(
        "preact"
    )  # pre-activation BN has no conv before it
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got_bf16 - want).abs().max() < 0.05 * want.abs().max() + 0.05  # bf16: ~3 significant digits
    assert got_bf16.dtype == torch.float32
    assert count_batchnorms(model) > 0 and model.training is False  # the original is unchanged


def test_ema_follows_early_weights_then_holds_its_decay() -> None:
    layer = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(layer, 0.999)

    def step(value: float) -> float:
        with torch.no_grad():
            layer.weight.fill_(value)
        ema.update_parameters(layer)
        return ema.module.weight.item()

    assert step(0.0) == 0.0  # the first update copies the weights
    for _ in range(10):
        early = step(1.0)
    # Warmed up, the average has nearly caught up after 10 steps (a plain 0.999 average: 0.01).
    assert 0.9 < early < 1.0
    ema.n_averaged.fill_(100_000)
    late = step(2.0)
    assert late - early == pytest.approx((2.0 - early) * 0.001, rel=1e-4)  # the full decay, 0.999
    assert abs(late - 1.0) < 0.1


def test_ema_run_saves_the_average_not_the_last_weights(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="digits", iterations=12, batch_size=64, ema_decay=0.9, checkpoint_every=12,
                      precision="fp32", out=str(tmp_path / "run"))  # fmt: skip
    train(cfg, progress=False)
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[0])
    saved = load_file(tmp_path / "run" / "model.safetensors")
    key = "fc.weight"
    assert torch.equal(saved[key], state["ema"][f"module.{key}"])
    assert not torch.equal(saved[key], state["model"][key])  # the raw weights differ from their average
    assert int(state["ema"]["n_averaged"]) == 12


def test_recipe_settings_flags_override_and_a_length_replaces_the_other(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli("train", "--recipe", "fast", "--dataset", "digits", "--iterations", "2", "--lr", "0.05",
                   "--quiet", "--out", str(run))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"] == "fast" and cfg["model"] == "resnet20" and cfg["schedule"] == "onecycle"
    assert cfg["label_smoothing"] == 0.1 and cfg["ema_decay"] == 0.999 and cfg["nesterov"] is True
    assert cfg["lr"] == 0.05 and cfg["iterations"] == 2 and cfg["epochs"] is None  # the flags won
    assert cfg["resolved"]["eval_flip"] is False  # digits are not flipped in training, so not in eval
    assert_clean_error(run_cli("train", "--recipe", "fats"), "unknown recipe 'fats'", "fast")


def test_config_file_reruns_a_run_with_flags_on_top(tmp_path: Path) -> None:
    first = tmp_path / "first"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--iterations",
        "3",
        "--batch-size",
        "48",
        "--lr",
        "0.07",
        "--quiet",
    ]
    assert run_cli(*argv, "--out", str(first)).returncode == 0
    again = tmp_path / "again"
    proc = run_cli(
        "train", "--config", str(first / "config.json"), "--out", str(again), "--seed", "4", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    b = json.loads((again / "config.json").read_text())
    assert (b["batch_size"], b["lr"], b["iterations"], b["seed"]) == (48, 0.07, 3, 4)
    (tmp_path / "bad.json").write_text('{"lr": "fast"}')
    assert_clean_error(run_cli("train", "--config", str(tmp_path / "bad.json")), "bad.json", "lr")


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18", "resnet50"])
def test_benchmark_reference_is_the_same_network_as_ours(name: str) -> None:
    bench = _load_benchmark()
    ref, ours = bench.TextbookResNet(name, 10), create_model(name, num_classes=10)
    assert count_params(ref) == count_params(ours)
    size = 32 if name in bench.CIFAR else 64
    x = torch.zeros(2, 3, size, size)
    assert bench.infer_flops(ref, x) == bench.infer_flops(ours, x)
