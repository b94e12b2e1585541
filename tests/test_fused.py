"""Members trained together (training/fused.py): each one's SGD, files and resume as its run alone."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from resnets.data import TensorLoader, load_dataset
from resnets.errors import ResnetsError
from resnets.training import TrainConfig, train
from resnets.training.build import seeded_model
from resnets.training.errors import Diverged
from resnets.training.fused import Stack, step_together, train_together, unfusable
from resnets.training.optim import make_optimizer

BASE = TrainConfig(model="resnet20", dataset="digits", batch_size=32, precision="fp32", channels_last=False,
                   compile=False, weight_decay=5e-4, model_options={"shortcut": "A"})  # fmt: skip


def _members(base: TrainConfig, out: Path, *settings: tuple[float, float, int]) -> list[TrainConfig]:
    return [dataclasses.replace(base, lr=lr, weight_decay=wd, seed=seed, out=str(out / f"m{i}"))
            for i, (lr, wd, seed) in enumerate(settings)]  # fmt: skip


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest difference of any tensor, relative to that tensor's largest value."""
    assert a.keys() == b.keys()
    return max(
        ((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max().clamp_min(1e-12)).item()
        for k in a
        if a[k].is_floating_point()
    )


@pytest.mark.slow
@pytest.mark.parametrize(("model", "nesterov"), [("resnet20", True), ("plain20", False)])
def test_a_fused_step_is_each_members_own_sgd_step(model: str, nesterov: bool) -> None:
    # In float64, where rounding grows far less (from 1e-16 to ~1e-9 here, against ~1e-1 in fp32):
    # 12 steps of three members, each at its own lr, decay and seed on its own batches, equal
    # torch.optim.SGD on each net alone. A wrong momentum, decay or lr would be off by ~1e-3.
    settings = [(0.05, 5e-4, 0), (0.1, 1e-4, 1), (0.2, 0.0, 2)]
    options = BASE.model_options if model.startswith("resnet") else {}
    cfgs = [dataclasses.replace(BASE, model=model, lr=lr, weight_decay=wd, seed=s, nesterov=nesterov,
                                model_options=options) for lr, wd, s in settings]  # fmt: skip
    data = load_dataset("digits")
    shape = tuple(data.image_shape)
    models = [seeded_model(c, data.num_classes, shape).double() for c in cfgs]
    optimizers = [make_optimizer(m, c, torch.device("cpu")) for m, c in zip(models, cfgs, strict=True)]
    stack = Stack(
        [SimpleNamespace(model=m, optimizer=o) for m, o in zip(models, optimizers, strict=True)], cfgs
    )
    loaders = [
        TensorLoader(data.train, 32, data.mean, data.std, "cpu", train=True, seed=c.seed) for c in cfgs
    ]
    streams = [iter(loader) for loader in loaders]
    for _ in range(12):
        batches = [next(s) for s in streams]
        xs = torch.stack([x for x, _ in batches]).double()
        ys = torch.stack([y for _, y in batches])
        lrs = torch.tensor([c.lr for c in cfgs], dtype=torch.float64)
        sums = step_together(stack, xs, ys, lrs, 0.0, "fp32")
        for i, (m, o, c) in enumerate(zip(models, optimizers, cfgs, strict=True)):
            for group in o.param_groups:
                group["lr"] = c.lr * group.get("lr_scale", 1.0)
            loss = F.cross_entropy(m(xs[i]), ys[i])
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
            assert sums[i, 0].item() / 32 == pytest.approx(loss.item(), rel=1e-7)
    for i, (m, o) in enumerate(zip(models, optimizers, strict=True)):
        copy = seeded_model(cfgs[i], data.num_classes, shape).double()
        twin = SimpleNamespace(model=copy, optimizer=make_optimizer(copy, cfgs[i], torch.device("cpu")))
        stack.write_back(i, twin)
        assert _worst(copy.state_dict(), m.state_dict()) < 1e-7
        theirs = [o.state[p]["momentum_buffer"] for p in m.parameters()]
        ours = [twin.optimizer.state[p]["momentum_buffer"] for p in copy.parameters()]
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) < 1e-7


@pytest.mark.slow
def test_members_trained_together_are_their_runs_alone_in_files_and_figures(tmp_path: Path) -> None:
    # fp32 training amplifies rounding: the same run on 1 and on 2 threads, or in the other memory
    # layout, ends up to ~1e-2 apart in some BN shifts after 4 steps at lr 0.02 on digits. A fused
    # member (a grouped convolution sums in another order) is held to that: no further from its run
    # alone than the run is from itself summed in another order. How far the thread count moves a
    # run depends on the CPU's kernels (3.5e-4 on an AVX2-only EPYC, where the fused member ended
    # 4.7e-3 away), so the layout's change, another kernel altogether, is measured too. The step's
    # arithmetic is held to float64 above.
    base = dataclasses.replace(BASE, iterations=4, eval_every=2, val_split=100)
    cfgs = _members(base, tmp_path / "sweep", (0.01, 5e-4, 0), (0.02, 1e-4, 1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        results = train_together(cfgs, progress=False)
        for cfg, result in zip(cfgs, results, strict=True):
            assert not isinstance(result, Diverged) and result.finished and result.steps == 4
            runs = {}
            for n, layout in ((1, False), (2, False), (1, True)):
                torch.set_num_threads(n)
                runs[n, layout] = train(
                    dataclasses.replace(cfg, channels_last=layout,
                                        out=str(tmp_path / f"alone-{cfg.seed}-{n}-{layout}")),
                    progress=False,
                )  # fmt: skip
            ours, theirs = Path(cfg.out), runs[1, False].run_dir
            weights = load_file(theirs / "model.safetensors")
            noise = max(_worst(load_file(runs[k].run_dir / "model.safetensors"), weights)
                        for k in ((2, False), (1, True)))  # fmt: skip
            fused = _worst(load_file(ours / "model.safetensors"), load_file(theirs / "model.safetensors"))
            assert fused <= max(2 * noise, 1e-4), (fused, noise)
            rows = [json.loads(x) for x in (ours / "metrics.jsonl").read_text().splitlines()]
            their_rows = [json.loads(x) for x in (theirs / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in rows] == [r["step"] for r in their_rows] == [2, 4]
            assert rows[0].keys() == their_rows[0].keys()
            for key in ("train_loss", "test_loss", "val_loss"):
                assert rows[-1][key] == pytest.approx(their_rows[-1][key], rel=1e-3)
            alone = runs[1, False].metrics["test_error"]
            assert result.metrics["test_error"] == pytest.approx(alone, abs=0.01)
            config, their_config = (json.loads((p / "config.json").read_text()) for p in (ours, theirs))
            config.pop("out"), their_config.pop("out")
            assert config == their_config
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_stopped_and_resumed_together_is_exactly_the_unstopped_run(tmp_path: Path) -> None:
    base = dataclasses.replace(BASE, model="plain20", iterations=6, eval_every=3, model_options={})
    straight = train_together(_members(base, tmp_path / "a", (0.05, 5e-4, 0), (0.1, 0.0, 1)), progress=False)
    stopped = _members(base, tmp_path / "b", (0.05, 5e-4, 0), (0.1, 0.0, 1))
    halfway = train_together(stopped, progress=False, until=3)
    assert [r.steps for r in halfway] == [3, 3] and not any(r.finished for r in halfway)
    # A member is a run: it goes on alone from the checkpoint written together.
    copy = tmp_path / "c"
    shutil.copytree(stopped[0].out, copy)
    alone = train(dataclasses.replace(stopped[0], out=str(copy)), resume=True, progress=False)
    assert alone.finished and alone.steps == 6
    resumed = train_together(stopped, resume=True, progress=False)
    for a, b in zip(straight, resumed, strict=True):
        wa, wb = load_file(a.run_dir / "model.safetensors"), load_file(b.run_dir / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert (a.run_dir / "metrics.jsonl").read_text().count("\n") == 2
        lines = [json.loads(x) for x in (b.run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == [3, 6]


@pytest.mark.slow
def test_a_diverging_member_is_reported_and_the_other_finishes(tmp_path: Path) -> None:
    base = dataclasses.replace(BASE, model="plain20", iterations=6, eval_every=3, model_options={})
    cfgs = _members(base, tmp_path, (0.05, 5e-4, 0), (1e6, 5e-4, 1))
    good, bad = train_together(cfgs, progress=False)
    assert isinstance(bad, Diverged) and 1 <= bad.step <= 6
    assert not (Path(cfgs[1].out) / "model.safetensors").exists()
    assert not isinstance(good, Diverged) and good.finished
    # Nothing of the diverged member reaches the other: beside a healthy member it is the same, bit for bit.
    beside = _members(base, tmp_path / "healthy", (0.05, 5e-4, 0), (0.1, 5e-4, 1))
    same, _ = train_together(beside, progress=False)
    ours, theirs = (
        load_file(good.run_dir / "model.safetensors"),
        load_file(same.run_dir / "model.safetensors"),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert good.metrics["train_loss"] == same.metrics["train_loss"]


def test_what_would_change_a_member_is_not_fused() -> None:
    cfgs = _members(BASE, Path("/tmp/unused"), (0.05, 5e-4, 0), (0.1, 5e-4, 1))
    assert unfusable(cfgs) is None
    assert unfusable(cfgs[:1]) == "one member"
    assert "differ" in unfusable([cfgs[0], dataclasses.replace(cfgs[1], model="plain20")])
    for change, word in (({"ema_decay": 0.99}, "--ema"), ({"optimizer": "adamw"}, "--opt adamw"),
                         ({"accumulate": 2}, "--accumulate"), ({"bn_group": 16}, "--bn-group"),
                         ({"mixup": 0.2}, "--mixup"), ({"cutmix": 1.0}, "--cutmix")):  # fmt: skip
        assert word in unfusable([dataclasses.replace(c, **change) for c in cfgs])


def test_random_layers_are_refused_before_any_step(tmp_path: Path) -> None:
    base = dataclasses.replace(BASE, iterations=2, model_options={"shortcut": "A", "drop_path": 0.1})
    with pytest.raises(ResnetsError, match="stochastic depth"):
        train_together(_members(base, tmp_path, (0.05, 5e-4, 0), (0.1, 5e-4, 1)), progress=False)


@pytest.mark.slow
def test_a_sweep_searches_and_seeds_its_members_fused(tmp_path: Path) -> None:
    from resnets.experiments.sweep import SweepConfig, run_sweep

    base = TrainConfig(model="plain20", dataset="digits", batch_size=64, epochs=2, precision="fp32",
                       channels_last=False, compile=False, val_split=200, schedule="onecycle")  # fmt: skip
    cfg = SweepConfig(base, [0.01, 0.05, 0.2, 0.8], [5e-4], [0, 1], out=str(tmp_path / "s"), prune="halving",
                      fuse="yes")  # fmt: skip
    said: list[str] = []
    result = run_sweep(cfg, progress=False, log=said.append)
    assert result.complete and any("fused" in line for line in said)
    assert json.loads((tmp_path / "s" / "workers.json").read_text())["fused"] is True
    assert "fused" in json.loads((tmp_path / "s" / "sweep.json").read_text())["mechanism"]
    rows = {r["member"]: r for r in result.rows}
    assert sum(r["status"] == "pruned" for r in rows.values()) == 3
    chosen = result.chosen
    assert chosen is not None and chosen["seeds"] == 2
    for seed in (0, 1):
        member = tmp_path / "s" / f"lr{chosen['lr']:g}_wd0.0005_seed{seed}"
        assert rows[member.name]["status"] == "done" and (member / "model.safetensors").exists()


def test_fusion_is_measured_on_a_gpu_and_not_on_a_cpu(monkeypatch, tmp_path: Path) -> None:
    from resnets.experiments import sweep_fusion

    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    cfgs = _members(BASE, tmp_path, (0.05, 5e-4, 0), (0.1, 5e-4, 1), (0.2, 5e-4, 2))
    calls = []

    def fake(base, n, shape, classes, device):
        calls.append(n)
        return {
            "members": n,
            "alone_steps_per_s": 10.0,
            "fused_steps_per_s": 8.0 if base.model == "resnet20" else 3.0,
        }

    monkeypatch.setattr(sweep_fusion, "measure", fake)
    shape = (1, 16, 16)
    assert sweep_fusion.choose_fusion(BASE, cfgs, shape, 10, "auto")["fused"] is False  # a CPU: no trial
    assert sweep_fusion.choose_fusion(BASE, cfgs, shape, 10, "yes")["fused"] is True
    assert calls == []
    monkeypatch.setattr(sweep_fusion, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(sweep_fusion, "device_name", lambda device: "a GPU")
    decision = sweep_fusion.choose_fusion(BASE, cfgs, shape, 10, "auto")
    assert decision["fused"] is True and "2.40x" in decision["why"]  # 3 members x 8 / 10
    assert sweep_fusion.choose_fusion(BASE, cfgs, shape, 10, "auto")["fused"] is True
    assert calls == [3]  # the second sweep reads the cached trial
    plain = [dataclasses.replace(c, model="plain20", model_options={}) for c in cfgs]
    assert sweep_fusion.choose_fusion(plain[0], plain, shape, 10, "auto")["fused"] is False  # 0.9x
    assert sweep_fusion.choose_fusion(BASE, cfgs, shape, 10, "no")["why"] == "--fuse no"
    ema = [dataclasses.replace(c, ema_decay=0.9) for c in cfgs]
    assert "--ema" in sweep_fusion.choose_fusion(ema[0], ema, shape, 10, "yes")["why"]
