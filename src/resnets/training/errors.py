"""How a run stops early: a diverged loss, or a Ctrl-C turned into a checkpoint."""

from __future__ import annotations

import signal
from contextlib import contextmanager

from ..errors import ResnetsError


class Diverged(ResnetsError):
    """The loss became NaN or infinite (at ``step``, counted from 1)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class Interrupted(ResnetsError):
    """Ctrl-C: the run was checkpointed and can be resumed."""


class SigintFlag:
    """Turns Ctrl-C into a flag checked between steps, so a checkpoint is never half a step."""

    def __init__(self) -> None:
        self.raised = False

    @contextmanager
    def installed(self):
        """Catch SIGINT inside the block (main thread only)."""
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.raised:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.raised = True
