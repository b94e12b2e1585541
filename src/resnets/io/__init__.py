"""Safe file input and output: atomic writes and a restricted unpickler."""

from .atomic import atomic_write, atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from .lock import FolderBusy, exclusive
from .safe_pickle import UnsafePickleError, safe_load

__all__ = [
    "FolderBusy",
    "UnsafePickleError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "exclusive",
    "remove_stale_temporaries",
    "safe_load",
]
