"""Progress: a live bar on a terminal, plain periodic lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

LIVE_REFRESH_S = 1.0  # a live bar's figures are renewed at most this often: each renewal waits for the GPU


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


class Progress:
    """Reports step, loss, images/s and ETA of a loop of ``total`` steps."""

    def __init__(
        self,
        total: int,
        start: int = 0,
        desc: str = "train",
        enabled: bool = True,
        stream: TextIO | None = None,
        lines: int = 20,
        steps_per_epoch: int = 0,
    ) -> None:
        self.total, self.start, self.desc = total, start, desc
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.steps_per_epoch = steps_per_epoch
        self.t0 = time.perf_counter()
        self.every = max(1, (total - start) // lines)
        self.last_line = self.last_figures = self.t0
        self._bar = None
        if enabled and self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(desc, total=total, completed=start, stats="")

    def eta(self, step: int) -> float:
        """Seconds left at the pace since start."""
        done = step - self.start
        return (time.perf_counter() - self.t0) / done * (self.total - step) if done else float("nan")

    def due(self, step: int) -> bool:
        """Whether ``update`` at ``step`` would show new figures: a caller reads them back only then."""
        if not self.enabled:
            return False
        now = time.perf_counter()
        if self._bar is not None:
            return step == self.total or now - self.last_figures >= LIVE_REFRESH_S
        return step == self.total or (step - self.start) % self.every == 0 or now - self.last_line > 60

    def advance(self, step: int) -> None:
        """Move a live bar to ``step``, keeping the figures it shows (plain lines wait for ``due``)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def update(self, step: int, loss: float, images_per_s: float) -> None:
        """Show the state after ``step`` steps."""
        if not self.enabled:
            return
        self.last_figures = time.perf_counter()
        stats = f"loss {loss:.4f}  {images_per_s:,.0f} img/s"
        if self.steps_per_epoch:
            spe = self.steps_per_epoch
            stats = f"epoch {step / spe:.1f}/{self.total / spe:.0f}  " + stats
        self.show(step, stats)

    def show(self, step: int, stats: str) -> None:
        """Show ``step`` of the total with any ``stats`` text."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, stats=stats)
            return
        now = time.perf_counter()
        if step == self.total or (step - self.start) % self.every == 0 or now - self.last_line > 60:
            self.last_line = now
            eta = self.eta(step)
            eta_s = _clock(eta) if eta == eta else "?"
            print(f"{self.desc} step {step}/{self.total}  {stats}  eta {eta_s}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line that stays above the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
