"""Fine-tuning: which parts of a net are frozen, and how far each parameter sits from the classifier.

A staged net (``ResNet``: a stem, stages layer1..layerS, the classifier ``fc``) is seen as positions
along its depth: the stem is 0, stage K is K, whatever follows the last stage before the classifier
(a pre-activation net's final BN, Fixup's last scalar bias) is S, and ``fc`` is S + 1. ``--freeze``
and ``--layer-decay`` are stated in those positions.

A frozen part does not train (``requires_grad`` False, so no optimiser sees it) and stays in eval
mode, so its BatchNorm layers normalise with their running statistics and never update them, as
torchvision's and timm's fine-tuning recipes freeze a backbone.
"""

from __future__ import annotations

import types

from torch import nn

from ..errors import ResnetsError
from .config import TrainConfig

HEAD = "fc"  # the classifier: torchvision's name, which every net here keeps
STEM = "stem"


def stage_names(model: nn.Module) -> list[str]:
    """The names --freeze takes for this net: stem, layer1, ..., layerS; empty for a net without stages."""
    stages = getattr(model, "num_stages", 0)
    return [STEM, *(f"layer{k + 1}" for k in range(stages))] if stages else []


def positions(model: nn.Module, what: str, label: str) -> dict[str, int]:
    """The position along the depth of each top-level part of a staged net (see the module docstring).

    ``what`` names the setting that needs them and ``label`` the net, for the error on a net without stages.
    """
    names = stage_names(model)
    if not names:
        hint = " (--freeze-backbone works on any net)" if what == "--freeze" else ""
        raise ResnetsError(f"{what} needs a net of stages (stem, layer1, ...); {label} has none{hint}")
    last = len(names) - 1
    out, seen_stage = {}, 0
    for name, _ in model.named_children():
        if name in names[1:]:
            seen_stage = int(name.removeprefix("layer"))
            out[name] = seen_stage
        elif name == HEAD:
            out[name] = last + 1
        else:  # before the first stage: the stem; after the last one: with it (timm's grouping)
            out[name] = 0 if seen_stage == 0 else last
    return out


def frozen_parts(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """The top-level parts --freeze or --freeze-backbone leaves untrained, in the model's order."""
    children = [name for name, _ in model.named_children()]
    if cfg.freeze_backbone:
        _need_head(model, cfg.model)
        return [name for name in children if name != HEAD]
    if cfg.freeze is None:
        return []
    at = positions(model, "--freeze", cfg.model)
    allowed = stage_names(model)
    if cfg.freeze not in allowed:
        raise ResnetsError(
            f"--freeze {cfg.freeze}: {cfg.model} has no part of that name; choose one of {', '.join(allowed)}"
        )
    limit = allowed.index(cfg.freeze)
    return [name for name in children if at[name] <= limit]


def freeze(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """Freeze the parts the config names, in place; their names."""
    parts = frozen_parts(model, cfg)
    if not parts:
        return []
    for name in parts:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    keep_in_eval(model, parts)
    return parts


def keep_in_eval(model: nn.Module, parts: list[str]) -> None:
    """Make ``model.train()`` leave ``parts`` in eval mode, whoever calls it.

    The trainer, the evaluation (which restores the mode it found) and the fast-path trial all
    call ``train()`` on the whole model; overriding it on this one instance keeps every such call
    from updating a frozen part's BN statistics. Looked up by name at each call, so a part
    replaced later (SyncBatchNorm's conversion) is covered too; ``copy.deepcopy`` rebinds it.
    """
    frozen = tuple(parts)
    own_train = type(model).train

    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        own_train(self, mode)
        for name in frozen:
            getattr(self, name).train(False)
        return self

    model.train = types.MethodType(train, model)  # type: ignore[method-assign]
    model.train(model.training)


def position_scales(model: nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """The learning-rate factor each parameter gets from where it sits: --head-lr-scale and --layer-decay.

    The classifier gets ``head_lr_scale``; with a layer decay D, a parameter at position P of a
    net of S stages gets D ** (S + 1 - P): 1 for the head, D for the last stage, D ** (S + 1) for
    the stem (BEiT's layer-wise decay, as timm applies it).
    """
    names = [name for name, _ in model.named_parameters()]
    if cfg.head_lr_scale != 1.0:
        _need_head(model, cfg.model)
    at = positions(model, "--layer-decay", cfg.model) if cfg.layer_decay is not None else {}
    head = max(at.values(), default=0)
    scales = {}
    for name in names:
        part = name.split(".", 1)[0]
        scale = cfg.head_lr_scale if part == HEAD else 1.0
        if cfg.layer_decay is not None:
            scale *= cfg.layer_decay ** (head - at.get(part, head - 1))
        scales[name] = scale
    return scales


def _need_head(model: nn.Module, label: str) -> None:
    if not isinstance(getattr(model, HEAD, None), nn.Module):
        raise ResnetsError(f"{label} has no classifier named {HEAD!r} to fine-tune")
