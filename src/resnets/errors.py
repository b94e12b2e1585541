"""The one exception type for mistakes a user can fix (bad names, files or settings)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ResnetsError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class UnknownNameError(ResnetsError, KeyError):
    """An unknown model, dataset or option name."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build an error for an unknown name that suggests the closest known ones."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5) if isinstance(name, str) else []
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; did you mean {', '.join(close)}?"
    else:
        shown = ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else "")
        msg += f"; known: {shown}"
    if hint:
        msg += f" ({hint})"
    return UnknownNameError(msg)
