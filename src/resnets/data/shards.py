"""Tar shards in the WebDataset layout, written from an image folder and read by offset.

``resnets shard DIR --out SHARDS`` packs the files as they are (no re-encoding) into
``{split}-{n:06d}.tar`` holding ``{key}.{ext}`` and ``{key}.cls`` members, the layout every
WebDataset reader understands, plus ``index.json`` and ``{split}-index.npy`` (shard, byte
offset, size, label per image). Our reader seeks to each image through fsspec, so shards can
sit on a local disk or behind any URL fsspec opens (http(s), s3://, gs://, ...), and the
sampler that makes the folder path deterministic and resumable is reused unchanged.
Images keep the folder's order, so a run on the shards sees exactly the folder run's batches.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ResnetsError
from ..io import atomic_write, atomic_write_bytes, atomic_write_text
from .dataset import register
from .files import FileList, ImageSource, StreamedDataset

FORMAT = "resnets-shards/1"
INDEX_FILE = "index.json"
DEFAULT_SHARD_BYTES = 256 * 2**20  # WebDataset's advice: 100 MB to a few GB per shard


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: the same folder, the same bytes
    return info, io.BytesIO(data)


def _write_shard(path: Path, files: FileList, members: list[int], first_key: int) -> np.ndarray:
    """One tar of ``members``, streamed to disk; returns their (offset, size) within it."""
    spans = []
    with atomic_write(path) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for n, i in enumerate(members):
            key = f"{first_key + n:09d}"
            ext = os.path.splitext(files.paths[i].decode())[1].lower() or ".img"
            data = files.read(i)
            # A USTAR header of a short name is one 512-byte block: the data starts right after it.
            spans.append((tar.offset + tarfile.BLOCKSIZE, len(data)))
            tar.addfile(*_member(key + ext, data))
            tar.addfile(*_member(key + ".cls", str(int(files.labels[i])).encode()))
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def _groups(sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive runs of files of at most ``limit`` bytes (a larger file gets a shard of its own)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if groups[-1] and total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def write_shards(
    splits: dict[str, FileList], classes: list[str], out: Path, shard_bytes: int, progress=None
) -> dict:
    """Write every split's shards and indexes under ``out``; returns the index record.

    ``progress(split, done, total)`` is called after each shard.
    """
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"format": FORMAT, "classes": classes, "splits": {}}
    for split, files in splits.items():
        sizes = [os.path.getsize(files.name(i)) for i in range(len(files))]
        names, rows, written = [], [], 0
        for n, group in enumerate(_groups(sizes, shard_bytes)):
            names.append(f"{split}-{n:06d}.tar")
            spans = _write_shard(out / names[-1], files, group, written)
            rows.append(np.column_stack([np.full(len(group), n), spans, files.labels[group]]))
            written += len(group)
            if progress is not None:
                progress(split, written, len(files))
        index = np.concatenate(rows).astype(np.int64)
        buffer = io.BytesIO()
        np.save(buffer, index, allow_pickle=False)
        atomic_write_bytes(out / f"{split}-index.npy", buffer.getvalue())
        record["splits"][split] = {"shards": names, "images": len(index)}
    atomic_write_text(out / INDEX_FILE, json.dumps(record, indent=2) + "\n")
    return record


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if "://" in base else os.path.join(base, name)


def _open(location: str):
    if "://" not in location:
        return open(location, "rb")
    try:
        import fsspec

        return fsspec.open(location, "rb").open()
    except ImportError as e:  # fsspec itself, or the package of this URL's scheme
        scheme = location.split("://", 1)[0]
        raise ResnetsError(
            f"reading shards from {scheme}:// URLs needs {e.name or 'fsspec'}: pip install 'resnets[remote]'"
        ) from None


@dataclass
class ShardSource(ImageSource):
    """The images of one split of a shard folder (or URL), read by offset."""

    base: str
    shards: list[str]
    index: np.ndarray  # (N, 4) int64: shard, offset, size, label
    _handles: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = self.index[:, 3]

    def read(self, i: int) -> bytes:
        shard, offset, size, _ = (int(v) for v in self.index[i])
        key = (os.getpid(), shard)  # a forked worker opens its own handles, never shares a file offset
        if key not in self._handles:
            self._handles[key] = _open(_join(self.base, self.shards[shard]))
        f = self._handles[key]
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError(f"shard ends {size - len(data)} bytes early")
        return data

    def name(self, i: int) -> str:
        return f"{_join(self.base, self.shards[int(self.index[i, 0])])}#{int(self.index[i, 1])}"

    def take(self, index: np.ndarray) -> ShardSource:
        return ShardSource(self.base, self.shards, self.index[index])


def _read_bytes(location: str) -> bytes:
    try:
        with _open(location) as f:
            return f.read()
    except (OSError, ValueError) as e:
        raise ResnetsError(f"cannot read {location}: {e}") from None


def open_shards(base: str) -> tuple[dict[str, ShardSource], list[str]]:
    """The splits and classes of the shards written by ``write_shards`` at ``base``."""
    try:
        record = json.loads(_read_bytes(_join(base, INDEX_FILE)))
    except json.JSONDecodeError as e:
        raise ResnetsError(f"{_join(base, INDEX_FILE)} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ResnetsError(f"{base} holds no {FORMAT} index; write one with `resnets shard`")
    splits = {}
    for split, info in record["splits"].items():
        raw = _read_bytes(_join(base, f"{split}-index.npy"))
        try:
            index = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as e:
            raise ResnetsError(f"{split}-index.npy under {base} is corrupt ({e})") from None
        if index.ndim != 2 or index.shape != (info["images"], 4) or index.dtype != np.int64:
            raise ResnetsError(f"{split}-index.npy under {base} does not match index.json")
        splits[split] = ShardSource(base, list(info["shards"]), index)
    return splits, list(record["classes"])


@register("shards", needs_dir=True, description="tar shards written by `resnets shard` (a folder or URL)")
def load_shards(
    data_dir: str, image_size: int = 224, test_size: int | None = None, loader: str = "stream"
) -> StreamedDataset:
    """The train and test (or val) splits of a shard folder or URL, streamed."""
    if loader not in ("auto", "stream"):
        raise ResnetsError(f"shards are always streamed; --loader {loader} does not apply")
    splits, classes = open_shards(str(data_dir))
    test = splits.get("test") or splits.get("val")
    if "train" not in splits or test is None:
        raise ResnetsError(f"{data_dir} needs a train and a test (or val) split; it has {', '.join(splits)}")
    data = StreamedDataset("shards", splits["train"], test, classes, image_size, test_size or image_size)
    data.loader_reason = "shards are always streamed"
    return data
