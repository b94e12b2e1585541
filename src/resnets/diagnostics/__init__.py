"""Why shortcuts work, measured: gradient flow, layer responses and signal propagation."""

from .gradients import GradientFlow, gradient_norms
from .responses import layer_responses
from .signal import SignalStats, signal_propagation

__all__ = [
    "GradientFlow",
    "SignalStats",
    "gradient_norms",
    "layer_responses",
    "signal_propagation",
]
