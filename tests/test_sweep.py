"""`resnets sweep`: members equal to their own runs, divergence masked, halving, shards, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD, assert_clean_error, run_cli
from safetensors.torch import load_file

from resnets.experiments.halving import promote, rungs, work
from resnets.experiments.sweep import Member, SweepConfig, collect, run_sweep
from resnets.io import exclusive
from resnets.io.lock import FolderBusy
from resnets.training import TrainConfig
from resnets.training.checkpoint import list_checkpoints

SMALL = ["--dataset", "digits", "--batch-size", "32", "--precision", "fp32", "--no-channels-last", "--quiet"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            scale = a[k].abs().max().clamp_min(1e-12)
            assert (a[k] - b[k]).abs().max() <= 1e-5 * scale, k
        else:
            assert torch.equal(a[k], b[k]), k


def _rows(out: Path) -> dict[str, dict]:
    return {r["member"]: r for r in json.loads((out / "sweep.json").read_text())["members"]}


@pytest.mark.slow
@pytest.mark.parametrize(("model", "processes"), [("resnet20", "1"), ("plain20", "1"), ("resnet20", "2")])
def test_member_equals_the_same_settings_trained_alone(tmp_path: Path, model: str, processes: str) -> None:
    # The second member is trained after the first in the same process: nothing may leak between
    # them. With two processes each trains with one thread, as `OMP_NUM_THREADS=1 resnets train`.
    common = ["--model", model, *SMALL, "--iterations", "20", "--eval-every", "10", "--lr"]
    if model.startswith("resnet"):
        common = ["--shortcut", "A", *common]
    sweep = run_cli("sweep", *common, "0.05", "0.2", "--weight-decay", "5e-4", "--processes", processes,
                    "--out", str(tmp_path / "s"))  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if processes == "2" else None
    alone = run_cli(
        "train", *common, "0.2", "--weight-decay", "5e-4", "--out", str(tmp_path / "alone"), env=env
    )
    assert alone.returncode == 0, alone.stderr
    workers = json.loads((tmp_path / "s" / "workers.json").read_text())
    assert workers["processes"] == int(processes)
    member = tmp_path / "s" / "lr0.2_wd0.0005_seed0"
    _assert_close(_weights(member), _weights(tmp_path / "alone"))
    ours = json.loads((member / "config.json").read_text())
    theirs = json.loads((tmp_path / "alone" / "config.json").read_text())
    ours.pop("out"), theirs.pop("out")
    assert ours["lr"] == theirs["lr"] == 0.2
    assert {k: v for k, v in ours.items() if k != "resolved"} == {
        k: v for k, v in theirs.items() if k != "resolved"
    }
    rows = _rows(tmp_path / "s")
    assert set(rows) == {"lr0.05_wd0.0005_seed0", "lr0.2_wd0.0005_seed0"}
    assert rows["lr0.05_wd0.0005_seed0"]["lr"] == 0.05 and rows["lr0.2_wd0.0005_seed0"]["status"] == "done"
    if processes == "2":
        return
    # The other commands take a member as the run it is.
    evaluated = run_cli("eval", "--run", str(member), "--json", "--precision", "fp32")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["error"] == pytest.approx(rows["lr0.2_wd0.0005_seed0"]["test_error"])
    assert (tmp_path / "s" / "report.html").stat().st_size > 10_000  # figures inlined


@pytest.mark.slow
def test_a_diverging_member_is_masked_and_the_others_go_on(tmp_path: Path) -> None:
    base = TrainConfig(model="plain20", dataset="digits", batch_size=32, iterations=12, precision="fp32",
                       channels_last=False, eval_every=6, val_split=100)  # fmt: skip
    cfg = SweepConfig(base, [0.05, 1e6], [1e-4], [0, 1], out=str(tmp_path / "s"), processes=1)
    result = run_sweep(cfg, progress=False, log=lambda _: None)
    assert result.complete
    rows = {(r["lr"], r["seed"]): r for r in result.rows}
    for seed in (0, 1):
        bad, good = rows[(1e6, seed)], rows[(0.05, seed)]
        assert bad["diverged"] and bad["status"] == "diverged" and 1 <= bad["step_diverged"] <= 12
        assert (
            bad["test_error"] is None and not (tmp_path / "s" / bad["member"] / "model.safetensors").exists()
        )
        assert good["status"] == "done" and good["steps"] == 12 and 0 <= good["val_error"] <= 1
    assert result.chosen is not None and result.chosen["lr"] == 0.05 and result.chosen["seeds"] == 2


@pytest.mark.slow
def test_halving_prunes_and_its_survivor_equals_an_unpruned_run(tmp_path: Path) -> None:
    base = TrainConfig(model="resnet20", dataset="digits", batch_size=64, epochs=4, precision="fp32",
                       channels_last=False, val_split=200, schedule="onecycle")  # fmt: skip
    lrs = [0.01, 0.05, 0.2, 0.8]
    cfg = SweepConfig(base, lrs, [5e-4], [0, 1], out=str(tmp_path / "s"), prune="halving")
    result = run_sweep(cfg, progress=False, log=lambda _: None)
    assert result.complete
    status = {r["member"]: r for r in result.rows}
    pruned = [r for r in result.rows if r["status"] == "pruned"]
    steps = json.loads((tmp_path / "s" / result.rows[0]["member"] / "config.json").read_text())
    total = steps["resolved"]["total_steps"]
    assert len(pruned) == 3 and all(r["steps"] < total and r["test_error"] is None for r in pruned)
    chosen = result.chosen
    assert chosen is not None and chosen["seeds"] == 2
    winner = f"lr{chosen['lr']:g}_wd0.0005_seed0"
    assert status[winner]["status"] == "done" and status[winner]["steps"] == total
    assert status[f"lr{chosen['lr']:g}_wd0.0005_seed1"]["status"] == "done"
    # Trained in rungs (stopped, resumed), the survivor is the run it would have been unstopped.
    from resnets.training import train

    member = cfg.member_config(Member(chosen["lr"], 5e-4, 0))
    alone = dataclasses.replace(member, out=str(tmp_path / "alone"))
    train(alone, progress=False)
    _assert_close(_weights(tmp_path / "s" / winner), _weights(tmp_path / "alone"))
    # A second call finds everything done and trains nothing.
    again = run_sweep(cfg, resume=True, progress=False, log=lambda _: None)
    assert again.rows == result.rows


@pytest.mark.parametrize("prune", ["halving", "first-seed"])
def test_a_survivor_that_diverges_late_hands_over_to_the_best_finite_setting(
    prune: str, tmp_path: Path, monkeypatch
) -> None:
    import resnets.experiments.sweep as sweep

    # Scores by lr at each rung step: the two highest rates lead early, then diverge.
    nan = (math.nan, math.nan)
    table = {0.4: {8: (0.1, 1.0), 16: nan, 32: nan}, 0.2: {8: (0.2, 1.0), 16: nan, 32: nan},
             0.05: {8: (0.3, 1.0), 16: (0.3, 1.0), 32: (0.25, 1.0)},
             0.01: {8: (0.5, 1.0), 16: (0.5, 1.0), 32: (0.45, 1.0)}}  # fmt: skip
    trained: list[tuple[float, int, int | None]] = []
    monkeypatch.setattr(sweep, "_run_length", lambda cfg: (32, 8))
    monkeypatch.setattr(sweep, "_rung_score", lambda cfg, m, rung, progress, log: table[m.lr][rung.step])
    monkeypatch.setattr(sweep, "_prune", lambda *args: None)
    monkeypatch.setattr(sweep, "_status", lambda cfg, m: None)
    monkeypatch.setattr(
        sweep, "_train_member", lambda cfg, m, until, progress: trained.append((m.lr, m.seed, until))
    )
    base = TrainConfig(model="resnet20", val_split=100)
    cfg = SweepConfig(base, [0.01, 0.05, 0.2, 0.4], [5e-4], [0, 1], out=str(tmp_path / "s"), prune=prune)
    lines: list[str] = []
    sweep._search(cfg, progress=False, log=lines.append)
    assert trained == [(0.05, 1, None)]  # the other seed goes to the best setting that stayed finite
    if prune == "halving":
        assert any("the best setting left" in line for line in lines)


@pytest.mark.slow
def test_a_resumed_search_may_add_rates_and_seeds_but_halving_may_not(tmp_path: Path) -> None:
    base = TrainConfig(model="resnet20", dataset="digits", batch_size=64, epochs=1, train_subset=256,
                       precision="fp32", channels_last=False, val_split=200, schedule="onecycle")  # fmt: skip
    out = str(tmp_path / "s")
    quiet = {"progress": False, "log": lambda _: None}
    first = run_sweep(
        SweepConfig(base, [0.05], [5e-4], [0], out=out, prune="first-seed"), resume=True, **quiet
    )
    assert first.complete and first.chosen["lr"] == 0.05
    before = (tmp_path / "s" / "lr0.05_wd0.0005_seed0" / "member.json").stat().st_mtime_ns
    grown = SweepConfig(base, [0.05, 0.4], [5e-4], [0, 1], out=out, prune="first-seed")
    wider = run_sweep(grown, resume=True, **quiet)
    assert wider.complete and {(r["lr"], r["seed"]) for r in wider.rows} >= {(0.05, 0), (0.4, 0)}
    assert (tmp_path / "s" / "lr0.05_wd0.0005_seed0" / "member.json").stat().st_mtime_ns == before  # kept
    winner = wider.chosen["lr"]
    assert {r["seed"] for r in wider.rows if r["lr"] == winner} == {0, 1}
    with pytest.raises(Exception, match="--lrs differs"):
        run_sweep(SweepConfig(base, [0.05, 0.4, 0.8], [5e-4], [0, 1], out=out, prune="halving"), resume=True,
                  **quiet)  # fmt: skip


def test_halving_rungs_keep_a_fraction_and_end_at_the_full_run() -> None:
    schedule = rungs(5, 99, eta=2, step_unit=11)
    assert [(r.keep, r.step) for r in schedule] == [(5, 22), (2, 44), (1, 99)]
    assert all(r.step % 11 == 0 for r in schedule)
    assert work(schedule, 5) == 5 * 22 + 2 * 22 + 55 < 5 * 99 / 2
    assert [(r.keep, r.step) for r in rungs(1, 50)] == [(1, 50)]
    assert [r.keep for r in rungs(8, 800, eta=2)] == [8, 4, 2, 1]
    assert [r.keep for r in rungs(9, 90, eta=3)] == [9, 3, 1]
    with pytest.raises(ValueError):
        rungs(3, 10, eta=1)


def test_promote_keeps_the_lowest_and_puts_diverged_last() -> None:
    scores = {"a": (0.3, 2.0), "b": (math.nan, math.nan), "c": (0.1, 2.5), "d": (0.3, 2.0)}
    assert promote(scores, 2, ["a", "b", "c", "d"]) == ["c", "a"]  # a tie goes to the earlier
    assert promote(scores, 4, ["a", "b", "c", "d"])[-1] == "b"
    at_chance = {"a": (0.9, 2.31), "b": (0.9, 2.20), "c": (0.9, 2.40)}  # the loss orders equal errors
    assert promote(at_chance, 1, ["a", "b", "c"]) == ["b"]


@pytest.mark.slow
def test_shards_fill_one_folder_and_the_last_writes_the_sweep(tmp_path: Path) -> None:
    out = tmp_path / "s"
    args = ["sweep", "--model", "resnet20", *SMALL, "--iterations", "4", "--lr", "0.05", "0.1", "0.2",
            "--out", str(out)]  # fmt: skip
    first = run_cli(*args, "--shard", "0/2")
    assert first.returncode == 0, first.stderr
    assert not (out / "sweep.json").exists() and "shard 0/2 done" in first.stderr
    assert_clean_error(run_cli("sweep", "--out", str(out), "--collect"), "not finished")
    second = run_cli(*args, "--shard", "1/2")
    assert second.returncode == 0, second.stderr
    assert set(_rows(out)) == {f"lr{x}_wd0.0001_seed0" for x in ("0.05", "0.1", "0.2")}
    collected = run_cli("sweep", "--out", str(out), "--collect")
    assert collected.returncode == 0, collected.stderr
    assert "report" in collected.stdout


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_is_exact(tmp_path: Path) -> None:
    # Two processes: the kill must take the members' processes with it, and the resume keep the split.
    args = ["sweep", "--model", "resnet20", *SMALL, "--iterations", "30", "--checkpoint-every", "2",
            "--eval-every", "10", "--lr", "0.05", "0.1", "--processes", "2"]  # fmt: skip
    straight = run_cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "resnets", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    # Progress, not the clock, says when: a checkpoint of each member (they train side by side).
    members = [out / "lr0.05_wd0.0001_seed0", out / "lr0.1_wd0.0001_seed0"]
    deadline = time.monotonic() + HANG_GUARD
    while not all(list_checkpoints(m) for m in members) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for member in members:  # the members' processes die with the sweep: their folders come free, unfinished
        while True:
            try:
                with exclusive(member):
                    break
            except FolderBusy:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert not (member / "model.safetensors").exists(), "a member's process outlived the sweep"
    assert not (out / "sweep.json").exists(), "the sweep finished before the kill"
    refused = run_cli(*args, "--out", str(out))
    assert_clean_error(refused, "--resume")
    resumed = run_cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for member in ("lr0.05_wd0.0001_seed0", "lr0.1_wd0.0001_seed0"):
        a, b = _weights(tmp_path / "straight" / member), _weights(out / member)
        assert all(torch.equal(a[k], b[k]) for k in a), member
    finished = run_cli(*args, "--out", str(out), "--resume")
    assert finished.returncode == 0 and "training" not in finished.stdout.split("lr    ")[0], finished.stdout


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--lr", "0.1", "0.1"], "repeats"),
        (["--lr", "-1"], "lr"),
        (["--seeds", "0"], "--seeds"),
        (["--shard", "2/2"], "--shard"),
        (["--shard", "x"], "I/N"),
        (["--prune", "halving"], "--val-split"),
        (["--prune", "halving", "--val-split", "100", "--shard", "0/2"], "one machine"),
        (["--model", "resnet21"], "resnet21"),
        (["--val-split", "5000"], "hold out"),
    ],
)
def test_bad_sweep_settings_are_one_line_errors(
    tmp_path: Path, flags: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnets.cli import main

    argv = [
        "sweep",
        "--dataset",
        "digits",
        "--iterations",
        "2",
        "--quiet",
        "--out",
        str(tmp_path / "s"),
        *flags,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_collect_on_a_folder_without_a_sweep_is_a_clean_error(tmp_path: Path) -> None:
    from resnets.errors import ResnetsError

    with pytest.raises(ResnetsError, match="holds no sweep"):
        collect(tmp_path)


def test_val_split_holds_the_same_images_out_for_every_seed() -> None:
    from resnets.data import load_dataset
    from resnets.training.loaders import held_out

    data = load_dataset("digits")
    rest, val = held_out(data, 300)
    again_rest, again_val = held_out(data, 300)
    assert torch.equal(val.images, again_val.images) and torch.equal(rest.labels, again_rest.labels)
    assert len(val) == 300 and len(rest) == len(data.train) - 300
    together = torch.cat([rest.labels, val.labels]).bincount()
    assert torch.equal(together, data.train.labels.bincount())  # a partition: nothing lost, nothing twice


@pytest.mark.slow
def test_train_reports_val_error_on_the_held_out_images(tmp_path: Path) -> None:
    from resnets.training import train

    cfg = TrainConfig(model="resnet20", dataset="digits", batch_size=64, iterations=4, eval_every=4,
                      precision="fp32", val_split=300, out=str(tmp_path / "r"))  # fmt: skip
    result = train(cfg, progress=False)
    assert 0 <= result.metrics["val_error"] <= 1 and "test_error" in result.metrics
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())["resolved"]
    assert resolved["loader"]["val_images"] == 300
    assert resolved["train_images"] == 1437 - 300


def test_precise_bn_averages_the_statistics_of_the_current_weights_on_a_copy() -> None:
    from torch import nn

    from resnets.training.precise_bn import with_precise_bn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    before = model[1].running_mean.clone()
    batches = [torch.randn(8, 3, 6, 6) * 3 + 1 for _ in range(4)]
    calibrated = with_precise_bn(model, batches)
    with torch.no_grad():
        features = torch.cat([model[0](x) for x in batches])
    assert torch.allclose(calibrated[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert torch.equal(model[1].running_mean, before)  # the run's own model is left alone
    assert not calibrated.training


def test_process_count_follows_the_measured_trial_and_is_cached(monkeypatch, tmp_path: Path) -> None:
    from resnets.experiments import sweep_workers

    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    calls = []

    def fake(base, shape, classes, batch):
        calls.append(base.model)
        rate = 13.0 if base.model == "resnet20" else 10.2  # two processes: 1.30x, then 1.02x
        return {"threads": 2, "one_process_steps_per_s": 10.0, "processes_steps_per_s": rate}

    monkeypatch.setattr(sweep_workers, "measure", fake)
    shape = (1, 8, 8)
    assert sweep_workers.choose_processes(TrainConfig(model="resnet20"), 8, shape, 10)["processes"] == 2
    assert sweep_workers.choose_processes(TrainConfig(model="resnet20"), 8, shape, 10)["processes"] == 2
    assert calls == ["resnet20"]  # the second sweep reads the cached trial
    assert sweep_workers.choose_processes(TrainConfig(model="plain20"), 8, shape, 10)["processes"] == 1
    assert sweep_workers.choose_processes(TrainConfig(model="resnet20"), 3, shape, 10)["processes"] == 1
    assert sweep_workers.choose_processes(TrainConfig(model="resnet20"), 5, shape, 10)["processes"] == 2


def test_a_sweep_saved_before_a_new_setting_existed_resumes(tmp_path: Path) -> None:
    import resnets.experiments.sweep as sweep

    cfg = SweepConfig(
        TrainConfig(model="resnet20", val_split=100), [0.05], [5e-4], [0], out=str(tmp_path / "s")
    )
    (tmp_path / "s").mkdir()
    sweep._check_settings(tmp_path / "s", cfg, resume=False)
    path = tmp_path / "s" / "sweep-settings.json"
    saved = json.loads(path.read_text())
    del saved["base"]["betas"]  # as written by a version without AdamW
    path.write_text(json.dumps(saved))
    sweep._check_settings(tmp_path / "s", cfg, resume=True)  # read at the default: no refusal
    saved["base"]["batch_size"] = 64
    path.write_text(json.dumps(saved))
    with pytest.raises(Exception, match="--batch-size"):
        sweep._check_settings(tmp_path / "s", cfg, resume=True)
