"""Augmentations beyond crop and flip, done on a whole batch of tensors: RandAugment, TrivialAugment,
mixup and CutMix.

Each image of a batch gets its own operations and magnitudes, and every random draw comes from a
NumPy generator seeded by (run seed, epoch, batch, process rank): any batch of any epoch is rebuilt
exactly, so a resumed run sees the batches of one that never stopped, and nothing here touches
torch's global random state.

- RandAugment (Cubuk et al. 2019): two operations per image, each picked from the fourteen below,
  at magnitude 9 of 30 with a random sign where an operation has one (torchvision's defaults).
- TrivialAugment (Müller & Hutter 2021), "wide" ranges: one operation per image at a magnitude
  drawn per image from the 31 steps of its range.
- Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), timm's batch mode: one draw of
  lambda ~ Beta(alpha, alpha) per batch, the batch mixed with a shuffled copy of itself; CutMix
  pastes one box of the partner image of side sqrt(1 - lambda) of the image's, centred anywhere,
  clipped at the border, and lambda becomes the share of the image left uncovered. Given both,
  each batch takes one of them at a coin flip (timm's switch probability). The targets are the
  same mix of one-hot labels; label smoothing is applied to them in the loss.

The operations act on uint8 images of 1 or 3 channels (colour ones leave a grey image as it is);
geometric ones sample the nearest pixel about the image centre and fill with black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

POLICIES = ("randaugment", "trivialaugment")
OPS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
    "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
          "sharpness"}  # fmt: skip
STEPS = 30  # magnitudes are 0..30 steps of each operation's range (31 bins, as torchvision has them)
SWITCH_PROB = 0.5  # with both --mixup and --cutmix: the chance that a batch takes CutMix
GREY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights


@dataclass(frozen=True)
class Ranges:
    """The largest magnitude of each operation (step 30 of 30)."""

    shear: float  # horizontal (vertical) offset per pixel of height (width)
    translate: float  # pixels, or a fraction of the image's side where ``relative``
    relative: bool
    rotate: float  # degrees
    enhance: float  # brightness, colour, contrast and sharpness factors span 1 +- this
    posterize: int  # bits removed at the largest magnitude


RANGES = {
    "randaugment": Ranges(shear=0.3, translate=150 / 331, relative=True, rotate=30.0, enhance=0.9,
                          posterize=4),
    "trivialaugment": Ranges(shear=0.99, translate=32.0, relative=False, rotate=135.0, enhance=0.99,
                             posterize=6),
}  # fmt: skip
RANDAUGMENT_OPS, RANDAUGMENT_MAGNITUDE = 2, 9


def batch_draws(seed: int, epoch: int, batch: int, rank: int = 0) -> np.random.Generator:
    """The generator of one batch's augmentation draws: a pure function of where the batch is in the run."""
    return np.random.default_rng([seed, epoch, batch, rank, 0x6175676D])  # the last word tells it from others


# ----------------------------------------------------------------------------------------- policies


def apply_policy(images: torch.Tensor, policy: str, rng: np.random.Generator) -> torch.Tensor:
    """RandAugment or TrivialAugment on uint8 (B, C, H, W): a new batch, each image with its own draws."""
    if policy not in RANGES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (B, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    ranges, n = RANGES[policy], len(images)
    out = images.clone()
    for _ in range(RANDAUGMENT_OPS if policy == "randaugment" else 1):
        ops = rng.integers(0, len(OPS), n)
        if policy == "trivialaugment":
            steps = rng.integers(0, STEPS + 1, n)
        else:
            steps = np.full(n, RANDAUGMENT_MAGNITUDE)
        signs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        for k, name in enumerate(OPS):
            chosen = np.flatnonzero(ops == k)
            if name == "identity" or not len(chosen):
                continue
            amount = steps[chosen] / STEPS * (signs[chosen] if name in SIGNED else 1.0)
            index = torch.from_numpy(chosen).to(out.device)
            out[index] = apply_op(name, out[index], torch.from_numpy(amount).float(), ranges)
    return out


def apply_op(name: str, x: torch.Tensor, amount: torch.Tensor, ranges: Ranges) -> torch.Tensor:
    """Operation ``name`` on uint8 images ``x`` at per-image ``amount`` in [-1, 1] of its range."""
    amount = amount.to(x.device)
    h, w = x.shape[-2:]
    if name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        theta = torch.zeros(len(x), 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        if name == "shear_x":
            theta[:, 0, 1] = amount * ranges.shear * h / w
        elif name == "shear_y":
            theta[:, 1, 0] = amount * ranges.shear * w / h
        elif name in ("translate_x", "translate_y"):
            side = w if name == "translate_x" else h
            pixels = amount * ranges.translate * (side if ranges.relative else 1.0)
            theta[:, 0 if name == "translate_x" else 1, 2] = -2 * pixels / side
        else:
            angle = amount * math.radians(ranges.rotate)
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta[:, 0, 0], theta[:, 0, 1] = cos, sin * h / w
            theta[:, 1, 0], theta[:, 1, 1] = -sin * w / h, cos
        return _warp(x, theta)
    if name in ("brightness", "color", "contrast", "sharpness"):
        factor = (1.0 + amount * ranges.enhance).view(-1, 1, 1, 1)
        return _enhance(name, x, factor)
    if name == "posterize":
        bits = 8 - (amount.abs() * ranges.posterize).round().long()  # bits kept
        mask = torch.bitwise_left_shift(torch.full_like(bits, 255), 8 - bits) & 255
        mask = mask.to(torch.uint8).view(-1, 1, 1, 1)
        return x & mask
    if name == "solarize":
        threshold = (256.0 * (1.0 - amount.abs())).view(-1, 1, 1, 1)  # 256 at magnitude 0: nothing inverted
        return torch.where(x.float() >= threshold, 255 - x, x)
    if name == "autocontrast":
        return _autocontrast(x)
    if name == "equalize":
        return _equalize(x)
    raise ValueError(f"unknown operation {name!r}")


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` at ``theta`` (output -> input, normalised coordinates): nearest pixel, black outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of float images (B, 1, H, W); a one-channel image is its own."""
    if x.shape[1] != 3:
        return x[:, :1]
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return GREY[0] * r + GREY[1] * g + GREY[2] * b


def _enhance(name: str, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: blend the image with a degenerate version, by ``factor`` (1: unchanged)."""
    f = x.float()
    if name == "brightness":  # against black
        return (f * factor).clamp_(0, 255).round_().to(torch.uint8)
    if name == "color":  # against the grey image
        if x.shape[1] != 3:
            return x
        base = _grey(f)
    elif name == "contrast":  # against the image's mean grey level
        base = _grey(f).mean(dim=(1, 2, 3), keepdim=True)
    else:  # sharpness: against PIL's SMOOTH filter, the border pixels kept as they are
        if min(x.shape[-2:]) < 3:
            return x
        base = f.clone()
        # [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13: nine times the 3x3 mean, plus four times the centre
        base[..., 1:-1, 1:-1] = (9 * F.avg_pool2d(f, 3, stride=1) + 4 * f[..., 1:-1, 1:-1]) / 13
    return torch.lerp(base, f, factor).clamp_(0, 255).round_().to(torch.uint8)


def _lookup(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Each channel of each image through its own table of 256 values (B * C, 256)."""
    n, c, h, w = x.shape
    return table.gather(1, x.reshape(n * c, h * w).long()).to(torch.uint8).view(n, c, h, w)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to span 0..255; a flat channel stays as it is."""
    n, c = x.shape[:2]
    lo = x.amin(dim=(2, 3)).reshape(n * c, 1).double()
    hi = x.amax(dim=(2, 3)).reshape(n * c, 1).double()
    levels = torch.arange(256, dtype=torch.float64, device=x.device).expand(n * c, 256)
    flat = hi <= lo
    scale = 255.0 / torch.where(flat, torch.ones_like(hi), hi - lo)
    # PIL's table: int(level * scale + offset) in double precision, clipped to 0..255
    table = torch.where(flat, levels, (levels * scale + (-lo * scale)).clamp(0, 255).floor())
    return _lookup(x, table.long())


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel of each image, by PIL's rule (ImageOps.equalize)."""
    n, c, h, w = x.shape
    values = x.reshape(n * c, h * w).long()
    counts = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    counts.scatter_add_(1, values, torch.ones_like(values))
    # PIL spreads the pixels below the brightest value present over 255 steps...
    brightest = counts.gather(1, values.amax(1, keepdim=True)).squeeze(1)
    step = (h * w - brightest) // 255
    # ...and maps a value to the number of darker pixels, in steps, rounded.
    darker = counts.cumsum(1) - counts
    table = ((darker + (step // 2)[:, None]) // step.clamp_min(1)[:, None]).clamp(0, 255)
    levels = torch.arange(256, device=x.device).expand(n * c, 256)
    return _lookup(x, torch.where((step == 0)[:, None], levels, table))  # too few levels: unchanged


# ----------------------------------------------------------------------------------------- mixing


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 (B, num_classes) targets of int labels."""
    return F.one_hot(labels, num_classes).float()


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box of about ``1 - lam`` of the image, centred anywhere, clipped."""
    side = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * side), int(width * side)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def mix_batch(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, rng: np.random.Generator,
    mixup: float | None = None, cutmix: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mixup or CutMix of float images ``x`` (B, C, H, W) with a shuffled copy; (images, soft targets)."""
    use_cutmix = bool(cutmix) and (not mixup or rng.random() < SWITCH_PROB)
    alpha = cutmix if use_cutmix else mixup
    if not alpha:
        return x, one_hot(labels, num_classes)
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        top, bottom, left, right = cutmix_box(h, w, lam, rng)
        source, x = x, x.clone()
        x[..., top:bottom, left:right] = source[partner, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)  # the share each image keeps of its own
    else:
        x = lam * x + (1.0 - lam) * x[partner]
    targets = lam * one_hot(labels, num_classes) + (1.0 - lam) * one_hot(labels[partner], num_classes)
    return x, targets


# ----------------------------------------------------------------------------------------- a loader's


@dataclass(frozen=True)
class BatchAugment:
    """What a training loader adds to its batches; ``None`` fields are off."""

    num_classes: int
    seed: int = 0
    policy: str | None = None  # randaugment or trivialaugment, on uint8 images before normalising
    mixup: float | None = None  # Beta's alpha; 0 or None: off
    cutmix: float | None = None

    def draws(self, epoch: int, batch: int, rank: int = 0) -> np.random.Generator:
        """The generator of batch ``batch`` of ``epoch`` (on process ``rank``)."""
        return batch_draws(self.seed, epoch, batch, rank)

    def images(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The policy on a uint8 batch (before normalisation), or the batch as it is."""
        return apply_policy(x, self.policy, rng) if self.policy else x

    def mix(
        self, x: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix on a normalised batch: (images, soft targets), or the batch as it is."""
        if not (self.mixup or self.cutmix):
            return x, labels
        return mix_batch(x, labels, self.num_classes, rng, self.mixup, self.cutmix)

    def record(self) -> dict[str, Any]:
        """config.json's description of what the training batches get."""
        out: dict[str, Any] = {}
        if self.policy == "randaugment":
            out["policy"] = {"name": "randaugment", "ops": RANDAUGMENT_OPS,
                             "magnitude": RANDAUGMENT_MAGNITUDE, "steps": STEPS}  # fmt: skip
        elif self.policy == "trivialaugment":
            out["policy"] = {"name": "trivialaugment", "ranges": "wide", "steps": STEPS}
        if self.mixup or self.cutmix:
            out["mix"] = {"mixup": self.mixup or None, "cutmix": self.cutmix or None, "mode": "batch",
                          "switch_prob": SWITCH_PROB if self.mixup and self.cutmix else None}  # fmt: skip
        return out
