"""A folder of JPEGs of many sizes, drawn from a seed: ImageNet's shape without ImageNet.

Used by the tests, the loader benchmark and the README's ImageNet command, where no real
ImageNet can be downloaded. Each class is a hue with a shape whose position, size and
rotation vary, so a net can learn the classes from random crops.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _draw(rng: np.random.Generator, label: int, classes: int, width: int, height: int):
    from PIL import Image, ImageDraw

    hue = int(255 * label / classes)
    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    im = Image.new("HSV", (width, height), (int(rng.integers(0, 255)), 60, 60))
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        r = rng.uniform(0.15, 0.35) * min(width, height)
        colour = (hue, 200 + int(rng.integers(0, 55)), 150 + int(rng.integers(0, 105)))
        if label % 2:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            sides, turn = 3 + label % 3, rng.uniform(0, 360)
            draw.regular_polygon((cx, cy, r), n_sides=sides, rotation=turn, fill=colour)
    im = im.convert("RGB")
    noise = rng.integers(-12, 13, (height, width, 3))
    arr = np.clip(np.asarray(im, dtype=np.int16) + noise + np.array(background) // 4, 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def write_jpeg_tree(
    out: Path,
    per_class: int,
    classes: int = 4,
    sizes: tuple[int, int] = (200, 500),
    seed: int = 0,
    test_per_class: int = 0,
) -> Path:
    """``out/train/<class>/*.jpg`` (and ``out/val/...`` when ``test_per_class``): returns ``out``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", test_per_class)):
        for label in range(classes if count else 0):
            folder = out / split / f"class{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width, height = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
                path = folder / f"img{i:06d}.jpg"
                _draw(rng, label, classes, width, height).save(path, quality=85)
    return out


def link_copies(tree: Path, copies: int) -> int:
    """Hard-link every training image ``copies`` more times: a tree many times larger, no more disk."""
    made = 0
    for folder in sorted((tree / "train").iterdir()):
        originals = sorted(folder.iterdir())
        for k in range(copies):
            for path in originals:
                os.link(path, folder / f"{path.stem}-copy{k}{path.suffix}")
                made += 1
    return made
