"""Training under torchrun: two processes equal one on the same global batch, and resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD, run_cli
from safetensors.torch import load_file

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed beside this Python")
def test_torchrun_two_processes_match_single_process_on_the_same_global_batch(tmp_path: Path) -> None:
    args = ["train", "--model", "resnet20", "--dataset", "digits", "--iterations", "8", "--batch-size", "64",
            "--checkpoint-every", "4", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [TORCHRUN, "--nproc_per_node=2", "-m", "resnets"]
    ddp = subprocess.run([*launch, *args, "--out", str(tmp_path / "ddp")], capture_output=True, text=True,
                         timeout=HANG_GUARD, env=env)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    # One process on the same global batch of 64: two micro-batches of 32, as the two ranks see.
    single = run_cli(*args, "--accumulate", "2", "--out", str(tmp_path / "single"), env=env)
    assert single.returncode == 0, single.stderr
    a, b = (
        load_file(tmp_path / "ddp" / "model.safetensors"),
        load_file(tmp_path / "single" / "model.safetensors"),
    )
    params = [k for k in a if "running" not in k and "num_batches" not in k]
    worst = max((a[k] - b[k]).abs().max().item() for k in params)
    assert worst <= 1e-5, worst  # BN running statistics differ by design: DDP keeps rank 0's
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # written by rank 0 only
    same = json.loads((tmp_path / "single" / "metrics.jsonl").read_text().splitlines()[-1])
    assert json.loads(lines[0])["train_loss"] == pytest.approx(same["train_loss"], rel=1e-5)

    resumed = subprocess.run([TORCHRUN, "--nproc_per_node=2", "-m", "resnets", "train", "--resume",
                              "--out", str(tmp_path / "ddp"), "--iterations", "12", "--quiet"],
                             capture_output=True, text=True, timeout=HANG_GUARD, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 12


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed beside this Python")
def test_a_sweep_under_torchrun_trains_each_member_as_a_ddp_run(tmp_path: Path) -> None:
    # Every rank runs the sweep; each member is a DDP run of both; rank 0 alone writes the sweep's files.
    out = tmp_path / "sweep"
    args = ["sweep", "--model", "resnet20", "--dataset", "digits", "--iterations", "4", "--batch-size", "64",
            "--precision", "fp32", "--lr", "0.05", "0.1", "--quiet", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([TORCHRUN, "--nproc_per_node=2", "-m", "resnets", *args], capture_output=True,
                         text=True, timeout=HANG_GUARD, env=env)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    rows = json.loads((out / "sweep.json").read_text())["members"]
    assert sorted((r["lr"], r["status"], r["steps"]) for r in rows) == [(0.05, "done", 4), (0.1, "done", 4)]
    for r in rows:
        resolved = json.loads((out / r["member"] / "config.json").read_text())["resolved"]
        assert resolved["processes"] == 2
        assert len((out / r["member"] / "metrics.jsonl").read_text().splitlines()) == 1
