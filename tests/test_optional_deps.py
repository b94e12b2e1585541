"""Without the optional extras every command works or says in one line what to install.

By default the extras are hidden from a child Python (``None`` in ``sys.modules`` makes their
import fail and ``find_spec`` return None, as if uninstalled). CI also runs this file against a
real install without extras: ``make test-core`` sets RESNETS_CORE_PYTHON to its interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXTRAS = ("onnx", "onnxscript", "onnxruntime", "tensorboard")
CORE_PYTHON = os.environ.get("RESNETS_CORE_PYTHON")
TINY = ["--dataset", "digits", "--batch-size", "32", "--quiet"]


class Core:
    """Runs Python or `resnets` in an environment without the extras."""

    def __init__(self, python: str, env: dict[str, str]) -> None:
        self.python, self.env = python, env

    def python_c(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.python, "-c", code], capture_output=True, text=True, env=self.env)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.python, "-m", "resnets", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Core:
    env = dict(os.environ)
    if CORE_PYTHON:
        return Core(CORE_PYTHON, env)
    site = tmp_path_factory.mktemp("no-extras")
    lines = ["import sys", *(f"sys.modules[{name!r}] = None" for name in EXTRAS)]
    (site / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return Core(sys.executable, env)


@pytest.fixture(scope="module")
def run_dir(core: Core, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("core") / "run"
    proc = core.cli("train", "--model", "resnet20", *TINY, "--iterations", "4", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.slow
def test_the_extras_are_absent(core: Core) -> None:
    probe = f"import importlib.util as u; print([n for n in {EXTRAS!r} if u.find_spec(n)])"
    proc = core.python_c(probe)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    assert core.python_c("import resnets, torch").returncode == 0


@pytest.mark.slow
def test_onnx_export_names_what_to_install(core: Core, run_dir: Path, tmp_path: Path) -> None:
    proc = core.cli("export", "--run", str(run_dir), "--format", "onnx", "--output", str(tmp_path / "m.onnx"))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "onnx, onnxscript, onnxruntime" in err and "pip install 'resnets[export]'" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_tensorboard_logging_names_what_to_install(core: Core, tmp_path: Path) -> None:
    run = tmp_path / "tb"
    proc = core.cli("train", "--model", "resnet20", *TINY, "--iterations", "2", "--log", "tensorboard",
                    "--out", str(run))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "pip install 'resnets[tensorboard]'" in err, err
    assert not (run / "config.json").exists()  # refused before any work


@pytest.mark.slow
def test_every_command_runs_without_the_extras(core: Core, run_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("L", (16, 16)).save(image)
    commands = [
        ["--help"], ["models", "resnet2?"],  # the whole table: test_cli_models
        ["eval", "--run", str(run_dir), "--json"],
        ["predict", "--run", str(run_dir), str(image)],
        ["export", "--run", str(run_dir), "--format", "pt2", "--output", str(tmp_path / "m.pt2")],
        ["export", "--run", str(run_dir), "--format", "torchscript", "--output", str(tmp_path / "m.ts")],
        ["diagnose", "--model", "resnet20", "--steps", "2", *TINY, "--out", str(tmp_path / "diag")],
        ["train", "--resume", "--out", str(run_dir), "--quiet"],
    ]  # fmt: skip
    # Every subcommand's parser is built for any call (the --help above): one subcommand's help shows
    # that its printing needs no extra either (each of these calls costs 3-4 s on a slow machine).
    commands.append(["train", "--help"])
    for args in commands:
        proc = core.cli(*args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"{args}: {proc.stderr[-500:]}"
