"""Shared fixtures: the CLI runner and the location of the real datasets."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RESNETS_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Timeouts are hang guards, never speed checks: generous enough for a slow, shared machine.
HANG_GUARD = 1800

# The fast-path trials of this session measure into a cache of their own (children inherit it),
# never into the user's ~/.cache.
os.environ.setdefault("RESNETS_CACHE_DIR", tempfile.mkdtemp(prefix="resnets-test-cache-"))

# Two cores: keep intra-op threads from oversubscribing when tests spawn processes.
torch.set_num_threads(min(2, torch.get_num_threads()))


def run_cli(*args: str, timeout: float = HANG_GUARD, **kw) -> subprocess.CompletedProcess[str]:
    """Run `python -m resnets ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "resnets", *args],
        capture_output=True, text=True, timeout=timeout, **kw,
    )  # fmt: skip


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


class Plant:
    """Unpickling this would create a marker file: the test that nothing runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real CIFAR-10 and MNIST), or a skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set RESNETS_SHARED_DATA)")
    return SHARED_DATA
