"""The GPU scripts' CPU-checkable parts: data staged in parts and a study carried between machines.

GPU minutes are few, so a script that breaks there wastes them: what these scripts do besides
training (packing, checking, unpacking, continuing from a pack) is run here on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
           "batches.meta"]  # fmt: skip


def _bash(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"} | env
    return subprocess.run(
        ["bash", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=900
    )


def test_cifar_travels_in_checked_parts_and_a_damaged_part_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data" / "cifar-10-batches-py"
    data.mkdir(parents=True)
    for i, name in enumerate(BATCHES):
        (data / name).write_bytes(os.urandom(1000 + i))
    script = str(ROOT / "scripts" / "gpu_stage_cifar.sh")
    packed = _bash(script, "pack", str(tmp_path / "data"), cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    parts = sorted((tmp_path / ".gpu").iterdir())
    assert [p.name for p in parts] == ["cifar-1", "cifar-2", "cifar-3"]
    for part in parts:
        assert _bash(script, "unpack", str(part), str(tmp_path / "there"), cwd=tmp_path).returncode == 0
    there = tmp_path / "there" / "cifar-10-batches-py"
    assert all((there / name).read_bytes() == (data / name).read_bytes() for name in BATCHES)
    # a part whose batch is not the one packed (cut off, or another file) fails, naming it
    broken = parts[0] / "data_batch_1.xz"
    broken.write_bytes((parts[1] / "data_batch_3.xz").read_bytes())
    result = _bash(script, "unpack", str(parts[0]), str(tmp_path / "again"), cwd=tmp_path)
    assert result.returncode != 0 and "data_batch_1.xz does not unpack to the batch packed" in result.stderr


@pytest.mark.slow
def test_the_paper_study_continues_on_another_machine_from_its_pack(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "gpu_paper_cifar.sh")
    smoke = {"ITERATIONS": "2", "EXTRA_ARGS": "--dataset digits --device cpu", "DEPTHS": "20", "SEEDS": "1",
             "PLAIN_LAST": ""}  # fmt: skip
    here = tmp_path / "here" / "paper"
    first = _bash(script, "600", str(here), cwd=ROOT, PACK=str(tmp_path / "paper.tgz"), SPLIT="20K", **smoke)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "the whole table is done" in first.stdout and not (tmp_path / "paper.tgz").exists()
    pieces = sorted(tmp_path.glob("paper.tgz.part-*"))
    assert len(pieces) > 1 and all(p.stat().st_size <= 20 * 1024 for p in pieces)
    joined = tmp_path / "state.tgz"
    joined.write_bytes(b"".join(p.read_bytes() for p in pieces))
    # the pack holds the finished runs (weights, measurements), so "there" nothing trains again
    there = tmp_path / "there" / "paper"
    second = _bash(script, "600", str(there), cwd=ROOT, STATE=str(joined), **smoke)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "continuing from" in second.stdout
    for run in ("plain20-seed0", "resnet20-seed0"):
        for name in ("model.safetensors", "metrics.jsonl"):
            assert (there / run / name).read_bytes() == (here / run / name).read_bytes(), (run, name)
    study, packed = (json.loads((d / "study.json").read_text()) for d in (there, here))
    assert (study.pop("out"), packed.pop("out")) == (str(there), str(here)) and study == packed
    assert "**2 of 2 runs done**" in (there / "status.md").read_text()
    # a pack of another study's folder is refused before anything is written
    other = _bash(script, "600", str(tmp_path / "there" / "other"), cwd=ROOT, STATE=str(joined), **smoke)
    assert other.returncode == 2 and "holds paper/, not other/" in other.stderr
    assert not (tmp_path / "there" / "other").exists()


@pytest.mark.slow
def test_the_muon_ablation_runs_its_arms_once_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "muon_ablation.sh")
    small = {"EXTRA": "--dataset digits --iterations 2 --batch-size 64 --device cpu --precision fp32"}
    first = _bash(script, str(tmp_path / "abl"), "0", "base no-lookahead+filter-norm", cwd=ROOT, **small)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = {p.name: json.loads((p / "config.json").read_text()) for p in (tmp_path / "abl").glob("*-s0")}
    assert sorted(runs) == ["base-s0", "no-lookahead+filter-norm-s0"]
    switches = [(runs[r]["muon_filter_norm"], runs[r]["lookahead"]) for r in sorted(runs)]
    assert switches == [(False, True), (True, False)]
    assert all(r["recipe"] == "fast94-muon" and r["iterations"] == 2 for r in runs.values())
    # a second sitting skips what is done; the summary lists each finished run
    again = _bash(script, str(tmp_path / "abl"), "0", "base no-lookahead+filter-norm", cwd=ROOT, **small)
    assert "base seed 0: done" in again.stdout and "no-lookahead+filter-norm seed 0: done" in again.stdout
    rows = [line.split() for line in again.stdout.splitlines()]
    finished = [row[0] for row in rows if len(row) == 3 and row[0].endswith("-s0")]
    assert finished == ["base-s0", "no-lookahead+filter-norm-s0"]
    wrong = _bash(script, str(tmp_path / "abl"), "0", "base ns3+lookahead", cwd=ROOT, **small)
    assert wrong.returncode == 2 and "unknown arm 'lookahead'" in wrong.stderr
