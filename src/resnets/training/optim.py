"""The optimiser of a run: SGD, AdamW or Muon, over groups of parameters sharing a weight decay and lr scale.

The trainer sets each group's lr to the scheduled lr times the group's ``lr_scale``. A parameter's
scale is a product of independent factors, so each flag keeps its meaning when others are added:

    (its first matching --lr-scale-for pattern, else --norm-bias-lr-scale for a BN weight or shift, else 1)
    x --head-lr-scale (the classifier fc only) x --layer-decay ** (stages from the head: finetune.py)
    x --muon-lr-scale (with --opt muon, the filters Muon updates)

Its weight decay is the first matching --decay-for pattern's, else --weight-decay; 0 for 1-D
parameters with --no-decay-on-norm-and-bias; divided by --norm-bias-lr-scale where that scale
applies, so lr x decay (the decay per step) stays put. The other factors leave the decay as set,
as timm's layer decay does. SGD's decay is an L2 term in the gradient; AdamW's and Muon's are
decoupled (each step shrinks the weights by lr x decay). With --muon-filter-norm the filters Muon
updates take no decay at all, whatever --decay-for says: their norm is held fixed instead.
Frozen parameters are in no group.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from ..errors import ResnetsError
from .config import TrainConfig
from .finetune import HEAD, position_scales


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, device: torch.device, precision: str = "bf16"
) -> torch.optim.Optimizer | MuonWithSGD:
    """The run's optimiser over the parameters that train, grouped by (weight decay, lr scale).

    SGD with momentum by default; ``--opt adamw``: torch's AdamW; ``--opt muon``: ``MuonWithSGD``,
    orthogonalising in fp32 where the run's ``precision`` (its fast path) is fp32.
    """
    settings = parameter_settings(model, cfg)
    params = dict(model.named_parameters())
    # The fused kernels are faster on CUDA; on the CPU SGD's measured the same as the default.
    fused = True if device.type == "cuda" else None
    if cfg.optimizer == "muon":
        hidden = hidden_weights(model)
        # Filters held at a fixed norm take no decay: the rescaling is what holds their scale.
        muon = [(params[n], 0.0 if cfg.muon_filter_norm else d, s * cfg.muon_lr_scale)
                for n, (d, s) in settings.items() if n in hidden]  # fmt: skip
        rest = [(params[n], d, s) for n, (d, s) in settings.items() if n not in hidden]
        return MuonWithSGD(_groups(muon), _groups(rest), cfg, fused, fp32=precision == "fp32")
    groups = _groups([(params[n], d, s) for n, (d, s) in settings.items()])
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), fused=fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)


def parameter_settings(model: nn.Module, cfg: TrainConfig) -> dict[str, tuple[float, float]]:
    """(weight decay, lr scale) of each parameter that trains, by name, in the model's order."""
    _check_patterns(model, cfg)
    position = position_scales(model, cfg)
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                   for p in m.parameters(recurse=False)}  # fmt: skip
    settings = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay, scale = _own_settings(name, p, cfg, id(p) in norm_params)
            settings[name] = (decay, scale * position[name])
    return settings


def _own_settings(name: str, p: nn.Parameter, cfg: TrainConfig, is_norm: bool) -> tuple[float, float]:
    """A parameter's weight decay and lr scale from the name patterns and the BN rules, before position."""
    matched = _first_match(name, cfg.decay_for)
    decay = cfg.weight_decay if matched is None else matched
    if cfg.no_decay_on_norm_and_bias and p.ndim <= 1:
        decay = 0.0
    scale = _first_match(name, cfg.lr_scale_for)
    if scale is None:  # no pattern names it: BatchNorm's shifts may still learn faster
        scale = cfg.norm_bias_lr_scale if is_norm and p.ndim == 1 else 1.0
        # A faster-learning parameter keeps the same decay per step: lr * decay stays put.
        decay /= scale
    # A pattern's scale leaves the decay as set (Fixup's code: lr / 10 on its scalars, same decay).
    return decay, scale


def _check_patterns(model: nn.Module, cfg: TrainConfig) -> None:
    """A --decay-for or --lr-scale-for pattern that names no parameter is a typo: refuse it."""
    names = [name for name, _ in model.named_parameters()]
    for what, patterns in (("weight decay", cfg.decay_for), ("learning-rate scale", cfg.lr_scale_for)):
        for pattern in patterns:
            if not fnmatch.filter(names, pattern):
                raise ResnetsError(
                    f"{what} pattern {pattern!r} matches no parameter of {cfg.model} "
                    f"(names look like {names[1]!r})"
                )


def _first_match(name: str, patterns: dict[str, float]) -> float | None:
    """The value of the first pattern that matches ``name``, or None."""
    return next((v for pattern, v in patterns.items() if fnmatch.fnmatchcase(name, pattern)), None)


def _groups(members: list[tuple[nn.Parameter, float, float]]) -> list[dict[str, Any]]:
    """Parameter groups of equal (decay, scale), in the order their first parameter comes."""
    by_group: dict[tuple[float, float], list[nn.Parameter]] = {}
    for p, decay, scale in members:
        by_group.setdefault((decay, scale), []).append(p)
    return [{"params": params, "weight_decay": decay, "lr_scale": scale}
            for (decay, scale), params in by_group.items()]  # fmt: skip


def hidden_weights(model: nn.Module) -> set[str]:
    """The weights Muon updates: every matrix and filter but the first (the input layer's) and fc's.

    Muon's README: "for a ConvNet, you should use Muon to optimize all the convolutional filters
    except the first one", with "classifier heads, and hidden gains/biases" left to a standard
    optimiser (https://github.com/KellerJordan/Muon).
    """
    matrices = [name for name, p in model.named_parameters() if p.ndim >= 2]
    return {name for name in matrices[1:] if name.split(".", 1)[0] != HEAD}


class MuonWithSGD:
    """torch's Muon on the hidden filters and SGD (the run's lr, momentum and Nesterov) on the rest, as one.

    ``torch.optim.Muon`` refuses parameters that are not 2-D (its docs leave them to "a standard
    method such as AdamW"). airbench94_muon (github.com/KellerJordan/cifar10-airbench), which pairs
    Muon on the filters with Nesterov SGD as here, orthogonalises a filter's update as the matrix
    (out, in*kh*kw). So each filter is given to Muon as that matrix: a parameter sharing the filter's
    memory, so Muon's in-place update is the filter's, with the filter's gradient viewed the same way
    before each step. A channels-last filter is contiguous as (out, kh, kw, in): the same matrix with
    its columns in another order, which orthogonalisation does not see.

    Muon keeps its own Nesterov momentum, ``muon_momentum`` (torch's default 0.95 unless set), and
    makes ``muon_ns_steps`` Newton-Schulz iterations; its lr is the run's lr times ``muon_lr_scale``.
    With ``muon_filter_norm`` each of its matrices is rescaled to Frobenius norm sqrt(rows) before
    every step, as airbench94_muon does to its filters; that leaves the net's function unchanged only
    where a BatchNorm follows the filter (as in every BN net here, not Fixup or norm-free arms).
    With ``fp32`` (a run training in fp32) the iterations run in fp32 (``Fp32Muon``), not torch's bf16.
    ``param_groups`` lists both optimisers' groups (the trainer sets their lr); the state dict holds
    both, so a resumed run continues exactly.
    """

    def __init__(
        self, muon_groups: list[dict[str, Any]], sgd_groups: list[dict[str, Any]], cfg: TrainConfig,
        fused: bool | None, fp32: bool = False,
    ) -> None:  # fmt: skip
        if not hasattr(torch.optim, "Muon"):
            raise ResnetsError(
                f"--opt muon needs torch.optim.Muon (torch >= 2.9); this is {torch.__version__}"
            )
        self.pairs: list[tuple[nn.Parameter, nn.Parameter, bool]] = []  # filter, its matrix, channels-last
        for group in muon_groups:
            group["params"] = [self._matrix(p) for p in group["params"]]
        self.parts: dict[str, torch.optim.Optimizer] = {}
        if muon_groups:
            from .muon import Fp32Muon  # torch.optim.Muon, its base, is only in torch >= 2.9

            self.parts["muon"] = (Fp32Muon if fp32 else torch.optim.Muon)(
                muon_groups, lr=cfg.lr, momentum=cfg.muon_momentum, ns_steps=cfg.muon_ns_steps
            )
        self.filter_norm = cfg.muon_filter_norm
        if sgd_groups:
            self.parts["sgd"] = torch.optim.SGD(
                sgd_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused
            )

    def _matrix(self, p: nn.Parameter) -> nn.Parameter:
        """``p`` as a matrix sharing its memory: a linear weight itself, a filter viewed (out, rest)."""
        if p.ndim == 2:
            return p
        channels_last = not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
        matrix = nn.Parameter(_as_matrix(p.detach(), channels_last))
        if matrix.data_ptr() != p.data_ptr():  # a copy: Muon's steps would never reach the filter
            raise ResnetsError(f"--opt muon cannot view a {tuple(p.shape)} filter as a matrix in place")
        self.pairs.append((p, matrix, channels_last))
        return matrix

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Muon's groups, then SGD's: the same dicts, so setting their lr sets the optimisers'."""
        return [group for part in self.parts.values() for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient: the filters' and their matrices'."""
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)
        for p, _, _ in self.pairs:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """Hand each filter's gradient to its matrix, then step both optimisers."""
        for p, matrix, channels_last in self.pairs:
            matrix.grad = None if p.grad is None else _as_matrix(p.grad, channels_last)
        if self.filter_norm and "muon" in self.parts:
            for group in self.parts["muon"].param_groups:
                for matrix in group["params"]:
                    norm = matrix.norm()
                    # A zero filter (zero-init of a last branch conv) stays zero: it has no direction yet.
                    if matrix.grad is not None and norm > 0:
                        matrix.mul_(matrix.shape[0] ** 0.5 / norm)
        for part in self.parts.values():
            part.step()

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers' state, by part."""
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore both optimisers from ``state_dict()``'s output."""
        if not isinstance(state, dict) or set(state) != set(self.parts):
            raise ResnetsError("the checkpoint's optimizer state is not of this run's Muon and SGD")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


def _as_matrix(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A filter (out, in, kh, kw) as the matrix (out, in*kh*kw); (out, kh*kw*in) for a channels-last one."""
    return (t.permute(0, 2, 3, 1) if channels_last else t).reshape(t.shape[0], -1)
