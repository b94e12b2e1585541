"""One command line for every restart, and one writer per run or study folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_clean_error, run_cli

from resnets.training.checkpoint import list_checkpoints

TINY = ["--model", "resnet20", "--dataset", "digits", "--batch-size", "32", "--quiet"]


@pytest.mark.slow
def test_resume_starts_a_missing_run_and_reports_a_finished_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = ["train", *TINY, "--iterations", "6", "--out", str(run), "--resume"]
    first = run_cli(*cmd)
    assert first.returncode == 0, first.stderr
    assert first.stderr.strip() == f"resnets: no run in {run} yet; starting it"
    assert "after 6 steps" in first.stdout
    weights = (run / "model.safetensors").read_bytes()

    again = run_cli(*cmd)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # the same final result line, read back from the run
    assert "already finished 6 steps" in again.stderr
    assert (run / "model.safetensors").read_bytes() == weights

    longer = run_cli("train", *TINY, "--iterations", "8", "--out", str(run), "--resume")
    assert longer.returncode == 0 and "after 8 steps" in longer.stdout, longer.stderr
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6, 8]


@pytest.mark.slow
def test_resume_with_a_conflicting_setting_names_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_cli("train", *TINY, "--iterations", "2", "--out", str(run)).returncode == 0
    proc = run_cli("train", *TINY, "--iterations", "2", "--lr", "0.3", "--out", str(run), "--resume")
    assert_clean_error(proc, "--lr 0.3 differs from the run's 0.1")


def _start_holder(cmd: list[str], run: Path) -> subprocess.Popen:
    """Start a long writer and wait, by its progress, until it holds the folder."""
    # One thread: the holder leaves a core to the commands that test the lock.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    while proc.poll() is None and not list_checkpoints(run):
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.mark.slow
def test_a_second_writer_stops_naming_the_first_and_a_killed_one_never_blocks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*TINY, "--iterations", "100000", "--checkpoint-every", "1", "--out", str(run)]
    holder = _start_holder([sys.executable, "-m", "resnets", "train", *args], run)
    try:
        second = run_cli("train", *args, "--resume")
        assert_clean_error(second, str(run), f"pid {holder.pid} on ", "another run")
        before = list_checkpoints(run)[0]
        fresh = run_cli("train", *args)  # the same job submitted twice, without --resume
        assert_clean_error(fresh, f"pid {holder.pid}")
        assert list_checkpoints(run)[0] >= before  # the holder went on undisturbed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the killed holder's lock: the same folder resumes at once.
    step = int(list_checkpoints(run)[0].stem.split("-")[1])
    resumed = run_cli("train", "--resume", "--out", str(run), "--iterations", str(step + 2), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"after {step + 2} steps" in resumed.stdout
