"""Experiments: the plain-vs-residual degradation study."""

from .degradation import ModelResult, StudyConfig, run_study

__all__ = ["ModelResult", "StudyConfig", "run_study"]
