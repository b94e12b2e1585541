"""One writer per folder: a lock the kernel releases when its holder dies, even by SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import ResnetsError

LOCK_FILE = ".lock"
# Who holds the lock, for the message another writer gets. A separate file, because the lock
# file's content is not ours to keep; a stale one (its holder killed) is simply overwritten.
HOLDER_FILE = ".lock.holder"


class FolderBusy(ResnetsError):
    """Another live process is writing the folder."""


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER_FILE).read_text())
        return f"pid {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is starting"


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike[str], what: str = "run") -> Iterator[None]:
    """Hold ``folder``'s lock while the body runs; refuse at once when another process holds it."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResnetsError(f"cannot write to {folder}: {e.strerror or e}") from None
    # fcntl.flock underneath on POSIX (msvcrt on Windows): released by the kernel with the process.
    lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusy(
            f"{folder} is being written by another {what} ({_holder(folder)}); "
            "wait for it to end, or use another --out"
        ) from None
    except OSError as e:
        raise ResnetsError(f"cannot lock {folder}: {e.strerror or e}") from None
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        with contextlib.suppress(OSError):  # the name is a courtesy; the lock itself is what counts
            (folder / HOLDER_FILE).write_text(json.dumps(record) + "\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            (folder / HOLDER_FILE).unlink()
        if created:  # a run refused before it wrote anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                if os.listdir(folder) == [LOCK_FILE]:
                    (folder / LOCK_FILE).unlink()
                    folder.rmdir()
        lock.release()
