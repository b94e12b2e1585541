"""Decoding and augmenting one image file: torchvision's ImageNet reference, done with Pillow.

Training takes a RandomResizedCrop (scale 0.08-1, aspect 3/4-4/3) and a coin-flip mirror;
evaluation resizes the short side to ``size / 0.875`` and cuts the centre ``size`` square.
Both ask libjpeg to decode at a reduced scale when the crop they need is that much larger
than the output (simplejpeg's M/8 scaling when it is installed, else Pillow's 1/2^k draft
mode): the reduced decode is cheaper and the output keeps at least the final resolution.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np

from ..errors import ResnetsError
from .imagefolder import MAX_PIXELS, _to_rgb

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels of the original
EVAL_CROP = 0.875  # 224 of 256


def random_resized_box(
    width: int, height: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> Box:
    """A box of random area (``scale`` of the image) and aspect (log-uniform in ``ratio``)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # Ten misses (very elongated images): the largest centred box within the ratio limits.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(width: int, height: int, size: int) -> tuple[Box, tuple[int, int]]:
    """The centre ``size`` square after the short side is resized to ``size / 0.875``, in original pixels."""
    short = round(size / EVAL_CROP)
    scale = short / min(width, height)
    side = size / scale  # the crop's side in original pixels
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side), (size, size)


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


SIMPLEJPEG = _simplejpeg()
DECODER = "simplejpeg" if SIMPLEJPEG is not None else "pillow"


def _needed(width: int, height: int, box: Box, size: int) -> tuple[int, int]:
    """The smallest decoded size at which ``box`` still spans ``size`` pixels each way."""
    return math.ceil(width * size / (box[2] - box[0])), math.ceil(height * size / (box[3] - box[1]))


def _scaled_jpeg(data: bytes, size: int, box_of):
    """libjpeg-turbo's scaled decode (any M/8) through simplejpeg; None where it does not apply."""
    from PIL import Image

    try:
        height, width, colorspace, _ = SIMPLEJPEG.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray") or width * height > MAX_PIXELS:
        return None  # CMYK, odd JPEGs and bombs: Pillow's path names or handles them
    box = box_of(width, height)
    need = _needed(width, height, box, size)
    try:
        arr = SIMPLEJPEG.decode_jpeg(data, colorspace="RGB", min_width=need[0], min_height=need[1])
    except ValueError:
        raise ResnetsError("corrupt JPEG data") from None
    sx, sy = arr.shape[1] / width, arr.shape[0] / height
    box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    return Image.fromarray(arr, "RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)


def _pillow(data: bytes, size: int, box_of, draft: bool):
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ResnetsError(f"{im.width}x{im.height} is too large an image")
            width, height = im.size
            box = box_of(width, height)
            # Decode at the smallest 1/2^k scale that still leaves the box at least `size` wide.
            if draft and im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
                im.draft("RGB", _needed(width, height, box, size))
            sx, sy = im.width / width, im.height / height
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            return _to_rgb(im).resize((size, size), Image.Resampling.BILINEAR, box=box)


def decode(data: bytes, size: int, box_of, flip: bool = False, decoder: str = DECODER) -> np.ndarray:
    """Decode ``data``, cut ``box_of(width, height)`` and resize it to ``size``: uint8 (3, size, size).

    ``decoder``: "simplejpeg" (scaled JPEG decoding, when installed), "pillow-draft" (Pillow's 1/2^k
    draft mode) or "pillow" (full decode); every non-JPEG file goes through Pillow.
    """
    from PIL import Image

    out = None
    if decoder == "simplejpeg" and SIMPLEJPEG is not None and data[:2] == b"\xff\xd8":
        out = _scaled_jpeg(data, size, box_of)
    if out is None:
        out = _pillow(data, size, box_of, draft=decoder != "pillow")
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()


def train_image(data: bytes, size: int, seed: int, decoder: str = DECODER) -> np.ndarray:
    """A RandomResizedCrop of ``size`` and a mirror on a coin flip, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    flip = bool(rng.integers(0, 2))
    return decode(data, size, lambda w, h: random_resized_box(w, h, rng), flip, decoder)


def eval_image(data: bytes, size: int, decoder: str = DECODER) -> np.ndarray:
    """The centre crop torchvision evaluates ImageNet on (resize 256, crop 224 at size 224)."""
    return decode(data, size, lambda w, h: centre_box(w, h, size)[0], decoder=decoder)
