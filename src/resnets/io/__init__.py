"""Safe file input and output: atomic writes and a restricted unpickler."""

from .atomic import atomic_write, atomic_write_bytes, atomic_write_text
from .safe_pickle import UnsafePickleError, safe_load

__all__ = ["UnsafePickleError", "atomic_write", "atomic_write_bytes", "atomic_write_text", "safe_load"]
