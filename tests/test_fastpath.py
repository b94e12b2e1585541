"""The fast path: resolved defaults, inference preparation, EMA, recipes and the benchmark's reference."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_clean_error, run_cli
from safetensors.torch import load_file

from resnets import create_model
from resnets.deploy.export import count_batchnorms
from resnets.deploy.inference import prepare_inference
from resnets.errors import ResnetsError
from resnets.models.complexity import count_params
from resnets.training import TrainConfig, autotune, distributed, train
from resnets.training import precision as precision_mod
from resnets.training.checkpoint import list_checkpoints, load_checkpoint
from resnets.training.ema import make_ema
from resnets.training.precision import resolve_precision

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"


def _fake_timings(monkeypatch: pytest.MonkeyPatch, table: dict[str, float], calls: list, sizing=None) -> None:
    """Replace the trial's stopwatch: seconds per step by candidate, the compiled step's, and the
    sizing steps' (first, warm) seconds by batch (``sizing``)."""

    def fake(model, x, y, precision, device, steps=2, graphs=False, rival=None):
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else "nchw"
        calls.append((precision, layout, steps))
        if hasattr(model, "_orig_mod"):  # the compiled probe: its first call, then warm ones
            return (table["compile_warmup"] if steps == 0 else table["compile"]), table["compile"]
        if steps <= 1:  # sizing: steps=0 times the first step alone, steps=1 a warm one after it
            first, warm = sizing(x.shape[0]) if sizing else (0.01, 0.01)
            return first, (warm if steps else first)
        return table[f"{precision}/{layout}"], table[f"{precision}/{layout}"]

    monkeypatch.setattr(autotune, "step_seconds", fake)


def test_fast_path_is_measured_cached_and_overridable(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    calls: list = []
    table = {"fp32/nchw": 4.0, "fp32/nhwc": 3.0, "bf16/nchw": 2.0, "bf16/nhwc": 2.5}
    _fake_timings(monkeypatch, table, calls)
    model = create_model("resnet20", num_classes=10)
    args = (model, (3, 32, 32), 10, 128, 100)
    fast, record = autotune.tune(TrainConfig(compile=False), *args, CPU)
    assert (fast.precision, fast.channels_last) == ("bf16", False) and not record["cached"]
    assert record["trial"]["seconds_per_step"] == table and len(calls) == 6  # 2 sizing steps + 4 candidates
    cache = json.loads((tmp_path / autotune.CACHE_FILE).read_text())
    assert list(cache) == [record["key"]] and "family" in record["key"] and "resnet20" in record["key"]
    calls.clear()
    again, record = autotune.tune(TrainConfig(compile=False), *args, CPU)
    assert again == fast and record["cached"] and calls == []  # measured once per machine and model
    given, _ = autotune.tune(TrainConfig(compile=False, precision="fp32"), *args, CPU)
    assert (given.precision, given.channels_last) == ("fp32", True)  # the fastest layout in fp32
    fixed, record = autotune.tune(
        TrainConfig(compile=False, precision="fp32", channels_last=False), *args, CPU
    )
    assert (fixed.precision, fixed.channels_last, record["trial"]) == ("fp32", False, None)


def test_the_trial_batch_is_sized_on_a_warm_step_not_the_first(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    table = {"fp32/nchw": 1.0, "fp32/nhwc": 1.0, "bf16/nchw": 0.5, "bf16/nhwc": 0.6}
    model = create_model("resnet20", num_classes=10)

    def trial_batch(sizing) -> int:
        _fake_timings(monkeypatch, table, [], sizing)
        return autotune.run_trial(model, TrainConfig(), (3, 32, 32), 10, 128, CPU).batch

    # one-time costs make the first step 1.5 s where a warm step takes 0.1 s: the batch is kept
    assert trial_batch(lambda b: (1.5, 0.1)) == autotune.TRIAL_MAX_BATCH
    # warm steps over the limit halve it until they fit: 0.8 s at 64, 0.4 s at 32
    assert trial_batch(lambda b: (1.0, 0.8 * b / 64)) == 32
    # a first step of several limits halves it without a warm step; never below 4
    assert trial_batch(lambda b: (10.0 * b / 64, 0.1)) == 8
    assert trial_batch(lambda b: (99.0, 99.0)) == 4


def test_the_compiled_option_with_the_largest_net_saving_wins() -> None:
    fast = autotune.FastPath("fp32", False, False)
    trial = autotune.Trial(64, {"fp32/nchw": 1.0, "compile fp32/nchw": 0.8, "compile fp32/nchw warmup": 30.0})

    def best(steps: float, graphs_allowed: bool = True, at=fast) -> tuple[bool, bool]:
        return autotune.best_compile(trial, 1.0, steps, at, graphs_allowed)

    assert best(100) == (False, False)  # saves 20 s, costs 30
    assert best(1000) == (True, False)  # saves 200 s
    trial.seconds |= {"graphs fp32/nchw": 0.3, "graphs fp32/nchw warmup": 60.0}
    assert best(100) == (True, True)  # 70 - 60 > 0 > 20 - 30
    assert best(1000) == (True, True)  # 640 > 170
    # graphs measured once (a one-GPU run, cached) do not decide where they are not allowed (torchrun)
    assert best(100, graphs_allowed=False) == (False, False) and best(1000, False) == (True, False)
    # figures timed at another precision or layout do not decide either
    assert best(1000, at=autotune.FastPath("bf16", False, False)) == (False, False)
    trial.seconds["graphs fp32/nchw warmup"] = 600.0
    assert best(1000) == (True, False)  # 100 < 170


def test_cuda_graphs_are_timed_on_one_gpu_only_and_kept_on_resume(monkeypatch, tmp_path: Path) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "device_name", lambda device: "Some GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    timed: list[bool] = []

    def fake_compile(model, trial, shape, classes, fast, device, graphs=False):
        timed.append(graphs)
        name = autotune.compiled_name(fast, graphs)
        trial.seconds |= {name: 0.002 if graphs else 0.008, f"{name} warmup": 40.0 if graphs else 20.0}

    monkeypatch.setattr(autotune, "time_compile", fake_compile)
    model = create_model("resnet20", num_classes=10)
    eager = {"fp32/nchw": 0.02, "fp32/nhwc": 0.02, "bf16/nchw": 0.01, "bf16/nhwc": 0.012}

    def tune(world: int = 1, cached: dict | None = None, **settings):
        cfg = TrainConfig(**settings)
        key = autotune._key(cfg, (3, 32, 32), 128, cuda)  # the eager trial as a cache entry: no GPU here
        entry = {"batch": 64, "seconds": eager | (cached or {})}
        (tmp_path / autotune.CACHE_FILE).write_text(json.dumps({key: entry}))
        timed.clear()
        return autotune.tune(cfg, model, (3, 32, 32), 10, 128, 64000, cuda, world)[0]

    # saving per step at batch 128: compile 0.004 s, graphs 0.016 s; over 64k steps both repay their warm-up
    assert tune() == autotune.FastPath("bf16", False, True, True) and timed == [False, True]
    assert tune(world=2) == autotune.FastPath("bf16", False, True, False) and timed == [False]
    assert tune(cuda_graphs=False).graphs is False and timed == [False]
    assert tune(cuda_graphs=True, compile=None) == autotune.FastPath("bf16", False, True, True)
    # cached from a one-GPU run: graphs that pay, compile alone that does not; under torchrun neither
    cached = {"compile bf16/nchw": 0.00999, "compile bf16/nchw warmup": 20.0,
              "graphs bf16/nchw": 0.002, "graphs bf16/nchw warmup": 40.0}  # fmt: skip
    assert tune(world=2, cached=cached) == autotune.FastPath("bf16", False, False, False) and timed == []
    assert tune(cached=cached) == autotune.FastPath("bf16", False, True, True) and timed == []
    saved = {"precision": "bf16", "channels_last": True, "compile": True, "cuda_graphs": True}
    ctx = distributed.Context(device=cuda)

    def resumed(**settings):
        return autotune.choose_fast_path(
            TrainConfig(**settings), model, (3, 32, 32), 10, 128, 10, ctx, saved
        )[0]

    assert resumed() == autotune.FastPath("bf16", True, True, True)  # a resumed run keeps its choice
    assert resumed(compile=False) == autotune.FastPath("bf16", True, False, False)
    ctx = distributed.Context(device=CPU)  # resumed on a CPU: compiled, without graphs
    assert resumed() == autotune.FastPath("bf16", True, True, False)
    ctx = distributed.Context(world=2, device=cuda)  # auto's graphs resumed under torchrun: none
    assert resumed() == autotune.FastPath("bf16", True, True, False)
    assert resumed(cuda_graphs=True) == autotune.FastPath("bf16", True, True, True)  # asked for: kept


def test_a_resume_may_turn_compile_off_or_cuda_graphs_on(tmp_path: Path) -> None:
    from resnets.training.resume import resume_config

    def saved_then_resumed(saved: dict, given: dict) -> TrainConfig:
        (tmp_path / "config.json").write_text(TrainConfig(out=str(tmp_path), **saved).to_json())
        return resume_config({"out": str(tmp_path), **given})

    off = saved_then_resumed({"cuda_graphs": True}, {"compile": False})
    assert (off.compile, off.cuda_graphs) == (False, None)
    on = saved_then_resumed({"compile": False}, {"cuda_graphs": True})
    assert (on.compile, on.cuda_graphs) == (None, True)
    with pytest.raises(ResnetsError, match="cannot go with --no-compile"):
        saved_then_resumed({}, {"compile": False, "cuda_graphs": True})


def test_cuda_graphs_without_a_gpu_or_without_compile_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ResnetsError, match="cannot go with --no-compile"):
        TrainConfig(cuda_graphs=True, compile=False).validate()
    out = tmp_path / "run"
    args = ["--model", "resnet20", "--dataset", "digits", "--iterations", "2", "--device", "cpu"]
    result = run_cli("train", *args, "--cuda-graphs", "--out", str(out))
    assert_clean_error(result, "--cuda-graphs needs a CUDA device")
    assert not out.exists()


def test_compile_is_chosen_where_its_measured_saving_repays_its_warm_up(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "has_compiler", lambda: True)
    table = {"fp32/nchw": 1.0, "fp32/nhwc": 1.0, "bf16/nchw": 0.5, "bf16/nhwc": 0.6,
             "compile": 0.45, "compile_warmup": 60.0}  # fmt: skip
    _fake_timings(monkeypatch, table, [])
    model = create_model("resnet20", num_classes=10)

    def tune(steps: int, **settings):
        return autotune.tune(TrainConfig(**settings), model, (3, 32, 32), 10, 64, steps, CPU)

    short = tune(100)  # 50 s of eager training: a compile could not pay, so it is not even tried
    assert short[0].compile is False and not any(
        k.startswith("compile") for k in short[1]["trial"]["seconds_per_step"]
    )
    assert tune(1000)[0].compile is False  # tried: saves 0.05 s x 1000 = 50 s < 60 s of warm-up
    assert tune(2000)[0].compile is True  # saves 100 s > 60 s
    assert tune(2000, compile=False)[0].compile is False and tune(10, compile=True)[0].compile is True
    assert tune(2000, grad_every=5)[0].compile is False  # gradient hooks need the eager modules


def test_a_compiled_step_that_makes_nan_is_never_chosen(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "has_compiler", lambda: True)
    table = {"fp32/nchw": 1.0, "fp32/nhwc": 1.0, "bf16/nchw": 0.5, "bf16/nhwc": 0.6,
             "compile": 0.1, "compile_warmup": 1.0}  # fmt: skip
    calls: list = []
    _fake_timings(monkeypatch, table, calls)
    timed = autotune.step_seconds

    def poisoned(model, *args, **kw):  # a compiler bug: the compiled step leaves NaN weights
        if hasattr(model, "_orig_mod"):
            next(model.parameters()).data.fill_(float("nan"))
        return timed(model, *args, **kw)

    monkeypatch.setattr(autotune, "step_seconds", poisoned)
    model = create_model("resnet20", num_classes=10)
    fast, record = autotune.tune(TrainConfig(), model, (3, 32, 32), 10, 64, 2000, CPU)
    seconds = record["trial"]["seconds_per_step"]
    assert fast.compile is False and seconds["compile bf16/nchw not finite"] == 1.0  # 10x faster, yet refused
    assert "compile bf16/nchw" not in seconds and torch.isfinite(next(model.parameters())).all()
    calls.clear()
    again, record = autotune.tune(TrainConfig(), model, (3, 32, 32), 10, 64, 2000, CPU)
    assert again.compile is False and record["cached"] and calls == []  # not tried again


@pytest.mark.slow
def test_a_run_records_its_measured_choice_and_a_resume_keeps_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--dataset", "digits", "--batch-size", "32", "--quiet"]
    assert run_cli(*args, "--iterations", "4", "--out", str(run)).returncode == 0
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    seconds = resolved["fast_path"]["trial"]["seconds_per_step"]
    assert set(seconds) == {"fp32/nchw", "fp32/nhwc", "bf16/nchw", "bf16/nhwc"} and min(seconds.values()) > 0
    best = min(seconds, key=seconds.get)
    assert f"{resolved['precision']}/{'nhwc' if resolved['channels_last'] else 'nchw'}" == best
    # Make the other precision look faster in the cache: a resumed run still keeps its own choice.
    cache_file = tmp_path / "cache" / autotune.CACHE_FILE
    cache = json.loads(cache_file.read_text())
    for entry in cache.values():
        entry["seconds"] = {k: (0.001 if not k.startswith(resolved["precision"]) else 9.0) for k in seconds}
    cache_file.write_text(json.dumps(cache))
    assert run_cli("train", "--resume", "--out", str(run), "--iterations", "6", "--quiet").returncode == 0
    after = json.loads((run / "config.json").read_text())["resolved"]
    assert (after["precision"], after["fast_path"]) == (resolved["precision"], resolved["fast_path"])
    fresh = tmp_path / "fresh"  # while a new run reads the cache and follows it
    assert run_cli(*args, "--iterations", "2", "--out", str(fresh)).returncode == 0
    chosen = json.loads((fresh / "config.json").read_text())["resolved"]
    assert chosen["fast_path"]["cached"] and chosen["precision"] != resolved["precision"]


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_recipe_settings_flags_override_and_a_length_replaces_the_other(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli("train", "--recipe", "resnet20-fast", "--dataset", "digits", "--iterations", "2",
                   "--lr", "0.05", "--quiet", "--out", str(run))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"] == "resnet20-fast" and cfg["model"] == "resnet20" and cfg["schedule"] == "onecycle"
    assert cfg["label_smoothing"] == 0.1 and cfg["ema_decay"] == 0.999 and cfg["nesterov"] is True
    assert cfg["lr"] == 0.05 and cfg["iterations"] == 2 and cfg["epochs"] is None  # the flags won
    assert cfg["resolved"]["eval_flip"] is False  # digits are not flipped in training, so not in eval
    assert_clean_error(run_cli("train", "--recipe", "fats"), "unknown recipe 'fats'", "fast")


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18", "resnet50"])
def test_benchmark_reference_is_the_same_network_as_ours(name: str) -> None:
    bench = _load_benchmark()
    ref, ours = bench.TextbookResNet(name, 10), create_model(name, num_classes=10)
    assert count_params(ref) == count_params(ours)
    size = 32 if name in bench.CIFAR else 64
    x = torch.zeros(2, 3, size, size)
    assert bench.infer_flops(ref, x) == bench.infer_flops(ours, x)


def test_inference_precision_is_measured_for_the_served_shape(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    model = create_model("resnet20", num_classes=10).eval()
    fast = prepare_inference(model, precision="auto", input_shape=(3, 32, 32))
    ((key, entry),) = json.loads((tmp_path / autotune.CACHE_FILE).read_text()).items()
    assert "inference" in key and "[3, 32, 32]" in key and set(entry["seconds"]) == {"fp32", "bf16"}
    assert fast.precision == min(entry["seconds"], key=entry["seconds"].get)
    assert prepare_inference(model, precision="fp32", input_shape=(3, 32, 32)).precision == "fp32"


FORWARDS: dict[str, list[int]] = {"fp32": [], "bf16": []}  # batch of each call, by precision


class _SlowInBf16(torch.nn.Module):
    """A linear net whose forward sleeps 10 ms an image in fp32 and 50 ms in bf16 (as bf16 on an AVX2 CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        FORWARDS["bf16" if bf16 else "fp32"].append(len(x))
        time.sleep((0.05 if bf16 else 0.01) * len(x))
        return self.fc(x.flatten(1))


def test_a_candidate_that_has_lost_is_not_timed_again_and_inference_is_timed_on_fewer_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    for calls in FORWARDS.values():
        calls.clear()
    net = _SlowInBf16()
    trial = autotune.run_trial(net, TrainConfig(channels_last=False), (3, 4, 4), 10, 4, CPU)
    assert trial.best([("fp32", False), ("bf16", False)]) == ("fp32", False)
    # fp32: three sizing steps and its own three; bf16: a first step, one warm step 5x slower, no more
    assert FORWARDS == {"fp32": [4] * 6, "bf16": [4, 4]}
    for calls in FORWARDS.values():
        calls.clear()
    precision, entry = autotune.inference_precision(net.eval(), (3, 4, 4), CPU, False)
    # 64 images took 0.64 s, over the 0.5 s a trial call may take: 32 from then on, bf16 given up early
    assert precision == "fp32" and entry["batch"] == 32
    assert FORWARDS == {"fp32": [64, 32, 32, 32], "bf16": [32, 32]}


def test_a_run_records_the_machine_it_started_on_and_a_resume_keeps_it() -> None:
    from resnets.training.setup import started_on

    here = autotune.device_name(CPU)
    assert started_on(None, CPU) == here and "family" in here  # a fresh run: this machine, named
    assert started_on({"machine": "NVIDIA H200"}, CPU) == "NVIDIA H200"  # resumed elsewhere: its first
    old = {"fast_path": {"key": "AMD EPYC (family 25, model 1) | torch 2.13.0+cpu | threads 2"}}
    assert started_on(old, CPU) == "AMD EPYC (family 25, model 1)"  # recorded before "machine" was
    assert started_on({"fast_path": {"trial": None}}, CPU) == here  # nothing recorded: this one


def test_the_step_profile_counts_every_flop_but_the_classifiers_as_convolution(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # step_profile imports throughput as a sibling
    spec = importlib.util.spec_from_file_location("step_profile", ROOT / "benchmarks" / "step_profile.py")
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    conv, total = profile.conv_flops("resnet20", 2)
    # The 64 -> 10 classifier's forward, input gradient and weight gradient: 3 x 2 x batch x 64 x 10.
    assert total - conv == 3 * 2 * 2 * 64 * 10
    assert [profile.category(n) for n in ("aten::convolution_backward", "aten::mkldnn_convolution",
            "aten::_slow_conv2d_forward", "aten::native_batch_norm_backward", "aten::add_",
            "Optimizer.step#SGD.step", "autograd::engine::evaluate_function: ConvolutionBackward0")] == [
        "conv backward", "conv forward", "conv forward", "BatchNorm", "other", "", "",
    ]  # fmt: skip
