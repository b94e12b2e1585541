"""Size of a network: parameters, FLOPs (PyTorch's counter) and depth as the paper counts it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model, get_spec

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_params(model: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_size: tuple[int, ...], batch: int = 1) -> int:
    """FLOPs of one forward pass by torch.utils.flop_counter (a multiply-add counts as 2)."""
    device = next(model.parameters()).device
    x = torch.zeros(batch, *input_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return int(counter.get_total_flops())


class _LayerTracer(fx.Tracer):
    """fx's tracer, keeping subclasses of conv and linear (fast.Whitening) whole, so they count."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, WEIGHTED_LAYERS) or super().is_leaf_module(m, qualname)


def count_depth(model: nn.Module) -> int:
    """Weighted layers (conv, linear) on the longest input-to-output path of the traced graph."""
    graph = _LayerTracer().trace(model)
    depth: dict[fx.Node, int] = {}
    modules = dict(model.named_modules())
    for node in graph.nodes:
        before = max((depth[a] for a in node.all_input_nodes), default=0)
        weighted = node.op == "call_module" and isinstance(modules[node.target], WEIGHTED_LAYERS)
        depth[node] = before + int(weighted)
        if node.op == "output":
            return depth[node]
    raise ValueError("the traced graph has no output")


_INIT = nn.init
# Filling a tensor that has no data, or normalising one, changes no shape and no counted FLOP,
# yet on 'meta' each runs PyTorch's Python reference (normal_ ~0.6 ms, batch_norm more): skipped.
# `resnets models` took 30 s, now 15 s, on an AVX2-only AMD EPYC (family 25 model 1).
_NO_SHAPE_CHANGE = {
    _INIT.normal_, _INIT.uniform_, _INIT.trunc_normal_, _INIT.constant_, _INIT.zeros_, _INIT.ones_,
    _INIT.kaiming_normal_, _INIT.kaiming_uniform_, _INIT.xavier_normal_, _INIT.xavier_uniform_,
    _INIT.orthogonal_, _INIT.dirac_, torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_,
    torch.Tensor.zero_, F.batch_norm, F.group_norm, F.layer_norm, F.instance_norm,
}  # fmt: skip


class _ShapesOnly(TorchFunctionMode):
    """On 'meta' tensors, initialisers and normalisations return their input unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _NO_SHAPE_CHANGE:
            first = args[0] if args else next(iter(kwargs.values()))
            if isinstance(first, torch.Tensor) and first.is_meta:
                return first
        return func(*args, **kwargs)


@dataclass(frozen=True)
class ModelSummary:
    """One row of `resnets models`."""

    name: str
    family: str
    depth: int
    residual: bool
    shortcut: str  # "A", "B" or "C"; "none" for a plain net
    params: int
    flops: int
    input_size: tuple[int, int, int]

    @property
    def macs(self) -> int:
        """Multiply-adds, the unit of the paper's "FLOPs" (3.6G for ResNet-34)."""
        return self.flops // 2


def summarize(name: str, **options: object) -> ModelSummary:
    """Parameters and FLOPs of a registered model at its family's input size, built on 'meta'."""
    spec = get_spec(name)
    # The meta device allocates no memory and runs no kernels: only shapes are computed.
    with torch.device("meta"), _ShapesOnly():
        model = create_model(name, **options)
        in_ch = int(options.get("in_channels", spec.input_size[0]))  # type: ignore[call-overload]
        size = (in_ch, *spec.input_size[1:])
        flops = count_flops(model, size)
    return ModelSummary(
        name=name,
        family=spec.family,
        depth=spec.depth,
        residual=spec.residual,
        # The fast net's shortcuts are identities (no option): "A" is the parameter-free kind.
        shortcut=str(options.get("shortcut", spec.options.get("shortcut", "A"))) if spec.residual else "none",
        params=count_params(model),
        flops=flops,
        input_size=size,
    )
