"""Fetch an archive once, verify its checksum, and unpack it safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ResnetsError


def offline() -> bool:
    """True when downloads are switched off (RESNETS_OFFLINE=1)."""
    return os.environ.get("RESNETS_OFFLINE", "") not in ("", "0", "false", "no")


def file_md5(path: Path) -> str:
    """MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_archive(url: str, md5: str, folder: Path, what: str, timeout: float = 60) -> None:
    """Download ``url`` into ``folder``, check it against the official ``md5``, and extract it."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        archive = Path(tmp) / Path(url).name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ResnetsError(f"could not download {what} from {url} ({reason})") from None
        got = file_md5(archive)
        if got != md5:
            raise ResnetsError(
                f"checksum mismatch for {what} from {url}: md5 {got}, expected {md5}; "
                "the download is corrupt or not the official file (nothing was kept)"
            )
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")  # refuses links and paths outside folder
        except (tarfile.TarError, OSError) as e:
            raise ResnetsError(f"cannot unpack {what} archive: {e}") from None
