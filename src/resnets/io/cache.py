"""Where resnets keeps what it measured or prepared once per machine ($RESNETS_CACHE_DIR)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$RESNETS_CACHE_DIR, or ~/.cache/resnets."""
    env = os.environ.get("RESNETS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "resnets"
