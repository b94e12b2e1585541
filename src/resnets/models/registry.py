"""Model names: every network of the residual-learning papers and its plain twin."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ResnetsError, unknown_name
from .blocks import SHORTCUTS, BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .fast import FastResNet
from .init import INITS, gain_for
from .layers import ACTIVATIONS, NORMS, activation_factory, norm_factory, tat_slope
from .networks import PreActResNet, ResNet
from .units import UNITS


@dataclass(frozen=True)
class ModelSpec:
    """What a registered name builds: its family, paper depth, twin and default options."""

    name: str
    family: str  # "cifar", "imagenet", "preact" or "fast"
    depth: int
    residual: bool
    twin: str
    input_size: tuple[int, int, int]
    num_classes: int
    build: Callable[..., nn.Module]
    options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}

CIFAR_INPUT = (3, 32, 32)
IMAGENET_INPUT = (3, 224, 224)

# Options a user may pass to create_model, with the families that accept them.
_OPTIONS = {
    "in_channels": ("cifar", "imagenet", "preact", "fast"),
    "shortcut": ("cifar", "imagenet", "preact"),
    "zero_init_residual": ("cifar", "imagenet", "preact"),
    "width": ("cifar", "imagenet", "preact", "fast"),
    "groups": ("imagenet", "preact"),
    "width_per_group": ("imagenet", "preact"),
    "drop_path": ("cifar", "imagenet", "preact"),
    "checkpoint_segments": ("cifar", "imagenet", "preact"),
    # The remedies a deep plain net might try instead of identity shortcuts (resnets remedies).
    "act": ("cifar", "imagenet", "preact"),
    "act_slope": ("cifar", "imagenet", "preact"),
    "tat_eta": ("cifar",),
    "norm": ("cifar", "imagenet", "preact"),
    "init": ("cifar", "imagenet", "preact"),
    "drop_rate": ("cifar",),
    "unit": ("cifar",),
    "long_skip": ("cifar",),
}
UNIT_NAMES: tuple[str, ...] = ("basic", *UNITS)
_NORM_FREE_UNITS = ("fixup", "skipinit", "rezero")  # shortcut units that replace BatchNorm
_GATED_UNITS = ("highway",)  # skip connections short of an identity: built on plain nets


def _cifar(n: int, residual: bool, block: type[nn.Module] = BasicBlock, **kw: Any) -> ResNet:
    return ResNet(block, [n] * 3, [16, 32, 64], stem="cifar", residual=residual, **kw)


def _imagenet(block: type, layers: list[int], residual: bool, **kw: Any) -> ResNet:
    return ResNet(block, layers, [64, 128, 256, 512], stem="imagenet", residual=residual, **kw)


def _preact(block: type, n: int, residual: bool, **kw: Any) -> PreActResNet:
    return PreActResNet(block, [n] * 3, [16, 32, 64], stem="cifar", residual=residual, **kw)


def _register_pair(
    residual_name: str,
    plain_name: str,
    family: str,
    depth: int,
    build: Callable[..., nn.Module],
    options: dict[str, Any],
) -> None:
    input_size, classes = (IMAGENET_INPUT, 1000) if family == "imagenet" else (CIFAR_INPUT, 10)
    for name, twin, residual in (
        (residual_name, plain_name, True),
        (plain_name, residual_name, False),
    ):
        _REGISTRY[name] = ModelSpec(
            name, family, depth, residual, twin, input_size, classes,
            lambda residual=residual, **kw: build(residual=residual, **kw), dict(options),
        )  # fmt: skip


def _register_all() -> None:
    # He et al. 2015, Sec. 4.2: 6n+2 layers, option A shortcuts on CIFAR.
    for n in (3, 5, 7, 9, 18, 200):
        d = 6 * n + 2
        _register_pair(
            f"resnet{d}", f"plain{d}", "cifar", d,
            lambda n=n, **kw: _cifar(n, **kw), {"shortcut": "A"},
        )  # fmt: skip
    # He et al. 2015, Table 1: ImageNet nets; option B shortcuts as in torchvision.
    imagenet = {
        18: (BasicBlock, [2, 2, 2, 2]),
        34: (BasicBlock, [3, 4, 6, 3]),
        50: (Bottleneck, [3, 4, 6, 3]),
        101: (Bottleneck, [3, 4, 23, 3]),
        152: (Bottleneck, [3, 8, 36, 3]),
    }
    for d, (block, layers) in imagenet.items():
        _register_pair(
            f"resnet{d}", f"plain{d}", "imagenet", d,
            lambda block=block, layers=layers, **kw: _imagenet(block, layers, **kw),
            {"shortcut": "B"},
        )  # fmt: skip
    # Wide ResNet and ResNeXt under torchvision's names: options on the bottleneck nets.
    variants = {
        "wide_resnet50_2": ("wide_plain50_2", 50, {"width": 2.0}),
        "wide_resnet101_2": ("wide_plain101_2", 101, {"width": 2.0}),
        "resnext50_32x4d": ("plainnext50_32x4d", 50, {"groups": 32, "width_per_group": 4}),
        "resnext101_32x8d": ("plainnext101_32x8d", 101, {"groups": 32, "width_per_group": 8}),
        "resnext101_64x4d": ("plainnext101_64x4d", 101, {"groups": 64, "width_per_group": 4}),
    }
    for name, (plain, d, opts) in variants.items():
        block, layers = imagenet[d]
        _register_pair(
            name, plain, "imagenet", d,
            lambda block=block, layers=layers, **kw: _imagenet(block, layers, **kw),
            {"shortcut": "B", **opts},
        )  # fmt: skip
    # He et al. 2016: pre-activation units; projection shortcuts as in the authors' code.
    for d, block, n in (
        (110, PreActBasicBlock, 18),
        (164, PreActBottleneck, 18),
        (1001, PreActBottleneck, 111),
    ):
        _register_pair(
            f"preact_resnet{d}", f"preact_plain{d}", "preact", d,
            lambda block=block, n=n, **kw: _preact(block, n, **kw), {"shortcut": "B"},
        )  # fmt: skip
    # A net shaped for fast CIFAR training (models/fast.py): whitening stem, 6 convs, linear head.
    _register_pair("fastresnet", "fastplain", "fast", 8, FastResNet, {})


_register_all()


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern such as 'plain*'."""
    names = sorted(_REGISTRY, key=_sort_key)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def _sort_key(name: str) -> tuple[int, bool, bool, int, str]:
    spec = _REGISTRY[name]
    order = {"cifar": 0, "imagenet": 1, "preact": 2, "fast": 3}[spec.family]
    variant = any(k in spec.options for k in ("width", "groups"))
    return (order, not spec.residual, variant, spec.depth, name)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered name, or a clear error that suggests close names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("model", name, _REGISTRY, "list them with `resnets models`") from None


def twin_of(name: str) -> str:
    """The plain twin of a residual net, or the residual net of a plain one."""
    return get_spec(name).twin


def create_model(name: str, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build a registered network with He initialisation; options: see ``resnets models``."""
    spec = get_spec(name)
    opts = {**spec.options, **options}
    _check_options(spec, options, opts)
    classes = spec.num_classes if num_classes is None else num_classes
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ResnetsError(f"num_classes must be a positive integer, got {classes!r}")
    return spec.build(num_classes=classes, **_layer_options(spec, opts))


def _layer_options(spec: ModelSpec, opts: dict[str, Any]) -> dict[str, Any]:
    """Names of layers and units turned into what the network takes (factories, block types)."""
    opts = dict(opts)
    act, slope, eta = opts.pop("act", "relu"), opts.pop("act_slope", None), opts.pop("tat_eta", 0.9)
    unit = opts.pop("unit", "basic")
    norm = opts.pop("norm", "none" if unit in _NORM_FREE_UNITS else "batchnorm")
    if act == "trelu" and slope is None:  # TAT: the slope that gives the whole net C_f(0) = eta
        slope = tat_slope(spec.depth - 1, eta)
    slope = 0.01 if slope is None else float(slope)
    if act != "relu":
        opts["act_layer"] = activation_factory(act, slope)
    if norm != "batchnorm":
        opts["norm_layer"] = norm_factory(norm)
    if act != "relu" or opts.get("init", "he_fan_out") != "he_fan_out":
        opts["init_gain"] = gain_for(act, slope)
    if unit != "basic":
        opts["block"] = UNITS[unit]
    return opts


def _check_options(spec: ModelSpec, given: dict[str, Any], opts: dict[str, Any]) -> None:
    for key in given:
        if key not in _OPTIONS:
            raise unknown_name(f"option for {spec.name}", key, _OPTIONS)
        if spec.family not in _OPTIONS[key]:
            raise ResnetsError(f"option {key!r} does not apply to {spec.family} model {spec.name}")
    if spec.family != "fast" and opts.get("shortcut") not in SHORTCUTS:
        raise ResnetsError(f"shortcut must be one of A, B, C; got {opts.get('shortcut')!r}")
    if not spec.residual and "shortcut" in given:
        raise ResnetsError(f"{spec.name} is a plain net and has no shortcuts; drop 'shortcut'")
    if not spec.residual and opts.get("zero_init_residual"):
        raise ResnetsError(
            f"zero_init_residual would zero every block of plain net {spec.name}; it needs shortcuts"
        )
    drop = opts.get("drop_path", 0.0)
    if not isinstance(drop, int | float) or isinstance(drop, bool) or not 0 <= drop < 1:
        raise ResnetsError(f"drop_path must be a probability in [0, 1), got {drop!r}")
    if drop and not spec.residual:
        raise ResnetsError(
            f"drop_path needs shortcuts: a dropped block of plain net {spec.name} would cut the signal"
        )
    segments = opts.get("checkpoint_segments", 0)
    if segments != "auto" and (not isinstance(segments, int) or isinstance(segments, bool) or segments < 0):
        raise ResnetsError(
            f"checkpoint_segments must be 'auto' or an integer >= 0 (0: off), not {segments!r}"
        )
    _check_remedy_options(spec, given, opts)
    for key in ("in_channels", "groups", "width_per_group"):
        value = opts.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ResnetsError(f"{key} must be a positive integer, got {value!r}")
    width = opts.get("width", 1.0)
    if not isinstance(width, int | float) or isinstance(width, bool) or not 0 < width <= 64:
        raise ResnetsError(f"width must be a number in (0, 64], got {width!r}")
    basic_blocks = spec.family != "cifar" and spec.depth in (18, 34, 110)
    if basic_blocks and (opts.get("groups", 1) != 1 or opts.get("width_per_group", 64) != 64):
        raise ResnetsError(f"groups and width_per_group need bottleneck blocks; {spec.name} has basic blocks")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ResnetsError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_remedy_options(spec: ModelSpec, given: dict[str, Any], opts: dict[str, Any]) -> None:
    """Activations, normalisation, initialisation, dropout and units: sensible and compatible."""
    _choice("act", opts.get("act", "relu"), ACTIVATIONS)
    _choice("norm", opts.get("norm", "batchnorm"), NORMS)
    _choice("init", opts.get("init", "he_fan_out"), INITS)
    unit = opts.get("unit", "basic")
    _choice("unit", unit, UNIT_NAMES)
    for key, low, high in (("act_slope", 0.0, 1.0), ("drop_rate", 0.0, 1.0), ("tat_eta", 0.0, 1.0)):
        value = opts.get(key, low if key != "tat_eta" else 0.9)
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value < high:
            raise ResnetsError(f"{key} must be a number in [{low:g}, {high:g}), got {value!r}")
    if not isinstance(opts.get("long_skip", False), bool):
        raise ResnetsError(f"long_skip must be true or false, got {opts['long_skip']!r}")
    if unit in _NORM_FREE_UNITS:
        if not spec.residual:
            raise ResnetsError(
                f"unit {unit!r} is a shortcut unit; use residual net {spec.twin}, not {spec.name}"
            )
        if opts.get("norm", "none") != "none":
            raise ResnetsError(f"unit {unit!r} trains without normalisation; drop norm={opts['norm']!r}")
    if (unit in _GATED_UNITS or opts.get("long_skip")) and spec.residual:
        what = f"unit {unit!r}" if unit in _GATED_UNITS else "long_skip"
        raise ResnetsError(f"{what} replaces identity shortcuts; use plain net {spec.twin}, not {spec.name}")
    if unit != "basic" and opts.get("drop_path"):
        raise ResnetsError(f"drop_path works on the basic units only, not unit {unit!r}")
    if opts.get("long_skip") and opts.get("checkpoint_segments"):
        raise ResnetsError("long_skip cannot be combined with activation checkpointing")


def model_options() -> dict[str, tuple[str, ...]]:
    """Option names create_model accepts, with the families each applies to."""
    return dict(_OPTIONS)
