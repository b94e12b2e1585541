"""resnets: deep residual networks and their plain twins on PyTorch."""

from .errors import ResnetsError
from .models import create_model, list_models, twin_of
from .models.interop import load_pretrained

__version__ = "0.1.0"

__all__ = ["ResnetsError", "__version__", "create_model", "list_models", "load_pretrained", "twin_of"]
