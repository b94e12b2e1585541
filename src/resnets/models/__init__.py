"""The model zoo: residual networks of He et al. 2015/2016 and their plain twins."""

# The builder modules register their names on import: every name is defined in one of them.
from . import cifar, fast, imagenet, preact  # noqa: F401
from .blocks import BasicBlock, Bottleneck, PadShortcut, PreActBasicBlock, PreActBottleneck
from .complexity import ModelSummary, count_depth, count_flops, count_params, summarize
from .contract import Network, ResidualUnit
from .networks import PreActResNet, ResNet
from .registry import ModelSpec, create_model, get_spec, list_models, model_options, register_model, twin_of

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ModelSpec",
    "ModelSummary",
    "Network",
    "PadShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PreActResNet",
    "ResNet",
    "ResidualUnit",
    "count_depth",
    "count_flops",
    "count_params",
    "create_model",
    "get_spec",
    "list_models",
    "model_options",
    "register_model",
    "summarize",
    "twin_of",
]
