"""The arms of the remedies study: each remedy built as its paper builds it, with what still differs.

An arm is one net: the plain net (or, for the shortcut units, the residual net) with the
remedy's model options and its training rules (weight decay and learning-rate multipliers by
parameter name). Where the old one-recipe screen ran a variant that is not the named method,
the variant keeps an honest name of its own (``-bn``: BatchNorm kept beside a method made to
replace it; ``dirac-init``: DiracNet's start without its reparameterisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The groups, in the order the story goes.
GROUPS = (
    "baseline", "regularisation", "initialisation", "activation", "skip-layer connections",
    "identity shortcuts", "no normalisation, with shortcuts", "no shortcuts, done right",
)  # fmt: skip

NO_BN = {"norm": "none"}
# Fixup's official CIFAR script gives every parameter named *bias* or *scale* (the scalar biases and
# multipliers, and the classifier's bias) lr/10, with the same weight decay as the rest.
FIXUP_TRAINING = {"lr_scale_for": {"*bias*": 0.1, "*scale*": 0.1}}
# DiracNets' official code decays only parameters of more than one dimension (not a, b, BN, biases).
DIRAC_TRAINING = {"no_decay_on_norm_and_bias": True}


@dataclass(frozen=True)
class Arm:
    """One remedy: the net it starts from, its options and training rules, its paper and what differs."""

    name: str
    group: str
    residual: bool  # built from the residual net (the shortcut units) rather than the plain net
    what: str  # one line: what the arm is
    paper: str  # the paper it follows, short
    differs: str = ""  # what still differs from that paper; "" when nothing that matters here
    options: dict[str, Any] = field(default_factory=dict)  # the model's options
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields: decay or lr by parameter
    # The study's lr grid times this for the arm: nets without BatchNorm take smaller rates, gated ones
    # larger (where the default digits study chose them, docs/results.md); the search widens past it.
    grid_shift: float = 1.0

    def line(self) -> str:
        """The arm in one line for --list and the report: what, after whom, and what differs."""
        differs = f"; differs: {self.differs}" if self.differs else ""
        return f"{self.what} ({self.paper}{differs})"


ARMS: tuple[Arm, ...] = (
    Arm("plain", "baseline", False, "the plain net: He init (fan-out), ReLU, BatchNorm",
        "He et al. 2015, Sec. 4.2"),
    Arm("dropout", "regularisation", False, "dropout 0.1 between the two convolutions of every block",
        "Srivastava et al. 2014; placed as in Wide ResNets, Zagoruyko & Komodakis 2016",
        options={"drop_rate": 0.1}),
    Arm("decay-last-stage", "regularisation", False, "10x weight decay on the last stage (layer3)",
        "a stronger L2 penalty on some layers", training={"decay_for": {"layer3.*": 5e-3}}),
    Arm("he-fan-in", "initialisation", False, "He init with fan-in (PyTorch's kaiming_normal_)",
        "He et al. 2015, Delving deep", options={"init": "he_fan_in"}),
    Arm("xavier", "initialisation", False, "Xavier/Glorot normal init", "Glorot & Bengio 2010",
        options={"init": "xavier"}),
    Arm("orthogonal", "initialisation", False, "orthogonal init with the ReLU gain", "Saxe et al. 2014",
        options={"init": "orthogonal"}),
    Arm("lsuv", "initialisation", False,
        "LSUV: orthogonal, then each layer scaled to unit output variance, no BN",
        "Mishkin & Matas 2016", "tolerance 0.05 and 10 tries per layer; their code 0.02 and 20",
        options={"init": "lsuv", **NO_BN}, grid_shift=0.25),
    Arm("lsuv-bn", "initialisation", False, "LSUV with BatchNorm kept",
        "Mishkin & Matas 2016, their BN variant",
        options={"init": "lsuv"}),
    Arm("delta-orthogonal", "initialisation", False,
        "delta-orthogonal init (centre tap orthogonal), ReLU, no BN",
        "Xiao et al. 2018", "ReLU, which cannot reach dynamical isometry; their nets use tanh",
        options={"init": "delta_orthogonal", **NO_BN}, grid_shift=0.25),
    Arm("delta-orthogonal-bn", "initialisation", False, "delta-orthogonal init with BatchNorm kept",
        "Xiao et al. 2018", "BatchNorm kept", options={"init": "delta_orthogonal"}),
    Arm("dirac-init", "initialisation", False, "each convolution starts as the identity, then trains freely",
        "the start of DiracNets, Zagoruyko & Komodakis 2017", "no reparameterisation: only the init",
        options={"init": "dirac"}),
    Arm("diracnet", "initialisation", False,
        "every block conv W = diag(a) I + diag(b) W/|W| trained throughout (a = 1, b = 0.1), BN kept",
        "DiracNets v2, Zagoruyko & Komodakis 2017",
        "the CIFAR net's widths and stride-2 convs, not their widths and max-pools; BN weights start at 1",
        options={"unit": "dirac"}, training=DIRAC_TRAINING),
    Arm("leaky-relu", "activation", False, "leaky ReLU, slope 0.01", "Maas et al. 2013",
        options={"act": "leaky_relu"}),
    Arm("elu", "activation", False, "ELU, no BN", "Clevert et al. 2016", options={"act": "elu", **NO_BN},
        grid_shift=0.25),
    Arm("elu-bn", "activation", False, "ELU with BatchNorm kept", "Clevert et al. 2016", "BatchNorm kept",
        options={"act": "elu"}),
    Arm("selu", "activation", False, "SELU with LeCun normal init (fan-in, gain 1), no BN",
        "Klambauer et al. 2017", "no alpha-dropout", options={"act": "selu", "init": "he_fan_in", **NO_BN},
        grid_shift=0.25),
    Arm("selu-bn", "activation", False, "SELU with BatchNorm kept", "Klambauer et al. 2017", "BatchNorm kept",
        options={"act": "selu"}),
    Arm("gelu", "activation", False, "GELU", "Hendrycks & Gimpel 2016", options={"act": "gelu"}),
    Arm("tanh", "activation", False, "tanh", "LeCun et al. 1998", options={"act": "tanh"}),
    Arm("highway", "skip-layer connections", False,
        "highway gates T = sigmoid(conv(x) + b) around every block, b = -2 at depth 20, -3 from 30",
        "Srivastava et al. 2015", "each gate spans a two-layer block with BatchNorm; theirs one layer, no BN",
        options={"unit": "highway"}, grid_shift=4.0),
    Arm("long-skip", "skip-layer connections", False, "one identity skip over each whole stage",
        "skip connections over many layers", options={"long_skip": True}),
    Arm("resnet", "identity shortcuts", True, "the residual net: identity shortcuts every two layers",
        "He et al. 2015"),
    Arm("rezero", "identity shortcuts", True,
        "x + alpha relu(F(x)), alpha = 0, BatchNorm kept, no ReLU after the sum",
        "Bachlechner et al. 2020, their CIFAR ResNet code", options={"unit": "rezero"}),
    Arm("fixup", "no normalisation, with shortcuts", True,
        "Fixup: no BN, rescaled init, scalar biases and multipliers at lr/10 (decayed like the rest)",
        "Zhang et al. 2019", "no mixup, their script's default", options={"unit": "fixup"},
        training=FIXUP_TRAINING),
    Arm("skipinit", "no normalisation, with shortcuts", True, "SkipInit: no BN, branch scalar started at 0",
        "De & Smith 2020", options={"unit": "skipinit"}, grid_shift=0.25),
    Arm("rezero-no-bn", "no normalisation, with shortcuts", True, "ReZero without BatchNorm: x + alpha F(x)",
        "Bachlechner et al. 2020", "BatchNorm removed: the old screen's variant",
        options={"unit": "rezero", **NO_BN}, grid_shift=0.25),
    Arm("tat", "no shortcuts, done right", False,
        "TAT: leaky ReLU with C_f(0) = 0.9, delta-orthogonal, per-location normalised input, no BN",
        "Zhang, Botev & Martens 2022, with the dks README's input normalisation", "SGD, not K-FAC",
        options={"act": "trelu", "init": "delta_orthogonal", "input_norm": "per-location", **NO_BN},
        grid_shift=0.25),
    Arm("delta-orthogonal-tanh", "no shortcuts, done right", False,
        "tanh at the critical point with delta-orthogonal init, no BN", "Xiao et al. 2018",
        options={"act": "tanh", "init": "delta_orthogonal", **NO_BN}, grid_shift=0.25),
)  # fmt: skip
ARM_NAMES = tuple(a.name for a in ARMS)

# One arm per group by default, with why it stands for its group.
REPRESENTATIVES: dict[str, str] = {
    "plain": "the net every arm changes",
    "dropout": "the first regulariser people reach for",
    "lsuv": "the strongest initialisation of the era: made to train deep nets without BN",
    "selu": "the activation made to keep deep nets normalised without BN",
    "highway": "the gated skip-layer connection that preceded ResNets",
    "resnet": "identity shortcuts: the answer under test",
    "fixup": "the best-known way to train a residual net without normalisation",
    "tat": "the best-known way to train a deep net without shortcuts",
}
DEFAULT_ARMS = [a.name for a in ARMS if a.name in REPRESENTATIVES]


def get_arm(name: str) -> Arm:
    """The arm of this name (names are checked by the study's config)."""
    return next(a for a in ARMS if a.name == name)
