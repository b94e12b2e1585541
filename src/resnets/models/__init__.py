"""The model zoo: residual networks of He et al. 2015/2016 and their plain twins."""

from .blocks import BasicBlock, Bottleneck, PadShortcut, PreActBasicBlock, PreActBottleneck
from .complexity import ModelSummary, count_depth, count_flops, count_params, summarize
from .networks import PreActResNet, ResNet
from .registry import ModelSpec, create_model, get_spec, list_models, model_options, twin_of

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ModelSpec",
    "ModelSummary",
    "PadShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PreActResNet",
    "ResNet",
    "count_depth",
    "count_flops",
    "count_params",
    "create_model",
    "get_spec",
    "list_models",
    "model_options",
    "summarize",
    "twin_of",
]
