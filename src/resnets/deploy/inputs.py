"""The image files `resnets predict` is given: files as named, folders walked for images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TypeVar

from ..errors import ResnetsError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")

T = TypeVar("T")


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Each input as named if it is a file, or the image files under it (sorted) if it is a folder."""
    found: list[Path] = []
    for given in map(Path, inputs):
        if given.is_dir():
            images = _images_under(given)
            if not images:
                raise ResnetsError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {given}")
            found.extend(images)
        elif given.is_file():
            found.append(given)  # named by the user: whatever its suffix, Pillow decides
        else:
            raise ResnetsError(f"image or folder {given} not found")
    return found


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, ordered by their path's components."""

    def refuse(e: OSError) -> None:  # os.walk would otherwise skip an unreadable folder silently
        raise ResnetsError(f"cannot read folder {e.filename}: {e.strerror or e}")

    images = []
    for root, dirs, files in os.walk(folder, onerror=refuse):
        # Hidden entries are tool litter (.git, macOS ._x.jpg resource forks), not images to classify.
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        images.extend(
            Path(root, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        )
    return sorted(images, key=lambda p: p.parts)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
