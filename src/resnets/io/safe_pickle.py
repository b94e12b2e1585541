"""A restricted unpickler for data files: builtin containers, numbers, bytes and numpy arrays.

Plain ``pickle.load`` can run any code a file names. This one resolves only the few globals
that numpy arrays need, so a planted file is refused instead of executed.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ..errors import ResnetsError

# (module, name) pairs a pickled numpy array refers to; numpy 2 renamed numpy.core to numpy._core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles store bytes through codecs.encode
}


class UnsafePickleError(ResnetsError):
    """The file asks to load something other than plain data."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}")


def safe_load(data: bytes, *, source: str = "file", encoding: str = "latin1") -> Any:
    """Unpickle plain data from ``data``; anything that would import code is refused."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(
            f"{source} is not a plain data pickle ({e}); it was not loaded. Use the official files."
        ) from None
    except Exception as e:  # any malformed pickle raises something different
        detail = " ".join(str(e).split())  # pickle's own messages can span lines
        raise ResnetsError(f"{source} is corrupt or not a pickle ({type(e).__name__}: {detail})") from None
