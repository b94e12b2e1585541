"""The flags of `resnets train` (and of `resnets sweep`, which takes them all), by group."""

from __future__ import annotations

import argparse
import dataclasses

S = argparse.SUPPRESS  # only flags the user gave reach the config; the rest keep its defaults
ONOFF = argparse.BooleanOptionalAction  # --x / --no-x: a recipe's switch can be turned off
# Repeatable PATTERN=VALUE flags: the setting, and how to give it (what a malformed one is told).
PATTERN_FLAGS = (
    ("decay_for", "--decay-for takes PATTERN=DECAY (e.g. 'layer3.*=5e-3')"),
    ("lr_scale_for", "--lr-scale-for takes PATTERN=SCALE (e.g. '*.bias=0.1')"),
)


def _default(name: str) -> str:
    """' (default X)' from TrainConfig itself, so help text and config never disagree."""
    from ..training.config import TrainConfig

    value = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
    return f" (default {value})"


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of `resnets train` (the sweep takes them all too)."""
    _run_flags(p)
    _optimiser_flags(p)
    _speed_flags(p)
    _model_flags(p)
    _data_flags(p)
    _augment_flags(p)


def _run_flags(p: argparse.ArgumentParser) -> None:
    from ..training.recipes import RECIPES
    from ..training.setup import DEFAULT_EPOCHS

    p.add_argument("--recipe", help=f"start from a named recipe ({', '.join(RECIPES)}); flags override it")
    p.add_argument("--config", help="JSON file of settings (config.json's keys); flags override it")
    p.add_argument("--model", help="model name (see `resnets models`)" + _default("model"))
    p.add_argument(
        "--out", help="run directory (default runs/MODEL-DATASET-DATE-TIME, never an existing one)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help=f"passes over the training set (default {DEFAULT_EPOCHS})")
    length.add_argument("--iterations", type=int, help="optimisation steps instead of epochs")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: each epoch)")
    p.add_argument("--log-every", type=int,
                   help="steps between rows of training loss and error alone in metrics.jsonl, no "
                   "evaluation (default: a row at each evaluation only)")  # fmt: skip
    p.add_argument(
        "--checkpoint-every", type=int, help="steps between checkpoints (default: each evaluation)"
    )
    p.add_argument("--keep-checkpoints", type=int, help="checkpoints kept" + _default("keep_checkpoints"))
    p.add_argument("--grad-every", type=int, help="record per-layer gradient norms every N steps")
    p.add_argument(
        "--log",
        action="append",
        choices=["tensorboard", "mlflow"],
        help="also log to TensorBoard (RUN/tensorboard; pip install 'resnets[tensorboard]') or MLflow (a "
        "SQLite store in RUN/mlflow: settings and every metrics.jsonl row; pip install 'resnets[mlflow]')",
    )
    p.add_argument(
        "--seed", type=int, help="seed of initialisation, data order and augmentation" + _default("seed")
    )
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N" + _default("device"))
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _optimiser_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch-size", type=int, help="images per step, over all processes" + _default("batch_size")
    )
    p.add_argument("--accumulate", type=int, help="micro-batches per step (gradient accumulation)")
    p.add_argument(
        "--opt", dest="optimizer", metavar="NAME",
        help="sgd; adamw (decoupled weight decay; wants a far smaller --lr, e.g. 1e-3); muon (Muon on "
        "the hidden conv filters, this SGD on the first conv, the classifier, BN and biases)"
        + _default("optimizer"),
    )  # fmt: skip
    p.add_argument("--lr", type=float, help="peak learning rate" + _default("lr"))
    p.add_argument(
        "--momentum", type=float, help="SGD momentum (Muon's: --muon-momentum)" + _default("momentum")
    )
    p.add_argument("--nesterov", action=ONOFF, help="Nesterov momentum")
    p.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), help="AdamW's (default 0.9 0.999)")
    p.add_argument(
        "--muon-lr-scale", type=float, metavar="X",
        help="--opt muon: Muon's lr is X times --lr (default 0.2: Muon's documented 0.02 at --lr 0.1)",
    )  # fmt: skip
    p.add_argument(
        "--muon-momentum", type=float, metavar="M",
        help="--opt muon: Muon's own (Nesterov) momentum" + _default("muon_momentum"),
    )  # fmt: skip
    p.add_argument(
        "--muon-ns-steps", type=int, metavar="K",
        help="--opt muon: Newton-Schulz iterations per update" + _default("muon_ns_steps"),
    )  # fmt: skip
    p.add_argument(
        "--muon-filter-norm", action=ONOFF,
        help="--opt muon: rescale each filter to norm sqrt(out channels) before every step, instead of "
        "weight decay on the filters (airbench94_muon)",
    )  # fmt: skip
    p.add_argument("--weight-decay", type=float, help="L2 weight decay" + _default("weight_decay"))
    p.add_argument(
        "--no-decay-on-norm-and-bias", action="store_true", help="no weight decay on BN and biases"
    )
    p.add_argument(
        "--norm-bias-lr-scale", type=float,
        help="BatchNorm shifts learn this many times faster" + _default("norm_bias_lr_scale"),
    )  # fmt: skip
    p.add_argument(
        "--decay-for", action="append", metavar="PATTERN=DECAY",
        help="weight decay of parameters whose names match PATTERN (e.g. 'layer3.*=5e-3'); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--lr-scale-for", action="append", metavar="PATTERN=SCALE",
        help="learning-rate multiplier of parameters whose names match PATTERN (Fixup: '*.bias=0.1'; "
        "weight decay unscaled); repeatable",
    )  # fmt: skip
    p.add_argument("--schedule", help="paper, cosine, onecycle, linear (to 0), constant, imagenet (/10 at "
                   "1/3, 2/3)" + _default("schedule"))  # fmt: skip
    p.add_argument(
        "--warmup", type=int, dest="warmup_steps", help="warm-up steps (paper: 400 at lr/10 for depth >= 110)"
    )
    p.add_argument("--label-smoothing", type=float, help="label smoothing" + _default("label_smoothing"))
    p.add_argument(
        "--ema", type=float, dest="ema_decay", help="evaluate/save a moving average of the weights"
    )
    p.add_argument(
        "--lookahead",
        action=argparse.BooleanOptionalAction,
        help="reset the weights to a slow average every 5 steps",
    )
    p.add_argument("--sync-bn", action=ONOFF, help="BatchNorm over the global batch (torchrun, CUDA)")
    p.add_argument("--bn-group", type=int, metavar="N",
                   help="BatchNorm statistics over groups of N images (paper-cifar: 64)")  # fmt: skip
    p.add_argument("--init-from", help="torchvision/timm-layout weights (.pth or .safetensors) to start from")
    _fine_tuning_flags(p)


def _fine_tuning_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--freeze", metavar="PART",
        help="train nothing up to and including PART (stem or layerN): weights as loaded, BatchNorm "
        "statistics kept (eval mode)",
    )  # fmt: skip
    p.add_argument(
        "--freeze-backbone", action=ONOFF, help="train only the classifier fc (frozen as --freeze)"
    )
    p.add_argument(
        "--head-lr-scale", type=float, metavar="X",
        help="the classifier fc learns at X times the lr (times any --lr-scale-for and --layer-decay factor)"
        + _default("head_lr_scale"),
    )  # fmt: skip
    p.add_argument(
        "--layer-decay", type=float, metavar="D",
        help="layer-wise lr decay, 0 < D <= 1: the head x1, the last stage xD, the one before xD^2, ..., "
        "the stem xD^(stages+1); multiplies the other lr scales",
    )  # fmt: skip


def _speed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", help="fp32, bf16, fp16 (CUDA) or auto: the faster of fp32 and bf16 in a "
                   "short trial on this machine, cached" + _default("precision"))  # fmt: skip
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="NHWC memory format (default: whichever layout the trial finds faster)",
    )
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction,
        help="torch.compile the model (default: where its measured saving over the run repays its warm-up)",
    )  # fmt: skip
    p.add_argument(
        "--cuda-graphs", action=argparse.BooleanOptionalAction,
        help="replay the compiled step as CUDA graphs (one GPU; default: where a trial measures it faster)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-activations", nargs="?", const="auto", metavar="SEGMENTS",
        help="recompute activations in the backward pass, in SEGMENTS runs of blocks (default sqrt(blocks))",
    )  # fmt: skip


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shortcut", choices=["A", "B", "C"], help="shortcut option (residual nets)")
    p.add_argument("--zero-init-residual", action=ONOFF, help="zero each block's last BN gamma")
    p.add_argument("--width", type=float, help="width multiplier")
    p.add_argument(
        "--drop-path", type=float, help="stochastic depth: drop probability of the last block (paper: 0.5)"
    )
    p.add_argument("--act", help="activation: relu (default), leaky_relu, elu, selu, gelu, tanh, "
                   "trelu (TAT's; also --act tat)")  # fmt: skip
    p.add_argument("--act-slope", type=float, help="leaky_relu's negative slope (default 0.01); trelu: TAT's")
    p.add_argument("--norm", help="normalisation: batchnorm (default) or none")
    p.add_argument("--init", help="he_fan_out (default), he_fan_in, xavier, orthogonal, delta_orthogonal, "
                   "dirac, lsuv")  # fmt: skip
    p.add_argument("--dropout", type=float, dest="drop_rate", help="dropout between a block's convolutions")
    p.add_argument("--unit", help="basic (default), highway, dirac (plain nets), fixup, skipinit, rezero "
                   "(residual nets; rezero keeps BN unless --norm none)")  # fmt: skip
    p.add_argument("--input-norm", help="none (default) or per-location: a constant channel added and each "
                   "pixel's channels scaled to mean square 1 (the dks README's advice for TAT)")  # fmt: skip
    p.add_argument("--gate-bias", type=float,
                   help="highway gates' starting bias (default by depth: -2 at 20, -3 from 30)")  # fmt: skip
    p.add_argument("--long-skip", action=ONOFF, help="one skip over each stage (plain nets)")


def _data_flags(p: argparse.ArgumentParser) -> None:
    from ..data import list_datasets

    p.add_argument("--dataset", help=f"{', '.join(list_datasets())}" + _default("dataset"))
    p.add_argument("--data-dir", help="folder holding the dataset's files (shards: a folder or URL)")
    p.add_argument("--train-subset", type=int, help="train on a seeded subset of this many images")
    p.add_argument(
        "--val-split", type=int, metavar="N",
        help="hold N training images out (the same N for every seed) and report val_error on them",
    )  # fmt: skip
    p.add_argument(
        "--eval-flip",
        action=argparse.BooleanOptionalAction,
        help="test-time augmentation: average with the mirror",
    )
    p.add_argument(
        "--eval-translate", action=ONOFF,
        help="test-time augmentation: also copies shifted by one pixel (6 views with --eval-flip)",
    )  # fmt: skip
    p.add_argument(
        "--final-eval-only",
        action=argparse.BooleanOptionalAction,
        help="evaluate once at the end, not every epoch",
    )
    p.add_argument("--alternate-flip", action=ONOFF, help="mirror each image every other epoch")
    p.add_argument("--crop-padding", type=int, help="random-crop shift in pixels (default: the dataset's)")
    p.add_argument(
        "--image-size",
        type=int,
        help="imagefolder/shards: square size in memory (32), training crop when streamed (224)",
    )
    p.add_argument(
        "--test-size", type=int, help="streamed: the evaluation centre crop (default --image-size)"
    )
    p.add_argument(
        "--loader",
        choices=["auto", "memory", "stream"],
        help="imagefolder: decode into memory or stream from disk (default auto: by size)",
    )
    p.add_argument("--workers", type=int, help="streamed: decoding processes per training process "
                   "(default: the cores left over, at most 8)")  # fmt: skip
    p.add_argument(
        "--resize-from",
        type=int,
        help="progressive resizing: train the first epochs on smaller images, growing from this side to the "
        "full size by 75%% of the epochs (streamed data: smaller crops; in memory: images scaled down)",
    )


def _augment_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--randaugment", action=ONOFF,
        help="RandAugment on the training images: 2 of 14 operations per image at magnitude 9 of 30 "
        "(torchvision's defaults), on the batch's tensors",
    )  # fmt: skip
    p.add_argument(
        "--trivialaugment", action=ONOFF,
        help="TrivialAugment (wide) on the training images: one operation per image at a random magnitude",
    )  # fmt: skip
    p.add_argument(
        "--mixup", type=float, metavar="ALPHA",
        help="mix each training batch with a shuffled copy, lambda ~ Beta(ALPHA, ALPHA) per batch, soft "
        "targets (timm uses 0.8; 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--cutmix", type=float, metavar="ALPHA",
        help="paste a box of a shuffled copy into each training batch, area 1 - lambda, lambda ~ Beta(ALPHA, "
        "ALPHA) (timm uses 1.0; 0: off); with --mixup, one or the other per batch at a coin flip",
    )  # fmt: skip
