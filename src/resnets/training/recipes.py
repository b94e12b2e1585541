"""Named training recipes: bundles of settings that the user's own flags override."""

from __future__ import annotations

from typing import Any

from ..errors import unknown_name

# Modern tricks on the paper's own ResNet-20, kept at the paper's shape: a one-cycle schedule, Nesterov
# momentum, label smoothing, decay on weights only, an average of the weights, and test-time flips.
# 40 epochs reached 92.06 % in 24 minutes on a 2-core CPU with AMX (docs/results.md).
# No zero-init of the last BN: with option-A shortcuts it starts the net with the zero-padded
# channels dead, and it measured worse (digits, 15 epochs: 1.39% vs 0.00% test error).
RESNET20_FAST = {
    "model": "resnet20", "dataset": "cifar10", "epochs": 40, "batch_size": 128, "lr": 0.2,
    "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "no_decay_on_norm_and_bias": True,
    "schedule": "onecycle", "label_smoothing": 0.1, "ema_decay": 0.999, "eval_flip": True,
}  # fmt: skip

# The fast CIFAR-10 trainers' habits (airbench94's settings, which reach 94.01 % in 9.9 epochs)
# on a residual net shaped for the matrix units (models/fast.py): batch 1024, airbench's learning
# rate of 11.5 per 1024 summed losses = 1.5 on the mean loss at Nesterov momentum 0.85, its decay
# per step (0.002 = 1.5 x 1.33e-3), BatchNorm shifts learning 64x faster, label smoothing 0.2,
# shifts of 2 pixels, each image mirrored every other epoch, lookahead, one evaluation at the
# end with six views (flips x one-pixel shifts), and no weight average: an EMA (0.98) of the
# same runs measured 0.1-0.4 points worse than their last weights. At 3/4 width (48/192/192
# channels) 14 epochs fit in 20 minutes on 2 CPU cores of ~0.32 fp32 TFLOP/s (docs/results.md).
FAST94 = {
    "model": "fastresnet", "dataset": "cifar10", "epochs": 14, "batch_size": 1024, "lr": 1.5,
    "momentum": 0.85, "nesterov": True, "weight_decay": 1.33e-3, "no_decay_on_norm_and_bias": True,
    "norm_bias_lr_scale": 64.0, "schedule": "onecycle", "label_smoothing": 0.2, "lookahead": True,
    "crop_padding": 2, "alternate_flip": True, "eval_flip": True, "eval_translate": True,
    "final_eval_only": True, "model_options": {"width": 0.75},
}  # fmt: skip

# The paper's ResNet-20 accuracy (91.25 %) as early as possible: the same recipe on the net at half
# width (32/128/128 channels, a quarter of the full net's FLOPs) for 8 epochs, without lookahead
# (7 epochs with it measured 90.51 %, 8 without 90.98 %, one seed each).
FAST = FAST94 | {"epochs": 8, "lookahead": False, "model_options": {"width": 0.5}}

# The same two with Muon on the hidden conv filters and this Nesterov SGD on the rest (--opt muon:
# the whitening stem is frozen, so Muon takes every conv that learns, SGD the BN shifts, the stem's
# bias and the head), the split of airbench94_muon (github.com/KellerJordan/cifar10-airbench), which
# reaches 94.01 % in 8 epochs where airbench94 needs 9.9. Its Muon: lr 0.24 (here 0.16 x the peak lr
# of 1.5), Nesterov momentum 0.6 (torch's Muon defaults to 0.95). What else it changes is not taken
# here, each being a trick to measure on its own: batch 2000, a linear decay from the first step (no
# warm-up), no lookahead, no weight decay on the filters, each filter rescaled to norm sqrt(out
# channels) before every step, 3 Newton-Schulz iterations (torch's Muon: 5), logits scaled by 1/256.
# Measured one at a time on fast94-muon (switches --schedule linear, --no-lookahead, --muon-filter-norm,
# --muon-ns-steps 3; one seed each): the linear schedule cost 1.11 points, the others +0.05 to +0.11,
# all four -0.12, and 3 steps cost fast-muon 0.39: none is taken.
# fast94-muon measured (docs/results.md): 93.15 % at 11 epochs (3 seeds), SGD at 11 93.16 % (1 seed); 11 is
# fast94's 14 times airbench's 8 / 9.9 (11.31), rounded, 413 M training FLOPs per image at width 0.75:
# 0.223 PFLOP, inside issue 26's 0.25. fast-muon started the same way (8 -> 6 epochs, 90.89 %, 3 seeds,
# 0.058 PFLOP); it now keeps fast's 8 epochs and trains the first three on the images scaled down to
# 24 px (--resize-from 24; 0.52 of the FLOPs of 32 px), 0.064 PFLOP in all, inside issue 26's 0.065:
# 91.20 +- 0.07 % over 5 seeds, against 91.04 +- 0.21 % for the budget spent at full size (6.69 epochs,
# 5 seeds, Welch p = 0.15) and 90.99 % growing from 16 px over 10 epochs (AMD EPYC family 25 model 17).
MUON = {"optimizer": "muon", "muon_lr_scale": 0.16, "muon_momentum": 0.6}
FAST94_MUON = FAST94 | MUON | {"epochs": 11}
FAST_MUON = FAST | MUON | {"resize_from": 24}

# torchvision's ResNet-50 reference (references/classification, "ResNet" section): 90 epochs of SGD,
# lr 0.1 for a batch of 256 divided by 10 at epochs 30 and 60, weight decay 1e-4, 224 px
# RandomResizedCrop + flip, evaluated on the 224 centre of a 256 resize. torchvision's weights
# trained this way reach 76.13 % top-1 (ResNet50_Weights.IMAGENET1K_V1). Scale lr with the batch.
IMAGENET = {
    "model": "resnet50", "dataset": "imagefolder", "epochs": 90, "batch_size": 256, "lr": 0.1,
    "momentum": 0.9, "weight_decay": 1e-4, "schedule": "imagenet",
    "dataset_options": {"loader": "stream", "image_size": 224, "test_size": 224},
}  # fmt: skip

# A short modern recipe in the manner of the fast ImageNet trainers (FFCV's ResNet-50 configs, which
# report about 71 % top-1 after 16 epochs and 78 % after 88 on 8 A100s): a large batch with a one-cycle
# schedule, label smoothing 0.1, no decay on BN and biases, a weight average, low-resolution crops
# growing from 160 to 192 px, and evaluation at a higher 224 px (train-test resolution discrepancy).
IMAGENET_FAST = IMAGENET | {
    "epochs": 16, "batch_size": 1024, "lr": 1.7, "nesterov": True, "weight_decay": 5e-5,
    "no_decay_on_norm_and_bias": True, "schedule": "onecycle", "label_smoothing": 0.1,
    "ema_decay": 0.9998, "resize_from": 160,
    "dataset_options": {"loader": "stream", "image_size": 192, "test_size": 224},
}  # fmt: skip

# He et al. 2015, Sec. 4.2, for the CIFAR-10 nets (pick one with --model): 64k iterations at batch 128,
# lr 0.1 divided by 10 at 32k and 48k (the "paper" schedule: at 50 % and 75 %), momentum 0.9, weight
# decay 1e-4, 4-pixel padding with random 32x32 crops and flips, lr 0.01 for the first 400 iterations
# of nets of depth >= 110, and BatchNorm statistics over 64-image halves of each batch, as on the
# paper's two GPUs (--bn-group 64). The paper tuned on a 45k/5k split (add --val-split 5000) and
# reports nets trained on all 50k. Differences that remain: images are normalised by the per-channel
# mean and std rather than the per-pixel mean subtracted; the paper's warm-up ran "until the training
# error is below 80 %" (about 400 iterations), ours is fixed at 400; He init by fan-out, as torchvision
# (the init paper the ResNet paper cites allows fan-in or fan-out: --init he_fan_in for the other);
# precision is the run's own choice (auto: bf16 autocast where it measures faster, as on the Zen 4 CPU
# where plain20 at batch 128 trained 1.7x faster in bf16), recorded per run.
PAPER_CIFAR = {
    "model": "resnet20", "dataset": "cifar10", "iterations": 64000, "batch_size": 128, "lr": 0.1,
    "momentum": 0.9, "weight_decay": 1e-4, "schedule": "paper", "bn_group": 64,
}  # fmt: skip

RECIPES: dict[str, dict[str, Any]] = {
    "fast": FAST, "fast94": FAST94, "fast-muon": FAST_MUON, "fast94-muon": FAST94_MUON,
    "resnet20-fast": RESNET20_FAST, "imagenet": IMAGENET, "imagenet-fast": IMAGENET_FAST,
    "paper-cifar": PAPER_CIFAR,
}  # fmt: skip


def apply_recipe(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The recipe's settings with the user's ``given`` ones on top (option dicts merged)."""
    if name not in RECIPES:
        raise unknown_name("recipe", name, list(RECIPES))
    return merge_settings(RECIPES[name], given) | {"recipe": name}


def merge_settings(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` on top of ``base``: option dicts merge, and a given length replaces the other kind."""
    merged = base | given
    for key in ("model_options", "dataset_options"):
        if isinstance(base.get(key), dict) and isinstance(given.get(key), dict):
            merged[key] = base[key] | given[key]
    for length, other in (("epochs", "iterations"), ("iterations", "epochs")):
        if length in given and other not in given:
            merged.pop(other, None)
    return merged
