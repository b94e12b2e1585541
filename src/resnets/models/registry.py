"""The registry of model names: a spec per name, filled by the builders' ``@register_model``.

Each builder (cifar.py, imagenet.py, preact.py, fast.py) is registered at its definition with
its plain twin beside it, so ``grep -rn plain56 src/`` finds where plain56 is defined. A builder
takes the network's keyword arguments; ``create_model`` adds the name's registered options,
checks what the user gave, and turns layer names into what the network takes.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..errors import ResnetsError, unknown_name
from .blocks import SHORTCUTS
from .contract import Network
from .init import INITS, gain_for
from .layers import ACTIVATIONS, INPUT_NORMS, NORMS, activation_factory, norm_factory, tat_slope
from .units import UNITS, highway_gate_bias

Family = Literal["cifar", "imagenet", "preact", "fast"]
FAMILIES: tuple[str, ...] = ("cifar", "imagenet", "preact", "fast")  # the order of `resnets models`
CIFAR_INPUT = (3, 32, 32)
IMAGENET_INPUT = (3, 224, 224)
# Each family's input size and classes, as its paper trains it.
_FAMILY_DATA: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar": (CIFAR_INPUT, 10),
    "imagenet": (IMAGENET_INPUT, 1000),
    "preact": (CIFAR_INPUT, 10),
    "fast": (CIFAR_INPUT, 10),
}


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
    build: Callable[..., Network]
    options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}
Builder = TypeVar("Builder", bound=Callable[..., Network])


def register_model(
    *, family: Family, depth: int, twin: str, options: dict[str, Any] | None = None
) -> Callable[[Builder], Builder]:
    """Register the decorated builder under its own name, and its plain twin ``twin`` (residual=False).

    ``depth`` is the paper's depth; ``options`` are the defaults ``create_model`` passes to both.
    """

    def register(build: Builder) -> Builder:
        input_size, classes = _FAMILY_DATA[family]
        for name, other, residual in ((build.__name__, twin, True), (twin, build.__name__, False)):
            if name in _REGISTRY:
                raise ValueError(f"model {name!r} is registered twice")
            _REGISTRY[name] = ModelSpec(
                name, family, depth, residual, other, input_size, classes,
                functools.partial(build, residual=residual), dict(options or {}),
            )  # fmt: skip
        return build

    return register


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
    "gate_bias": ("cifar",),
    "input_norm": ("cifar", "imagenet", "preact"),
}
UNIT_NAMES: tuple[str, ...] = ("basic", *UNITS)
_SHORTCUT_UNITS = ("fixup", "skipinit", "rezero")  # units of residual nets
_NORM_FREE_UNITS = ("fixup", "skipinit")  # shortcut units that replace BatchNorm (ReZero may keep it)
_PLAIN_NET_UNITS = ("highway", "dirac")  # a gated skip, an identity inside the kernel: built on plain nets


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern such as 'plain*'."""
    names = sorted(_REGISTRY, key=_sort_key)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def _sort_key(name: str) -> tuple[int, bool, bool, int, str]:
    spec = _REGISTRY[name]
    order = FAMILIES.index(spec.family)
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


def create_model(name: str, num_classes: int | None = None, **options: Any) -> Network:
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
    gate_bias = opts.pop("gate_bias", None)
    if unit == "highway":
        bias = highway_gate_bias(spec.depth) if gate_bias is None else float(gate_bias)
        opts["block_options"] = {"gate_bias": bias}
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
    _choice("input_norm", opts.get("input_norm", "none"), INPUT_NORMS)
    _check_gate_bias(unit, opts.get("gate_bias"))
    if unit in _SHORTCUT_UNITS and not spec.residual:
        raise ResnetsError(f"unit {unit!r} is a shortcut unit; use residual net {spec.twin}, not {spec.name}")
    if unit in _NORM_FREE_UNITS and opts.get("norm", "none") != "none":
        raise ResnetsError(f"unit {unit!r} trains without normalisation; drop norm={opts['norm']!r}")
    if (unit in _PLAIN_NET_UNITS or opts.get("long_skip")) and spec.residual:
        what = f"unit {unit!r}" if unit in _PLAIN_NET_UNITS else "long_skip"
        raise ResnetsError(f"{what} replaces identity shortcuts; use plain net {spec.twin}, not {spec.name}")
    if unit == "dirac" and opts.get("init", "he_fan_out") != "he_fan_out":
        raise ResnetsError(
            f"unit 'dirac' initialises its own kernels (alpha I + beta W/|W|); drop init={opts['init']!r}"
        )
    if unit != "basic" and opts.get("drop_path"):
        raise ResnetsError(f"drop_path works on the basic units only, not unit {unit!r}")
    if opts.get("long_skip") and opts.get("checkpoint_segments"):
        raise ResnetsError("long_skip cannot be combined with activation checkpointing")


def _check_gate_bias(unit: str, value: Any) -> None:
    """A highway gate's starting bias: a finite number, and only for highway units (None: by depth)."""
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ResnetsError(f"gate_bias must be a number, got {value!r}")
    if unit != "highway":
        raise ResnetsError(f"gate_bias sets highway gates; it needs unit='highway', not {unit!r}")


def model_options() -> dict[str, tuple[str, ...]]:
    """Option names create_model accepts, with the families each applies to."""
    return dict(_OPTIONS)
