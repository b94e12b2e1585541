"""What every figure of the reports shares: the file-only backend, the plain/residual colours, PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
# The figure modules take pyplot from here, so the backend above is chosen before any of them draws.
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..io import atomic_write

PLAIN_COLOR, RESIDUAL_COLOR = "#b45f06", "#0b5394"
PLAIN_STYLE = {"linestyle": "--"}
RESIDUAL_STYLE = {"linestyle": "-"}


def save_png(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG (atomically) and close it."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
