"""Surviving kills, full and read-only disks, and planted files without losing work or running code."""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD, Plant, assert_clean_error, run_cli
from PIL import Image
from safetensors.torch import load_file

from resnets.training.checkpoint import list_checkpoints

TINY = ["--model", "resnet20", "--dataset", "digits", "--batch-size", "32", "--quiet"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # identical numerics in every process


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in ("time", "images_per_s")} for x in lines]


def _newest_step(run: Path) -> int:
    ckpts = list_checkpoints(run)
    return int(ckpts[0].stem.split("-")[1]) if ckpts else 0


def _step_seconds(run: Path) -> float:
    """This machine's time for one step, read off the two newest checkpoints (one per step)."""
    ckpts = list_checkpoints(run)[:2]
    if len(ckpts) < 2:
        return 0.0
    return abs(ckpts[0].stat().st_mtime - ckpts[1].stat().st_mtime)


def _launch_and_maybe_kill(cmd: list[str], run: Path, rng: random.Random, kill: bool) -> int | None:
    """Run ``cmd``; with ``kill``, SIGKILL it at a random point of its progress.

    The moment is chosen from what the run has done, not from the clock: after a random number
    of new checkpoints (0: as soon as this process has written its config), then a random
    fraction of the measured step time. So the kills land alike on a fast and a slow machine.
    Returns the newest checkpoint's step at the kill, or None when the run ended by itself.
    """
    ahead, fraction = rng.randint(0, 12), rng.random()
    launched = time.time()
    start = _newest_step(run)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_THREAD)

    def reached() -> bool:
        if ahead == 0:
            config = run / "config.json"
            return config.exists() and config.stat().st_mtime >= launched
        return _newest_step(run) >= start + ahead

    while kill and proc.poll() is None and not reached():
        time.sleep(0.005)
    if kill and proc.poll() is None:
        time.sleep(fraction * _step_seconds(run))
        proc.kill()  # SIGKILL: no handler runs, whatever was mid-write stays as it was
    _, err = proc.communicate()
    if proc.returncode == -signal.SIGKILL:
        return _newest_step(run)
    assert proc.returncode == 0, err.decode()
    return None


@pytest.mark.slow
def test_twenty_random_sigkills_then_resume_end_equal_to_an_unbroken_run(tmp_path: Path) -> None:
    # A checkpoint every step, so many kills land while one is being written.
    args = [*TINY, "--iterations", "90", "--checkpoint-every", "1", "--eval-every", "15", "--ema", "0.9"]
    straight = run_cli("train", *args, "--out", str(tmp_path / "straight"), env=ONE_THREAD)
    assert straight.returncode == 0, straight.stderr
    rng = random.Random(20261127)
    killed_at: list[int] = []  # the newest checkpoint's step at each kill (0: before the first)
    runs = 0
    while len(killed_at) < 20:
        run = tmp_path / f"killed-{runs}"
        runs += 1
        # The same command line every time, as a job scheduler re-runs it after a preemption.
        cmd = [sys.executable, "-m", "resnets", "train", *args, "--out", str(run), "--resume"]
        while not (run / "model.safetensors").exists():
            step = _launch_and_maybe_kill(cmd, run, rng, kill=len(killed_at) < 20)
            if step is not None:
                killed_at.append(step)
            for ckpt in list_checkpoints(run):  # a half-written checkpoint is never visible
                torch.load(ckpt, weights_only=True)
        a, b = _weights(tmp_path / "straight"), _weights(run)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"run {run.name} differs after kills"
        assert _metrics(run) == _metrics(tmp_path / "straight")
        assert not list(run.rglob(".*.tmp")), "temporary files left behind"
        # Once more on the finished run: exit 0, the final result again, nothing rewritten.
        before = _snapshot(run)
        again = subprocess.run(cmd, capture_output=True, text=True, env=ONE_THREAD)
        assert again.returncode == 0, again.stderr
        assert "after 90 steps" in again.stdout and "already finished 90 steps" in again.stderr
        assert _snapshot(run) == before
    assert len(set(killed_at) - {0}) >= 10, f"too few kills landed mid-training: {killed_at}"
    print(f"{len(killed_at)} kills in {runs} runs, at steps {killed_at}")


def _limit_file_size(limit: int):
    def apply() -> None:
        # Writes past `limit` fail with EFBIG, as on a full disk (Python ignores SIGXFSZ).
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_full_disk_is_a_one_line_error_and_loses_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        run_cli("train", *TINY, "--iterations", "4", "--checkpoint-every", "2", "--out", str(run)).returncode
        == 0
    )
    before = _snapshot(run)
    proc = run_cli("train", "--resume", "--out", str(run), "--iterations", "8", "--quiet",
                   preexec_fn=_limit_file_size(64 * 1024))  # fmt: skip
    assert_clean_error(proc, "cannot write", "is the disk full?")
    after = _snapshot(run)
    for name, data in before.items():
        if name != "config.json":  # small: rewritten with the new length before the disk filled
            assert after[name] == data, f"{name} changed"
    assert not [n for n in after if n.endswith(".tmp")]
    assert (run / "model.safetensors").exists() and list_checkpoints(run)


def _run_read_only(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with ``folder`` read-only: a read-only bind mount as root, file modes otherwise."""
    cli = [sys.executable, "-m", "resnets", *args]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            return subprocess.run(cli, capture_output=True, text=True, timeout=HANG_GUARD)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: cannot make a folder read-only")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" || exit 99; shift; exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(folder), *cli],
                          capture_output=True, text=True, timeout=HANG_GUARD)  # fmt: skip
    if proc.returncode == 99 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount read-only here: {proc.stderr.strip()[:100]}")
    return proc


@pytest.mark.slow
def test_read_only_output_folder_is_a_one_line_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    run = ro / "run"
    assert run_cli("train", *TINY, "--iterations", "4", "--out", str(run)).returncode == 0
    before = _snapshot(run)
    proc = _run_read_only(ro, "train", "--resume", "--out", str(run), "--iterations", "8", "--quiet")
    assert_clean_error(proc, str(run))
    proc = _run_read_only(ro, "train", *TINY, "--iterations", "2", "--out", str(ro / "fresh"))
    assert_clean_error(proc, str(ro / "fresh"))
    assert _snapshot(run) == before


# --- Planted pickles -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    assert (
        run_cli("train", *TINY, "--iterations", "4", "--checkpoint-every", "2", "--out", str(run)).returncode
        == 0
    )
    return run


def _plant_checkpoint(run: Path, dest: Path, marker: Path) -> Path:
    """A copy of ``run`` whose every checkpoint is a torch file that would run code if unpickled."""
    shutil.copytree(run, dest)
    (dest / "model.safetensors").unlink()  # make readers fall back to the checkpoints
    for ckpt in list_checkpoints(dest):
        torch.save({"model": Plant(str(marker)), "step": 4}, ckpt)
    return dest


def _cifar_dir(folder: Path, marker: Path, planted: str) -> Path:
    rng = np.random.default_rng(0)
    data = folder / "cifar-10-batches-py"
    data.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8), "labels": [0] * 10_000}
        if name == planted:
            batch["data"] = Plant(str(marker))
        (data / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [str(i) for i in range(10)]}
    if planted == "batches.meta":
        meta["label_names"] = Plant(str(marker))
    (data / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


PLACES = ["resume", "eval", "predict", "export", "init-from", "cifar-train-batch", "cifar-meta"]


@pytest.mark.slow
@pytest.mark.parametrize("place", PLACES)
def test_planted_pickle_never_runs_wherever_a_file_is_read(
    place: str, finished_run: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    if place in ("resume", "eval", "predict", "export"):
        run = _plant_checkpoint(finished_run, tmp_path / "run", marker)
        image = tmp_path / "x.png"
        Image.new("L", (16, 16)).save(image)
        args = {
            "resume": ["train", "--resume", "--out", str(run), "--iterations", "8", "--quiet"],
            "eval": ["eval", "--run", str(run)],
            "predict": ["predict", "--run", str(run), str(image)],
            "export": [
                "export",
                "--run",
                str(run),
                "--format",
                "torchscript",
                "--out",
                str(tmp_path / "m.pt"),
            ],
        }[place]
        needle = "unsafe" if place != "resume" else "no readable checkpoint"
    elif place == "init-from":
        evil = tmp_path / "evil.pth"
        torch.save({"conv1.weight": Plant(str(marker))}, evil)
        args, needle = (
            ["train", *TINY, "--iterations", "1", "--init-from", str(evil), "--out", str(tmp_path / "r")],
            "evil.pth",
        )
    else:
        planted = "data_batch_3" if place == "cifar-train-batch" else "batches.meta"
        data = _cifar_dir(tmp_path / "data", marker, planted)
        args = ["train", "--dataset", "cifar10", "--data-dir", str(data), "--iterations", "1", "--quiet",
                "--out", str(tmp_path / "r")]  # fmt: skip
        needle = planted
    proc = run_cli(*args)
    if place == "resume":  # each refused checkpoint is named as a warning before the final error
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert all("unsafe" in x for x in lines[:-1]) and needle in lines[-1], proc.stderr
    else:
        assert_clean_error(proc, needle)
    assert not marker.exists(), "the planted pickle ran"
